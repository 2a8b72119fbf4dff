"""The XML-RPC methods of jobs and results: ``scheduler.jobs.*``, the legacy
``scheduler.*`` calls SQUAD uses, and ``results.*``, in LAVA's shapes.

Each method checks the types of its arguments (fault -32602 for a wrong
one), calls the service, and shapes the records as LAVA does (reference:
api-surface.md §1.5): times as ``dateTime.iso8601`` in UTC, job ids as LAVA
shows them (an integer, or ``"12.1"`` for a MultiNode sub-job, whose own
id 13 is accepted too), logs and files as base64, results exports with every
value a string. The devices, device types and workers are in
:mod:`lava_dispatcher.worker.xmlrpc_lab`.
"""

from __future__ import annotations

import datetime
import decimal
import re
import xmlrpc.client
from typing import Any

import yaml

from lava_dispatcher.worker.errors import InvalidJob, NotFound
from lava_dispatcher.worker.store import (
    CANCELING,
    COMPLETE,
    FINISHED,
    RUNNING,
    JobRecord,
    ResultRecord,
)
from lava_dispatcher.worker.xmlrpc import (
    METHODS,
    Call,
    ParamError,
    as_count,
    as_flag,
    as_job_id,
    as_minutes,
    as_text,
    date_time,
    kind,
)

_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
#: LAVA's measurement column: DECIMAL(30, 10)
_MEASUREMENT = decimal.Decimal(10) ** -10
MASK = "[MASKED]"
#: a key path as the dispatcher's schema errors name it: ``actions[0].boot.timeout``
_PATH = re.compile(r"^[A-Za-z_][\w-]*(?:\[\d+\]|\.[\w-]+)*$")


def time_text(when: float | None) -> str | None:
    """As LAVA prints a time in ``jobs.list(verbose=True)``: ``2026-01-02 03:04:05.123456+00:00``."""
    return None if when is None else str(datetime.datetime.fromtimestamp(when, datetime.UTC))


def display_id(job: JobRecord) -> int | str:
    return job.sub_id or job.id


def ids(submitted: list[str]) -> int | list[str]:
    """What LAVA's submit answers: the job's id, or the list of sub-job ids of a MultiNode job."""
    if len(submitted) == 1 and "." not in submitted[0]:
        return int(submitted[0])
    return list(submitted)


def visibility(job: JobRecord) -> str:
    if job.visibility == "public":
        return "Public"
    if job.visibility.startswith("group:"):
        return f"Group ({', '.join(job.visibility[6:].split(','))})"
    return "Personal"


def legacy_status(job: JobRecord) -> str:
    """LAVA's pre-2018 job status, which SQUAD still reads from ``job_details``."""
    if job.state in (RUNNING, CANCELING):
        return job.state
    if job.state != FINISHED:
        return "Submitted"
    return job.health if job.health in (COMPLETE, "Canceled") else "Incomplete"


def masked(definition: str) -> str:
    """The definition with the values of its ``secrets:`` replaced by ``[MASKED]``."""
    try:
        data = yaml.safe_load(definition)
    except yaml.YAMLError:
        return definition
    secrets = data.get("secrets") if isinstance(data, dict) else None
    if not isinstance(secrets, dict):
        return definition
    for value in sorted((str(v) for v in secrets.values() if v is not None and str(v)), key=len, reverse=True):
        definition = definition.replace(value, MASK)
    return definition


def _owner(call: Call, job: JobRecord) -> bool:
    return call.user is not None and (call.user.is_admin or call.user.name == job.submitter)


# -- scheduler.jobs.* --------------------------------------------------------------------


@METHODS.method("scheduler.jobs.submit")
async def submit(call: Call, definition: Any) -> int | list[str]:
    """Queue a job (YAML or JSON): its id, or its sub-jobs' ids ("12.0", ...) for MultiNode.

    The job is checked as ``lava-dispatch validate`` does, against a device of
    its type: fault 400 with what is wrong, 404 for a device type this worker
    does not have, 401 when anonymous."""
    return ids(await call.service.submit(as_text(definition, "definition"), call.user))


@METHODS.method("scheduler.jobs.resubmit")
async def resubmit(call: Call, job_id: Any) -> int | list[str]:
    """Submit a job's definition again (the whole group for a MultiNode sub-job); as submit."""
    return ids(await call.service.resubmit(as_job_id(job_id), call.user))


@METHODS.method("scheduler.jobs.cancel")
async def cancel(call: Call, job_id: Any) -> bool:
    """Cancel a job, and the rest of its MultiNode group (its submitter or an admin): True."""
    await call.service.cancel(as_job_id(job_id), call.user)
    return True


@METHODS.method("scheduler.jobs.show")
async def show(call: Call, job_id: Any) -> dict[str, Any]:
    """The job: id, description, device, device_type, health_check, pipeline, health, state,
    submitter, submit_time, start_time, end_time, tags, visibility, failure_comment,
    error_msg, error_type."""
    job = await call.service.job(as_job_id(job_id), call.user)
    return {
        "id": display_id(job), "description": job.description, "device": job.actual_device,
        "device_type": job.requested_device_type, "health_check": job.health_check,
        "pipeline": True, "health": job.health, "state": job.state, "submitter": job.submitter,
        "submit_time": date_time(job.submit_time), "start_time": date_time(job.start_time),
        "end_time": date_time(job.end_time), "tags": list(job.tags), "visibility": visibility(job),
        "failure_comment": job.failure_comment, "error_msg": job.error_msg, "error_type": job.error_type,
    }  # fmt: skip


@METHODS.method("scheduler.jobs.definition")
async def jobs_definition(call: Call, job_id: Any) -> str:
    """The definition as submitted (a sub-job's: the whole MultiNode one); its secrets are
    masked unless the caller submitted the job or is an admin."""
    job = await call.service.job(as_job_id(job_id), call.user)
    full = await call.service.job_definition(as_job_id(job_id), call.user)
    return full if _owner(call, job) else masked(full)


@METHODS.method("scheduler.jobs.logs")
async def logs(call: Call, job_id: Any, start: Any = 0, end: Any = None) -> list[Any]:
    """Log lines [start, end) (0-based): [finished, base64 of the YAML lines]; complete
    lines only, "[]" when there are none. ``finished`` True means nothing can follow."""
    piece = await call.service.job_log(
        as_job_id(job_id), call.user, as_count(start, "start", 0) or 0, as_count(end, "end", None)
    )
    return [piece.finished, xmlrpc.client.Binary((piece.text if piece.count else "[]").encode("utf-8"))]


@METHODS.method("scheduler.jobs.list")
async def jobs_list(
    call: Call,
    state: Any = None,
    health: Any = None,
    start: Any = 0,
    limit: Any = 25,
    since: Any = 0,
    verbose: Any = False,
    duration_at_least: Any = None,
) -> list[dict[str, Any]]:
    """Jobs the caller may see, newest first: id, description, device_type, health, state,
    submitter (+ actual_device, start_time, end_time, error_msg, error_type when verbose).
    ``state``/``health`` in any case; ``since``: finished in the last N minutes;
    ``duration_at_least``: ran N minutes or more; ``limit`` at most 100."""
    jobs = await call.service.jobs(
        call.user, state=as_text(state, "state", True) or None, health=as_text(health, "health", True) or None,
        start=as_count(start, "start", 0) or 0, limit=as_count(limit, "limit", 25) or 0,
        since=as_minutes(since, "since"), duration_at_least=as_minutes(duration_at_least, "duration_at_least"),
    )  # fmt: skip
    listed = []
    for job in jobs:
        entry: dict[str, Any] = {
            "id": display_id(job), "description": job.description, "device_type": job.requested_device_type,
            "health": job.health, "state": job.state, "submitter": job.submitter,
        }  # fmt: skip
        if as_flag(verbose, "verbose"):
            entry.update(actual_device=job.actual_device, start_time=time_text(job.start_time),
                         end_time=time_text(job.end_time), error_msg=job.error_msg, error_type=job.error_type)  # fmt: skip
        listed.append(entry)
    return listed


@METHODS.method("scheduler.jobs.queue")
async def queue(call: Call, device_types: Any = None, start: Any = 0, limit: Any = 25) -> list[dict[str, Any]]:
    """Waiting jobs, in the order the scheduler will consider them: id, description,
    requested_device_type, submitter; ``device_types`` filters."""
    if device_types is not None and not (
        isinstance(device_types, list) and all(isinstance(t, str) for t in device_types)
    ):
        raise ParamError(f"device_types: expected an array of strings, not {kind(device_types)}")
    jobs = await call.service.queue(call.user, device_types, as_count(start, "start", 0) or 0, as_count(limit, "limit", 25) or 0)
    return [{"id": display_id(j), "description": j.description, "requested_device_type": j.requested_device_type,
             "submitter": j.submitter} for j in jobs]  # fmt: skip


def _lava_path(path: str) -> str:
    """``actions[0].boot`` as LAVA's schema errors show it: ``['actions', 0, 'boot']``."""
    keys: list[Any] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        keys.append(int(index) if index else name)
    return str(keys)


@METHODS.method("scheduler.jobs.validate")
async def validate(call: Call, definition: Any, strict: Any = False) -> dict[str, str]:
    """{} for a job that would be accepted, else {path, msg} saying what is wrong (the
    check is submit's; it is always strict about unknown keys)."""
    as_flag(strict, "strict")
    try:
        await call.service.validate(as_text(definition, "definition"))
    except (InvalidJob, NotFound) as exc:
        message = str(exc)
        where, sep, what = message.removeprefix("definition: ").partition(": ")
        if sep and _PATH.match(where):
            return {"path": _lava_path(where), "msg": what}
        return {"path": "", "msg": message}
    return {}


# -- legacy scheduler.* -----------------------------------------------------------------------


@METHODS.method("scheduler.submit_job")
async def submit_job(call: Call, definition: Any) -> int | list[str]:
    """As scheduler.jobs.submit."""
    return await submit(call, definition)


@METHODS.method("scheduler.resubmit_job")
async def resubmit_job(call: Call, job_id: Any) -> int | list[str]:
    """As scheduler.jobs.resubmit."""
    return await resubmit(call, job_id)


@METHODS.method("scheduler.cancel_job")
async def cancel_job(call: Call, job_id: Any) -> bool:
    """As scheduler.jobs.cancel."""
    return await cancel(call, job_id)


@METHODS.method("scheduler.job_details")
async def job_details(call: Call, job_id: Any) -> dict[str, Any]:
    """The job's fields (LAVA's names; ``status`` is the legacy one SQUAD reads), without
    any secret: no token, and the definitions' ``secrets:`` values masked."""
    job = await call.service.job(as_job_id(job_id), call.user)
    return {
        "id": job.id, "sub_id": job.sub_id or "", "description": job.description,
        "priority": job.priority, "submit_time": date_time(job.submit_time),
        "start_time": date_time(job.start_time), "end_time": date_time(job.end_time),
        "state": job.state, "health": job.health, "status": legacy_status(job),
        "health_check": job.health_check, "failure_comment": job.failure_comment,
        "definition": masked(job.definition), "original_definition": masked(job.original_definition),
        "multinode_definition": masked(job.multinode_definition), "target_group": job.target_group,
        "actual_device_id": job.actual_device, "requested_device_type_id": job.requested_device_type,
        "submitter_username": job.submitter, "submitter_email": "",
        "absolute_url": f"/scheduler/job/{display_id(job)}", "is_pipeline": True,
        "is_public": job.is_public, "visibility": visibility(job), "tags": list(job.tags),
        "error_msg": job.error_msg, "error_type": job.error_type,
    }  # fmt: skip


@METHODS.method("scheduler.job_state")
async def job_state(call: Call, job_id: Any) -> dict[str, Any]:
    """{job_id, job_state} (+ sub_id for a MultiNode sub-job)."""
    job = await call.service.job(as_job_id(job_id), call.user)
    return {"job_id": job.id, "job_state": job.state, **({"sub_id": job.sub_id} if job.sub_id else {})}


@METHODS.method("scheduler.job_health")
async def job_health(call: Call, job_id: Any) -> dict[str, Any]:
    """{job_id, job_health} (+ sub_id for a MultiNode sub-job)."""
    job = await call.service.job(as_job_id(job_id), call.user)
    return {"job_id": job.id, "job_health": job.health, **({"sub_id": job.sub_id} if job.sub_id else {})}


@METHODS.method("scheduler.get_publisher_event_socket")
async def get_publisher_event_socket(call: Call) -> str:
    """The ZeroMQ PUB socket of events, as LAVA's EVENT_SOCKET (``tcp://*:5500``); fault
    404 when this worker has none."""
    return await call.service.publisher_event_socket()


# -- results.* ----------------------------------------------------------------------------------


def _measurement(value: Any) -> str:
    """As LAVA's DECIMAL(30, 10) column prints: ``1.5`` -> ``1.5000000000``; ``None``."""
    if value is None:
        return "None"
    try:
        with decimal.localcontext() as context:
            context.prec = 40
            return str(decimal.Decimal(str(value)).quantize(_MEASUREMENT))
    except (decimal.InvalidOperation, ValueError):
        return str(value)


def _logged(stamp: str | None) -> str:
    """The record's time as LAVA's ``logged``: ``2026-01-02 03:04:05.123456+00:00``."""
    try:
        when = datetime.datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp)
    return str(when if when.tzinfo else when.replace(tzinfo=datetime.UTC))


def export(result: ResultRecord) -> dict[str, Any]:
    """One test case as LAVA exports it: every value a string but ``metadata``."""
    metadata = dict(result.metadata)
    start, end = metadata.pop("starttc", None), metadata.pop("endtc", None)
    if isinstance(metadata.get("extra"), dict):
        metadata["extra"] = [{k: v} for k, v in metadata["extra"].items()]
    if result.suite == "lava":  # LAVA keeps a lava case's duration as its measurement
        measurement, unit = metadata.get("duration"), "seconds" if "duration" in metadata else ""
    else:
        measurement, unit = result.measurement, result.units or ""
    return {
        "name": result.name, "job": str(result.job_id), "suite": result.suite, "result": result.result,
        "measurement": _measurement(measurement), "unit": str(unit), "level": metadata.get("level", ""),
        "url": f"/results/testcase/{result.id}", "id": str(result.id), "logged": _logged(result.logged),
        "log_start_line": str(start) if start else "", "log_end_line": str(end) if end else "",
        "metadata": metadata,
    }  # fmt: skip


def _yaml(data: Any) -> str:
    return str(yaml.dump(data, Dumper=_DUMPER, sort_keys=False, default_flow_style=False))


@METHODS.method("results.get_testjob_results_yaml")
async def testjob_results(call: Call, job_id: Any) -> str:
    """Every test case of the job, suite by suite, as a YAML list."""
    results = await call.service.job_results(as_job_id(job_id), call.user)
    order = {suite: n for n, suite in enumerate(dict.fromkeys(r.suite for r in results))}
    return _yaml([export(r) for r in sorted(results, key=lambda r: order[r.suite])])


@METHODS.method("results.get_testsuite_results_yaml")
async def testsuite_results(call: Call, job_id: Any, suite: Any, limit: Any = None, offset: Any = None) -> str:
    """The suite's test cases as a YAML list; ``limit``/``offset`` page them (no limit: all)."""
    page = as_count(limit, "limit", None)
    start = (as_count(offset, "offset", 0) or 0) if page else 0
    results = await call.service.job_results(as_job_id(job_id), call.user, as_text(suite, "suite"), None, page or None, start)
    return _yaml([export(r) for r in results])


@METHODS.method("results.get_testcase_results_yaml")
async def testcase_results(call: Call, job_id: Any, suite: Any, case: Any) -> str:
    """The test cases of that name in the suite (a name can repeat) as a YAML list."""
    results = await call.service.job_results(as_job_id(job_id), call.user, as_text(suite, "suite"), as_text(case, "case"))
    return _yaml([export(r) for r in results])


@METHODS.method("results.get_testjob_suites_list_yaml")
async def testjob_suites(call: Call, job_id: Any) -> str:
    """The job's suites as a YAML list of {name, job, id}."""
    job = await call.service.job(as_job_id(job_id), call.user)
    suites = []
    for name in await call.service.job_suites(as_job_id(job_id), call.user):
        first = await call.service.job_results(as_job_id(job_id), call.user, name, None, 1)
        suites.append({"name": name, "job": str(job.id), "id": str(first[0].id if first else 0)})
    return _yaml(suites)

