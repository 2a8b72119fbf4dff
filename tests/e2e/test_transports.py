"""Must-show 3: one job (minimal boot + auto-login + interactive test) over each
console transport, writing all five output files."""

from __future__ import annotations

import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lava_dispatcher.sim import run_command

from .helpers import (
    OUTPUT_FILES,
    interactive,
    job,
    load_outputs,
    login_boot,
    power_commands,
    run_dispatch,
    sim_device,
)

STEPS = [
    {"command": "echo value=$((20+22))", "name": "arithmetic", "successes": [{"message": "value=42"}]},
    {"command": "uname -s", "name": "uname", "successes": [{"message": "Linux"}]},
    {"command": "false || echo rc=$?", "name": "exit-code", "successes": [{"message": "rc=1"}]},
]


def check_job_outputs(out: Path) -> None:
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), f"{name} missing"
    outputs = load_outputs(out)
    assert outputs["result.yaml"] == {"definition": "lava", "case": "job", "result": "pass"}
    records = outputs["logs.yaml"]
    assert isinstance(records, list) and all({"dt", "lvl", "msg"} <= set(r) for r in records)
    targets = [r["msg"] for r in records if r["lvl"] == "target"]
    assert any("value=42" in line for line in targets)
    cases = {(r["definition"], r["case"]): r["result"] for r in outputs["results.yaml"]}
    assert cases[("0_checks", "arithmetic")] == "pass"
    assert cases[("0_checks", "uname")] == "pass"
    assert cases[("0_checks", "exit-code")] == "pass"
    assert cases[("lava", "0_checks")] == "pass"
    assert cases[("lava", "job")] == "pass"
    names = [node["name"] for node in outputs["description.yaml"]["pipeline"]]
    assert names == ["minimal-boot", "lava-test-interactive-retry", "finalize"]
    suites = {s.get("name") for s in ET.fromstring(outputs["junit.xml"]).iter("testsuite")}
    assert {"0_checks", "lava"} <= suites


@pytest.mark.slow
def test_pty_through_pyserial(tmp_path, sim_server) -> None:
    sim = sim_server()
    commands = {
        "connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}},
        **power_commands(sim),
    }
    device = sim_device(tmp_path, commands)
    out = tmp_path / "out"
    proc = run_dispatch("run", str(job(tmp_path, [login_boot(), interactive(STEPS)])),
                        "--device", str(device), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_job_outputs(out)
    assert sim.status()["power"] == "off"  # finalize powered it off


@pytest.mark.slow
def test_tcp_through_connection_command(tmp_path, sim_server) -> None:
    sim = sim_server()
    commands = {"connect": f"telnet 127.0.0.1 {sim.tcp_port}", **power_commands(sim)}
    device = sim_device(tmp_path, commands)
    out = tmp_path / "out"
    proc = run_dispatch("run", str(job(tmp_path, [login_boot(), interactive(STEPS)])),
                        "--device", str(device), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_job_outputs(out)
    assert sim.status()["power"] == "off"


@pytest.mark.slow
def test_spawned_process(tmp_path) -> None:
    commands = {"connect": shlex.join(run_command(boot_time=0.05, boot_lines=8))}
    device = sim_device(tmp_path, commands)
    out = tmp_path / "out"
    proc = run_dispatch("run", str(job(tmp_path, [login_boot(reset=False), interactive(STEPS)])),
                        "--device", str(device), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_job_outputs(out)
