"""The event WebSocket at ``/ws/``: what ``lavacli events listen|wait`` and SQUAD use.

As LAVA's (api-surface.md §3.5): a plain GET upgraded to a WebSocket; each
event is one text frame holding the JSON array of its five string frames;
HTTP Basic ``user:token`` is optional, and an authentication failure is said
in-band (``{"error": ...}``) before the connection is closed. A connection
gets only the events of what its user may see: a private job's events go to
its submitter and to admins.

Differences: ``job`` is a string here (``"42"``): ``lavacli events wait job
42`` compares it with its argument, a string, so against LAVA's integer it
never returns. ``.event`` (``lava-test-event``) events are sent too, under
the same rule (LAVA sends them on ZeroMQ only, to everybody). A client
that reconnects asks for what it missed with ``?since=<seq>`` (the ``seq``
of the last event it got): the events kept after it come first. A client too
slow to take its events is disconnected (``{"error": ...}``) rather than
slowing the worker; it reconnects with ``since``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

from lava_dispatcher.worker.errors import AuthFailed, BadRequest
from lava_dispatcher.worker.events import EventHub
from lava_dispatcher.worker.service import Service
from lava_dispatcher.worker.store import UserRecord

PATH = "/ws/"
#: ping every this many seconds (aiohttp's heartbeat; lavacli sends its own too)
HEARTBEAT = 30.0
EVENTS: web.AppKey[EventHub | None] = web.AppKey("events", EventHub)
WS_SERVICE: web.AppKey[Service] = web.AppKey("ws-service", Service)


async def _refuse(ws: web.WebSocketResponse, error: str) -> web.WebSocketResponse:
    """LAVA's in-band refusal: one ``{"error": ...}`` message, then close."""
    with contextlib.suppress(ConnectionError):
        await ws.send_str(json.dumps({"error": error}))
    await ws.close()
    return ws


def _user(service: Service, header: str | None) -> tuple[UserRecord | None, str | None]:
    """(user, None) or (None, LAVA's error text)."""
    if header is None or not header.strip():
        return None, None
    if not header.strip().lower().startswith("basic "):
        return None, "Only Basic authentication is supported"
    try:
        return service.authenticate(header), None
    except AuthFailed:
        return None, "Unknown user"
    except BadRequest:
        return None, "Invalid basic authentication"


async def websocket(request: web.Request) -> web.StreamResponse:
    hub = request.app[EVENTS]
    if hub is None:
        return web.json_response(
            {"detail": "event notifications are off on this worker (set event-topic)"}, status=404
        )
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT)
    await ws.prepare(request)
    user, error = _user(request.app[WS_SERVICE], request.headers.get("Authorization"))
    if error is not None:
        return await _refuse(ws, error)
    since: int | None = None
    raw = request.query.get("since")
    if raw is not None:
        if not raw.isascii() or not raw.isdigit():
            return await _refuse(ws, f"since: expected the seq of the last event received, not {raw!r}")
        since = int(raw)
    try:
        sub = hub.subscribe(after=since)
    except ValueError as exc:
        return await _refuse(ws, f"since: {exc}")
    # the client's own messages (and its close) are read all along
    reading = asyncio.ensure_future(_read(ws))
    try:
        while not ws.closed:
            event = await _next(sub, reading)
            if event is None:
                break
            if event.visible_to(user):
                await ws.send_str(event.ws_text)
        if sub.dropped is not None and not ws.closed:
            await _refuse(ws, f"too slow: {sub.dropped}; reconnect with ?since=<last seq>")
    except ConnectionError:
        pass
    finally:
        hub.unsubscribe(sub)
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await ws.close()
    return ws


async def _next(sub: Any, reading: asyncio.Future[None]) -> Any:
    """The next event, or None when the client left or the subscription ended."""
    getting = asyncio.ensure_future(sub.get())
    await asyncio.wait({getting, reading}, return_when=asyncio.FIRST_COMPLETED)
    if getting.done():
        return getting.result()
    getting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await getting
    return None


async def _read(ws: web.WebSocketResponse) -> None:
    """Take what the client sends (nothing is expected) until it closes."""
    async for message in ws:
        if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            break


def add_routes(app: web.Application, service: Service, hub: EventHub | None) -> None:
    app[EVENTS] = hub
    app[WS_SERVICE] = service
    app.router.add_get(PATH, websocket)
    app.router.add_get(PATH.rstrip("/"), websocket)
