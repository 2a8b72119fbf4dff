"""End-to-end helpers: real `lava-dispatch run` processes against simulated DUTs."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from lava_dispatcher.sim import SimServer, child_env

PROMPT = "root@sim:~# "
OUTPUT_FILES = ("logs.yaml", "results.yaml", "result.yaml", "description.yaml", "junit.xml")
FAST = {"boot_time": 0.05, "boot_lines": 8}


def dispatch_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "lava_dispatcher", *args]


def run_dispatch(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dispatch_argv(*args),
        capture_output=True,
        text=True,
        env={**child_env(), **(env or {})},
        timeout=timeout,
        check=False,
    )


def processes_naming(text: str) -> list[tuple[int, str]]:
    """Live (not zombie) processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append((int(entry.name), cmdline.strip()))
    return found


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def power_commands(sim: SimServer) -> dict[str, str]:
    return {
        "power_on": shlex.join(sim.power_command("on")),
        "power_off": shlex.join(sim.power_command("off")),
        "hard_reset": shlex.join(sim.power_command("reset")),
    }


def sim_device(tmp_path: Path, commands: dict[str, Any], **extra: Any) -> Path:
    device = {"extends": "sim", "hostname": "sim-test", "commands": commands, **extra}
    return write_yaml(tmp_path / "device.yaml", device)


def login_boot(**extra: Any) -> dict[str, Any]:
    block = {
        "method": "minimal",
        "auto_login": {"login_prompt": "login:", "username": "root"},
        "prompts": [PROMPT],
        "timeout": {"seconds": 30},
    }
    block.update(extra)
    return {"boot": block}


def interactive(steps: list[dict[str, Any]], timeout: float = 30, **extra: Any) -> dict[str, Any]:
    block = {
        "timeout": {"seconds": timeout},
        "interactive": [{"name": "checks", "prompts": [PROMPT], "script": steps}],
    }
    block.update(extra)
    return {"test": block}


def job(tmp_path: Path, actions: list[dict[str, Any]], job_timeout: int = 120) -> Path:
    definition = {
        "job_name": "e2e",
        "device_type": "sim",
        "visibility": "public",
        "timeouts": {"job": {"seconds": job_timeout}},
        "actions": actions,
    }
    return write_yaml(tmp_path / "job.yaml", definition)


def load_outputs(out: Path) -> dict[str, Any]:
    """Every output file, each loaded with yaml.safe_load (junit as text)."""
    loaded: dict[str, Any] = {}
    for name in OUTPUT_FILES:
        text = (out / name).read_text(encoding="utf-8")
        loaded[name] = text if name.endswith(".xml") else yaml.safe_load(text)
    return loaded


