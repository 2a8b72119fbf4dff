"""Issue 6's must-shows 1 and 2 on real Linux: a server and a client QEMU (Debian kernel,
busybox initramfs) as one MultiNode group, run with one command.

* The server makes a random token on its DUT and sends it; the client
  receives it twice: in a protocol request at the start of its `execute-qemu`
  action (its QEMU does not start before the server's test sends), whose
  `$token` is logged and used by a later interactive test, and with
  `lava-wait` in its test definition, written to the cache file. Both sides
  record the token as a test case name, so the test checks that what the
  client got is what the server's DUT made.
* send/wait, wait-all (with and without a role) and sync, each a passing
  `multinode-*` case.
* The same submission passes with our coordinator (started by the group run)
  and with Debian's lava-coordinator (LAVA's own), proving wire compatibility.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from coordinator.helpers import LavaCoordinatorProcess, require_lava_coordinator

from lava_dispatcher.sim import child_env

from .test_qemu_jobs import PROMPT, published

pytestmark = pytest.mark.slow

CACHE = "/tmp/lava_multi_node_cache.txt"
TOKEN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SERVER = [
    "token=$(cat /proc/sys/kernel/random/uuid)",
    "lava-send token value=$token kernel=$(uname -r)",
    "lava-test-case made-$token --result pass",
    "lava-wait client-up",
    f"lava-test-case client-ip --shell grep -q '^101:ip=' {CACHE}",
    "lava-send round from=$(lava-self)",
    "lava-sync sent-round",
    "lava-wait-all round",
    f"lava-test-case all-rounds --shell test \"$(grep -c ':from=' {CACHE})\" -eq 2",
    "lava-sync done",
]
# LAVA's coordinator answers a wait-all for a role before that role has sent
# (lava-internals.md §6.3), so the client asks only after a sync that follows
# the server's send: the same steps then pass with both coordinators.
CLIENT = [
    "lava-wait token",
    f"lava-test-case got-$(sed -n 's/^100:value=//p' {CACHE}) --result pass",
    f"lava-test-case same-kernel --shell grep -qx \"100:kernel=$(uname -r)\" {CACHE}",
    "lava-send client-up ip=$(hostname)",
    "lava-send round from=$(lava-self)",
    "lava-sync sent-round",
    "lava-wait-all round server",
    f"lava-test-case server-round --shell grep -qx 100:from=100 {CACHE}",
    "lava-wait-all round",
    f"lava-test-case all-rounds --shell test \"$(grep -c ':from=' {CACHE})\" -eq 2",
    "lava-sync done",
]


def inline_test(name: str, steps: list[str]) -> dict[str, Any]:
    return {"test": {"role": [name], "timeout": {"minutes": 5}, "definitions": [{
        "from": "inline", "name": name, "path": f"inline/{name}.yaml",
        "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": name,
                                    "description": "multinode on QEMU"},
                       "run": {"steps": steps}}}]}}  # fmt: skip


def submission(kernel_url: str, kernel_sum: str, initrd_url: str, initrd_sum: str) -> dict[str, Any]:
    from . import images

    boot: dict[str, Any] = {"method": "qemu", "media": "tmpfs", "timeout": {"minutes": 8},
                            "prompts": [PROMPT],
                            "auto_login": {"login_prompt": "login:", "username": "root"}}  # fmt: skip
    return {
        "job_name": "qemu client-server",
        "visibility": "public",
        "priority": "medium",
        "timeouts": {"job": {"minutes": 20}, "action": {"minutes": 8}},
        "protocols": {"lava-multinode": {
            # as on LAVA's server, the job context comes from the role
            "roles": {"server": {"device_type": "qemu", "count": 1, "context": {"arch": "amd64"}},
                      "client": {"device_type": "qemu", "count": 1, "context": {"arch": "amd64"}}},
            "timeout": {"minutes": 6},
        }},
        "actions": [
            {"deploy": {"role": ["server", "client"], "to": "tmpfs", "timeout": {"minutes": 5},
                        "images": {
                "kernel": {"url": kernel_url, "sha256sum": kernel_sum,
                           "image_arg": f"-kernel {{kernel}} -append '{images.kernel_append('amd64')}'"},
                "initrd": {"url": initrd_url, "sha256sum": initrd_sum, "compression": "gz",
                           "format": "cpio.newc", "overlays": {"lava": True},
                           "image_arg": "-initrd {initrd}"}}}},
            {"boot": {**boot, "role": ["server"]}},
            # the client's QEMU starts only once the server's DUT has sent its token
            {"boot": {**boot, "role": ["client"], "protocols": {"lava-multinode": [{
                "action": "execute-qemu", "request": "lava-wait", "messageID": "token",
                "message": {"value": "$value"}, "timeout": {"minutes": 6}}]}}},
            # ... and a later action uses what the request received
            {"test": {"role": ["client"], "timeout": {"minutes": 2}, "interactive": [{
                "name": "use-token", "prompts": [PROMPT],
                "script": [{"name": "token", "command": "echo sum=$((40+2)) token={value}",
                            "successes": [{"message": "sum=42 token=[0-9a-f]{8}-"}]}]}]}},
            inline_test("server", SERVER),
            inline_test("client", CLIENT),
        ],
    }


def run_group(tmp_path: Path, definition: dict[str, Any], *extra: str) -> tuple[int, str, Path]:
    job = tmp_path / "submission.yaml"
    job.write_text(yaml.safe_dump(definition, sort_keys=False))
    device = tmp_path / "qemu.yaml"
    device.write_text(yaml.safe_dump({"extends": "qemu", "hostname": "qemu-mn"}))
    dispatcher = tmp_path / "dispatcher.yaml"
    dispatcher.write_text(yaml.safe_dump({"download_cache": str(tmp_path / "cache")}))
    out = tmp_path / "out"
    # one command for the whole group; the group runner ends its own sub-jobs
    proc = subprocess.run(
        [sys.executable, "-m", "lava_dispatcher", "run", str(job),
         "--device", f"server={device}", "--device", f"client={device}",
         "--dispatcher", str(dispatcher), "--job-id", "100", "--output-dir", str(out), *extra],
        capture_output=True, text=True, env=child_env(), timeout=1500, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr, out


def cases(out: Path, name: str) -> dict[str, str]:
    results = yaml.safe_load((out / name / "results.yaml").read_text())
    return {r["case"]: r["result"] for r in results if r["definition"] != "lava"}


def check(code: int, output: str, out: Path) -> None:
    assert code == 0, output[-8000:]
    server, client = cases(out, "100.0"), cases(out, "100.1")
    for name, got in (("100.0", server), ("100.1", client)):
        assert yaml.safe_load((out / name / "result.yaml").read_text())["result"] == "pass"
        failed = {case: result for case, result in got.items() if result != "pass"}
        assert not failed, (name, failed)
    # the token the server's DUT made is the one the client's DUT received
    (made,) = [c.removeprefix("made-") for c in server if c.startswith("made-")]
    assert TOKEN.fullmatch(made), made
    assert client.get(f"got-{made}") == "pass", client
    for case in ("multinode-send-token", "multinode-wait-client-up", "client-ip",
                 "multinode-send-round", "multinode-wait_all-round", "all-rounds",
                 "multinode-sync-done"):  # fmt: skip
        assert server.get(case) == "pass", (case, server)
    for case in ("multinode-wait-token", "same-kernel", "multinode-send-client-up",
                 "multinode-wait_all-round", "server-round", "all-rounds",
                 "multinode-sync-done", "token"):  # fmt: skip
        assert client.get(case) == "pass", (case, client)
    # must-show 2: the request at the start of execute-qemu received the token,
    # the log shows it, and the interactive test typed it
    logs = (out / "100.1" / "logs.yaml").read_text()
    assert f"Setting namespace data key token to {{'value': '{made}'}}" in logs
    assert f"sum=42 token={made}" in logs  # what the DUT printed, not the typed command
    waited = logs.index("Setting namespace data key token")
    assert waited < logs.index("qemu-system"), "the client's QEMU started before the token came"


def test_a_qemu_server_and_client_pass_as_one_group(
    tmp_path: Path, qemu_images: Any, image_server: Any
) -> None:
    definition = submission(*published(image_server, qemu_images, "amd64"))
    code, output, out = run_group(tmp_path, definition)
    check(code, output, out)
    assert "coordinator 127.0.0.1:" in output


def test_the_same_group_passes_with_lavas_coordinator(
    tmp_path: Path, qemu_images: Any, image_server: Any
) -> None:
    require_lava_coordinator()
    definition = submission(*published(image_server, qemu_images, "amd64"))
    lava = LavaCoordinatorProcess(tmp_path)
    try:
        host, port = lava.start()
        code, output, out = run_group(tmp_path, definition, "--coordinator", f"{host}:{port}")
        check(code, output, out)
        assert "lava_wait_all" in lava.log()  # LAVA's coordinator did the work
        assert lava.process is not None and lava.process.poll() is None, lava.log()[-3000:]
    finally:
        lava.stop()
