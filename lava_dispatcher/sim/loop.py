"""A small single-threaded event loop: file descriptors, deadline timers, signals.

The simulator needs exactly three things from a loop: call me when this fd is
readable or writable, call me at this moment (deadlines on the monotonic
clock, never sleeps), and turn signals into ordinary callbacks. A selector
plus a heap of timers does that in a page, with no hidden threads, so the
order of events is easy to reason about (and to test).
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

Callback = Callable[[], None]


class Timer:
    """A pending call; `cancel()` makes it a no-op."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback: Callback | None = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.callback = None


class EventLoop:
    """Selector-based loop with monotonic deadlines and signal callbacks."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        # fd -> [reader, writer]
        self._handlers: dict[int, list[Callback | None]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._stopping = False
        self._signal_callbacks: dict[int, Callback] = {}
        self._old_signal_handlers: dict[int, Any] = {}
        self._pending_signals: list[int] = []
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup_fd: int | None = None
        self.add_reader(self._wakeup_r, self._drain_wakeup)

    # -- time -------------------------------------------------------------

    @staticmethod
    def time() -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._sequence), timer))
        return timer

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(self.time() + max(0.0, delay), callback)

    def call_soon(self, callback: Callback) -> Timer:
        return self.call_at(self.time(), callback)

    # -- file descriptors -------------------------------------------------

    def add_reader(self, fd: int, callback: Callback) -> None:
        self._set_handler(fd, 0, callback)

    def remove_reader(self, fd: int) -> None:
        self._set_handler(fd, 0, None)

    def add_writer(self, fd: int, callback: Callback) -> None:
        self._set_handler(fd, 1, callback)

    def remove_writer(self, fd: int) -> None:
        self._set_handler(fd, 1, None)

    def _set_handler(self, fd: int, slot: int, callback: Callback | None) -> None:
        handlers = self._handlers.get(fd)
        if handlers is None:
            if callback is None:
                return
            handlers = [None, None]
            self._handlers[fd] = handlers
        handlers[slot] = callback
        events = (selectors.EVENT_READ if handlers[0] else 0) | (
            selectors.EVENT_WRITE if handlers[1] else 0
        )
        try:
            key = self._selector.get_key(fd)
        except KeyError:
            key = None
        if events == 0:
            del self._handlers[fd]
            if key is not None:
                self._selector.unregister(fd)
        elif key is None:
            self._selector.register(fd, events)
        elif key.events != events:
            self._selector.modify(fd, events)

    # -- signals ----------------------------------------------------------

    def add_signal_handler(self, signum: int, callback: Callback) -> None:
        """Run `callback` from the loop (not from the signal handler)."""
        if self._old_wakeup_fd is None:
            self._old_wakeup_fd = signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        if signum not in self._old_signal_handlers:
            self._old_signal_handlers[signum] = signal.getsignal(signum)
        self._signal_callbacks[signum] = callback
        signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # The C-level handler has already written to the wakeup pipe, so the
        # selector returns and _drain_wakeup runs the callback from the loop.
        self._pending_signals.append(signum)

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_r, 4096):
                pass
        except BlockingIOError:
            pass
        pending, self._pending_signals = self._pending_signals, []
        for signum in pending:
            callback = self._signal_callbacks.get(signum)
            if callback is not None:
                callback()

    # -- running ----------------------------------------------------------

    def stop(self) -> None:
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _run_due_timers(self) -> float | None:
        """Run every timer that is due; return the wait until the next one."""
        while self._timers and not self._stopping:
            when, _, timer = self._timers[0]
            if timer.cancelled:
                heapq.heappop(self._timers)
                continue
            now = self.time()
            if when > now:
                return when - now
            heapq.heappop(self._timers)
            callback = timer.callback
            timer.cancel()
            if callback is not None:
                callback()
        return None

    def run(self) -> None:
        """Run until `stop()` is called."""
        self._stopping = False
        while not self._stopping:
            timeout = self._run_due_timers()
            if self._stopping:
                break
            events = self._selector.select(timeout)
            for key, mask in events:
                if self._stopping:
                    break
                # Look the handler up at dispatch time: an earlier callback in
                # this batch may have removed it.
                if mask & selectors.EVENT_READ:
                    handlers = self._handlers.get(key.fd)
                    if handlers and handlers[0]:
                        handlers[0]()
                if mask & selectors.EVENT_WRITE:
                    handlers = self._handlers.get(key.fd)
                    if handlers and handlers[1]:
                        handlers[1]()

    def close(self) -> None:
        for signum, old in self._old_signal_handlers.items():
            signal.signal(signum, old)
        self._old_signal_handlers.clear()
        self._signal_callbacks.clear()
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._old_wakeup_fd = None
        self._selector.close()
        self._handlers.clear()
        for fd in (self._wakeup_r, self._wakeup_w):
            try:
                os.close(fd)
            except OSError:
                pass
