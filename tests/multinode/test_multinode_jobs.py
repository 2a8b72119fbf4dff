"""MultiNode groups end to end: parallel `lava-dispatch run` processes on simulated DUTs.

Each job is a sub-job as LAVA's server writes it after splitting a MultiNode
submission (target_group, role, group_size, sub_id, and the roles map of job
id -> role); each runs on its own simulated board (a busybox shell chrooted in
its own root filesystem, so /tmp/lava_multi_node_cache.txt is the board's),
and the group talks through a real coordinator: Debian's lava-coordinator
(LAVA's own: the wire-compatibility proof) and ours.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from testshell.helpers import PROMPT, busybox_rootfs, have_namespaces

from lava_dispatcher.sim import SimServer, child_env

from .boards import BOOT, CACHE, definition, sim_device
from .conftest import Coordinator

pytestmark = [pytest.mark.slow, have_namespaces]

@dataclass
class Node:
    job_id: str
    role: str
    blocks: list[dict[str, Any]]
    protocol: dict[str, Any] = field(default_factory=dict)
    dispatcher: dict[str, Any] = field(default_factory=dict)
    out: Path = Path()
    process: subprocess.Popen[str] | None = None
    code: int | None = None
    output: str = ""

    def results(self) -> list[dict[str, Any]]:
        return yaml.safe_load((self.out / "results.yaml").read_text())

    def cases(self) -> dict[str, str]:
        return {r["case"]: r["result"] for r in self.results() if r["definition"] != "lava"}

    def outcome(self) -> dict[str, Any]:
        return yaml.safe_load((self.out / "result.yaml").read_text())

    def logs(self) -> list[dict[str, Any]]:
        return yaml.safe_load((self.out / "logs.yaml").read_text())

    def logged_at(self, text: str, level: str | None = None) -> float:
        """When the first log record containing ``text`` was written (epoch seconds)."""
        for record in self.logs():
            if text in str(record.get("msg")) and (level is None or record["lvl"] == level):
                return datetime.fromisoformat(record["dt"]).timestamp()
        raise AssertionError(f"{self.role} {self.job_id}: no log record with {text!r}")

    def explain(self) -> str:
        return f"--- {self.role} {self.job_id} exit {self.code}\n{self.output[-6000:]}"


def sub_job(
    node: Node, group: str, roles: dict[str, str], sub_id: int, timeout: float
) -> dict[str, Any]:
    """The job LAVA's server hands the worker for one node of the group."""
    protocol = {"target_group": group, "role": node.role, "group_size": len(roles), "sub_id": sub_id,
                "roles": dict(roles), "timeout": {"seconds": timeout}, **node.protocol}  # fmt: skip
    return {
        "job_name": f"multinode {node.role}",
        "device_type": "sim",
        "visibility": "public",
        "priority": "medium",
        "timeouts": {"job": {"minutes": 3}},
        "protocols": {"lava-multinode": protocol},
        "actions": [
            {kind: {**block, "role": node.role}}
            for item in node.blocks
            for kind, block in item.items()
        ],
    }


def run_group(
    tmp_path: Path,
    coordinator: Coordinator | str,
    nodes: list[Node],
    *,
    group_size: int | None = None,
    timeout: float = 30,
) -> list[Node]:
    """Every node's `lava-dispatch run` at once, each on its own board; waits for all."""
    group = str(uuid.uuid4())
    roles = {node.job_id: node.role for node in nodes}
    address = coordinator.address if isinstance(coordinator, Coordinator) else coordinator
    with contextlib.ExitStack() as stack:
        for sub_id, node in enumerate(nodes):
            base = tmp_path / f"node-{node.job_id}"
            sim = stack.enter_context(SimServer(base / "sim", pty=True, boot_time=0.05, boot_lines=4,
                                                rootfs=busybox_rootfs(base / "rootfs")))  # fmt: skip
            definition = sub_job(node, group, roles, sub_id, timeout)
            if group_size is not None:
                definition["protocols"]["lava-multinode"]["group_size"] = group_size
            (base / "job.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
            (base / "device.yaml").write_text(yaml.safe_dump(sim_device(sim, f"sim-{node.job_id}")))
            dispatcher = {"coordinator": address, **node.dispatcher}
            (base / "dispatcher.yaml").write_text(yaml.safe_dump(dispatcher))
            node.out = base / "out"
        try:
            for node in nodes:
                base = node.out.parent
                node.process = subprocess.Popen(
                    [sys.executable, "-m", "lava_dispatcher", "run", str(base / "job.yaml"),
                     "--device", str(base / "device.yaml"), "--job-id", node.job_id,
                     "--output-dir", str(node.out), "--dispatcher", str(base / "dispatcher.yaml")],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(),
                )  # fmt: skip
            for node in nodes:
                assert node.process is not None
                node.output, _ = node.process.communicate(timeout=150)
                node.code = node.process.returncode
        finally:
            for node in nodes:  # ours only, by PID
                if node.process is not None and node.process.poll() is None:
                    node.process.kill()
                    node.process.wait()
    return nodes


SERVER_STEPS = [
    "lava-send server-ready ipaddr=10.1.2.3",
    'lava-send ready ipaddr=10.1.2.3 greeting="hello world"',
    "lava-send round from=$(lava-self)",
    "lava-wait-all round",
    f"lava-test-case all-rounds --shell test \"$(grep -c ':from=' {CACHE})\" -eq 3",
    "lava-sync done",
    'lava-test-case group --shell test "$(lava-group | wc -l)" -eq 3',
    'lava-test-case role --shell test "$(lava-role)" = server',
    'lava-test-case self --shell test "$(lava-self)" = 5001',
]
CLIENT_STEPS = [
    "lava-wait ready",
    f"lava-test-case ready-ip --shell grep -qx 5001:ipaddr=10.1.2.3 {CACHE}",
    f"lava-test-case ready-greeting --shell grep -qx '5001:greeting=hello world' {CACHE}",
    "lava-send round from=$(lava-self)",
    "lava-wait-all round server",
    f"lava-test-case server-round --shell grep -qx 5001:from=5001 {CACHE}",
    "lava-wait-all round",
    f"lava-test-case all-rounds --shell test \"$(grep -c ':from=' {CACHE})\" -eq 3",
    "lava-sync done",
    'lava-test-case group-server --shell test "$(lava-group server)" = 5001',
    'lava-test-case clients --shell test "$(lava-group client | wc -l)" -eq 2',
    'lava-test-case role --shell test "$(lava-role)" = client',
    'lava-test-case roles --shell test "$(lava-role list | sort -u | tr "\\n" " ")" = "client server "',
]
#: the client's boot waits for the server's lava-send (from its test definition)
CLIENT_BOOT = {**BOOT, "protocols": {"lava-multinode": [{
    "action": "auto-login-action", "request": "lava-wait", "messageID": "server-ready",
    "message": {"ipaddr": "$ipaddr"}, "timeout": {"seconds": 60}}]}}  # fmt: skip
#: ... and a later action uses what it received
USE_IT = {"test": {"timeout": {"seconds": 30}, "interactive": [{
    "name": "use-ipaddr", "prompts": [PROMPT],
    "script": [{"name": "ipaddr", "command": 'echo "got ip" {ipaddr} | tr " " _',
                "successes": [{"message": r"got_ip_10\.1\.2\.3"}]}]}]}}  # fmt: skip


def test_a_group_of_three_sends_waits_and_syncs(tmp_path: Path, coordinator: Coordinator) -> None:
    server = Node("5001", "server", [{"deploy": {"to": "overlay"}}, {"boot": BOOT},
                                     definition("mn", SERVER_STEPS)])  # fmt: skip
    clients = [Node(job, "client", [{"deploy": {"to": "overlay"}}, {"boot": CLIENT_BOOT},
                                    USE_IT, definition("mn", CLIENT_STEPS)])
               for job in ("5002", "5003")]  # fmt: skip
    nodes = run_group(tmp_path, coordinator, [server, *clients])
    for node in nodes:
        assert node.code == 0, node.explain() + "\n" + coordinator.log()[-3000:]
        assert node.outcome()["result"] == "pass"
        failed = {case: result for case, result in node.cases().items() if result != "pass"}
        assert not failed, node.explain()
    assert {c: r for c, r in server.cases().items() if c.startswith("multinode-")} == {
        "multinode-send-server-ready": "pass",
        "multinode-send-ready": "pass",
        "multinode-send-round": "pass",
        "multinode-wait_all-round": "pass",
        "multinode-sync-done": "pass",
    }
    for client in clients:
        cases = client.cases()
        for case in ("multinode-wait-ready", "multinode-send-round", "multinode-wait_all-round",
                     "multinode-sync-done", "ready-ip", "ready-greeting", "server-round",
                     "all-rounds", "group-server", "clients", "role", "roles", "ipaddr"):  # fmt: skip
            assert cases.get(case) == "pass", (case, cases)
        # the boot's protocol request received the server's data and logged it
        assert client.logged_at("Setting namespace data key server-ready to {'ipaddr': '10.1.2.3'}")
        # the reply was typed to the DUT as LAVA types it
        assert client.logged_at(
            "<LAVA_WAIT_COMPLETE 5001:ipaddr=10.1.2.3 5001:greeting=hello world>"
        )
    assert server.logged_at("<LAVA_SYNC_COMPLETE>")


def test_a_node_that_never_arrives_fails_the_group_on_time(
    tmp_path: Path, coordinator: Coordinator
) -> None:
    """The only node of a group of two: group formation times out on the wall clock."""
    alone = Node("6001", "server", [{"deploy": {"to": "overlay"}}, {"boot": BOOT},
                                    definition("mn", ["lava-sync never"])],
                 dispatcher={"multinode_system_timeout": 3})  # fmt: skip
    (node,) = run_group(tmp_path, coordinator, [alone], group_size=2)
    assert node.code == 1, node.explain()
    outcome = node.outcome()
    assert outcome["error_type"] == "MultinodeTimeout", outcome
    assert "group_data" in outcome["error_msg"]
    waited = node.logged_at("protocol lava-multinode timed out") - node.logged_at(
        "lava-multinode: job 6001"
    )
    assert 3.0 <= waited < 3.5, waited


def test_a_silent_peer_times_a_wait_out(tmp_path: Path, coordinator: Coordinator) -> None:
    """The peer is in the group but never sends: lava-wait fails at the protocol timeout."""
    waiter = Node("6101", "client", [{"deploy": {"to": "overlay"}}, {"boot": BOOT},
                                     definition("mn", ["lava-wait never",
                                                       "lava-test-case after --result pass"])])  # fmt: skip
    silent = Node("6102", "server", [{"deploy": {"to": "overlay"}}, {"boot": BOOT},
                                     definition("mn", ["lava-test-case quiet --result pass"])])  # fmt: skip
    nodes = run_group(tmp_path, coordinator, [waiter, silent], timeout=3)
    assert silent.code == 0, silent.explain()
    assert waiter.code == 1, waiter.explain()
    outcome = waiter.outcome()
    assert outcome["error_type"] == "MultinodeTimeout", outcome
    assert "lava_wait never" in outcome["error_msg"]
    cases = waiter.cases()
    assert cases["multinode-wait-never"] == "fail"
    assert "after" not in cases  # the test shell stopped
    waited = waiter.logged_at("protocol lava-multinode timed out") - waiter.logged_at(
        "Received Multi_Node API <LAVA_WAIT>"
    )
    assert 3.0 <= waited < 3.5, waited
    assert nodes


def test_a_failed_essential_role_ends_the_group(tmp_path: Path, coordinator: Coordinator) -> None:
    server = Node("6201", "server", [{"deploy": {"to": "overlay"}}, {"boot": BOOT},
                                     definition("mn", ["lava-wait client-waiting",
                                                       "lava-test-raise the-server-broke"])],
                  protocol={"essential": True})  # fmt: skip
    client = Node("6202", "client", [{"deploy": {"to": "overlay"}}, {"boot": BOOT},
                                     definition("mn", ["lava-send client-waiting",
                                                       "lava-wait never"])])  # fmt: skip
    started = time.monotonic()
    run_group(tmp_path, coordinator, [server, client], timeout=120)
    assert time.monotonic() - started < 60  # not the 120 s protocol timeout
    assert server.code == 1 and client.code == 1, server.explain() + client.explain()
    assert server.outcome()["error_type"] == "Test"
    outcome = client.outcome()
    assert outcome["error_type"] == "Job", outcome
    assert (
        "job 6201 of essential role 'server' failed (Test: the-server-broke)"
        in outcome["error_msg"]
    )
    assert client.cases()["multinode-wait-never"] == "fail"
    ended = client.logged_at("aborted", "error") - server.logged_at(
        "essential role 'server' failed"
    )
    assert ended < 2.5, ended  # LAVA's coordinator: one poll_delay (1 s) at most


def test_a_bad_lava_send_key_is_refused(tmp_path: Path, lava_coordinator: Coordinator) -> None:
    """Refused on the DUT, with a message, and nothing sent: LAVA would have sent it."""
    lone = Node("6301", "solo", [{"deploy": {"to": "overlay"}}, {"boot": BOOT},
                                 definition("mn", ["lava-send bad my-key=1 || lava-test-case refused --result pass",
                                                   "lava-test-case after --result pass"])])  # fmt: skip
    (node,) = run_group(tmp_path, lava_coordinator, [lone])
    assert node.code == 0, node.explain()
    cases = node.cases()
    assert cases["refused"] == "pass" and cases["after"] == "pass", cases
    assert "multinode-send-bad" not in cases  # the dispatcher was never asked
    assert node.logged_at("lava-send: invalid key 'my-key' in 'my-key=1'", "target")
    assert "'request': 'lava_send'" not in lava_coordinator.log()  # nothing was sent
