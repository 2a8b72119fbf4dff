#!/usr/bin/env python3
"""Event notifications: how many events per second reach 100 subscribers, and how soon
after a job's state changes its event arrives.

1. **Fan-out**: the worker's EventHub, its ZeroMQ PUB socket and its ``/ws/``
   WebSocket (the same code as the worker's, on an aiohttp server) in one
   process; 100 subscribers (50 WebSocket, 50 ZeroMQ SUB) in another. The
   publisher sends a burst of events as fast as it can; the rate is events
   divided by the time from the first publish to the last subscriber's last
   event (every subscriber must get every event, in order).
2. **Delay**: a real ``lava-dispatch worker`` with events on runs fast jobs
   one after another while a WebSocket client listens; for each ``Running``
   and ``Finished`` event, the delay is its arrival minus the job's
   ``start_time``/``end_time`` in the event (stamped when the change was
   made, before it was committed).

Usage: .venv/bin/python bench/bench_events.py [--events 5000] [--subscribers 100]
       [--jobs 30] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- 1. fan-out ------------------------------------------------------------------------


def publisher(http_port: int, zmq_port: int, subscribers: int, events: int, ready: Any, go: Any,
              started: Any) -> None:  # fmt: skip
    """The publishing side, in its own process: hub, PUB socket, /ws/ on aiohttp."""
    from aiohttp import web

    from lava_dispatcher.worker import ws
    from lava_dispatcher.worker.events import EventHub
    from lava_dispatcher.worker.zmq_publisher import ZmqPublisher

    async def main() -> None:
        hub = EventHub("org.bench", queue_size=events + 10)
        pub = ZmqPublisher(f"tcp://127.0.0.1:{zmq_port}")
        hub.listeners.append(pub.send)
        app = web.Application()
        ws.add_routes(app, None, hub)  # type: ignore[arg-type]  # anonymous only: no service needed
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", http_port).start()
        ready.set()
        while hub.subscribers < subscribers // 2:
            await asyncio.sleep(0.01)  # the bench waits for its clients, not the worker
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        started.value = time.time()
        for index in range(events):
            hub.publish("device", {"device": "bench", "n": index})
            if index % 50 == 49:
                await asyncio.sleep(0)  # let the WebSocket writers run, as the worker's loop does
        while hub.subscribers:
            await asyncio.sleep(0.05)
        pub.close()
        await runner.cleanup()

    asyncio.run(main())


async def ws_client(port: int, events: int, done: list[float]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{port}/ws/") as sock:
        expected = None
        async for message in sock:
            seq = json.loads(json.loads(message.data)[4])["seq"]
            expected = seq if expected is None else expected + 1
            assert seq == expected, (seq, expected)
            if seq == events:
                done.append(time.time())
                return


def zmq_client(port: int, events: int, done: list[float], connected: Any) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVHWM, events + 10)
    sock.connect(f"tcp://127.0.0.1:{port}")
    connected.release()
    while True:
        frames = sock.recv_multipart()
        if json.loads(frames[4])["seq"] == events:
            done.append(time.time())
            break
    sock.close(linger=0)
    ctx.term()


def fan_out(events: int, subscribers: int) -> dict[str, float]:
    import threading

    http_port, zmq_port = free_port(), free_port()
    ctx = multiprocessing.get_context("spawn")
    ready, go, started = ctx.Event(), ctx.Event(), ctx.Value("d", 0.0)
    process = ctx.Process(target=publisher, args=(http_port, zmq_port, subscribers, events, ready, go, started))
    process.start()
    try:
        assert ready.wait(30), "the publisher did not start"
        ws_done: list[float] = []
        zmq_done: list[float] = []
        connected = threading.Semaphore(0)
        threads = [threading.Thread(target=zmq_client, args=(zmq_port, events, zmq_done, connected), daemon=True)
                   for _ in range(subscribers - subscribers // 2)]  # fmt: skip
        for thread in threads:
            thread.start()
        for _ in threads:
            connected.acquire()

        async def websockets() -> None:
            tasks = [asyncio.create_task(ws_client(http_port, events, ws_done)) for _ in range(subscribers // 2)]
            await asyncio.sleep(1.0)  # ZeroMQ subscriptions settle (PUB drops until they do)
            go.set()
            await asyncio.gather(*tasks)

        asyncio.run(websockets())
        for thread in threads:
            thread.join(120)
        assert len(ws_done) == subscribers // 2 and len(zmq_done) == len(threads), "a subscriber missed events"
        last = max(ws_done + zmq_done)
        return {"events": events, "seconds": last - started.value,
                "rate": events / (last - started.value),
                "ws_rate": events / (max(ws_done) - started.value),
                "zmq_rate": events / (max(zmq_done) - started.value)}
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()


# --- 2. delay on a real worker ---------------------------------------------------------


def delay(jobs: int) -> list[float]:
    import aiohttp

    from lava_dispatcher.sim import child_env

    base = Path(tempfile.mkdtemp(prefix="bench-events-"))
    try:
        devices = base / "devices"
        devices.mkdir()
        (devices / "fast-01.yaml").write_text(yaml.safe_dump(
            {"extends": "sim", "commands": {"users": {"hello": {"do": "echo hello"}}}}))  # fmt: skip
        env = child_env()
        token = subprocess.run([sys.executable, "-m", "lava_dispatcher", "users", "add", "bench", "--admin",
                                "--state-dir", str(base / "state")], capture_output=True, text=True,
                               env=env, check=True).stdout.split()[-1]  # fmt: skip
        worker = subprocess.Popen(
            [sys.executable, "-m", "lava_dispatcher", "worker", "--state-dir", str(base / "state"),
             "--devices", str(devices), "--listen", "127.0.0.1:0", "--event-topic", "org.bench",
             "--event-port", "0"], stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            assert worker.stderr is not None
            url = ""
            for line in worker.stderr:
                if "ready: listening on " in line:
                    url = line.split("ready: listening on ", 1)[1].split()[0]
                    break
            assert url, "the worker did not start"
            job = yaml.safe_dump({"job_name": "bench", "device_type": "sim", "visibility": "public",
                                  "timeouts": {"job": {"seconds": 60}},
                                  "actions": [{"command": {"name": "hello"}}]})  # fmt: skip
            delays: list[float] = []

            def submit() -> int:
                request = urllib.request.Request(
                    f"{url}/api/v0.2/jobs/", data=json.dumps({"definition": job}).encode(),
                    headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
                with urllib.request.urlopen(request) as answer:
                    return int(json.load(answer)["job_ids"][0])

            async def listen() -> None:
                async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/ws/") as sock:
                    loop = asyncio.get_running_loop()
                    wanted = await loop.run_in_executor(None, submit)
                    done = 0
                    async for message in sock:
                        arrived = time.time()
                        topic, _u, _d, _n, raw = json.loads(message.data)
                        data = json.loads(raw)
                        if not topic.endswith(".testjob") or int(data["job"]) != wanted:
                            continue
                        stamp = {"Running": data.get("start_time"), "Finished": data.get("end_time")}.get(data["state"])
                        if stamp:
                            delays.append((arrived - datetime.datetime.fromisoformat(stamp).timestamp()) * 1000)
                        if data["state"] == "Finished":
                            done += 1
                            if done == jobs:
                                return
                            wanted = await loop.run_in_executor(None, submit)

            asyncio.run(listen())
            return sorted(delays)
        finally:
            worker.terminate()
            worker.wait(60)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    fan = fan_out(args.events, args.subscribers)
    print(f"fan-out: {fan['events']} events to {args.subscribers} subscribers in {fan['seconds']:.2f} s: "
          f"{fan['rate']:.0f} events/s (WebSocket {fan['ws_rate']:.0f}/s, ZeroMQ {fan['zmq_rate']:.0f}/s)",
          file=sys.stderr)  # fmt: skip
    lags = delay(args.jobs)
    p50, p95 = statistics.median(lags), lags[min(len(lags) - 1, round(0.95 * (len(lags) - 1)))]
    print(f"delay: {len(lags)} state changes: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {lags[-1]:.1f} ms",
          file=sys.stderr)  # fmt: skip
    if args.markdown:
        print(f"| measure | value |\n|---|---|\n"
              f"| events/s to {args.subscribers} subscribers ({args.subscribers // 2} WebSocket, "
              f"{args.subscribers - args.subscribers // 2} ZeroMQ), {args.events} events | "
              f"**{fan['rate']:.0f}** (WebSocket {fan['ws_rate']:.0f}, ZeroMQ {fan['zmq_rate']:.0f}) |\n"
              f"| state change to its WebSocket event, {len(lags)} changes (ms) | p50 **{p50:.1f}**, "
              f"p95 {p95:.1f}, max {lags[-1]:.1f} |\n\nMachine: {os.cpu_count()} CPUs, "
              f"Python {sys.version.split()[0]}; {datetime.date.today().isoformat()}.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
