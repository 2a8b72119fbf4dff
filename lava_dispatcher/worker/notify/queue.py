"""The delivery queue: each delivery is a task of its own, retried with back-off.

Nothing here blocks the caller: :meth:`DeliveryQueue.submit` records the
delivery and starts its task. At most ``concurrency`` attempts run at once
(a slow receiver holds one place, not the queue); the wait between attempts
is a timer on the loop, holding no place. Deliveries to the same receiver
for the same job are made in the order they were submitted (a Running
callback is never overtaken by the Finished one). Every attempt and the
outcome are recorded. Stopping cancels what is left; those deliveries are
recorded as abandoned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lava_dispatcher.worker.notify.errors import DeliveryError
from lava_dispatcher.worker.notify.records import (
    ABANDONED,
    DELIVERED,
    FAILED,
    Attempt,
    DeliveryRecord,
    Records,
)
from lava_dispatcher.worker.notify.settings import RetrySettings

LOG = logging.getLogger("lava-worker.notify")
#: what a delivery still under way when the worker stops is recorded as
STOPPED = "the worker stopped before this delivery ended"


@dataclass(frozen=True)
class Delivery:
    """One message to one receiver; ``send`` makes one attempt (its detail, or DeliveryError)."""

    job_id: int
    trigger: str
    kind: str
    target: str
    #: unique per job, state change and receiver: the same change is never delivered twice
    key: str
    send: Callable[[], Awaitable[str]]
    #: the most one attempt may take, whatever the sender's own timeouts
    limit: float
    #: deliveries with the same order key run one after the other
    order: str = ""


class DeliveryQueue:
    def __init__(self, records: Records, retry: RetrySettings, concurrency: int) -> None:
        self.records = records
        self.retry = retry
        self._places = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, delivery: Delivery) -> DeliveryRecord | None:
        """Record and start a delivery (on the running loop); None when it was recorded before."""
        record = self.records.add(delivery.job_id, delivery.trigger, delivery.kind, delivery.target, delivery.key)
        if record is None:
            return None
        before = self._last.get(delivery.order) if delivery.order else None
        task = asyncio.get_running_loop().create_task(self._deliver(record, delivery, before))
        self._tasks.add(task)
        self._idle.clear()
        if delivery.order:
            self._last[delivery.order] = task
        task.add_done_callback(lambda done: self._done(done, delivery.order))
        return record

    def _done(self, task: asyncio.Task[None], order: str) -> None:
        self._tasks.discard(task)
        if order and self._last.get(order) is task:
            del self._last[order]
        if not self._tasks:
            self._idle.set()

    async def _deliver(self, record: DeliveryRecord, delivery: Delivery, before: asyncio.Task[None] | None) -> None:
        try:
            if before is not None and not before.done():
                await asyncio.wait({before})
            for number in range(1, self.retry.attempts + 1):
                if await self._attempt(record, delivery, number):
                    return
                await asyncio.sleep(self.retry.backoff(number))
        except asyncio.CancelledError:
            self.records.finish(record.id, ABANDONED, STOPPED)
            raise

    async def _attempt(self, record: DeliveryRecord, delivery: Delivery, number: int) -> bool:
        """One attempt, recorded; True when there is nothing more to do."""
        async with self._places:
            started, clock = time.time(), time.monotonic()
            try:
                async with asyncio.timeout(delivery.limit):
                    detail = await delivery.send()
            except TimeoutError:
                error: DeliveryError | None = DeliveryError(f"no outcome within {delivery.limit:g} s")
            except DeliveryError as exc:
                error = exc
            except Exception as exc:  # a bug in a sender: record it, do not retry
                LOG.exception("[%d] %s delivery to %s", delivery.job_id, delivery.kind, delivery.target)
                error = DeliveryError(f"internal error: {type(exc).__name__}: {exc}")
                error.retry = False
            else:
                error = None
            seconds = time.monotonic() - clock
        if error is None:
            self.records.attempt(record.id, Attempt(number, started, seconds, True, detail))
            self.records.finish(record.id, DELIVERED, detail)
            LOG.info("[%d] %s delivered to %s: %s", delivery.job_id, delivery.kind, delivery.target, detail)
            return True
        self.records.attempt(record.id, Attempt(number, started, seconds, False, str(error)))
        if error.retry and number < self.retry.attempts:
            LOG.info("[%d] %s to %s, attempt %d failed: %s", delivery.job_id, delivery.kind, delivery.target, number, error)
            return False
        why = str(error) if not error.retry else f"{error} (after {number} attempts)"
        self.records.finish(record.id, FAILED, why)
        LOG.warning("[%d] %s to %s not delivered: %s", delivery.job_id, delivery.kind, delivery.target, why)
        return True

    async def idle(self) -> None:
        """Wait until no delivery is under way."""
        await self._idle.wait()

    async def close(self, grace: float = 0.0) -> None:
        """Let deliveries under way go on for ``grace`` seconds, then abandon the rest."""
        if self._tasks and grace > 0:
            await asyncio.wait(set(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
