"""The worker under systemd: sd_notify against a real datagram socket, journald's log format, the unit.

The notify tests bind a real AF_UNIX datagram socket (a path, or an abstract
``@name``), start a real ``lava-dispatch worker`` process with
``NOTIFY_SOCKET`` pointing at it, and read what systemd would read. The
stuck-loop test blocks the worker's event loop the way production can: a
write to its SQLite store waits for a lock the test holds (SQLite waits with
Python's GIL released, so a watchdog thread would go on pinging; a ping from
the loop cannot). A real systemd is used when this machine runs one.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from lava_dispatcher.sim import child_env
from lava_dispatcher.worker.config import WorkerConfig
from lava_dispatcher.worker.logging_setup import JournalFormatter, OneLineFormatter, is_journal
from lava_dispatcher.worker.systemd import EXTEND_FOR, Notifier, exec_quote, render_unit

from .helpers import ROOT, Worker, job_yaml, write_devices

WorkerFactory = Callable[..., Worker]


class NotifySocket:
    """What systemd listens on: every datagram, stamped when it arrived (by a reader thread)."""

    def __init__(self, directory: Path, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.name = f"@lava-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + self.name[1:])
        else:
            self.name = str(directory / "notify")
            self.sock.bind(self.name)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._arrived = threading.Condition()
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            with self._arrived:
                self.messages.append((time.monotonic(), data.decode()))
                self._arrived.notify_all()

    def flush(self) -> None:
        """Wait until every datagram sent before now has been read (one of ours goes last)."""
        marker = f"TEST-MARKER={uuid.uuid4().hex}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(marker.encode(), self.sock.getsockname())
        self.wait_for(lambda m: m == marker, 5, "the test's own marker")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str, start: int = 0) -> str:
        """The first message from index ``start`` on that matches."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for _, message in self.messages[start:]:
                    if predicate(message):
                        return message
                start = len(self.messages)
                if not self._arrived.wait(deadline - time.monotonic()):
                    raise AssertionError(f"no {what} within {timeout} s; got {[m for _, m in self.messages]}")

    def pings(self, since: float = 0.0) -> list[float]:
        return [t for t, m in list(self.messages) if m == "WATCHDOG=1" and t >= since]

    def close(self) -> None:
        self._closed = True
        self._reader.join(5)
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are limited to 107 bytes, pytest's tmp_path may be longer."""
    with tempfile.TemporaryDirectory(prefix="lava-notify-") as directory:
        yield Path(directory)


@contextlib.contextmanager
def notify_socket(directory: Path, abstract: bool) -> Iterator[NotifySocket]:
    sock = NotifySocket(directory, abstract)
    try:
        yield sock
    finally:
        sock.close()


def launch(w: Worker, notify: NotifySocket | None, journal: bool = False, **env: str) -> IO[bytes]:
    """Start ``w`` as systemd would: its stderr a file (the "journal"), NOTIFY_SOCKET and ``env`` set."""
    log = open(w.tmp / "stderr.log", "wb")  # noqa: SIM115 - closed by the caller's fixture
    environ = child_env()
    if notify is not None:
        environ["NOTIFY_SOCKET"] = notify.name
    if journal:
        stat = os.fstat(log.fileno())
        environ["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
    environ.update(env)
    w.process = subprocess.Popen(w.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=log, env=environ, start_new_session=True)  # fmt: skip
    return log


def wait_ready(notify: NotifySocket, w: Worker) -> float:
    """Wait for READY=1 (its time); its STATUS says where the worker listens, and it answers there now."""
    message = notify.wait_for(lambda m: "READY=1" in m.splitlines(), 60, "READY=1")
    status = dict(line.split("=", 1) for line in message.splitlines())["STATUS"]
    w.url = status.split("listening on ", 1)[1].split()[0]
    with urllib.request.urlopen(w.url + "/v1/healthz/", timeout=5) as answer:
        assert answer.status == 200
    return next(t for t, m in notify.messages if m == message)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def job_row(state: Path, job_id: int) -> sqlite3.Row:
    with contextlib.closing(sqlite3.connect(state / "worker.sqlite3")) as db:
        db.row_factory = sqlite3.Row
        row: sqlite3.Row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row


# -- the notify protocol with a real worker --------------------------------------------------


@pytest.mark.slow
def test_ready_watchdog_stop_and_a_canceled_job(tmp_path: Path, short_dir: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    w = worker("--stop-timeout", "10")
    with notify_socket(short_dir, abstract=False) as notify, launch(w, notify, WATCHDOG_USEC="1000000"):
        ready_at = wait_ready(notify, w)
        before = [m for t, m in notify.messages if t < ready_at]
        assert any(m.startswith("STATUS=starting") for m in before), before
        w.login()
        (job_id,) = w.submit(job_yaml("ticker"))
        w.wait_for(lambda: len(w.log_lines(job_id)) > 20, 60, "the job to log")
        # the children never got the variables: only the worker speaks to systemd
        children = children_of(w.process.pid)  # type: ignore[union-attr]
        assert len(children) >= 3  # validator, coordinator, the job
        for child in children:
            assert b"NOTIFY_SOCKET=" not in Path(f"/proc/{child}/environ").read_bytes()
        # pings every half WATCHDOG_USEC, never late enough for systemd to act
        notify.wait_for(lambda m: len(notify.pings(ready_at)) >= 4, 10, "four pings after READY=1")
        pings = notify.pings(ready_at)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 1.0 and sum(gaps) / len(gaps) == pytest.approx(0.5, abs=0.2), gaps
        # SIGTERM: STOPPING=1 with what it is doing, the stop timeout extended, the job canceled
        w.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        sent = time.monotonic()
        stopping = notify.wait_for(lambda m: "STOPPING=1" in m, 10, "STOPPING=1")
        assert "STATUS=stopping (stopped by SIGTERM): canceling 1 running job(s)" in stopping
        extend = notify.wait_for(lambda m: m.startswith("EXTEND_TIMEOUT_USEC="), 10, "EXTEND_TIMEOUT_USEC")
        assert extend == f"EXTEND_TIMEOUT_USEC={int(EXTEND_FOR * 1e6)}"
        assert w.wait_exit(10) == 0
        assert time.monotonic() - sent < 10
    job = job_row(w.state, job_id)
    assert (job["state"], job["health"]) == ("Finished", "Canceled")
    assert "canceled: stopped by SIGTERM" in job["failure_comment"]
    assert (tmp_path / "stderr.log").read_text().rstrip().endswith("lava-worker: stopped")


def test_abstract_socket_journal_format_and_a_watchdog_meant_for_another_pid(
    tmp_path: Path, short_dir: Path, worker: WorkerFactory
) -> None:
    write_devices(tmp_path / "devices", 1)
    w = worker()
    with notify_socket(short_dir, abstract=True) as notify, launch(
        w, notify, journal=True, WATCHDOG_USEC="200000", WATCHDOG_PID="1"
    ) as log:
        wait_ready(notify, w)
        w.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        notify.wait_for(lambda m: "STOPPING=1" in m, 10, "STOPPING=1")
        assert w.wait_exit(30) == 0
        notify.flush()
    assert notify.pings() == []  # WATCHDOG_PID named another process
    lines = Path(log.name).read_text().splitlines()
    assert all(re.match(r"<[2-7]>lava-worker[.a-z]*: ", line) for line in lines), lines
    assert any(line.startswith("<6>lava-worker: ready: listening on http://127.0.0.1:") for line in lines)
    assert lines[-1] == "<6>lava-worker: stopped"


def test_a_worker_that_cannot_start_says_why_as_an_error_in_the_journal(
    tmp_path: Path, short_dir: Path, worker: WorkerFactory
) -> None:
    write_devices(tmp_path / "devices", 1)
    (tmp_path / "devices" / "broken.yaml").write_text("extends: sim\ncommands: {power_on: 3}\n")
    w = worker()
    with notify_socket(short_dir, abstract=True) as notify, launch(w, notify, journal=True) as log:
        assert w.wait_exit(60) == 2
        notify.flush()
    status = [m for _, m in notify.messages if m.startswith("STATUS=cannot start: ")]
    assert len(status) == 1 and "broken.yaml: commands.power_on" in status[0]
    assert not any("READY=1" in m for _, m in notify.messages)
    line = Path(log.name).read_text().splitlines()[-1]
    assert line.startswith("<3>lava-worker: cannot start: ") and "broken.yaml" in line
    w.extra = ("--log-level", "chatty")
    with notify_socket(short_dir, abstract=True) as notify, launch(w, notify, journal=True) as log:
        assert w.wait_exit(60) == 2
    assert Path(log.name).read_text().startswith("<3>lava-dispatch worker: log-level: expected DEBUG")


def test_a_stuck_event_loop_stops_the_pings(tmp_path: Path, short_dir: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    w = worker()
    with notify_socket(short_dir, abstract=False) as notify, launch(w, notify, WATCHDOG_USEC="400000"):
        wait_ready(notify, w)
        w.login()
        notify.wait_for(lambda m: len(notify.pings()) >= 3, 10, "pings")
        submitted: list[Any] = []
        with contextlib.closing(sqlite3.connect(w.state / "worker.sqlite3", isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")  # the store's write lock: the worker's next write waits for it
            thread = threading.Thread(target=lambda: submitted.append(w.submit(job_yaml("hello"))))
            thread.start()
            try:
                # the worker blocks in its store write, on its loop: no ping for 5 periods
                deadline = time.monotonic() + 8
                while time.monotonic() - notify.pings()[-1] < 1.0:
                    assert time.monotonic() < deadline, "the pings never stopped"
                    time.sleep(0.05)
                stat = Path(f"/proc/{w.process.pid}/stat").read_text()  # type: ignore[union-attr]
                assert stat[stat.rfind(")") + 2] in "RSD"  # alive and not stopped: only its loop is stuck
                stuck_since = notify.pings()[-1]
            finally:
                db.execute("ROLLBACK")
            thread.join(30)
        notify.wait_for(lambda m: m == "WATCHDOG=1", 2, "a ping once the loop runs again", len(notify.messages))
        assert notify.pings()[-1] - stuck_since >= 1.0
        assert submitted == [[1]]


# -- the notifier in this process -------------------------------------------------------------


def test_nothing_at_all_without_notify_socket() -> None:
    environ = {"WATCHDOG_USEC": "1000000", "HOME": "/root"}
    notifier = Notifier.from_environment(environ)
    assert not notifier.enabled and notifier.ping_every is None
    assert notifier.send("READY=1") is False
    assert environ == {"HOME": "/root"}  # nothing for the children either


def test_watchdog_only_for_our_pid_and_the_variables_are_taken(short_dir: Path) -> None:
    with notify_socket(short_dir, abstract=True) as notify:
        for owner, expected in (("", 0.25), (str(os.getpid()), 0.25), ("1", None), ("x", None)):
            environ = {"NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "500000", "WATCHDOG_PID": owner}
            notifier = Notifier.from_environment(environ)
            assert (notifier.ping_every, environ) == (expected, {})
            status = f"STATUS=owner {owner}"
            assert notifier.send(status)
            assert notify.wait_for(status.__eq__, 5, "the status") == status
            notifier.close()
    odd = Notifier.from_environment({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not odd.enabled


def test_a_vanished_socket_is_logged_once_and_never_raised(short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(short_dir / "gone"))
    with caplog.at_level(logging.DEBUG, "lava-worker.systemd"):
        assert notifier.send("READY=1") is False
        assert notifier.send("WATCHDOG=1") is False
    assert [r.levelname for r in caplog.records] == ["WARNING", "DEBUG"]
    notifier.close()


# -- journald's format ---------------------------------------------------------------------


def record(level: int, message: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("lava-worker", level, __file__, 1, message, (), exc_info)


def test_journal_lines_carry_the_priority_and_one_record_is_one_line() -> None:
    journal = JournalFormatter()
    expected = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
    for level, priority in expected.items():
        assert journal.format(record(level, "hi")) == f"<{priority}>lava-worker: hi"
    line = journal.format(record(logging.ERROR, "two\nlines\r", exc=True))
    assert "\n" not in line and line.startswith("<3>lava-worker: two\\nlines\\r\\nTraceback")
    assert line.endswith("ValueError: bad\\nvalue")
    plain = OneLineFormatter("%(levelname)s %(message)s").format(record(logging.INFO, "a\nb"))
    assert plain == "INFO a\\nb"


def test_the_journal_is_recognised_by_its_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        stat = os.fstat(a.fileno())
        environ = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        assert is_journal(a, environ)
        assert not is_journal(b, environ)
        assert not is_journal(a, {})
        assert not is_journal(a, {"JOURNAL_STREAM": "garbage"})


# -- the unit file ------------------------------------------------------------------------------


def test_the_unit_in_the_repository_is_the_one_the_install_command_writes() -> None:
    rendered = render_unit(["/usr/bin/lava-dispatch", "worker"], WorkerConfig())
    assert (ROOT / "systemd" / "lava-dispatcher-worker.service").read_text() == rendered
    for line in ("Type=notify", "NotifyAccess=main", "KillMode=mixed", "WatchdogSec=30s",
                 "TimeoutStopSec=60s", "Restart=on-failure", "StateDirectory=lava-dispatcher",
                 "ConfigurationDirectory=lava-dispatcher", "ExecStart=/usr/bin/lava-dispatch worker"):  # fmt: skip
        assert line in rendered.splitlines()


def test_exec_start_quoting() -> None:
    assert exec_quote("/usr/bin/lava-dispatch") == "/usr/bin/lava-dispatch"
    assert exec_quote("/srv/my lab") == '"/srv/my lab"'
    assert exec_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert exec_quote("100%$HOME") == "100%%$$HOME"


def test_install_command(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "lava_dispatcher", "worker", "--install-systemd-unit", "--prefix", "root",
            "--stop-timeout", "120", "--devices", "my devices"]  # fmt: skip
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=child_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "root" / "etc" / "systemd" / "system" / "lava-dispatcher-worker.service"
    assert done.stdout.splitlines() == [
        f"installed {unit}",
        "then: systemctl daemon-reload && systemctl enable --now lava-dispatcher-worker",
    ]
    text = unit.read_text()
    executable = Path(sys.executable).parent / "lava-dispatch"
    assert f'ExecStart={executable} worker --devices "{tmp_path}/my devices" --stop-timeout 120' in text
    assert "TimeoutStopSec=90s" in text  # min(stop 120, cancel 60) + the helpers' 30 s
    again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=child_env(), timeout=60)
    assert again.stdout.startswith(f"unchanged: {unit}")
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
        problems = [line for line in (verify.stdout + verify.stderr).splitlines() if unit.name in line]
        assert verify.returncode == 0 and problems == [], verify.stderr
    wrong = subprocess.run([sys.executable, "-m", "lava_dispatcher", "worker", "--prefix", "x"],
                           capture_output=True, text=True, env=child_env(), timeout=60)  # fmt: skip
    assert wrong.returncode == 2 and "--prefix: only with --install-systemd-unit" in wrong.stderr


# -- a real systemd, when there is one ------------------------------------------------------------


def _systemctl() -> list[str] | None:
    """How to reach a running service manager: the system's as root, else the user's."""
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return None
    command = ["systemctl"] if os.geteuid() == 0 else ["systemctl", "--user"]
    alive = subprocess.run([*command, "is-system-running"], capture_output=True, text=True, timeout=30)
    return command if alive.stdout.strip() in ("running", "degraded", "starting") else None


@pytest.mark.slow
@pytest.mark.skipif(_systemctl() is None, reason="systemd is not PID 1 here (no /run/systemd/system or no "
                    "reachable service manager): the notify protocol is tested against a fake socket above")  # fmt: skip
def test_the_real_unit_under_systemd(tmp_path: Path) -> None:
    systemctl = _systemctl()
    assert systemctl is not None
    write_devices(tmp_path / "devices", 1)
    name = f"lava-test-worker-{uuid.uuid4().hex[:8]}.service"
    worker_argv = [str(Path(sys.executable).parent / "lava-dispatch"), "worker", "--state-dir", str(tmp_path / "state"),
                   "--devices", str(tmp_path / "devices"), "--listen", "127.0.0.1:0"]  # fmt: skip
    if not os.access(worker_argv[0], os.X_OK):
        worker_argv[:1] = [sys.executable, "-m", "lava_dispatcher"]
    text = render_unit(worker_argv, WorkerConfig())
    text = text.replace("[Service]\n", f"[Service]\nEnvironment=PYTHONPATH={ROOT}\n")
    (tmp_path / name).write_text(text)

    def show(*properties: str) -> dict[str, str]:
        out = subprocess.run([*systemctl, "show", name, *(f"-p{p}" for p in properties)],
                             capture_output=True, text=True, timeout=30).stdout  # fmt: skip
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    subprocess.run([*systemctl, "link", str(tmp_path / name)], check=True, capture_output=True, timeout=30)
    try:
        # Type=notify: start returns once READY=1 came (or fails)
        subprocess.run([*systemctl, "start", name], check=True, capture_output=True, timeout=120)
        state = show("ActiveState", "SubState", "StatusText", "MainPID")
        assert (state["ActiveState"], state["SubState"]) == ("active", "running")
        assert state["StatusText"].startswith("ready: listening on http://127.0.0.1:")
        url = state["StatusText"].split("listening on ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "/v1/healthz/", timeout=5) as answer:
            assert answer.status == 200
        subprocess.run([*systemctl, "stop", name], check=True, capture_output=True, timeout=120)
        after = show("ActiveState", "Result", "ExecMainStatus")
        assert (after["ActiveState"], after["Result"], after["ExecMainStatus"]) == ("inactive", "success", "0")
    finally:
        subprocess.run([*systemctl, "stop", name], capture_output=True, timeout=120)
        subprocess.run([*systemctl, "disable", name], capture_output=True, timeout=30)
        subprocess.run([*systemctl, "daemon-reload"], capture_output=True, timeout=60)
