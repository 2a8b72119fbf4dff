"""The overlay's files: run.sh, install.sh, environment, helper scripts, the tarball."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from lava_dispatcher import overlay

TESTDEF = {
    "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke", "description": "d"},
    "params": {"LOOPS": 3, "NAME": None},
    "install": {
        "deps": ["curl"],
        "deps-debian": ["procps"],
        "steps": ["echo installing"],
        "keys": ["key1"],
        "sources": ["http://example.invalid/repo"],
    },
    "run": {"steps": ["lava-test-case one --result pass", "lava-test-case two --shell test $1 = x", None]},
}


def test_run_sh_has_lava_shape() -> None:
    text = overlay.render_run_sh(
        TESTDEF, {"parameters": {"LOOPS": 5, "QUOTE": "it's"}}, testrun_id="0_smoke", test_dir="/lava-9/0/tests/0_smoke"
    )
    lines = text.splitlines()
    assert lines[:4] == [
        "###default parameters from test definition###",
        "LOOPS='3'",
        "NAME=''",
        "######",
    ]
    assert lines[4:8] == ["###test parameters from job submission###", "LOOPS='5'", "QUOTE='it'\"'\"'s'", "######"]
    assert lines[8:14] == [
        "set -e",
        "set -x",
        "export TESTRUN_ID=0_smoke",
        "cd /lava-9/0/tests/0_smoke",
        'UUID="$(cat uuid)"',
        "set +x",
    ]
    assert 'echo "<LAVA_SIGNAL_STARTRUN $TESTRUN_ID $UUID>"' in lines
    # $1 inside a --shell step belongs to the step, not to run.sh
    assert "lava-test-case two --shell test \\$1 = x" in lines
    assert lines[-1] == 'echo "<LAVA_SIGNAL_ENDRUN $TESTRUN_ID $UUID>"'


def test_run_sh_with_kmsg_and_character_delay() -> None:
    text = overlay.render_run_sh(
        TESTDEF, {}, testrun_id="1_x", test_dir="/l", lava_signal="kmsg", character_delay=0.05
    )
    assert "export KMSG=true" in text
    assert 'echo "<0><LAVA_SIGNAL_STARTRUN $TESTRUN_ID $UUID>" > /dev/kmsg' in text
    assert "export CHARACTER_DELAY=0.05" in text
    assert text.rstrip().endswith('echo "<0><LAVA_SIGNAL_ENDRUN $TESTRUN_ID $UUID>" > /dev/kmsg')


def test_bad_parameter_names_are_refused() -> None:
    with pytest.raises(ValueError, match="not a valid shell variable name"):
        overlay.render_run_sh(TESTDEF, {"parameters": {"rm -rf /": 1}}, testrun_id="0_a", test_dir="/l")


def test_install_sh_and_skip_install() -> None:
    text = overlay.render_install_sh(TESTDEF, {}, "/lava-9/0/tests/0_smoke", distro="debian")
    assert text is not None
    assert "lava-add-keys key1" in text
    assert "lava-add-sources http://example.invalid/repo" in text
    assert "lava-install-packages curl procps" in text
    assert "cd /lava-9/0/tests/0_smoke\npwd\necho installing" in text
    skipped = overlay.render_install_sh(TESTDEF, {"skip_install": ["deps", "steps"]}, "/d")
    assert skipped is not None
    assert "lava-install-packages" not in skipped and "echo installing" not in skipped
    assert "lava-add-keys key1" in skipped
    everything = overlay.render_install_sh(TESTDEF, {"skip_install": ["all"]}, "/d")
    assert everything is not None and "lava-" not in everything
    assert overlay.render_install_sh({"run": {"steps": []}}, {}, "/d") is None


def test_environment_export_lines() -> None:
    lines = overlay.environment_lines(
        device={"hostname": "sim-01", "devicetype": "sim", "device_info": [{"board": "x y"}],
                "environment": {"LAB": "north"}},
        job={"environment": {"FOO": "bar baz", "COUNT": 3, "FLAG": True}, "tags": ["a", "b"]},
        job_id="42",
        dispatcher_ip="10.0.0.1",
    )
    assert "export LAB=north" in lines
    assert "export LAVA_DEVICE_INFO_0_board='x y'" in lines
    assert "export FOO='bar baz'" in lines
    assert "export COUNT=3" in lines
    assert "export FLAG=1" in lines
    assert "export LAVA_JOB_ID=42" in lines
    assert "export LAVA_DISPATCHER_IP=10.0.0.1" in lines
    assert "export LAVA_JOB_TAGS=a,b" in lines
    assert "export LAVA_DEVICE_HOSTNAME=sim-01" in lines
    assert "export LAVA_DEVICE_TYPE=sim" in lines


def test_helper_script_gets_the_device_shell_and_injected_lines(tmp_path: Path) -> None:
    source = tmp_path / "lava-target-ip"
    source.write_text("#!/bin/sh\necho \"$TARGET_DEVICE_IP\"\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    installed = overlay.install_script(source, bin_dir, "/bin/busybox sh", ["TARGET_DEVICE_IP='10.1.1.1'"])
    assert installed.read_text() == "#!/bin/busybox sh\n\nTARGET_DEVICE_IP='10.1.1.1'\necho \"$TARGET_DEVICE_IP\"\n"
    assert installed.stat().st_mode & 0o111


def test_tarball_holds_the_results_dir_relative_and_owned_by_root(tmp_path: Path) -> None:
    location = tmp_path / "loc"
    root = overlay.tree_path(location, "/lava-77")
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "lava-test-case").write_text("x")
    out = overlay.pack(location, "/lava-77", tmp_path / "overlay.tar.gz")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert "lava-77/bin/lava-test-case" in names
        assert all(not n.startswith("/") for n in names)
        assert {m.uid for m in tar.getmembers()} == {0}


def test_results_dir_template() -> None:
    assert overlay.results_dir("/lava-%s", "12") == "/lava-12"
    assert overlay.results_dir("/data/local/tmp/lava-%s", "12") == "/data/local/tmp/lava-12"
    with pytest.raises(ValueError, match="must contain one '%s'"):
        overlay.results_dir("/lava-%s-%s", "12")
