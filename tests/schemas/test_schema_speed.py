"""Schemas are compiled once (speed itself is measured by bench/bench_validation.py)."""

from __future__ import annotations

from lava_dispatcher.schemas.job import DEFAULT_SCHEMA, job_schema


def test_schema_is_compiled_once() -> None:
    assert job_schema(None) is DEFAULT_SCHEMA
