"""Shared samples for the ramdisk tests."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lava_dispatcher.ramdisk import Entry

MTIME = 1_700_000_000


def sample_entries() -> list[Entry]:
    """A small root: directories, files with various modes, a symlink."""
    return [
        Entry.dir("bin", 0o755, MTIME),
        Entry.file("bin/tool", b"#!/bin/sh\necho tool\n", 0o755, MTIME),
        Entry.dir("etc", 0o755, MTIME),
        Entry.file("etc/hostname", b"sim\n", 0o644, MTIME),
        Entry.file("etc/secret", b"s3cret", 0o600, MTIME),
        Entry.file("etc/empty", b"", 0o644, MTIME),
        Entry.file("etc/odd", b"12345", 0o640, MTIME),  # length not a multiple of 4
        Entry.symlink("bin/sh", "tool", MTIME),
        Entry.dir("tmp", 0o1777, MTIME),
        Entry.dir("root", 0o700, MTIME),
    ]


def describe(entries: list[Entry]) -> list[tuple[str, str, int, bytes, int, int, int]]:
    """What matters of entries, comparable across writers."""
    return [(e.path, e.kind, stat.S_IMODE(e.mode), e.data, e.mtime, e.uid, e.gid) for e in entries]


def tree_snapshot(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Everything under `root`: kind, permission bits, contents or link target."""
    found: dict[str, tuple[str, int, bytes | str]] = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            relative = os.path.relpath(path, root)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("symlink", 0, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir", mode, b"")
            else:
                found[relative] = ("file", mode, Path(path).read_bytes())
    return found


@pytest.fixture
def entries() -> list[Entry]:
    return sample_entries()
