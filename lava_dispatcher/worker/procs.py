"""Processes of the worker: the environment of its children, and finding and ending them.

Every job runs in a session of its own (``start_new_session``): its
``lava-dispatch run`` is the session leader, and everything it starts (power
commands, consoles, QEMU) is in the session unless it left on purpose. A job
is ended by signalling its session's members, found in ``/proc`` by session
id: Linux never gives a new process the id of a session that still has
members, so this cannot hit another process. After a worker crash the
sessions of its jobs are found the same way, by the job directory named on
the leader's command line.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from collections.abc import Iterable
from pathlib import Path

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_PR_SET_PDEATHSIG = 1


def child_environment() -> dict[str, str]:
    """The worker's environment, where ``python -m lava_dispatcher`` finds this copy."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if PACKAGE_ROOT not in paths:
        env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, *paths])
    return env


def die_with_parent() -> None:
    """In a helper child (validator, coordinator): SIGTERM when the worker dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the helper may outlive a killed worker
        pass


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: fields start after the last ')'
    return text[text.rfind(")") + 2 :].split()


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        # fields[0] is the state, fields[3] the session id
        if fields is not None and fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def sessions_running(marker: str) -> list[int]:
    """Session leaders whose command line contains ``marker`` (a job's directory)."""
    leaders = []
    needle = marker.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        fields = _stat(pid)
        if fields is not None and needle in cmdline and int(fields[3]) == pid and fields[0] != "Z":
            leaders.append(pid)
    return leaders


def signal_session(sid: int, sig: int) -> int:
    """Send ``sig`` to every member of session ``sid``; how many got it."""
    sent = 0
    for pid in session_members(sid):
        try:
            os.kill(pid, sig)
            sent += 1
        except ProcessLookupError:
            pass
    return sent


def signal_process(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait (without polling: pidfds) until every pid has exited; False at the deadline."""
    loop = asyncio.get_running_loop()
    waiters: list[asyncio.Future[None]] = []
    fds: list[int] = []
    try:
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            future: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _resolve, future)
            fds.append(fd)
            waiters.append(future)
        if not waiters:
            return True
        _done, pending = await asyncio.wait(waiters, timeout=timeout)
        return not pending
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)


async def end_session(sid: int, grace: float) -> None:
    """SIGTERM the session leader (a job cancels and cleans up), SIGKILL the whole session
    after ``grace`` seconds or once the leader is gone."""
    if sid in session_members(sid) and signal_process(sid, signal.SIGTERM):
        await wait_gone([sid], grace)
    rest = session_members(sid)
    for pid in rest:
        signal_process(pid, signal.SIGKILL)
    await wait_gone(rest, 10.0)
