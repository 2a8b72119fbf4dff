"""Coordinators for the tests: ours in-process or as a process, and Debian's LAVA one.

LAVA's own coordinator and client pieces come from the Debian package
``lava-coordinator`` (/usr/bin/lava-coordinator, lava.coordinator.status);
the tests that need it skip when it is absent, and fail instead when
LAVA_TESTS_REQUIRE_QEMU is set (.ci/run sets it; .ci/setup installs it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lava_dispatcher.protocols.coordinator import BackgroundCoordinator

from .helpers import Address, CoordinatorProcess, LavaCoordinatorProcess, require_lava_coordinator


@pytest.fixture
def start_coordinator() -> Iterator[Callable[..., BackgroundCoordinator]]:
    """Our coordinator in this process (own thread and event loop) on a free port."""
    started: list[BackgroundCoordinator] = []

    def start(**options: Any) -> BackgroundCoordinator:
        server = BackgroundCoordinator("127.0.0.1", 0, **options)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def address(start_coordinator: Callable[..., BackgroundCoordinator]) -> Address:
    server = start_coordinator()
    return ("127.0.0.1", server.server.port)


@pytest.fixture
def coordinator_process(tmp_path: Path) -> Iterator[Callable[..., CoordinatorProcess]]:
    """``lava-dispatch coordinator`` processes, stopped (by PID) afterwards."""
    processes: list[CoordinatorProcess] = []

    def make(
        *args: str, listen: str | None = "127.0.0.1:0", log: str = "coordinator.log"
    ) -> CoordinatorProcess:
        process = CoordinatorProcess(tmp_path / log, *args, listen=listen)
        processes.append(process)
        return process

    yield make
    for process in processes:
        process.stop()


@pytest.fixture
def lava_coordinator(tmp_path: Path) -> Iterator[Callable[[], Address]]:
    """Debian's LAVA coordinator on a free port (it binds 0.0.0.0:port); skip when absent."""
    processes: list[LavaCoordinatorProcess] = []

    def start() -> Address:
        require_lava_coordinator()
        process = LavaCoordinatorProcess(tmp_path)
        processes.append(process)
        return process.start()

    yield start
    for process in processes:
        process.stop()
