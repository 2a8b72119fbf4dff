"""Must-show 5: the example plugin, installed with pip, adds a boot method and a
device type; `lava-dispatch devices` lists it and a job using it runs on the sim."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lava_dispatcher.sim import SimServer, child_env

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plugin"
PROMPT = "root@sim:~# "


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Install the example plugin with pip into its own directory (not the venv)."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(EXAMPLE)],
        check=True, cwd=build, capture_output=True, text=True,
    )
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(target), env["PYTHONPATH"]])
    return env


def dispatch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lava_dispatcher", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_devices_lists_the_plugin_device_type(plugin_env: dict[str, str]) -> None:
    listing = dispatch(plugin_env, "devices", "--verbose")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines() if line.strip()}
    assert "button-board" in rows and "plugin example" in rows["button-board"]
    assert "built-in" in rows["sim"]
    assert any(line.split()[:2] == ["boot", "button-boot"] for line in listing.stdout.splitlines())


def test_without_the_plugin_the_device_type_is_unknown() -> None:
    listing = dispatch(child_env(), "devices")
    assert "button-board" not in listing.stdout


@pytest.mark.slow
def test_a_job_uses_the_plugin_boot_method(plugin_env: dict[str, str], tmp_path: Path) -> None:
    with SimServer(tmp_path / "sim", pty=True, boot_time=0.05, boot_lines=8) as sim:
        device = {
            "extends": "button-board",
            "hostname": "button-01",
            "commands": {
                "connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}},
                "power_on": shlex.join(sim.power_command("on")),
                "power_off": shlex.join(sim.power_command("off")),
            },
        }
        definition = {
            "job_name": "button boot",
            "device_type": "button-board",
            "visibility": "public",
            "timeouts": {"job": {"minutes": 2}},
            "actions": [
                {"boot": {"method": "button-boot", "prompts": [PROMPT],
                          "auto_login": {"login_prompt": "login:", "username": "root"},
                          "timeout": {"seconds": 30}}},
                {"test": {"timeout": {"seconds": 30}, "interactive": [
                    {"name": "check", "prompts": [PROMPT], "script": [
                        {"command": "echo $((2*21))", "name": "answer", "successes": [{"message": "42"}]}]}]}},
            ],
        }
        (tmp_path / "device.yaml").write_text(yaml.safe_dump(device))
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(definition))
        out = tmp_path / "out"
        described = dispatch(plugin_env, "describe", str(tmp_path / "job.yaml"), "--device", str(tmp_path / "device.yaml"))
        assert described.returncode == 0, described.stderr
        assert "1.2 press-button" in described.stdout
        run = dispatch(plugin_env, "run", str(tmp_path / "job.yaml"), "--device", str(tmp_path / "device.yaml"),
                       "--output-dir", str(out))
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr
        results = yaml.safe_load((out / "results.yaml").read_text())
        cases = {(r["definition"], r["case"]): r for r in results}
        assert cases[("lava", "press-button")]["result"] == "pass"
        assert cases[("0_check", "answer")]["result"] == "pass"
