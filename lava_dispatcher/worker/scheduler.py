"""Matching queued jobs to devices, and device health.

Event-driven: one task waits on an :class:`asyncio.Event` that a submission,
the end of a job, a cancel or a change of a device sets; it then assigns
every job it can at once and goes back to waiting. The only timer is the
next periodic health check. So a job submitted while a device is idle starts
within the same turn of the event loop (docs/benchmarks.md has the figure).

Order: health checks first, then priority (high first), then submit time.
A job fits a device when the device is Good and idle, of the requested
type, has every tag the job asks for, and is the device the job is pinned
to, if any. A MultiNode group starts only when every sub-job has a device.

Health (LAVA's rules): a device that is new, comes back, or whose job ended
on an infrastructure, configuration or dispatcher error becomes Unknown. An
Unknown device runs the health check of its type
(``<state>/health-checks/<device-type>.yaml``) before any other job, or
becomes Good at once when its type has none. A passing health check makes
it Good, any other end Bad. A Good device is checked again every
``health_check_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lava_dispatcher.worker.definitions import job_columns
from lava_dispatcher.worker.runner import Outcome, Runner
from lava_dispatcher.worker.store import (
    ACTIVE,
    BAD,
    CANCELED,
    CANCELING,
    COMPLETE,
    FINISHED,
    GOOD,
    IDLE,
    INCOMPLETE,
    RESERVED,
    RUNNING,
    SCHEDULED,
    SUBMITTED,
    UNKNOWN,
    DeviceRecord,
    JobRecord,
    Store,
    now,
)

LOG = logging.getLogger("lava-worker")
HEALTH_CHECK_SUBMITTER = "lava-health"
#: job errors after which the device's state is not known (LAVA's rule)
DEVICE_ERRORS = ("Bug", "Configuration", "Infrastructure")


def fits(job: JobRecord, device: DeviceRecord) -> bool:
    """Whether ``job`` may run on ``device`` (which is idle)."""
    if job.pinned_device is not None and job.pinned_device != device.hostname:
        return False
    if job.health_check:
        return device.health in (GOOD, UNKNOWN, BAD)
    return (
        device.health == GOOD
        and device.device_type == job.requested_device_type
        and set(job.tags) <= set(device.tags)
    )


def plan(queue: Sequence[JobRecord], devices: Sequence[DeviceRecord]) -> list[tuple[JobRecord, DeviceRecord]]:
    """Assignments for this turn: each queued job (in order) to the first idle device it fits.

    A MultiNode sub-job is placed only together with its whole group.
    """
    idle = [d for d in devices if d.present and d.state == IDLE and d.current_job is None]
    assignments: list[tuple[JobRecord, DeviceRecord]] = []
    groups: dict[str, list[JobRecord]] = {}
    for job in queue:
        if job.target_group:
            groups.setdefault(job.target_group, []).append(job)
    placed_groups: set[str] = set()
    for job in queue:
        if not idle:
            break
        if job.target_group:
            if job.target_group in placed_groups:
                continue
            placed_groups.add(job.target_group)
            free = list(idle)
            chosen = []
            for member in groups[job.target_group]:
                device = next((d for d in free if fits(member, d)), None)
                if device is None:
                    break
                free.remove(device)
                chosen.append((member, device))
            else:
                assignments.extend(chosen)
                idle = free
            continue
        device = next((d for d in idle if fits(job, d)), None)
        if device is not None:
            idle.remove(device)
            assignments.append((job, device))
    return assignments


def device_health_after(job: JobRecord, outcome: Outcome) -> tuple[str | None, str | None]:
    """The device's new health after ``job`` ended (None: unchanged), and why."""
    if job.health_check:
        if outcome.health == COMPLETE:
            return GOOD, f"health check {job.display_id} passed"
        if outcome.health == CANCELED and not outcome.killed:
            return UNKNOWN, f"health check {job.display_id} was canceled"
        return BAD, f"health check {job.display_id} failed: {outcome.failure_comment or outcome.health}"
    if outcome.killed:
        return UNKNOWN, f"job {job.display_id} had to be killed"
    if outcome.health == INCOMPLETE and outcome.error_type in DEVICE_ERRORS:
        return UNKNOWN, f"job {job.display_id} ended with an {outcome.error_type} error"
    return None, None


class Scheduler:
    """The scheduling task, health checks, and the bookkeeping when a job ends."""

    def __init__(
        self,
        store: Store,
        runner: Runner,
        health_checks: Mapping[str, str],
        interval: float,
        on_change: Callable[[str, Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.runner = runner
        #: device type -> health-check job definition (already validated)
        self.health_checks = dict(health_checks)
        self.interval = interval
        self.on_change = on_change
        self.event = asyncio.Event()
        self._stopping = False
        self._starts: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self.event.set()

    async def run(self) -> None:
        """Schedule at every wake-up until stopped; a pass never waits on anything."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self.event.clear()
            try:
                due = self.schedule()
            except Exception:  # a bad turn must not stop scheduling for good
                LOG.exception("scheduling failed; trying again at the next event")
                due = None
            if self._stopping:
                break
            try:
                timeout = None if due is None else max(0.0, due - now())
                async with asyncio.timeout_at(None if timeout is None else loop.time() + timeout):
                    await self.event.wait()
            except TimeoutError:
                pass

    async def stop(self) -> None:
        """No more jobs are started; the starts under way finish."""
        self._stopping = True
        self.event.set()
        if self._starts:
            await asyncio.wait(self._starts)

    # -- one pass ------------------------------------------------------------

    def schedule(self) -> float | None:
        """Queue health checks, start what fits; when the next periodic health check is due."""
        due = self._health_checks()
        queue = self.store.queue()
        if not queue:
            return due
        assignments = plan(queue, self.store.devices(present_only=True))
        if not assignments:
            return due
        with self.store.transaction():
            for job, device in assignments:
                self.store.update_job(job.id, state=SCHEDULED, actual_device=device.hostname)
                self.store.update_device(device.hostname, state=RESERVED, current_job=job.id)
        for job, device in assignments:
            task = asyncio.create_task(
                self.runner.start(self.store.job(job.id), self.store.device(device.hostname) or device)
            )
            self._starts.add(task)
            task.add_done_callback(self._starts.discard)
        return due

    def _health_checks(self) -> float | None:
        """Submit the health checks that are due; the time of the next periodic one."""
        pending = {
            job.pinned_device
            for job in self.store.jobs(
                "health_check = 1 AND state IN (?, ?, ?, ?)", (SUBMITTED, *ACTIVE), light=True
            )
        }
        next_due: float | None = None
        for device in self.store.devices(present_only=True):
            if device.hostname in pending or device.health not in (GOOD, UNKNOWN):
                continue
            definition = self.health_checks.get(device.device_type)
            if device.health == UNKNOWN and definition is None:
                self.set_health(device.hostname, GOOD, f"no health check for device type {device.device_type}")
                continue
            if definition is None:
                continue
            if device.health == UNKNOWN:
                self.submit_health_check(device, definition)
                continue
            if self.interval > 0:
                due = (device.last_health_check or 0.0) + self.interval
                if due <= now():
                    self.submit_health_check(device, definition)
                elif next_due is None or due < next_due:
                    next_due = due
        return next_due

    def submit_health_check(self, device: DeviceRecord, definition: str) -> JobRecord:
        with self.store.transaction():
            job_id = self.store.next_job_id()
            columns = job_columns(definition, HEALTH_CHECK_SUBMITTER)
            columns.update(id=job_id, health_check=1, pinned_device=device.hostname,
                           requested_device_type=device.device_type, tags=[])  # fmt: skip
            (job,) = self.store.insert_jobs([columns])
            self.store.update_device(device.hostname, last_health_check=now())
        LOG.info("device %s: health check %s queued (%s)", device.hostname, job_id, device.health_reason or device.health)
        return job

    def set_health(self, hostname: str, health: str, reason: str | None) -> None:
        self.store.update_device(hostname, health=health, health_reason=reason)
        LOG.info("device %s: health %s (%s)", hostname, health, reason)
        if self.on_change is not None:
            self.on_change("device", {"device": hostname, "health": health})
        self.wake()

    # -- the end of a job ----------------------------------------------------

    def job_finished(self, job: JobRecord, outcome: Outcome) -> None:
        """Record the end of a job and free its device, in one transaction."""
        health, reason = device_health_after(job, outcome)
        with self.store.transaction():
            self.store.update_job(
                job.id, state=FINISHED, health=outcome.health, end_time=now(),
                error_type=outcome.error_type, error_msg=outcome.error_msg,
                failure_comment=outcome.failure_comment,
            )  # fmt: skip
            if job.actual_device:
                self.store.update_device(job.actual_device, state=IDLE, current_job=None)
                device = self.store.device(job.actual_device)
                if health is not None and device is not None and device.health in (GOOD, UNKNOWN, BAD):
                    self.store.update_device(job.actual_device, health=health, health_reason=reason)
        if health is not None:
            LOG.info("device %s: health %s (%s)", job.actual_device, health, reason)
        if self.on_change is not None:
            self.on_change("job", {"job": job.id, "health": outcome.health})
        if job.target_group and job.essential and outcome.health != COMPLETE:
            self.cancel_group(job, f"essential role of job {job.display_id} ended {outcome.health}")
        self.wake()

    def cancel(self, job: JobRecord, reason: str) -> None:
        """Cancel one job: a queued one ends at once, a running one is asked to stop."""
        if job.state == SUBMITTED:
            self.store.update_job(job.id, state=FINISHED, health=CANCELED, end_time=now(),
                                  failure_comment=reason)  # fmt: skip
            if self.on_change is not None:
                self.on_change("job", {"job": job.id, "health": CANCELED})
        elif job.state in (SCHEDULED, RUNNING):
            # a job still being started sees Canceling when its process is up
            self.store.update_job(job.id, state=CANCELING, failure_comment=reason)
            self.runner.cancel(job.id, reason)
        self.wake()

    def cancel_group(self, job: JobRecord, reason: str) -> None:
        for member in self.store.group(job.target_group or ""):
            if member.id != job.id and member.state != FINISHED:
                self.cancel(member, reason)


def load_health_checks(directory: Path) -> dict[str, tuple[Path, str]]:
    """``<device-type>.yaml`` files of the health-check directory: type -> (path, text)."""
    found: dict[str, tuple[Path, str]] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.yaml")):
        found[path.stem] = (path, path.read_text(encoding="utf-8"))
    return found
