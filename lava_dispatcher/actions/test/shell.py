"""``test: definitions``: run lava-test-runner on the DUT and turn its signals into results.

The action types what LAVA types (a prompt check, the pre-commands,
``export SHELL=...; . <results_dir>/environment`` (one line) with a return-code
check, ``<results_dir>/bin/lava-test-runner <results_dir>/<stage>``), then
handles the events a :class:`~.signals.SignalWatcher` queues from the
console's reader thread until ``<LAVA_TEST_RUNNER EXIT>``. Results have
LAVA's fields and suites: each case in the suite ``<i>_<name>``, each
definition run and each failed install stage in the ``lava`` suite.

A malformed signal (bad result word, a measurement that is not a number, a
word without ``=``) is logged as a warning and skipped: the DUT's output
never crashes the job. ``lava-test-raise`` ends the action with TestError.
MultiNode API calls (``<LAVA_MULTI_NODE> <LAVA_SEND ...>``...) go to the
job's lava-multinode protocol, and the reply is typed back (:mod:`.multinode`).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.connection import CONNECTION, current_connection, expect
from lava_dispatcher.actions.deploy.testdef import definitions
from lava_dispatcher.actions.overlay_data import (
    PRE_COMMANDS,
    RESULTS_DIR,
    TEST_SHELL,
    TestDefinitionInfo,
)
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.actions.test import multinode
from lava_dispatcher.actions.test.expected import record_missing, unexpected_result
from lava_dispatcher.actions.test.signals import (
    DEFAULT_FIXUP,
    RUNNER_EXIT,
    Event,
    SignalWatcher,
    keyed_params,
    parse_test_case,
)
from lava_dispatcher.console.expect import ExpectTimeout
from lava_dispatcher.console.shell import CommandFailed
from lava_dispatcher.devices import Device
from lava_dispatcher.errors import ConnectionClosedError, JobError, LAVATimeoutError, TestError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext
from lava_dispatcher.plugins import hookimpl
from lava_dispatcher.protocols.multinode import multinode_protocol

#: how long the shell may take to print its prompt once the test runner has exited (s)
PROMPT_AFTER_RUNNER = 10.0


class TestShellRetry(RetryAction):
    __test__ = False
    name = "lava-test-retry"
    description = "Retry wrapper for lava-test-shell"
    summary = "Retry support for Lava Test Shell"
    section = "test"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        self.new_pipeline(parameters).add_action(TestShellAction())


class _Run:
    """What the action knows about the definition currently running."""

    def __init__(self, info: TestDefinitionInfo | None, testrun_id: str, uuid: str) -> None:
        self.info = info
        self.testrun_id = testrun_id
        self.uuid = uuid
        self.started = time.monotonic()
        self.report: dict[str, str] = {}

    @property
    def fixup(self) -> dict[str, str]:
        if self.info is not None and self.info.fixupdict:
            return self.info.fixupdict
        return DEFAULT_FIXUP

    def duration(self) -> str:
        return f"{time.monotonic() - self.started:.02f}"


class TestShellAction(Action):
    __test__ = False
    name = "lava-test-shell"
    description = "Executing lava-test-runner"
    summary = "Lava Test Shell"
    timeout_exception = LAVATimeoutError
    needs = (CONNECTION, RESULTS_DIR)

    def __init__(self) -> None:
        super().__init__()
        self.run_state: _Run | None = None
        self.testset: str | None = None

    @property
    def stage(self) -> int:
        return int(self.parameters.get("stage") or 0)

    # --- running --------------------------------------------------------------------
    def run(self, ctx: RunContext) -> None:
        connection = current_connection(ctx, self)
        space = ctx.data(self.namespace)
        results = space.get(RESULTS_DIR, default=None)
        if results is None:
            raise JobError(
                "Nothing to run: no overlay was deployed for this test (is a deploy action missing?)"
            )
        infos = {
            i.uuid: i for i in definitions(ctx, self.namespace).values() if i.stage == self.stage
        }
        self.by_testrun = {i.testrun_id: i for i in infos.values()}
        watcher = SignalWatcher(ctx.logger, {i.testrun_id: i.pattern for i in infos.values()})
        self.run_state = None
        self.testset = None
        shell = connection.shell
        if not shell.prompts:
            shell.prompts = [str(self.get_constant("default-shell-prompt"))]
        try:
            self._type_setup(ctx, connection, results, space)
            connection.console.watchers.append(watcher)
            shell.type_line(
                f"{results}/bin/lava-test-runner {results}/{self.stage}",
                delay=self.character_delay,
                timeout=min(ctx.remaining(), self.connection_timeout),
                on_retry=ctx.logger.warning,
            )
            ctx.logger.info(f"Test shell timeout: {ctx.remaining():.0f}s")
            self._follow(ctx, watcher, connection)
            # move the console's expect position past the runner's output and the
            # prompt the shell prints after it: the next action (an interactive
            # test...) must not take that old prompt for the answer to its command
            expect(ctx, self, connection, [RUNNER_EXIT], timeout=min(ctx.remaining(), 10))
            try:
                shell.wait_for_prompt(timeout=min(ctx.remaining(), PROMPT_AFTER_RUNNER))
            except ExpectTimeout:
                ctx.logger.warning(
                    f"no shell prompt within {PROMPT_AFTER_RUNNER:g} s after the test runner exited"
                )
        finally:
            if watcher in connection.console.watchers:
                connection.console.watchers.remove(watcher)
            self._unfinished(ctx)
        self.results = {"stage": self.stage, "definitions": sorted(self.by_testrun)}
        if self.errors:
            raise TestError("; ".join(self.errors))

    def _type_setup(self, ctx: RunContext, connection: Any, results: str, space: Any) -> None:
        shell = connection.shell
        try:
            shell.force_prompt(timeout=min(ctx.remaining(), self.connection_timeout))
            for command in space.get(PRE_COMMANDS, default=None) or []:
                shell.type_line(
                    command, delay=self.character_delay, timeout=ctx.remaining(),
                    on_retry=ctx.logger.warning,
                )
                shell.wait_for_prompt(timeout=ctx.remaining())
            # "." of a missing file aborts the whole line in POSIX shells (no
            # return-code marker would come): test for it first
            source = f"test -r {results}/environment && . {results}/environment"
            sh_cmd = space.get(TEST_SHELL, default=None)
            if sh_cmd:
                # one line, one round trip to the DUT (LAVA types two)
                source = f"export SHELL={shlex.quote(sh_cmd)}; {source}"
            shell.run(
                source, timeout=ctx.remaining(), check=True, echo_check=True,
                on_retry=ctx.logger.warning,
            )
        except CommandFailed as exc:
            raise JobError(f"cannot source {results}/environment on the DUT: {exc}") from exc
        except ExpectTimeout as exc:
            raise ctx.timeout_error("preparing the test shell") from exc

    def _follow(self, ctx: RunContext, watcher: SignalWatcher, connection: Any) -> None:
        while True:
            events = watcher.take(ctx.remaining(), ctx.interrupter)
            if not events:
                raise ctx.timeout_error("waiting for the test runner to finish")
            for event in events:
                if self._handle(ctx, event, connection):
                    return

    # --- events ---------------------------------------------------------------------
    def _handle(self, ctx: RunContext, event: Event, connection: Any) -> bool:
        """Handle one event; True when the runner has exited."""
        if event.kind == "exit":
            ctx.logger.info("ok: lava_test_shell seems to have completed")
            self._unfinished(ctx)
            self.testset = None
            return True
        if event.kind == "eof":
            if connection.console.closed:
                raise ConnectionClosedError("the console closed while the test shell was running")
            return False
        if event.kind == "install-fail":
            self._install_failed(ctx)
        elif event.kind == "pattern":
            self._pattern(ctx, event)
        elif event.kind == "multinode":
            self._multinode(ctx, event, connection)
        elif event.kind == "signal":
            self._signal(ctx, event)
        return False

    def _multinode(self, ctx: RunContext, event: Event, connection: Any) -> None:
        """A MultiNode API call from the DUT: the coordinator's reply is typed back."""
        protocol = multinode_protocol(ctx)
        if protocol is None:
            ctx.logger.warning(
                f"MultiNode call <LAVA_{event.name}> ignored: the job has no lava-multinode protocol"
            )
            return
        multinode.handle(
            ctx, protocol, event, connection.shell, delay=self.character_delay,
            record=lambda case, result: self._record_case(
                ctx, {"test_case_id": case, "result": result}
            ),
        )  # fmt: skip

    def _signal(self, ctx: RunContext, event: Event) -> None:
        name, params = event.name, event.params
        ctx.logger.debug(f"Received signal: <{name}> {' '.join(params)}")
        handler = getattr(self, f"_on_{name.lower()}", None)
        if handler is None:
            ctx.logger.warning(f"unknown signal <LAVA_SIGNAL_{name}> ignored")
            return
        try:
            handler(ctx, event)
        except (ValueError, IndexError) as exc:
            ctx.logger.warning(f"malformed signal {event.text!r} ignored: {exc}")

    def _on_startrun(self, ctx: RunContext, event: Event) -> None:
        testrun_id, uuid = event.params[0], event.params[1]
        info = self.by_testrun.get(testrun_id)
        if self.run_state is not None:
            ctx.logger.warning(f"{testrun_id} started before {self.run_state.testrun_id} ended")
            self._unfinished(ctx)
        self.run_state = _Run(info, testrun_id, uuid)
        ctx.logger.info(f"Starting test lava.{testrun_id} ({uuid})")
        if info is not None and info.pattern is not None:
            ctx.logger.info(f"Enabling test definition pattern {info.pattern.pattern!r}")

    def _on_endrun(self, ctx: RunContext, event: Event) -> None:
        testrun_id, uuid = event.params[0], event.params[1]
        state = self.run_state if self.run_state is not None else _Run(None, testrun_id, uuid)
        info = self.by_testrun.get(testrun_id) or state.info
        if info is not None:
            record_missing(ctx, testrun_id, info.expected, state.report, self.level)
        record: dict[str, Any] = {
            "definition": "lava",
            "case": testrun_id,
            "uuid": uuid,
            "repository": info.repository if info is not None else "",
            "path": info.path if info is not None else "",
            "duration": state.duration(),
            "result": "pass",
            "revision": (info.revision if info is not None and info.revision else "unspecified"),
            "namespace": self.namespace,
        }
        if "connection-namespace" in self.parameters:
            record["connection-namespace"] = self.parameters["connection-namespace"]
        if info is not None and info.commit_id:
            record["commit_id"] = info.commit_id
        ctx.logger.info(f"Ending test lava.{testrun_id} ({uuid}), duration {state.duration()}")
        ctx.record_result(record)
        if state.report:
            summary = "\n".join(f"{case}: {result}" for case, result in state.report.items())
            ctx.logger.debug(f"--- {testrun_id} Test Report ---\n{summary}")
        self.run_state = None

    def _on_starttc(self, ctx: RunContext, event: Event) -> None:
        ctx.logger.marker(event.params[0], "start_test_case", line=event.line)

    def _on_endtc(self, ctx: RunContext, event: Event) -> None:
        ctx.logger.marker(event.params[0], "end_test_case", line=event.line)

    def _on_testcase(self, ctx: RunContext, event: Event) -> None:
        data = keyed_params(event.params)
        if "test_case_id" in data:
            ctx.logger.marker(data["test_case_id"], "test_case", line=event.line)
        unknown = set(data) - {"test_case_id", "result", "measurement", "units"}
        if unknown:
            ctx.logger.warning(f"unknown key(s) {sorted(unknown)} in {event.text!r} ignored")
        self._record_case(ctx, data)

    def _on_testset(self, ctx: RunContext, event: Event) -> None:
        action = event.params[0]
        if action == "START":
            self.testset = event.params[1]
            ctx.logger.info(f"Starting test_set {self.testset}")
        elif action == "STOP":
            ctx.logger.info(f"Closing test_set {self.testset}")
            self.testset = None
        else:
            raise ValueError(f"TESTSET takes START <name> or STOP, not {action!r}")

    def _on_testreference(self, ctx: RunContext, event: Event) -> None:
        if len(event.params) != 3:
            raise ValueError("TESTREFERENCE takes <case> <result> <url>")
        case, result, reference = event.params
        record = {
            "case": case,
            "definition": self._definition(),
            "result": result,
            "reference": reference,
        }
        if self.testset:
            record["set"] = self.testset
        ctx.record_result(record)

    def _on_testraise(self, ctx: RunContext, event: Event) -> None:
        raise TestError(" ".join(event.params))

    def _on_testfeedback(self, ctx: RunContext, event: Event) -> None:
        namespace = event.params[0]
        if namespace not in ctx.data.namespaces():
            ctx.logger.error(f"{namespace} is not a valid namespace")
            return
        # every console is read all the time: its output is already in the log
        ctx.logger.info(f"Feedback from namespace {namespace} is logged as it arrives")

    def _on_testevent(self, ctx: RunContext, event: Event) -> None:
        ctx.logger.event(" ".join(event.params))

    def _pattern(self, ctx: RunContext, event: Event) -> None:
        data = {k: v for k, v in event.groups.items() if v is not None}
        case = str(data.get("test_case_id", "")).strip()
        if not case:
            return
        ctx.logger.marker(data["test_case_id"], "test_case", line=event.line)
        if " " in case:
            ctx.logger.debug(f"Skipping invalid test_case_id '{case}'")
            return
        try:
            self._record_case(ctx, data)
        except ValueError as exc:
            ctx.logger.warning(f"parse pattern match {event.text!r} ignored: {exc}")

    # --- results --------------------------------------------------------------------
    def _definition(self) -> str:
        return self.run_state.testrun_id if self.run_state is not None else "lava"

    def _record_case(self, ctx: RunContext, data: dict[str, Any]) -> None:
        fixup = self.run_state.fixup if self.run_state is not None else DEFAULT_FIXUP
        case, result, measurement, units = parse_test_case(data, fixup)
        record: dict[str, Any] = {"definition": self._definition(), "case": case, "result": result}
        if measurement is not None:
            record["measurement"] = measurement
            if units:
                record["units"] = units
        info = self.run_state.info if self.run_state is not None else None
        record["result"] = unexpected_result(ctx, case, result, info.expected if info else None)
        if self.testset:
            record["set"] = self.testset
        if self.run_state is not None:
            self.run_state.report[case] = record["result"]
        ctx.record_result(record)

    def _unfinished(self, ctx: RunContext) -> None:
        """A definition that started and never ended is a failed run (killed, crashed)."""
        if self.run_state is None:
            return
        ctx.logger.error(f"Marking unfinished test run {self.run_state.testrun_id} as failed")
        ctx.record_result(
            {
                "definition": "lava",
                "case": self.run_state.testrun_id,
                "uuid": self.run_state.uuid,
                "result": "fail",
                "duration": self.run_state.duration(),
            }
        )
        self.run_state = None

    def _install_failed(self, ctx: RunContext) -> None:
        ctx.logger.error(f"Unable to start stage {self.stage}. Read the log for more details.")
        self.errors.append(f"Unable to start test stage {self.stage}")
        ctx.record_result({"definition": "lava", "case": f"stage_{self.stage}", "result": "fail"})


class TestShell(Strategy):
    __test__ = False
    section = "test"
    name = "lava-test-shell"

    @classmethod
    def accepts(cls, device: Device, parameters: Mapping[str, Any]) -> tuple[bool, str]:
        if "definitions" not in parameters:
            return False, "the block has no 'definitions'"
        if "docker" in parameters:
            return False, "docker test shells are not supported"
        return True, ""

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return TestShellRetry()

    @classmethod
    def needs_overlay(cls, parameters: Mapping[str, Any]) -> bool:
        return True

    @classmethod
    def has_shell(cls, parameters: Mapping[str, Any]) -> bool:
        return True


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [TestShell]
