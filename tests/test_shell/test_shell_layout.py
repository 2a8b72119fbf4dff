"""The shape of lava_dispatcher/test_shell: names the dispatcher relies on, #! lines, shellcheck."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .dut import SCRIPTS, all_script_files

GENERIC = {
    "lava-add-keys",
    "lava-add-sources",
    "lava-background-process-start",
    "lava-background-process-stop",
    "lava-common-functions",
    "lava-echo-ipv4",
    "lava-install-packages",
    "lava-installed-packages",
    "lava-os-build",
    "lava-probe-channel",
    "lava-probe-ip",
    "lava-target-ip",
    "lava-target-mac",
    "lava-target-storage",
    "lava-test-case",
    "lava-test-event",
    "lava-test-feedback",
    "lava-test-raise",
    "lava-test-reference",
    "lava-test-runner",
    "lava-test-set",
    "lava-test-shell",
}
MULTI_NODE = {
    "lava-echo-config",
    "lava-group",
    "lava-multi-node.lib",
    "lava-role",
    "lava-self",
    "lava-send",
    "lava-start-vms",
    "lava-sync",
    "lava-wait",
    "lava-wait-all",
    "lava-wait-for-vms",
}
PACKAGES = {"lava-install-packages", "lava-installed-packages"}
APT = PACKAGES | {"lava-os-build", "lava-add-keys", "lava-add-sources"}
DISTRO = {
    "android": {"lava-test-runner"},
    "apertis": APT,
    "archlinux": PACKAGES | {"lava-os-build"},
    "centos": PACKAGES | {"lava-os-build"},
    "debian": APT,
    "fedora": PACKAGES | {"lava-os-build"},
    "oe": PACKAGES,
    "slackware": PACKAGES | {"lava-os-build"},
    "ubuntu": APT,
}


def test_generic_and_multinode_scripts() -> None:
    assert {p.name for p in SCRIPTS.glob("lava-*")} == GENERIC
    assert {p.name for p in (SCRIPTS / "multi_node").glob("lava-*")} == MULTI_NODE


def test_distro_overrides() -> None:
    found = {
        d.name: {p.name for p in d.glob("lava-*")}
        for d in (SCRIPTS / "distro").iterdir()
        if d.is_dir()
    }
    assert found == DISTRO
    for names in DISTRO.values():
        assert names <= GENERIC, "a distro script overrides a generic one of the same name"


def test_every_script_starts_with_bin_sh_and_is_plain_ascii() -> None:
    for path in all_script_files():
        data = path.read_bytes()
        assert data.startswith(b"#!/bin/sh\n"), path
        assert b"\r" not in data and data.isascii(), path
        assert data.endswith(b"\n"), path


def test_readme_documents_every_script() -> None:
    readme = (SCRIPTS / "README.md").read_text(encoding="utf-8")
    for name in sorted(GENERIC | MULTI_NODE):
        # as `name` or at the start of a usage such as `name ARG...`
        assert re.search(rf"`{re.escape(name)}[` ]", readme), name


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_posix_sh() -> None:
    files = [str(p) for p in all_script_files()]
    proc = subprocess.run(
        ["shellcheck", "-s", "sh", *files], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
