"""Deadlines and interruption: how every blocking call knows when to stop.

There is no SIGALRM anywhere. Each blocking call takes a timeout computed
from a :class:`Deadline`, and an :class:`Interrupter` lets other threads (the
SIGTERM handler, a console watcher that saw a kernel panic) stop the main
thread's wait within milliseconds by calling the wakers the wait registered.
This module sits at the bottom of the layers: the console uses it, and so
does the pipeline.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

#: LAVA's default for an action or connection timeout with nothing configured
DEFAULT_ACTION_TIMEOUT = 30.0

_UNITS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


def parse_timeout(data: Mapping[str, Any] | None, default: float = DEFAULT_ACTION_TIMEOUT) -> float:
    """Seconds in a LAVA timeout mapping such as ``{minutes: 2}``.

    Several units add up, as in LAVA; an empty mapping gives ``default``.
    ``skip`` is not a duration and is ignored here.
    """
    if not data:
        return default
    total = 0.0
    for unit, scale in _UNITS.items():
        value = data.get(unit)
        if value is not None:
            total += float(value) * scale
    return total if total > 0 else default


def format_duration(seconds: float) -> str:
    """``HH:MM:SS`` as LAVA prints timeouts in ``start:`` log lines."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


@dataclass
class Deadline:
    """A named point in monotonic time; ``name`` says whose deadline it is."""

    name: str
    duration: float
    expires_at: float = field(default=0.0)

    @classmethod
    def start(cls, name: str, duration: float, now: float | None = None) -> Deadline:
        begin = time.monotonic() if now is None else now
        return cls(name, duration, begin + duration)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.expires_at

    def describe(self) -> str:
        return f"{self.name} timed out after {self.duration:g} seconds"


def earliest(deadlines: list[Deadline]) -> Deadline | None:
    """The deadline that will expire first: the one to blame when time runs out."""
    return min(deadlines, key=lambda d: d.expires_at) if deadlines else None


Waker = Callable[[], None]


class Interrupter:
    """Stops blocked waits from another thread.

    ``cancel(exc)`` is sticky: every later :meth:`check` raises ``exc`` (used
    for SIGTERM). ``post(exc)`` is one-shot: the next :meth:`check` raises it
    and forgets it, so that a RetryAction may retry after, say, a kernel panic
    during boot. Both call every registered waker so that the waiting thread
    re-checks at once instead of at its timeout.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sticky: BaseException | None = None
        self._pending: list[BaseException] = []
        self._wakers: list[Waker] = []

    def cancel(self, exc: BaseException) -> None:
        with self._lock:
            if self._sticky is None:
                self._sticky = exc
        self._wake()

    def post(self, exc: BaseException) -> None:
        with self._lock:
            self._pending.append(exc)
        self._wake()

    def pending(self) -> bool:
        return self._sticky is not None or bool(self._pending)

    def check(self) -> None:
        """Raise the cancel reason, or the oldest posted fault, if there is one."""
        with self._lock:
            if self._sticky is not None:
                raise self._sticky
            if self._pending:
                raise self._pending.pop(0)

    def rearm(self) -> BaseException | None:
        """Clear a cancel (and pending faults) so cleanup can wait again.

        Returns the cancel that was cleared. A second cancel during cleanup
        interrupts the cleanup ("canceled again").
        """
        with self._lock:
            previous, self._sticky = self._sticky, None
            self._pending.clear()
        return previous

    def discard_pending(self) -> None:
        """Forget one-shot faults (a retry starts clean)."""
        with self._lock:
            self._pending.clear()

    @contextlib.contextmanager
    def waking(self, waker: Waker) -> Iterator[None]:
        """Call ``waker`` if an interrupt arrives while the block runs."""
        with self._lock:
            self._wakers.append(waker)
        try:
            if self.pending():
                waker()
            yield
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._wakers.remove(waker)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` unless interrupted first (then raise the interrupt)."""
        self.wait_event(None, seconds)

    def wait_event(self, event: threading.Event | None, timeout: float) -> bool:
        """Wait for ``event`` (or just the timeout); raise if interrupted first.

        An interrupt wakes the wait by setting ``event`` too, so pass an event
        that belongs to this wait (a process's exit, a reply's arrival).
        Returns whether the event was set for its own reason.
        """
        target = event if event is not None else threading.Event()
        end = time.monotonic() + max(0.0, timeout)
        with self.waking(target.set):
            while True:
                self.check()
                if event is not None and event.is_set():
                    return True
                left = end - time.monotonic()
                if left <= 0:
                    return False
                target.wait(left)

    def _wake(self) -> None:
        with self._lock:
            wakers = list(self._wakers)
        for waker in wakers:
            waker()
