"""The CLI faces of a job: lava-run, describe, user commands, secrets, retries,
bad input, and console garbage."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lava_dispatcher.log import read_records
from lava_dispatcher.sim import child_env, run_command

from .helpers import (
    OUTPUT_FILES,
    PROMPT,
    interactive,
    job,
    login_boot,
    power_commands,
    run_dispatch,
    sim_device,
    write_yaml,
)

ROOT = Path(__file__).resolve().parents[2]
STEP = [{"command": "echo ok=$((1+1))", "name": "ok", "successes": [{"message": "ok=2"}]}]


def process_device(tmp_path: Path, **knobs: object) -> Path:
    return sim_device(tmp_path, {"connect": shlex.join(run_command(boot_time=0.05, boot_lines=8, **knobs))})


@pytest.mark.slow
def test_lava_run_logs_to_stderr_in_lava_format(tmp_path: Path) -> None:
    device = process_device(tmp_path)
    definition = job(tmp_path, [login_boot(reset=False), interactive(STEP)])
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "lava-run"), "--job-id", "4242", "--output-dir", str(out),
         "--device", str(device), str(definition)],
        capture_output=True, text=True, env=child_env(), timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""
    records = [yaml.safe_load(line) for line in proc.stderr.splitlines()]
    assert all(set(r) >= {"dt", "lvl", "msg"} for r in records)
    assert records[-1]["msg"] == {"definition": "lava", "case": "job", "result": "pass"}
    for name in OUTPUT_FILES:
        assert (out / name).is_file()
    # the same records as the file, without the list prefix
    logged = read_records((out / "logs.yaml").read_text().splitlines())
    assert [r["msg"] for r in logged] == [r["msg"] for r in records]


def test_describe_prints_the_tree_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    device = sim_device(tmp_path, {"connect": f"touch {marker}", "power_on": f"touch {marker}"})
    definition = job(tmp_path, [login_boot(), interactive(STEP)])
    proc = run_dispatch("describe", str(definition), "--device", str(device))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "job timeout 00:02:00"
    assert any(line.startswith("1 minimal-boot (timeout 00:00:30") for line in lines)
    assert "    1.2.1 power-cycle (timeout 00:00:30)  power the device off then on" in lines
    assert any("3.1 power-off (timeout 00:00:10)" in line for line in lines)
    assert not marker.exists()
    as_yaml = yaml.safe_load(run_dispatch("describe", str(definition), "--device", str(device), "--yaml").stdout)
    assert [n["name"] for n in as_yaml["pipeline"]] == ["minimal-boot", "lava-test-interactive-retry", "finalize"]


@pytest.mark.slow
def test_user_commands_undo_and_secrets_are_masked(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    commands = {
        "connect": shlex.join(run_command(boot_time=0.05, boot_lines=8)),
        "users": {"relay": {"do": f"sh -c 'echo do >> {trace}'", "undo": f"sh -c 'echo undo >> {trace}'"}},
    }
    device = sim_device(tmp_path, commands)
    definition = yaml.safe_load(job(tmp_path, [
        login_boot(reset=False),
        {"command": {"name": "relay"}},
        interactive([{"command": "echo token=$API_TOKEN_VALUE", "name": "secret", "successes": [{"message": "token="}]}]),
    ]).read_text())
    definition["secrets"] = {"API_TOKEN": "hunter2-very-secret"}
    definition["actions"][2]["test"]["interactive"][0]["script"][0]["command"] = "echo token=hunter2-very-secret"
    write_yaml(tmp_path / "job.yaml", definition)
    out = tmp_path / "out"
    proc = run_dispatch("run", str(tmp_path / "job.yaml"), "--device", str(device), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert trace.read_text().split() == ["do", "undo"]
    log_text = (out / "logs.yaml").read_text()
    assert "hunter2-very-secret" not in log_text
    assert "token=[MASKED]" in log_text
    assert "hunter2-very-secret" not in proc.stdout


@pytest.mark.slow
def test_a_failed_attempt_is_retried(tmp_path: Path, sim_server) -> None:
    sim = sim_server()
    counter = tmp_path / "attempts"
    # the first reset fails (a flaky PDU), the second works
    flaky = (f"sh -c 'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; "
             f"[ $n -ge 1 ] || {{ echo PDU busy; exit 1; }}; exec \"$@\"' flaky-pdu {shlex.join(sim.power_command('reset'))}")
    commands = {"connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}},
                **power_commands(sim), "hard_reset": flaky}
    device = sim_device(tmp_path, commands)
    definition = job(tmp_path, [login_boot(failure_retry=2), interactive(STEP)])
    out = tmp_path / "out"
    proc = run_dispatch("run", str(definition), "--device", str(device), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:]
    messages = [str(r["msg"]) for r in read_records((out / "logs.yaml").read_text().splitlines())]
    assert any("minimal-boot failed: 1 of 2 attempts" in m and "PDU busy" in m for m in messages)
    assert any(m.startswith("Retrying: 1 minimal-boot") for m in messages)
    assert counter.read_text().strip() == "2"


def test_an_invalid_device_exits_2_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    device = write_yaml(tmp_path / "device.yaml", {
        "extends": "sim", "comands": {"connect": f"touch {marker}"}})
    definition = job(tmp_path, [login_boot(), interactive(STEP)])
    out = tmp_path / "out"
    proc = run_dispatch("run", str(definition), "--device", str(device), "--output-dir", str(out))
    assert proc.returncode == 2
    result = yaml.safe_load((out / "result.yaml").read_text())
    assert "comands" in result["error_msg"]
    assert not marker.exists()
    unknown = write_yaml(tmp_path / "other.yaml", {"extends": "no-such-type"})
    proc = run_dispatch("validate", str(definition), "--device", str(unknown))
    assert proc.returncode == 2
    assert "extends: got 'no-such-type'; expected a known device type" in proc.stderr


def test_a_method_the_device_lacks_is_refused_with_reasons(tmp_path: Path) -> None:
    device = process_device(tmp_path)
    definition = write_yaml(tmp_path / "job.yaml", {
        "job_name": "x", "device_type": "sim", "visibility": "public",
        "timeouts": {"job": {"minutes": 1}},
        "actions": [{"boot": {"method": "u-boot", "commands": "ramdisk", "prompts": [PROMPT]}}],
    })
    proc = run_dispatch("validate", str(definition), "--device", str(device))
    assert proc.returncode == 2
    assert "actions[0].boot: no boot strategy accepts boot method 'u-boot' (" in proc.stderr
    # every strategy says why it declined
    assert "qemu: method is 'u-boot', not 'qemu'" in proc.stderr
    assert "minimal: method is 'u-boot', not 'minimal'" in proc.stderr


@pytest.mark.slow
def test_garbled_console_never_crashes_the_dispatcher(tmp_path: Path) -> None:
    """Console garbage ends the job cleanly (pass or a clear error), never as a bug."""
    for seed in (1, 2, 3):
        device = process_device(tmp_path, garble_rate=0.05, drop_rate=0.02, seed=seed)
        definition = job(tmp_path, [login_boot(reset=False, timeout={"seconds": 5}), interactive(STEP, timeout=5)])
        out = tmp_path / f"out{seed}"
        proc = run_dispatch("run", str(definition), "--device", str(device), "--output-dir", str(out))
        assert proc.returncode in (0, 1), proc.stdout[-2000:]
        result = yaml.safe_load((out / "result.yaml").read_text())
        assert result.get("error_type") != "Bug", result
        yaml.safe_load((out / "logs.yaml").read_text())
