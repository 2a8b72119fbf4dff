"""Regression and progression: this job against the previous comparable one, for real.

LAVA's ``type: regression|progression`` compares a job's health with its own
previous health, which is always Unknown when a job finishes, so it never
fires. Here the previous comparable job is the last finished job (Complete
or Incomplete, canceled ones say nothing) submitted before this one with the
same job name, or matching the ``compare`` query's conditions when the block
gives ``{entity: testjob, conditions: ...}``; jobs of the same MultiNode group
are never compared with each other.

* regression: the previous job was Complete and this one is Incomplete, or
  both have the same health and a test case that passed now fails;
* progression: the previous job was Incomplete and this one is Complete, or
  both have the same health and a test case that failed now passes.

Names in ``compare: blacklist`` (suites or test cases) are left out of the
comparison, as LAVA leaves them out of its email.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lava_dispatcher.worker.notify.conditions import (
    Condition,
    ConditionError,
    conditions_from_mapping,
)
from lava_dispatcher.worker.notify.lookup import JobQuery, Lookup
from lava_dispatcher.worker.store import COMPLETE, INCOMPLETE, JobRecord, ResultRecord

#: jobs of the comparison set listed in a verbose email (LAVA's QUERY_LIMIT)
RECENT = 5

Counts = tuple[int, int, int]


@dataclass(frozen=True)
class CaseChange:
    suite: str
    name: str
    before: str
    after: str


@dataclass(frozen=True)
class Comparison:
    """This job against ``previous`` (None: nothing to compare with)."""

    job: JobRecord
    previous: JobRecord | None
    #: how the previous job was chosen, in words
    how: str
    #: why the block's compare query was not used as it is, if it was not
    note: str | None = None
    recent: tuple[JobRecord, ...] = ()
    suites_added: tuple[str, ...] = ()
    suites_removed: tuple[str, ...] = ()
    cases_added: tuple[tuple[str, str], ...] = ()
    cases_removed: tuple[tuple[str, str], ...] = ()
    #: suite -> (pass, fail, skip) before and now, for suites in both whose counts changed
    counts: Mapping[str, tuple[Counts, Counts]] = field(default_factory=dict)
    changed: tuple[CaseChange, ...] = ()

    @property
    def regression(self) -> bool:
        return self._moved(worse=True)

    @property
    def progression(self) -> bool:
        return self._moved(worse=False)

    def _moved(self, worse: bool) -> bool:
        """The health went that way, or with the same health a test case did."""
        if self.previous is None:
            return False
        old, new = (COMPLETE, INCOMPLETE) if worse else (INCOMPLETE, COMPLETE)
        if (self.previous.health, self.job.health) == (old, new):
            return True
        was, now = ("pass", "fail") if worse else ("fail", "pass")
        same = self.previous.health == self.job.health
        return same and any((c.before, c.after) == (was, now) for c in self.changed)


def comparison_set(job: JobRecord, compare: Mapping[str, Any]) -> tuple[list[Condition], str, str | None]:
    """The conditions that select comparable jobs, said in words, and a note when the
    block's own query could not be used."""
    by_name = [Condition("description", "exact", job.description)]
    how = f"the previous finished job named {job.description!r}"
    query = compare.get("query")
    if not isinstance(query, Mapping):
        return by_name, how, None
    if "entity" not in query:
        note = (f"the stored query {query.get('username')}/{query.get('name')} is not known to this "
                f"worker (it has no stored queries)")  # fmt: skip
        return by_name, how, note
    if str(query["entity"]).lower() != "testjob":
        return by_name, how, f"a compare query on {query['entity']!r} cannot be evaluated here (testjob only)"
    try:
        conditions = conditions_from_mapping(query.get("conditions") or {})
    except ConditionError as exc:
        return by_name, how, f"the compare query cannot be evaluated: {exc}"
    return conditions, "the last finished job matching the compare query", None


def compare(job: JobRecord, compare_block: Mapping[str, Any], lookup: Lookup) -> Comparison:
    """Choose the previous comparable job and compare results with it."""
    conditions, how, note = comparison_set(job, compare_block)

    def comparable(other: JobRecord) -> bool:
        return other.id != job.id and (job.target_group is None or other.target_group != job.target_group)

    recent = tuple(j for j in lookup.jobs(JobQuery(conditions, before=job.id, limit=RECENT + 10)) if comparable(j))
    candidates = lookup.jobs(JobQuery(conditions, job.id, finished=True, healths=(COMPLETE, INCOMPLETE), limit=20))
    previous = next((j for j in candidates if comparable(j)), None)
    recent = recent[:RECENT]
    if previous is None:
        return Comparison(job, None, how, note, recent)
    blacklist = {str(name) for name in compare_block.get("blacklist") or ()}
    now = _cases(lookup.results(job.id), blacklist)
    before = _cases(lookup.results(previous.id), blacklist)
    return _diff(job, previous, how, note, recent, before, now)


def _cases(results: Sequence[ResultRecord], blacklist: set[str]) -> list[tuple[str, str, str]]:
    return [(r.suite, r.name, r.result) for r in results if r.suite not in blacklist and r.name not in blacklist]


def _count(cases: list[tuple[str, str, str]], suite: str) -> Counts:
    results = Counter(result for s, _name, result in cases if s == suite)
    return results["pass"], results["fail"], results["skip"]


def _single(cases: list[tuple[str, str, str]]) -> dict[tuple[str, str], str]:
    """Each (suite, case) that appears once: a repeated case cannot be compared one to one."""
    seen = Counter((s, n) for s, n, _r in cases)
    return {(s, n): r for s, n, r in cases if seen[(s, n)] == 1}


def _diff(
    job: JobRecord,
    previous: JobRecord,
    how: str,
    note: str | None,
    recent: tuple[JobRecord, ...],
    before: list[tuple[str, str, str]],
    now: list[tuple[str, str, str]],
) -> Comparison:
    old_suites = list(dict.fromkeys(s for s, _n, _r in before))
    new_suites = list(dict.fromkeys(s for s, _n, _r in now))
    old_cases = list(dict.fromkeys((s, n) for s, n, _r in before))
    new_cases = list(dict.fromkeys((s, n) for s, n, _r in now))
    counts = {}
    for suite in (s for s in new_suites if s in old_suites):
        old, new = _count(before, suite), _count(now, suite)
        if old != new:
            counts[suite] = (old, new)
    old_single, new_single = _single(before), _single(now)
    changed = tuple(
        CaseChange(suite, name, old_single[(suite, name)], result)
        for (suite, name), result in new_single.items()
        if (suite, name) in old_single and old_single[(suite, name)] != result
    )
    return Comparison(
        job,
        previous,
        how,
        note,
        recent,
        suites_added=tuple(s for s in new_suites if s not in old_suites),
        suites_removed=tuple(s for s in old_suites if s not in new_suites),
        cases_added=tuple(c for c in new_cases if c not in old_cases),
        cases_removed=tuple(c for c in old_cases if c not in new_cases),
        counts=counts,
        changed=changed,
    )
