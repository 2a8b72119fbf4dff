#!/usr/bin/env python3
"""Console reader throughput on a 20 MB burst with a trivial on_line.

    .venv/bin/python bench/bench_reader.py [MEGABYTES]

Prints three figures: the raw ceiling of the pty (os.read in a tight loop,
no decoding), the reader over the same kind of pty (a process writing the
burst at once), and the reader alone over an in-memory transport (its own
cost: decoding, splitting, on_line calls, the expect buffer).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lava_dispatcher.console import ConsoleReader, ProcessTransport, TransportClosed, expect

WRITER = r"""
import os, sys
size = int(sys.argv[1])
lines, total, number = [], 0, 0
while total < size:
    line = "%08d %s\n" % (number, "x" * 70)
    lines.append(line)
    total += len(line)
    number += 1
data = "".join(lines).encode()
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.readline()
view = memoryview(data)
while view:
    view = view[os.write(1, view):]
"""


def burst_lines(size: int) -> bytes:
    return "".join(f"{n:08d} {'x' * 70}\n" for n in range(size // 80)).encode()


def raw_pty(size: int) -> tuple[int, float]:
    transport = ProcessTransport([sys.executable, "-c", WRITER, str(size)])
    try:
        data = b""
        while b"ready" not in data:
            data += transport.read(100, 5)
        fd = transport._fd
        os.set_blocking(fd, True)
        start = time.monotonic()
        transport.write(b"go\n")
        total = 0
        try:
            while chunk := os.read(fd, 1 << 16):
                total += len(chunk)
        except OSError:
            pass
        return total, time.monotonic() - start
    finally:
        transport.close()


def reader_pty(size: int) -> tuple[int, float, int]:
    lines = 0

    def on_line(line: str, ts: float) -> None:
        nonlocal lines
        lines += 1

    done = threading.Event()
    transport = ProcessTransport([sys.executable, "-c", WRITER, str(size)])
    reader = ConsoleReader(transport, name="bench", on_line=on_line, on_closed=lambda e: done.set())
    try:
        reader.start()
        expect(reader.buffer, ["ready"], 10)
        start = time.monotonic()
        transport.write(b"go\n")
        done.wait(120)
        return reader.bytes_read, time.monotonic() - start, lines
    finally:
        reader.stop()
        transport.close()


class MemoryTransport:
    closed = False

    def __init__(self, data: bytes, chunk: int) -> None:
        self.data, self.pos, self.chunk = data, 0, chunk

    def read(self, max_bytes: int, timeout: float) -> bytes:
        if self.pos >= len(self.data):
            raise TransportClosed("end")
        piece = self.data[self.pos : self.pos + min(max_bytes, self.chunk)]
        self.pos += len(piece)
        return piece

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "memory"


def reader_memory(data: bytes, chunk: int) -> tuple[float, int]:
    lines = 0

    def on_line(line: str, ts: float) -> None:
        nonlocal lines
        lines += 1

    done = threading.Event()
    reader = ConsoleReader(
        MemoryTransport(data, chunk), name="mem", on_line=on_line, on_closed=lambda e: done.set()
    )
    start = time.monotonic()
    reader.start()
    done.wait(120)
    return time.monotonic() - start, lines


def main() -> None:
    size = int(float(sys.argv[1]) * 1024 * 1024) if len(sys.argv) > 1 else 20 * 1024 * 1024
    total, elapsed = raw_pty(size)
    print(
        f"pty ceiling (raw os.read): {total / 1e6:6.1f} MB in {elapsed:.2f} s = {total / 1e6 / elapsed:6.1f} MB/s"
    )
    total, elapsed, lines = reader_pty(size)
    print(
        f"ConsoleReader over a pty:  {total / 1e6:6.1f} MB in {elapsed:.2f} s = "
        f"{total / 1e6 / elapsed:6.1f} MB/s ({lines} lines)"
    )
    data = burst_lines(size)
    for chunk in (4096, 65536):
        elapsed, lines = reader_memory(data, chunk)
        print(
            f"ConsoleReader in memory, {chunk:5d} B reads: {len(data) / 1e6:6.1f} MB in {elapsed:.2f} s = "
            f"{len(data) / 1e6 / elapsed:6.1f} MB/s ({lines} lines)"
        )


if __name__ == "__main__":
    main()
