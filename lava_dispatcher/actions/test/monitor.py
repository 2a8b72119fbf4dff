"""``test: monitors``: read results off a DUT that has no shell (Zephyr, bare metal).

For each monitor: wait for its ``start`` string, then record every match of
its ``pattern`` (named groups test_case_id, result, measurement, units;
``fixupdict`` applied) until its ``end`` string. The suite is the monitor's
name, lower-cased with spaces as ``-``; case ids are lower-cased with runs
of other characters as ``_`` (LAVA's rules).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.connection import CONNECTION, current_connection, expect
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.actions.test.expected import record_missing, unexpected_result
from lava_dispatcher.devices import Device
from lava_dispatcher.errors import JobError, LAVATimeoutError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext
from lava_dispatcher.plugins import hookimpl

RESULTS = ("pass", "fail", "skip", "unknown")


def suite_name(name: str) -> str:
    return name.replace(" ", "-").lower()


def case_id(raw: str) -> str:
    return re.sub(r"\W+", "_", raw.strip().lower())


class TestMonitorRetry(RetryAction):
    __test__ = False
    name = "lava-test-monitor-retry"
    description = "Retry wrapper for lava-test-monitor"
    summary = "Retry support for Lava Test Monitoring"
    section = "test"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        self.new_pipeline(parameters).add_action(TestMonitorAction())


class TestMonitorAction(Action):
    __test__ = False
    name = "lava-test-monitor"
    description = "Executing lava-test-monitor"
    summary = "Lava Test Monitor"
    timeout_exception = LAVATimeoutError
    needs = (CONNECTION,)

    def validate(self) -> None:
        for monitor in self.parameters.get("monitors") or []:
            for key in ("start", "end", "pattern"):
                try:
                    re.compile(str(monitor.get(key, "")))
                except re.error as exc:
                    self.errors.append(f"monitor {monitor.get('name')!r}: bad {key} {monitor.get(key)!r}: {exc}")

    def run(self, ctx: RunContext) -> None:
        connection = current_connection(ctx, self)
        for monitor in self.parameters["monitors"]:
            suite = suite_name(str(monitor["name"]))
            fixup = monitor.get("fixupdict") or {}
            report: dict[str, str] = {}
            ctx.logger.info(f"Waiting for start message: {monitor['start']}")
            expect(ctx, self, connection, [monitor["start"]])
            ctx.logger.info("ok: start string found, lava test monitoring started")
            while True:
                match = expect(ctx, self, connection, [monitor["end"], monitor["pattern"]])
                if match.index == 0:
                    ctx.logger.info("ok: end string found, lava test monitoring stopped")
                    break
                groups = match.match.groupdict() if match.match else {}
                record = self.result(ctx, suite, groups, fixup, monitor.get("expected"))
                if record is not None:
                    report[record["case"]] = record["result"]
                    ctx.record_result(record)
            record_missing(ctx, suite, monitor.get("expected"), report, self.level)

    def result(
        self,
        ctx: RunContext,
        suite: str,
        groups: dict[str, Any],
        fixup: Mapping[str, str],
        expected: list[str] | None,
    ) -> dict[str, Any] | None:
        raw_case = groups.get("test_case_id")
        if not raw_case:
            ctx.logger.warning(f"monitor match without test_case_id ignored: {groups!r}")
            return None
        record: dict[str, Any] = {"definition": suite, "case": case_id(raw_case), "level": self.level}
        if groups.get("result") is not None:
            result = fixup.get(groups["result"], groups["result"])
            if result not in RESULTS:
                ctx.logger.error(f"error: bad test results: {result}")
                return None
            record["result"] = result
        elif groups.get("measurement"):
            record["result"] = "pass"
        else:
            ctx.logger.warning(f"monitor match without result or measurement ignored: {groups!r}")
            return None
        if groups.get("measurement"):
            try:
                record["measurement"] = float(groups["measurement"])
            except ValueError:
                ctx.logger.warning(f"measurement {groups['measurement']!r} is not a number: ignored")
        if groups.get("units"):
            record["units"] = groups["units"]
        record["result"] = unexpected_result(ctx, record["case"], record["result"], expected)
        return record


class Monitors(Strategy):
    section = "test"
    name = "lava-test-monitor"

    @classmethod
    def accepts(cls, device: Device, parameters: Mapping[str, Any]) -> tuple[bool, str]:
        if "monitors" in parameters:
            return True, ""
        return False, "the block has no 'monitors'"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        if not parameters.get("monitors"):
            raise JobError("'monitors' must list at least one monitor")
        return TestMonitorRetry()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Monitors]
