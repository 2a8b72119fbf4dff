"""The pipeline engine: levels, timeout layering, retries, deadlines, cancel, cleanup."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from lava_dispatcher.data import Key
from lava_dispatcher.errors import (
    InfrastructureError,
    JobCanceled,
    JobError,
    LAVABug,
    LAVATimeoutError,
    TestError,
)
from lava_dispatcher.log import JobLogger
from lava_dispatcher.pipeline import Action, JobSettings, Pipeline, RetryAction, RunContext

WIDGET: Key[str] = Key("widget", str, "something one action makes for another")


def settings(job: dict[str, Any] | None = None, device: dict[str, Any] | None = None) -> JobSettings:
    return JobSettings(job_id="7", parameters=job or {}, device=device or {})


class Recorder(Action):
    name = "recorder"

    def __init__(self, log: list[str], fail: list[BaseException] | None = None) -> None:
        super().__init__()
        self.log = log
        self.fail = list(fail or [])

    def run(self, ctx: RunContext) -> None:
        self.log.append(f"run {self.level}")
        if self.fail:
            raise self.fail.pop(0)

    def cleanup(self, ctx: RunContext) -> None:
        self.log.append(f"cleanup {self.level}")


class Sleeper(Action):
    name = "sleeper"

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def run(self, ctx: RunContext) -> None:
        ctx.sleep(self.seconds)


class Wrapper(RetryAction):
    name = "wrapper"

    def __init__(self, *children: Action) -> None:
        super().__init__()
        self.children = children

    def populate(self, parameters: Any) -> None:
        pipeline = self.new_pipeline(parameters)
        for child in self.children:
            pipeline.add_action(child)


@pytest.fixture
def ctx(tmp_path) -> RunContext:
    logger = JobLogger()
    logger.add_file(tmp_path / "logs.yaml")
    return RunContext(settings(), logger)


def test_levels_follow_lava_numbering() -> None:
    log: list[str] = []
    pipeline = Pipeline(settings())
    pipeline.add_action(Recorder(log))
    wrapper = pipeline.add_action(Wrapper(Recorder(log), Recorder(log)))
    assert [a.level for a in pipeline.walk()] == ["1", "2", "2.1", "2.2"]
    assert wrapper.pipeline is not None
    assert pipeline.describe()[1]["pipeline"][1]["level"] == "2.2"


def test_timeout_layering_in_lava_order() -> None:
    job = {
        "timeouts": {
            "job": {"minutes": 30},
            "action": {"minutes": 5},
            "actions": {"recorder": {"seconds": 42}},
            "connection": {"seconds": 20},
        }
    }
    device = {
        "timeouts": {
            "actions": {"sleeper": {"minutes": 2}, "recorder": {"minutes": 9}},
            "connections": {"sleeper": {"seconds": 11}},
        }
    }
    pipeline = Pipeline(settings(job, device))
    plain = pipeline.add_action(Sleeper(1))  # device per-name beats the job default
    named = pipeline.add_action(Recorder([]))  # job per-name beats the device per-name
    block = pipeline.add_action(Sleeper(1), {"timeout": {"seconds": 99}})
    per_block = pipeline.add_action(
        Sleeper(1), {"timeout": {"seconds": 99}, "timeouts": {"sleeper": {"seconds": 7}}}
    )
    assert plain.timeout == 120
    assert plain.connection_timeout == 11
    assert named.timeout == 42
    assert named.connection_timeout == 20
    assert block.timeout == 99
    assert per_block.timeout == 7


def test_retry_children_share_the_parent_timeout() -> None:
    pipeline = Pipeline(settings())
    wrapper = pipeline.add_action(
        Wrapper(Sleeper(1)), {"failure_retry": 3, "timeout": {"seconds": 90}}
    )
    assert wrapper.max_retries == 3
    assert wrapper.pipeline is not None
    assert wrapper.pipeline.actions[0].timeout == 30


def test_retry_reruns_after_a_retryable_failure_and_cleans_up(ctx: RunContext) -> None:
    log: list[str] = []
    pipeline = Pipeline(ctx.job)
    pipeline.add_action(
        Wrapper(Recorder(log, fail=[InfrastructureError("flaky"), JobError("again")])),
        {"failure_retry": 3},
    )
    pipeline.run(ctx)
    assert log == [
        "run 1.1",
        "cleanup 1.1",
        "run 1.1",
        "cleanup 1.1",
        "run 1.1",
    ]


def test_bugs_and_cancels_are_never_retried(ctx: RunContext) -> None:
    for error in (LAVABug("oops"), JobCanceled("stop")):
        log: list[str] = []
        pipeline = Pipeline(ctx.job)
        pipeline.add_action(Wrapper(Recorder(log, fail=[error])), {"failure_retry": 3})
        with pytest.raises(type(error)):
            pipeline.run(ctx)
        assert log == ["run 1.1"]


def test_last_failure_is_reraised_with_its_class(ctx: RunContext) -> None:
    pipeline = Pipeline(ctx.job)
    pipeline.add_action(
        Wrapper(Recorder([], fail=[TestError("a"), TestError("b")])), {"failure_retry": 2}
    )
    with pytest.raises(TestError, match="b"):
        pipeline.run(ctx)


def test_repeat_runs_every_time(ctx: RunContext) -> None:
    log: list[str] = []
    pipeline = Pipeline(ctx.job)
    pipeline.add_action(Wrapper(Recorder(log)), {"repeat": 3})
    pipeline.run(ctx)
    assert log == ["run 1.1"] * 3


def test_unexpected_exceptions_become_bugs(ctx: RunContext) -> None:
    pipeline = Pipeline(ctx.job)
    pipeline.add_action(Recorder([], fail=[ZeroDivisionError("x")]))
    with pytest.raises(LAVABug, match="ZeroDivisionError"):
        pipeline.run(ctx)


def test_deadline_names_the_action_and_ends_on_time(ctx: RunContext) -> None:
    pipeline = Pipeline(ctx.job)
    pipeline.add_action(Sleeper(30), {"timeout": {"seconds": 1}})
    start = time.monotonic()
    with pytest.raises(JobError, match=r"sleeper timed out after 1 seconds"):
        pipeline.run(ctx)
    assert 0.9 < time.monotonic() - start < 1.5


def test_the_expired_deadline_is_the_one_named(ctx: RunContext) -> None:
    """A parent's shorter deadline is blamed, not the innermost action."""
    pipeline = Pipeline(ctx.job)
    pipeline.add_action(
        Wrapper(Sleeper(30)), {"timeout": {"seconds": 1}, "timeouts": {"sleeper": {"seconds": 20}}}
    )
    with pytest.raises(JobError) as info:
        pipeline.run(ctx)
    assert "wrapper timed out after 1 seconds" in str(info.value)
    assert "while running 1.1 sleeper" in str(info.value)


def test_job_deadline(ctx: RunContext) -> None:
    pipeline = Pipeline(ctx.job)
    pipeline.add_action(Sleeper(30), {"timeout": {"seconds": 20}})
    with ctx.job_deadline(0.5), pytest.raises(JobError, match=r"job timed out after 0\.5 seconds"):
        pipeline.run(ctx)


def test_test_shell_timeouts_become_test_errors_or_are_skipped(ctx: RunContext) -> None:
    class Shell(Action):
        name = "lava-test-shell"

        def run(self, ctx: RunContext) -> None:
            raise LAVATimeoutError("lava-test-shell timed out")

    pipeline = Pipeline(ctx.job)
    pipeline.add_action(Shell())
    with pytest.raises(TestError):
        pipeline.run(ctx)
    skipping = Pipeline(ctx.job)
    log: list[str] = []
    skipping.add_action(Shell(), {"timeout": {"minutes": 1, "skip": True}})
    skipping.add_action(Recorder(log))
    skipping.run(ctx)
    assert log == ["run 2"]


def test_cancel_interrupts_a_wait_within_milliseconds(ctx: RunContext) -> None:
    pipeline = Pipeline(ctx.job)
    pipeline.add_action(Sleeper(30), {"timeout": {"seconds": 60}})
    timer = threading.Timer(0.2, ctx.interrupter.cancel, args=(JobCanceled("canceled"),))
    timer.start()
    start = time.monotonic()
    with pytest.raises(JobCanceled):
        pipeline.run(ctx)
    assert time.monotonic() - start < 0.5


def test_cleanup_runs_for_every_action_even_when_one_fails(ctx: RunContext) -> None:
    log: list[str] = []

    class BadCleanup(Recorder):
        def cleanup(self, ctx: RunContext) -> None:
            raise RuntimeError("cannot")

    pipeline = Pipeline(ctx.job)
    pipeline.add_action(Recorder(log))
    pipeline.add_action(BadCleanup(log))
    pipeline.add_action(Recorder(log))
    with pytest.raises(InfrastructureError, match="recorder"):
        pipeline.cleanup(ctx)
    assert log == ["cleanup 1", "cleanup 3"]


def test_wiring_of_shared_data_is_checked_before_running() -> None:
    class Maker(Action):
        name = "maker"
        provides = (WIDGET,)

    class User(Action):
        name = "user"
        needs = (WIDGET,)

    good = Pipeline(settings())
    good.add_action(Maker())
    good.add_action(User())
    assert good.validate() == []
    bad = Pipeline(settings())
    bad.add_action(User())
    bad.add_action(Maker())
    assert bad.validate() == [
        "1 user: needs widget, which no earlier action in namespace 'common' provides"
    ]


def test_protocol_hooks_see_every_action(ctx: RunContext) -> None:
    seen: list[tuple[str, str]] = []

    class Hook:
        def before_action(self, action: Action, ctx: RunContext) -> None:
            seen.append(("before", action.name))

        def after_action(self, action: Action, ctx: RunContext, record: dict) -> None:
            seen.append(("after", record["result"]))

    ctx.hooks.append(Hook())
    pipeline = Pipeline(ctx.job)
    pipeline.add_action(Wrapper(Recorder([])))
    pipeline.run(ctx)
    assert seen == [
        ("before", "wrapper"),
        ("before", "recorder"),
        ("after", "pass"),
        ("after", "pass"),
    ]


def test_action_names_must_be_kebab_case() -> None:
    class Bad(Action):
        name = "bad_name"

    with pytest.raises(LAVABug):
        Bad()


def test_protocol_requests_run_at_the_start_of_the_named_action(ctx: RunContext) -> None:
    from lava_dispatcher.protocols import Protocol

    calls: list[tuple[str, str, int]] = []
    log: list[str] = []

    class Fake(Protocol):
        name = "fake-proto"

        def run_request(self, request: Any, action: Action, ctx: RunContext) -> None:
            calls.append((action.name, request["request"], len(log)))

    block = {"protocols": {"fake-proto": [
        {"action": "recorder", "request": "lava-send"},
        {"action": "no-such-action", "request": "lava-wait"},
    ]}}
    assert Fake.accepts({"protocols": {"fake-proto": {}}})
    assert not Fake.accepts({"protocols": {}})
    ctx.hooks.append(Fake({}, "7"))
    pipeline = Pipeline(ctx.job)
    pipeline.add_action(Wrapper(Recorder(log)), block)
    pipeline.run(ctx)
    # once, for the action of that name, before it ran (log was still empty)
    assert calls == [("recorder", "lava-send", 0)]
    assert log == ["run 1.1"]
