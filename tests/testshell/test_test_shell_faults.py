"""Must-show 2 (issue 3): what the DUT does wrong ends the right way.

lava-test-raise ends the test action with TestError; a failing install step
gives LAVA's INSTALL_FAIL result; a definition killed before ENDRUN is a
failed run; malformed signals are warnings, never a crash."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lava_dispatcher.log import read_records
from lava_dispatcher.sim import SimServer

from .helpers import PROMPT, busybox_rootfs, dispatch, have_namespaces, job_definition

pytestmark = [pytest.mark.slow, have_namespaces]


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs(tmp_path_factory.mktemp("rootfs") / "root")


@pytest.fixture
def board(tmp_path: Path, rootfs: Path) -> Iterator[SimServer]:
    with SimServer(tmp_path / "sim", pty=True, boot_time=0.02, boot_lines=3, rootfs=rootfs) as sim:
        yield sim


def definition(name: str, steps: list[str], **extra: Any) -> dict[str, Any]:
    body = {
        "metadata": {"format": "Lava-Test Test Definition 1.0", "name": name, "description": name},
        "run": {"steps": steps},
        **extra,
    }
    return {"from": "inline", "name": name, "path": f"{name}.yaml", "repository": body}


def run(tmp_path: Path, sim: SimServer, definitions: list[dict[str, Any]]) -> tuple[int, dict, list[dict], list[dict]]:
    device = {
        "extends": "sim",
        "commands": {
            "connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}},
            "power_on": shlex.join(sim.power_command("on")),
            "power_off": shlex.join(sim.power_command("off")),
        },
    }
    actions = [
        {"deploy": {"to": "overlay"}},
        {"boot": {"method": "minimal", "prompts": [PROMPT], "timeout": {"minutes": 1},
                  "auto_login": {"login_prompt": "login:", "username": "root"},
                  "transfer_overlay": {"download_command": "wget -q", "unpack_command": "tar -C / -xzf"}}},
        {"test": {"timeout": {"minutes": 1}, "definitions": definitions}},
    ]
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(device))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job_definition(actions)))
    out = tmp_path / "out"
    proc = dispatch("run", str(tmp_path / "job.yaml"), "--device", str(tmp_path / "device.yaml"), "--output-dir", str(out))
    result = yaml.safe_load((out / "result.yaml").read_text())
    results = yaml.safe_load((out / "results.yaml").read_text())
    logs = read_records((out / "logs.yaml").read_text().splitlines())
    return proc.returncode, result, results, logs


def cases(results: list[dict]) -> dict[tuple[str, str], str]:
    return {(r["definition"], r["case"]): r["result"] for r in results}


def test_lava_test_raise_ends_the_action_with_a_test_error(tmp_path: Path, board: SimServer) -> None:
    code, result, results, _ = run(tmp_path, board, [definition("raiser", [
        "lava-test-case before --result pass",
        "lava-test-raise the device is on fire",
        "lava-test-case after --result pass",
    ])])
    assert code == 1
    assert result["error_type"] == "Test"
    assert result["error_msg"] == "the device is on fire"
    found = cases(results)
    assert found[("0_raiser", "before")] == "pass"
    assert ("0_raiser", "after") not in found
    assert found[("lava", "lava-test-shell")] == "fail"


def test_a_failing_install_gives_install_fail(tmp_path: Path, board: SimServer) -> None:
    code, result, results, _ = run(tmp_path, board, [
        definition("broken", ["lava-test-case never --result pass"], install={"steps": ["false"]}),
        definition("fine", ["lava-test-case ok --result pass"]),
    ])
    found = cases(results)
    assert found[("lava", "stage_0")] == "fail"
    assert ("0_broken", "never") not in found
    # the runner skips the broken definition and still runs the next one
    assert found[("1_fine", "ok")] == "pass"
    assert found[("lava", "1_fine")] == "pass"
    assert code == 1
    assert result["error_type"] == "Test"
    assert "Unable to start test stage 0" in result["error_msg"]


def test_a_definition_killed_before_endrun_is_a_failed_run(tmp_path: Path, board: SimServer) -> None:
    code, result, results, _ = run(tmp_path, board, [
        definition("killed", ["lava-test-case started --result pass", "kill -9 $$"]),
        definition("after", ["lava-test-case ok --result pass"]),
    ])
    found = cases(results)
    assert found[("0_killed", "started")] == "pass"
    assert found[("lava", "0_killed")] == "fail"
    assert found[("lava", "1_after")] == "pass"
    assert code == 0, result  # failed test runs do not make the job incomplete


def test_malformed_signals_are_warnings(tmp_path: Path, board: SimServer) -> None:
    code, result, results, logs = run(tmp_path, board, [definition("garbage", [
        "echo '<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=bad-word RESULT=great>'",
        "echo '<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=bad-number RESULT=pass MEASUREMENT=fast>'",
        "echo '<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=extra-key RESULT=pass COLOUR=red>'",
        "echo '<LAVA_SIGNAL_TESTCASE garbage>'",
        "echo '<LAVA_SIGNAL_NOSUCHSIGNAL x>'",
        "echo '<LAVA_SIGNAL_TESTSET>'",
        "lava-test-case still-works --result pass",
    ])])
    assert code == 0, result
    found = cases(results)
    assert found[("0_garbage", "still-works")] == "pass"
    assert found[("0_garbage", "extra-key")] == "pass"
    assert ("0_garbage", "bad-word") not in found and ("0_garbage", "bad-number") not in found
    warnings = [str(r["msg"]) for r in logs if r["lvl"] == "warning"]
    assert any("bad result 'great'" in w for w in warnings)
    assert any("'fast' is not a number" in w for w in warnings)
    assert any("unknown key(s) ['colour']" in w for w in warnings)
    assert any("malformed parameter 'garbage'" in w for w in warnings)
    assert any("unknown signal <LAVA_SIGNAL_NOSUCHSIGNAL>" in w for w in warnings)
