"""The signal watcher: signals parsed where lines arrive, with their log line numbers."""

from __future__ import annotations

import re
import threading
import time

import pytest

from lava_dispatcher.actions.test.signals import SignalWatcher, keyed_params, parse_test_case
from lava_dispatcher.errors import JobCanceled
from lava_dispatcher.log import JobLogger
from lava_dispatcher.timing import Interrupter


def feed_logged(logger: JobLogger, watcher: SignalWatcher, *lines: str) -> None:
    """As the console reader does: log each line, then hand it to the watcher."""
    for line in lines:
        logger.target(line)
        watcher.feed(line, time.time())


def test_signals_carry_their_log_line_and_activate_the_parse_pattern() -> None:
    logger = JobLogger()
    pattern = re.compile(r"^(?P<test_case_id>\w+): (?P<result>PASS|FAIL)$", re.M)
    watcher = SignalWatcher(logger, {"0_smoke": pattern})
    feed_logged(
        logger,
        watcher,
        "boot noise",
        "alpha: PASS",  # before STARTRUN: the pattern is not active
        "<LAVA_SIGNAL_STARTRUN 0_smoke 7_1.2.1>",
        "beta: FAIL",
        "x <LAVA_SIGNAL_STARTTC t1> y <LAVA_SIGNAL_ENDTC t1>",
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=t1 RESULT=pass UNITS=ms MEASUREMENT=1.5>",
        "<LAVA_SIGNAL_ENDRUN 0_smoke 7_1.2.1>",
        "gamma: PASS",  # after ENDRUN: inactive again
        "<LAVA_TEST_RUNNER EXIT>",
    )
    events = watcher.take(0, Interrupter())
    summary = [(e.kind, e.name, e.line) for e in events]
    assert summary == [
        ("signal", "STARTRUN", 2),
        ("pattern", "", 3),
        ("signal", "STARTTC", 4),
        ("signal", "ENDTC", 4),
        ("signal", "TESTCASE", 5),
        ("signal", "ENDRUN", 6),
        ("exit", "", 8),
    ]
    assert events[1].groups == {"test_case_id": "beta", "result": "FAIL"}
    assert events[4].params == ["TEST_CASE_ID=t1", "RESULT=pass", "UNITS=ms", "MEASUREMENT=1.5"]


def test_take_waits_for_events_and_wakes_on_cancel() -> None:
    logger = JobLogger()
    watcher = SignalWatcher(logger, {})
    interrupter = Interrupter()
    threading.Timer(0.1, feed_logged, args=(logger, watcher, "<LAVA_SIGNAL_TESTEVENT hello>")).start()
    start = time.monotonic()
    events = watcher.take(5, interrupter)
    assert [e.name for e in events] == ["TESTEVENT"]
    assert time.monotonic() - start < 1
    threading.Timer(0.1, interrupter.cancel, args=(JobCanceled("stop"),)).start()
    start = time.monotonic()
    with pytest.raises(JobCanceled):
        watcher.take(30, interrupter)
    assert time.monotonic() - start < 1
    assert watcher.take(0.05, Interrupter()) == []


def test_testcase_parameters_and_validation() -> None:
    data = keyed_params(["TEST_CASE_ID=a", "RESULT=PASS", "MEASUREMENT=2", "UNITS=s"])
    fixup = {"PASS": "pass"}
    assert parse_test_case(data, fixup) == ("a", "pass", 2.0, "s")
    with pytest.raises(ValueError, match="malformed parameter"):
        keyed_params(["TEST_CASE_ID=a", "garbage"])
    with pytest.raises(ValueError, match="bad result 'great'"):
        parse_test_case({"test_case_id": "a", "result": "great"}, {})
    with pytest.raises(ValueError, match="is not a number"):
        parse_test_case({"test_case_id": "a", "result": "pass", "measurement": "fast"}, {})
    with pytest.raises(ValueError, match="no test_case_id"):
        parse_test_case({"result": "pass"}, {})
