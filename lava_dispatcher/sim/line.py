"""The board's UART, output side: character faults, then baud-rate pacing.

Everything the board prints goes through one `SerialLine`: first the fault
injector (drop or garble characters), then, when a baud rate is set, a pacer
that releases bytes at the moments a real line would have finished sending
them (10 bits a byte, deadlines computed from the start of the current
transmission, so timer jitter never accumulates), then the console transport.

The line also gives the board back-pressure: `backlog()` counts the bytes not
yet taken by the console, and `on_drain` fires when it falls low again, so the
shell (which blocks on a full tty, as on real hardware) and the burst
generator wait instead of piling up memory.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Protocol

from lava_dispatcher.sim.loop import EventLoop, Timer

HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024
# Smallest pause between two pacer ticks: at fast baud rates, several bytes
# leave per tick instead of one timer per byte.
MIN_TICK = 0.002


class Sink(Protocol):
    """What the line writes into: a console transport."""

    on_drain: Callable[[], None] | None

    def write(self, data: bytes) -> None: ...

    def backlog(self) -> int: ...


class FaultInjector:
    """Drops or garbles output characters at configured rates, reproducibly."""

    def __init__(self, drop_rate: float, garble_rate: float, seed: int | None) -> None:
        self.drop_rate = drop_rate
        self.garble_rate = garble_rate
        self.random = random.Random(seed)
        self.active = drop_rate > 0 or garble_rate > 0

    def apply(self, data: bytes) -> bytes:
        if not self.active:
            return data
        draw = self.random.random
        pick = self.random.randrange
        drop, garble = self.drop_rate, self.drop_rate + self.garble_rate
        out = bytearray()
        for byte in data:
            r = draw()
            if r < drop:
                continue
            if r < garble:
                # a different byte than the one sent
                out.append((byte + 1 + pick(255)) % 256)
            else:
                out.append(byte)
        return bytes(out)


class SerialLine:
    """Output path of the board: faults, pacing, then the sink."""

    def __init__(
        self,
        loop: EventLoop,
        sink: Sink,
        *,
        baud: int | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self.loop = loop
        self.sink = sink
        self.faults = faults or FaultInjector(0.0, 0.0, None)
        self.byte_time = 10.0 / baud if baud else 0.0
        self.on_drain: Callable[[], None] | None = None
        self._queue = bytearray()
        self._run_start = 0.0
        self._run_sent = 0
        self._timer: Timer | None = None
        sink.on_drain = self._sink_drained

    def send(self, data: bytes) -> None:
        data = self.faults.apply(data)
        if not data:
            return
        if not self.byte_time:
            self.sink.write(data)
            return
        if not self._queue:
            now = self.loop.time()
            # The line is idle once the previous run has been sent out; a new
            # run starts now (idle time cannot be banked).
            if now >= self._run_start + self._run_sent * self.byte_time:
                self._run_start = now
                self._run_sent = 0
        self._queue += data
        self._schedule()

    def backlog(self) -> int:
        return len(self._queue) + self.sink.backlog()

    def discard(self) -> None:
        """Power loss: bytes not yet on the wire are gone."""
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        if self._timer is not None or not self._queue:
            return
        per_tick = max(1, math.ceil(MIN_TICK / self.byte_time))
        count = min(len(self._queue), per_tick)
        when = self._run_start + (self._run_sent + count) * self.byte_time
        self._timer = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None
        elapsed = self.loop.time() - self._run_start
        due = int(elapsed / self.byte_time + 1e-9) - self._run_sent
        count = min(max(due, 1), len(self._queue))
        chunk = bytes(self._queue[:count])
        del self._queue[:count]
        self._run_sent += count
        self.sink.write(chunk)
        self._schedule()
        self._sink_drained()

    def _sink_drained(self) -> None:
        if self.on_drain is not None and self.backlog() < LOW_WATER:
            self.on_drain()
