"""Fixtures: a worker daemon per test, ended (with every process it started) afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import Worker, compile_bytecode


@pytest.fixture(scope="session")
def bytecode() -> None:
    compile_bytecode()


@pytest.fixture
def worker(tmp_path: Path, bytecode: None) -> Iterator[Callable[..., Worker]]:
    """Make (not start) a Worker for this test's tmp_path; every one is cleaned up."""
    made: list[Worker] = []

    def make(*extra: str, **kwargs: Any) -> Worker:
        made.append(Worker(tmp_path, *extra, **kwargs))
        return made[-1]

    yield make
    for each in made:
        each.cleanup()
