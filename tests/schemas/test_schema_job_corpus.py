"""The job corpus: every valid job passes, every invalid job fails with the promised message.

Each file in ``jobs/invalid`` starts with ``# error: <text>``; the error
raised for it must contain that text, start with the key path it names, show
the bad value and say what was expected.  ``lava-dispatch validate`` is run
on the same corpus by the CLI tests.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from lava_dispatcher.errors import InvalidJobError
from lava_dispatcher.schemas import load_yaml, validate_job

HERE = Path(__file__).resolve().parent
VALID = sorted((HERE / "jobs" / "valid").glob("*.yaml"))
INVALID = sorted((HERE / "jobs" / "invalid").glob("*.yaml"))


def _expected_error(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# error: "), f"{path.name}: the first line must be '# error: <text>'"
    return first[len("# error: ") :]


def test_corpus_is_large_enough() -> None:
    assert len(VALID) >= 32
    assert len(INVALID) >= 16


@pytest.mark.parametrize("path", VALID, ids=[p.name for p in VALID])
def test_valid_job(path: Path) -> None:
    data = load_yaml(path.read_text(), path.name)
    before = copy.deepcopy(data)
    out = validate_job(data)
    assert out == data == before  # nothing added, nothing changed


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_job(path: Path) -> None:
    wanted = _expected_error(path)
    with pytest.raises(InvalidJobError) as info:
        validate_job(load_yaml(path.read_text(), path.name))
    error = info.value
    message = str(error)
    assert wanted in message
    assert "\n" not in message  # one message, one line
    if path.name.startswith("yaml-"):
        # a YAML problem is located by file, line and column
        assert message.startswith(f"{path.name}:")
        return
    assert "expected " in message
    assert error.expected and error.expected in message
    if error.path:
        assert message.startswith(f"{error.path}: ")
    if "required key missing" not in message:
        assert "got " in message  # the bad value is shown
