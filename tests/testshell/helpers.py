"""Helpers for the test-shell tests: jobs, the dispatcher CLI, a busybox root filesystem."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lava_dispatcher.sim import child_env

PROMPT = "root@sim:~# "


def _namespaces_usable() -> str:
    """Why a chrooted, PID-namespaced simulated DUT cannot run here ('' if it can)."""
    if shutil.which("busybox") is None:
        return "busybox (busybox-static) is not installed"
    if shutil.which("unshare") is None:
        return "util-linux unshare is not installed"
    if os.geteuid() != 0:
        probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True, check=False)
        if probe.returncode != 0:
            return "not root and user namespaces are not available"
    return ""


have_namespaces = pytest.mark.skipif(bool(_namespaces_usable()), reason=_namespaces_usable() or "ok")


def busybox_rootfs(dest: Path) -> Path:
    from lava_dispatcher.sim.rootfs import build_busybox_rootfs

    return build_busybox_rootfs(dest)


def dispatch(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lava_dispatcher", *args],
        capture_output=True, text=True, env=child_env(), timeout=timeout, check=False,
    )


def job_definition(actions: list[dict[str, Any]], minutes: int = 5) -> dict[str, Any]:
    return {
        "job_name": "test shell",
        "device_type": "sim",
        "visibility": "public",
        "timeouts": {"job": {"minutes": minutes}},
        "actions": actions,
    }
