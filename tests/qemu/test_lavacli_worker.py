"""Issue 7's must-show 1: a lab as a new user sets it up, driven by lavacli 3.x from PyPI, unchanged.

A worker with two devices, a QEMU (a real Debian kernel, amd64) and a
simulated board on a pty; ``lava-dispatch users add``; then lavacli submits
a job to each, waits for them, shows them, prints their logs and results,
cancels a third job in the middle of its test, lists the devices, puts one
into maintenance and back, and prints the server's version. Every command
succeeds and prints what it prints against LAVA.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.helpers import power_commands
from worker.helpers import Worker
from worker.test_lavacli import Lavacli, logs_text, results_text, show_text

from lava_dispatcher.sim import SimServer

from . import images
from .test_qemu_jobs import job as qemu_job
from .test_qemu_jobs import published

pytestmark = pytest.mark.slow
BOARD_PROMPT = "root@sim:~# "


def board_job() -> dict[str, Any]:
    return {
        "job_name": "board", "device_type": "sim", "visibility": "public", "timeouts": {"job": {"seconds": 90}},
        "actions": [
            {"boot": {"method": "minimal", "prompts": [BOARD_PROMPT], "timeout": {"seconds": 30},
                      "auto_login": {"login_prompt": "login:", "username": "root"}}},
            {"test": {"timeout": {"seconds": 30}, "interactive": [{
                "name": "checks", "prompts": [BOARD_PROMPT],
                "script": [{"command": "echo answer=$((6*7))", "name": "answer",
                            "successes": [{"message": "answer=42"}]}]}]}},
        ],
    }  # fmt: skip


def long_qemu_job(urls: tuple[str, str, str, str]) -> dict[str, Any]:
    """The QEMU job whose test starts, says so, then sleeps: the one to cancel."""
    definition = copy.deepcopy(qemu_job("amd64", *urls))
    definition["job_name"] = "qemu sleeper"
    test = definition["actions"][2]["test"]["definitions"][0]
    test["repository"]["run"]["steps"] = ["lava-test-case started --result pass", "sleep 600"]
    return definition


def qemu_processes(under: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and "qemu-system" in cmdline and str(under) in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def test_lavacli_runs_a_lab_of_qemu_and_a_simulated_board(tmp_path: Path, qemu_images: Any, image_server: Any) -> None:
    urls = published(image_server, qemu_images, "amd64")
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "qemu-01.yaml").write_text(yaml.safe_dump({"extends": "qemu"}))
    dispatcher = tmp_path / "dispatcher.yaml"
    dispatcher.write_text(yaml.safe_dump({"download_cache": str(tmp_path / "cache")}))
    for name, definition in (("qemu", qemu_job("amd64", *urls)), ("board", board_job()), ("sleeper", long_qemu_job(urls))):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))

    with SimServer(tmp_path / "board", pty=True, boot_time=0.05, boot_lines=8) as board:
        connection = {"uart0": {"serial": board.pty, "tags": ["primary"]}}
        (devices / "board-01.yaml").write_text(
            yaml.safe_dump({"extends": "sim", "commands": {"connections": connection, **power_commands(board)}})
        )
        w = Worker(tmp_path, "--dispatcher", str(dispatcher))
        try:
            w.start()
            lavacli = Lavacli(w, "alice", w.login("alice", admin=True))  # lava-dispatch users add alice --admin

            assert lavacli("jobs", "submit", str(tmp_path / "qemu.yaml"), str(tmp_path / "board.yaml")) == "1\n2\n"
            # lavacli polls every 5 s: wait for both at once
            waits = [lavacli.popen("jobs", "wait", job_id) for job_id in ("1", "2")]
            for wait in waits:
                out, err = wait.communicate(timeout=600)
                assert (wait.returncode, err) == (0, ""), out
                assert set(out) <= set("SubmitedchluRngd.\n"), out  # "Submitted", "Scheduled", "Running", dots
            for job_id in (1, 2):
                assert w.job(job_id)["health"] == "Complete", w.job(job_id)
                assert lavacli("jobs", "show", str(job_id)) == show_text(w.job(job_id))
                log = lavacli("jobs", "logs", str(job_id))
                assert log == logs_text(w, job_id)
                assert log.endswith(" {'definition': 'lava', 'case': 'job', 'result': 'pass'}\n")
                assert lavacli("results", str(job_id)) == results_text(w, job_id)
            assert "Linux version" in lavacli("jobs", "logs", "1")  # the kernel's own console lines
            qemu_results = lavacli("results", "1")
            assert f"* 0_smoke.arch-{images.guest_machine('amd64')} [pass]\n" in qemu_results
            assert "* 0_smoke.kernel [pass]\n" in qemu_results and "* lava.job [pass]\n" in qemu_results
            assert "* 0_checks.answer [pass]\n" in lavacli("results", "2")
            assert lavacli("results", "1", "0_smoke", "kernel") == "pass\n"

            # a third job, canceled in the middle of its test
            assert lavacli("jobs", "submit", str(tmp_path / "sleeper.yaml")) == "3\n"
            w.wait_for(lambda: "started" in results_text(w, 3) or time.sleep(0.4), 300,
                       f"job 3's test to start: {tmp_path}/state/jobs/3")
            assert lavacli("jobs", "show", "3").split("\n")[6] == "state       : Running"
            assert lavacli("jobs", "cancel", "3") == ""
            lavacli("jobs", "wait", "3", "--polling", "1", timeout=300)
            canceled = w.job(3)
            assert (canceled["state"], canceled["health"]) == ("Finished", "Canceled")
            assert "canceled by alice" in canceled["failure_comment"]
            shown = lavacli("jobs", "show", "3")
            assert shown == show_text(canceled) and "Health      : Canceled\nfailure     : " in shown
            assert qemu_processes(tmp_path) == []

            # the devices, and the health of one
            assert lavacli("devices", "list") == "Devices:\n* board-01 (sim): Idle,Good\n* qemu-01 (qemu): Idle,Good\n"
            assert lavacli("devices", "update", "--health", "MAINTENANCE", "qemu-01") == ""
            assert lavacli("devices", "list") == "Devices:\n* board-01 (sim): Idle,Good\n* qemu-01 (qemu): Idle,Maintenance\n"
            assert lavacli("devices", "update", "--health", "GOOD", "qemu-01") == ""
            assert lavacli("devices", "list") == "Devices:\n* board-01 (sim): Idle,Good\n* qemu-01 (qemu): Idle,Good\n"
            assert lavacli("system", "version") == w.request("GET", "/api/v0.2/system/version/")["version"] + "\n"
            assert lavacli("system", "version").startswith("2026.07")
        finally:
            w.cleanup()
    start = time.monotonic()
    while qemu_processes(tmp_path) and time.monotonic() - start < 10:
        time.sleep(0.1)
    assert qemu_processes(tmp_path) == []
