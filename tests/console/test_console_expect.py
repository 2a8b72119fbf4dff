"""The expect engine: pexpect semantics, EOF/TIMEOUT, bounded search, interrupts."""

from __future__ import annotations

import re
import threading
import time

import pexpect
import pytest

from lava_dispatcher import errors
from lava_dispatcher.console import EOF, TIMEOUT, ExpectBuffer, ExpectTimeout, expect, flush
from lava_dispatcher.console.expect import _compile
from lava_dispatcher.timing import Interrupter


def filled(*texts: str, max_size: int = 1 << 20) -> ExpectBuffer:
    buffer = ExpectBuffer(max_size=max_size)
    for text in texts:
        buffer.append(text)
    return buffer


@pytest.fixture
def later():
    """Run a function in a thread after a delay (a Timer); joined at teardown."""
    timers: list[threading.Timer] = []

    def schedule(delay: float, func, *args) -> threading.Timer:
        timer = threading.Timer(delay, func, args)
        timers.append(timer)
        timer.start()
        return timer

    try:
        yield schedule
    finally:
        for timer in timers:
            timer.cancel()
            timer.join(5)


def test_earliest_match_wins_and_text_is_consumed():
    buffer = filled("boot: starting\nlogin: ", "ignored\n# ")
    match = expect(buffer, [r"# ", r"login: ", r"start\w+"], 1)
    assert match.index == 2
    assert match.pattern == r"start\w+"
    assert match.before == "boot: "
    assert match.after == "starting"
    assert match.match is not None and match.match.group(0) == "starting"
    match = expect(buffer, [r"# ", r"login: "], 1)
    assert (match.index, match.before, match.after) == (1, "\n", "login: ")
    match = expect(buffer, [r"# ", r"login: "], 1)
    assert (match.index, match.before) == (0, "ignored\n")
    assert len(buffer) == 0


def test_ties_go_to_the_lowest_index():
    match = expect(filled("foobar"), [r"fo+", r"foobar", r"f"], 1)
    assert (match.index, match.after) == (0, "foo")
    match = expect(filled("foobar"), [r"foobar", r"fo+"], 1)
    assert (match.index, match.after) == (0, "foobar")


def test_groups_compiled_patterns_and_dotall():
    buffer = filled("rc=<LAVA_SIGNAL_RETRUNCODE 17>\nfirst\nsecond")
    match = expect(buffer, [re.compile(r"<LAVA_SIGNAL_RETRUNCODE (\d+)>")], 1)
    assert match.group(1) == "17"
    # str patterns are compiled like pexpect's: "." matches a newline
    assert expect(buffer, ["first.second"], 1).after == "first\nsecond"


def test_string_patterns_are_compiled_once():
    _compile.cache_clear()
    buffer = filled("x1 x2 x3")
    for _ in range(3):
        expect(buffer, [r"x\d"], 1)
    info = _compile.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_bad_patterns_are_refused():
    with pytest.raises(TypeError, match="list of patterns"):
        expect(filled("x"), "x", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes regex"):
        expect(filled("x"), [re.compile(b"x")], 1)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="pattern #1"):
        expect(filled("x"), ["y", 42], 1)  # type: ignore[list-item]


def test_a_match_straddling_two_chunks_is_found(later):
    buffer = filled("...pro")
    later(0.05, buffer.append, "mpt# ")
    match = expect(buffer, ["prompt# "], 5)
    assert match.before == "..."


def test_waiting_wakes_on_new_text_at_once(later):
    buffer = ExpectBuffer()
    later(0.1, buffer.append, "ready\n")
    start = time.monotonic()
    expect(buffer, ["ready"], 10)
    assert time.monotonic() - start < 1.0


def test_eof_listed_returns_its_index_after_remaining_text():
    buffer = filled("login: tail")
    buffer.close()
    # text that arrived before EOF still matches first
    assert expect(buffer, ["login: ", EOF], 1).index == 0
    match = expect(buffer, ["login: ", EOF], 1)
    assert (match.index, match.pattern, match.before, match.after, match.match) == (
        1,
        EOF,
        "tail",
        "",
        None,
    )
    assert len(buffer) == 0


def test_eof_not_listed_raises_connection_closed(later):
    buffer = filled("partial output")
    later(0.05, buffer.close, RuntimeError("serial unplugged"))
    with pytest.raises(errors.ConnectionClosedError, match=r"serial unplugged.*partial output"):
        expect(buffer, ["never"], 10)


def test_pexpect_sentinels_are_accepted():
    buffer = filled("x")
    buffer.close()
    assert expect(buffer, ["y", pexpect.EOF], 1).index == 1
    assert expect(filled("x"), ["y", pexpect.TIMEOUT], 0.01).index == 1


def test_timeout_listed_returns_its_index_and_keeps_the_text():
    buffer = filled("some output")
    start = time.monotonic()
    match = expect(buffer, ["never", TIMEOUT], 0.2)
    elapsed = time.monotonic() - start
    assert (match.index, match.pattern, match.before, match.after) == (
        1,
        TIMEOUT,
        "some output",
        "",
    )
    assert 0.15 <= elapsed < 1.5
    assert buffer.text() == "some output"  # pexpect keeps the buffer on timeout


def test_timeout_not_listed_raises_with_the_tail():
    buffer = filled("x" * 2000, "the last words")
    start = time.monotonic()
    with pytest.raises(ExpectTimeout) as info:
        expect(buffer, ["never"], 0.2)
    assert 0.15 <= time.monotonic() - start < 1.5
    assert info.value.timeout == 0.2
    assert info.value.tail.endswith("the last words")
    assert 400 <= len(info.value.tail) <= 600
    assert "the last words" in str(info.value)
    assert not isinstance(info.value, errors.LAVAError)


def test_zero_timeout_still_searches_what_is_there():
    assert expect(filled("abc"), ["b"], 0).before == "a"


def test_flush_and_clear():
    buffer = filled("stale prompt# ")
    assert flush(buffer) == "stale prompt# "
    assert len(buffer) == 0
    assert expect(buffer, ["prompt", TIMEOUT], 0.01).index == 1
    buffer.append("fresh")
    assert buffer.clear() == "fresh"


def test_unconsumed_text_is_bounded():
    buffer = ExpectBuffer(max_size=1000)
    for number in range(100):
        buffer.append(f"{number:04d}" + "." * 96)
    assert len(buffer) == 1000
    assert buffer.dropped == 9000
    assert buffer.text().startswith("0090")
    assert expect(buffer, ["0095"], 1).before.startswith("0090")


def test_search_cost_is_linear_in_the_output(later):
    """A console printing megabytes while we wait: every character is searched
    about once (plus a bounded window per read), never the whole buffer again."""
    window = 8192
    chunk = "x" * 4095 + "\n"
    chunks = 1000  # 4 MB
    buffer = ExpectBuffer(max_size=8 << 20)
    patterns = ["login: ", r"Kernel panic - not syncing", r"root@\w+:~# "]

    def produce() -> None:
        for _ in range(chunks):
            buffer.append(chunk)
        buffer.append("login: ")

    later(0, produce)
    expect(buffer, patterns, 30, search_window=window)
    total = chunks * len(chunk) + len("login: ")
    stats = buffer.stats
    assert stats.rounds <= chunks + 2
    # each round searches the new text plus at most one window before it
    assert stats.searched_chars <= len(patterns) * (total + stats.rounds * window)
    # i.e. at most (1 + window / chunk) times the output per pattern: linear.
    # A search of the whole unconsumed text on every read would cost
    # chunks / 2 = 500 times the output instead.
    assert stats.searched_chars <= len(patterns) * total * (1 + window / len(chunk) + 0.01)


def test_a_big_backlog_is_searched_once_and_a_retry_resumes():
    backlog = "y" * 1_000_000
    buffer = filled(backlog)
    patterns = ["never", "nor this"]
    assert expect(buffer, [*patterns, TIMEOUT], 0).index == 2
    assert buffer.stats.searched_chars == len(patterns) * len(backlog)
    # the same wait again (force_prompt's retries): only the new text and a window
    buffer.append("z" * 100)
    before = buffer.stats.searched_chars
    assert expect(buffer, [*patterns, TIMEOUT], 0).index == 2
    assert buffer.stats.searched_chars - before == len(patterns) * (100 + 8192)


def test_the_window_bounds_how_far_back_a_later_round_looks():
    buffer = filled("A" + "-" * 100)
    assert expect(buffer, [r"A-+Z", TIMEOUT], 0, search_window=10).index == 1
    buffer.append("Z")
    # "A...Z" started more than the window before the new text: not found
    assert expect(buffer, [r"A-+Z", TIMEOUT], 0, search_window=10).index == 1
    # a fresh search (other patterns) looks at all the unconsumed text
    assert expect(buffer, [r"A-+Z", r"nothing"], 0, search_window=10).index == 0


def test_anchors_see_the_text_not_the_search_window():
    buffer = filled("xx" + "-" * 50)
    assert expect(buffer, [r"^-", r"\bfoo", TIMEOUT], 0, search_window=10).index == 2
    buffer.append("--foo")
    # the later round's window starts mid-text: "^" must not match there, and
    # "\bfoo" must see the "-" before it
    match = expect(buffer, [r"^-", r"\bfoo", TIMEOUT], 0, search_window=10)
    assert (match.index, match.after) == (1, "foo")
    buffer.append("\nxfoo")
    assert expect(buffer, [r"(?m)^x", r"\bfoo", TIMEOUT], 0, search_window=3).index == 0


def test_an_interrupt_stops_the_wait_within_milliseconds(later):
    buffer = ExpectBuffer()
    interrupter = Interrupter()
    canceled_at: list[float] = []

    def cancel() -> None:
        canceled_at.append(time.monotonic())
        interrupter.cancel(errors.JobCanceled("SIGTERM"))

    later(0.1, cancel)
    with pytest.raises(errors.JobCanceled):
        expect(buffer, ["never"], 30, interrupter=interrupter)
    stopped = time.monotonic() - canceled_at[0]
    assert stopped < 0.5
    # sticky: the next wait stops at once
    start = time.monotonic()
    with pytest.raises(errors.JobCanceled):
        expect(buffer, ["never"], 30, interrupter=interrupter)
    assert time.monotonic() - start < 0.5


def test_a_posted_fault_stops_one_wait(later):
    buffer = ExpectBuffer()
    interrupter = Interrupter()
    later(0.05, interrupter.post, errors.JobError("kernel panic"))
    start = time.monotonic()
    with pytest.raises(errors.JobError, match="kernel panic"):
        expect(buffer, ["never"], 30, interrupter=interrupter)
    assert time.monotonic() - start < 0.5
    buffer.append("ok")
    assert expect(buffer, ["ok"], 1, interrupter=interrupter).after == "ok"
