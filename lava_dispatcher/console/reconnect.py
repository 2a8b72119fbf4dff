"""A console transport that reconnects when its connection drops.

A board's console in a lab is a ser2net port reached with ``telnet`` (or a
serial URL). The port outlives our connection to it: a network blip, a
ser2net restart or a port still held by a previous session ends the
``telnet`` process while the board carries on printing. LAVA fails the job
there. :class:`ReconnectingTransport` opens the connection again, with a
bounded back-off, and says what it could not see: the drop, each attempt and
the gap (wall-clock times) whose output may be lost go to ``notify`` (the job
log), and :attr:`drops` keeps them. Only when no connection holds within
``within`` seconds of the drop does :meth:`read` raise
:class:`~lava_dispatcher.console.transport.TransportClosed`, as the plain
transport would have at once.

A connection command such as ``telnet`` starts even when the port refuses
it, then exits; a ser2net port still held by someone else accepts and then
closes. So a reopened connection that ends within ``stable`` seconds does
not start a new drop: it continues the one it was meant to end (same
deadline, the back-off growing), and the log says it dropped again. Reconnecting happens in the console reader's thread, inside
:meth:`read` (which returns ``b""`` meanwhile, so the reader keeps its
idle duties and stops promptly); :meth:`write` waits for it, within the same
bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lava_dispatcher import errors
from lava_dispatcher.console.transport import Transport, TransportClosed

#: how long after a drop a connection may take to come back (seconds)
RECONNECT_WITHIN = 30.0
#: a reopened connection that lives this long (seconds) is back for good
STABLE = 1.0
#: back-off between attempts: first, factor, cap (seconds)
FIRST_DELAY = 0.1
MAX_DELAY = 2.0

Opener = Callable[[], Transport]


def _clock(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%H:%M:%S.%f")[:-3]


@dataclass
class Drop:
    """One loss of the connection: when, why, and when it came back (wall clock)."""

    started: float
    reason: str
    ended: float | None = None
    attempts: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def gap(self) -> float | None:
        return None if self.ended is None else self.ended - self.started


class ReconnectingTransport:
    """See the module documentation. ``opener`` opens the underlying transport."""

    def __init__(
        self,
        opener: Opener,
        *,
        name: str,
        within: float = RECONNECT_WITHIN,
        stable: float = STABLE,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.within = within
        self.stable = stable
        self.drops: list[Drop] = []
        self._opener = opener
        self._notify = notify or (lambda message: None)
        self._inner: Transport | None = opener()  # the first open raises as it always did
        self._description = self._inner.describe()
        self._opened_at = time.monotonic()
        self._drop: Drop | None = None
        self._drop_deadline = 0.0
        self._next_attempt = 0.0
        self._delay = FIRST_DELAY
        self._closed = False
        self._ending = False
        self._changed = threading.Condition()
        self._wake = threading.Event()

    # -- the Transport protocol -------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (False while reconnecting)."""
        return self._inner is not None and not self._closed

    @property
    def pid(self) -> int | None:
        return getattr(self._inner, "pid", None)

    def describe(self) -> str:
        inner = self._inner
        return inner.describe() if inner is not None else f"{self._description} (reconnecting)"

    def read(self, max_bytes: int, timeout: float) -> bytes:
        inner = self._inner
        if inner is None:
            if self._closed:
                raise TransportClosed(f"console {self.name} is closed")
            self._attempt(timeout)
            return b""
        try:
            return inner.read(max_bytes, timeout)
        except TransportClosed as exc:
            if self._closed or self._ending:
                raise
            self._lost(inner, str(exc))
            return b""

    def write(self, data: bytes) -> None:
        for _ in range(2):  # once more if the connection drops under the write
            inner = self._wait_connected()
            try:
                inner.write(data)
                return
            except TransportClosed:
                if self._closed:
                    raise
                with self._changed:
                    # the reader sees the end too; make sure the next write waits
                    if self._inner is inner:
                        self._changed.wait(self.stable)
        raise TransportClosed(f"console {self.name}: the connection dropped while writing")

    def ending(self) -> None:
        """The connection is about to end on purpose (a goodbye was sent):
        its end is not a drop."""
        self._ending = True

    def cancel_read(self) -> None:
        self._wake.set()
        cancel = getattr(self._inner, "cancel_read", None)
        if cancel is not None:
            cancel()

    def close(self) -> None:
        with self._changed:
            if self._closed:
                return
            self._closed = True
            inner, self._inner = self._inner, None
            self._changed.notify_all()
        self._wake.set()
        if inner is not None:
            inner.close()

    # -- reconnecting -----------------------------------------------------------------

    def _lost(self, inner: Transport, reason: str) -> None:
        """The connection ended (in the reader's thread): start or continue a drop."""
        with self._changed:
            if self._inner is inner:
                self._inner = None
            self._changed.notify_all()
        inner.close()
        now = time.monotonic()
        lived = now - self._opened_at
        if self._drop is None or lived >= self.stable:
            self._drop = Drop(started=time.time(), reason=reason)
            self.drops.append(self._drop)
            self._drop_deadline = now + self.within
            self._delay = FIRST_DELAY
            self._next_attempt = now  # the first attempt at once
            self._notify(
                f"console {self.name} dropped ({reason}); reconnecting for up to "
                f"{self.within:g} s: what the board prints meanwhile is lost"
            )
        else:
            drop = self._drop
            drop.failures.append(reason)
            drop.ended = None
            self._next_attempt = now + self._delay
            self._notify(
                f"console {self.name} dropped again {lived:.2f} s after reopening ({reason}); "
                f"still reconnecting, next attempt in {self._delay:g} s"
            )
            self._delay = min(self._delay * 2, MAX_DELAY)

    def _attempt(self, timeout: float) -> None:
        """One step of reconnecting: wait for the next attempt (at most
        ``timeout``), or make it; give up past the deadline."""
        drop = self._drop
        assert drop is not None
        now = time.monotonic()
        if now >= self._drop_deadline:
            self._give_up(drop)
        wait = min(self._next_attempt, self._drop_deadline) - now
        if wait > 0:
            self._wake.wait(min(wait, timeout))
            self._wake.clear()
            return
        drop.attempts += 1
        try:
            inner = self._opener()
        except (OSError, ValueError, errors.InfrastructureError) as exc:
            drop.failures.append(str(exc))
            self._next_attempt = now + self._delay
            self._delay = min(self._delay * 2, MAX_DELAY)
            return
        with self._changed:
            if self._closed:
                inner.close()
                return
            self._inner = inner
            self._opened_at = time.monotonic()
            drop.ended = time.time()
            self._changed.notify_all()
        self._notify(
            f"console {self.name} reopened after {drop.gap:.2f} s (attempt {drop.attempts}): "
            f"output between {_clock(drop.started)} and {_clock(drop.ended)} UTC may be lost"
        )

    def _give_up(self, drop: Drop) -> None:
        last = f"; last: {drop.failures[-1]}" if drop.failures else ""
        message = (
            f"console {self.name} dropped at {_clock(drop.started)} UTC ({drop.reason}) and "
            f"could not be reconnected within {self.within:g} s ({drop.attempts} "
            f"attempt{'s' if drop.attempts != 1 else ''}{last})"
        )
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        raise TransportClosed(message)

    def _wait_connected(self) -> Transport:
        with self._changed:
            while True:
                if self._closed:
                    raise TransportClosed(f"console {self.name} is closed")
                if self._inner is not None:
                    return self._inner
                left = (self._drop_deadline + self.stable) - time.monotonic()
                if left <= 0:
                    raise TransportClosed(
                        f"console {self.name}: no connection to write to (reconnecting failed)"
                    )
                self._changed.wait(left)
