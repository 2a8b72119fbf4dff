"""The distro variants, installed over the generic scripts as the dispatcher does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .dut import (
    SCRIPTS,
    Overlay,
    Shell,
    TestDef,
    build_overlay,
    run_runner,
    signals,
    uuid_of,
    write_stage,
)

DISTROS = sorted(p.name for p in (SCRIPTS / "distro").iterdir() if p.is_dir())
INSTALLERS = sorted(p.parent.name for p in (SCRIPTS / "distro").glob("*/lava-install-packages"))


def _fake_tool(bin_dir: Path, name: str, log: Path, status: int = 0) -> None:
    """A stand-in package manager that logs its arguments (and DEBIAN_FRONTEND)."""
    tool = bin_dir / name
    tool.write_text(
        f'#!/bin/sh\necho "{name} $* [${{DEBIAN_FRONTEND:-}}]" >> {log}\nexit {status}\n'
    )
    tool.chmod(0o755)


@pytest.mark.parametrize("distro", INSTALLERS)
def test_install_without_package_manager_says_what_it_would_run(
    shell: Shell, tmp_path: Path, distro: str
) -> None:
    overlay = build_overlay(tmp_path, shell, distro=distro)
    # PATH holds only the overlay: no package manager anywhere.
    proc = overlay.run("lava-install-packages", "pkg-one", "pkg-two", path=str(overlay.bin))
    assert proc.returncode == 127, proc.stdout + proc.stderr
    assert "would have run" in proc.stdout
    assert "pkg-one pkg-two" in proc.stdout


@pytest.mark.parametrize("distro", INSTALLERS)
def test_install_with_nothing_to_install(shell: Shell, tmp_path: Path, distro: str) -> None:
    overlay = build_overlay(tmp_path, shell, distro=distro)
    proc = overlay.run("lava-install-packages", path=str(overlay.bin))
    assert (proc.returncode, proc.stdout) == (0, "")


def test_debian_install_runs_apt_get(shell: Shell, tmp_path: Path) -> None:
    overlay = build_overlay(tmp_path, shell, distro="debian")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    log = tmp_path / "apt.log"
    _fake_tool(fakes, "apt-get", log)
    proc = overlay.run(
        "lava-install-packages", "git", "curl", path=f"{overlay.bin}:{fakes}:{overlay.system_path}"
    )
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == [
        "apt-get update -q [noninteractive]",
        "apt-get install -y -q git curl [noninteractive]",
    ]


def test_failed_install_is_retried_then_fails(shell: Shell, tmp_path: Path) -> None:
    overlay = build_overlay(tmp_path, shell, distro="archlinux")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    log = tmp_path / "pacman.log"
    _fake_tool(fakes, "pacman", log, status=3)
    proc = overlay.run(
        "lava-install-packages",
        "vim",
        path=f"{overlay.bin}:{fakes}:{overlay.system_path}",
        env={"LAVA_INSTALL_RETRIES": "2", "LAVA_INSTALL_RETRY_DELAY": "0"},
    )
    assert proc.returncode == 3
    assert log.read_text().splitlines() == ["pacman -Syu --noprogressbar --noconfirm vim []"] * 3
    assert proc.stdout.count("failed with status 3") == 2


def test_fedora_prefers_dnf(shell: Shell, tmp_path: Path) -> None:
    overlay = build_overlay(tmp_path, shell, distro="fedora")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    log = tmp_path / "rpm.log"
    _fake_tool(fakes, "dnf", log)
    _fake_tool(fakes, "yum", log)
    proc = overlay.run(
        "lava-install-packages", "gcc", path=f"{overlay.bin}:{fakes}:{overlay.system_path}"
    )
    assert proc.returncode == 0
    assert log.read_text().splitlines() == ["dnf -e 0 -y -q install gcc []"]


def test_install_sh_uses_the_distro_helpers(shell: Shell, tmp_path: Path) -> None:
    """install.sh as the dispatcher writes it for deps, through the runner, with a failing apt-get."""
    overlay = build_overlay(tmp_path, shell, distro="debian")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    _fake_tool(fakes, "apt-get", tmp_path / "apt.log", status=100)
    deps_only = TestDef(name="deps", deps=["libfoo"], steps=["lava-test-case ran --result pass"])
    stage = write_stage(overlay, 0, [deps_only])
    proc = run_runner(
        overlay,
        stage,
        env={"PATH": f"{fakes}:{overlay.system_path}", "LAVA_INSTALL_RETRIES": "0"},
    )
    assert signals(proc.stdout) == ["<LAVA_TEST_RUNNER INSTALL_FAIL>", "<LAVA_TEST_RUNNER EXIT>"]
    assert uuid_of(stage, "0_deps")


@pytest.mark.parametrize("distro", ["debian", "ubuntu", "apertis"])
def test_debian_family_list_installed_packages(shell: Shell, tmp_path: Path, distro: str) -> None:
    overlay = build_overlay(tmp_path, shell, distro=distro)
    missing = overlay.run("lava-installed-packages", path=str(overlay.bin))
    assert missing.returncode == 127 and "dpkg-query" in missing.stdout
    if shutil.which("dpkg-query", path=overlay.system_path) is None:
        pytest.skip("dpkg-query is not on this system's PATH")
    proc = overlay.run("lava-installed-packages")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines and all(line.startswith("package: ") and " : " in line for line in lines)


def test_debian_add_sources_and_keys_without_tools(shell: Shell, tmp_path: Path) -> None:
    overlay = build_overlay(tmp_path, shell, distro="debian")
    sources = overlay.run("lava-add-sources", "ppa:team/tools", path=str(overlay.bin))
    assert sources.returncode == 0 and "add-apt-repository -y ppa:team/tools" in sources.stdout
    keys = overlay.run("lava-add-keys", "0x1234ABCD", path=str(overlay.bin))
    assert keys.returncode == 0 and "--recv-keys 0x1234ABCD" in keys.stdout


@pytest.mark.parametrize("distro", DISTROS)
def test_os_build_of_every_distro_runs(shell: Shell, tmp_path: Path, distro: str) -> None:
    overlay = build_overlay(tmp_path, shell, distro=distro)
    proc = overlay.run("lava-os-build")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_debian_os_build_on_this_host(shell: Shell, tmp_path: Path) -> None:
    if not Path("/etc/debian_version").exists():
        pytest.skip("not a Debian host")
    overlay = build_overlay(tmp_path, shell, distro="debian")
    proc = overlay.run("lava-os-build")
    assert proc.stdout.strip() and not proc.stdout.startswith("Description:")


def test_android_runner(shell: Shell, tmp_path: Path) -> None:
    overlay: Overlay = build_overlay(tmp_path, shell, distro="android")
    stage = write_stage(
        overlay, 0, [TestDef(name="droid", steps=["lava-test-case a --result pass"])]
    )
    lock = tmp_path / "runner.lck"
    proc = run_runner(overlay, stage, env={"LCK": str(lock)})
    uuid = uuid_of(stage, "0_droid")
    assert signals(proc.stdout) == [
        f"<LAVA_SIGNAL_STARTRUN 0_droid {uuid}>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass>",
        f"<LAVA_SIGNAL_ENDRUN 0_droid {uuid}>",
        "<LAVA_TEST_RUNNER EXIT>",
    ]
    assert lock.exists()
    # Once per boot: the lock makes a second run silent.
    write_stage(overlay, 1, [TestDef(name="again", steps=["true"])])
    again = run_runner(overlay, overlay.root / "1", env={"LCK": str(lock)})
    assert (again.returncode, again.stdout) == (0, "")


#: a device's basic tools, without any package manager
BASIC_TOOLS = (
    "awk",
    "cat",
    "cut",
    "dd",
    "grep",
    "head",
    "id",
    "ls",
    "mkdir",
    "rm",
    "sed",
    "tee",
    "tr",
)
#: exit status of each kind of distro helper when its package manager is missing
WITHOUT_TOOLS = {
    "lava-install-packages": 127,
    "lava-installed-packages": 127,
    "lava-add-keys": 0,
    "lava-add-sources": 0,
}


@pytest.mark.parametrize(
    "script",
    sorted(
        (p for p in (SCRIPTS / "distro").glob("*/lava-*") if p.name in WITHOUT_TOOLS),
        key=lambda p: (p.parent.name, p.name),
    ),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_every_distro_helper_copes_without_its_tools(
    shell: Shell, tmp_path: Path, script: Path
) -> None:
    overlay = build_overlay(tmp_path, shell, distro=script.parent.name)
    if shell.argv[0].endswith("busybox") and script.name == "lava-installed-packages":
        applets = subprocess.run(
            [shell.argv[0], "--list"], capture_output=True, text=True, check=True
        )
        if script.parent.name in ("centos", "fedora") and "rpm" in applets.stdout.split():
            pytest.skip("this busybox has an rpm applet, which its sh finds even outside PATH")
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in BASIC_TOOLS:
        found = shutil.which(name, path=overlay.system_path)
        assert found, name
        (tools / name).symlink_to(found)
    proc = overlay.run(script.name, "some-package", path=f"{overlay.bin}:{tools}")
    expected = WITHOUT_TOOLS[script.name]
    if script.parent.name == "slackware" and script.name == "lava-installed-packages":
        expected = 0  # reads /var/log/packages: nothing there, nothing listed
    assert proc.returncode == expected, proc.stdout + proc.stderr
    assert proc.stderr == ""
