"""Whole MultiNode groups with one command: `lava-dispatch run SUBMISSION --device ROLE=FILE ...`.

The submission is what a user gives LAVA's server (roles with counts,
actions with `role:` lists); the command splits it, starts a coordinator on a
free loopback port (or uses `--coordinator`), runs every sub-job on its own
simulated board, and exits 0 only when all are Complete.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from coordinator.helpers import CoordinatorProcess, LavaCoordinatorProcess, require_lava_coordinator
from multinode.boards import BOOT, CACHE, definition, start_board
from testshell.helpers import have_namespaces

from lava_dispatcher.multinode_group import free_port
from lava_dispatcher.sim import child_env

pytestmark = [pytest.mark.slow, have_namespaces]


def submission(roles: dict[str, int], blocks: list[tuple[list[str], dict[str, Any]]],
               timeout: float = 60) -> dict[str, Any]:  # fmt: skip
    """A MultiNode job as a user submits it: roles with counts, actions with role lists."""
    return {
        "job_name": "group",
        "visibility": "public",
        "priority": "medium",
        "timeouts": {"job": {"minutes": 4}},
        "protocols": {"lava-multinode": {
            "roles": {role: {"device_type": "sim", "count": count} for role, count in roles.items()},
            "timeout": {"seconds": timeout},
        }},
        "actions": [
            {kind: {**block, "role": wanted}}
            for wanted, item in blocks
            for kind, block in item.items()
        ],
    }


class Group:
    """Boards for the role instances of a submission, and the command that runs it."""

    def __init__(self, tmp_path: Path, stack: contextlib.ExitStack, roles: dict[str, int]) -> None:
        self.tmp_path = tmp_path
        self.devices: list[str] = []
        self.roots: dict[str, list[Path]] = {}
        for role, count in roles.items():
            for index in range(count):
                device, root = start_board(stack, tmp_path / f"{role}-{index}", f"{role}-{index}")
                self.devices += ["--device", f"{role}={device}"]
                self.roots.setdefault(role, []).append(root)
        self.out = tmp_path / "out"
        self.process: subprocess.Popen[str] | None = None
        self.output = ""

    def argv(self, job: dict[str, Any], *extra: str) -> list[str]:
        path = self.tmp_path / "submission.yaml"
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        return [sys.executable, "-m", "lava_dispatcher", "run", str(path), *self.devices,
                "--job-id", "100", "--output-dir", str(self.out), *extra]  # fmt: skip

    def start(self, job: dict[str, Any], *extra: str) -> None:
        self.process = subprocess.Popen(
            self.argv(job, *extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=child_env(),
        )  # fmt: skip

    def wait(self, timeout: float = 240) -> int:
        assert self.process is not None
        try:
            self.output, _ = self.process.communicate(timeout=timeout)
        finally:
            self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """Ours only, by PID: the group runner ends its sub-jobs and coordinator on SIGTERM."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cases(self, name: str) -> dict[str, str]:
        results = yaml.safe_load((self.out / name / "results.yaml").read_text())
        return {r["case"]: r["result"] for r in results if r["definition"] != "lava"}

    def outcome(self, name: str) -> dict[str, Any]:
        return yaml.safe_load((self.out / name / "result.yaml").read_text())

    def logs(self, name: str) -> list[dict[str, Any]]:
        return yaml.safe_load((self.out / name / "logs.yaml").read_text())


@pytest.fixture
def boards(tmp_path: Path) -> Iterator[Any]:
    """A factory of Groups whose boards (and runner) are stopped when the test ends."""
    with contextlib.ExitStack() as stack:
        groups: list[Group] = []

        def make(roles: dict[str, int]) -> Group:
            group = Group(tmp_path, stack, roles)
            groups.append(group)
            return group

        yield make
        for group in groups:
            group.kill()


SERVER = [
    'lava-send ready ipaddr=10.1.2.3 greeting="hello world"',
    "lava-send round from=$(lava-self)",
    "lava-wait-all round",
    f"lava-test-case all-rounds --shell test \"$(grep -c ':from=' {CACHE})\" -eq 3",
    "lava-sync done",
    'lava-test-case group --shell test "$(lava-group | wc -l)" -eq 3',
    'lava-test-case self --shell test "$(lava-self)" = 100',
]
CLIENT = [
    "lava-wait ready",
    f"lava-test-case ready-ip --shell grep -qx 100:ipaddr=10.1.2.3 {CACHE}",
    f"lava-test-case ready-greeting --shell grep -qx '100:greeting=hello world' {CACHE}",
    "lava-send round from=$(lava-self)",
    "lava-wait-all round",
    f"lava-test-case all-rounds --shell test \"$(grep -c ':from=' {CACHE})\" -eq 3",
    "lava-sync done",
    'lava-test-case group-server --shell test "$(lava-group server)" = 100',
    'lava-test-case clients --shell test "$(lava-group client | tr "\\n" " ")" = "101 102 "',
]


def client_server() -> dict[str, Any]:
    return submission({"server": 1, "client": 2}, [
        (["server", "client"], {"deploy": {"to": "overlay"}}),
        (["server", "client"], {"boot": BOOT}),
        (["server"], definition("server", SERVER)),
        (["client"], definition("client", CLIENT)),
    ])  # fmt: skip


def check_client_server(group: Group) -> None:
    for name in ("100.0", "100.1", "100.2"):
        assert group.outcome(name)["result"] == "pass", (name, group.output[-5000:])
        failed = {c: r for c, r in group.cases(name).items() if r != "pass"}
        assert not failed, (name, failed)
    assert {c for c in group.cases("100.0") if c.startswith("multinode-")} == {
        "multinode-send-ready", "multinode-send-round", "multinode-wait_all-round",
        "multinode-sync-done",
    }  # fmt: skip
    for name in ("100.1", "100.2"):
        cases = group.cases(name)
        for case in ("multinode-wait-ready", "ready-ip", "ready-greeting", "all-rounds",
                     "multinode-sync-done", "group-server", "clients"):  # fmt: skip
            assert cases.get(case) == "pass", (name, case, cases)


def test_a_submission_runs_as_a_group_with_one_command(boards: Any) -> None:
    group = boards({"server": 1, "client": 2})
    group.start(client_server())
    code = group.wait()
    assert code == 0, group.output[-6000:]
    check_client_server(group)
    # one sub-job per role instance, named as LAVA's server shows them, each
    # with its own whole-number job id, role and the group's roles map
    for name, job_id, role in (("100.0", "100", "server"), ("100.1", "101", "client"),
                               ("100.2", "102", "client")):  # fmt: skip
        job = yaml.safe_load((group.out / name / "job.yaml").read_text())
        protocol = job["protocols"]["lava-multinode"]
        assert protocol["role"] == role
        assert protocol["roles"] == {"100": "server", "101": "client", "102": "client"}
        assert any(f"lava-multinode: job {job_id}, role '{role}'" in str(r["msg"])
                   for r in group.logs(name))  # fmt: skip
        # progress side by side: each sub-job's lines under its name
        assert f"{name} {role}" in group.output
    assert "Complete" in group.output.splitlines()[-1]
    # the coordinator started for the group is gone, and nothing else runs
    assert (group.out / "coordinator.log").exists()


def test_the_same_sub_jobs_pass_with_lavas_coordinator(boards: Any, tmp_path: Path) -> None:
    require_lava_coordinator()
    lava = LavaCoordinatorProcess(tmp_path)
    try:
        host, port = lava.start()
        group = boards({"server": 1, "client": 2})
        group.start(client_server(), "--coordinator", f"{host}:{port}")
        assert group.wait() == 0, group.output[-6000:] + lava.log()[-3000:]
        check_client_server(group)
        assert '"request": "lava_sync"' in lava.log()  # LAVA's coordinator did the work
        assert not (group.out / "coordinator.log").exists()  # ours was not started
        assert lava.process is not None and lava.process.poll() is None, lava.log()[-3000:]
    finally:
        lava.stop()


def test_a_group_survives_a_coordinator_killed_and_restarted(boards: Any, tmp_path: Path) -> None:
    """SIGKILL the coordinator mid-group, start it again on its port and state: the group
    completes, and what was sent before the kill is still there."""
    hold = "while [ ! -e /go ]; do sleep 0.05; done"
    server = ["lava-send phase1 ipaddr=10.1.2.3", "touch /sent", hold, "lava-sync after-restart",
              "lava-send phase2 from=$(lava-self)", "lava-wait-all phase2"]  # fmt: skip
    client = ["lava-wait phase1", "touch /waited", hold, "lava-sync after-restart",
              "lava-wait phase1",
              f"lava-test-case still-there --shell grep -qx 100:ipaddr=10.1.2.3 {CACHE}",
              "lava-send phase2 from=$(lava-self)", "lava-wait-all phase2",
              f"lava-test-case all-phase2 --shell test \"$(grep -c ':from=' {CACHE})\" -eq 2"]  # fmt: skip
    job = submission({"server": 1, "client": 1}, [
        (["server", "client"], {"deploy": {"to": "overlay"}}),
        (["server", "client"], {"boot": BOOT}),
        (["server"], definition("server", server)),
        (["client"], definition("client", client)),
    ])  # fmt: skip
    listen = f"127.0.0.1:{free_port()}"
    state = tmp_path / "coordinator-state"
    first = CoordinatorProcess(tmp_path / "first.log", "--state", str(state), listen=listen)
    second = CoordinatorProcess(tmp_path / "second.log", "--state", str(state), listen=listen)
    try:
        first.start()
        group = boards({"server": 1, "client": 1})
        group.start(job, "--coordinator", listen)
        (server_root,), (client_root,) = group.roots["server"], group.roots["client"]
        deadline = time.monotonic() + 120
        while not ((server_root / "sent").exists() and (client_root / "waited").exists()):
            assert group.process is not None and group.process.poll() is None, group.wait()
            assert time.monotonic() < deadline, "the group did not get to the first phase"
            time.sleep(0.05)  # the DUTs are working: look again
        assert first.signal(signal.SIGKILL) == -signal.SIGKILL
        second.start()
        for root in (server_root, client_root):
            (root / "go").touch()
        assert group.wait() == 0, group.output[-6000:] + second.log()[-3000:]
        assert group.cases("100.1")["still-there"] == "pass"
        assert group.cases("100.1")["all-phase2"] == "pass"
        for name in ("100.0", "100.1"):
            assert group.cases(name)["multinode-sync-after-restart"] == "pass"
            assert group.outcome(name)["result"] == "pass"
        assert "1 group(s) loaded" in second.log()  # resumed from its state directory
        assert "request=lava_sync messageID=after-restart reply=ack" in second.log()
        assert "after-restart" not in first.log()  # the sync happened after the restart
    finally:
        first.stop()
        second.stop()


def test_32_nodes_form_sync_and_pass(boards: Any) -> None:
    steps = [
        "lava-sync start",
        "lava-send hello from=$(lava-self)",
        "lava-wait-all hello",
        f"lava-test-case all-hello --shell test \"$(grep -c ':from=' {CACHE})\" -eq 32",
        "lava-sync done",
    ]
    job = submission({"node": 32}, [
        (["node"], {"deploy": {"to": "overlay"}}),
        (["node"], {"boot": BOOT}),
        (["node"], definition("sync", steps, minutes=4)),
    ], timeout=180)  # fmt: skip
    job["timeouts"] = {"job": {"minutes": 8}}
    group = boards({"node": 32})
    group.start(job)
    assert group.wait(timeout=480) == 0, group.output[-6000:]
    for index in range(32):
        cases = group.cases(f"100.{index}")
        for case in ("multinode-sync-start", "all-hello", "multinode-sync-done"):
            assert cases.get(case) == "pass", (index, cases)
