"""The HTTP listener (aiohttp): a first slice of LAVA's REST API v0.2, and health.

Everything goes through :class:`~lava_dispatcher.worker.service.Service`;
this module only turns requests into calls and records into LAVA's JSON
shapes (reference: api-surface.md §2). XML-RPC (``/RPC2``) is added on the
same application by :func:`make_app`'s callers.

Routes (each with and without its trailing slash):

* ``GET /v1/healthz/`` -> ``{"health": "good"}``
* ``GET /api/v0.2/system/version/``, ``GET /api/v0.2/system/whoami/``
* ``GET /api/v0.2/jobs/`` (``limit``, ``offset``, ``state``, ``health``), ``POST`` submits
  ``{"definition": YAML}`` (JSON or form) -> 201 ``{"message", "job_ids"}``
* ``GET /api/v0.2/jobs/<id>/``, ``GET .../logs/?start=&end=`` (404 when there
  are no lines), ``GET|POST .../cancel/``, ``GET .../tests/``
* ``GET /api/v0.2/devices/``, ``GET /api/v0.2/devices/<hostname>/``

Authentication: ``Authorization: Token <token>`` or ``Basic user:token``;
wrong credentials get 401 ``Invalid token``, a malformed header 400.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lava_dispatcher.worker.errors import (
    AuthFailed,
    BadRequest,
    InvalidJob,
    NotAllowed,
    NotFound,
    WorkerError,
)
from lava_dispatcher.worker.events import EventHub
from lava_dispatcher.worker.service import Service
from lava_dispatcher.worker.store import DeviceRecord, JobRecord, ResultRecord, UserRecord

API = "/api/v0.2"
SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def iso(when: float | None) -> str | None:
    """DRF's rendering of a UTC time: ISO 8601 with ``Z``."""
    if when is None:
        return None
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat()
    return stamp.replace("+00:00", "Z")


def job_json(job: JobRecord) -> dict[str, Any]:
    """LAVA's REST job object (api-surface.md §2.5), without the per-job token."""
    return {
        "id": job.id, "sub_id": job.sub_id, "submitter": job.submitter, "viewing_groups": [],
        "description": job.description, "health_check": job.health_check,
        "requested_device_type": job.requested_device_type, "tags": list(job.tags),
        "actual_device": job.actual_device, "submit_time": iso(job.submit_time),
        "start_time": iso(job.start_time), "end_time": iso(job.end_time), "state": job.state,
        "health": job.health, "priority": job.priority, "definition": job.definition,
        "original_definition": job.original_definition,
        "multinode_definition": job.multinode_definition, "target_group": job.target_group,
        "failure_comment": job.failure_comment, "error_type": job.error_type,
        "error_msg": job.error_msg, "metadata": {}, "failure_tags": [],
    }  # fmt: skip


def device_json(device: DeviceRecord) -> dict[str, Any]:
    return {
        "hostname": device.hostname, "device_type": device.device_type, "device_version": None,
        "physical_owner": None, "physical_group": None, "description": device.description,
        "tags": list(device.tags), "state": device.state, "health": device.health,
        "health_reason": device.health_reason, "current_job": device.current_job,
        "worker_host": None, "is_synced": True,
    }  # fmt: skip


def result_json(result: ResultRecord) -> dict[str, Any]:
    return {
        "id": result.id, "name": result.name, "suite": result.suite, "result": result.result,
        "measurement": result.measurement, "unit": result.units, "level": result.level,
        "logged": result.logged, "log_line": result.line, "metadata": result.metadata,
    }  # fmt: skip


def _user(request: web.Request) -> UserRecord | None:
    user: UserRecord | None = request["user"]
    return user


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who asks (once per request), and service errors as LAVA's HTTP answers."""
    service = request.app[SERVICE]
    if request.path.rstrip("/") == "/ws":
        return await handler(request)  # the WebSocket says who is refused in-band, as LAVA's
    try:
        request["user"] = service.authenticate(request.headers.get("Authorization"))
    except AuthFailed:
        return web.Response(
            status=401, text="Invalid token",
            headers={"WWW-Authenticate": 'Basic realm="XML-RPC Authentication token"'},
        )  # fmt: skip
    except BadRequest as exc:
        return web.json_response({"detail": str(exc)}, status=400)
    try:
        return await handler(request)
    except NotFound as exc:
        return web.json_response({"detail": str(exc)}, status=404)
    except NotAllowed as exc:
        return web.json_response({"detail": str(exc)}, status=401 if exc.anonymous else 403)
    except WorkerError as exc:
        return web.json_response({"detail": str(exc)}, status=400)


def _int(request: web.Request, name: str, default: int | None) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{name}: expected a whole number, not {value!r}") from None


def _page(request: web.Request, items: list[Any], count: int, offset: int, limit: int) -> web.Response:
    def link(at: int) -> str:
        return str(request.url.update_query(offset=at, limit=limit))

    return web.json_response({
        "count": count,
        "next": link(offset + limit) if offset + limit < count else None,
        "previous": link(max(0, offset - limit)) if offset > 0 else None,
        "results": items,
    })  # fmt: skip


async def healthz(request: web.Request) -> web.Response:
    """LAVA's ``{"health": "good"}``; with events on, also how many WebSocket clients listen
    and the last event's ``seq`` (for monitoring, and for tests to know a client is in)."""
    from lava_dispatcher.worker.ws import EVENTS

    body: dict[str, Any] = {"health": "good"}
    hub = request.app.get(EVENTS)
    if hub is not None:
        body["event_subscribers"] = hub.subscribers
        body["event_seq"] = hub.seq
    return web.json_response(body)


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": await request.app[SERVICE].version()})


async def whoami(request: web.Request) -> web.Response:
    return web.json_response({"user": await request.app[SERVICE].whoami(_user(request)) or ""})


async def jobs(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if request.method == "POST":
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"message": "Problem with submitted job data: not JSON"}, status=400)
        else:
            body = dict(await request.post())
        definition = body.get("definition") if isinstance(body, dict) else None
        if not isinstance(definition, str):
            return web.json_response({"message": "Problem with submitted job data: no 'definition'"}, status=400)
        try:
            ids = await service.submit(definition, _user(request))
        except (InvalidJob, NotFound) as exc:
            return web.json_response({"message": f"job submission failed: {exc}"}, status=400)
        job_ids: list[Any] = [int(i) if i.isdigit() else i for i in ids]
        return web.json_response({"message": "job(s) successfully submitted", "job_ids": job_ids}, status=201)
    limit = max(1, min(_int(request, "limit", 50) or 50, 100))
    offset = max(0, _int(request, "offset", 0) or 0)
    state, health = request.query.get("state"), request.query.get("health")
    found = await service.jobs(_user(request), state=state, health=health, start=offset, limit=limit)
    count = await service.jobs_count(_user(request), state=state, health=health)
    return _page(request, [job_json(j) for j in found], count, offset, limit)


async def job(request: web.Request) -> web.Response:
    record = await request.app[SERVICE].job(request.match_info["job_id"], _user(request))
    return web.json_response(job_json(record))


async def job_logs(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    start = _int(request, "start", 0) or 0
    end = _int(request, "end", None)
    piece = await service.job_log(request.match_info["job_id"], _user(request), start, end)
    if not piece.count:
        return web.json_response({"detail": "Not found."}, status=404)
    return web.Response(
        text=piece.text, content_type="application/yaml",
        headers={"Content-Disposition": f"attachment; filename=job_{request.match_info['job_id']}.yaml",
                 "X-Lava-Finished": "1" if piece.finished else "0"},
    )  # fmt: skip


async def job_cancel(request: web.Request) -> web.Response:
    await request.app[SERVICE].cancel(request.match_info["job_id"], _user(request))
    return web.json_response({"message": "Job cancel signal sent."})


async def job_tests(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    limit = _int(request, "limit", 50) or 50
    offset = _int(request, "offset", 0) or 0
    results = await service.job_results(request.match_info["job_id"], _user(request))
    return _page(request, [result_json(r) for r in results[offset : offset + limit]], len(results), offset, limit)


async def devices(request: web.Request) -> web.Response:
    show_all = request.query.get("all") in ("1", "true", "True")
    found = await request.app[SERVICE].devices(show_all)
    limit = _int(request, "limit", 50) or 50
    offset = _int(request, "offset", 0) or 0
    return _page(request, [device_json(d) for d in found[offset : offset + limit]], len(found), offset, limit)


async def device(request: web.Request) -> web.Response:
    return web.json_response(device_json(await request.app[SERVICE].device(request.match_info["hostname"])))


def make_app(service: Service, events: EventHub | None = None) -> web.Application:
    """The aiohttp application; protocol layers add their routes to it before it starts."""
    app = web.Application(middlewares=[errors_and_auth], client_max_size=16 << 20)
    app[SERVICE] = service
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/v1/healthz", healthz),
        ("GET", f"{API}/system/version", version),
        ("GET", f"{API}/system/whoami", whoami),
        ("GET", f"{API}/jobs", jobs),
        ("POST", f"{API}/jobs", jobs),
        ("GET", f"{API}/jobs/{{job_id}}", job),
        ("GET", f"{API}/jobs/{{job_id}}/logs", job_logs),
        ("GET", f"{API}/jobs/{{job_id}}/cancel", job_cancel),
        ("POST", f"{API}/jobs/{{job_id}}/cancel", job_cancel),
        ("GET", f"{API}/jobs/{{job_id}}/tests", job_tests),
        ("GET", f"{API}/devices", devices),
        ("GET", f"{API}/devices/{{hostname}}", device),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, path + "/", handler)
    from lava_dispatcher.worker import ws, xmlrpc

    xmlrpc.add_routes(app)
    ws.add_routes(app, service, events)
    return app
