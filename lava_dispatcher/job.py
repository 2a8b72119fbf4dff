"""A job: device + parameters + pipeline, and how one run goes from start to outcome.

Running a job always ends the same way, whatever happened: every action's
cleanup runs, then finalize (power off, close consoles, release what the
job started) if the pipeline did not reach it, then protocols are
finalised, then the outcome is logged as LAVA's ``lava/job`` result and
handed to the ``lava_job_finished`` hook (which writes results.yaml and
junit.xml). A cancel is noticed by every wait at once; the interrupter is
then rearmed so that the cleanup itself can wait for the power-off.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from lava_dispatcher.errors import JobCanceled, JobError, LAVABug, LAVAError, error_type_of
from lava_dispatcher.log import JobLogger
from lava_dispatcher.pipeline import Action, JobSettings, Pipeline, RunContext
from lava_dispatcher.timing import Interrupter

if TYPE_CHECKING:
    from lava_dispatcher.protocols import Protocol

#: how long the cleanup phase may take in all (LAVA's CLEANUP_TIMEOUT)
CLEANUP_TIMEOUT = 300.0


@dataclass
class Outcome:
    """How the job ended: what result.yaml holds."""

    result: str
    error_type: str = ""
    error_msg: str = ""

    @property
    def canceled(self) -> bool:
        return self.error_type == JobCanceled.error_type

    def as_result(self) -> dict[str, Any]:
        record: dict[str, Any] = {"definition": "lava", "case": "job", "result": self.result}
        if self.result != "pass":
            record["error_msg"] = self.error_msg or "Unknown error"
            record["error_type"] = self.error_type or "Unknown"
        return record

    @property
    def exit_code(self) -> int:
        """0 Complete, 1 Incomplete, 3 Canceled (2 is for jobs that never ran)."""
        if self.result == "pass":
            return 0
        return 3 if self.canceled else 1


class _PluginObserver:
    """Relays action ends to the ``lava_action_finished`` hook."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def before_action(self, action: Action, ctx: RunContext) -> None:
        pass

    def after_action(self, action: Action, ctx: RunContext, record: dict[str, Any]) -> None:
        self.job.manager.hook.lava_action_finished(job=self.job, action=action, result=record)


class Job:
    def __init__(
        self,
        settings: JobSettings,
        pipeline: Pipeline,
        *,
        protocols: Sequence[Protocol] = (),
        manager: pluggy.PluginManager,
        output_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.protocols = list(protocols)
        self.manager = manager
        self.output_dir = output_dir
        self.results: list[dict[str, Any]] = []
        self.ctx: RunContext | None = None
        #: problems that did not stop the job (a repeated key in its YAML...)
        self.warnings: list[str] = []

    @property
    def job_id(self) -> str:
        return self.settings.job_id

    @property
    def parameters(self) -> Mapping[str, Any]:
        return self.settings.parameters

    @property
    def device(self) -> Mapping[str, Any]:
        return self.settings.device

    def describe(self) -> dict[str, Any]:
        """The pipeline tree, as LAVA's description.yaml holds it."""
        return {"pipeline": self.pipeline.describe()}

    def validate(self) -> None:
        """Every action's own checks; raises JobError listing all problems."""
        errors = self.pipeline.validate()
        if errors:
            raise JobError("Invalid job data: " + "; ".join(errors))

    def _finalize_action(self) -> Action | None:
        last = self.pipeline.actions[-1] if self.pipeline.actions else None
        return last if last is not None and last.name == "finalize" else None

    def _on_result(self, record: dict[str, Any]) -> None:
        self.results.append(record)
        self.manager.hook.lava_result_recorded(job=self, result=record)

    def run(self, logger: JobLogger, interrupter: Interrupter | None = None) -> Outcome:
        """Run the pipeline to its end; never raises for a job failure."""
        ctx = RunContext(
            self.settings,
            logger,
            interrupter=interrupter,
            hooks=[*self.protocols, _PluginObserver(self)],
        )
        ctx.result_observers.append(self._on_result)
        self.ctx = ctx
        self.manager.hook.lava_job_started(job=self)
        for warning in self.warnings:
            logger.warning(warning)
        ctx.record_result({"definition": "lava", "case": "validate", "result": "pass"})

        error: BaseException | None = None
        try:
            with ctx.job_deadline(self.settings.timeout):
                for protocol in self.protocols:
                    protocol.set_up(ctx)
                self.pipeline.run(ctx)
        except BaseException as exc:
            error = exc

        error = self._clean_up(ctx, error)
        outcome = self._outcome(logger, error)
        ctx.record_result(outcome.as_result())
        self.manager.hook.lava_job_finished(job=self, outcome=outcome.as_result())
        return outcome

    def _clean_up(self, ctx: RunContext, error: BaseException | None) -> BaseException | None:
        """Cleanup, finalize and protocol teardown, whatever happened before."""
        ctx.interrupter.rearm()
        finalize = self._finalize_action()
        with ctx.job_deadline(CLEANUP_TIMEOUT):
            try:
                self.pipeline.cleanup(ctx)
            except BaseException as exc:
                ctx.logger.error(f"cleanup failed: {exc}")
                error = error or exc
            if finalize is not None and not getattr(finalize, "ran", True):
                try:
                    self.pipeline.run_action(finalize, ctx)
                except BaseException as exc:
                    error = error or exc
            for protocol in self.protocols:
                try:
                    protocol.finalise(ctx)
                except BaseException as exc:
                    ctx.logger.error(f"protocol {protocol.name}: finalise failed: {exc}")
                    error = error or exc
            # whatever a failed finalize left behind is still released
            for name in ctx.run_finalizers():
                error = error or JobError(f"failed to release {name}")
            ctx.remove_tmp()
        return error

    @staticmethod
    def _outcome(logger: JobLogger, error: BaseException | None) -> Outcome:
        if error is None:
            logger.info("Job finished correctly")
            return Outcome("pass")
        if isinstance(error, LAVAError) and not isinstance(error, LAVABug):
            help_text = error.error_help
        else:
            if not isinstance(error, LAVABug):
                logger.exception("".join(traceback.format_exception(error)))
            help_text = LAVABug.error_help
        logger.error(help_text)
        if isinstance(error, KeyboardInterrupt):
            return Outcome("fail", JobCanceled.error_type, "The job was canceled")
        return Outcome("fail", error_type_of(error), str(error) or type(error).__name__)
