"""Must-show 4: DUT faults end the job the right way, at the right time."""

from __future__ import annotations

import datetime
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lava_dispatcher.log import read_records
from lava_dispatcher.sim import child_env

from .helpers import (
    dispatch_argv,
    interactive,
    job,
    login_boot,
    power_commands,
    run_dispatch,
    sim_device,
)


def when(record: dict) -> float:
    return datetime.datetime.fromisoformat(record["dt"]).timestamp()


def records(out: Path) -> list[dict]:
    return read_records((out / "logs.yaml").read_text(encoding="utf-8").splitlines())


def result_of(out: Path) -> dict:
    return yaml.safe_load((out / "result.yaml").read_text())


@pytest.mark.slow
def test_a_hung_dut_ends_incomplete_at_its_deadline(tmp_path, sim_server) -> None:
    sim = sim_server(hang_at="login")
    device = sim_device(tmp_path, {"connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}}, **power_commands(sim)})
    out = tmp_path / "out"
    definition = job(tmp_path, [login_boot(timeout={"seconds": 3}), interactive([{"command": "true"}])])
    proc = run_dispatch("run", str(definition), "--device", str(device), "--output-dir", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = result_of(out)
    assert result["result"] == "fail"
    assert result["error_type"] == "Job"
    # the error names the action whose deadline expired and that deadline
    assert re.search(r"minimal-boot timed out after 3 seconds", result["error_msg"]), result
    assert "while running 1.3.1 login-action" in result["error_msg"]
    assert "the console showed last: 'sim login:'" in result["error_msg"]
    logged = records(out)
    start = next(r for r in logged if r["msg"] == "start: 1 minimal-boot (timeout 00:00:03) [common]")
    end = next(r for r in logged if str(r["msg"]).startswith("end: 1 minimal-boot"))
    overrun = when(end) - when(start) - 3.0
    assert 0 <= overrun < 1.0, f"ended {overrun:.3f}s after its deadline"
    # cleanup and finalize still ran: the board is off
    assert sim.status()["power"] == "off"


@pytest.mark.slow
def test_a_kernel_panic_during_a_test_ends_the_job_at_once(tmp_path, sim_server) -> None:
    sim = sim_server(panic_on="trigger-the-panic")
    device = sim_device(tmp_path, {"connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}}, **power_commands(sim)})
    out = tmp_path / "out"
    steps = [
        {"command": "echo before", "name": "before"},
        {"command": "echo trigger-the-panic; sleep 100", "name": "panics"},
        {"command": "echo after", "name": "after"},
    ]
    definition = job(tmp_path, [login_boot(), interactive(steps, timeout=120)])
    started = time.monotonic()
    proc = run_dispatch("run", str(definition), "--device", str(device), "--output-dir", str(out))
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert elapsed < 15, f"took {elapsed:.1f}s: the panic was not caught at once"
    result = result_of(out)
    assert "Kernel panic - not syncing" in result["error_msg"], result
    logged = records(out)
    panic_line = next(r for r in logged if r["lvl"] == "target" and "Kernel panic - not syncing" in r["msg"])
    error = next(r for r in logged if r["lvl"] == "exception" and "Kernel panic" in str(r["msg"]))
    assert when(error) - when(panic_line) < 1.0
    cases = {r["msg"]["case"]: r["msg"]["result"] for r in logged if r["lvl"] == "results"}
    assert cases["before"] == "pass" and cases["panics"] == "fail" and "after" not in cases


@pytest.mark.slow
def test_sigterm_cancels_within_two_seconds_with_power_off(tmp_path, sim_server) -> None:
    sim = sim_server()
    device = sim_device(tmp_path, {"connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}}, **power_commands(sim)})
    out = tmp_path / "out"
    steps = [{"command": "echo sleeping; sleep 100", "name": "long"}]
    definition = job(tmp_path, [login_boot(), interactive(steps, timeout=120)])
    proc = subprocess.Popen(
        dispatch_argv("run", str(definition), "--device", str(device), "--output-dir", str(out), "--plain"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env(),
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "sleeping" in line and '"lvl": "target"' in line:
                break
        else:
            pytest.fail("the job never reached the long command")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3
    assert elapsed < 2.0, f"cancel took {elapsed:.2f}s"
    result = result_of(out)
    assert result["error_type"] == "Canceled"
    logged = records(out)
    messages = [str(r["msg"]) for r in logged]
    assert any(m.startswith("start: 3.1 power-off") for m in messages)
    assert sim.status()["power"] == "off"


@pytest.mark.slow
def test_a_20mb_burst_during_a_host_command_loses_no_line(tmp_path, sim_server) -> None:
    sim = sim_server(burst_mb=20, burst_after=0.5)
    commands = {
        "connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}},
        **power_commands(sim),
        "users": {"busy-host": {"do": "sleep 3"}},
    }
    device = sim_device(tmp_path, commands)
    out = tmp_path / "out"
    definition = job(tmp_path, [
        login_boot(),
        {"command": {"name": "busy-host", "timeout": {"seconds": 30}}},
        interactive([{"command": None, "name": "burst-end", "wait_for_prompt": False,
                     "successes": [{"message": r"burst done: \d+ lines"}]}]),
    ])
    proc = run_dispatch("run", str(definition), "--device", str(device), "--output-dir", str(out), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    burst = re.compile(r'"lvl": "target", "msg": "burst line (\d+) ')
    command_window = re.compile(r'"msg": "(start|end): 2 user-command')
    numbers: list[int] = []
    stamps: list[str] = []
    window: dict[str, str] = {}
    with (out / "logs.yaml").open(encoding="utf-8") as logs:
        for line in logs:
            found = burst.search(line)
            if found:
                numbers.append(int(found.group(1)))
                stamps.append(line[9:41])
                continue
            marker = command_window.search(line)
            if marker:
                window[marker.group(1)] = line[9:41]
    expected = (20 * 1024 * 1024 + 79) // 80
    assert numbers == list(range(1, expected + 1)), "lines lost or out of order"
    assert stamps == sorted(stamps), "arrival timestamps go backwards"
    # the lines were logged as they arrived, while the host command ran
    assert window["start"] <= stamps[0] <= window["end"]
