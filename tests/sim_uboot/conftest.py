"""Fixtures for the simulated U-Boot: daemons (the simulator tests' own
`server` and `spawn` fixtures, which end every process at teardown), a TFTP
root with a job directory, a busybox initramfs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sim.conftest import popen, server, spawn  # noqa: F401  (fixtures, reused)

from lava_dispatcher import ramdisk
from lava_dispatcher.sim import SimServer, namespace
from lava_dispatcher.sim.namespace import BoardError
from lava_dispatcher.sim.rootfs import RootfsError, build_busybox_initramfs

from .helpers import Board

JOB_DIR = "1234/tftp-deploy-abcd"


@pytest.fixture
def tftp_root(tmp_path: Path) -> Path:
    """A TFTP root holding JOB_DIR with a kernel, a device tree and a text file."""
    root = tmp_path / "tftp"
    job = root / JOB_DIR
    job.mkdir(parents=True)
    (job / "Image").write_bytes(b"not really a kernel\n" * 5000)
    (job / "board.dtb").write_bytes(b"\xd0\x0d\xfe\xed" + bytes(2044))
    (job / "hello.txt").write_text("hello\n")
    return root


@pytest.fixture
def board(server: Callable[..., SimServer]) -> Iterator[Callable[..., Board]]:  # noqa: F811
    """Start a `sim serve --bootloader u-boot --tcp` daemon and connect to its
    console (the daemon is stopped and the connection closed at teardown)."""
    boards: list[Board] = []

    def start(**knobs: Any) -> Board:
        knobs = {"bootloader": "u-boot", "autoboot_delay": 1, **knobs}
        sim = server(pty=False, tcp=True, **knobs)
        connected = Board(sim)
        boards.append(connected)
        return connected

    yield start
    for connected in boards:
        connected.close()


@pytest.fixture(scope="session")
def initramfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox initramfs (gzip-compressed cpio) with /etc/from-tftp in it."""
    directory = tmp_path_factory.mktemp("initramfs")
    try:
        image = build_busybox_initramfs(directory / "initrd.cpio.gz")
    except RootfsError as exc:
        pytest.skip(f"no busybox root file system here: {exc}")
    marker = directory / "marker"
    (marker / "etc").mkdir(parents=True)
    (marker / "etc/from-tftp").write_text("loaded by u-boot\n")
    ramdisk.append_tree(image, marker, compression="gz")
    try:
        namespace.check_host()
    except BoardError as exc:
        pytest.skip(f"this host cannot run a board in namespaces: {exc}")
    return image
