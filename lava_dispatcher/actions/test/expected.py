"""``expected`` test-case lists, shared by every kind of test action (LAVA's rules).

A case reported but not expected is forced to ``fail``; a case expected but
never reported is recorded as ``fail`` when its suite ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lava_dispatcher.pipeline import RunContext


def unexpected_result(ctx: RunContext, case: str, result: str, expected: Iterable[str] | None) -> str:
    """The result to record for ``case``: forced to fail if an expected list omits it."""
    if not expected or case in expected:
        return result
    ctx.logger.warning(f"{case!r} not found in expected test case list!")
    if result != "fail":
        ctx.logger.warning(f"Forcing unexpected {case!r} result {result!r} to 'fail' ...")
    return "fail"


def record_missing(
    ctx: RunContext, suite: str, expected: Iterable[str] | None, reported: Iterable[str], level: str
) -> None:
    """Record every expected case that was never reported as failed."""
    missing = sorted(set(expected or ()) - set(reported))
    if missing:
        ctx.logger.warning("Reporting missing expected test cases as 'fail' ...")
    for case in missing:
        record: dict[str, Any] = {
            "definition": suite,
            "case": case,
            "result": "fail",
            "level": level,
            "extra": {"reason": "missing expected test cases are reported as 'fail'."},
        }
        ctx.record_result(record)
