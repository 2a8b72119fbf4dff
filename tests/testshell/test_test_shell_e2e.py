"""Must-show 1 (issue 3): a job with three test definitions (inline, git from a
local repository, url served on loopback) runs on the simulated DUT and gives
exactly the expected result records, with the overlay delivered in each of the
three ways: inside a ramdisk, by HTTP after boot, and through the console."""

from __future__ import annotations

import http.server
import io
import shlex
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lava_dispatcher.sim import SimServer

from .helpers import PROMPT, busybox_rootfs, dispatch, have_namespaces, job_definition

pytestmark = [pytest.mark.slow, have_namespaces]

INLINE = {
    "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke", "description": "every signal"},
    "run": {
        "steps": [
            "lava-test-case pass-case --result pass",
            "lava-test-case fail-case --result fail",
            "lava-test-case skip-case --result skip",
            "lava-test-case unknown-case --result unknown",
            "lava-test-case latency --result pass --measurement 12.5 --units ms",
            "lava-test-set start network",
            "lava-test-case ping --result pass",
            "lava-test-set stop",
            "lava-test-reference docs --result pass --reference https://example.invalid/doc",
            "lava-test-case shell-true --shell true",
            "lava-test-case shell-false --shell false",
        ]
    },
}
GIT_DEF = {
    "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "parsed", "description": "parse pattern"},
    "run": {"steps": ["printf 'alpha: OK\\nbeta: BAD\\n'"]},
    "parse": {
        "pattern": r"^(?P<test_case_id>\w+): (?P<result>OK|BAD)",
        "fixupdict": {"OK": "pass", "BAD": "fail"},
    },
}
URL_DEF = {
    "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "fetched", "description": "from a url"},
    "run": {"steps": ["lava-test-case url-case --result pass", "lava-test-case env-job-id --shell test -n \"$LAVA_JOB_ID\""]},
}

EXPECTED_CASES = {
    ("0_smoke", "pass-case"): {"result": "pass"},
    ("0_smoke", "fail-case"): {"result": "fail"},
    ("0_smoke", "skip-case"): {"result": "skip"},
    ("0_smoke", "unknown-case"): {"result": "unknown"},
    ("0_smoke", "latency"): {"result": "pass", "measurement": 12.5, "units": "ms"},
    ("0_smoke", "ping"): {"result": "pass", "set": "network"},
    ("0_smoke", "docs"): {"result": "pass", "reference": "https://example.invalid/doc"},
    ("0_smoke", "shell-true"): {"result": "pass"},
    ("0_smoke", "shell-false"): {"result": "fail"},
    ("1_parsed", "alpha"): {"result": "pass"},
    ("1_parsed", "beta"): {"result": "fail"},
    ("2_fetched", "url-case"): {"result": "pass"},
    ("2_fetched", "env-job-id"): {"result": "pass"},
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A git repository with one definition, and a tarball served on loopback."""
    base = tmp_path_factory.mktemp("sources")
    repo = base / "repo"
    repo.mkdir()
    (repo / "defs").mkdir()
    (repo / "defs" / "parsed.yaml").write_text(yaml.safe_dump(GIT_DEF))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for argv in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "tests"]):
        subprocess.run([*git, *argv], cwd=repo, check=True, capture_output=True)
    served = base / "served"
    served.mkdir()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = yaml.safe_dump(URL_DEF).encode()
        info = tarfile.TarInfo("defs/fetched.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (served / "tests.tar.gz").write_bytes(buffer.getvalue())

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"git": str(repo), "url": f"http://127.0.0.1:{server.server_address[1]}/tests.tar.gz"}
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def definitions_block(sources: dict[str, str]) -> dict[str, Any]:
    return {
        "test": {
            "timeout": {"minutes": 2},
            "definitions": [
                {"from": "inline", "name": "smoke", "path": "inline/smoke.yaml", "repository": INLINE},
                {"from": "git", "name": "parsed", "path": "defs/parsed.yaml", "repository": sources["git"]},
                {"from": "url", "name": "fetched", "path": "defs/fetched.yaml", "repository": sources["url"]},
            ],
        }
    }


def check_results(out: Path) -> None:
    records = yaml.safe_load((out / "results.yaml").read_text())
    result = yaml.safe_load((out / "result.yaml").read_text())
    assert result == {"definition": "lava", "case": "job", "result": "pass"}, result
    cases = {
        (r["definition"], r["case"]): {k: r[k] for k in ("result", "measurement", "units", "set", "reference") if k in r}
        for r in records
        if r["definition"] != "lava"
    }
    assert cases == EXPECTED_CASES
    lava = {r["case"]: r for r in records if r["definition"] == "lava"}
    for testrun in ("0_smoke", "1_parsed", "2_fetched"):
        assert lava[testrun]["result"] == "pass"
        assert lava[testrun]["uuid"].startswith("4242_")
    assert lava["1_parsed"]["commit_id"]
    assert lava["lava-test-shell"]["result"] == "pass"
    # starttc/endtc point at the signal lines of the --shell case in the log
    logs = (out / "logs.yaml").read_text().splitlines()
    shell_true = next(r for r in records if r["case"] == "shell-true")
    assert "<LAVA_SIGNAL_STARTTC shell-true>" in logs[shell_true["starttc"]]
    assert "<LAVA_SIGNAL_ENDTC shell-true>" in logs[shell_true["endtc"]]


def run_job(tmp_path: Path, device: dict[str, Any], actions: list[dict[str, Any]]) -> Path:
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(device))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job_definition(actions)))
    out = tmp_path / "out"
    proc = dispatch("run", str(tmp_path / "job.yaml"), "--device", str(tmp_path / "device.yaml"),
                    "--output-dir", str(out), "--job-id", "4242")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out


def sim_device(sim: SimServer, **extra: Any) -> dict[str, Any]:
    return {
        "extends": "sim",
        "hostname": "sim-ts",
        "commands": {
            "connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}},
            "power_on": shlex.join(sim.power_command("on")),
            "power_off": shlex.join(sim.power_command("off")),
            "hard_reset": shlex.join(sim.power_command("reset")),
        },
        **extra,
    }


BOOT = {"method": "minimal", "prompts": [PROMPT], "auto_login": {"login_prompt": "login:", "username": "root"},
        "timeout": {"minutes": 1}}


def test_overlay_in_a_ramdisk(tmp_path: Path, sources: dict[str, str]) -> None:
    from lava_dispatcher.sim.rootfs import build_busybox_initramfs

    initramfs = build_busybox_initramfs(tmp_path / "initramfs.cpio.gz", compression="gz")
    with SimServer(tmp_path / "sim", pty=True, boot_time=0.05, boot_lines=4) as sim:
        device = sim_device(sim, actions={"deploy": {"methods": {"flasher": {
            "commands": [shlex.join(sim.flash_command("{RAMDISK}"))]}}}})
        deploy = {"deploy": {"to": "flasher", "images": {"ramdisk": {
            "url": initramfs.as_uri(), "format": "cpio.newc", "overlays": {"lava": True}}}}}
        out = run_job(tmp_path, device, [deploy, {"boot": BOOT}, definitions_block(sources)])
    check_results(out)


@pytest.mark.parametrize("method", ["http", "console"])
def test_overlay_transferred_after_boot(tmp_path: Path, sources: dict[str, str], method: str) -> None:
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    with SimServer(tmp_path / "sim", pty=True, boot_time=0.05, boot_lines=4, rootfs=rootfs) as sim:
        transfer: dict[str, Any] = {"unpack_command": "tar -C / -xzf"}
        if method == "http":
            transfer["download_command"] = "wget -q"
        else:
            transfer["transfer_method"] = "console"
        boot = {**BOOT, "transfer_overlay": transfer}
        out = run_job(tmp_path, sim_device(sim), [{"deploy": {"to": "overlay"}}, {"boot": boot}, definitions_block(sources)])
    check_results(out)
    unpack = yaml.safe_load((out / "results.yaml").read_text())
    assert any(r["case"] == "overlay-unpack" and r["result"] == "pass" for r in unpack)



def test_an_interactive_test_after_a_test_shell_reads_its_own_output(tmp_path: Path) -> None:
    """The prompt the shell prints after lava-test-runner exits is consumed by the test
    shell: the interactive test that follows must not take it for its command's answer."""
    rootfs = busybox_rootfs(tmp_path / "rootfs")
    shell_block = {"test": {"timeout": {"minutes": 1}, "definitions": [{
        "from": "inline", "name": "first", "path": "inline/first.yaml",
        "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": "first",
                                    "description": "then interactive"},
                       "run": {"steps": ["lava-test-case one --result pass"]}}}]}}  # fmt: skip
    interactive = {"test": {"timeout": {"seconds": 30}, "interactive": [{
        "name": "after", "prompts": [PROMPT],
        "script": [{"name": "sum", "command": "echo sum=$((40+2))",
                    "successes": [{"message": "sum=42"}]}]}]}}  # fmt: skip
    with SimServer(tmp_path / "sim", pty=True, boot_time=0.05, boot_lines=4, rootfs=rootfs) as sim:
        boot = {**BOOT, "transfer_overlay": {"download_command": "wget -q", "unpack_command": "tar -C / -xzf"}}
        out = run_job(tmp_path, sim_device(sim), [{"deploy": {"to": "overlay"}}, {"boot": boot},
                                                  shell_block, interactive])  # fmt: skip
    results = {(r["definition"], r["case"]): r["result"] for r in yaml.safe_load((out / "results.yaml").read_text())}
    assert results[("0_first", "one")] == "pass"
    assert results[("1_after", "sum")] == "pass", results
