"""Fixtures for the end-to-end tests: simulated DUT daemons, stopped afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lava_dispatcher.sim import SimServer

from .helpers import FAST


@pytest.fixture
def sim_server(tmp_path: Path):
    """A simulated DUT daemon (pty and TCP) for one test, stopped afterwards."""
    servers: list[SimServer] = []

    def start(**knobs: Any) -> SimServer:
        server = SimServer(tmp_path / f"sim{len(servers)}", pty=True, tcp=True, **{**FAST, **knobs})
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
