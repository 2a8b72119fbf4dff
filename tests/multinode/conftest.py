"""Coordinators for the MultiNode tests: Debian's LAVA one (wire compatibility) and ours.

LAVA's coordinator is the Debian package ``lava-coordinator``
(/usr/bin/lava-coordinator): it is started on a free loopback port with its
own configuration file (``--config``, JSON with the port) and its log on
stdout (``--logfile -``), and ended by PID. Tests that need it skip when it
is not installed, and fail instead when LAVA_TESTS_REQUIRE_QEMU is set (CI).
Ours is ``lava-dispatch coordinator --listen 127.0.0.1:PORT``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lava_dispatcher.sim import child_env

LAVA_COORDINATOR = Path("/usr/bin/lava-coordinator")
KINDS = ("lava", "ours")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_lava_coordinator() -> None:
    if LAVA_COORDINATOR.exists():
        return
    reason = f"LAVA's coordinator is not installed ({LAVA_COORDINATOR}): apt-get install lava-coordinator"
    if os.environ.get("LAVA_TESTS_REQUIRE_QEMU"):
        pytest.fail(f"{reason} (CI requires the LAVA compatibility tests)")
    pytest.skip(reason)


def require_ours() -> None:
    if importlib.util.find_spec("lava_dispatcher.protocols.coordinator") is None:
        pytest.skip("our coordinator (lava_dispatcher.protocols.coordinator) is not there yet")


@dataclass
class Coordinator:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_coordinator(kind: str, directory: Path, *extra: str) -> Coordinator:
    """A coordinator process on a free loopback port, ready to serve."""
    if kind == "lava":
        require_lava_coordinator()
    else:
        require_ours()
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = directory / f"coordinator-{kind}-{port}.log"
    if kind == "lava":
        config = directory / f"lava-coordinator-{port}.conf"
        config.write_text(json.dumps({"port": port, "blocksize": 4096, "poll_delay": 1,
                                      "coordinator_hostname": "127.0.0.1"}))  # fmt: skip
        argv = [str(LAVA_COORDINATOR), "--config", str(config), "--logfile", "-",
                "--loglevel", "DEBUG", *extra]  # fmt: skip
        ready = b"Ready to accept new connections"
    else:
        argv = [sys.executable, "-m", "lava_dispatcher", "coordinator", "--listen",
                f"127.0.0.1:{port}", "--loglevel", "DEBUG", *extra]  # fmt: skip
        ready = b"listening on"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=child_env())  # fmt: skip
    coordinator = Coordinator(kind, port, process, log_path)
    deadline = time.monotonic() + 20
    while ready not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            coordinator.stop()
            raise AssertionError(f"{kind} coordinator did not start: {coordinator.log()}")
        time.sleep(0.02)  # the coordinator process is starting: look at its log again
    return coordinator


def serving(kind: str, directory: Path) -> Iterator[Coordinator]:
    """A coordinator for one test, which must still be alive at its end
    (LAVA's dies of a client that leaves before its answer)."""
    started = start_coordinator(kind, directory)
    try:
        yield started
        assert started.process.poll() is None, (
            f"the {kind} coordinator died: {started.log()[-3000:]}"
        )
    finally:
        started.stop()


@pytest.fixture(params=KINDS)
def coordinator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Coordinator]:
    """LAVA's coordinator, then ours: every test using this runs against both."""
    yield from serving(request.param, tmp_path / "coordinator")


@pytest.fixture
def lava_coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    yield from serving("lava", tmp_path / "coordinator")
