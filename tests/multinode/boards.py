"""Simulated boards for MultiNode jobs: device files, boot block, inline test definitions.

Each board is a `sim serve` daemon on a pty whose shell runs chrooted in its
own busybox root filesystem, so that /tmp/lava_multi_node_cache.txt (and any
file a test uses to steer the DUT) is that board's alone.
"""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path
from typing import Any

import yaml
from testshell.helpers import PROMPT, busybox_rootfs

from lava_dispatcher.sim import SimServer

CACHE = "/tmp/lava_multi_node_cache.txt"
BOOT = {
    "method": "minimal",
    "prompts": [PROMPT],
    "auto_login": {"login_prompt": "login:", "username": "root"},
    "transfer_overlay": {"download_command": "wget -q", "unpack_command": "tar -C / -xzf"},
    "timeout": {"minutes": 1},
}


def definition(name: str, steps: list[str], minutes: int = 2) -> dict[str, Any]:
    """A test block with one inline test definition running `steps`."""
    return {"test": {"timeout": {"minutes": minutes}, "definitions": [{
        "from": "inline", "name": name, "path": f"inline/{name}.yaml",
        "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": name,
                                    "description": "multinode"},
                       "run": {"steps": steps}}}]}}  # fmt: skip


def sim_device(sim: SimServer, hostname: str) -> dict[str, Any]:
    """The device dictionary of a simulated board on its pty."""
    return {
        "extends": "sim",
        "hostname": hostname,
        "commands": {
            "connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}},
            "power_on": shlex.join(sim.power_command("on")),
            "power_off": shlex.join(sim.power_command("off")),
            "hard_reset": shlex.join(sim.power_command("reset")),
        },
    }


def start_board(stack: contextlib.ExitStack, base: Path, hostname: str) -> tuple[Path, Path]:
    """A board in `base` (stopped when `stack` closes): its device file and its root."""
    rootfs = busybox_rootfs(base / "rootfs")
    sim = stack.enter_context(
        SimServer(base / "sim", pty=True, boot_time=0.05, boot_lines=4, rootfs=rootfs)
    )
    device = base / "device.yaml"
    device.write_text(yaml.safe_dump(sim_device(sim, hostname)))
    return device, rootfs
