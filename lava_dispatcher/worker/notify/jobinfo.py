"""A job as LAVA shows it to notification receivers: integer states, legacy status, times.

LAVA keeps states and healths as integers and still sends the pre-2018
"legacy" status (0 submitted ... 5 canceling) in callbacks and URLs; times
are ``str(datetime)`` of an aware UTC datetime (``2026-08-21
10:00:00.123456+00:00``), and ``None`` when unset.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import yaml

from lava_dispatcher.worker.store import (
    CANCELING,
    COMPLETE,
    JOB_HEALTHS,
    JOB_STATES,
    RUNNING,
    SCHEDULED,
    SUBMITTED,
    UNKNOWN,
    JobRecord,
)

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: LAVA's legacy status numbers and their names
LEGACY = {0: "Submitted", 1: "Running", 2: "Complete", 3: "Incomplete", 4: "Canceled", 5: "Canceling"}
#: LAVA's named priorities, for display
PRIORITY_NAMES = {100: "High", 50: "Medium", 0: "Low"}


def state_number(job: JobRecord) -> int:
    """LAVA's integer state (0 Submitted ... 5 Finished)."""
    return JOB_STATES.index(job.state) if job.state in JOB_STATES else 0


def health_number(job: JobRecord) -> int:
    """LAVA's integer health (0 Unknown, 1 Complete, 2 Incomplete, 3 Canceled)."""
    return JOB_HEALTHS.index(job.health) if job.health in JOB_HEALTHS else 0


def legacy_status(job: JobRecord) -> int:
    """The status callbacks and ``{STATUS}`` carry: 0 submitted, 1 running, 2 complete,
    3 incomplete, 4 canceled, 5 canceling."""
    if job.state in (SUBMITTED, "Scheduling", SCHEDULED):
        return 0
    if job.state == RUNNING:
        return 1
    if job.state == CANCELING:
        return 5
    if job.health == COMPLETE:
        return 2
    if job.health in (UNKNOWN, "Incomplete"):
        return 3
    return 4


def legacy_status_string(job: JobRecord) -> str:
    """``complete``, ``incomplete``... as ``{STATUS_STRING}`` and ``status_string``."""
    return LEGACY[legacy_status(job)].lower()


def lava_time(when: float | None) -> str:
    """A time as LAVA's payload has it: ``str()`` of an aware UTC datetime, or ``"None"``."""
    if when is None:
        return "None"
    return str(datetime.datetime.fromtimestamp(when, datetime.UTC))


def human_time(when: float | None) -> str:
    """A time for people (emails, IRC): ``2026-08-21 10:00:00 UTC``; empty when unset."""
    if when is None:
        return ""
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(job: JobRecord) -> str:
    """Whole seconds between start and end as ``H:MM:SS`` (empty when either is unknown)."""
    if job.start_time is None or job.end_time is None:
        return ""
    return str(datetime.timedelta(seconds=int(job.end_time - job.start_time)))


def priority_display(priority: int) -> str:
    return PRIORITY_NAMES.get(priority, str(priority))


def definition_data(job: JobRecord) -> dict[str, Any]:
    """The job's definition as a mapping (empty when it is not one)."""
    try:
        data = yaml.load(job.definition, Loader=_LOADER) if job.definition else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def metadata(data: Mapping[str, Any]) -> list[dict[str, str]]:
    """LAVA's ``metadata`` field: a list of one-key mappings, values as strings."""
    value = data.get("metadata")
    if not isinstance(value, Mapping):
        return []
    return [{str(k): str(_normalized(v))} for k, v in value.items()]


def _normalized(value: Any) -> Any:
    """As LAVA stores metadata: scalars as strings, booleans ``true``/``false``."""
    if isinstance(value, Mapping):
        return {str(k): _normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
