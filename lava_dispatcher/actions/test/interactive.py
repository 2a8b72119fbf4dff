"""``test: interactive``: type commands, expect prompts, successes and failures.

For devices (or bootloaders) without a POSIX shell and overlay: each script
is a list of steps; each step sends a command and waits for one of the
script's prompts, the step's failures or its successes. Named steps become
test cases in the suite ``<stage>_<script name>``; each script becomes a
case of the ``lava`` suite, as in LAVA. Named groups of a success pattern
become ``{name}`` substitutions for later commands, and so does the data
of MultiNode waits (``lava-wait`` steps, and ``$key`` values received by
lava-multinode requests of earlier actions).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.connection import Connection, current_connection, expect
from lava_dispatcher.actions.deploy.overlay import dispatcher_ip
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.actions.test.expected import record_missing, unexpected_result
from lava_dispatcher.devices import Device
from lava_dispatcher.errors import (
    InfrastructureError,
    JobError,
    LAVAError,
    LAVATimeoutError,
    TestError,
)
from lava_dispatcher.pipeline import Action, RetryAction, RunContext
from lava_dispatcher.plugins import hookimpl
from lava_dispatcher.protocols.multinode import MULTINODE_DATA, multinode_protocol

#: interactive steps that are MultiNode calls instead of commands
MULTINODE_STEPS = ("lava-send", "lava-wait", "lava-wait-all", "lava-sync")

_EXCEPTIONS: dict[str, type[LAVAError]] = {
    "InfrastructureError": InfrastructureError,
    "JobError": JobError,
    "TestError": TestError,
}


def substitute(text: str, substitutions: Mapping[str, str]) -> str:
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return text


class TestInteractiveRetry(RetryAction):
    __test__ = False
    name = "lava-test-interactive-retry"
    description = "Retry wrapper for lava-test-interactive"
    summary = "Retry support for Lava Test Interactive"
    section = "test"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        self.new_pipeline(parameters).add_action(TestInteractiveAction())


class TestInteractiveAction(Action):
    __test__ = False
    name = "lava-test-interactive"
    description = "Executing lava-test-interactive"
    summary = "Lava Test Interactive"
    timeout_exception = LAVATimeoutError

    def validate(self) -> None:
        for script in self.parameters.get("interactive") or []:
            for step in script.get("script") or []:
                for pattern in [*(step.get("successes") or []), *(step.get("failures") or [])]:
                    try:
                        re.compile(pattern["message"])
                    except re.error as exc:
                        self.errors.append(
                            f"script {script.get('name')!r}: bad pattern "
                            f"{pattern['message']!r}: {exc}"
                        )

    def suite(self, script: Mapping[str, Any]) -> str:
        return f"{self.parameters.get('stage', 0)}_{script['name']}"

    def run(self, ctx: RunContext) -> None:
        connection = current_connection(ctx, self)
        dispatcher = self.settings.dispatcher
        substitutions = {
            "{JOB_ID}": self.settings.job_id,
            "{SERVER_IP}": dispatcher_ip(dispatcher),
        }
        # what lava-multinode requests of earlier actions received ($key values)
        stored: dict[str, Any] | None = ctx.data(self.namespace).get(MULTINODE_DATA, default=None)
        for values in (stored or {}).values():
            for key, value in values.items():
                substitutions["{" + str(key) + "}"] = str(value)
        for script in self.parameters["interactive"]:
            started = time.monotonic()
            suite = self.suite(script)
            record: dict[str, Any] = {"definition": "lava", "case": suite, "result": "fail"}
            report: dict[str, str] = {}
            try:
                self.run_script(ctx, connection, script, suite, substitutions, report)
                record["result"] = "pass"
                record_missing(ctx, suite, script.get("expected"), report, self.level)
            finally:
                record["duration"] = f"{time.monotonic() - started:.02f}"
                ctx.record_result(record)

    def run_script(
        self,
        ctx: RunContext,
        connection: Connection,
        script: Mapping[str, Any],
        suite: str,
        substitutions: dict[str, str],
        report: dict[str, str],
    ) -> None:
        prompts = [str(p) for p in script["prompts"]]
        shell = connection.shell
        for step in script["script"]:
            if "delay" in step and "command" not in step:
                ctx.logger.info(f"Delaying for {step['delay']}s")
                ctx.sleep(float(step["delay"]))
                continue
            if any(k in step for k in MULTINODE_STEPS):
                self.multinode_step(ctx, step, substitutions)
                continue
            command = step.get("command")
            name = step.get("name")
            started = time.monotonic()
            result = {"definition": suite, "case": name or "", "result": "fail"}
            try:
                if command is None:
                    ctx.logger.info("Sending nothing, waiting")
                else:
                    command = substitute(str(command), substitutions)
                    ctx.logger.info(f"Sending '{command}'")
                    shell.sendline(command, delay=self.character_delay)
                    if script.get("echo") == "discard":
                        expect(ctx, self, connection, ["\n"])
                failures = step.get("failures") or []
                successes = step.get("successes") or []
                patterns = prompts + [f["message"] for f in failures] + [
                    s["message"] for s in successes
                ]
                match = expect(ctx, self, connection, patterns)
                if match.index < len(prompts):
                    if successes:
                        ctx.logger.error(
                            f"Matched a prompt (was expecting a success): '{prompts[match.index]}'"
                        )
                    else:
                        result["result"] = "pass"
                elif match.index < len(prompts) + len(failures):
                    failure = failures[match.index - len(prompts)]
                    ctx.logger.error(f"Matched a failure: '{failure['message']}'")
                    if "exception" in failure:
                        exc_class = _EXCEPTIONS.get(failure["exception"], JobError)
                        raise exc_class(failure.get("error") or failure["message"])
                    if step.get("wait_for_prompt", True):
                        expect(ctx, self, connection, prompts)
                else:
                    groups = {
                        k: v for k, v in (match.match.groupdict() if match.match else {}).items()
                        if v is not None
                    }
                    ctx.logger.info(
                        f"Matched a success: '{patterns[match.index]}'"
                        + (f" (groups: {groups})" if groups else "")
                    )
                    for key, value in groups.items():
                        substitutions["{" + key + "}"] = value
                    result["result"] = "pass"
                    if step.get("wait_for_prompt", True):
                        expect(ctx, self, connection, prompts)
                if not name and result["result"] == "fail":
                    raise TestError(f"Failed to run command '{command}'")
            finally:
                if name:
                    result["duration"] = f"{time.monotonic() - started:.02f}"
                    result["result"] = unexpected_result(
                        ctx, name, result["result"], script.get("expected")
                    )
                    ctx.record_result(result)
                    report[name] = result["result"]


    def multinode_step(
        self, ctx: RunContext, step: Mapping[str, Any], substitutions: dict[str, str]
    ) -> None:
        """A ``lava-send``/``lava-wait``/``lava-wait-all``/``lava-sync`` step (as LAVA).

        The data a wait receives becomes ``{key}`` substitutions for later commands.
        """
        protocol = multinode_protocol(ctx)
        if protocol is None:
            raise JobError("MultiNode steps in interactive tests need the lava-multinode protocol")
        timeout = protocol.timeout
        if "lava-send" in step:
            parts = substitute(str(step["lava-send"]), substitutions).split()
            if not parts:
                raise JobError("lava-send needs a message id")
            payload = {}
            for part in parts[1:]:
                key, sep, value = part.partition("=")
                if not sep or not key:
                    raise JobError(f"lava-send {parts[0]}: expected key=value, got {part!r}")
                payload[key] = value
            reply = protocol.send(ctx, parts[0], payload, timeout)
            ctx.logger.info(f"send result: {reply!r}")
            if reply.get("response") == "nack":
                raise TestError(f"Coordinator was unable to accept lava-send {parts[0]}")
            return
        if "lava-sync" in step:
            reply = protocol.sync(ctx, str(step["lava-sync"]), timeout)
            ctx.logger.info(f"sync result: {reply!r}")
            return
        if "lava-wait" in step:
            reply = protocol.wait(ctx, str(step["lava-wait"]), timeout)
            ctx.logger.info(f"wait result: {reply!r}")
        else:
            parts = str(step["lava-wait-all"]).split()
            if not 1 <= len(parts) <= 2:
                raise JobError(f"lava-wait-all expects 1 or 2 params, got: {parts}")
            role = None
            if len(parts) > 1:
                key, _, role = parts[1].partition("=")
                if key != "role":
                    raise JobError(f"lava-wait-all 2nd param must be role=<rolename>, got: {key}")
            reply = protocol.wait_all(ctx, parts[0], timeout, role)
            ctx.logger.info(f"wait-all result: {reply!r}")
            if reply.get("response") == "nack":
                raise TestError("Nack reply from coordinator for wait-all (deadlock detected?)")
        for data in (reply.get("message") or {}).values():
            if isinstance(data, Mapping):
                for key, value in data.items():
                    substitutions["{" + str(key) + "}"] = str(value)


class Interactive(Strategy):
    section = "test"
    name = "interactive"

    @classmethod
    def accepts(cls, device: Device, parameters: Mapping[str, Any]) -> tuple[bool, str]:
        if "interactive" in parameters:
            return True, ""
        return False, "the block has no 'interactive' key"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return TestInteractiveRetry()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Interactive]
