"""The notification parts on their own: settings, job fields, URLs, payloads, messages, conditions."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lava_dispatcher.worker.errors import ConfigError
from lava_dispatcher.worker.notify import MemoryRecords, NotifySettings, SqliteRecords, StoreLookup
from lava_dispatcher.worker.notify.conditions import ConditionError, parse_conditions
from lava_dispatcher.worker.notify.errors import Permanent
from lava_dispatcher.worker.notify.jobinfo import lava_time, legacy_status, legacy_status_string
from lava_dispatcher.worker.notify.lookup import JobQuery
from lava_dispatcher.worker.notify.mail import check_address, message
from lava_dispatcher.worker.notify.messages import (
    IRC_LINE,
    MessageContext,
    email_body,
    irc_line,
    subject,
)
from lava_dispatcher.worker.notify.payload import encode, job_data
from lava_dispatcher.worker.notify.records import Attempt
from lava_dispatcher.worker.notify.settings import SmtpSettings
from lava_dispatcher.worker.notify.urls import check, redact, substitute
from lava_dispatcher.worker.store import JobRecord, Store


def job(**changes: Any) -> JobRecord:
    base = JobRecord(
        id=7, sub_id=None, target_group=None, description="smoke", requested_device_type="qemu",
        pinned_device=None, actual_device="qemu01", tags=(), priority=50, visibility="public",
        submitter="alice", health_check=False, essential=False, state="Finished", health="Complete",
        submit_time=1787310000.5, start_time=1787310001.0, end_time=1787310061.0, failure_comment=None,
        error_type=None, error_msg=None, pid=None, definition="job_name: smoke\n",
        original_definition="job_name: smoke\n", multinode_definition="",
    )  # fmt: skip
    return replace(base, **changes)


# -- settings -------------------------------------------------------------------------------------


def test_settings_from_the_config_mapping() -> None:
    loaded = NotifySettings.from_mapping({
        "url": "https://lava.example.com/",
        "smtp": {"host": "mail.example.com", "port": 587, "sender": "lava@example.com", "starttls": True,
                 "username": "lava", "password": "pw"},
        "irc": {"nick": "lab-bot", "server": "irc.example.com", "tls": True, "port": 6697},
        "callbacks": {"timeout": 10, "allowed-hosts": ["*.Example.com"]},
        "retry": {"attempts": 3, "delay": 1, "max-delay": 10},
        "users": {"alice": {"email": "alice@example.com", "irc-handle": "alice", "tokens": {"ci": "secret"}}},
        "device-owners": {"qemu01": "alice"},
    })  # fmt: skip
    assert loaded.url == "https://lava.example.com"
    assert (loaded.smtp.port, loaded.smtp.starttls, loaded.smtp.username) == (587, True, "lava")
    assert (loaded.irc.nick, loaded.irc.port, loaded.callbacks.allowed_hosts) == ("lab-bot", 6697, ("*.example.com",))
    assert [loaded.retry.backoff(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    assert loaded.users["alice"].tokens == {"ci": "secret"} and loaded.device_owners == {"qemu01": "alice"}
    assert NotifySettings.from_mapping(None) == NotifySettings(worker=loaded.worker)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"smtp": {"hots": "x"}}, "notify.smtp.hots: unknown key; the keys here are: host, port"),
        ({"smtp": {"port": 0}}, "notify.smtp.port: expected a port number (1 to 65535), not 0"),
        ({"smtp": {"ssl": True, "starttls": True}}, "notify.smtp: give ssl (SMTPS) or starttls, not both"),
        ({"smtp": {"username": "lava"}}, "notify.smtp: give both username and password"),
        ({"smtp": "localhost"}, "notify.smtp: expected a mapping, not 'localhost'"),
        ({"url": "lava.example.com"}, "notify.url: expected an http:// or https:// URL"),
        ({"callbacks": {"timeout": 0}}, "notify.callbacks.timeout: expected a number of seconds above 0"),
        ({"callbacks": {"allowed-hosts": [""]}}, "notify.callbacks.allowed-hosts: expected a list of host name"),
        ({"retry": {"attempts": 0}}, "notify.retry.attempts: expected a whole number, 1 or more, not 0"),
        ({"retry": {"factor": 0.5}}, "notify.retry.factor: expected a factor of 1 or more"),
        ({"users": {"alice": {"email": 3}}}, "notify.users.alice.email: expected a string, not 3"),
        ({"users": {"alice": {"tokens": ["a"]}}}, "notify.users.alice.tokens: expected a mapping of names"),
        ({"irc": {"tls": "yes"}}, "notify.irc.tls: expected true or false, not 'yes'"),
        ({"concurrency": 1.5}, "notify.concurrency: expected a whole number"),
    ],
)
def test_bad_settings_name_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        NotifySettings.from_mapping(data)
    assert str(caught.value).startswith(message)


# -- job fields as LAVA shows them -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "health", "status", "name"),
    [
        ("Submitted", "Unknown", 0, "submitted"), ("Scheduled", "Unknown", 0, "submitted"),
        ("Running", "Unknown", 1, "running"), ("Canceling", "Unknown", 5, "canceling"),
        ("Finished", "Complete", 2, "complete"), ("Finished", "Incomplete", 3, "incomplete"),
        ("Finished", "Unknown", 3, "incomplete"), ("Finished", "Canceled", 4, "canceled"),
    ],
)  # fmt: skip
def test_legacy_status(state: str, health: str, status: int, name: str) -> None:
    assert (legacy_status(job(state=state, health=health)), legacy_status_string(job(state=state, health=health))) == (status, name)


def test_lava_times() -> None:
    assert lava_time(None) == "None"
    assert lava_time(1787310000.5) == "2026-08-21 11:00:00.500000+00:00"


# -- callback URLs ------------------------------------------------------------------------------------


def test_url_substitution_as_lava_plus_encoding() -> None:
    url = "https://ci.example.com/{ID}/{ STATUS }/{STATUS_STRING}?d={DESCRIPTION}&s={SUB_ID}&u={UNKNOWN}&t={TOKEN}"
    got = substitute(url, job(description="a b/c?d#e"))
    assert got == "https://ci.example.com/7/2/complete?d=a%20b%2Fc%3Fd%23e&s=&u={UNKNOWN}&t={TOKEN}"
    running = job(state="Running", health="Unknown", end_time=None, sub_id="6.1")
    assert substitute("http://h/{STATE}/{HEALTH}/{END_TIME}/{SUB_ID}", running) == "http://h/3/0/None/6.1"


@given(
    description=st.text(max_size=60),
    template=st.lists(st.sampled_from(["/", "{ID}", "{DESCRIPTION}", "{ SUBMITTER }", "{STATUS_STRING}",
                                       "?q=", "&x=", "{NOPE}", "#f", "{END_TIME}", "x"]), max_size=12),
    submitter=st.text(min_size=1, max_size=20),
)  # fmt: skip
def test_substitution_never_changes_where_the_url_points(description: str, template: list[str], submitter: str) -> None:
    url = "https://ci.example.com:8443/hook" + "".join(template)
    got = substitute(url, job(description=description, submitter=submitter))
    before, after = urlsplit(url.replace("{", "").replace("}", "")), urlsplit(got)
    assert (after.scheme, after.netloc) == (before.scheme, before.netloc)
    for placeholder in ("{ID}", "{DESCRIPTION}", "{ SUBMITTER }", "{STATUS_STRING}", "{END_TIME}"):
        assert placeholder not in got
    # job-supplied text adds no path, query or fragment separator of its own
    assert got.count("/") == url.count("/") and got.count("#") == url.count("#") and got.count("?") == url.count("?")
    check(got)  # still a URL we call


@pytest.mark.parametrize(
    ("url", "allowed", "message"),
    [
        ("ftp://h/x", (), "only http and https callbacks are made, not 'ftp'"),
        ("file:///etc/passwd", (), "only http and https"),
        ("http:///x", (), "the callback URL has no host"),
        ("http://h:99999/", (), "not a valid URL"),
        ("http://h/x\r\nX: y", (), "control characters"),
        ("https://evil.test/", ("*.example.com",), "callback host 'evil.test' is not in the allowed hosts"),
    ],
)
def test_refused_urls(url: str, allowed: tuple[str, ...], message: str) -> None:
    with pytest.raises(Permanent, match=message.replace("?", r"\?")):
        check(url, allowed)


def test_allowed_urls_and_redaction() -> None:
    check("https://CI.Example.com/x", ("*.example.com",))
    check("http://127.0.0.1:8000/", ())
    assert redact("https://bot:secret@ci.example.com/x") == "https://bot:***@ci.example.com/x"
    assert redact("https://ci.example.com/x") == "https://ci.example.com/x"


# -- payloads -----------------------------------------------------------------------------------------------

metadata_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    description=st.text(max_size=80),
    comment=st.none() | st.text(max_size=40),
    meta=st.dictionaries(st.text(min_size=1, max_size=10), metadata_values, max_size=4),
)
def test_payload_survives_both_encodings(description: str, comment: str | None, meta: dict[str, Any]) -> None:
    data = job_data(job(description=description, failure_comment=comment), {"metadata": meta})
    body, content_type = encode(data, "json")
    assert content_type == "application/json" and json.loads(body) == data
    body, content_type = encode(data, "urlencoded")
    assert content_type == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(body.decode("ascii"), keep_blank_values=True).items()}
    assert form["description"] == description and form.get("failure_comment") == comment
    assert json.loads(form["metadata"]) == data["metadata"]  # nested: JSON, not mangled
    assert form["health_check"] == "False" and form["status"] == "2"
    assert all(len(item) == 1 and isinstance(next(iter(item.values())), str) for item in data["metadata"])


# -- messages -------------------------------------------------------------------------------------------------


@given(description=st.text(max_size=300))
def test_subject_and_irc_line_are_one_line(description: str) -> None:
    ctx = MessageContext(job(description=description), "http://lava.test")
    for text in (subject(ctx.job), irc_line(ctx)):
        assert "\n" not in text and "\r" not in text and all(c.isprintable() for c in text)
    assert len(irc_line(ctx).encode("utf-8")) <= IRC_LINE
    assert irc_line(ctx).endswith("Details and log: http://lava.test/scheduler/job/7")
    msg = message(SmtpSettings(sender="lava@lab.test"), "ops@lab.test", subject(ctx.job), email_body(ctx))
    assert msg["Subject"].startswith("LAVA notification for Test Job 7")


def test_email_body_by_verbosity() -> None:
    failed = job(health="Incomplete", error_type="Infrastructure", error_msg="power failed", failure_comment="x")
    bodies = {v: email_body(MessageContext(failed, "http://lava.test", "w1", v, {"metadata": {"k": 1}}))
              for v in ("status-only", "quiet", "verbose")}  # fmt: skip
    assert all("Job 7 (smoke) is now Finished, health Incomplete." in b for b in bodies.values())
    assert "power failed" not in bodies["status-only"]
    assert "Infrastructure error: power failed" in bodies["quiet"] and "Metadata:" not in bodies["quiet"]
    assert "Duration: 0:01:00" in bodies["quiet"] and "Worker: w1" in bodies["quiet"]
    assert "Metadata:\n  k: 1" in bodies["verbose"] and "Results:\n  none" in bodies["verbose"]
    running = email_body(MessageContext(job(state="Running", health="Unknown"), "http://l", verbosity="verbose"))
    assert "Device:" not in running and "Results:" not in running


@pytest.mark.parametrize("address", ["a b@c.d", "a@b.c\r\nBcc: x@y.z", "<a@b.c>", "a@-b.c", "a@b.c,d@e.f", ""])
def test_bad_email_addresses_are_refused(address: str) -> None:
    with pytest.raises(Permanent, match="is not an email address"):
        check_address(address)
    assert check_address("ops+lava@lab-1.example.com") == "ops+lava@lab-1.example.com"


# -- conditions -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour__blue", "unknown job field 'colour'"),
        ("description__like__x", "unknown operator 'like'"),
        ("testsuite__name__exact__x", "only conditions on the job itself"),
        ("a__b__c__d__e", "expected field__value"),
        ("state__Done", "'Done' is not one of Submitted"),
        ("state__gt__Running", "gt means nothing for a state"),
        ("priority__urgent", "expected High, Medium, Low or a number"),
        ("end_time__gt__yesterday", "expected a date and time"),
    ],
)
def test_bad_conditions_say_why(text: str, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        parse_conditions(text)


def test_conditions_select_jobs_from_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        now = time.time()
        rows = [
            ("nightly 100%", "alice", "Finished", "Complete", 100, now - 100),
            ("nightly_x", "bob", "Finished", "Incomplete", 50, now - 50),
            ("weekly", "alice", "Running", "Unknown", 0, None),
        ]
        store.insert_jobs([
            {"id": n + 1, "description": d, "submitter": s, "state": st_, "health": h, "priority": p,
             "end_time": e, "submit_time": now, "definition": "", "original_definition": ""}
            for n, (d, s, st_, h, p, e) in enumerate(rows)
        ])  # fmt: skip
        lookup = StoreLookup(store, tmp_path / "jobs")

        def ids(text: str, **kw: Any) -> list[int]:
            return [j.id for j in lookup.jobs(JobQuery(parse_conditions(text), **kw))]

        assert ids("description__icontains__NIGHTLY") == [2, 1]
        assert ids("description__icontains__100%") == [1]  # % and _ are literal
        assert ids("description__icontains___x") == [2]
        assert ids("submitter__alice,state__Finished") == [1]
        assert ids("submitter__ne__alice") == [2]
        assert ids("health__iexact__complete,priority__High") == [1]
        assert ids("end_time__lt__" + str(now - 60)) == [1]
        assert ids("testjob__description__exact__weekly") == [3]
        assert ids("", before=3, finished=True, healths=("Incomplete",)) == [2]
        assert ids("description__x'); DROP TABLE jobs; --") == [] and len(store.jobs()) == 3
    finally:
        store.close()


# -- records -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_records_keep_attempts_and_refuse_a_second_key(kind: str, tmp_path: Path) -> None:
    records = MemoryRecords() if kind == "memory" else SqliteRecords(tmp_path / "n.sqlite")
    try:
        first = records.add(1, "Finished", "callback", "POST http://x/", "1:Finished:callback:0")
        assert first is not None
        assert records.add(1, "Finished", "callback", "POST http://x/", "1:Finished:callback:0") is None
        records.attempt(first.id, Attempt(1, 10.0, 0.5, False, "HTTP 503"))
        records.attempt(first.id, Attempt(2, 12.0, 0.1, True, "HTTP 200"))
        records.finish(first.id, "delivered", "HTTP 200")
        records.add(2, "Running", "email", "a@b.c", "2:Running:email:0")
        (got,) = records.for_job(1)
        assert (got.state, got.detail, [a.detail for a in got.attempts]) == ("delivered", "HTTP 200", ["HTTP 503", "HTTP 200"])
        assert [r.kind for r in records.for_job(2)] == ["email"]
    finally:
        records.close()
