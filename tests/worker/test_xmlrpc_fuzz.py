"""Fuzzing the XML-RPC request parsing (in this process) and the methods (through a real worker).

Whatever the body, the parser answers a call or a RequestError, never another
exception; every call xmlrpc.client can make comes back as it was sent; and a
real worker answers any call to any method with a result or a deliberate
fault (never -32603, an internal error), changing nothing it may not.
"""

from __future__ import annotations

import math
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lava_dispatcher.worker.xmlrpc import METHODS, RequestError, parse_request

from .helpers import Worker, job_yaml, write_devices
from .test_xmlrpc import finished, post, proxy, snapshot

WorkerFactory = Callable[..., Worker]

# text XML can carry and XML-RPC keeps as it is (XML turns a carriage return into a newline)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00\ufffe\uffff",
                             min_codepoint=9).filter(lambda c: c in "\t\n" or ord(c) >= 32), max_size=30)  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**31), 2**31 - 1), TEXT,
    st.floats(allow_nan=False, allow_infinity=False),
    st.binary(max_size=30).map(xmlrpc.client.Binary),
    st.datetimes().map(lambda d: xmlrpc.client.DateTime(d.replace(microsecond=0))),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12
)
NAMES = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz._"), min_size=1, max_size=40)


def same(a: Any, b: Any) -> bool:
    """Equality as XML-RPC keeps values (a tuple comes back a list; -0.0 is 0.0 is fine)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=0) or a == b
    return type(a) is type(b) and a == b


@given(st.binary(max_size=3000))
def test_any_bytes_are_a_call_or_a_request_error(body: bytes) -> None:
    try:
        name, params = parse_request(body)
    except RequestError as exc:
        assert exc.code in (-32700, -32600) and str(exc)
    else:
        assert isinstance(name, str) and name and isinstance(params, tuple)


@given(NAMES, st.lists(VALUES, max_size=4).map(tuple))
def test_every_call_comes_back_as_it_was_sent(name: str, params: tuple[Any, ...]) -> None:
    parsed_name, parsed = parse_request(xmlrpc.client.dumps(params, name, allow_none=True).encode())
    assert parsed_name == name and same(parsed, params), (parsed, params)


@given(NAMES, st.lists(VALUES, max_size=3).map(tuple), st.data())
def test_mutated_calls_are_a_call_or_a_request_error(name: str, params: tuple[Any, ...], data: st.DataObject) -> None:
    body = bytearray(xmlrpc.client.dumps(params, name, allow_none=True).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body)))
        cut = data.draw(st.integers(0, 12))
        body[at : at + cut] = data.draw(st.sampled_from([b"", b"<", b">", b"&", b"</value>", b"<array><data>",
                                                         b"<struct>", b"<int>", b"\xff", b"<!DOCTYPE x>", b"&#0;"]))  # fmt: skip
    try:
        parse_request(bytes(body))
    except RequestError as exc:
        assert exc.code in (-32700, -32600)


#: methods that only read: an admin may fuzz these without changing anything
READ_ONLY = sorted(m for m in METHODS.entries if not m.endswith(("submit", "submit_job", "cancel", "cancel_job",
                   "update", "tags.add", "tags.delete", "multicall")))  # fmt: skip


def test_any_call_to_any_method_gets_an_answer_or_a_deliberate_fault(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    w = worker().start()
    token = w.login("admin", admin=True)
    admin = proxy(w, "admin", token)
    job_id = admin.scheduler.jobs.submit(job_yaml("hello"))
    finished(admin, job_id)
    before = snapshot(w.state)
    ids = st.sampled_from([job_id, str(job_id), "1.0", "fast-01", "sim", "lava", "job", 0, -1])
    arguments = st.lists(st.one_of(ids, VALUES), max_size=5)

    @settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
    @given(st.booleans(), st.data())
    def call(as_admin: bool, data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(READ_ONLY if as_admin else sorted(METHODS.entries)), "method")
        params = tuple(data.draw(arguments, "params"))
        headers = {"Authorization": w.basic("admin", token)} if as_admin else {}
        status, _headers, answer = post(w, xmlrpc.client.dumps(params, method, allow_none=True).encode(), headers)
        assert status == 200, (status, answer)
        try:
            xmlrpc.client.loads(answer, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            assert fault.faultCode != -32603, fault

    call()
    assert snapshot(w.state) == before
    assert "Traceback" not in w.output()
