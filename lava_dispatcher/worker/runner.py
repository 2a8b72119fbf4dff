"""Running jobs: one ``lava-dispatch run`` child per job, in a session of its own.

Each job gets ``<state>/jobs/<id>/``: ``job.yaml`` (its definition),
``device.yaml`` (a copy of the device file as it was at the start),
``output/`` (the child's ``--output-dir``: logs.yaml, results.yaml,
result.yaml...), ``stderr.log`` and the log index. The child's stdout (the
same records as logs.yaml, ``--plain``) is only a doorbell: each chunk that
arrives means the log file has grown, and the new complete lines are
indexed at once. The file is the truth, so nothing printed elsewhere can
corrupt the log, and whatever the child wrote is found there after a crash.

Cancel: SIGTERM to the child (it cancels the job and runs its cleanup),
SIGKILL to its whole session once ``cancel_timeout`` has passed. When the
child exits, what is left of its session is killed, so a device is never
handed to the next job with a process of the last one still on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lava_dispatcher.worker import procs
from lava_dispatcher.worker.config import WorkerConfig
from lava_dispatcher.worker.logs import JobLog
from lava_dispatcher.worker.store import (
    CANCELED,
    CANCELING,
    COMPLETE,
    INCOMPLETE,
    RUNNING,
    DeviceRecord,
    JobRecord,
    Store,
    now,
)

LOG = logging.getLogger("lava-worker")
#: lines of the child's stderr kept as the failure comment when it left no result
STDERR_TAIL = 20


@dataclass(frozen=True)
class Outcome:
    """How a job ended, as the scheduler records it."""

    health: str
    error_type: str | None = None
    error_msg: str | None = None
    failure_comment: str | None = None
    #: the child had to be killed: the device's state is not known
    killed: bool = False


@dataclass
class RunningJob:
    job: JobRecord
    device: DeviceRecord
    process: asyncio.subprocess.Process
    log: JobLog
    directory: Path
    cancel_reason: str | None = None
    killed: bool = False
    kill_timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return int(self.process.pid)


def _read_result(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _tail(path: Path, lines: int = STDERR_TAIL) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class Runner:
    """Starts, watches and ends job processes; tells ``finished`` how each ended."""

    def __init__(
        self,
        config: WorkerConfig,
        store: Store,
        finished: Callable[[JobRecord, Outcome], None],
        coordinator: Callable[[], str | None],
    ) -> None:
        self.config = config
        self.store = store
        self.finished = finished
        self.coordinator = coordinator
        self.running: dict[int, RunningJob] = {}
        #: told of each ``lava-test-event`` line of a running job: (job id, message)
        self.on_test_event: Callable[[int, str], None] | None = None

    def job_dir(self, job_id: int) -> Path:
        return self.config.state_dir / "jobs" / str(job_id)

    def log(self, job_id: int) -> JobLog:
        """The job's log: the live one while it runs, else as indexed."""
        running = self.running.get(job_id)
        if running is not None:
            return running.log
        return JobLog(self.store, job_id, self.job_dir(job_id)).open()

    def argv(self, job: JobRecord, directory: Path) -> list[str]:
        argv = [
            sys.executable, "-m", "lava_dispatcher", "run", str(directory / "job.yaml"),
            "--device", str(directory / "device.yaml"), "--job-id", str(job.id),
            "--output-dir", str(directory / "output"), "--plain",
        ]  # fmt: skip
        if self.config.dispatcher is not None:
            argv += ["--dispatcher", str(self.config.dispatcher)]
        address = self.coordinator() if job.target_group else None
        if address:
            argv += ["--coordinator", address]
        return argv

    async def start(self, job: JobRecord, device: DeviceRecord) -> None:
        """Start the job's child; the job is Running (with its pid) once this returns."""
        directory = self.job_dir(job.id)
        if self.store.job(job.id).state == CANCELING:  # canceled before it could start
            self.finished(job, Outcome(CANCELED, failure_comment=self.store.job(job.id).failure_comment))
            return
        try:
            if directory.exists():  # a job put back in the queue after a crash
                shutil.rmtree(directory)
            (directory / "output").mkdir(parents=True)
            (directory / "job.yaml").write_text(job.definition, encoding="utf-8")
            shutil.copyfile(device.path, directory / "device.yaml")
            with open(directory / "stderr.log", "wb") as stderr:
                process = await asyncio.create_subprocess_exec(
                    *self.argv(job, directory),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                    cwd=directory,
                    env=procs.child_environment(),
                    start_new_session=True,
                )
        except OSError as exc:
            reason = f"the worker could not start the job: {exc}"
            LOG.error("job %s: %s", job.display_id, reason)
            self.finished(job, Outcome(INCOMPLETE, "Infrastructure", reason, reason))
            return
        current = self.store.job(job.id)
        canceled = current.state == CANCELING  # while the process was being started
        with self.store.transaction():
            self.store.update_job(job.id, state=CANCELING if canceled else RUNNING,
                                  pid=process.pid, start_time=now())  # fmt: skip
            self.store.update_device(device.hostname, state=RUNNING)
        log = JobLog(self.store, job.id, directory).open()
        if self.on_test_event is not None:
            tell, job_id = self.on_test_event, job.id
            log.on_event = lambda message: tell(job_id, message)
        running = RunningJob(job, device, process, log, directory)
        self.running[job.id] = running
        running.task = asyncio.create_task(self._watch(running), name=f"job-{job.id}")
        LOG.info("job %s started on %s (pid %d)", job.display_id, device.hostname, process.pid)
        if canceled:
            self.cancel(job.id, current.failure_comment or "canceled")

    async def _watch(self, running: RunningJob) -> None:
        process = running.process
        assert process.stdout is not None
        stdout = process.stdout

        async def follow() -> None:
            while await stdout.read(1 << 16):
                running.log.ingest()

        follower = asyncio.create_task(follow())
        code = await process.wait()
        # the child is gone; a descendant may still hold stdout open: stop reading
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        if running.kill_timer is not None:
            running.kill_timer.cancel()
        leftovers = procs.signal_session(running.pid, signal.SIGKILL)
        running.log.ingest()
        outcome = self._outcome(running, code, leftovers)
        del self.running[running.job.id]
        LOG.info("job %s ended: %s (exit %s)", running.job.display_id, outcome.health, code)
        try:
            self.finished(running.job, outcome)
        except Exception:
            LOG.exception("job %s: recording its end failed", running.job.display_id)

    def _outcome(self, running: RunningJob, code: int, leftovers: int) -> Outcome:
        result = _read_result(running.directory / "output" / "result.yaml")
        error_type = result.get("error_type") if result.get("result") != "pass" else None
        error_msg = result.get("error_msg") if result.get("result") != "pass" else None
        comment = None
        if code < 0:
            name = signal.Signals(-code).name
            comment = f"lava-dispatch run was killed by {name}"
            if running.killed:
                comment += f" ({self.config.cancel_timeout:g} s after it was asked to cancel)"
            error_type = error_type or "Infrastructure"
        elif not result:
            comment = _tail(running.directory / "stderr.log") or f"lava-dispatch run exited {code} without a result"
            error_type = error_type or "Bug"
        if running.cancel_reason is not None:
            comment = running.cancel_reason if comment is None else f"{running.cancel_reason}; {comment}"
        if leftovers:
            LOG.warning("job %s: killed %d process(es) left in its session", running.job.display_id, leftovers)
        health = CANCELED if running.cancel_reason is not None or code == 3 else (COMPLETE if code == 0 else INCOMPLETE)
        if health != COMPLETE and comment is None:
            comment = str(error_msg) if error_msg else None
        return Outcome(health, error_type, error_msg, comment, killed=running.killed or code < 0)

    def cancel(self, job_id: int, reason: str) -> bool:
        """Ask a running job to cancel (SIGTERM); SIGKILL its session after ``cancel_timeout``."""
        running = self.running.get(job_id)
        if running is None or running.cancel_reason is not None:
            return running is not None
        running.cancel_reason = reason
        procs.signal_process(running.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        running.kill_timer = loop.call_later(self.config.cancel_timeout, self._kill, running)
        return True

    def _kill(self, running: RunningJob) -> None:
        if running.job.id in self.running:
            running.killed = True
            LOG.warning("job %s: still running %g s after cancel: SIGKILL", running.job.display_id,
                        self.config.cancel_timeout)  # fmt: skip
            procs.signal_session(running.pid, signal.SIGKILL)

    async def stop(self, reason: str) -> None:
        """Cancel every running job; SIGKILL what is left after ``stop_timeout``."""
        tasks = [r.task for r in self.running.values() if r.task is not None]
        for job_id in list(self.running):
            self.cancel(job_id, reason)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self.config.stop_timeout)
        for running in list(self.running.values()):
            self._kill(running)
        if pending:
            await asyncio.wait(pending)

    async def end_orphan(self, job: JobRecord) -> bool:
        """After a worker crash: end what is left of the job's processes; whether it had started.

        Its session is found by its output directory on the leader's
        command line, and by the recorded pid if the leader is gone.
        """
        directory = self.job_dir(job.id)
        sessions = set(procs.sessions_running(str(directory / "output")))
        if job.pid and not Path(f"/proc/{job.pid}").exists() and procs.session_members(job.pid):
            sessions.add(job.pid)
        for sid in sessions:
            LOG.warning("job %s: ending its processes left from before the restart (session %d)",
                        job.display_id, sid)  # fmt: skip
            await procs.end_session(sid, min(self.config.cancel_timeout, 10.0))
        log = JobLog(self.store, job.id, directory).repair()
        log.ingest()
        return bool(sessions) or job.pid is not None or log.lines > 0
