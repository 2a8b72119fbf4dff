"""The simulated board's own root file system: a chroot in new namespaces.

With ``--rootfs DIR``, or ``--ramdisk FILE`` (unpacked into a fresh temporary
directory at every boot with `lava_dispatcher.ramdisk.extract`, and deleted
at power-off), the shell after login runs inside that root file system
instead of on the host:

    unshare --pid --fork --kill-child --mount --uts --ipc [--user --map-root-user] \\
        /bin/sh -c SETUP ROOT RUNTIME USERNS -- SHELL -i

`unshare` (util-linux) forks the first process of a new PID namespace, in new
mount, UTS and IPC namespaces. That process runs SETUP with the host's
/bin/sh, which mounts, inside the new mount namespace only:

* a proc at /proc (as real root, /proc/sys, /proc/sysrq-trigger, /proc/irq
  and /proc/bus are then made read-only, so that the board cannot change the
  host kernel's settings or trigger a SysRq);
* a tmpfs at /dev holding bind mounts of the host's null, zero, full, random,
  urandom and tty, the console's pty as /dev/console, and a regular file
  standing in for /dev/kmsg: what is written to it is printed on the console
  as kernel messages ("[   12.345678] text", the "<N>" level dropped);
* a tmpfs at /run, with this shell's RUNTIME directory bound at
  /run/lava-sim: the reboot/poweroff/halt/shutdown shims (first on PATH),
  and the shell's ENV file;
* a tmpfs at /tmp only when the root's own /tmp is not writable;

sets the host name (the board's own UTS namespace), then chroots into ROOT
and execs the shell, which is therefore PID 1 of the board (`echo $$` says
1): when it exits, the kernel ends every process of the namespace.

Safety. The PID namespace is what keeps power commands on the board:
reboot(2) in a child PID namespace only ends that namespace's init (the
kernel reports it as killed by SIGHUP for a restart, SIGINT for a power-off
or halt, which the simulator turns into a reboot or a power-off of the
simulated board) and never reaches the host. Typed power commands are still
taken off the input line, the shims still catch scripts calling them by
name, and the shell's ENV file turns the signals that busybox's
reboot/poweroff/halt send to init (TERM, USR2, USR1) into the same requests.

Run as root, the shell is root on the host's kernel in a chroot: the
namespaces keep its processes, mounts and host name to itself and the
read-only /proc parts keep it off the kernel's knobs, but it is NOT a
security sandbox (root can escape a chroot); the files it writes under / land
in ROOT. Not root, ``--user --map-root-user`` is added: the shell is root
only inside its user namespace, with the rights of the user who started the
simulator outside. When the host does not allow that (unprivileged user
namespaces disabled), powering on fails with a clear error (`BoardError`).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lava_dispatcher import ramdisk
from lava_dispatcher.sim.loop import EventLoop, Timer
from lava_dispatcher.sim.transports import IN_CLOSE_WRITE, IN_MODIFY, Inotify

# What a shim writes to its terminal to ask for a reboot or power-off: an OSC
# sequence a real terminal would ignore, removed from the console output.
POWER_MARK = b"\x1b]lava-sim;"
POWER_WORDS = ("reboot", "poweroff", "halt", "shutdown")
SHIM = """#!/bin/sh
# lava_dispatcher simulated DUT: {word} acts on the simulated board, never the host
action={action}
if [ {word} = shutdown ]; then
    case " $* " in *" -r "*) action=reboot ;; *) action=poweroff ;; esac
fi
printf '\\033]lava-sim;%s\\007' "$action"
kill -STOP $$
"""
# The ENV file of the board's shell: as PID 1, it turns the signals busybox's
# reboot/poweroff/halt send to init into requests to the simulator.
PROFILE = """# lava_dispatcher simulated DUT: the shell is the board's PID 1
if [ "$$" = 1 ]; then
    trap 'printf "\\033]lava-sim;reboot\\007"' TERM
    trap 'printf "\\033]lava-sim;poweroff\\007"' USR1 USR2
    cd "$HOME" 2>/dev/null
fi
"""
INIT_FAILED = "init-failed"
BOX_PATH = "/run/lava-sim/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_SH = "/bin/sh"
TOOLS = ("unshare", "mount", "chroot")
NO_INIT = (
    "No working init found.  Try passing init= option to kernel. "
    "See Linux Documentation/admin-guide/init.rst for guidance."
)
MOUNTPOINTS = {"proc": 0o555, "dev": 0o755, "run": 0o755, "tmp": 0o1777}

SETUP = r"""
root=$1 runtime=$2 user_ns=$3
shift 3
fail() {
    printf 'lava-sim: cannot start the root file system %s: %s\r\n' "$root" "$*" >&2
    printf '\033]lava-sim;init-failed\007'
    exit 127
}
try() {
    out=$("$@" 2>&1) || fail "$* ($out)"
}
try mount --make-rprivate /
try mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
if [ "$user_ns" = 0 ]; then
    for name in sys sysrq-trigger irq bus; do
        if [ -e "$root/proc/$name" ]; then
            try mount --bind "$root/proc/$name" "$root/proc/$name"
            try mount -o remount,bind,ro "$root/proc/$name"
        fi
    done
fi
try mount -t tmpfs -o mode=755,nosuid lava-sim-dev "$root/dev"
for name in null zero full random urandom tty kmsg; do
    : > "$root/dev/$name" || fail "cannot create /dev/$name"
done
for name in null zero full random urandom tty; do
    try mount --bind "/dev/$name" "$root/dev/$name"
done
try mount --bind "$runtime/kmsg" "$root/dev/kmsg"
if console=$(tty 2>/dev/null); then
    : > "$root/dev/console"
    mount --bind "$console" "$root/dev/console" 2>/dev/null || rm -f "$root/dev/console"
fi
mkdir -m 1777 "$root/dev/shm" && mkdir "$root/dev/pts" || fail "cannot populate /dev"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
try mount -t tmpfs -o mode=755,nosuid,nodev lava-sim-run "$root/run"
mkdir "$root/run/lava-sim" || fail "cannot create /run/lava-sim"
try mount --bind "$runtime" "$root/run/lava-sim"
if [ ! -w "$root/tmp" ]; then
    try mount -t tmpfs -o mode=1777,nosuid,nodev lava-sim-tmp "$root/tmp"
fi
hostname "$LAVA_SIM_HOSTNAME" 2>/dev/null
chroot=$(command -v chroot) || fail "no chroot program"
export PATH="$LAVA_SIM_PATH"
unset LAVA_SIM_PATH LAVA_SIM_HOSTNAME
exec "$chroot" "$root" "$@"
"""

PROBE = r"""
set -e
mount --make-rprivate /
mount -t proc proc "$1/proc"
mount -t tmpfs lava-sim-probe "$1/dev"
: > "$1/dev/null"
mount --bind /dev/null "$1/dev/null"
"""


class BoardError(RuntimeError):
    """The board cannot be powered on as configured on this host."""


def write_shims(directory: str | os.PathLike[str]) -> None:
    """The power-command shims (reboot, poweroff, halt, shutdown) in `directory`."""
    for word in POWER_WORDS:
        path = os.path.join(directory, word)
        action = "reboot" if word == "reboot" else "poweroff"
        with open(path, "w", encoding="utf-8") as shim:
            shim.write(SHIM.format(word=word, action=action))
        os.chmod(path, 0o755)


def host_path() -> str:
    """The host's PATH, with the sbin directories (chroot lives there and
    an unprivileged user's PATH often lacks them)."""
    dirs = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d]
    for extra in ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        if extra not in dirs:
            dirs.append(extra)
    return os.pathsep.join(dirs)


def needs_user_namespace() -> bool:
    """True when not root: the board then runs in a user namespace of its own."""
    return os.geteuid() != 0


def unshare_argv(user_ns: bool) -> list[str]:
    unshare = shutil.which("unshare", path=host_path()) or "unshare"
    argv = [unshare, "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc"]
    if user_ns:
        argv += ["--user", "--map-root-user"]
    return argv


_WORKS: set[bool] = set()


def check_host(user_ns: bool | None = None) -> None:
    """Raise BoardError unless this host can run a board in namespaces
    (the tools are there and a trial run mounts what the board needs)."""
    if user_ns is None:
        user_ns = needs_user_namespace()
    missing = [tool for tool in TOOLS if shutil.which(tool, path=host_path()) is None]
    if missing or not os.access(HOST_SH, os.X_OK):
        raise BoardError(
            "a board with its own root file system needs util-linux's unshare and mount, "
            f"chroot and {HOST_SH}; missing: {', '.join(missing) or HOST_SH}"
        )
    if user_ns in _WORKS:
        return
    with tempfile.TemporaryDirectory(prefix="lava-sim-probe-") as directory:
        for name in ("proc", "dev"):
            os.mkdir(os.path.join(directory, name))
        try:
            result = subprocess.run(
                [*unshare_argv(user_ns), "--", HOST_SH, "-c", PROBE, "probe", directory],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "PATH": host_path()},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BoardError(f"cannot run unshare: {exc}")
    if result.returncode != 0:
        how = "unshare --user --map-root-user --pid --mount" if user_ns else "unshare --pid --mount"
        hint = (
            " (not root: this needs unprivileged user namespaces, see the sysctls "
            "user.max_user_namespaces, kernel.unprivileged_userns_clone and "
            "kernel.apparmor_restrict_unprivileged_userns, or run the simulator as root)"
            if user_ns
            else ""
        )
        detail = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        raise BoardError(f"cannot create the board's namespaces with {how}: {detail}{hint}")
    _WORKS.add(user_ns)


# -- the root of one boot ----------------------------------------------------------


def remove_tree(path: str | os.PathLike[str]) -> None:
    """rmtree that also removes what read-only directories hold."""

    def retry(function: Callable[..., object], name: str, exc_info: object) -> None:
        parent = os.path.dirname(name)
        with contextlib.suppress(OSError):
            os.chmod(parent, stat.S_IMODE(os.lstat(parent).st_mode) | 0o700)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, stat.S_IMODE(os.lstat(name).st_mode) | 0o700)
        with contextlib.suppress(OSError):
            if os.path.isdir(name) and not os.path.islink(name):
                shutil.rmtree(name, onerror=retry)
            else:
                function(name)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=retry)


@dataclass
class BootRoot:
    """The root file system of one boot: a directory, temporary for a ramdisk."""

    path: Path
    temporary: bool = False

    def prepare(self) -> None:
        """Create missing mount points (/proc, /dev, /run, /tmp)."""
        for name, mode in MOUNTPOINTS.items():
            target = self.path / name
            if not os.path.lexists(target):
                with contextlib.suppress(OSError):
                    target.mkdir()
                    os.chmod(target, mode)

    def close(self) -> None:
        if self.temporary:
            remove_tree(self.path)


def unpack_ramdisk(image: str | os.PathLike[str]) -> tuple[BootRoot, ramdisk.Extracted]:
    """A fresh temporary root holding the ramdisk's files (RamdiskError or
    OSError when it cannot be unpacked; nothing is left behind then)."""
    path = Path(tempfile.mkdtemp(prefix="lava-sim-initramfs-"))
    root = BootRoot(path, temporary=True)
    try:
        os.chmod(path, 0o755)
        extracted = ramdisk.extract(image, path)
        root.prepare()
    except BaseException:
        root.close()
        raise
    return root, extracted


def resolve_in_root(root: str | os.PathLike[str], path: str, max_links: int = 40) -> Path | None:
    """Where `path`, as seen inside `root` (following its symbolic links the
    way a chroot does), is on the host; None if it does not exist."""
    base = Path(root)
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = base.joinpath(*done, part)
        try:
            info = os.lstat(candidate)
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > max_links:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p not in ("", ".")] + todo
            continue
        done.append(part)
    return base.joinpath(*done)


def mounted_noexec(path: str | os.PathLike[str]) -> bool:
    """True if `path` is on a file system mounted noexec."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_NOEXEC)
    except OSError:
        return False


def find_shell(root: str | os.PathLike[str], shell: str) -> str | None:
    """The shell's path inside `root` if it is an executable file there."""
    names = [shell] if "/" in shell else [f"{d}/{shell}" for d in BOX_PATH.split(":")[1:]]
    for name in names:
        found = resolve_in_root(root, name)
        if found is not None and found.is_file() and os.access(found, os.X_OK):
            return name if name.startswith("/") else "/" + name
    return None


# -- one shell's namespaces ----------------------------------------------------------


class Runtime:
    """A host directory, bound at /run/lava-sim inside: the shims, the
    shell's ENV file and the /dev/kmsg stand-in."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="lava-sim-run-"))
        try:
            (self.path / "bin").mkdir()
            write_shims(self.path / "bin")
            (self.path / "profile").write_text(PROFILE)
            self.kmsg = self.path / "kmsg"
            self.kmsg.touch(0o600)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def box_command(
    root: Path,
    runtime: Runtime,
    shell_argv: list[str],
    *,
    hostname: str,
    env: dict[str, str],
    user_ns: bool | None = None,
) -> tuple[list[str], dict[str, str]]:
    """argv and environment that start `shell_argv` (paths inside `root`)
    as PID 1 of new namespaces chrooted into `root`."""
    if user_ns is None:
        user_ns = needs_user_namespace()
    argv = [
        *unshare_argv(user_ns),
        "--",
        HOST_SH,
        "-c",
        SETUP,
        "lava-sim-setup",
        str(root),
        str(runtime.path),
        "1" if user_ns else "0",
        *shell_argv,
    ]
    full_env = {
        **env,
        "PATH": host_path(),
        "LAVA_SIM_PATH": BOX_PATH,
        "LAVA_SIM_HOSTNAME": hostname,
        "ENV": "/run/lava-sim/profile",
    }
    return argv, full_env


def host_processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, session id) of every process on the host."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            fields = data[data.rfind(b")") + 2 :].split()
            if len(fields) > 3:
                found.append((int(entry.name), int(fields[1]), int(fields[3])))
    return found


def box_members(pid: int) -> list[int]:
    """Host pids of the processes of the box started as `pid` (unshare):
    its session, and every process in the PID namespace of its child."""
    processes = host_processes()
    members = {p for p, _, sid in processes if sid == pid}
    namespaces = set()
    for child, parent, _ in processes:
        if parent == pid:
            with contextlib.suppress(OSError):
                namespaces.add(os.readlink(f"/proc/{child}/ns/pid"))
    if namespaces:
        for p, _, _ in processes:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{p}/ns/pid") in namespaces:
                    members.add(p)
    members.discard(os.getpid())
    return sorted(members)


def wait_gone(pids: list[int], timeout: float) -> None:
    """Wait (up to `timeout` seconds in all) until each of `pids` has ended."""
    deadline = _now() + timeout
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            select.select([pidfd], [], [], max(0.0, deadline - _now()))
        finally:
            os.close(pidfd)


def _now() -> float:
    return time.monotonic()


def kill_box(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL the box started as `pid` (our unreaped child, so its pid and
    session id cannot have been reused) and wait until its processes are gone."""
    members = box_members(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for member in [pid, *members]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)
    wait_gone([m for m in members if m != pid], timeout)


# -- /dev/kmsg ---------------------------------------------------------------------

_LEVEL = re.compile(rb"^<\d{1,4}>")


class KmsgTail:
    """Lines written to the board's /dev/kmsg stand-in, handed to `on_line`.

    The file is emptied after each read, so that writers which truncate it
    (``echo text > /dev/kmsg``) start again at its beginning; holes left by
    writers that did not (an fd kept open) are dropped. A line without its
    newline is complete when its writer closes the file.
    """

    POLL = 0.2  # only without inotify

    def __init__(self, loop: EventLoop, path: Path, on_line: Callable[[str], None]) -> None:
        self.loop = loop
        self.on_line = on_line
        self.partial = b""
        self.fd: int | None = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self.timer: Timer | None = None
        self.inotify = Inotify.watch(str(path), IN_MODIFY | IN_CLOSE_WRITE)
        if self.inotify is not None:
            loop.add_reader(self.inotify.fd, self._changed)
        else:
            self.timer = loop.call_later(self.POLL, self._poll)

    def _changed(self) -> None:
        assert self.inotify is not None
        events = self.inotify.drain()
        self.read(flush=bool(events & IN_CLOSE_WRITE))

    def _poll(self) -> None:
        self.read(flush=True)
        if self.fd is not None:
            self.timer = self.loop.call_later(self.POLL, self._poll)

    def read(self, flush: bool = False) -> None:
        if self.fd is None:
            return
        chunks = []
        offset = 0
        while chunk := os.pread(self.fd, 65536, offset):
            chunks.append(chunk)
            offset += len(chunk)
        if offset:
            os.ftruncate(self.fd, 0)
        data = self.partial + b"".join(chunks).replace(b"\0", b"")
        *lines, self.partial = data.split(b"\n")
        if flush and self.partial:
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            text = _LEVEL.sub(b"", line.rstrip(b"\r"))
            if text:
                self.on_line(text.decode("utf-8", "replace"))

    def close(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.read(flush=True)
        if self.inotify is not None:
            self.loop.remove_reader(self.inotify.fd)
            self.inotify.close()
            self.inotify = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        os.close(self.fd)
        self.fd = None
