"""lavacli 3.x from PyPI, unchanged, against a real worker: what it prints, command by command.

The jobs here run on fast simulated devices; tests/qemu/test_lavacli_worker.py
runs the issue's scenario on QEMU and a simulated board.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lava_dispatcher.log import read_records

from .helpers import Worker, job_yaml, write_devices
from .test_xmlrpc import group_yaml

WorkerFactory = Callable[..., Worker]
LAVACLI = Path(sys.executable).with_name("lavacli")


class Lavacli:
    """The ``lavacli`` executable of this virtualenv, with ``--uri http://user:token@host/RPC2``."""

    def __init__(self, w: Worker, user: str | None = None, token: str | None = None, config: Path | None = None) -> None:
        if not LAVACLI.exists():
            pytest.fail(f"{LAVACLI} is missing: install the test extra (pip install -e '.[test]')")
        host = w.url.split("://", 1)[1]
        self.uri = f"http://{user}:{token}@{host}/RPC2" if user else f"http://{host}/RPC2"
        self.env = {k: v for k, v in os.environ.items() if k != "FORCE_COLOR"}
        self.env["XDG_CONFIG_HOME"] = str(config or w.tmp / "lavacli-config")  # no lavacli.yaml of the user's

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Its exit status and output, as printed (bytes decoded, a console's carriage returns kept)."""
        done = subprocess.run([str(LAVACLI), "--uri", self.uri, *args], capture_output=True, env=self.env,
                              timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
        return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())

    def __call__(self, *args: str, timeout: float = 120) -> str:
        """Run a command that must succeed; its standard output."""
        done = self.run(*args, timeout=timeout)
        assert (done.returncode, done.stderr) == (0, ""), f"lavacli {' '.join(args)}: {done}"
        return done.stdout

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(LAVACLI), "--uri", self.uri, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env, stdin=subprocess.DEVNULL)  # fmt: skip


def show_text(job: dict[str, Any]) -> str:
    """What ``lavacli jobs show`` prints for a job, from the REST view of the same job."""
    def stamp(iso: str | None) -> str:
        return "None" if iso is None else re.sub(r"[-]|\.\d+|Z$", "", iso)

    lines = [f"id          : {job['sub_id'] or job['id']}", f"description : {job['description']}",
             f"submitter   : {job['submitter']}", f"device-type : {job['requested_device_type']}",
             f"device      : {job['actual_device']}", f"health-check: {job['health_check']}",
             f"state       : {job['state']}", f"Health      : {job['health']}"]  # fmt: skip
    if job["failure_comment"]:
        lines.append(f"failure     : {job['failure_comment']}")
    if job["error_type"]:
        lines.append(f"error       : {job['error_type']}: {job['error_msg']}")
    lines += ["pipeline    : True", f"tags        : {job['tags']}", "visibility  : Public",
              f"submit time : {stamp(job['submit_time'])}", f"start time  : {stamp(job['start_time'])}",
              f"end time    : {stamp(job['end_time'])}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def logs_text(w: Worker, job_id: Any) -> str:
    """What ``lavacli jobs logs`` prints: each record's time to the second, then its message."""
    lines = [f"{r['dt'].split('.')[0]} {str(r['msg']).rstrip(chr(10))}" for r in read_records(w.log_lines(job_id))]
    return "\n".join(lines) + "\n"


def results_text(w: Worker, job_id: Any) -> str:
    """What ``lavacli results`` prints: suite by suite, in the order they were logged."""
    tests = w.request("GET", f"/api/v0.2/jobs/{job_id}/tests/?limit=1000")["results"]
    suites = list(dict.fromkeys(t["suite"] for t in tests))
    ordered = sorted(tests, key=lambda t: suites.index(t["suite"]))
    return "Results:\n" + "".join(f"* {t['suite']}.{t['name']} [{t['result']}]\n" for t in ordered)


def test_lavacli_prints_what_it_prints_against_lava(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 2)
    w = worker().start()
    admin_token = w.login("admin", admin=True)
    bob_token = w.login("bob", admin=False)
    lavacli = Lavacli(w, "admin", admin_token)
    name = yaml.safe_load(lavacli("workers", "list", "--yaml"))[0]

    assert lavacli("system", "version") == w.request("GET", "/api/v0.2/system/version/")["version"] + "\n"
    assert lavacli("system", "whoami") == "admin\n"
    assert Lavacli(w)("system", "whoami") == "<AnonymousUser>\n"
    assert lavacli("system", "api") == "2\n"
    assert "scheduler.jobs.logs\n" in lavacli("system", "methods", "list")

    (tmp_path / "job.yaml").write_text(job_yaml("hello"))
    assert lavacli("jobs", "submit", str(tmp_path / "job.yaml")) == "1\n"
    assert re.fullmatch(r"((Submitted|Scheduled|Running)\.*\n)*", lavacli("jobs", "wait", "1", "--polling", "1"))
    assert lavacli("jobs", "show", "1") == show_text(w.job(1))
    assert w.job(1)["health"] == "Complete"
    assert lavacli("jobs", "logs", "1") == logs_text(w, 1)
    assert yaml.safe_load(lavacli("jobs", "logs", "1", "--raw", "--start", "2", "--end", "4")) == read_records(w.log_lines(1, 2, 4))
    assert lavacli("results", "1") == results_text(w, 1)
    assert lavacli("results", "1", "lava", "job") == "pass\n"
    assert [r["name"] for r in yaml.safe_load(lavacli("results", "1", "lava", "--yaml"))][-1] == "job"
    assert lavacli("jobs", "list") == "Jobs (from 1 to 25):\n* 1: Finished,Complete [admin] (fast) - sim\n"
    assert lavacli("jobs", "definition", "1") == job_yaml("hello") + "\n"
    assert lavacli("jobs", "validate", str(tmp_path / "job.yaml")) == ""
    assert lavacli("jobs", "resubmit", "1") == "2\n"
    ran = lavacli("jobs", "run", str(tmp_path / "job.yaml"), "--polling", "1").splitlines()
    assert re.fullmatch(r"\S+ \[lavacli\] Job 3 submitted", ran[0]) and ran[-1].endswith(" {'definition': 'lava', 'case': 'job', 'result': 'pass'}")
    assert lavacli("jobs", "queue") == "Jobs (from 1 to 25):\n"

    # a MultiNode job: its sub-jobs' ids, each usable in every command
    (tmp_path / "group.yaml").write_text(group_yaml("hello"))
    assert lavacli("jobs", "submit", str(tmp_path / "group.yaml")) == "4.0\n4.1\n"
    lavacli("jobs", "wait", "4.1", "--polling", "1")
    assert lavacli("jobs", "show", "4.1") == show_text(w.job("4.1"))
    assert lavacli("jobs", "show", "4.1").startswith("id          : 4.1\n")
    assert lavacli("jobs", "logs", "4.1") == logs_text(w, "4.1")

    # devices, device types, workers
    assert lavacli("devices", "list") == "Devices:\n* fast-01 (sim): Idle,Good\n* fast-02 (sim): Idle,Good\n"
    lavacli("devices", "tags", "add", "fast-02", "usb")
    assert lavacli("devices", "tags", "list", "fast-02") == "Tags:\n* usb\n"
    assert lavacli("devices", "show", "fast-02") == (
        "name        : fast-02\ndevice-type : sim\nstate       : Idle\nhealth      : Good\n"
        "health job  : False\ndescription : \npipeline    : True\ndevice-dict : True\n"
        f"worker      : {name}\ncurrent job : None\ntags        : ['usb']\n")  # fmt: skip
    assert lavacli("devices", "update", "--health", "MAINTENANCE", "--reason", "bench", "fast-02") == ""
    assert lavacli("devices", "list") == "Devices:\n* fast-01 (sim): Idle,Good\n* fast-02 (sim): Idle,Maintenance\n"
    assert lavacli("devices", "update", "--health", "GOOD", "fast-02") == ""
    assert lavacli("devices", "maintenance", "fast-02") == ""
    assert w.device_list()["fast-02"]["health"] == "Maintenance"
    assert lavacli("devices", "update", "--health", "GOOD", "fast-02") == ""
    assert lavacli("devices", "dict", "get", "fast-01") == (tmp_path / "devices" / "fast-01.yaml").read_text()
    assert w.device_list()["fast-02"]["health"] == "Good"
    assert lavacli("device-types", "list") == "Device-Types:\n* sim (2)\n"
    assert lavacli("workers", "list") == f"Workers:\n* {name}\n"
    shown = lavacli("workers", "show", name)
    assert shown.startswith(f"hostname    : {name}\ndescription : \nstate       : Online\nhealth      : Active\n"
                            "devices     : fast-01, fast-02\nlast ping   : ")  # fmt: skip
    assert re.search(r"\nlast ping   : \d{8}T\d\d:\d\d:\d\d\njob limit   : 0\nversion     : \S+\n$", shown)

    # what goes wrong, as lavacli reports it
    (tmp_path / "bad.yaml").write_text(job_yaml().replace("seconds: 60", "seconds: soon"))
    done = lavacli.run("jobs", "validate", str(tmp_path / "bad.yaml"))
    assert (done.returncode, done.stdout) == (1, "key: ['timeouts', 'job', 'seconds']\nmsg: got 'soon'; expected a positive integer\n")
    done = lavacli.run("jobs", "submit", str(tmp_path / "bad.yaml"))
    assert done.returncode == 1
    assert done.stderr.startswith(f"Unable to submit {tmp_path / 'bad.yaml'}: <Fault 400: ") and "expected a positive integer" in done.stderr
    done = lavacli.run("jobs", "show", "999")
    assert (done.returncode, done.stderr) == (1, "Unable to call 'jobs.show': <Fault 404: \"Job '999' was not found.\">\n")
    bob = Lavacli(w, "bob", bob_token)
    done = bob.run("devices", "update", "--health", "BAD", "fast-01")
    assert (done.returncode, done.stderr) == (
        1, "Unable to call 'devices.update': <Fault 403: \"User 'bob' may not change a device: an admin may.\">\n")
    (tmp_path / "private.yaml").write_text(job_yaml("hello", visibility="personal"))
    private = bob("jobs", "submit", str(tmp_path / "private.yaml")).strip()
    done = Lavacli(w, "eve", w.login("eve", admin=False)).run("jobs", "cancel", private)
    assert (done.returncode, done.stderr) == (
        1, f"Unable to cancel job {private}: <Fault 403: \"Job '{private}' not available to user 'eve'.\">\n")
    done = Lavacli(w, "admin", "wrong").run("system", "version")
    assert done.returncode == 1
    assert done.stderr.startswith("Unable to connect: 401 Client Error: Unauthorized for url: http://<USERNAME>:<TOKEN>@127.0.0.1:")
    assert w.device_list()["fast-01"]["health"] == "Good"
