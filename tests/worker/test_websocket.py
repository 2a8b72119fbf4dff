"""The event WebSocket at /ws/: lavacli 3.x (unchanged) listens and waits on it; a user sees
only what they may see; a client that reconnects replays what it missed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .helpers import Worker, job_yaml, write_devices
from .test_lavacli import Lavacli

WorkerFactory = Any
TOPIC = "org.lavasoftware"


def events_worker(tmp_path: Path, worker: WorkerFactory, devices: int = 1) -> Worker:
    write_devices(tmp_path / "devices", devices)
    return worker("--event-topic", TOPIC, "--event-port", "0").start()  # type: ignore[no-any-return]


def stop(process: subprocess.Popen[str]) -> str:
    """End a lavacli we started (by PID) and return what it printed."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
    out, _err = process.communicate()
    return out


def subscribers(w: Worker) -> int:
    return int(w.request("GET", "/v1/healthz/", auth=False)["event_subscribers"])


def test_lavacli_events_listen_and_wait(tmp_path: Path, worker: WorkerFactory) -> None:
    w = events_worker(tmp_path, worker)
    lavacli = Lavacli(w, "admin", w.login("admin", admin=True))
    # job ids count from 1: wait for the first job's end before it exists
    waiter = lavacli.popen("events", "wait", "job", "1", "--state", "FINISHED")
    lavacli.env["PYTHONUNBUFFERED"] = "1"  # each event line as it is printed
    listener = lavacli.popen("events", "listen")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(listener.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)  # fmt: skip
    reader.start()
    try:
        w.wait_for(lambda: subscribers(w) == 2, 30, "both lavacli to connect to /ws/")
        (job_id,) = w.submit(job_yaml(name="listened"))
        assert job_id == 1
        assert waiter.wait(60) == 0, stop(waiter)
        w.wait_for(lambda: any("state=Finished" in line for line in lines), 30,
                   "the listener to print the job's end")  # fmt: skip
    finally:
        stop(listener)
        waited = stop(waiter)
    reader.join(10)
    out = "".join(lines)
    assert "Connecting to http://<USERNAME>:<TOKEN>@" in waited
    assert any(f"{TOPIC}.testjob admin - [1] <fast-01> state=Finished health=Complete (listened)" in line
               for line in lines), out  # fmt: skip
    assert any(f"{TOPIC}.device lavaserver - [fast-01] <sim> state=Running health=Good for 1" in line
               for line in lines), out  # fmt: skip


async def _collect(url: str, auth: str | None, until: Any, since: int | None = None) -> list[list[str]]:
    headers = {"Authorization": auth} if auth else {}
    query = f"?since={since}" if since is not None else ""
    got: list[list[str]] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/ws/{query}", headers=headers) as ws:
        async with asyncio.timeout(60):
            async for message in ws:
                frames = json.loads(message.data)
                got.append(frames)
                if until(frames):
                    return got
    return got


def basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def ended(job_id: int) -> Any:
    def check(frames: list[str]) -> bool:
        data = json.loads(frames[4])
        return frames[0].endswith(".testjob") and data.get("job") == str(job_id) and data["state"] == "Finished"

    return check


def test_each_user_sees_what_they_may_see(tmp_path: Path, worker: WorkerFactory) -> None:
    w = events_worker(tmp_path, worker)
    alice = w.login("alice", admin=False)
    bob = w.login("bob", admin=False)
    admin = w.login("admin", admin=True)
    (warm,) = w.submit(job_yaml(name="warm"))
    w.wait_finished([warm])
    seq = w.request("GET", "/v1/healthz/", auth=False)["event_seq"]
    w.token = alice
    w.user = "alice"
    (private,) = w.submit(job_yaml(name="alice's", visibility="personal"))
    w.token, w.user = admin, "admin"
    (public,) = w.submit(job_yaml(name="everybody's"))
    w.wait_finished([private, public])
    seen = {}
    for who, auth in (("alice", basic("alice", alice)), ("bob", basic("bob", bob)),
                      ("admin", basic("admin", admin)), ("anonymous", None)):  # fmt: skip
        got = asyncio.run(_collect(w.url, auth, ended(public), since=seq))
        seen[who] = {json.loads(f[4]).get("job") for f in got if f[0].endswith(".testjob")}
    assert seen["alice"] == seen["admin"] == {str(private), str(public)}
    assert seen["bob"] == seen["anonymous"] == {str(public)}


def test_a_client_that_reconnects_replays_what_it_missed(tmp_path: Path, worker: WorkerFactory) -> None:
    w = events_worker(tmp_path, worker)
    w.login()
    (first,) = w.submit(job_yaml(name="first"))
    w.wait_finished([first])
    before = asyncio.run(_collect(w.url, None, ended(first), since=0))
    seqs = [json.loads(f[4])["seq"] for f in before]
    assert seqs == list(range(1, len(seqs) + 1))  # everything since the start, in order
    last = seqs[-1]
    (second,) = w.submit(job_yaml(name="second"))  # while nobody listens
    w.wait_finished([second])
    missed = asyncio.run(_collect(w.url, None, ended(second), since=last))
    again = [json.loads(f[4])["seq"] for f in missed]
    assert again[0] == last + 1 and again == list(range(last + 1, last + 1 + len(again)))
    assert {json.loads(f[4]).get("job") for f in missed if f[0].endswith(".testjob")} == {str(second)}


async def _first_message(url: str, headers: dict[str, str], query: str = "") -> tuple[Any, bool]:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/ws/{query}", headers=headers) as ws:
        message = await ws.receive(timeout=10)
        closing = await ws.receive(timeout=10)
        return json.loads(message.data), closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


@pytest.mark.parametrize(("headers", "query", "error"), [
    ({"Authorization": "Token abc"}, "", "Only Basic authentication is supported"),
    ({"Authorization": "Basic !!!"}, "", "Invalid basic authentication"),
    ({"Authorization": basic("nobody", "x" * 64)}, "", "Unknown user"),
    ({}, "?since=abc", "since: expected the seq of the last event received, not 'abc'"),
    ({}, "?since=99999", "since: no event 99999"),
])  # fmt: skip
def test_refusals_are_said_in_band_then_closed(
    tmp_path: Path, worker: WorkerFactory, headers: dict[str, str], query: str, error: str
) -> None:
    w = events_worker(tmp_path, worker)
    message, closed = asyncio.run(_first_message(w.url, headers, query))
    assert error in message["error"] and closed


def test_events_off_means_no_websocket(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    w: Worker = worker().start()

    async def attempt() -> int:
        async with aiohttp.ClientSession() as session:
            with contextlib.suppress(aiohttp.WSServerHandshakeError):
                async with session.ws_connect(f"{w.url}/ws/"):
                    return 101
            async with session.get(f"{w.url}/ws/") as response:
                return response.status

    assert asyncio.run(attempt()) == 404
    assert "event_subscribers" not in w.request("GET", "/v1/healthz/", auth=False)
