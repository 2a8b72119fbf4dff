"""Actions, pipelines, retries, deadlines: the engine that runs a job's steps.

An :class:`Action` is one named step (LAVA's names: they are timeout keys
and protocol targets). Actions nest: an action's ``populate`` builds its own
child :class:`Pipeline`. Levels ("2.3.1"), timeout layering and results
follow LAVA. What differs is how time is kept: every action gets a
:class:`~lava_dispatcher.timing.Deadline` when it starts, blocking calls
take their timeout from :meth:`RunContext.remaining`, and when time runs out
the error names the deadline that really expired (the action's, a parent's
or the job's), not merely the innermost action as SIGALRM would.

This module knows nothing of YAML, consoles or protocols: it sees the job
through :class:`JobSettings`, and protocols reach it through the
:class:`ActionHook` interface (``before_action``), the single place where
requests at the start of named actions are made.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from lava_dispatcher.data import Key, SharedData
from lava_dispatcher.errors import (
    RETRYABLE,
    InfrastructureError,
    JobError,
    LAVABug,
    LAVAError,
    LAVATimeoutError,
    TestError,
)
from lava_dispatcher.log import JobLogger
from lava_dispatcher.timing import (
    DEFAULT_ACTION_TIMEOUT,
    Deadline,
    Interrupter,
    earliest,
    format_duration,
    parse_timeout,
)

T = TypeVar("T")

DEFAULT_NAMESPACE = "common"
#: deadlines this close together are one deadline, named after the innermost
_SAME_DEADLINE = 0.05


@dataclass
class JobSettings:
    """What actions may know about the job while the pipeline is built and run.

    ``parameters`` is the validated job definition and ``device`` the loaded
    device dictionary; neither is ever mutated after parsing.
    """

    job_id: str
    parameters: Mapping[str, Any]
    device: Mapping[str, Any]
    dispatcher: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 24 * 3600.0
    #: per namespace, what the test blocks need from deploy and boot
    test_info: dict[str, list[Any]] = field(default_factory=dict)

    def device_timeouts(self, kind: str) -> Mapping[str, Any]:
        return (self.device.get("timeouts") or {}).get(kind) or {}

    def job_timeouts(self) -> Mapping[str, Any]:
        return self.parameters.get("timeouts") or {}


class ActionHook(Protocol):
    """Called around every action: protocols make their requests in
    ``before_action``; observers see each action end in ``after_action``."""

    def before_action(self, action: Action, ctx: RunContext) -> None: ...

    def after_action(self, action: Action, ctx: RunContext, record: dict[str, Any]) -> None: ...


class Action:
    """One step of a job. Subclasses set ``name`` and implement ``run``."""

    name: str = ""
    description: str = ""
    summary: str = ""
    section: str = ""
    #: what an expired deadline of this action raises
    timeout_exception: type[LAVAError] = JobError
    #: the action's own timeout when nothing in device or job sets one
    default_timeout: float = DEFAULT_ACTION_TIMEOUT
    #: shared data this action reads, and writes (checked before the job runs)
    needs: tuple[Key[Any], ...] = ()
    provides: tuple[Key[Any], ...] = ()

    def __init__(self) -> None:
        if not self.name or "_" in self.name or " " in self.name:
            raise LAVABug(f"action name {self.name!r} of {type(self).__name__} must be kebab-case")
        self.level = ""
        self.parameters: Mapping[str, Any] = {}
        self.job: JobSettings | None = None
        self.parent: Action | None = None
        self.pipeline: Pipeline | None = None
        self.timeout = self.default_timeout
        self.connection_timeout = DEFAULT_ACTION_TIMEOUT
        self.character_delay = 0.0
        self.max_retries = 1
        self.results: dict[str, Any] = {}
        self.errors: list[str] = []
        self.duration = 0.0

    # --- building -------------------------------------------------------------
    @property
    def settings(self) -> JobSettings:
        if self.job is None:
            raise LAVABug(f"{self.name} is not part of a pipeline yet")
        return self.job

    @property
    def namespace(self) -> str:
        return str(self.parameters.get("namespace") or DEFAULT_NAMESPACE)

    @property
    def connection_namespace(self) -> str:
        """The namespace whose console this action drives (``connection-namespace``)."""
        return str(self.parameters.get("connection-namespace") or self.namespace)

    def populate(self, parameters: Mapping[str, Any]) -> None:
        """Build the child pipeline (if any) from the block parameters."""

    def new_pipeline(self, parameters: Mapping[str, Any] | None = None) -> Pipeline:
        """A child pipeline for this action; ``populate`` fills it."""
        self.pipeline = Pipeline(self.settings, parent=self, parameters=parameters)
        return self.pipeline

    def validate(self) -> None:
        """Check parameters before anything runs; raise JobError or add to ``errors``."""

    def get_constant(self, name: str, prefix: str | None = None, default: Any = None) -> Any:
        """A device constant; the job ``context`` overrides it (as in LAVA)."""
        context = self.settings.parameters.get("context") or {}
        if name in context:
            return context[name]
        constants = self.settings.device.get("constants") or {}
        if prefix:
            constants = constants.get(prefix) or {}
        value = constants.get(name)
        return default if value is None else value

    # --- running --------------------------------------------------------------
    def run(self, ctx: RunContext) -> None:
        """Do the work; the default runs the child pipeline."""
        if self.pipeline is not None:
            self.pipeline.run(ctx)

    def cleanup(self, ctx: RunContext) -> None:
        """Undo what ``run`` did; called on failure and at the end of the job."""
        if self.pipeline is not None:
            self.pipeline.cleanup(ctx)

    def walk(self) -> Iterator[Action]:
        yield self
        if self.pipeline is not None:
            yield from self.pipeline.walk()

    def reset(self) -> None:
        """Forget results and errors, for a retry."""
        for action in self.walk():
            action.results = {}
            action.errors = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.level} {self.name}>"


class Pipeline:
    """An ordered list of actions, at the top level or inside an action."""

    def __init__(
        self,
        job: JobSettings,
        parent: Action | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        if parent is not None and not parent.level:
            raise LAVABug("a child pipeline needs a parent action with a level")
        self.job = job
        self.parent = parent
        self.parameters: Mapping[str, Any] = parameters if parameters is not None else {}
        self.actions: list[Action] = []

    def add_action(self, action: Action, parameters: Mapping[str, Any] | None = None) -> Action:
        """Append ``action``, give it its level and timeouts, then let it populate."""
        if not isinstance(action, Action):
            raise LAVABug(f"only actions can be added to a pipeline, not {action!r}")
        self.actions.append(action)
        action.job = self.job
        action.parent = self.parent
        if self.parent is not None:
            action.level = f"{self.parent.level}.{len(self.actions)}"
            action.section = self.parent.section or action.section
        else:
            action.level = str(len(self.actions))
        params = self.parameters if parameters is None else parameters
        action.parameters = params
        self._set_timeouts(action, params)
        if isinstance(action, RetryAction):
            action.configure_retries(params)
        delays = self.job.device.get("character_delays") or {}
        action.character_delay = float(delays.get(action.section) or 0) / 1000.0
        action.populate(params)
        return action

    def _set_timeouts(self, action: Action, params: Mapping[str, Any]) -> None:
        # Lowest priority first, each later source overriding: LAVA's order.
        job_timeouts = self.job.job_timeouts()
        device_actions = self.job.device_timeouts("actions")
        device_connections = self.job.device_timeouts("connections")
        action_sources = [
            job_timeouts.get("action"),
            device_actions.get(action.name),
            params.get("timeout"),
        ]
        if self.parent is not None and self.parent.max_retries > 1:
            action_sources.append(
                {"seconds": self.parent.timeout // self.parent.max_retries}
            )
        action_sources.append((job_timeouts.get("actions") or {}).get(action.name))
        action_sources.append((params.get("timeouts") or {}).get(action.name))
        for source in action_sources:
            if source:
                action.timeout = parse_timeout(source, action.timeout)
        for source in (
            job_timeouts.get("connection"),
            device_connections.get(action.name),
            (job_timeouts.get("connections") or {}).get(action.name),
        ):
            if source:
                action.connection_timeout = parse_timeout(source, action.connection_timeout)

    def walk(self) -> Iterator[Action]:
        for action in self.actions:
            yield from action.walk()

    def describe(self) -> list[dict[str, Any]]:
        """The tree as LAVA writes it in description.yaml."""
        tree: list[dict[str, Any]] = []
        for action in self.actions:
            node: dict[str, Any] = {
                "class": type(action).__name__,
                "name": action.name,
                "level": action.level,
                "max_retries": action.max_retries,
                "description": action.description,
                "summary": action.summary,
                "timeout": action.timeout,
            }
            if action.pipeline is not None and action.pipeline.actions:
                node["pipeline"] = action.pipeline.describe()
            tree.append(node)
        return tree

    def validate(self) -> list[str]:
        """Validate every action; returns the collected errors (``level name: why``)."""
        errors: list[str] = []
        for action in self.walk():
            try:
                action.validate()
            except LAVAError as exc:
                action.errors.append(str(exc))
            errors.extend(f"{action.level} {action.name}: {err}" for err in action.errors)
        if self.parent is None:
            errors.extend(self._check_wiring())
        return errors

    def _check_wiring(self) -> list[str]:
        provided: set[tuple[str, Key[Any]]] = set()
        problems = []
        for action in self.walk():
            for key in action.needs:
                if (action.connection_namespace, key) not in provided and (
                    action.namespace,
                    key,
                ) not in provided:
                    problems.append(
                        f"{action.level} {action.name}: needs {key.name}, which no earlier "
                        f"action in namespace {action.namespace!r} provides"
                    )
            for key in action.provides:
                provided.add((action.namespace, key))
        return problems

    # --- running --------------------------------------------------------------
    def run(self, ctx: RunContext) -> None:
        for action in self.actions:
            self.run_action(action, ctx)

    def run_action(self, action: Action, ctx: RunContext) -> None:
        log = ctx.logger.info if self.parent is None else ctx.logger.debug
        failed = False
        start = time.monotonic()
        with ctx.running(action) as deadline:
            log(
                f"start: {action.level} {action.name} "
                f"(timeout {format_duration(deadline.remaining())}) [{action.namespace}]"
            )
            try:
                for hook in ctx.hooks:
                    hook.before_action(action, ctx)
                action.run(ctx)
            except LAVATimeoutError as exc:
                failed = True
                action.results = {"fail": str(exc)}
                ctx.logger.exception(str(exc))
                skip = bool((action.parameters.get("timeout") or {}).get("skip"))
                if not (skip and self.parent is None):
                    raise TestError(str(exc)) from exc
                ctx.logger.warning(
                    f"skip_timeout is set for {action.name} - continuing to next action block."
                )
            except LAVAError as exc:
                failed = True
                action.results = {"fail": str(exc)}
                ctx.logger.exception(str(exc))
                raise
            except Exception as exc:
                failed = True
                action.results = {"fail": str(exc)}
                ctx.logger.exception(traceback.format_exc())
                raise LAVABug(f"{action.name}: {type(exc).__name__}: {exc}") from exc
            finally:
                action.duration = time.monotonic() - start
                log(
                    f"end: {action.level} {action.name} "
                    f"(duration {format_duration(action.duration)}) [{action.namespace}]"
                )
                record = {
                    "definition": "lava",
                    "namespace": action.namespace,
                    "case": action.name,
                    "level": action.level,
                    "duration": f"{action.duration:.02f}",
                    "result": "fail" if failed or action.errors else "pass",
                    "extra": dict(action.results),
                }
                if action.results or failed:
                    ctx.record_result(record)
                for hook in ctx.hooks:
                    hook.after_action(action, ctx, record)

    def cleanup(self, ctx: RunContext) -> None:
        """Clean every action up, in order; one failure does not stop the others."""
        failed = []
        for action in self.actions:
            try:
                action.cleanup(ctx)
            except Exception as exc:
                ctx.logger.error(f"Failed to clean after action '{action.name}': {exc}")
                failed.append(action.name)
        if failed:
            raise InfrastructureError(f"Failed to clean after {', '.join(failed)}")


class RetryAction(Action):
    """Runs its child pipeline again on failure (``failure_retry``) or always (``repeat``).

    Only InfrastructureError, JobError and TestError are retried; a bug or a
    cancel goes straight up. The pause between attempts
    (``failure_retry_interval``) is 0 unless the job asks for one: LAVA's 1 s
    default only adds latency, since retries start with a cleanup that powers
    the device off.
    """

    name = "retry"

    def __init__(self) -> None:
        super().__init__()
        self.retry_interval = 0.0
        self.repeat = False

    def configure_retries(self, params: Mapping[str, Any]) -> None:
        if "failure_retry" in params and "repeat" in params:
            raise JobError("Unable to use repeat and failure_retry, use a repeat block")
        if "failure_retry" in params:
            self.max_retries = int(params["failure_retry"])
        elif "repeat" in params:
            self.max_retries = int(params["repeat"])
            self.repeat = True
        else:
            device_retry = self.get_constant("failure_retry")
            if device_retry:
                self.max_retries = max(int(device_retry), self.max_retries)
            boot_retry = self.get_constant("boot_retry")
            if self.section == "boot" and boot_retry:
                self.max_retries = int(boot_retry)
        self.retry_interval = float(params.get("failure_retry_interval") or 0)

    def run(self, ctx: RunContext) -> None:
        if self.pipeline is None:
            raise LAVABug(f"retry action {self.name} has no child pipeline")
        for attempt in range(1, self.max_retries + 1):
            try:
                self.pipeline.run(ctx)
                if not self.repeat:
                    return
            except RETRYABLE as exc:
                ctx.logger.error(
                    f"{self.name} failed: {attempt} of {self.max_retries} attempts. '{exc}'"
                )
                self.cleanup_quietly(ctx)
                if attempt == self.max_retries:
                    self.errors.append(f"{attempt} retries failed for {self.name}")
                    raise
                if ctx.remaining() <= self.retry_interval:
                    raise
                if self.retry_interval:
                    ctx.sleep(self.retry_interval)
                ctx.interrupter.discard_pending()
                for action in self.pipeline.walk():
                    action.reset()
                ctx.logger.warning(
                    f"Retrying: {self.level} {self.name} "
                    f"(timeout {format_duration(ctx.remaining())})"
                )

    def cleanup_quietly(self, ctx: RunContext) -> None:
        try:
            self.cleanup(ctx)
        except Exception as exc:
            ctx.logger.error(f"cleanup before retrying {self.name} failed: {exc}")


ResultObserver = Callable[[dict[str, Any]], None]


class RunContext:
    """Everything a running action may use: log, shared data, time, interruption.

    One per job; the main thread owns it. The job rearms ``interrupter``
    before cleanup so that a cancel does not also cancel the power-off.
    """

    def __init__(
        self,
        job: JobSettings,
        logger: JobLogger,
        *,
        interrupter: Interrupter | None = None,
        hooks: Sequence[ActionHook] = (),
    ) -> None:
        self.job = job
        self.logger = logger
        self.interrupter = interrupter or Interrupter()
        self.hooks: list[ActionHook] = list(hooks)
        self.data = SharedData()
        self.result_observers: list[ResultObserver] = []
        self._deadlines: list[tuple[Deadline, Action | None]] = []
        self._actions: list[Action] = []
        self._finalizers: list[tuple[str, Callable[[], None]]] = []
        self._shared: dict[str, Any] = {}
        self._tmp_root: Path | None = None

    # --- where we are -----------------------------------------------------------
    @property
    def action(self) -> Action | None:
        return self._actions[-1] if self._actions else None

    @property
    def namespace(self) -> str:
        action = self.action
        return action.namespace if action is not None else DEFAULT_NAMESPACE

    @contextlib.contextmanager
    def running(self, action: Action) -> Iterator[Deadline]:
        """Track ``action`` as current with its own deadline; yields the effective one."""
        own = Deadline.start(action.name, action.timeout)
        self._deadlines.append((own, action))
        self._actions.append(action)
        try:
            yield self.deadline()
        finally:
            self._actions.pop()
            self._deadlines.pop()

    @contextlib.contextmanager
    def job_deadline(self, duration: float) -> Iterator[Deadline]:
        deadline = Deadline.start("job", duration)
        self._deadlines.append((deadline, None))
        try:
            yield deadline
        finally:
            self._deadlines.remove((deadline, None))

    # --- time -----------------------------------------------------------------
    def deadline(self) -> Deadline:
        """The deadline that bounds the current wait.

        The earliest one; but when an inner action's own deadline falls within
        a moment of it (a child given its parent's whole timeout starts a few
        microseconds later), the inner one is the meaningful one to name.
        """
        found = earliest([d for d, _ in self._deadlines])
        if found is None:
            return Deadline.start("job", self.job.timeout)
        for candidate, _owner in reversed(self._deadlines):
            if candidate.expires_at - found.expires_at <= _SAME_DEADLINE:
                return candidate
        return found

    def remaining(self) -> float:
        return self.deadline().remaining()

    def timeout_error(self, detail: str = "") -> LAVAError:
        """The error for "time ran out": names the deadline that expired, and where."""
        deadline = self.deadline()
        owner = next((a for d, a in self._deadlines if d is deadline), None)
        current = self.action
        if owner is None:
            message = f"job timed out after {deadline.duration:g} seconds"
            exc_class: type[LAVAError] = JobError
        else:
            message = deadline.describe()
            exc_class = owner.timeout_exception
        if current is not None and current is not owner:
            message += f" (while running {current.level} {current.name})"
        if detail:
            message += f"; {detail}"
        return exc_class(message)

    def sleep(self, seconds: float) -> None:
        """Pause (never past the deadline); raises at once on cancel or a console fault."""
        left = self.remaining()
        self.interrupter.sleep(min(seconds, left))
        if seconds > left:
            raise self.timeout_error()

    # --- results and resources --------------------------------------------------
    def record_result(self, record: dict[str, Any]) -> dict[str, Any]:
        logged = self.logger.results(record)
        for observer in self.result_observers:
            observer(logged)
        return logged

    def add_finalizer(self, name: str, release: Callable[[], None]) -> None:
        """Something to release at the end of the job (a console, a process)."""
        self._finalizers.append((name, release))

    def mkdtemp(self, name: str) -> Path:
        """A new directory under the job's temporary directory (removed when the job ends)."""
        if self._tmp_root is None:
            base = self.job.dispatcher.get("dispatcher_download_dir")
            if base:
                Path(base).mkdir(parents=True, exist_ok=True)
            prefix = f"lava-{self.job.dispatcher.get('prefix', '')}{self.job.job_id}-"
            self._tmp_root = Path(tempfile.mkdtemp(prefix=prefix, dir=base or None))
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self._tmp_root))

    def remove_tmp(self) -> None:
        if self._tmp_root is not None:
            shutil.rmtree(self._tmp_root, ignore_errors=True)
            self._tmp_root = None

    def shared(self, name: str, factory: Callable[[], T], release: Callable[[T], None]) -> T:
        """A job-wide service (the HTTP file server...), created on first use,
        released with the other resources at the end of the job."""
        if name not in self._shared:
            service = factory()
            self._shared[name] = service

            def stop() -> None:
                self._shared.pop(name, None)
                release(service)

            self.add_finalizer(name, stop)
        return cast(T, self._shared[name])

    def run_finalizers(self) -> list[str]:
        """Release everything, newest first; returns what failed to release."""
        failed = []
        while self._finalizers:
            name, release = self._finalizers.pop()
            try:
                release()
            except Exception as exc:
                self.logger.error(f"failed to release {name}: {exc}")
                failed.append(name)
        return failed
