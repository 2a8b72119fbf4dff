"""Fixtures for the console tests: real ptys, loopback sockets, spawned processes.

Everything a test opens is registered with a fixture that closes it in a
``finally``, so a failing test leaves no process, pty or socket behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tty
from collections.abc import Callable, Iterator

import pytest
from console_helpers import LineLog, Resources, TcpServer


@pytest.fixture
def line_log() -> LineLog:
    return LineLog()


@pytest.fixture
def resources() -> Iterator[Resources]:
    res = Resources()
    try:
        yield res
    finally:
        res.close_all()


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """A pty in raw mode, like a UART: (master fd, slave path)."""
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo or CR/LF translation before the port is opened
    path = os.ttyname(slave)
    try:
        yield master, path
    finally:
        for fd in (slave, master):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def tcp_server() -> Iterator[Callable[[Callable[[socket.socket], None]], TcpServer]]:
    servers: list[TcpServer] = []

    def start(handler: Callable[[socket.socket], None]) -> TcpServer:
        server = TcpServer(handler)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()
        for server in servers:
            if server.errors:
                raise server.errors[0]
