"""``lava-dispatch worker --check-config``: a real command on real files; it must write nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lava_dispatcher.sim import child_env

from .helpers import Worker, job_yaml, write_devices

WorkerFactory = Callable[..., Worker]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``root``: its size and modification time."""
    found = {}
    for path in [root, *root.rglob("*")]:
        stat = path.stat()
        found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def check(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "lava_dispatcher", "worker", "--check-config", "--state-dir",
            str(tmp_path / "state"), "--devices", str(tmp_path / "devices"), *options]  # fmt: skip
    before = snapshot(tmp_path)
    done = subprocess.run(argv, capture_output=True, text=True, env=child_env(), timeout=60)
    assert snapshot(tmp_path) == before, "--check-config wrote something"
    return done


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """Two good devices and a health check for their type."""
    write_devices(tmp_path / "devices", 2)
    (tmp_path / "state" / "health-checks").mkdir(parents=True)
    (tmp_path / "state" / "health-checks" / "sim.yaml").write_text(job_yaml("hello", name="health"))
    return tmp_path


def test_a_good_config_one_line_per_device(lab: Path) -> None:
    done = check(lab)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    check_file = lab / "state" / "health-checks" / "sim.yaml"
    assert done.stdout.splitlines() == [
        "config: no file, defaults and options",
        f"device fast-01: sim, {lab}/devices/fast-01.yaml, health check {check_file}",
        f"device fast-02: sim, {lab}/devices/fast-02.yaml, health check {check_file}",
        "listen: http://127.0.0.1:8000",
        f"state-dir: {lab}/state: usable",
        "ok: 2 device(s)",
    ]


def test_beside_a_running_worker_and_with_a_state_dir_still_to_make(lab: Path, worker: WorkerFactory) -> None:
    w = worker().start()
    done = subprocess.run([*w.argv(), "--check-config"], capture_output=True, text=True, env=child_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    pid = w.process.pid  # type: ignore[union-attr]
    assert f"state-dir: {lab}/state: usable; in use by a running worker (pid {pid})" in done.stdout
    done = check(lab, "--state-dir", str(lab / "new" / "state"))
    assert done.returncode == 0, done.stderr
    assert f"state-dir: {lab}/new/state: will be made at the first start" in done.stdout
    assert not (lab / "new").exists()


def test_every_bad_device_file_is_named_with_its_key(lab: Path) -> None:
    (lab / "devices" / "broken.yaml").write_text("extends: sim\ncommands: {power_on: 3}\n")
    (lab / "devices" / "garbled.yaml").write_text("extends: sim\ncommands: [\n")
    (lab / "devices" / "typeless.yaml").write_text("hostname: x\n")
    done = check(lab)
    assert done.returncode == 2
    errors = done.stderr.splitlines()
    assert errors[0] == (f"lava-dispatch worker --check-config: {lab}/devices/broken.yaml: commands.power_on: "
                         "got 3; expected a command string or a list of command strings")  # fmt: skip
    assert errors[1].startswith(f"lava-dispatch worker --check-config: {lab}/devices/garbled.yaml:3:")
    assert errors[2] == (f"lava-dispatch worker --check-config: {lab}/devices/typeless.yaml: no device type: "
                         "give 'device_type: <type>' or 'extends: <type>'")  # fmt: skip
    assert errors[3:] == ["3 error(s)"]
    # the good ones are still listed
    assert "device fast-01: sim" in done.stdout and "ok:" not in done.stdout


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("stop_timout: 3\n", "worker.yaml: unknown key 'stop_timout'; the keys are: state-dir, devices,"),
        ("stop-timeout: soon\n", "worker.yaml: stop-timeout: expected a number of seconds (0 or more), not 'soon'"),
        ("tls-cert: /nonexistent/cert.pem\ntls-key: /nonexistent/key.pem\n",
         "tls-cert: /nonexistent/cert.pem is not a readable file"),
        ("listen: localhost\n", "worker.yaml: listen: expected HOST:PORT such as 127.0.0.1:8000, not 'localhost'"),
    ],
)  # fmt: skip
def test_a_bad_config_file_names_the_key_and_what_was_expected(lab: Path, config: str, message: str) -> None:
    (lab / "worker.yaml").write_text(config)
    done = check(lab, "--config", str(lab / "worker.yaml"))
    assert done.returncode == 2
    assert done.stderr.startswith("lava-dispatch worker: ") and message in done.stderr, done.stderr


def test_health_checks_an_unknown_device_type_and_a_bad_job(lab: Path) -> None:
    checks = lab / "state" / "health-checks"
    (checks / "qmeu.yaml").write_text(job_yaml("hello", name="health"))  # a typo: never used
    (checks / "sim.yaml").write_text(job_yaml("nope", name="health"))
    done = check(lab)
    assert done.returncode == 2
    assert f"health check {checks}/sim.yaml: " in done.stderr and "unknown user command 'nope'" in done.stderr
    assert (f"health check {checks}/qmeu.yaml: no device of type 'qmeu' here (device types here: sim); "
            "it would never run") in done.stderr  # fmt: skip
    assert "device fast-01: sim, " in done.stdout and "no health check" in done.stdout


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_a_certificate_with_the_wrong_key(lab: Path) -> None:
    for name in ("one", "two"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=x",
                        "-keyout", str(lab / f"{name}.key"), "-out", str(lab / f"{name}.pem")],
                       check=True, capture_output=True)  # fmt: skip
    good = check(lab, "--tls-cert", str(lab / "one.pem"), "--tls-key", str(lab / "one.key"))
    assert good.returncode == 0 and "listen: https://127.0.0.1:8000" in good.stdout
    bad = check(lab, "--tls-cert", str(lab / "one.pem"), "--tls-key", str(lab / "two.key"))
    assert bad.returncode == 2
    assert f"tls-cert/tls-key: cannot load {lab}/one.pem with {lab}/two.key" in bad.stderr


def test_a_state_dir_that_cannot_be_used(lab: Path) -> None:
    (lab / "plain").write_text("")
    done = check(lab, "--state-dir", str(lab / "plain"))
    assert done.returncode == 2
    assert f"state-dir: {lab}/plain is not a directory" in done.stderr
    done = check(lab, "--state-dir", str(lab / "plain" / "state"))
    assert done.returncode == 2
    assert (f"state-dir: {lab}/plain/state does not exist and cannot be made: {lab}/plain "
            "is not a writable directory") in done.stderr  # fmt: skip
