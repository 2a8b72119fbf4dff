"""The body of a POST callback: LAVA's job data, its datasets, JSON or a form.

Field names and values follow LAVA's ``TestJob.create_job_data``: the legacy
integer ``status``, integer ``state``/``health`` with their ``_string``
names, times as ``str()`` of an aware UTC datetime (``"None"`` when unset),
``metadata`` as a list of one-key mappings. ``logs`` adds ``log`` (the whole
log text), ``results`` adds ``results`` (``{suite: YAML list of test
cases}``), ``all`` adds both.

JSON is what LAVA sends. For a form (``urlencoded``, LAVA's default) LAVA's
HTTP library drops None values, writes booleans as ``True``/``False`` and
mangles nested values (a dict becomes its keys); here the scalars are the
same, and nested values (``metadata``, ``results``) are JSON text instead.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import yaml

from lava_dispatcher.worker.notify.jobinfo import (
    LEGACY,
    health_number,
    lava_time,
    legacy_status,
    metadata,
    state_number,
)
from lava_dispatcher.worker.store import JobRecord, ResultRecord

JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"


def job_data(
    job: JobRecord,
    definition: Mapping[str, Any],
    *,
    submitter_email: str = "",
    log: str | None = None,
    results: Sequence[ResultRecord] | None = None,
) -> dict[str, Any]:
    """LAVA's job data for ``job``; ``log``/``results`` are added when given (datasets)."""
    data: dict[str, Any] = {
        "id": job.id,
        "status": legacy_status(job),
        "status_string": LEGACY[legacy_status(job)].lower(),
        "state": state_number(job),
        "state_string": job.state,
        "health": health_number(job),
        "health_string": job.health,
        "submit_time": lava_time(job.submit_time),
        "start_time": lava_time(job.start_time),
        "end_time": lava_time(job.end_time),
        "submitter_username": job.submitter,
        "submitter_email": submitter_email,
        "failure_comment": job.failure_comment,
        "priority": job.priority,
        "description": job.description,
        "actual_device_id": job.actual_device,
        "definition": job.definition,
        "metadata": metadata(definition),
        "health_check": job.health_check,
    }
    if log is not None:
        data["log"] = log
    if results is not None:
        data["results"] = results_by_suite(results)
    return data


def wants(dataset: str) -> tuple[bool, bool]:
    """Whether a dataset carries the log, and the results."""
    return dataset in ("logs", "all"), dataset in ("results", "all")


def _logged(text: str | None) -> str:
    """LAVA's ``str(datetime)`` of when the result was logged (our log's ``dt`` is naive UTC)."""
    if not text:
        return "None"
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return text
    return str(when if when.tzinfo else when.replace(tzinfo=datetime.UTC))


def export_result(result: ResultRecord) -> dict[str, Any]:
    """One test case as LAVA exports it: every value a string, its metadata as it is."""
    return {
        "name": result.name,
        "job": str(result.job_id),
        "suite": result.suite,
        "result": result.result,
        "measurement": str(result.measurement),
        "unit": str(result.units),
        "level": result.level or "",
        "url": f"/results/testcase/{result.id}",
        "id": str(result.id),
        "logged": _logged(result.logged),
        "log_start_line": "",
        "log_end_line": str(result.line) if result.line else "",
        "metadata": result.metadata,
    }


def results_by_suite(results: Sequence[ResultRecord]) -> dict[str, str]:
    """``{suite: YAML text of its test cases}``, suites in the order they first appear."""
    suites: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        suites.setdefault(result.suite, []).append(export_result(result))
    return {name: yaml.safe_dump(cases, sort_keys=False) for name, cases in suites.items()}


def _form_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def encode(data: Mapping[str, Any], content_type: str) -> tuple[bytes, str]:
    """The body and its Content-Type for ``content-type: json`` or ``urlencoded``."""
    if content_type == "json":
        return json.dumps(data, default=str).encode("utf-8"), JSON_TYPE
    pairs = [(key, _form_value(value)) for key, value in data.items() if value is not None]
    return urlencode(pairs).encode("ascii"), FORM_TYPE
