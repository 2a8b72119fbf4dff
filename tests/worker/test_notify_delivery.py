"""Notifications end to end: a notify block, job state changes, real receivers on loopback.

Jobs are real records in a Store in the test's directory; the receivers are
an aiohttp server, aiosmtpd and a small IRC server (test_notify_receivers).
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml

from lava_dispatcher.worker.definitions import job_columns
from lava_dispatcher.worker.notify import (
    CallbackSettings,
    Contact,
    IrcSettings,
    MemoryRecords,
    Notifier,
    NotifySettings,
    RetrySettings,
    SmtpSettings,
    SqliteRecords,
    StoreLookup,
)
from lava_dispatcher.worker.notify.records import ABANDONED, DELIVERED, FAILED, RESTARTED
from lava_dispatcher.worker.store import (
    CANCELED,
    COMPLETE,
    FINISHED,
    INCOMPLETE,
    RUNNING,
    UNKNOWN,
    JobRecord,
    Store,
)

from .test_notify_receivers import (
    LOOPBACK,
    HttpReceiver,
    IrcServer,
    SmtpReceiver,
    free_port,
    run,
    until,
)

#: every field of LAVA's minimal callback dataset
MINIMAL = {
    "id", "status", "status_string", "state", "state_string", "health", "health_string",
    "submit_time", "start_time", "end_time", "submitter_username", "submitter_email",
    "failure_comment", "priority", "description", "actual_device_id", "definition",
    "metadata", "health_check",
}  # fmt: skip
LAVA_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?\+00:00$")
LOG_TEXT = '- {"dt": "2026-08-21T10:00:00.000001", "lvl": "info", "msg": "start"}\n'


def settings(smtp_port: int = 1, **changes: Any) -> NotifySettings:
    values: dict[str, Any] = {
        "url": "http://lava.test",
        "worker": "worker-1",
        "smtp": SmtpSettings(host=LOOPBACK, port=smtp_port, sender="lava@lab.test", timeout=2),
        "irc": IrcSettings(timeout=5),
        "callbacks": CallbackSettings(timeout=1.0),
        "retry": RetrySettings(attempts=4, delay=0.05, factor=2, max_delay=1),
        "users": {
            "alice": Contact(email="alice@lab.test", first_name="Alice", last_name="Liddell",
                             tokens={"ci-callback": "s3cret-value"}),
            "bob": Contact(email="bob@lab.test", irc_handle="bob"),
        },
        "device_owners": {"qemu01": "bob"},
    }
    values.update(changes)
    return NotifySettings(**values)


class Lab:
    """A store with one device, jobs made from notify blocks, and their state changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = Store(root / "state")
        self.store.sync_devices({"qemu01": ("qemu", str(root / "qemu01.yaml"))})

    def notifier(self, notify_settings: NotifySettings, records: Any = None) -> Notifier:
        lookup = StoreLookup(self.store, self.root / "state" / "jobs", notify_settings.users,
                             notify_settings.device_owners)  # fmt: skip
        return Notifier(notify_settings, records or MemoryRecords(), lookup)

    def job(self, notify: dict[str, Any] | None, name: str = "smoke", submitter: str = "alice", **extra: Any) -> JobRecord:
        definition = {"job_name": name, "device_type": "qemu", "priority": "medium", **extra}
        if notify is not None:
            definition["notify"] = notify
        text = yaml.safe_dump(definition, sort_keys=False)
        columns = job_columns(text, submitter)
        columns.update(id=self.store.next_job_id(), requested_device_type="qemu")
        (job,) = self.store.insert_jobs([columns])
        return job

    def move(self, job: JobRecord, state: str, health: str = UNKNOWN, **values: Any) -> tuple[JobRecord, JobRecord]:
        """Change a job's state in the store: (before, after)."""
        before = self.store.job(job.id)
        if state == RUNNING:
            values.setdefault("start_time", time.time())
            values.setdefault("actual_device", "qemu01")
        if state == FINISHED:
            values.setdefault("end_time", time.time())
        self.store.update_job(job.id, state=state, health=health, **values)
        return before, self.store.job(job.id)

    def results(self, job: JobRecord, *cases: tuple[str, str, str]) -> None:
        self.store.add_results(job.id, [
            (n + 1, {"definition": suite, "case": case, "result": result}, "2026-08-21T10:00:01.000002")
            for n, (suite, case, result) in enumerate(cases)
        ])  # fmt: skip

    def log(self, job: JobRecord, text: str = LOG_TEXT) -> None:
        path = self.root / "state" / "jobs" / str(job.id) / "output" / "logs.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path)
    yield made
    made.store.close()


def timed(notifier: Notifier, before: JobRecord | None, after: JobRecord) -> float:
    """Call job_changed as the worker does; how long the caller was held."""
    start = time.perf_counter()
    notifier.job_changed(before, after)
    return time.perf_counter() - start


# -- the whole story ---------------------------------------------------------------------------


def test_each_delivery_once_per_matching_state_change_with_lavas_payload(lab: Lab) -> None:
    async def scenario() -> None:
        async with HttpReceiver() as http, SmtpReceiver() as smtp, IrcServer() as irc_server:
            notifier = lab.notifier(settings(smtp.port, users={
                **settings().users, "bob": Contact(irc_handle="bob", irc_server=irc_server.server)}))  # fmt: skip
            notify = {
                "criteria": {"status": "all"},
                "verbosity": "verbose",
                "recipients": [
                    {"to": {"method": "email", "email": "ops@lab.test"}},
                    {"to": {"method": "irc", "handle": "alice", "server": irc_server.server}},
                    {"to": {"method": "irc", "user": "bob"}},
                ],
                "callbacks": [{
                    "url": http.url + "/cb/{ID}?status={STATUS}&s={ STATUS_STRING }",
                    "method": "POST", "dataset": "all", "content-type": "json", "token": "ci-callback",
                }],
            }  # fmt: skip
            job = lab.job(notify, metadata={"build": 42, "flag": True})
            lab.log(job)
            try:
                held = [timed(notifier, *lab.move(job, RUNNING))]
                await notifier.idle()
                lab.results(job, ("lava", "job", "pass"), ("0_smoke", "boot", "pass"))
                held.append(timed(notifier, *lab.move(job, FINISHED, COMPLETE)))
                await notifier.idle()
                # the same change told twice, and changes that notify nobody: nothing more is sent
                notifier.job_changed(lab.store.job(job.id), lab.store.job(job.id))
                notifier.job_changed(None, lab.store.job(job.id))
                await notifier.idle()
                records = notifier.deliveries(job.id)
            finally:
                await notifier.close()
        assert max(held) < 0.05, held

        # callbacks: one per state change, LAVA's fields, the token raw in the header
        assert [(r.method, r.path, r.query) for r in http.requests] == [
            ("POST", f"/cb/{job.id}", {"status": "1", "s": "running"}),
            ("POST", f"/cb/{job.id}", {"status": "2", "s": "complete"}),
        ]
        for request in http.requests:
            assert request.headers["Authorization"] == "s3cret-value"
            assert request.headers["Content-Type"] == "application/json"
        running, finished = (json.loads(r.body) for r in http.requests)
        assert set(running) == set(finished) == MINIMAL | {"log", "results"}
        stored = lab.store.job(job.id)
        assert finished == {
            **{k: finished[k] for k in ("submit_time", "start_time", "end_time", "log", "results")},
            "id": job.id, "status": 2, "status_string": "complete", "state": 5, "state_string": "Finished",
            "health": 1, "health_string": "Complete", "submitter_username": "alice",
            "submitter_email": "alice@lab.test", "failure_comment": None, "priority": 50,
            "description": "smoke", "actual_device_id": "qemu01", "definition": stored.definition,
            "metadata": [{"build": "42"}, {"flag": "true"}], "health_check": False,
        }  # fmt: skip
        assert (running["status"], running["state"], running["health"], running["end_time"]) == (1, 3, 0, "None")
        assert all(LAVA_TIME.match(finished[k]) for k in ("submit_time", "start_time", "end_time"))
        assert finished["log"] == LOG_TEXT and running["results"] == {}
        assert list(finished["results"]) == ["lava", "0_smoke"]
        (boot,) = yaml.safe_load(finished["results"]["0_smoke"])
        assert {k: boot[k] for k in ("name", "suite", "result", "job", "measurement", "unit", "log_end_line")} == {
            "name": "boot", "suite": "0_smoke", "result": "pass", "job": str(job.id),
            "measurement": "None", "unit": "None", "log_end_line": "2",
        }  # fmt: skip
        assert LAVA_TIME.match(boot["logged"]) and boot["url"] == f"/results/testcase/{boot['id']}"
        # LAVA keeps the first POST's payload beside the job's output
        with gzip.open(lab.root / "state" / "jobs" / str(job.id) / "job_data.gz", "rt") as stream:
            assert json.load(stream) == running

        # email: LAVA's subject, our body by verbosity
        assert [(m.sender, m.recipients) for m in smtp.mails] == [("lava@lab.test", ["ops@lab.test"])] * 2
        assert smtp.mails[0].message["Subject"] == f"LAVA notification for Test Job {job.id} smoke"
        first, last = (m.body for m in smtp.mails)
        assert f"Job {job.id} (smoke) is now Running, health Unknown." in first and "Results:" not in first
        assert f"Job {job.id} (smoke) is now Finished, health Complete." in last
        assert f"http://lava.test/scheduler/job/{job.id}" in last
        assert "Hostname: qemu01" in last and "build: 42" in last and "    boot: pass" in last
        assert "No finished job to compare with." in last

        # IRC: the handle given, and a user's handle from the settings
        said = sorted((to, re.sub(r" on [-0-9: ]+UTC", "", text)) for _nick, to, text in irc_server.messages)
        line = f"Job {job.id} (smoke) is {{}}. Submitted by alice. Details and log: http://lava.test/scheduler/job/{job.id}"
        assert said == [(to, line.format(state)) for to in ("alice", "bob")
                        for state in ("Finished, health Complete", "Running, health Unknown")]  # fmt: skip

        # records: 2 changes x (callback, email, 2 IRC), each delivered at the first attempt
        assert len(records) == 8
        assert {(r.trigger, r.kind, r.state, len(r.attempts)) for r in records} == {
            (trigger, kind, DELIVERED, 1) for trigger in (RUNNING, FINISHED) for kind in ("callback", "email", "irc")
        }

    run(scenario())


# -- when ---------------------------------------------------------------------------------------

CRITERIA_MATRIX = {
    # status: the healths at Finished that notify; Running notifies for all and running
    "all": {COMPLETE, INCOMPLETE, CANCELED},
    "finished": {COMPLETE, INCOMPLETE, CANCELED},
    "running": set(),
    "complete": {COMPLETE},
    "incomplete": {INCOMPLETE},
    "canceled": {CANCELED},
}


def test_criteria_status_matrix(lab: Lab) -> None:
    async def scenario() -> None:
        async with HttpReceiver() as http:
            notifier = lab.notifier(settings())
            expected = set()
            try:
                for status, healths in CRITERIA_MATRIX.items():
                    for health in (COMPLETE, INCOMPLETE, CANCELED):
                        url = f"{http.url}/{status}/{health}/{{STATUS_STRING}}"
                        job = lab.job({"criteria": {"status": status}, "callback": {"url": url}})
                        notifier.job_changed(*lab.move(job, RUNNING))
                        notifier.job_changed(*lab.move(job, FINISHED, health))
                        if status in ("all", "running"):
                            expected.add(f"/{status}/{health}/running")
                        if health in healths:
                            expected.add(f"/{status}/{health}/{health.lower()}")
                await notifier.idle()
            finally:
                await notifier.close()
        got = [r.path for r in http.requests]
        assert sorted(got) == sorted(expected) and len(got) == len(set(got))

    run(scenario())


def test_regression_and_progression_compare_with_the_previous_job_of_the_same_name(lab: Lab) -> None:
    async def scenario() -> None:
        async with HttpReceiver() as http:
            notifier = lab.notifier(settings())

            def notify(health: str) -> dict[str, Any]:
                return {"callbacks": [
                    {"url": f"{http.url}/{{ID}}/{kind}"} for kind in ("regression", "progression")
                ], "criteria": {"status": health.lower()}}  # fmt: skip

            async def finish(health: str, *cases: tuple[str, str, str], name: str = "nightly",
                             notify_block: dict[str, Any] | None = None) -> JobRecord:  # fmt: skip
                job = lab.job(notify_block or notify(health), name=name)
                notifier.job_changed(*lab.move(job, RUNNING))
                lab.results(job, *cases)
                notifier.job_changed(*lab.move(job, FINISHED, health))
                await notifier.idle()
                return job

            def blocks(health: str, kind: str) -> dict[str, Any]:
                block = notify(health)
                block["criteria"]["type"] = kind
                block["callbacks"] = [c for c in block["callbacks"] if c["url"].endswith(kind)]
                return block

            def fired(job: JobRecord) -> set[str]:
                return {r.path.rsplit("/", 1)[1] for r in http.requests if r.path.split("/")[1] == str(job.id)}

            try:
                # the first of its name: nothing to compare with, nothing fires
                first = await finish(COMPLETE, ("0_t", "a", "pass"), notify_block=blocks(COMPLETE, "regression"))
                assert fired(first) == set()
                assert [r.state for r in notifier.deliveries(first.id)] == []
                # Complete -> Incomplete: a regression (LAVA never sees it: the job's own old health is Unknown)
                worse = await finish(INCOMPLETE, ("0_t", "a", "pass"), notify_block=blocks(INCOMPLETE, "regression"))
                assert fired(worse) == {"regression"}
                # Incomplete -> Complete: a progression
                better = await finish(COMPLETE, ("0_t", "a", "pass"), notify_block=blocks(COMPLETE, "progression"))
                assert fired(better) == {"progression"}
                # both Complete, a test case went from pass to fail: a regression of results
                failing = await finish(COMPLETE, ("0_t", "a", "fail"), notify_block=blocks(COMPLETE, "regression"))
                assert fired(failing) == {"regression"}
                # ... and back: a progression; the same results again: neither
                fixed = await finish(COMPLETE, ("0_t", "a", "pass"), notify_block=blocks(COMPLETE, "progression"))
                assert fired(fixed) == {"progression"}
                same = await finish(COMPLETE, ("0_t", "a", "pass"), notify_block=blocks(COMPLETE, "progression"))
                assert fired(same) == set()
                # another name is not compared with these; a blacklisted case is not compared at all
                other = await finish(INCOMPLETE, name="other", notify_block=blocks(INCOMPLETE, "regression"))
                assert fired(other) == set()
                ignored = blocks(COMPLETE, "regression") | {"compare": {"blacklist": ["a"]}}
                blind = await finish(COMPLETE, ("0_t", "a", "fail"), notify_block=ignored)
                assert fired(blind) == set()
                # a compare query chooses the jobs to compare with: here "other", Incomplete
                query = blocks(COMPLETE, "progression") | {
                    "compare": {"query": {"entity": "testjob", "conditions": {"description": "other"}}}}
                chosen = await finish(COMPLETE, name="renamed", notify_block=query)
                assert fired(chosen) == {"progression"}
            finally:
                await notifier.close()

    run(scenario())


def test_dependency_query_waits_for_every_matching_job(lab: Lab) -> None:
    async def scenario() -> None:
        async with HttpReceiver() as http:
            notifier = lab.notifier(settings())
            block = {"criteria": {"status": "finished", "dependency_query": "description__icontains__batch-"},
                     "callback": {"url": http.url + "/{ID}"}}  # fmt: skip
            first, second = lab.job(block, name="batch-1"), lab.job(block, name="batch-2")
            unrelated = lab.job(None, name="solo")
            bad = lab.job({"criteria": {"status": "finished", "dependency_query": "colour__blue"},
                           "callback": {"url": http.url + "/bad"}})  # fmt: skip
            try:
                for job in (first, second, unrelated, bad):
                    notifier.job_changed(*lab.move(job, RUNNING))
                notifier.job_changed(*lab.move(first, FINISHED, COMPLETE))  # batch-2 still runs: held back
                await notifier.idle()
                assert http.requests == []
                notifier.job_changed(*lab.move(second, FINISHED, INCOMPLETE))  # the last of the batch
                notifier.job_changed(*lab.move(bad, FINISHED, COMPLETE))
                await notifier.idle()
                refused = notifier.deliveries(bad.id)
            finally:
                await notifier.close()
        assert [r.path for r in http.requests] == [f"/{second.id}"]
        assert [(r.kind, r.state) for r in refused] == [("criteria", FAILED)]
        assert "unknown job field 'colour'" in refused[0].detail

    run(scenario())


# -- what is sent ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["minimal", "logs", "results", "all"])
def test_urlencoded_datasets_keep_nested_values_as_json(lab: Lab, dataset: str) -> None:
    async def scenario() -> None:
        async with HttpReceiver() as http:
            notifier = lab.notifier(settings())
            job = lab.job({"criteria": {"status": "finished"}, "callback": {
                "url": http.url + "/hook", "method": "POST", "dataset": dataset}}, metadata={"b": [1, 2]})  # fmt: skip
            lab.log(job)
            lab.results(job, ("0_smoke", "boot", "fail"))
            try:
                notifier.job_changed(*lab.move(job, RUNNING))
                notifier.job_changed(*lab.move(job, FINISHED, INCOMPLETE, failure_comment="boom"))
                await notifier.idle()
            finally:
                await notifier.close()
        (request,) = http.requests
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert "Authorization" not in request.headers  # no token, no header (LAVA)
        form = {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}
        extra = {"minimal": set(), "logs": {"log"}, "results": {"results"}, "all": {"log", "results"}}[dataset]
        assert set(form) == MINIMAL | extra
        assert (form["status"], form["status_string"], form["health_check"]) == ("3", "incomplete", "False")
        assert (form["failure_comment"], form["actual_device_id"]) == ("boom", "qemu01")
        assert json.loads(form["metadata"]) == [{"b": "['1', '2']"}]
        if "results" in extra:
            assert yaml.safe_load(json.loads(form["results"])["0_smoke"])[0]["result"] == "fail"
        if "log" in extra:
            assert form["log"] == LOG_TEXT

    run(scenario())


def test_get_callback_tokens_and_headers(lab: Lab) -> None:
    async def scenario() -> None:
        async with HttpReceiver() as http:
            notifier = lab.notifier(settings())
            job = lab.job({"criteria": {"status": "finished"}, "callbacks": [
                {"url": http.url + "/a?job={ID}&sub={SUB_ID}&x={NOT_A_FIELD}", "token": "ci-callback"},
                {"url": http.url + "/b/{DESCRIPTION}", "token": "literal-token", "header": "X-Lava-Token"},
            ]}, name="my job/1")  # fmt: skip
            try:
                notifier.job_changed(*lab.move(job, RUNNING))
                notifier.job_changed(*lab.move(job, FINISHED, COMPLETE))
                await notifier.idle()
            finally:
                await notifier.close()
        a, b = sorted(http.requests, key=lambda r: r.path)
        assert (a.method, a.path, a.query) == ("GET", "/a", {"job": str(job.id), "sub": "", "x": "{NOT_A_FIELD}"})
        assert a.body == b"" and a.headers["Authorization"] == "s3cret-value"
        assert b.path == "/b/my job/1" and "Authorization" not in b.headers  # path decoded by the server
        assert b.headers["X-Lava-Token"] == "literal-token"

    run(scenario())


def test_default_recipient_device_owner_and_unknown_addresses(lab: Lab) -> None:
    async def scenario() -> None:
        async with SmtpReceiver() as smtp:
            notifier = lab.notifier(settings(smtp.port))
            mine = lab.job({"criteria": {"status": "finished"}, "verbosity": "status-only"})
            owner = lab.job({"criteria": {"status": "finished"}, "recipients": [
                {"to": {"method": "email", "user": "{LAVA_DEVICE_OWNER}"}}]})  # fmt: skip
            stranger = lab.job({"criteria": {"status": "finished"}}, submitter="carol")
            try:
                for job in (mine, owner, stranger):
                    notifier.job_changed(*lab.move(job, RUNNING))
                    notifier.job_changed(*lab.move(job, FINISHED, INCOMPLETE, error_type="Infrastructure",
                                                   error_msg="power failed"))  # fmt: skip
                await notifier.idle()
                refused = notifier.deliveries(stranger.id)
            finally:
                await notifier.close()
        by_to = {m.recipients[0]: m.body for m in smtp.mails}
        assert set(by_to) == {"alice@lab.test", "bob@lab.test"}
        assert by_to["alice@lab.test"].startswith("Dear Alice Liddell,")
        assert "power failed" not in by_to["alice@lab.test"]  # status-only
        assert "Infrastructure error: power failed" in by_to["bob@lab.test"]  # quiet, finished
        assert [(r.kind, r.state) for r in refused] == [("email", FAILED)]
        assert "no email address for carol" in refused[0].detail

    run(scenario())


# -- retries, slow and dead receivers -------------------------------------------------------------------


def test_a_receiver_that_is_down_gets_the_delivery_when_it_comes_up(lab: Lab) -> None:
    async def scenario() -> None:
        port = free_port()
        notifier = lab.notifier(settings(retry=RetrySettings(attempts=6, delay=0.1, factor=2, max_delay=0.4)))
        job = lab.job({"criteria": {"status": "finished"},
                       "callback": {"url": f"http://{LOOPBACK}:{port}/hook", "method": "POST"}})  # fmt: skip
        try:
            notifier.job_changed(*lab.move(job, RUNNING))
            held = timed(notifier, *lab.move(job, FINISHED, COMPLETE))

            def attempts() -> int:
                records = notifier.deliveries(job.id)
                return len(records[0].attempts) if records else 0

            await until(lambda: attempts() >= 2, what="two refused attempts")
            async with HttpReceiver(port=port) as http:
                await notifier.idle()
            (record,) = notifier.deliveries(job.id)
        finally:
            await notifier.close()
        assert held < 0.05
        assert record.state == DELIVERED and len(http.requests) == 1
        assert [a.ok for a in record.attempts] == [False] * (len(record.attempts) - 1) + [True]
        assert "Connect" in record.attempts[0].detail and record.attempts[-1].detail == "HTTP 200: thanks"
        gaps = [b.started - a.started for a, b in zip(record.attempts, record.attempts[1:], strict=False)]
        assert gaps[0] >= 0.09 and (len(gaps) < 2 or gaps[1] >= 0.19)  # the back-off grows

    run(scenario())


def test_a_receiver_that_never_answers_delays_nobody(lab: Lab) -> None:
    async def scenario() -> None:
        async with HttpReceiver(hang=True) as stuck, HttpReceiver() as http, SmtpReceiver() as smtp:
            notifier = lab.notifier(settings(smtp.port, callbacks=CallbackSettings(timeout=0.5),
                                             retry=RetrySettings(attempts=2, delay=0.05)))  # fmt: skip
            job = lab.job({"criteria": {"status": "finished"}, "callbacks": [
                {"url": stuck.url + "/stuck", "method": "POST"}, {"url": http.url + "/fine"}],
                "recipients": [{"to": {"method": "email", "email": "ops@lab.test"}}]})  # fmt: skip
            try:
                notifier.job_changed(*lab.move(job, RUNNING))
                start = time.monotonic()
                held = timed(notifier, *lab.move(job, FINISHED, COMPLETE))
                await until(lambda: bool(http.requests and smtp.mails), what="the other deliveries")
                others = time.monotonic() - start
                await notifier.idle()
                records = {r.target.split()[-1] if r.kind == "callback" else r.kind: r for r in notifier.deliveries(job.id)}
            finally:
                await notifier.close()
        assert held < 0.05 and others < 0.4, (held, others)  # well before the stuck one's first timeout
        stuck_record = records[stuck.url + "/stuck"]
        assert stuck_record.state == FAILED and len(stuck.requests) == 2
        assert [a.detail for a in stuck_record.attempts] == ["no answer within 0.5 s"] * 2
        assert stuck_record.detail == "no answer within 0.5 s (after 2 attempts)"
        assert records[http.url + "/fine"].state == records["email"].state == DELIVERED

    run(scenario())


def test_http_answers_decide_whether_to_try_again(lab: Lab) -> None:
    async def scenario() -> None:
        async with HttpReceiver(status=503) as busy, HttpReceiver(status=404) as gone:
            notifier = lab.notifier(settings(callbacks=CallbackSettings(timeout=1, allowed_hosts=("127.0.0.*",))))
            job = lab.job({"criteria": {"status": "finished"}, "callbacks": [
                {"url": busy.url}, {"url": gone.url}, {"url": "http://elsewhere.test/x"},
                {"url": "ftp://127.0.0.1/x"}, {"url": gone.url, "token": "t", "header": "Content-Length"}]})  # fmt: skip
            try:
                notifier.job_changed(*lab.move(job, RUNNING))
                notifier.job_changed(*lab.move(job, FINISHED, COMPLETE))
                await notifier.idle()
                records = notifier.deliveries(job.id)
            finally:
                await notifier.close()
        assert [(r.state, len(r.attempts)) for r in records] == [(FAILED, 4)] + [(FAILED, 1)] * 4
        assert records[0].detail == "HTTP 503: no (after 4 attempts)" and len(busy.requests) == 4
        assert records[1].detail == "HTTP 404: no" and len(gone.requests) == 1
        assert records[2].detail == "callback host 'elsewhere.test' is not in the allowed hosts (127.0.0.*)"
        assert records[3].detail == "only http and https callbacks are made, not 'ftp'"
        assert records[4].detail == "'Content-Length' is not a header a callback token can be sent in"

    run(scenario())


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_and_a_dead_mail_server(lab: Lab) -> None:
    async def scenario() -> None:
        async with SmtpReceiver(login=("lava", "right")) as smtp:
            block = {"criteria": {"status": "finished"}, "recipients": [{"to": {"method": "email", "email": "ops@lab.test"}}]}
            good = lab.notifier(settings(smtp.port, smtp=SmtpSettings(
                host=LOOPBACK, port=smtp.port, username="lava", password="right", timeout=2)))  # fmt: skip
            wrong = lab.notifier(settings(smtp=SmtpSettings(
                host=LOOPBACK, port=smtp.port, username="lava", password="wrong", timeout=2)))  # fmt: skip
            dead = lab.notifier(settings(smtp=SmtpSettings(host=LOOPBACK, port=free_port(), timeout=2),
                                         retry=RetrySettings(attempts=2, delay=0.01)))  # fmt: skip
            outcome = {}
            for name, notifier in (("good", good), ("wrong", wrong), ("dead", dead)):
                job = lab.job(block)
                try:
                    notifier.job_changed(*lab.move(job, RUNNING))
                    notifier.job_changed(*lab.move(job, FINISHED, COMPLETE))
                    await notifier.idle()
                    (outcome[name],) = notifier.deliveries(job.id)
                finally:
                    await notifier.close()
        assert len(smtp.mails) == 1
        assert (outcome["good"].state, outcome["good"].detail) == (DELIVERED, f"accepted by {LOOPBACK}:{smtp.port}")
        assert outcome["wrong"].state == FAILED and len(outcome["wrong"].attempts) == 1
        assert "SMTP login refused (535): check notify smtp username and password" in outcome["wrong"].detail
        assert outcome["dead"].state == FAILED and len(outcome["dead"].attempts) == 2
        assert "ConnectionRefusedError" in outcome["dead"].detail

    run(scenario())


# -- stopping and starting again -----------------------------------------------------------------------


def test_stopping_abandons_retries_and_a_restart_says_so(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "state" / "notifications.sqlite"

    async def scenario() -> int:
        notifier = lab.notifier(settings(retry=RetrySettings(attempts=5, delay=30)), SqliteRecords(path))
        job = lab.job({"criteria": {"status": "finished"}, "callback": {"url": f"http://{LOOPBACK}:{free_port()}/"}})
        notifier.job_changed(*lab.move(job, RUNNING))
        # a light record, as the scheduler has them: the definition is read from the store
        (light,) = lab.store.jobs("id = ?", (job.id,), light=True)
        before = lab.store.job(job.id)
        lab.move(job, FINISHED, COMPLETE)
        notifier.job_changed(before, lab.store.jobs("id = ?", (job.id,), light=True)[0])
        assert light.definition == ""
        await until(lambda: bool(notifier.deliveries(job.id) and notifier.deliveries(job.id)[0].attempts))
        start = time.monotonic()
        await notifier.close()  # does not wait for the 30 s back-off
        assert time.monotonic() - start < 1
        return job.id

    job_id = run(scenario())
    records = SqliteRecords(path)
    try:
        (record,) = records.for_job(job_id)
        assert (record.state, len(record.attempts)) == (ABANDONED, 1)
        assert record.detail == "the worker stopped before this delivery ended"
        # a worker killed outright leaves a pending record: the next start marks it
        assert records.add(job_id, FINISHED, "email", "x@lab.test", "k") is not None
    finally:
        records.close()
    reopened = SqliteRecords(path)
    try:
        assert [(r.state, r.detail) for r in reopened.for_job(job_id)][1] == (ABANDONED, RESTARTED)
    finally:
        reopened.close()
