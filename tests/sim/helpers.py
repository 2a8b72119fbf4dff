"""Helpers shared by the simulated-DUT tests."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from collections.abc import Callable

from lava_dispatcher.sim import child_env, sim_command

# Knobs that keep the tests quick.
FAST = {"boot_time": 0.02, "boot_lines": 8}


def process_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once `pid` has ended (gone or a zombie), waiting up to `timeout`."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


def read_until(read: Callable[[], bytes], marker: bytes, timeout: float = 10.0) -> bytes:
    """Call `read` (which returns b'' on its own short timeout) until `marker`."""
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} not seen within {timeout} s; got {data[-500:]!r}")
        data += read()
    return data


def read_quiet(read: Callable[[], bytes], quiet: float, limit: float = 10.0) -> bytes:
    """Read until nothing more arrives for `quiet` seconds (`read` must
    return b'' after waiting at most `quiet`)."""
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        chunk = read()
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the output never went quiet")


def socket_reader(sock: socket.socket, wait: float = 0.2) -> Callable[[], bytes]:
    def read() -> bytes:
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            return b""
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("the console connection closed")
        return chunk

    return read


def fd_reader(fd: int, wait: float = 0.2) -> Callable[[], bytes]:
    def read() -> bytes:
        ready, _, _ = select.select([fd], [], [], wait)
        return os.read(fd, 65536) if ready else b""

    return read


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sim_command(*args), capture_output=True, text=True, timeout=timeout, env=child_env()
    )
