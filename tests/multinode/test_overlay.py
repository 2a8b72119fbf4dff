"""The MultiNode helpers as the overlay installs them: the group's data, read back by a shell."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lava_dispatcher import overlay
from lava_dispatcher.actions.deploy.overlay import multinode_injections

SHELLS = [s for s in ("sh", "busybox", "dash") if shutil.which(s)]


def install(tmp_path: Path, roles: dict[str, str], role: str, job_id: str) -> Path:
    bin_dir = tmp_path / "lava-1" / "bin"
    bin_dir.mkdir(parents=True)
    for script in sorted((overlay.SCRIPTS_DIR / "multi_node").glob("lava-*")):
        injected = multinode_injections(script.name, roles, role, job_id, "/lava-1")
        overlay.install_script(script, bin_dir, "/bin/sh", injected)
    return bin_dir


def run(shell: str, bin_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    command = [shell, "sh"] if shell == "busybox" else [shell]
    return subprocess.run([*command, str(bin_dir / argv[0]), *argv[1:]], capture_output=True,
                          text=True, check=False)  # fmt: skip


@pytest.mark.parametrize("shell", SHELLS)
def test_group_role_and_self(tmp_path: Path, shell: str) -> None:
    roles = {"1234": "server", "1235": "client", "1236": "client"}
    bin_dir = install(tmp_path, roles, "client", "1235")
    assert run(shell, bin_dir, "lava-group").stdout == "1234\tserver\n1235\tclient\n1236\tclient\n"
    assert run(shell, bin_dir, "lava-group", "client").stdout == "1235\n1236\n"
    assert run(shell, bin_dir, "lava-group", "nobody").returncode == 1
    assert run(shell, bin_dir, "lava-role").stdout == "client\n"
    assert run(shell, bin_dir, "lava-self").stdout == "1235\n"
    text = (bin_dir / "lava-wait").read_text()
    assert text.startswith("#!/bin/sh\n\nLAVA_TEST_BIN='/lava-1/bin'\n"
                           "LAVA_MULTI_NODE_CACHE='/tmp/lava_multi_node_cache.txt'\n"
                           "LAVA_MULTI_NODE_DEBUG='yes'\n")  # fmt: skip
    assert (
        (bin_dir / "lava-group")
        .read_text()
        .startswith(
            '#!/bin/sh\n\nLAVA_GROUP="\n1234\\tserver\\n1235\\tclient\\n1236\\tclient\\n"\n'
        )
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_odd_role_names_survive_the_quoting(tmp_path: Path, shell: str) -> None:
    odd = 'a"b$c`d\\e'
    bin_dir = install(tmp_path, {"1": odd, "2": "x'y"}, "x'y", "2")
    assert run(shell, bin_dir, "lava-group").stdout == f"1\t{odd}\n2\tx'y\n"
    assert run(shell, bin_dir, "lava-role").stdout == "x'y\n"
