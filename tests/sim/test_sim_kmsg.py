"""The /dev/kmsg stand-in: lines written to a regular file reach the console."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lava_dispatcher.sim import namespace
from lava_dispatcher.sim.loop import EventLoop
from lava_dispatcher.sim.namespace import KmsgTail


@pytest.fixture(params=["inotify", "polling"])
def tail(request, tmp_path, monkeypatch):
    if request.param == "polling":
        monkeypatch.setattr(namespace.Inotify, "watch", classmethod(lambda cls, *a: None))
    loop = EventLoop()
    path = tmp_path / "kmsg"
    path.touch()
    lines: list[str] = []
    wanted = [0]

    def on_line(line: str) -> None:
        lines.append(line)
        if len(lines) >= wanted[0]:
            loop.stop()

    kmsg = KmsgTail(loop, path, on_line)

    def expect(write: Callable[[], None], *new: str) -> None:
        """Do `write`, run the loop until `new` lines arrived (5 s at most)."""
        wanted[0] = len(lines) + len(new)
        before = len(lines)
        write()
        safety = loop.call_later(5, loop.stop)
        loop.run()
        safety.cancel()
        assert lines[before:] == list(new)

    yield path, expect, kmsg, lines
    kmsg.close()
    loop.close()


def write(path: Path, text: bytes, mode: str = "wb") -> Callable[[], None]:
    def do() -> None:
        with open(path, mode) as f:
            f.write(text)

    return do


def test_lines_truncation_appends_and_levels(tail):
    path, expect, _, _ = tail
    expect(write(path, b"<6>first message\n"), "first message")
    expect(write(path, b"<3>2nd\n"), "2nd")  # `echo > /dev/kmsg` truncates first
    expect(write(path, b"third\nfourth\n", "ab"), "third", "fourth")
    expect(write(path, b"<12>no newline"), "no newline")  # complete when its writer closes


def test_a_writer_keeping_its_file_open(tail):
    path, expect, _, _ = tail
    with open(path, "r+b", buffering=0) as f:
        expect(lambda: f.write(b"kept 1\n"), "kept 1")
        # the tail emptied the file; this write lands after a hole of zeros
        expect(lambda: f.write(b"kept 2\n"), "kept 2")
    assert path.stat().st_size == 0


def test_close_flushes_a_partial_line(tail):
    path, _, kmsg, lines = tail
    with open(path, "ab") as f:
        f.write(b"half a line")
    kmsg.read()  # what a tick would do: the line is not complete yet
    kmsg.close()
    assert lines[-1:] == ["half a line"]
