"""When a job's ``notify`` block fires: LAVA's criteria, evaluated on one state change.

LAVA evaluates the criteria each time a job's state changes to Running or
Finished: ``all`` fires on both, ``running`` and ``finished`` on that state,
``complete``/``incomplete``/``canceled`` on that health. A
``dependency_query`` holds the notification back until every other job it
matches is in the same status. ``type: regression|progression`` needs the
comparison of :mod:`.compare` (LAVA's own test can never be true).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lava_dispatcher.worker.notify.compare import Comparison, compare
from lava_dispatcher.worker.notify.conditions import parse_conditions
from lava_dispatcher.worker.notify.lookup import JobQuery, Lookup
from lava_dispatcher.worker.store import (
    CANCELED,
    COMPLETE,
    FINISHED,
    INCOMPLETE,
    RUNNING,
    JobRecord,
)

#: the states that can trigger a notification
TRIGGERS = (RUNNING, FINISHED)
_HEALTHS = {"complete": COMPLETE, "incomplete": INCOMPLETE, "canceled": CANCELED}


@dataclass(frozen=True)
class Decision:
    fire: bool
    #: why, in words (kept with the deliveries, useful when nothing was sent)
    reason: str
    comparison: Comparison | None = None


def in_status(job: JobRecord, status: str) -> bool:
    """Whether ``job`` is in a criteria ``status`` (``all``: Running or Finished)."""
    if status == "all":
        return job.state in TRIGGERS
    if status == "finished":
        return job.state == FINISHED
    if status == "running":
        return job.state == RUNNING
    return job.health == _HEALTHS.get(status)


def evaluate(notify: Mapping[str, Any], job: JobRecord, lookup: Lookup) -> Decision:
    """Whether ``notify`` fires for ``job`` as it is now (ConditionError: a bad dependency query)."""
    criteria = notify.get("criteria") or {}
    status = str(criteria.get("status", ""))
    if not in_status(job, status):
        return Decision(False, f"the job is {job.state}/{job.health}, the criteria ask for {status}")
    if criteria.get("dependency_query"):
        conditions = parse_conditions(str(criteria["dependency_query"]))
        waiting = [j for j in lookup.jobs(JobQuery(conditions)) if j.id != job.id and not in_status(j, status)]
        if waiting:
            ids = ", ".join(j.display_id for j in waiting[:10])
            return Decision(False, f"jobs of the dependency query are not {status} yet: {ids}")
    kind = criteria.get("type")
    if kind is None:
        return Decision(True, f"the job is {status}")
    comparison = compare(job, notify.get("compare") or {}, lookup)
    if comparison.previous is None:
        return Decision(False, f"no previous job to compare with ({comparison.how})", comparison)
    found = comparison.regression if kind == "regression" else comparison.progression
    word = "a" if found else "no"
    return Decision(found, f"{word} {kind} against job {comparison.previous.display_id}", comparison)
