"""A real OpenSSH server on loopback: the "remote machine" of the ssh jobs.

`sshd` (per test) starts ``/usr/sbin/sshd -D -e -f <tmp>/sshd_config`` as a
child process, listening on 127.0.0.1 only, on a free port, with a host key
and a client key pair made for the test (the client's public key is the only
authorized key) and everything else in the test's tmp directory. The machine
is this host, as the user running the tests (root in CI); its login shell is
replaced by a forced command (``remote-shell``) that runs ``/bin/sh -i`` with
a known prompt, so that a job's ``prompts`` do not depend on the host's rc
files; a command (``ssh host mkdir ...``, scp's sftp server) runs as given.
sshd and every process under it are ended by PID at teardown, whatever the
test did. No fixed sleeps: readiness is sshd's own "Server listening" line,
then a TCP connection.

Skipped with the reason when OpenSSH (openssh-server, openssh-client) is not
installed; failed instead when LAVA_TESTS_REQUIRE_QEMU is set (.ci/run sets
it), as tests/uboot does.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SSHD = Path("/usr/sbin/sshd")
SFTP_SERVERS = (
    Path("/usr/lib/openssh/sftp-server"),
    Path("/usr/libexec/openssh/sftp-server"),
    Path("/usr/libexec/sftp-server"),
)
PROMPT = "ssh-dut# "
#: how long sshd may take to listen (it starts in milliseconds)
START_DEADLINE = 15.0
#: LAVA's ssh device options (lava-devices/ssh-01.yaml)
LAVA_OPTIONS = ["-o", "Compression=yes", "-o", "PasswordAuthentication=no", "-o", "LogLevel=FATAL"]

REMOTE_SHELL = """#!/bin/sh
# the test machine's shell: a command runs as given (mkdir, the sftp server);
# an interactive login gets a plain POSIX shell with a known prompt
if [ -n "$SSH_ORIGINAL_COMMAND" ]; then
    exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
fi
exec env PS1='{prompt}' ENV= /bin/sh -i
"""


def sftp_server() -> Path | None:
    return next((path for path in SFTP_SERVERS if path.is_file()), None)


def unavailable() -> str:
    """Why the ssh tests cannot run here ("" when they can)."""
    hint = "(apt-get install openssh-server openssh-client)"
    if not SSHD.is_file():
        return f"{SSHD} is not installed {hint}"
    for tool in ("ssh", "scp", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed {hint}"
    if sftp_server() is None:
        return f"no sftp-server in {', '.join(map(str, SFTP_SERVERS))} (scp needs it) {hint}"
    return ""


def require() -> None:
    """Skip the calling test when sshd cannot run here (fail in CI)."""
    reason = unavailable()
    if reason:
        if os.environ.get("LAVA_TESTS_REQUIRE_QEMU"):  # set by .ci/run
            pytest.fail(f"{reason} (.ci/run requires the ssh tests to run)")
        pytest.skip(reason)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gone(pid: int) -> bool:
    """Whether `pid` has ended (a zombie has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return any(
        line.split()[1:2] == ["Z"] for line in status.splitlines() if line.startswith("State:")
    )


def descendants(pid: int) -> list[int]:
    """Every process under `pid`, from /proc (children first found, then theirs)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return path


@dataclass
class SshServer:
    """One sshd: its directory, port, keys and log."""

    root: Path
    port: int = 0
    user: str = field(default_factory=getpass.getuser)
    process: subprocess.Popen[bytes] | None = None
    listening: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None
    logged: threading.Condition = field(default_factory=threading.Condition)

    @property
    def key(self) -> Path:
        """The client's private key: the one authorized key."""
        return self.root / "client_key"

    @property
    def wrong_key(self) -> Path:
        """A key sshd does not know."""
        return self.root / "wrong_key"

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        keygen(self.root / "host_key")
        keygen(self.key)
        keygen(self.wrong_key)
        (self.root / "authorized_keys").write_text(
            (self.root / "client_key.pub").read_text(), encoding="utf-8"
        )
        shell = self.root / "remote-shell"
        shell.write_text(REMOTE_SHELL.format(prompt=PROMPT), encoding="utf-8")
        shell.chmod(0o755)
        if os.geteuid() == 0:
            # sshd's privilege separation directory (the Debian package's tmpfiles.d makes it)
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def config(self) -> Path:
        root = self.root
        lines = [
            f"ListenAddress 127.0.0.1:{self.port}",
            f"HostKey {root / 'host_key'}",
            f"PidFile {root / 'sshd.pid'}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "PermitUserEnvironment no",
            f"ForceCommand {root / 'remote-shell'}",
            f"Subsystem sftp {sftp_server()}",
            "MaxStartups 64",
            "LogLevel VERBOSE",
        ]
        path = root / "sshd_config"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def _read(self, stream: Any) -> None:
        """Keep sshd's stderr drained (it logs every connection); note readiness."""
        for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            with self.logged:
                self.lines.append(line)
                self.logged.notify_all()
            if line.startswith("Server listening on"):
                self.listening.set()
        self.listening.set()  # sshd ended: stop waiting

    def wait_logged(self, text: str, timeout: float = 10.0) -> bool:
        """Whether sshd logs a line containing `text` within `timeout` (it logs
        asynchronously to what the client saw)."""
        with self.logged:
            return self.logged.wait_for(lambda: any(text in line for line in self.lines), timeout)

    def start(self) -> None:
        for _attempt in range(3):  # the free port may be taken by someone else meanwhile
            self.port = free_port()
            self.listening.clear()
            self.lines.clear()
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.pump = threading.Thread(
                target=self._read, args=(self.process.stdout,), daemon=True, name="sshd-log"
            )
            self.pump.start()
            if not self.listening.wait(START_DEADLINE):
                raise AssertionError(
                    f"sshd did not listen within {START_DEADLINE:g} s:\n{self.log}"
                )
            if self.process.poll() is None:
                self.wait_connectable()
                return
            self.pump.join(5)
            if "Bind to port" not in self.log:
                break
        raise AssertionError(f"sshd did not start:\n{self.log}")

    def wait_connectable(self) -> None:
        """A TCP connection to the port opens (sshd said it listens; this proves it)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=START_DEADLINE):
                return
        except OSError as exc:
            raise AssertionError(f"sshd does not accept connections: {exc}\n{self.log}") from exc

    def stop(self) -> list[int]:
        """End sshd and everything under it, by PID; the PIDs that were left.

        Its sessions first (given a moment to finish on their own: a job's
        client has just left), while sshd is there to reap them; then sshd."""
        process = self.process
        if process is None:
            return []
        left = [pid for pid in descendants(process.pid) if not gone(pid)]
        for pid in left:
            if _wait_gone(pid, 2.0):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 5.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _wait_reaped(left, 5.0)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if self.pump is not None:
            self.pump.join(5)
        return left

    def device(self, results_dir: Path, *, key: Path | None = None, port: int | None = None,
               options: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
        """A device dictionary for this machine, shaped as LAVA's ssh device type:
        the overlay goes to `results_dir` (a path under the test's tmp)."""
        return {
            "extends": "base",
            "device_type": "ssh",
            "hostname": "ssh-test",
            "constants": {"posix": {"lava_test_results_dir": f"{results_dir}/lava-%s"}},
            "actions": {
                "deploy": {
                    "methods": {
                        "ssh": {
                            "options": LAVA_OPTIONS if options is None else options,
                            "host": "127.0.0.1",
                            "port": self.port if port is None else port,
                            "user": self.user,
                            "identity_file": str(key or self.key),
                        }
                    }
                },
                "boot": {"methods": {"ssh": None}},
            },
        }


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait for `pid` (not our child) to end, on its pidfd."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        import select

        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout * 1000)) or gone(pid)
    finally:
        os.close(pidfd)


def _wait_reaped(pids: list[int], timeout: float) -> None:
    """Wait (a bounded poll of /proc) until sshd has reaped its ended sessions,
    so that none is left a zombie for init once sshd itself goes."""
    end = time.monotonic() + timeout
    pause = threading.Event()
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < end:
        pause.wait(0.01)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    require()
    server = SshServer(tmp_path / "sshd")
    server.prepare()
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if server.process is not None:
            assert gone(server.process.pid), "sshd is still running"
        print(f"--- sshd log (last 3000 chars):\n{server.log[-3000:]}")
