"""Running commands on the worker (power control, user commands), safely.

Commands from the device dictionary are strings split with shlex (or lists)
and run as argument lists, never through a shell, exactly as LAVA does: an
admin who needs shell features writes ``sh -c '...'`` explicitly. Each run
has a timeout and stops at once when the job is canceled; the process runs
in its own session so that ending it also ends what it started, and only
that group is signalled.

The directory of the running interpreter is put first on PATH, so that a
device file saying ``lava-dispatch sim power on ...`` runs the same
installation as the dispatcher even from an unactivated virtualenv.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lava_dispatcher.timing import Interrupter

#: how long a terminated command gets to exit before SIGKILL
TERMINATE_GRACE = 0.5


class CommandTimeout(Exception):
    """The command ran past its timeout and was killed."""

    def __init__(self, argv: Sequence[str], timeout: float, output: str) -> None:
        super().__init__(f"'{shlex.join(argv)}' did not finish within {timeout:g} seconds")
        self.argv = list(argv)
        self.timeout = timeout
        self.output = output


class CommandNotFound(Exception):
    def __init__(self, argv: Sequence[str], reason: str) -> None:
        super().__init__(f"cannot run '{shlex.join(argv)}': {reason}")
        self.argv = list(argv)


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    output: str

    @property
    def last_lines(self) -> str:
        return "\n".join(self.output.splitlines()[-5:])


def split_command(command: str | Sequence[str]) -> list[str]:
    """A device-dictionary command as an argument list."""
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def command_list(value: str | Sequence[str] | None) -> list[str]:
    """A device command key (a string or a list of strings) as a list of commands."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if v]


def host_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    path = env.get("PATH", "")
    if bindir and bindir not in path.split(os.pathsep):
        env["PATH"] = bindir + (os.pathsep + path if path else "")
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    interrupter: Interrupter | None = None,
    on_line: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> CommandResult:
    """Run ``argv`` to completion; raise CommandTimeout, CommandNotFound, or the interrupt."""
    argv = list(argv)
    if not argv:
        raise CommandNotFound(argv, "empty command")
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=host_environment(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandNotFound(argv, exc.strerror or str(exc)) from exc

    lines: list[str] = []
    exited = threading.Event()

    def collect() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            lines.append(line)
            if on_line is not None:
                on_line(line)

    def reap() -> None:
        proc.wait()
        exited.set()

    reader = threading.Thread(target=collect, daemon=True, name=f"cmd-out-{proc.pid}")
    reader.start()
    threading.Thread(target=reap, daemon=True, name=f"cmd-wait-{proc.pid}").start()
    try:
        if interrupter is not None:
            finished = interrupter.wait_event(exited, timeout)
        else:
            finished = exited.wait(timeout)
    except BaseException:
        _stop(proc)
        raise
    if not finished:
        _stop(proc)
        reader.join(0.2)
        raise CommandTimeout(argv, timeout, "\n".join(lines))
    # the command exited; a daemon it started may hold the pipe open, so give
    # the reader only a moment to drain what the command itself printed
    reader.join(0.2)
    return CommandResult(argv, proc.returncode, "\n".join(lines))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the command's session (ours: it was started with a new session)."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(TERMINATE_GRACE)
            return
        except subprocess.TimeoutExpired:
            continue
