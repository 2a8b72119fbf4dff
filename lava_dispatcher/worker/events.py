"""Event notifications: LAVA's five frames, a sequence number on each, fan-out.

Every state or health change of a job, device or worker, and every
``lava-test-event`` line of a job, becomes one :class:`Event`: LAVA's
``[topic, uuid, datetime, username, json]`` (reference: api-surface.md §3),
with the topic ``<prefix>.testjob|.device|.worker|.event``. The JSON payload
carries LAVA's keys plus ``seq``, a number that grows by one per event of
this worker: a WebSocket client that reconnects asks for what it missed
(:meth:`EventHub.subscribe` with ``after``), which LAVA cannot do.

:class:`EventHub` lives on the worker's event loop. Publishing never waits:
each subscriber has a bounded queue, and one that does not keep up is
dropped (its connection is closed, it reconnects and replays) rather than
slowing the worker. Listeners (the ZeroMQ publisher, notifications) are
called synchronously with each event.

Who may see an event: a private job's events (its ``.testjob`` changes and
its ``.event`` lines) carry the job's submitter as ``owner``; only that user
and admins get them (:meth:`Event.visible_to`). Device and worker events are
public, as in LAVA.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import functools
import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from lava_dispatcher.worker.store import DeviceRecord, JobRecord, UserRecord

LOG = logging.getLogger("lava-worker.events")

#: LAVA's default EVENT_TOPIC
DEFAULT_TOPIC = "org.lavasoftware"
#: the username LAVA puts on device and worker events
SERVER_USER = "lavaserver"
KINDS = ("testjob", "device", "worker", "event")
#: events kept for replay (a reconnecting client asks for those after its last seq)
DEFAULT_BACKLOG = 10_000
#: events a subscriber may have waiting before it is dropped
DEFAULT_QUEUE = 10_000

Listener = Callable[["Event"], None]


def iso(when: float | None) -> str | None:
    """LAVA's datetime in payloads: ISO 8601 with ``+00:00``."""
    if when is None:
        return None
    return datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat()


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    topic: str
    uuid: str
    dt: str
    username: str
    data: dict[str, Any]
    #: the submitter of the private job this event is about (None: anyone may see it)
    owner: str | None = None

    @property
    def public(self) -> bool:
        return self.owner is None

    def payload(self, job_text: bool = False) -> str:
        """The fifth frame: the JSON object, with the sequence number.

        ``job_text``: ``job`` as a string, for the WebSocket, where the client
        that matters (``lavacli events wait job N``) compares it with the
        string it was given, and never matches LAVA's integer. ZeroMQ keeps
        LAVA's integer (LAVA's own ``zmq_client.py`` compares it with an int).
        """
        data = {**self.data, "seq": self.seq}
        if job_text and isinstance(data.get("job"), int):
            data["job"] = str(data["job"])
        return json.dumps(data)

    def frames(self, job_text: bool = False) -> list[str]:
        """LAVA's five frames."""
        return [self.topic, self.uuid, self.dt, self.username, self.payload(job_text)]

    @functools.cached_property
    def ws_text(self) -> str:
        """The WebSocket message (a JSON array of the frames), made once for every client."""
        return json.dumps(self.frames(job_text=True))

    def visible_to(self, user: UserRecord | None) -> bool:
        if self.owner is None:
            return True
        return user is not None and (user.is_admin or user.name == self.owner)


@dataclass(eq=False)
class Subscription:
    """One subscriber's queue; :attr:`dropped` says why it was cut off."""

    queue: asyncio.Queue[Event]
    dropped: str | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def get(self) -> Event | None:
        """The next event, or None once this subscription is dropped or closed."""
        if self.closed.is_set() and self.queue.empty():
            return None
        getter = asyncio.ensure_future(self.queue.get())
        closer = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closer.cancel()
        if getter.done():
            return getter.result()
        getter.cancel()
        return None


class EventHub:
    """Numbers events, keeps the last ones for replay, hands them to subscribers."""

    def __init__(
        self,
        topic: str = DEFAULT_TOPIC,
        *,
        backlog: int = DEFAULT_BACKLOG,
        queue_size: int = DEFAULT_QUEUE,
    ) -> None:
        self.topic = topic
        self.queue_size = queue_size
        self.seq = 0
        self._backlog: collections.deque[Event] = collections.deque(maxlen=backlog)
        self._subscribers: set[Subscription] = set()
        self.listeners: list[Listener] = []

    def publish(
        self, kind: str, data: dict[str, Any], *, username: str = SERVER_USER,
        owner: str | None = None,
    ) -> Event:  # fmt: skip
        """Number the event, keep it, and give it to every subscriber and listener."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r} (one of {', '.join(KINDS)})")
        self.seq += 1
        event = Event(
            seq=self.seq, kind=kind, topic=f"{self.topic}.{kind}", uuid=str(uuid.uuid1()),
            dt=datetime.datetime.now(datetime.UTC).isoformat(), username=username,
            data=dict(data), owner=owner,
        )  # fmt: skip
        self._backlog.append(event)
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(sub, f"more than {self.queue_size} events waiting")
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a listener's failure must not stop the worker
                LOG.exception("event listener %r failed on event %d", listener, event.seq)
        return event

    def subscribe(self, after: int | None = None) -> Subscription:
        """A new subscription; with ``after``, the kept events numbered above it come first.

        ValueError when events after ``after`` were already dropped from the
        backlog (the client must start afresh rather than miss some silently).
        """
        sub = Subscription(asyncio.Queue(self.queue_size))
        if after is not None:
            if after < 0 or after > self.seq:
                raise ValueError(f"no event {after}: the last one is {self.seq}")
            oldest = self._backlog[0].seq if self._backlog else self.seq + 1
            if after + 1 < oldest:
                raise ValueError(
                    f"events {after + 1} to {oldest - 1} are no longer kept "
                    f"(the oldest kept is {oldest})"
                )
            for event in self._backlog:
                if event.seq > after:
                    sub.queue.put_nowait(event)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        sub.closed.set()

    def close(self) -> None:
        for sub in list(self._subscribers):
            self.unsubscribe(sub)

    def _drop(self, sub: Subscription, why: str) -> None:
        LOG.warning("event subscriber dropped: %s", why)
        sub.dropped = why
        self.unsubscribe(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def kept(self) -> Iterable[Event]:
        return iter(self._backlog)


# --- LAVA's payloads ---------------------------------------------------------------


def job_event_data(job: JobRecord, worker: str | None) -> dict[str, Any]:
    """``.testjob``: LAVA's keys (api-surface.md §3.3); ``job`` is the integer id."""
    data: dict[str, Any] = {
        "job": job.id, "state": job.state, "health": job.health,
        "description": job.description, "priority": job.priority,
        "submit_time": iso(job.submit_time), "submitter": job.submitter,
        "health_check": job.health_check,
    }  # fmt: skip
    if job.sub_id:
        data["sub_id"] = job.sub_id
    if job.requested_device_type:
        data["device_type"] = job.requested_device_type
    if job.actual_device:
        data["device"] = job.actual_device
        data["worker"] = worker
    if job.start_time is not None:
        data["start_time"] = iso(job.start_time)
    if job.end_time is not None:
        data["end_time"] = iso(job.end_time)
    return data


def device_data(device: DeviceRecord, worker: str | None, job: JobRecord | None) -> dict[str, Any]:
    """``.device``: device, device_type, state, health, worker, and the job it runs."""
    data: dict[str, Any] = {
        "device": device.hostname, "device_type": device.device_type, "state": device.state,
        "health": device.health, "worker": worker if device.present else None,
    }  # fmt: skip
    if job is not None:
        data["job"] = job.display_id
    return data


def worker_data(hostname: str, state: str, health: str) -> dict[str, Any]:
    """``.worker``: hostname, state (Online/Offline), health (Active/Maintenance/Retired)."""
    return {"hostname": hostname, "state": state, "health": health}


def lava_event_data(job: JobRecord, message: str) -> dict[str, Any]:
    """``.event``: a ``lava-test-event`` line of a job."""
    return {"job": job.id, "message": message}


def job_owner(job: JobRecord) -> str | None:
    """Who alone may see a job's events (None: everybody)."""
    return None if job.is_public else job.submitter
