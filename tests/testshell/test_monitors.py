"""test: monitors reads results off the console with no shell interaction (LAVA's rules
for suite and case names, fixupdict, measurements, expected)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from lava_dispatcher.sim import run_command

from .helpers import PROMPT, dispatch, job_definition

pytestmark = pytest.mark.slow

# printed by the DUT itself, as a Zephyr test image would
OUTPUT = r"""(sleep 0.3; printf 'noise\nTESTS BEGIN\nfoo bar: PASS\nBaz-Qux: FAIL\nignored: MAYBE\nlatency: 12.5 ms\nTESTS END\nafter: PASS\n') &"""


def test_monitor_records_cases_until_its_end_string(tmp_path: Path) -> None:
    device = {"extends": "sim", "commands": {"connect": shlex.join(run_command(boot_time=0.02, boot_lines=3))}}
    actions = [
        {"boot": {"method": "minimal", "reset": False, "prompts": [PROMPT],
                  "auto_login": {"login_prompt": "login:", "username": "root"}}},
        {"test": {"interactive": [{"name": "start", "prompts": [PROMPT], "script": [{"command": OUTPUT}]}]}},
        {"test": {"timeout": {"seconds": 20}, "monitors": [{
            "name": "Zephyr-Kernel",
            "start": "TESTS BEGIN",
            "end": "TESTS END",
            "pattern": r"(?P<test_case_id>[\w -]+): ((?P<result>PASS|FAIL|MAYBE)|(?P<measurement>[\d.]+) (?P<units>\w+))",
            "fixupdict": {"PASS": "pass", "FAIL": "fail"},
            "expected": ["foo_bar", "baz_qux", "latency", "never-ran"],
        }]}},
    ]
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(device))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job_definition(actions)))
    out = tmp_path / "out"
    proc = dispatch("run", str(tmp_path / "job.yaml"), "--device", str(tmp_path / "device.yaml"), "--output-dir", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:]
    records = yaml.safe_load((out / "results.yaml").read_text())
    suite = {r["case"]: r for r in records if r["definition"] == "zephyr-kernel"}
    assert suite["foo_bar"]["result"] == "pass"
    assert suite["baz_qux"]["result"] == "fail"
    assert suite["latency"]["result"] == "pass"
    assert suite["latency"]["measurement"] == 12.5 and suite["latency"]["units"] == "ms"
    assert suite["never-ran"]["result"] == "fail"  # expected but missing
    assert "ignored" not in suite  # MAYBE is not a result word: logged as an error
    assert "after" not in suite  # after the end string
