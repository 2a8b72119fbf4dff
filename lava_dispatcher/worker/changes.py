"""From what the store commits to events and notifications.

The store tells :meth:`ChangeFeed.committed` which jobs and devices each
commit touched (``Store.on_commit``): everything that changes a job or a
device, whoever does it (scheduler, runner, API, recovery at start), goes
through the store, so nothing is missed, and nobody hears of a change that
is not on disk. The feed keeps the last state and health it saw of every
unfinished job and every device; a change of either becomes a ``.testjob``
or ``.device`` event (LAVA's payloads, events.py), and a job's change goes
to the notifier (its ``notify`` block) with the record before and after.
``lava-test-event`` lines become ``.event`` events (the runner reports them
as it indexes the log).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from lava_dispatcher.worker.events import (
    EventHub,
    device_data,
    job_event_data,
    job_owner,
    lava_event_data,
    worker_data,
)
from lava_dispatcher.worker.store import FINISHED, DeviceRecord, JobRecord, Store

LOG = logging.getLogger("lava-worker.events")


class JobWatcher(Protocol):
    """What is told of every change of a job (the notifier)."""

    def job_changed(self, before: JobRecord | None, after: JobRecord) -> None: ...


class ChangeFeed:
    def __init__(
        self, store: Store, worker: str, hub: EventHub | None, watchers: list[JobWatcher]
    ) -> None:
        self.store = store
        self.worker = worker
        self.hub = hub
        self.watchers = watchers
        #: the last record seen of each unfinished job
        self._jobs: dict[int, JobRecord] = {}
        #: the last (state, health, current job) seen of each device
        self._devices: dict[str, tuple[str, str, int | None]] = {}

    def prime(self) -> None:
        """Learn how things stand before anything changes (at start, before recovery)."""
        for job in self.store.jobs("state != ?", (FINISHED,), light=True):
            self._jobs[job.id] = job
        for device in self.store.devices():
            self._devices[device.hostname] = (device.state, device.health, device.current_job)

    # -- the store's commits ---------------------------------------------------------

    def committed(self, changed: set[tuple[str, Any]]) -> None:
        for kind, key in sorted(changed, key=lambda item: (item[0], str(item[1]))):
            try:
                if kind == "job":
                    self._job(int(key))
                elif kind == "device":
                    self._device(str(key))
            except Exception:  # a failing listener must never undo or stop the worker
                LOG.exception("telling of the change of %s %s failed", kind, key)

    def _job(self, job_id: int) -> None:
        found = self.store.jobs("id = ?", (job_id,), light=True)
        if not found:
            return
        after = found[0]
        before = self._jobs.get(job_id)
        if after.state == FINISHED:
            self._jobs.pop(job_id, None)
        else:
            self._jobs[job_id] = after
        if before is not None and (before.state, before.health, before.actual_device) == (
            after.state, after.health, after.actual_device,
        ):  # fmt: skip
            return
        if self.hub is not None:
            self.hub.publish("testjob", job_event_data(after, self.worker),
                             username=after.submitter, owner=job_owner(after))  # fmt: skip
        for watcher in self.watchers:
            watcher.job_changed(before, after)

    def _device(self, hostname: str) -> None:
        device = self.store.device(hostname)
        if device is None:
            return
        now = (device.state, device.health, device.current_job)
        if self._devices.get(hostname) == now:
            return
        self._devices[hostname] = now
        if self.hub is not None:
            self.hub.publish("device", device_data(device, self.worker, self._current(device)))

    def _current(self, device: DeviceRecord) -> JobRecord | None:
        if device.current_job is None:
            return None
        found = self.store.jobs("id = ?", (device.current_job,), light=True)
        return found[0] if found else None

    # -- the rest --------------------------------------------------------------------

    def test_event(self, job_id: int, message: str) -> None:
        """A ``lava-test-event`` line of a running job."""
        if self.hub is None:
            return
        found = self.store.jobs("id = ?", (job_id,), light=True)
        if found:
            job = found[0]
            self.hub.publish("event", lava_event_data(job, message), username=job.submitter,
                             owner=job_owner(job))  # fmt: skip

    def worker_changed(self, state: str, health: str = "Active") -> None:
        """The worker itself: Online at the ready point, Offline when it stops."""
        if self.hub is not None:
            self.hub.publish("worker", worker_data(self.worker, state, health))
