"""Definitions numbered across test blocks (one stage each), git revision/branch/history,
job parameters reaching run.sh, and TESTEVENT records."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from lava_dispatcher.log import read_records
from lava_dispatcher.sim import SimServer

from .helpers import PROMPT, busybox_rootfs, dispatch, have_namespaces, job_definition

pytestmark = [pytest.mark.slow, have_namespaces]


def definition_file(version: str) -> str:
    return yaml.safe_dump({
        "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "versioned", "description": "d"},
        "params": {"GREETING": "default"},
        "run": {"steps": [
            f"lava-test-case version-{version} --result pass",
            'lava-test-case greeting-$GREETING --result pass',
            "lava-test-case no-git-dir --shell test ! -d .git",
            "lava-test-event 'checkpoint reached'",  # one argument, as LAVA's script wants
        ]},
    })


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_stages_git_revisions_and_parameters(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "def.yaml").write_text(definition_file("one"))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "def.yaml").write_text(definition_file("two"))
    git(repo, "commit", "-q", "-am", "two")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "def.yaml").write_text(definition_file("three"))
    git(repo, "commit", "-q", "-am", "three")
    git(repo, "checkout", "-q", "main")

    rootfs = busybox_rootfs(tmp_path / "rootfs")
    with SimServer(tmp_path / "sim", pty=True, boot_time=0.02, boot_lines=3, rootfs=rootfs) as sim:
        device = {"extends": "sim", "commands": {
            "connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}},
            "power_on": shlex.join(sim.power_command("on")),
            "power_off": shlex.join(sim.power_command("off"))}}
        actions = [
            {"deploy": {"to": "overlay"}},
            {"boot": {"method": "minimal", "prompts": [PROMPT],
                      "auto_login": {"login_prompt": "login:", "username": "root"},
                      "transfer_overlay": {"download_command": "wget -q", "unpack_command": "tar -C / -xzf"}}},
            {"test": {"definitions": [
                {"from": "git", "name": "pinned", "repository": str(repo), "path": "def.yaml",
                 "revision": first, "history": False, "parameters": {"GREETING": "hello"}}]}},
            {"test": {"definitions": [
                {"from": "git", "name": "branched", "repository": str(repo), "path": "def.yaml",
                 "branch": "feature"}]}},
        ]
        (tmp_path / "device.yaml").write_text(yaml.safe_dump(device))
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(job_definition(actions)))
        out = tmp_path / "out"
        proc = dispatch("run", str(tmp_path / "job.yaml"), "--device", str(tmp_path / "device.yaml"),
                        "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:]
    records = yaml.safe_load((out / "results.yaml").read_text())
    cases = {(r["definition"], r["case"]): r["result"] for r in records}
    # stage 0: the pinned revision, with the job's parameter, without .git
    assert cases[("0_pinned", "version-one")] == "pass"
    assert cases[("0_pinned", "greeting-hello")] == "pass"
    assert cases[("0_pinned", "no-git-dir")] == "pass"
    # stage 1: numbered after stage 0's definition, from the branch, with history
    assert cases[("1_branched", "version-three")] == "pass"
    assert cases[("1_branched", "greeting-default")] == "pass"
    assert cases[("1_branched", "no-git-dir")] == "fail"
    lava = {r["case"]: r for r in records if r["definition"] == "lava"}
    assert lava["0_pinned"]["commit_id"] == first
    assert lava["0_pinned"]["revision"] == first
    assert lava["1_branched"]["revision"] == "unspecified"
    events = [r["msg"] for r in read_records((out / "logs.yaml").read_text().splitlines()) if r["lvl"] == "event"]
    assert events == ["checkpoint reached", "checkpoint reached"]
