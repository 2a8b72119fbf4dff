"""The single-purpose helpers (lava-test-case and friends), run under each shell."""

from __future__ import annotations

import os
import shutil
import string
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .dut import SCRIPTS, Overlay, Shell, build_overlay, install_script, signals

USAGE_ERRORS = [
    pytest.param([], id="no-arguments"),
    pytest.param([""], id="empty-id"),
    pytest.param(["case", "--bogus"], id="unknown-option"),
    pytest.param(["case", "--result"], id="result-without-value"),
    pytest.param(["case", "--result", "pass", "--units"], id="units-without-value"),
    pytest.param(["case", "--result", "pass", "--shell", "true"], id="shell-after-result"),
    pytest.param(["case", "--result", "pass", "extra"], id="stray-word"),
]


# ---------------------------------------------------------------- lava-test-case


@pytest.mark.parametrize("args", USAGE_ERRORS)
def test_test_case_argument_errors(overlay: Overlay, args: list[str]) -> None:
    proc = overlay.run("lava-test-case", *args)
    assert proc.returncode == 1
    assert "Usage: lava-test-case" in proc.stderr
    assert signals(proc.stdout) == []


@pytest.mark.parametrize(
    "args",
    [["case"], ["case", "--units", "s", "--measurement", "3"], ["case", "--output", "/dev/null"]],
    ids=["id-only", "no-result", "output-only"],
)
def test_test_case_needs_a_result(overlay: Overlay, args: list[str]) -> None:
    proc = overlay.run("lava-test-case", *args)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "--result must be specified"
    assert signals(proc.stdout) == []


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["a", "--result", "pass"], "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=a RESULT=pass>"),
        (
            ["b", "--measurement", "10", "--result", "fail", "--units", "ms"],
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=b RESULT=fail UNITS=ms MEASUREMENT=10>",
        ),
        (
            ["c", "--result", "pass", "--measurement", "0.25"],
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=c RESULT=pass MEASUREMENT=0.25>",
        ),
        (
            ["d", "--result", "skip", "--units", "s"],
            "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=d RESULT=skip UNITS=s>",
        ),
        # not checked here: the dispatcher validates (after its fixupdict)
        (["e", "--result", "PASSED"], "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=e RESULT=PASSED>"),
    ],
    ids=["result", "all-in-any-order", "measurement-only", "units-only", "unchecked-result"],
)
def test_test_case_lines(overlay: Overlay, args: list[str], line: str) -> None:
    proc = overlay.run("lava-test-case", *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [line]


def test_test_case_ignores_result_variables_from_the_environment(overlay: Overlay) -> None:
    proc = overlay.run(
        "lava-test-case",
        "env",
        "--result",
        "fail",
        env={"RESULT": "pass", "UNITS": "x", "MEASUREMENT": "9"},
    )
    assert proc.stdout.splitlines() == ["<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=env RESULT=fail>"]


@pytest.mark.parametrize(
    ("command", "result", "output"),
    [
        (["echo one two | tr a-z A-Z"], "pass", ["ONE TWO"]),
        (["test -d / && echo dir > /dev/stderr; false"], "fail", []),
        (["sh", "-c", 'echo "$1"; exit 3', "sh", "quoted arg"], "fail", ["quoted arg"]),
        (["printf", "%s|\\n", "a b", "c"], "pass", ["a b|", "c|"]),
        (["exit 4"], "fail", []),
        (["echo $TEST_CASE_ID"], "pass", ["shelled"]),
        ([], "pass", []),
    ],
    ids=[
        "code-string",
        "failing-code",
        "argv-fails",
        "argv-keeps-words",
        "exit-in-code",
        "sees-id",
        "empty",
    ],
)
def test_test_case_shell(
    overlay: Overlay, command: list[str], result: str, output: list[str]
) -> None:
    proc = overlay.run("lava-test-case", "shelled", "--shell", *command)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "<LAVA_SIGNAL_STARTTC shelled>",
        *output,
        "<LAVA_SIGNAL_ENDTC shelled>",
        f"<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=shelled RESULT={result}>",
    ]


def test_test_case_output_file(overlay: Overlay, tmp_path: Path) -> None:
    log = tmp_path / "case.log"
    log.write_text("line 1\nline 2\n")
    proc = overlay.run("lava-test-case", "logged", "--result", "pass", "--output", str(log))
    assert proc.stdout.splitlines() == [
        "<LAVA_SIGNAL_STARTTC logged>",
        "line 1",
        "line 2",
        "<LAVA_SIGNAL_ENDTC logged>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=logged RESULT=pass>",
    ]


def test_test_case_keeps_files_under_lava_result_dir(overlay: Overlay, tmp_path: Path) -> None:
    proc = overlay.run(
        "lava-test-case",
        "kept",
        "--result",
        "pass",
        "--units",
        "V",
        "--measurement",
        "3.3",
        env={"LAVA_RESULT_DIR": str(tmp_path)},
    )
    assert proc.returncode == 0
    case = tmp_path / "results" / "kept"
    assert {f.name: f.read_text() for f in case.iterdir()} == {
        "result": "pass\n",
        "units": "V\n",
        "measurement": "3.3\n",
    }


TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "._-+:/,", min_size=1, max_size=20)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case_id=TOKEN, result=TOKEN, units=st.none() | TOKEN, measurement=st.none() | TOKEN)
def test_test_case_line_property(
    overlay: Overlay, case_id: str, result: str, units: str | None, measurement: str | None
) -> None:
    args = [case_id, "--result", result]
    expected = f"<LAVA_SIGNAL_TESTCASE TEST_CASE_ID={case_id} RESULT={result}"
    if measurement is not None:
        args += ["--measurement", measurement]
    if units is not None:
        args += ["--units", units]
        expected += f" UNITS={units}"
    if measurement is not None:
        expected += f" MEASUREMENT={measurement}"
    proc = overlay.run("lava-test-case", *args)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [expected + ">"]


# ---------------------------------------------------------------- signal(): KMSG and CHARACTER_DELAY


def test_kmsg_replaces_stdout(overlay: Overlay, tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg"
    env = {"KMSG": "true", "LAVA_KMSG_DEVICE": str(kmsg)}
    first = overlay.run("lava-test-case", "k", "--shell", "echo shown", env=env)
    second = overlay.run("lava-test-set", "stop", env=env)
    assert first.stdout == "shown\n" and second.stdout == ""
    assert kmsg.read_text().splitlines() == [
        "<0><LAVA_SIGNAL_STARTTC k>",
        "<0><LAVA_SIGNAL_ENDTC k>",
        "<0><LAVA_SIGNAL_TESTCASE TEST_CASE_ID=k RESULT=pass>",
        "<0><LAVA_SIGNAL_TESTSET STOP>",
    ]


def test_empty_kmsg_means_stdout(overlay: Overlay, tmp_path: Path) -> None:
    proc = overlay.run(
        "lava-test-event", "ev", env={"KMSG": "", "LAVA_KMSG_DEVICE": str(tmp_path / "k")}
    )
    assert proc.stdout == "<LAVA_SIGNAL_TESTEVENT ev>\n"
    assert not (tmp_path / "k").exists()


def test_character_delay_comes_before_each_line(overlay: Overlay) -> None:
    started = time.monotonic()
    proc = overlay.run("lava-test-case", "slow", "--shell", "true", env={"CHARACTER_DELAY": "0.1"})
    elapsed = time.monotonic() - started
    assert len(signals(proc.stdout)) == 3
    assert elapsed >= 0.3


# ---------------------------------------------------------------- set, reference, raise, feedback, event


@pytest.mark.parametrize(
    ("script", "args", "line"),
    [
        ("lava-test-set", ["start", "boot-set"], "<LAVA_SIGNAL_TESTSET START boot-set>"),
        ("lava-test-set", ["stop"], "<LAVA_SIGNAL_TESTSET STOP>"),
        (
            "lava-test-reference",
            ["ref", "--reference", "http://h/x?a=1", "--result", "fail"],
            "<LAVA_SIGNAL_TESTREFERENCE ref fail http://h/x?a=1>",
        ),
        ("lava-test-feedback", ["--namespace", "probe"], "<LAVA_SIGNAL_TESTFEEDBACK probe>"),
        ("lava-test-event", ["kernel panic seen"], "<LAVA_SIGNAL_TESTEVENT kernel panic seen>"),
    ],
)
def test_one_line_helpers(overlay: Overlay, script: str, args: list[str], line: str) -> None:
    proc = overlay.run(script, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [line]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("lava-test-set", [], "Usage: lava-test-set"),
        ("lava-test-set", ["start"], "Usage: lava-test-set"),
        ("lava-test-set", ["begin", "x"], "Usage: lava-test-set"),
        ("lava-test-reference", [], "Usage: lava-test-reference"),
        ("lava-test-reference", ["r", "--result", "pass"], "--reference must be specified"),
        ("lava-test-reference", ["r", "--reference", "u"], "--result must be specified"),
        ("lava-test-reference", ["r", "--result"], "Usage: lava-test-reference"),
        ("lava-test-reference", ["r", "--url", "u"], "Usage: lava-test-reference"),
        ("lava-test-feedback", [], "--namespace must be specified"),
        ("lava-test-feedback", ["--namespace"], "Usage: lava-test-feedback"),
        ("lava-test-feedback", ["ns"], "Usage: lava-test-feedback"),
        ("lava-test-event", [], "Usage: lava-test-event"),
        ("lava-test-event", [""], "Usage: lava-test-event"),
        ("lava-test-event", ["two", "words"], "Usage: lava-test-event"),
        ("lava-test-raise", [], "Usage: lava-test-raise"),
    ],
)
def test_one_line_helpers_argument_errors(
    overlay: Overlay, script: str, args: list[str], message: str
) -> None:
    proc = overlay.run(script, *args)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert signals(proc.stdout) == []


def test_raise_prints_then_fails(overlay: Overlay) -> None:
    proc = overlay.run("lava-test-raise", "setup", "failed:", "no network")
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ["<LAVA_SIGNAL_TESTRAISE setup failed: no network>"]


# ---------------------------------------------------------------- device information


@pytest.mark.parametrize(
    ("script", "value"),
    [
        ("lava-target-ip", "10.1.2.3"),
        ("lava-target-mac", "00:11:22:33:44:55"),
        ("lava-probe-ip", "10.9.8.7"),
        ("lava-probe-channel", "3"),
    ],
)
def test_injected_device_values(overlay: Overlay, script: str, value: str) -> None:
    proc = overlay.run(script)
    assert (proc.returncode, proc.stdout) == (0, f"{value}\n")


def test_target_storage(overlay: Overlay) -> None:
    everything = overlay.run("lava-target-storage")
    assert everything.returncode == 0
    assert everything.stdout == (
        "\tUMS\t/dev/disk/by-id/usb-ums-0\n\tSATA\t/dev/disk/by-id/ata-disk\n\tUMS\t/dev/disk/by-id/usb-ums-1\n"
    )
    ums = overlay.run("lava-target-storage", "UMS")
    assert (ums.returncode, ums.stdout) == (
        0,
        "/dev/disk/by-id/usb-ums-0\n/dev/disk/by-id/usb-ums-1\n",
    )
    sata = overlay.run("lava-target-storage", "SATA")
    assert (sata.returncode, sata.stdout) == (0, "/dev/disk/by-id/ata-disk\n")
    for missing in ("NVME", "UM", "."):
        proc = overlay.run("lava-target-storage", missing)
        assert (proc.returncode, proc.stdout) == (1, "")


def test_target_storage_without_storage(shell: Shell, tmp_path: Path) -> None:
    bare = build_overlay(tmp_path, shell)
    # A device without storage_info: LAVA writes an empty block.
    install_script(SCRIPTS / "lava-target-storage", bare.bin, shell, ['LAVA_STORAGE="', '"'])
    proc = bare.run("lava-target-storage")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert bare.run("lava-target-storage", "UMS").returncode == 1


def test_os_build_generic(overlay: Overlay) -> None:
    proc = overlay.run("lava-os-build")
    assert proc.returncode == 0
    os_release = Path("/etc/os-release")
    if os_release.exists():
        pretty = [
            line.split("=", 1)[1].replace('"', "")
            for line in os_release.read_text().splitlines()
            if line.startswith("PRETTY_NAME=")
        ]
        assert proc.stdout.splitlines() == pretty
    else:
        assert proc.stdout.strip()


def test_echo_ipv4(overlay: Overlay) -> None:
    usage = overlay.run("lava-echo-ipv4")
    assert usage.returncode == 0 and "Specify the interface" in usage.stdout
    if not any(
        shutil.which(tool, path=f"/sbin:{overlay.system_path}") for tool in ("ip", "ifconfig")
    ):
        pytest.skip("neither ip nor ifconfig is installed")
    if not Path("/sys/class/net/lo").exists():
        pytest.skip("no loopback interface")
    proc = overlay.run("lava-echo-ipv4", "lo")
    assert (proc.returncode, proc.stdout) == (0, "127.0.0.1\n")


# ---------------------------------------------------------------- package helpers


def test_generic_package_helpers(overlay: Overlay) -> None:
    install = overlay.run("lava-install-packages", "git", "curl")
    assert install.returncode == 0 and "- git\n- curl\n" in install.stdout
    keys = overlay.run("lava-add-keys", "0xABCD")
    assert keys.returncode == 0 and "- 0xABCD" in keys.stdout
    sources = overlay.run("lava-add-sources", "ppa:x/y")
    assert sources.returncode == 0 and "- ppa:x/y" in sources.stdout
    listed = overlay.run("lava-installed-packages")
    assert listed.returncode == 0 and "cannot obtain list" in listed.stdout


# ---------------------------------------------------------------- background processes


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        current = todo.pop()
        seen.append(current)
        todo += _children(current)
    return seen


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="needs /proc to find the processes"
)
def test_background_process_start_and_stop(overlay: Overlay, tmp_path: Path) -> None:
    ticks = tmp_path / "ticks"
    env = {"LAVA_RESULT_DIR": str(tmp_path)}
    started = overlay.start_detached(
        "lava-background-process-start", "mon", "--cmd", f"echo tick >> {ticks}; sleep 30", env=env
    )
    assert started == 0
    pid = int((tmp_path / "results" / "mon" / "pid").read_text())
    assert _wait_for(lambda: ticks.exists() and len(_tree(pid)) >= 3)
    tree = _tree(pid)

    stop = overlay.run("lava-background-process-stop", "mon", env=env)
    assert stop.returncode == 0
    assert _wait_for(lambda: not any(_alive(p) for p in tree)), [p for p in tree if _alive(p)]
    assert ticks.read_text() == "tick\n"
    # Stopping again, or something never started, is not an error.
    assert overlay.run("lava-background-process-stop", "mon", env=env).returncode == 0
    assert overlay.run("lava-background-process-stop", "never", env=env).returncode == 0


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("lava-background-process-start", []),
        ("lava-background-process-start", ["name"]),
        ("lava-background-process-start", ["name", "--cmd"]),
        ("lava-background-process-start", ["name", "--command", "true"]),
        ("lava-background-process-stop", []),
    ],
)
def test_background_process_argument_errors(overlay: Overlay, script: str, args: list[str]) -> None:
    proc = overlay.run(script, *args, env={"LAVA_RESULT_DIR": os.devnull})
    assert proc.returncode == 1
    assert "Usage:" in proc.stderr
