"""lava-test-runner end to end: an overlay as the dispatcher writes it, run under each shell."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from .dut import Overlay, TestDef, run_runner, signals, uuid_of, write_stage

SMOKE = TestDef(
    name="smoke",
    params={"GREETING": "hello"},
    deps=["foo-tools", "bar"],
    install_steps=["echo installed > install-marker"],
    steps=[
        "lava-test-case pass-case --result pass",
        "lava-test-case boot-time --result pass --measurement 1.5 --units s",
        'lava-test-case "param-$GREETING" --result fail',
        "lava-test-case shell-ok --shell true",
        "lava-test-case shell-fail --shell false",
        "lava-test-case shell-piped --shell 'echo piped-output | grep -q piped'",
        "lava-test-set start first-set",
        "lava-test-case in-set --result skip",
        "lava-test-set stop",
        "lava-test-reference ref-case --result pass --reference https://example.org/r/1",
        "echo attached-line > out.txt",
        "lava-test-case with-output --result unknown --output out.txt",
        "lava-test-event 'firmware flashed'",
        "lava-test-feedback --namespace host",
    ],
)

BROKEN_INSTALL = TestDef(
    name="broken",
    install_steps=["echo this install fails", "false"],
    steps=["lava-test-case never-run --result pass"],
)

AFTER = TestDef(name="after", steps=["lava-test-case after-case --result pass"])


def test_runner_runs_every_definition_in_order(fresh_overlay: Overlay) -> None:
    stage = write_stage(fresh_overlay, 0, [SMOKE, BROKEN_INSTALL, AFTER])
    proc = run_runner(fresh_overlay, stage)

    assert proc.returncode == 0, proc.stderr
    smoke_uuid = uuid_of(stage, "0_smoke")
    after_uuid = uuid_of(stage, "2_after")
    assert signals(proc.stdout) == [
        f"<LAVA_SIGNAL_STARTRUN 0_smoke {smoke_uuid}>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=pass-case RESULT=pass>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=boot-time RESULT=pass UNITS=s MEASUREMENT=1.5>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=param-hello RESULT=fail>",
        "<LAVA_SIGNAL_STARTTC shell-ok>",
        "<LAVA_SIGNAL_ENDTC shell-ok>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=shell-ok RESULT=pass>",
        "<LAVA_SIGNAL_STARTTC shell-fail>",
        "<LAVA_SIGNAL_ENDTC shell-fail>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=shell-fail RESULT=fail>",
        "<LAVA_SIGNAL_STARTTC shell-piped>",
        "<LAVA_SIGNAL_ENDTC shell-piped>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=shell-piped RESULT=pass>",
        "<LAVA_SIGNAL_TESTSET START first-set>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=in-set RESULT=skip>",
        "<LAVA_SIGNAL_TESTSET STOP>",
        "<LAVA_SIGNAL_TESTREFERENCE ref-case pass https://example.org/r/1>",
        "<LAVA_SIGNAL_STARTTC with-output>",
        "<LAVA_SIGNAL_ENDTC with-output>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=with-output RESULT=unknown>",
        "<LAVA_SIGNAL_TESTEVENT firmware flashed>",
        "<LAVA_SIGNAL_TESTFEEDBACK host>",
        f"<LAVA_SIGNAL_ENDRUN 0_smoke {smoke_uuid}>",
        "<LAVA_TEST_RUNNER INSTALL_FAIL>",
        f"<LAVA_SIGNAL_STARTRUN 2_after {after_uuid}>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=after-case RESULT=pass>",
        f"<LAVA_SIGNAL_ENDRUN 2_after {after_uuid}>",
        "<LAVA_TEST_RUNNER EXIT>",
    ]
    # --output prints the file between its STARTTC and ENDTC lines.
    lines = proc.stdout.splitlines()
    start = lines.index("<LAVA_SIGNAL_STARTTC with-output>")
    assert lines[start + 1 : start + 3] == ["attached-line", "<LAVA_SIGNAL_ENDTC with-output>"]
    # The generic lava-install-packages only lists what the image should hold.
    assert "- foo-tools" in proc.stdout and "- bar" in proc.stdout
    assert "this install fails" in proc.stdout
    assert "never-run" not in proc.stdout


def test_runner_renames_its_list_and_keeps_results_on_the_device(fresh_overlay: Overlay) -> None:
    stage = write_stage(fresh_overlay, 0, [SMOKE, BROKEN_INSTALL, AFTER])
    run_runner(fresh_overlay, stage)

    assert not (stage / "lava-test-runner.conf").exists()
    renamed = list(stage.glob("lava-test-runner.conf-*"))
    assert len(renamed) == 1 and renamed[0].name.split("-")[-1].isdigit()
    assert (stage / "tests" / "0_smoke" / "install-marker").read_text() == "installed\n"

    (smoke,) = (stage / "results").glob("0_smoke-*")
    assert (smoke / "install_return_code").read_text() == "0\n"
    assert (smoke / "return_code").read_text() == "0\n"
    assert (smoke / "results" / "pass-case" / "result").read_text() == "pass\n"
    assert (smoke / "results" / "boot-time" / "measurement").read_text() == "1.5\n"
    assert (smoke / "results" / "boot-time" / "units").read_text() == "s\n"
    (broken,) = (stage / "results").glob("1_broken-*")
    assert (broken / "install_return_code").read_text() != "0\n"
    assert not (broken / "return_code").exists()

    # After a reboot the dispatcher may type the same command again: nothing runs twice.
    again = run_runner(fresh_overlay, stage)
    assert signals(again.stdout) == ["<LAVA_TEST_RUNNER EXIT>"]


def test_raise_stops_its_run_sh_but_not_the_runner(fresh_overlay: Overlay) -> None:
    raising = TestDef(
        name="raising",
        steps=[
            "lava-test-case before --result pass",
            "lava-test-raise 'device fell over'",
            "lava-test-case not-reached --result pass",
        ],
    )
    stage = write_stage(fresh_overlay, 0, [raising, AFTER])
    proc = run_runner(fresh_overlay, stage)

    raising_uuid = uuid_of(stage, "0_raising")
    after_uuid = uuid_of(stage, "1_after")
    assert signals(proc.stdout) == [
        f"<LAVA_SIGNAL_STARTRUN 0_raising {raising_uuid}>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=before RESULT=pass>",
        "<LAVA_SIGNAL_TESTRAISE device fell over>",
        f"<LAVA_SIGNAL_STARTRUN 1_after {after_uuid}>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=after-case RESULT=pass>",
        f"<LAVA_SIGNAL_ENDRUN 1_after {after_uuid}>",
        "<LAVA_TEST_RUNNER EXIT>",
    ]
    (raised,) = (stage / "results").glob("0_raising-*")
    assert (raised / "return_code").read_text() == "1\n"


def test_kmsg_definitions_signal_through_the_kernel_log(
    fresh_overlay: Overlay, tmp_path: Path
) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.touch()
    first = TestDef(name="first", kmsg=str(kmsg), steps=["lava-test-case k1 --result pass"])
    plain = TestDef(name="plain", steps=["lava-test-case p1 --result fail"])
    last = TestDef(name="last", kmsg=str(kmsg), steps=["lava-test-case k2 --shell true"])
    stage = write_stage(fresh_overlay, 0, [first, plain, last])
    proc = run_runner(fresh_overlay, stage, env={"LAVA_KMSG_DEVICE": str(kmsg)})

    u0, u1, u2 = (uuid_of(stage, t) for t in ("0_first", "1_plain", "2_last"))
    assert kmsg.read_text().splitlines() == [
        f"<0><LAVA_SIGNAL_STARTRUN 0_first {u0}>",
        "<0><LAVA_SIGNAL_TESTCASE TEST_CASE_ID=k1 RESULT=pass>",
        f"<0><LAVA_SIGNAL_ENDRUN 0_first {u0}>",
        f"<0><LAVA_SIGNAL_STARTRUN 2_last {u2}>",
        "<0><LAVA_SIGNAL_STARTTC k2>",
        "<0><LAVA_SIGNAL_ENDTC k2>",
        "<0><LAVA_SIGNAL_TESTCASE TEST_CASE_ID=k2 RESULT=pass>",
        f"<0><LAVA_SIGNAL_ENDRUN 2_last {u2}>",
        # The runner's own line follows the last definition's choice.
        "<0><LAVA_TEST_RUNNER EXIT>",
    ]
    assert signals(proc.stdout) == [
        f"<LAVA_SIGNAL_STARTRUN 1_plain {u1}>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=p1 RESULT=fail>",
        f"<LAVA_SIGNAL_ENDRUN 1_plain {u1}>",
    ]


def test_character_delay_from_run_sh_slows_every_signal(fresh_overlay: Overlay) -> None:
    delay = 0.05
    test = TestDef(
        name="slow",
        character_delay=delay,
        steps=["lava-test-case s1 --result pass", "lava-test-case s2 --shell true"],
    )
    stage = write_stage(fresh_overlay, 0, [test])
    started = time.monotonic()
    proc = run_runner(fresh_overlay, stage)
    elapsed = time.monotonic() - started

    uuid = uuid_of(stage, "0_slow")
    assert signals(proc.stdout) == [
        f"<LAVA_SIGNAL_STARTRUN 0_slow {uuid}>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=s1 RESULT=pass>",
        "<LAVA_SIGNAL_STARTTC s2>",
        "<LAVA_SIGNAL_ENDTC s2>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=s2 RESULT=pass>",
        f"<LAVA_SIGNAL_ENDRUN 0_slow {uuid}>",
        "<LAVA_TEST_RUNNER EXIT>",
    ]
    # run.sh sleeps twice itself; the helpers sleep before each of their 4 lines.
    assert elapsed >= 6 * delay


def test_runner_uses_shell_from_environment_with_errexit(fresh_overlay: Overlay) -> None:
    probe = TestDef(
        name="probe",
        steps=[
            # run.sh runs as "$SHELL -e run.sh", under lava-test-shell
            "case $- in *e*) lava-test-case errexit --result pass ;; esac",
            'test -n "$LAVA_RESULT_DIR" && lava-test-case result-dir --result pass',
            # the runner puts <stage>/../bin first in PATH
            'test "$(cd "${PATH%%:*}" && pwd -P)" = "$(cd ../../../bin && pwd -P)"'
            " && lava-test-case bin-first --result pass",
        ],
    )
    stage = write_stage(fresh_overlay, 0, [probe])
    proc = run_runner(fresh_overlay, stage)
    cases = [line for line in signals(proc.stdout) if "TESTCASE" in line]
    assert cases == [
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=errexit RESULT=pass>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=result-dir RESULT=pass>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=bin-first RESULT=pass>",
    ]


def test_missing_list_still_reports_exit(fresh_overlay: Overlay) -> None:
    stage = fresh_overlay.root / "7"
    stage.mkdir()
    proc = run_runner(fresh_overlay, stage)
    assert signals(proc.stdout) == ["<LAVA_TEST_RUNNER EXIT>"]


def test_terminated_runner_reports_exit_once(fresh_overlay: Overlay) -> None:
    sleeper = TestDef(
        name="sleeper", steps=["echo sleeping", "sleep 30", "lava-test-case late --result pass"]
    )
    stage = write_stage(fresh_overlay, 0, [sleeper, AFTER])
    runner = subprocess.Popen(
        [str(fresh_overlay.bin / "lava-test-runner"), str(stage)],
        env=fresh_overlay.env(path=fresh_overlay.system_path),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert runner.stdout is not None
    for line in runner.stdout:
        if line.strip() == "sleeping":
            break
    # As a Ctrl-C or a kill on the console would: the whole foreground group.
    os.killpg(runner.pid, signal.SIGTERM)
    rest = runner.stdout.read()
    assert runner.wait(timeout=10) == 143
    assert signals(rest) == ["<LAVA_TEST_RUNNER EXIT>"]


def test_runner_conf_blanks_stray_signals_and_no_final_newline(fresh_overlay: Overlay) -> None:
    """The runner reads its list with the shell alone: padding, blank lines and
    stray signal lines are skipped; a last line without newline still counts."""
    stage = write_stage(
        fresh_overlay,
        0,
        [AFTER, TestDef(name="last", steps=["lava-test-case last-case --result pass"])],
    )
    conf = stage / "lava-test-runner.conf"
    first, second = conf.read_text(encoding="utf-8").split()
    conf.write_text(
        f"\n   {first}  \n<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=stray RESULT=fail>\n\n\t{second}",
        encoding="utf-8",
    )
    proc = run_runner(fresh_overlay, stage)
    assert proc.returncode == 0, proc.stderr
    got = signals(proc.stdout)
    assert "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=after-case RESULT=pass>" in got
    assert "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=last-case RESULT=pass>" in got
    assert not any("stray" in line for line in got)
    assert got[-1] == "<LAVA_TEST_RUNNER EXIT>"
    # both tests kept their results on the device, under one time stamp
    results = sorted(p.name.rsplit("-", 1)[0] for p in (stage / "results").iterdir())
    assert results == ["0_after", "1_last"]
