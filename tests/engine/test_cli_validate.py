"""Must-show 2: `lava-dispatch validate` on the corpus of job definitions.

Valid jobs pass; each invalid one exits 2 with one message naming the key
path, the bad value and what was expected (the `# error:` line of the file).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lava_dispatcher.cli import main
from lava_dispatcher.sim import child_env

CORPUS = Path(__file__).resolve().parents[1] / "schemas" / "jobs"
VALID = sorted((CORPUS / "valid").glob("*.yaml"))
INVALID = sorted((CORPUS / "invalid").glob("*.yaml"))


def expected_error(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# error: "), f"{path.name} lacks its '# error:' line"
    return first[len("# error: "):]


def test_the_corpus_is_large_enough() -> None:
    assert len(VALID) + len(INVALID) >= 40
    assert len(INVALID) >= 15


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_jobs_pass(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: valid"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_jobs_exit_2_with_one_clear_message(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    message = captured.err.strip()
    assert "\n" not in message, f"more than one message: {message!r}"
    assert expected_error(path) in message


def test_the_installed_command_behaves_the_same() -> None:
    bad = next(p for p in INVALID if p.stem == "boot-method-typo")
    proc = subprocess.run(
        [sys.executable, "-m", "lava_dispatcher", "validate", str(bad)],
        capture_output=True, text=True, env=child_env(), check=False,
    )
    assert proc.returncode == 2
    assert "actions[1].boot.method: got 'qemux'; expected one of" in proc.stderr
    good = subprocess.run(
        [sys.executable, "-m", "lava_dispatcher", "validate", str(VALID[0])],
        capture_output=True, text=True, env=child_env(), check=False,
    )
    assert good.returncode == 0, good.stderr


def test_a_repeated_key_is_accepted_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """LAVA lets the last value win; existing jobs must keep working, so we
    accept it too, but say so."""
    job = tmp_path / "dup.yaml"
    job.write_text(
        "device_type: qemu\njob_name: dup\ntimeouts: {job: {minutes: 10}}\nvisibility: public\n"
        "actions:\n- boot:\n    timeout: {minutes: 2}\n    method: minimal\n    timeout: {minutes: 3}\n"
    )
    assert main(["validate", str(job)]) == 0
    err = capsys.readouterr().err
    assert "line 9: duplicate key 'timeout' replaces the value given at line 7" in err


def test_missing_file_and_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read job definition" in capsys.readouterr().err
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(b"\x00\x01 not: [yaml")
    assert main(["validate", str(garbage)]) == 2
    assert "garbage.yaml:1:1" in capsys.readouterr().err
