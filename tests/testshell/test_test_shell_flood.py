"""Must-show 4 (issue 3): 100 MB through the console with 100,000 test cases,
parsed without loss (every result, in order). The throughput figures of the
same run are recorded by bench/bench_test_shell.py, not asserted here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .helpers import have_namespaces

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

pytestmark = [pytest.mark.slow, have_namespaces]


def test_100mb_with_100000_cases_loses_nothing() -> None:
    from bench_test_shell import run  # the benchmark's job, run end to end

    figures = run(100, 100_000)  # raises SystemExit if the job itself failed
    assert figures["missing"] == 0
    assert figures["results"] == 100_000
    assert figures["in_order"] == 1.0
