"""Host commands: argument lists without a shell, timeouts, cancel, process groups."""

from __future__ import annotations

import os
import select
import threading
import time

import pytest

from lava_dispatcher import hostcmd
from lava_dispatcher.errors import JobCanceled
from lava_dispatcher.timing import Interrupter


def test_output_lines_and_exit_status() -> None:
    seen: list[str] = []
    result = hostcmd.run(
        ["sh", "-c", "echo one; echo two >&2; exit 3"], timeout=5, on_line=seen.append
    )
    assert result.returncode == 3
    assert sorted(seen) == ["one", "two"]


def test_no_shell_between_a_device_command_and_the_host(tmp_path) -> None:
    marker = tmp_path / "pwned"
    # the ; and $() stay literal arguments of echo: nothing is interpreted
    result = hostcmd.run(hostcmd.split_command(f"echo a; touch {marker} $(id)"), timeout=5)
    assert result.output == f"a; touch {marker} $(id)"
    assert not marker.exists()


def test_missing_program_is_reported() -> None:
    with pytest.raises(hostcmd.CommandNotFound, match="no-such-program-xyz"):
        hostcmd.run(["no-such-program-xyz"], timeout=5)


def test_timeout_kills_the_command_and_what_it_started(tmp_path) -> None:
    pidfile = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(hostcmd.CommandTimeout):
        hostcmd.run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.5)
    assert time.monotonic() - start < 3
    child = int(pidfile.read_text())
    try:
        pidfd = os.pidfd_open(child)
    except ProcessLookupError:
        return  # already gone and reaped
    try:
        # a pidfd becomes readable when the process has exited
        assert select.select([pidfd], [], [], 3)[0], "the command's child survived the timeout"
    finally:
        os.close(pidfd)


def test_cancel_stops_a_running_command_at_once() -> None:
    interrupter = Interrupter()
    threading.Timer(0.2, interrupter.cancel, args=(JobCanceled("stop"),)).start()
    start = time.monotonic()
    with pytest.raises(JobCanceled):
        hostcmd.run(["sleep", "30"], timeout=30, interrupter=interrupter)
    assert time.monotonic() - start < 2


def test_a_daemonizing_command_does_not_block_on_its_pipe() -> None:
    start = time.monotonic()
    result = hostcmd.run(["sh", "-c", "(sleep 5 &) ; echo started"], timeout=10)
    assert result.returncode == 0 and "started" in result.output
    assert time.monotonic() - start < 2


def test_the_interpreter_directory_is_on_path() -> None:
    import sys

    env = hostcmd.host_environment()
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
