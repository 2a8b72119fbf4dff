"""Test definition files: valid ones pass, mistakes are named by path."""

from __future__ import annotations

from pathlib import Path

import pytest

from lava_dispatcher.errors import InvalidJobError
from lava_dispatcher.schemas import load_yaml, validate_testdef

HERE = Path(__file__).resolve().parent
VALID = sorted((HERE / "testdefs" / "valid").glob("*.yaml"))
INVALID = sorted((HERE / "testdefs" / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("path", VALID, ids=[p.name for p in VALID])
def test_valid_testdef(path: Path) -> None:
    data = load_yaml(path.read_text(), path.name)
    assert validate_testdef(data) == data


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_testdef(path: Path) -> None:
    wanted = path.read_text().splitlines()[0].removeprefix("# error: ")
    with pytest.raises(InvalidJobError) as info:
        validate_testdef(load_yaml(path.read_text(), path.name))
    assert wanted in str(info.value)
    assert str(info.value).startswith(f"{info.value.path}: ")


def test_corpus_size() -> None:
    assert len(VALID) >= 5
    assert len(INVALID) >= 8


def test_extra_keys() -> None:
    base = {
        "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "x", "release": "2024"},
        "run": {"steps": ["true"]},
    }
    # descriptive metadata and unknown top-level keys pass (as in LAVA) ...
    validate_testdef({**base, "x-lab-owner": "qa"})
    # ... unless the top-level key is a misspelling of a known one
    with pytest.raises(InvalidJobError, match=r"^instal: got unknown key"):
        validate_testdef({**base, "instal": {"deps": ["curl"]}})
    # keys that drive what runs are strict
    with pytest.raises(InvalidJobError, match=r"^install.dependencies: got unknown key"):
        validate_testdef({**base, "install": {"dependencies": ["curl"]}})


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidJobError, match=r"^test definition: got list"):
        validate_testdef(["metadata"])
