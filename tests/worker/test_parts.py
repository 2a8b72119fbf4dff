"""The worker's parts on their own: config, users and tokens, the log index, the scheduler's plan."""

from __future__ import annotations

import base64
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from lava_dispatcher.sim import child_env
from lava_dispatcher.worker import auth
from lava_dispatcher.worker.config import load_config
from lava_dispatcher.worker.errors import AuthFailed, BadRequest, ConfigError, NotFound
from lava_dispatcher.worker.logs import JobLog
from lava_dispatcher.worker.runner import Outcome
from lava_dispatcher.worker.scheduler import device_health_after, plan
from lava_dispatcher.worker.store import DeviceRecord, JobRecord, Store

# -- config -----------------------------------------------------------------------


def test_config_file_then_options(tmp_path: Path) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text("state-dir: /srv/lava\nlisten: 0.0.0.0:9000\ncancel_timeout: 5\n")
    loaded = load_config(config, {"listen": "127.0.0.1:0", "devices": None})
    assert (loaded.state_dir, loaded.listen, loaded.cancel_timeout) == (Path("/srv/lava"), "127.0.0.1:0", 5.0)
    relative = load_config(config, {"state_dir": "here"})
    assert relative.state_dir == Path.cwd() / "here"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen: 8000\n", "listen: expected HOST:PORT"),
        ("cancel-timeout: soon\n", "cancel-timeout: expected a number of seconds"),
        ("stat_dir: /x\n", "unknown key 'stat_dir'"),
        ("- a\n", "expected a mapping of settings"),
        ("listen: [\n", "worker.yaml:2:1"),
        ("tls-cert: /nonexistent.pem\ntls-key: /nonexistent.key\n", "tls-cert: /nonexistent.pem is not a readable file"),
        ("tls-key: /etc/hostname\n", "give both"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(config, {})


# -- users and tokens ------------------------------------------------------------


def users(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "lava_dispatcher", "users", *args, "--state-dir", str(state)]
    return subprocess.run(argv, capture_output=True, text=True, env=child_env(), timeout=60, check=False)


def test_users_command_line(tmp_path: Path) -> None:
    added = users(tmp_path, "add", "alice", "--admin")
    assert added.returncode == 0, added.stderr
    token = added.stdout.split()[-1]
    assert len(token) == 64 and token.isalnum()
    assert users(tmp_path, "add", "bob").returncode == 0
    again = users(tmp_path, "add", "alice")
    assert again.returncode == 2 and "exists already" in again.stderr
    second = users(tmp_path, "token", "alice").stdout.split()[-1]
    listed = users(tmp_path, "list").stdout.splitlines()
    assert [line.split() for line in listed] == [["alice", "admin", "2", "token(s)"], ["bob", "user", "1", "token(s)"]]
    store = Store(tmp_path)
    try:
        assert auth.authenticate(store, "alice", token).is_admin
        assert auth.authenticate(store, None, second).name == "alice"
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("worker.sqlite3*"))
        assert token.encode() not in raw and auth.token_hash(token).encode() in raw  # hashed only
    finally:
        store.close()
    assert users(tmp_path, "del", "alice").returncode == 0
    assert users(tmp_path, "token", "alice").returncode == 2
    assert "not found" in users(tmp_path, "del", "alice").stderr
    bad = users(tmp_path, "add", "no spaces")
    assert bad.returncode == 2 and "user name 'no spaces'" in bad.stderr


def test_authentication_headers(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        token = auth.add_user(store, "alice")
        other = auth.add_user(store, "bob")

        def basic(text: str) -> str:
            return "Basic " + base64.b64encode(text.encode()).decode()

        assert auth.authenticate_header(store, None) is None
        assert auth.authenticate_header(store, "") is None
        user = auth.authenticate_header(store, basic(f"alice:{token}"))
        assert user is not None and user.name == "alice"
        user = auth.authenticate_header(store, f"Token {token}")
        assert user is not None and user.name == "alice"
        for wrong in (basic(f"alice:{other}"), basic("alice:x"), f"Token {token}x", basic(f"carol:{token}")):
            with pytest.raises(AuthFailed):
                auth.authenticate_header(store, wrong)
        for malformed in ("Bearer x", "Basic !!!", basic("no-colon"), "Token"):
            with pytest.raises(BadRequest):
                auth.authenticate_header(store, malformed)
        with pytest.raises(NotFound):
            auth.add_token(store, "carol")
    finally:
        store.close()


# -- the log and its index -------------------------------------------------------

RESULT = '- {"dt": "2026-01-01T00:00:00+00:00", "lvl": "results", "msg": {"definition": "0_s", "case": "c%d", "result": "pass"}}\n'
LINE = '- {"dt": "2026-01-01T00:00:00+00:00", "lvl": "target", "msg": "line %d"}\n'


def test_log_index_reads_any_range_and_only_whole_lines(tmp_path: Path) -> None:
    store = Store(tmp_path)
    log_file = tmp_path / "jobs" / "1" / "output" / "logs.yaml"
    log_file.parent.mkdir(parents=True)
    try:
        log = JobLog(store, 1, tmp_path / "jobs" / "1").open()
        assert log.ingest() == 0 and log.read() == (0, "")
        lines = [LINE % n if n % 3 else RESULT % n for n in range(10)]
        log_file.write_text("".join(lines) + LINE[:20])  # and half a line
        assert log.ingest() == 10
        assert log.read(0, 3) == (3, "".join(lines[:3]))
        assert log.read(4, 7) == (3, "".join(lines[4:7]))
        assert log.read(8) == (2, "".join(lines[8:]))
        assert log.read(10) == (0, "")
        assert [r.name for r in store.results(1)] == ["c0", "c3", "c6", "c9"]
        assert [r.line for r in store.results(1)] == [0, 3, 6, 9]
        with log_file.open("a") as stream:
            stream.write(LINE[20:])
        assert log.ingest() == 1 and log.read(10) == (1, LINE)
        # a worker killed between the results and the index: the rows past the index go
        store.add_results(1, [(11, {"definition": "0_s", "case": "ghost", "result": "pass"}, "")])
        with open(log.index_path, "ab") as index:
            index.write(b"\x01\x02\x03")  # a torn entry
        again = JobLog(store, 1, tmp_path / "jobs" / "1").repair()
        assert again.lines == 11 and again.read(0) == (11, "".join(lines) + LINE)
        assert [r.name for r in store.results(1)] == ["c0", "c3", "c6", "c9"]
        # the worker's own last word cuts a torn line off first
        with log_file.open("a") as stream:
            stream.write("- {\"dt\": \"torn")
        again.append("error", "the end")
        count, text = again.read(11)
        assert count == 1 and text.startswith("- {") and '"msg": "the end"' in text
        assert log_file.read_text().endswith('"the end"}\n')
    finally:
        store.close()


# -- the scheduler's plan ---------------------------------------------------------


def job(n: int, **kw: object) -> JobRecord:
    base = JobRecord(
        id=n, sub_id=None, target_group=None, description="", requested_device_type="sim",
        pinned_device=None, actual_device=None, tags=(), priority=50, visibility="public",
        submitter="u", health_check=False, essential=False, state="Submitted", health="Unknown",
        submit_time=float(n), start_time=None, end_time=None, failure_comment=None,
        error_type=None, error_msg=None, pid=None, definition="", original_definition="",
        multinode_definition="",
    )  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def device(name: str, **kw: object) -> DeviceRecord:
    base = DeviceRecord(hostname=name, device_type="sim", path="", present=True, state="Idle",
                        health="Good", health_reason=None, current_job=None, tags=(),
                        description="", last_health_check=None)  # fmt: skip
    return replace(base, **kw)  # type: ignore[arg-type]


def placed(queue: list[JobRecord], devices: list[DeviceRecord]) -> list[tuple[int, str]]:
    return [(j.id, d.hostname) for j, d in plan(queue, devices)]


def test_plan_places_jobs_in_queue_order_on_fitting_idle_devices() -> None:
    devices = [device("a"), device("b", tags=("usb",)), device("c", device_type="qemu"),
               device("d", state="Running"), device("e", health="Bad"), device("f", health="Unknown")]  # fmt: skip
    queue = [job(1, tags=("usb",)), job(2, requested_device_type="qemu"), job(3), job(4)]
    assert placed(queue, devices) == [(1, "b"), (2, "c"), (3, "a")]
    assert placed([job(5, pinned_device="b"), job(6)], devices) == [(5, "b"), (6, "a")]
    # a health check may run on an Unknown or Bad device, only the one it is for
    check = job(7, health_check=True, pinned_device="f")
    assert placed([check], devices) == [(7, "f")]
    assert placed([job(8, requested_device_type="none")], devices) == []


def test_plan_starts_a_group_only_whole() -> None:
    group = [job(n, target_group="g", sub_id=f"1.{n - 1}") for n in (1, 2, 3)]
    two = [device("a"), device("b")]
    assert placed([*group, job(4)], two) == [(4, "a")]
    three = [*two, device("c")]
    assert placed([*group, job(4)], three) == [(1, "a"), (2, "b"), (3, "c")]


@pytest.mark.parametrize(
    ("health_check", "outcome", "expected"),
    [
        (True, Outcome("Complete"), "Good"),
        (True, Outcome("Incomplete", "Test"), "Bad"),
        (True, Outcome("Canceled", killed=True), "Bad"),
        (True, Outcome("Canceled"), "Unknown"),
        (False, Outcome("Complete"), None),
        (False, Outcome("Incomplete", "Job"), None),
        (False, Outcome("Incomplete", "Infrastructure"), "Unknown"),
        (False, Outcome("Canceled", killed=True), "Unknown"),
    ],
)
def test_device_health_after_a_job(health_check: bool, outcome: Outcome, expected: str | None) -> None:
    assert device_health_after(job(1, health_check=health_check), outcome)[0] == expected
