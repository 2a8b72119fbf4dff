"""Issue 8's must-show 2 through a real worker: one job's notify block, a callback (POST,
json, dataset all) to an HTTP receiver, an email to aiosmtpd and an IRC message to an IRC
server, all run by the test on loopback; each delivered once per matching state change
with LAVA's payload fields; a receiver that is down is retried and the job is not held."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import Worker, job_yaml, write_devices
from .test_notify_receivers import HttpReceiver, IrcServer, SmtpReceiver, free_port

WorkerFactory = Any


class Receivers:
    """The receivers on an event loop of their own (the worker is another process)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.http = HttpReceiver()
        self.smtp = SmtpReceiver()
        self.irc = IrcServer(known_nicks=("alice",))
        self.late: HttpReceiver | None = None

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __enter__(self) -> Receivers:
        self.thread.start()
        for receiver in (self.http, self.smtp, self.irc):
            self.call(receiver.__aenter__())
        return self

    def start_late(self, port: int) -> None:
        """A receiver that comes up on ``port`` only now."""
        self.late = HttpReceiver(port=port)
        self.call(self.late.__aenter__())

    def __exit__(self, *exc: object) -> None:
        for receiver in (self.http, self.smtp, self.irc, self.late):
            if receiver is not None:
                self.call(receiver.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    with Receivers() as running:
        yield running


def notifying_worker(tmp_path: Path, worker: WorkerFactory, r: Receivers) -> Worker:
    write_devices(tmp_path / "devices", 1)
    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump({"notify": {
        "url": "http://lava.test",
        "smtp": {"host": "127.0.0.1", "port": r.smtp.port, "sender": "lava@lava.test"},
        "irc": {"nick": "lava-bot"},
        "retry": {"attempts": 6, "delay": 0.2, "factor": 2.0},
    }}))  # fmt: skip
    return worker("--config", str(config)).start()  # type: ignore[no-any-return]


def test_one_job_notifies_by_callback_email_and_irc(
    tmp_path: Path, worker: WorkerFactory, receivers: Receivers
) -> None:
    w = notifying_worker(tmp_path, worker, receivers)
    w.login()
    notify = {
        "criteria": {"status": "all"},
        "verbosity": "verbose",
        "recipients": [
            {"to": {"method": "email", "email": "ops@lava.test"}},
            {"to": {"method": "irc", "handle": "alice", "server": receivers.irc.server}},
        ],
        "callbacks": [{"url": f"{receivers.http.url}/lava/{{ID}}/{{STATUS_STRING}}",
                       "method": "POST", "dataset": "all", "content-type": "json",
                       "token": "ci-secret", "header": "X-Lava-Token"}],
    }  # fmt: skip
    started = time.monotonic()
    (job_id,) = w.submit(job_yaml(name="notified", notify=notify))
    assert w.wait_finished([job_id])[str(job_id)]["health"] == "Complete"
    w.wait_for(lambda: len(receivers.http.requests) >= 2 and len(receivers.smtp.mails) >= 2
               and len(receivers.irc.messages) >= 2, 30, "the deliveries")  # fmt: skip
    assert time.monotonic() - started < 20
    # status "all": once when Running, once when Finished, for each of the three
    paths = [r.path for r in receivers.http.requests]
    assert paths == [f"/lava/{job_id}/running", f"/lava/{job_id}/complete"], paths
    final = receivers.http.requests[-1]
    assert final.method == "POST" and final.headers["X-Lava-Token"] == "ci-secret"
    assert final.headers["Content-Type"].startswith("application/json")
    payload = json.loads(final.body)
    for key in ("id", "status", "status_string", "state", "state_string", "health",
                "health_string", "submit_time", "start_time", "end_time", "submitter_username",
                "failure_comment", "priority", "description", "actual_device_id", "definition",
                "metadata", "health_check", "log", "results"):  # fmt: skip
        assert key in payload, key
    assert (payload["id"], payload["status"], payload["status_string"]) == (job_id, 2, "complete")
    assert payload["actual_device_id"] == "fast-01" and payload["description"] == "notified"
    assert "lava" in payload["results"] and "- {" in payload["log"]
    subjects = [m.message["Subject"] for m in receivers.smtp.mails]
    assert subjects == [f"LAVA notification for Test Job {job_id} notified"] * 2
    assert all(m.recipients == ["ops@lava.test"] and m.sender == "lava@lava.test"
               for m in receivers.smtp.mails)  # fmt: skip
    assert [to for _nick, to, _text in receivers.irc.messages] == ["alice", "alice"]
    assert str(job_id) in receivers.irc.messages[-1][2]
    time.sleep(0.5)  # nothing more comes: once per matching change
    assert (len(receivers.http.requests), len(receivers.smtp.mails), len(receivers.irc.messages)) == (2, 2, 2)


def test_a_receiver_that_is_down_is_retried_and_holds_nothing(
    tmp_path: Path, worker: WorkerFactory, receivers: Receivers
) -> None:
    w = notifying_worker(tmp_path, worker, receivers)
    w.login()
    port = free_port()  # nobody listens there yet
    notify = {"criteria": {"status": "finished"},
              "callbacks": [{"url": f"http://127.0.0.1:{port}/done/{{ID}}", "method": "POST",
                             "dataset": "minimal", "content-type": "json"}]}  # fmt: skip
    started = time.monotonic()
    (job_id,) = w.submit(job_yaml(name="early", notify=notify))
    (other,) = w.submit(job_yaml(name="next"))
    finished = w.wait_finished([job_id, other])
    assert {j["health"] for j in finished.values()} == {"Complete"}
    assert time.monotonic() - started < 10  # the dead receiver held no job
    receivers.start_late(port)
    assert receivers.late is not None
    w.wait_for(lambda: receivers.late.requests if receivers.late else None, 30, "the retried callback")
    assert [r.path for r in receivers.late.requests] == [f"/done/{job_id}"]
