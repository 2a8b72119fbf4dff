"""The worker daemon end to end: a real process, real HTTP, real ``lava-dispatch run`` children."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from e2e.helpers import power_commands

from lava_dispatcher.log import read_records
from lava_dispatcher.sim import SimServer, child_env

from .helpers import HTTPError, Worker, job_yaml, write_devices

WorkerFactory = Callable[..., Worker]


def test_a_job_runs_and_its_log_and_results_are_served(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 2)
    w = worker().start()
    w.login()
    (job_id,) = w.submit(job_yaml("hello"))
    assert job_id == 1
    job = w.wait_finished([job_id])["1"]
    assert (job["health"], job["actual_device"], job["submitter"]) == ("Complete", "fast-01", "admin")
    lines = w.log_lines(job_id)
    records = read_records(lines)
    assert any(r["msg"] == ">> hello" for r in records)
    assert records[-1]["msg"] == {"definition": "lava", "case": "job", "result": "pass"}
    # the stored log is the job's own logs.yaml, line for line, and any range is served
    own = (w.state / "jobs" / "1" / "output" / "logs.yaml").read_text().splitlines()
    assert lines == own
    assert w.log_lines(job_id, 2, 5) == own[2:5]
    assert w.log_lines(job_id, len(own)) == []
    tests = w.request("GET", f"/api/v0.2/jobs/{job_id}/tests/")["results"]
    assert {(t["suite"], t["name"], t["result"]) for t in tests} >= {("lava", "user-command", "pass"), ("lava", "job", "pass")}
    job_line = next(t for t in tests if t["name"] == "job")["log_line"]
    assert "\"case\": \"job\"" in own[job_line]


def test_bad_submissions_are_refused_with_what_is_wrong(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    w = worker().start()
    w.login()
    cases = {
        "device_type: sim\nactions: [": "definition:",
        "- a list": "expected a job (a mapping)",
        job_yaml().replace("device_type: sim", "device_type: bbb"): "Device type 'bbb' has no device on this worker (device types here: sim)",
        job_yaml("nope"): "unknown user command 'nope'",
        job_yaml().replace("job_name", "job_nam"): "job_nam",
    }  # fmt: skip
    for definition, message in cases.items():
        with pytest.raises(HTTPError) as raised:
            w.submit(definition)
        assert raised.value.status == 400
        assert message in raised.value.body, raised.value.body
    assert w.all_jobs() == []  # nothing half-made
    # anonymous may not submit; a wrong token is an HTTP 401
    with pytest.raises(HTTPError) as raised:
        w.submit(job_yaml(), auth=None)
    assert raised.value.status == 401 and "Authentication" in raised.value.body
    with pytest.raises(HTTPError) as raised:
        w.submit(job_yaml(), auth=w.basic("admin", "wrong"))
    assert raised.value.status == 401 and raised.value.body == "Invalid token"


def test_private_jobs_are_hidden_from_others(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    w = worker().start()
    admin_token = w.login("boss", admin=True)
    bob = w.login("bob", admin=False)
    (job_id,) = w.submit(job_yaml(visibility="personal"), auth=f"Token {bob}")
    w.token = admin_token
    w.wait_finished([job_id])
    assert w.request("GET", "/api/v0.2/system/whoami/", auth=w.basic("bob", bob)) == {"user": "bob"}
    assert w.request("GET", f"/api/v0.2/jobs/{job_id}/", auth=f"Token {bob}")["submitter"] == "bob"
    for auth in (None, f"Token {w.login('eve', admin=False)}"):
        with pytest.raises(HTTPError) as raised:
            w.request("GET", f"/api/v0.2/jobs/{job_id}/", auth=auth)
        assert raised.value.status == (401 if auth is None else 403)
        listed = w.request("GET", "/api/v0.2/jobs/", auth=auth)
        assert listed["count"] == 0
        with pytest.raises(HTTPError):
            w.request("GET", f"/api/v0.2/jobs/{job_id}/cancel/", auth=auth)


def test_a_running_job_is_canceled(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    w = worker().start()
    w.login()
    (job_id,) = w.submit(job_yaml("ticker"))
    w.wait_for(lambda: len(w.log_lines(job_id)) > 10, 60, "the job to log")
    w.request("POST", f"/api/v0.2/jobs/{job_id}/cancel/")
    job = w.wait_finished([job_id], 60)[str(job_id)]
    assert job["health"] == "Canceled"
    assert "canceled by admin" in job["failure_comment"]
    # the device is free again, and healthy
    (after,) = w.submit(job_yaml("hello"))
    assert w.wait_finished([after])[str(after)]["health"] == "Complete"


def test_a_queued_job_is_canceled_at_once_and_never_runs(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    w = worker().start()
    w.login()
    (busy,) = w.submit(job_yaml("ticker"))
    (queued,) = w.submit(job_yaml("hello"))
    w.request("GET", f"/api/v0.2/jobs/{queued}/cancel/")
    job = w.job(queued)
    assert (job["state"], job["health"], job["start_time"]) == ("Finished", "Canceled", None)
    w.request("GET", f"/api/v0.2/jobs/{busy}/cancel/")
    w.wait_finished([busy], 60)
    assert not (w.state / "jobs" / str(queued)).exists()


@pytest.mark.slow
def test_multinode_submission_runs_as_sub_jobs_with_the_embedded_coordinator(
    tmp_path: Path, worker: WorkerFactory
) -> None:
    write_devices(tmp_path / "devices", 3)
    w = worker().start()
    w.login()
    definition = {
        "job_name": "group", "visibility": "public", "timeouts": {"job": {"seconds": 60}},
        "protocols": {"lava-multinode": {"roles": {"server": {"device_type": "sim", "count": 1},
                                                   "client": {"device_type": "sim", "count": 2}},
                                         "timeout": {"seconds": 30}}},
        "actions": [{"command": {"name": "hello", "role": ["server", "client"]}}],
    }  # fmt: skip
    ids = w.submit(yaml.safe_dump(definition, sort_keys=False))
    assert ids == ["1.0", "1.1", "1.2"]
    jobs = w.wait_finished(ids, 60)
    assert {j["health"] for j in jobs.values()} == {"Complete"}
    assert sorted(j["id"] for j in jobs.values()) == [1, 2, 3]
    assert len({j["actual_device"] for j in jobs.values()}) == 3
    log = "\n".join(w.log_lines("1.1"))
    assert "group complete: 1 (server), 2 (client), 3 (client)" in log
    # the group's definition is the submission
    assert w.job("1.2")["multinode_definition"] == yaml.safe_dump(definition, sort_keys=False)
    # a group larger than the worker is refused at once
    definition["protocols"]["lava-multinode"]["roles"]["client"]["count"] = 3
    with pytest.raises(HTTPError) as raised:
        w.submit(yaml.safe_dump(definition))
    assert "needs 4 devices of type 'sim' at once; this worker has 3" in raised.value.body


def test_health_checks_decide_device_health(tmp_path: Path, worker: WorkerFactory) -> None:
    names = write_devices(tmp_path / "devices", 2)
    w = worker()
    (w.state / "health-checks").mkdir(parents=True)
    (w.state / "health-checks" / "sim.yaml").write_text(job_yaml("hello", name="health"))
    w.start()
    w.login()
    devices = w.wait_for(lambda: (d := w.device_list()) and all(x["health"] == "Good" for x in d.values()) and d,
                         60, "health checks to pass")  # fmt: skip
    checks = [j for j in w.all_jobs() if j["health_check"]]
    assert sorted(j["actual_device"] for j in checks) == names
    assert all(j["health"] == "Complete" and j["submitter"] == "lava-health" for j in checks)
    assert "passed" in devices[names[0]]["health_reason"]
    w.stop()
    # a health check that fails makes the device Bad: no job goes there any more
    (w.state / "health-checks" / "sim.yaml").write_text(job_yaml("fail", name="health"))
    w.extra = ("--health-check-interval", "0.5")
    w.start()
    devices = w.wait_for(lambda: (d := w.device_list()) and all(x["health"] == "Bad" for x in d.values()) and d,
                         60, "health checks to fail")  # fmt: skip
    assert "failed" in devices[names[1]]["health_reason"]


def test_bad_inputs_stop_the_start_with_one_clear_message(tmp_path: Path, worker: WorkerFactory) -> None:
    devices = tmp_path / "devices"
    write_devices(devices, 1)
    (devices / "broken.yaml").write_text("extends: sim\ncommands: {power_on: 3}\n")
    w = worker()
    with pytest.raises(AssertionError, match="did not get ready"):
        w.start()
    assert w.wait_exit() == 2
    assert "broken.yaml" in w.output() and "power_on" in w.output()
    (devices / "broken.yaml").write_text("hostname: x\n")
    code = subprocess.run([*w.argv(), "--cancel-timeout", "soon"], capture_output=True, text=True,
                          env=child_env(), timeout=60)  # fmt: skip
    assert code.returncode == 2
    (devices / "broken.yaml").unlink()
    config = tmp_path / "worker.yaml"
    config.write_text("listen: 127.0.0.1:0\nstate-dir: /x\nhealth_check_intervall: 3\n")
    done = subprocess.run([*w.argv(), "--config", str(config)], capture_output=True, text=True,
                          env=child_env(), timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "worker.yaml: unknown key 'health_check_intervall'" in done.stderr


def test_one_state_directory_one_worker(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    worker().start()
    second = worker()
    with pytest.raises(AssertionError):
        second.start()
    assert second.wait_exit() == 2
    assert "is in use by another worker" in second.output()


@pytest.mark.slow
def test_a_job_on_a_simulated_board(tmp_path: Path, worker: WorkerFactory) -> None:
    """The whole path on a board with a console: power, boot, login, a test."""
    with SimServer(tmp_path / "board", pty=True, boot_time=0.05, boot_lines=8) as board:
        device = {
            "extends": "sim",
            "commands": {
                "connections": {"uart0": {"serial": board.pty, "tags": ["primary"]}},
                **power_commands(board),
            },
        }
        write_devices(tmp_path / "devices", 1, "board", device)
        w = worker().start()
        w.login()
        prompt = "root@sim:~# "
        definition = {
            "job_name": "board", "device_type": "sim", "visibility": "public",
            "timeouts": {"job": {"seconds": 60}},
            "actions": [
                {"boot": {"method": "minimal", "prompts": [prompt], "timeout": {"seconds": 30},
                          "auto_login": {"login_prompt": "login:", "username": "root"}}},
                {"test": {"timeout": {"seconds": 30}, "interactive": [{
                    "name": "checks", "prompts": [prompt],
                    "script": [{"command": "echo answer=$((6*7))", "name": "answer",
                                "successes": [{"message": "answer=42"}]}]}]}},
            ],
        }  # fmt: skip
        (job_id,) = w.submit(yaml.safe_dump(definition))
        assert w.wait_finished([job_id], 90)[str(job_id)]["health"] == "Complete"
        tests = w.request("GET", f"/api/v0.2/jobs/{job_id}/tests/")["results"]
        assert ("0_checks", "answer", "pass") in {(t["suite"], t["name"], t["result"]) for t in tests}


def test_the_worker_never_imports_actions_or_the_pipeline() -> None:
    code = (
        "import sys, lava_dispatcher.worker.daemon, lava_dispatcher.worker.http, "
        "lava_dispatcher.worker.cli, lava_dispatcher.cli\n"
        "bad = [m for m in sys.modules if m.startswith(('lava_dispatcher.actions', "
        "'lava_dispatcher.pipeline', 'lava_dispatcher.parser', 'lava_dispatcher.job'))]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=child_env(), timeout=60)


def test_sigterm_cancels_running_jobs_and_keeps_the_queue(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    w = worker().start()
    w.login()
    (running,) = w.submit(job_yaml("ticker"))
    (queued,) = w.submit(job_yaml("hello"))
    w.wait_for(lambda: w.job(running)["state"] == "Running", 60, "the job to run")
    assert w.stop() == 0
    assert "stopped" in w.output().splitlines()[-1]
    w.start()
    jobs = w.wait_finished([running, queued], 60)
    assert jobs[str(running)]["health"] == "Canceled"
    assert "canceled: stopped by SIGTERM" in jobs[str(running)]["failure_comment"]
    assert jobs[str(queued)]["health"] == "Complete"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_with_a_certificate_and_its_key(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)  # fmt: skip
    w = worker("--tls-cert", str(cert), "--tls-key", str(key)).start()
    assert w.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(w.url + "/v1/healthz/", context=context, timeout=30) as response:
        assert json.load(response) == {"health": "good"}
