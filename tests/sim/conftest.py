"""Helpers for the simulated-DUT tests: every process a test starts is ended
at teardown, whether the test passed or not."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from lava_dispatcher.sim import SimServer, child_env, run_command

from .helpers import FAST


@pytest.fixture
def spawn() -> Iterator[Callable[..., pexpect.spawn]]:
    """Spawn `sim run` with knobs (and optionally an environment) under
    pexpect; all are closed at teardown."""
    children: list[pexpect.spawn] = []

    def start(env: dict[str, str] | None = None, **knobs: Any) -> pexpect.spawn:
        argv = run_command(**{**FAST, **knobs})
        environment = child_env({**os.environ, **env} if env else None)
        child = pexpect.spawn(argv[0], argv[1:], env=environment, timeout=10)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close(force=True)


@pytest.fixture
def popen() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """subprocess.Popen whose processes are killed and reaped at teardown."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        kwargs.setdefault("env", child_env())
        process = subprocess.Popen(argv, **kwargs)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., SimServer]]:
    """Start SimServer daemons; each is stopped and reaped at teardown."""
    servers: list[SimServer] = []

    def start(**kwargs: Any) -> SimServer:
        directory = tmp_path / f"sim{len(servers)}"
        sim = SimServer(directory, **{**FAST, **kwargs})
        servers.append(sim)
        return sim.start()

    yield start
    for sim in servers:
        sim.stop()
