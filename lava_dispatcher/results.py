"""Result files of a job: results.yaml and junit.xml, written as built-in plugins.

Every result record the job logs (test cases, action results, the job
outcome) has LAVA's fields (definition, case, result, measurement, units,
level, duration, extra, starttc/endtc, set...). ``results.yaml`` lists them
in the order they were logged; ``junit.xml`` groups them by definition
(LAVA's test suite) for CI systems that read JUnit.
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lava_dispatcher.log import flow
from lava_dispatcher.plugins import hookimpl

if TYPE_CHECKING:
    from lava_dispatcher.job import Job

RESULTS_FILE = "results.yaml"
JUNIT_FILE = "junit.xml"


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def results_yaml(records: Iterable[Mapping[str, Any]]) -> str:
    """A YAML list, one record per line as in logs.yaml.

    PyYAML's representer (Python even with libyaml) would take seconds for
    a job with 100,000 results; this takes a fraction of that.
    """
    return "".join(f"- {flow(dict(record))}\n" for record in records)


def _seconds(record: Mapping[str, Any]) -> str:
    try:
        return f"{float(record.get('duration') or 0):.3f}"
    except (TypeError, ValueError):
        return "0.000"


def junit_xml(records: Iterable[Mapping[str, Any]], name: str) -> str:
    """JUnit XML: one testsuite per definition, one testcase per result."""
    suites: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        suites.setdefault(str(record.get("definition", "lava")), []).append(record)
    root = ET.Element("testsuites", name=name)
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for suite_name, cases in suites.items():
        suite = ET.SubElement(root, "testsuite", name=suite_name)
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for record in cases:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=suite_name,
                name=str(record.get("case", "")),
                time=_seconds(record),
            )
            result = str(record.get("result", "unknown"))
            counts["tests"] += 1
            if result == "fail":
                counts["failures"] += 1
                message = str(record.get("error_msg") or "fail")
                failure = ET.SubElement(case, "failure", message=message, type="fail")
                if record.get("error_type"):
                    failure.set("type", str(record["error_type"]))
            elif result in ("skip", "unknown"):
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=result)
            properties = {
                k: record[k]
                for k in ("measurement", "units", "set", "level", "starttc", "endtc")
                if record.get(k) is not None
            }
            if properties:
                props = ET.SubElement(case, "properties")
                for key, value in properties.items():
                    ET.SubElement(props, "property", name=key, value=str(value))
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


@hookimpl
def lava_job_finished(job: Job, outcome: Mapping[str, Any]) -> None:
    if job.output_dir is None:
        return
    atomic_write(job.output_dir / RESULTS_FILE, results_yaml(job.results))
    atomic_write(job.output_dir / JUNIT_FILE, junit_xml(job.results, f"lava job {job.job_id}"))
