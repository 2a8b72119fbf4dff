"""XML-RPC at /RPC2 through a real xmlrpc.client against a real worker process.

Every method lavacli 3.x calls answers in LAVA's shape; MultiNode sub-job ids
work in both forms; bad input gets LAVA's fault or HTTP error and the store
is the same afterwards.
"""

from __future__ import annotations

import gzip
import re
import socket as socketlib
import sqlite3
import time
import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq

from .helpers import Worker, job_yaml, write_devices

WorkerFactory = Callable[..., Worker]

#: every method lavacli 3.1 calls for jobs, results, devices, device-types, workers, system
LAVACLI_METHODS = {
    "system.version", "system.whoami", "system.api_version", "system.listMethods",
    "system.methodHelp", "system.methodSignature", "system.multicall",
    "scheduler.jobs.submit", "scheduler.jobs.show", "scheduler.jobs.logs", "scheduler.jobs.list",
    "scheduler.jobs.cancel", "scheduler.jobs.resubmit", "scheduler.jobs.definition",
    "scheduler.jobs.validate", "scheduler.jobs.queue", "results.get_testjob_results_yaml",
    "results.get_testsuite_results_yaml", "results.get_testcase_results_yaml",
    "results.get_testjob_suites_list_yaml", "scheduler.devices.list", "scheduler.devices.show",
    "scheduler.devices.update", "scheduler.devices.get_dictionary", "scheduler.devices.tags.add",
    "scheduler.devices.tags.list", "scheduler.devices.tags.delete", "scheduler.device_types.list",
    "scheduler.workers.list", "scheduler.workers.show", "scheduler.submit_job",
    "scheduler.cancel_job", "scheduler.resubmit_job", "scheduler.job_details",
    "scheduler.get_publisher_event_socket",
}  # fmt: skip
SHOW_KEYS = {"id", "description", "device", "device_type", "health_check", "pipeline", "health", "state",
             "submitter", "submit_time", "start_time", "end_time", "tags", "visibility",
             "failure_comment", "error_msg", "error_type"}  # fmt: skip


def proxy(w: Worker, user: str | None = None, token: str | None = None, path: str = "/RPC2") -> Any:
    """xmlrpc.client as lavacli builds it: credentials in the URL, allow_none."""
    host = w.url.split("://", 1)[1]
    credentials = f"{user}:{token}@" if user else ""
    return xmlrpc.client.ServerProxy(f"http://{credentials}{host}{path}", allow_none=True)


def fault(call: Callable[[], Any]) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as raised:
        call()
    return raised.value


def snapshot(state: Path) -> dict[str, list[Any]]:
    """Everything the store holds (tokens without their last use), read-only."""
    db = sqlite3.connect(f"file:{state / 'worker.sqlite3'}?mode=ro", uri=True)
    try:
        tables = {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("jobs", "devices", "users", "results")}
        tables["tokens"] = db.execute("SELECT id, user, hash, created FROM tokens ORDER BY id").fetchall()
        return tables
    finally:
        db.close()


def finished(server: Any, job_id: Any, timeout: float = 60) -> dict[str, Any]:
    """Poll jobs.show as lavacli's ``jobs wait`` does (the test's own loop)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = server.scheduler.jobs.show(job_id)
        if job["state"] == "Finished":
            return job
        assert time.monotonic() < deadline, f"job {job_id} did not finish: {job}"
        time.sleep(0.05)


def post(w: Worker, body: bytes, headers: dict[str, str] | None = None, method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP request to /RPC2: status, headers, body."""
    request = urllib.request.Request(w.url + "/RPC2", data=body if method == "POST" else None, method=method,
                                     headers={"Content-Type": "text/xml", **(headers or {})})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def group_yaml(command: str) -> str:
    """A MultiNode job of two roles, one sim device each, both running ``command``."""
    group = {
        "job_name": "group", "visibility": "public", "timeouts": {"job": {"seconds": 60}},
        "protocols": {"lava-multinode": {"roles": {"server": {"device_type": "sim", "count": 1},
                                                   "client": {"device_type": "sim", "count": 1}},
                                         "timeout": {"seconds": 30}}},
        "actions": [{"command": {"name": command, "role": ["server", "client"]}}],
    }  # fmt: skip
    return yaml.safe_dump(group, sort_keys=False)


def call_body(method: str, *params: Any) -> bytes:
    return xmlrpc.client.dumps(params, method, allow_none=True).encode()


def test_the_methods_lavacli_calls_answer_in_lavas_shapes(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 2)
    w = worker().start()
    admin_token = w.login("admin", admin=True)
    admin, bob, anonymous = proxy(w, "admin", admin_token), proxy(w, "bob", w.login("bob", admin=False)), proxy(w)

    # system.*: the version parses as LAVA's calendar version (lavacli's gates)
    version = admin.system.version()
    assert re.match(r"^(20\d{2})\.(\d{1,2})", version).groups() == ("2026", "07")  # type: ignore[union-attr]
    assert (admin.system.whoami(), bob.system.whoami(), anonymous.system.whoami()) == ("admin", "bob", None)
    assert admin.system.api_version() == 2
    assert set(admin.system.listMethods()) >= LAVACLI_METHODS
    assert admin.system.listMethods() == sorted(admin.system.listMethods())
    assert admin.system.methodHelp("scheduler.jobs.logs").startswith("scheduler.jobs.logs(job_id, start=0, end=None)")
    assert (admin.system.methodSignature("scheduler.jobs.show"), admin.system.methodSignature("nope")) == ("undef", "")
    assert proxy(w, "admin", admin_token, "/RPC2/").system.whoami() == "admin"  # the trailing slash too

    # a job: submit, show, logs, results, definition
    definition = job_yaml("hello", name="first", secrets={"API_KEY": "s3cr3t-0f-the-job"})
    job_id = admin.scheduler.jobs.submit(definition)
    assert job_id == 1
    job = finished(admin, job_id)
    assert set(job) == SHOW_KEYS
    assert (job["id"], job["device"], job["device_type"], job["health"], job["submitter"], job["visibility"],
            job["health_check"], job["pipeline"], job["tags"]) == (1, "fast-01", "sim", "Complete", "admin",
                                                                   "Public", False, True, [])  # fmt: skip
    times = [job[k] for k in ("submit_time", "start_time", "end_time")]
    assert all(isinstance(t, xmlrpc.client.DateTime) and re.fullmatch(r"\d{8}T\d\d:\d\d:\d\d", t.value) for t in times)
    assert times[0].value <= times[1].value <= times[2].value
    assert abs(time.mktime(time.strptime(times[2].value, "%Y%m%dT%H:%M:%S")) - time.mktime(time.gmtime())) < 60

    own = (w.state / "jobs" / "1" / "output" / "logs.yaml").read_text().splitlines(keepends=True)
    done, data = admin.scheduler.jobs.logs(job_id, 0, None)
    assert done is True and isinstance(data, xmlrpc.client.Binary)
    assert data.data.decode() == "".join(own)
    assert [r["msg"] for r in yaml.safe_load(data.data)][-1] == {"definition": "lava", "case": "job", "result": "pass"}
    assert admin.scheduler.jobs.logs("1", 2, 5)[1].data.decode() == "".join(own[2:5])
    assert admin.scheduler.jobs.logs(1, len(own), None)[1].data == b"[]"

    results = yaml.safe_load(admin.results.get_testjob_results_yaml(job_id))
    names = [(r["suite"], r["name"], r["result"]) for r in results]
    assert names[-1] == ("lava", "job", "pass") and ("lava", "user-command", "pass") in names
    for record in results:  # LAVA's export: every value a string, but the metadata
        assert set(record) == {"name", "job", "suite", "result", "measurement", "unit", "level", "url", "id",
                               "logged", "log_start_line", "log_end_line", "metadata"}  # fmt: skip
        assert all(isinstance(v, str) for k, v in record.items() if k != "metadata"), record
        assert record["job"] == "1" and record["url"] == f"/results/testcase/{record['id']}"
    command = next(r for r in results if r["name"] == "user-command")
    assert (command["unit"], command["metadata"]["extra"]) == ("seconds", [{"success": "hello"}])
    assert re.fullmatch(r"\d+\.\d{10}|0E-10", command["measurement"]), command["measurement"]
    assert next(r for r in results if r["name"] == "job")["measurement"] == "None"
    assert yaml.safe_load(admin.results.get_testsuite_results_yaml(1, "lava", 1, 1)) == results[1:2]
    assert yaml.safe_load(admin.results.get_testcase_results_yaml("1", "lava", "job")) == results[-1:]
    assert yaml.safe_load(admin.results.get_testjob_suites_list_yaml(1)) == [{"name": "lava", "job": "1", "id": results[0]["id"]}]

    # the definition: as submitted for its submitter, its secrets masked for others
    assert admin.scheduler.jobs.definition(1) == definition
    assert bob.scheduler.jobs.definition(1) == definition.replace("s3cr3t-0f-the-job", "[MASKED]")
    details = admin.scheduler.job_details(1)
    assert "s3cr3t-0f-the-job" not in repr(details) and "[MASKED]" in details["definition"]
    assert not {"token", "pid", "_state"} & set(details)
    assert (details["id"], details["status"], details["submitter_username"], details["absolute_url"],
            details["is_public"], details["sub_id"]) == (1, "Complete", "admin", "/scheduler/job/1", True, "")  # fmt: skip
    assert admin.scheduler.job_state(1) == {"job_id": 1, "job_state": "Finished"}
    assert admin.scheduler.job_health(1) == {"job_id": 1, "job_health": "Complete"}

    # lists
    assert admin.scheduler.submit_job(job_yaml("hello", name="second")) == 2
    finished(admin, 2)
    listed = admin.scheduler.jobs.list(None, None, 0, 25, 0, False)
    assert [j["id"] for j in listed] == [2, 1]
    assert set(listed[0]) == {"id", "description", "device_type", "health", "state", "submitter"}
    verbose = admin.scheduler.jobs.list("FINISHED", "complete", 1, 25, 60, True)
    assert [(j["id"], j["actual_device"]) for j in verbose] == [(1, "fast-01")]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+00:00", verbose[0]["end_time"])
    assert admin.scheduler.jobs.list("RUNNING", None, 0, 25, None, False, 1) == []

    # validate: {} for a good job, {path, msg} for a bad one; resubmit
    assert admin.scheduler.jobs.validate(job_yaml(), False) == {}
    assert admin.scheduler.jobs.validate(job_yaml().replace("seconds: 60", "seconds: soon"), True) == {
        "path": "['timeouts', 'job', 'seconds']", "msg": "got 'soon'; expected a positive integer"}  # fmt: skip
    assert admin.scheduler.jobs.resubmit(2) == 3
    assert admin.scheduler.resubmit_job("1") == 4
    finished(admin, 3), finished(admin, 4)

    # multicall: each answer in a list, a failure inline as a fault struct
    calls = [{"methodName": "system.whoami", "params": []}, {"methodName": "no.such", "params": []},
             {"methodName": "scheduler.job_state", "params": [3]}]  # fmt: skip
    assert admin.system.multicall(calls) == [["admin"], {"faultCode": -32601, "faultString": "No such method: 'no.such'"},
                                             [{"job_id": 3, "job_state": "Finished"}]]  # fmt: skip

    # devices, device types, workers
    assert admin.scheduler.devices.list() == [
        {"hostname": f"fast-0{n}", "type": "sim", "health": "Good", "state": "Idle", "current_job": None, "pipeline": True}
        for n in (1, 2)
    ]
    worker_name = admin.scheduler.workers.list(False)[0]
    assert admin.scheduler.devices.show("fast-01") == {
        "hostname": "fast-01", "device_type": "sim", "health": "Good", "state": "Idle", "health_job": False,
        "description": "", "pipeline": True, "has_device_dict": True, "worker": worker_name,
        "current_job": None, "tags": [], "permissions": []}  # fmt: skip
    assert yaml.safe_load(admin.scheduler.devices.get_dictionary("fast-02", True, None).data)["extends"] == "sim"
    assert admin.scheduler.device_types.list(False) == [{"name": "sim", "devices": 2, "installed": True, "template": True}]
    shown = admin.scheduler.workers.show(worker_name)
    assert (shown["devices"], shown["state"], shown["health"]) == (["fast-01", "fast-02"], "Online", "Active")
    assert isinstance(shown["last_ping"], xmlrpc.client.DateTime)
    admin.scheduler.devices.tags.add("fast-01", "usb")
    assert admin.scheduler.devices.tags.list("fast-01") == ["usb"]
    admin.scheduler.devices.tags.delete("fast-01", "usb")
    assert admin.scheduler.devices.tags.list("fast-01") == []

    # health, as lavacli's 'devices update' sends it (9 arguments for 2025.12 and later)
    for name in ("fast-01", "fast-02"):
        admin.scheduler.devices.update(name, None, None, None, None, "MAINTENANCE", "on the bench", None, "rewiring")
    assert [(d["health"]) for d in admin.scheduler.devices.list()] == ["Maintenance", "Maintenance"]
    assert admin.scheduler.devices.show("fast-01")["description"] == "on the bench"
    # no device is Good: a job waits in the queue, and is canceled there
    waiting = admin.scheduler.jobs.submit(job_yaml(name="waiting"))
    assert admin.scheduler.jobs.queue(None, 0, 25) == [{"id": waiting, "description": "waiting",
                                                        "requested_device_type": "sim", "submitter": "admin"}]  # fmt: skip
    assert admin.scheduler.jobs.queue(["qemu"], 0, 25) == []
    assert [j["id"] for j in admin.scheduler.jobs.list("submitted", None, 0, 25, 0, False)] == [waiting]
    assert admin.scheduler.jobs.cancel(waiting) is True
    assert admin.scheduler.jobs.show(waiting)["health"] == "Canceled"
    assert admin.scheduler.cancel_job(waiting) is True  # a finished job stays as it is
    admin.scheduler.devices.update("fast-01", None, None, None, None, "GOOD", None)  # 7 arguments: older lavacli
    assert admin.scheduler.devices.show("fast-01")["health"] == "Good"

    # events are off on this worker: a clear 404 rather than a dead address
    socket = fault(admin.scheduler.get_publisher_event_socket)
    assert (socket.faultCode, socket.faultString) == (
        404, "This worker publishes no events over ZeroMQ: events are off (no event-topic).")  # fmt: skip


def test_the_event_socket_given_is_the_one_events_come_from(tmp_path: Path, worker: WorkerFactory) -> None:
    with socketlib.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_devices(tmp_path / "devices", 1)
    w = worker("--event-topic", "org.lavasoftware", "--event-port", str(port)).start()
    admin = proxy(w, "admin", w.login())
    address = proxy(w).scheduler.get_publisher_event_socket()  # SQUAD asks anonymously
    assert address == f"tcp://127.0.0.1:{port}"
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(address)
        deadline = time.monotonic() + 30
        while not sub.poll(200):  # a new subscriber misses what is sent while it joins: ask again
            assert time.monotonic() < deadline, "no event on the socket the worker gave"
            health = "MAINTENANCE" if admin.scheduler.devices.show("fast-01")["health"] == "Good" else "GOOD"
            admin.scheduler.devices.update("fast-01", None, None, None, None, health, None)
        topic, *_rest = sub.recv_multipart()
        assert topic == b"org.lavasoftware.device"
    finally:
        sub.close(linger=0)
        context.term()


@pytest.mark.slow
def test_multinode_sub_jobs_answer_to_both_their_ids(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 2)
    w = worker().start()
    admin = proxy(w, "admin", w.login())
    text = group_yaml("ticker")
    assert admin.scheduler.jobs.submit(text) == ["1.0", "1.1"]
    deadline = time.monotonic() + 60
    while admin.scheduler.jobs.show("1.1")["state"] != "Running" or len(admin.scheduler.jobs.logs(2, 0, None)[1].data) < 2000:
        assert time.monotonic() < deadline, admin.scheduler.jobs.show("1.1")
        time.sleep(0.1)
    # "1.1" and its own id 2 are the same job, everywhere
    assert admin.scheduler.jobs.show(2) == admin.scheduler.jobs.show("1.1")
    assert admin.scheduler.jobs.show("2")["id"] == "1.1"
    assert admin.scheduler.job_state("1.1") == {"job_id": 2, "job_state": "Running", "sub_id": "1.1"}
    assert admin.scheduler.jobs.definition("1.1") == text == admin.scheduler.jobs.definition(1)
    assert admin.scheduler.job_details(2)["sub_id"] == "1.1"
    assert [j["id"] for j in admin.scheduler.jobs.list(None, None, 0, 25, 0, False)] == ["1.1", "1.0"]
    # canceling one sub-job cancels the group
    assert admin.scheduler.jobs.cancel("1.0") is True
    assert {finished(admin, i)["health"] for i in ("1.0", 2)} == {"Canceled"}
    first = admin.scheduler.jobs.logs("1.1", 0, None)[1].data
    assert first == admin.scheduler.jobs.logs(2, 0, None)[1].data and b"tick" in first
    assert yaml.safe_load(admin.results.get_testjob_results_yaml("1.1"))[0]["job"] == "2"
    # resubmitting a sub-job resubmits the whole group
    assert admin.scheduler.jobs.resubmit("1.1") == ["3.0", "3.1"]
    admin.scheduler.jobs.cancel("3.1")
    assert {finished(admin, i)["health"] for i in ("3.0", "3.1")} == {"Canceled"}


XML_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lollollollollollollollollollol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<methodCall><methodName>scheduler.jobs.submit</methodName><params><param><value><string>&lol9;</string></value></param></params></methodCall>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE call [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<methodCall><methodName>scheduler.jobs.submit</methodName><params><param><value><string>&secret;</string></value></param></params></methodCall>"""


def test_bad_input_gets_the_right_fault_and_changes_nothing(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    w = worker().start()
    admin_token = w.login("admin", admin=True)
    admin = proxy(w, "admin", admin_token)
    bob_token = w.login("bob", admin=False)
    bob, eve, anonymous = proxy(w, "bob", bob_token), proxy(w, "eve", w.login("eve", admin=False)), proxy(w)
    private = bob.scheduler.jobs.submit(job_yaml("hello", visibility="personal"))
    finished(bob, private)
    before = snapshot(w.state)
    huge = job_yaml().replace("job_name: fast", "job_name: " + "x" * (17 << 20))

    faults: list[tuple[Callable[[], Any], int, str]] = [
        # submissions
        (lambda: admin.scheduler.jobs.submit("device_type: sim\nactions: ["), 400, "definition:"),
        (lambda: admin.scheduler.jobs.submit("- a list"), 400, "expected a job (a mapping)"),
        (lambda: admin.scheduler.jobs.submit(job_yaml("nope")), 400, "unknown user command 'nope'"),
        (lambda: admin.scheduler.jobs.submit(job_yaml().replace("device_type: sim", "device_type: bbb")), 404,
         "Device type 'bbb' has no device on this worker (device types here: sim)."),
        (lambda: admin.scheduler.submit_job(job_yaml().replace("job_name", "job_nam")), 400, "job_nam"),
        (lambda: anonymous.scheduler.jobs.submit(job_yaml()), 401, "Authentication with user and token required"),
        (lambda: admin.scheduler.jobs.submit(42), -32602, "definition: expected a string, not int"),
        # another user's private job, and jobs that do not exist
        *[(lambda m=m: m(private), 403, f"Job '{private}' not available to user 'eve'.")
          for m in (eve.scheduler.jobs.show, eve.scheduler.jobs.definition, eve.scheduler.job_details,
                    eve.scheduler.jobs.cancel, eve.scheduler.jobs.resubmit,
                    eve.results.get_testjob_results_yaml, lambda i: eve.scheduler.jobs.logs(i, 0, None))],
        (lambda: anonymous.scheduler.jobs.show(private), 401, "not available to user 'anonymous'"),
        (lambda: anonymous.scheduler.jobs.cancel(private), 401, "Authentication with user and token required"),
        (lambda: admin.scheduler.jobs.show(999), 404, "Job '999' was not found."),
        (lambda: admin.scheduler.jobs.show("99999999999999999999999"), 404, "was not found"),
        (lambda: admin.scheduler.jobs.show("7.3"), 404, "Job '7.3' was not found."),
        (lambda: admin.scheduler.jobs.cancel(""), 400, "TestJob id was not specified"),
        (lambda: admin.scheduler.jobs.show(1.5), -32602, "job id: expected an integer or a string"),
        (lambda: admin.results.get_testsuite_results_yaml(private, "0_nope"), 404, "Specified test suite not found."),
        (lambda: admin.scheduler.jobs.list("Sleeping"), 400, "Invalid state 'Sleeping'"),
        (lambda: admin.scheduler.jobs.list(None, None, -1), -32602, "start: expected a whole number"),
        # devices: only admins change them, and only to what exists
        (lambda: bob.scheduler.devices.update("fast-01", None, None, None, None, "MAINTENANCE", None), 403, "User 'bob' may not change a device"),
        (lambda: anonymous.scheduler.devices.update("fast-01", None, None, None, None, "BAD", None), 401, "Authentication"),
        (lambda: admin.scheduler.devices.update("fast-01", None, None, None, None, "BROKEN", "new text"), 400, "Invalid health 'BROKEN'"),
        (lambda: admin.scheduler.devices.update("fast-01", None, None, None, None, None, "x", "qemu"), 400, "its type is set by its device file"),
        (lambda: admin.scheduler.devices.update("fast-01", None, "bob", None, None, "BAD", None), 400, "physical owner"),
        (lambda: admin.scheduler.devices.update("fast-01", "elsewhere", None, None, None, "BAD", None), 404, "Unable to find worker 'elsewhere'"),
        (lambda: admin.scheduler.devices.update("nope", None, None, None, None, "BAD", None), 404, "Device 'nope' was not found."),
        (lambda: bob.scheduler.devices.tags.add("fast-01", "usb"), 403, "may not tag a device"),
        (lambda: anonymous.scheduler.devices.get_dictionary("fast-01"), 401, "Authentication"),
        (lambda: admin.scheduler.workers.show("elsewhere"), 404, "Worker 'elsewhere' was not found."),
        # the call itself
        (lambda: admin.no.such.method(), -32601, "No such method: 'no.such.method'"),
        (lambda: admin.scheduler.jobs.show(), -32602, "scheduler.jobs.show(job_id): 0 arguments given"),
        (lambda: admin.system.multicall([{"methodName": "system.multicall", "params": [[]]}]), 0, ""),
    ]  # fmt: skip
    for call, code, message in faults:
        if code == 0:  # multicall answers inline
            assert call() == [{"faultCode": -32602, "faultString": "system.multicall cannot be nested"}]
            continue
        raised = fault(call)
        assert raised.faultCode == code and message in raised.faultString, (code, message, raised)

    # the transport: credentials, methods, sizes, XML that is not a call
    call = call_body("scheduler.jobs.submit", job_yaml())
    for header in (w.basic("admin", "wrong"), w.basic("nobody", admin_token), w.basic("bob", admin_token)):
        status, headers, body = post(w, call, {"Authorization": header})
        assert (status, body, headers["WWW-Authenticate"]) == (401, b"Invalid token", 'Basic realm="XML-RPC Authentication token"')
    for header in ("Basic !!!", "Basic " + "YWRtaW4=", "Bearer x"):
        assert post(w, call, {"Authorization": header})[0] == 400
    assert post(w, b"", method="GET")[0] == 405
    assert post(w, call_body("scheduler.jobs.submit", huge), {"Authorization": w.basic("admin", admin_token)})[0] == 413
    bomb = gzip.compress(call_body("system.version")[:-20] + b" " * (64 << 20) + call_body("system.version")[-20:])
    assert post(w, bomb, {"Content-Encoding": "gzip"})[0] == 413
    started = time.monotonic()
    for body, code, message in [
        (XML_BOMB, -32600, "a document type declaration (<!DOCTYPE>) is not allowed"),
        (EXTERNAL_ENTITY, -32600, "a document type declaration (<!DOCTYPE>) is not allowed"),
        (b"definitely not XML", -32700, "not well-formed XML: syntax error: line 1, column 0"),
        (b"", -32700, "not well-formed XML: no element found"),
        (b"<methodCall><params></params></methodCall>", -32600, "no <methodName>"),
        (xmlrpc.client.dumps(("x",), methodresponse=True).encode(), -32600, "no <methodName>"),
        (xmlrpc.client.dumps(xmlrpc.client.Fault(1, "x"), methodresponse=True).encode(), -32600, "a fault is an answer"),
        (call_body("system.version").replace(b"<params>", b"<params>" + b"<x>" * 100) .replace(b"</params>", b"</x>" * 100 + b"</params>"),
         -32600, "elements nested deeper than 64"),
        (b"<methodCall><methodName>system.version</methodName><params><param><value><int>12x</int></value></param></params></methodCall>",
         -32600, "not an XML-RPC call: ValueError"),
        (call_body("scheduler.jobs.logs", private, 0, 7).replace(b"<int>7</int>", b"<i8>1099511627776</i8>"),
         -32602, "end: expected a whole number from 0 to 2147483647, not 1099511627776"),
    ]:  # fmt: skip
        status, headers, answer = post(w, body, {"Authorization": w.basic("admin", admin_token)})
        assert (status, headers["Content-Type"]) == (200, "application/xml; charset=utf-8")
        raised = fault(lambda answer=answer: xmlrpc.client.loads(answer))
        assert (raised.faultCode, message in raised.faultString) == (code, True), raised
    assert time.monotonic() - started < 10  # the bomb did not expand

    # nothing changed, and the worker still answers
    assert snapshot(w.state) == before
    assert admin.system.whoami() == "admin"
    assert "Traceback" not in w.output()
