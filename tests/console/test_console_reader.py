"""The always-on reader: line splitting, arrival times, partial lines, bursts, EOF, stop."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from console_helpers import LineLog, QueueTransport
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lava_dispatcher import errors
from lava_dispatcher.console import EOF, ConsoleReader, ExpectBuffer, expect

PY = sys.executable


class Recorder:
    """A watcher that records the complete lines it is fed."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, float]] = []
        self.flushed = 0

    def feed(self, line: str, ts: float) -> None:
        self.lines.append((line, ts))

    def flush(self) -> None:
        self.flushed += 1


@pytest.fixture
def readers():
    started: list[ConsoleReader] = []

    def make(transport, log: LineLog, **kwargs) -> ConsoleReader:
        reader = ConsoleReader(
            transport, name="test", on_line=log.on_line, on_closed=log.on_closed, **kwargs
        )
        started.append(reader)
        reader.start()
        return reader

    try:
        yield make
    finally:
        for reader in started:
            reader.stop()
            reader.transport.close()
            assert not reader.running


def expected_lines(text: str) -> list[str]:
    """Complete lines of ``text``, and its unterminated tail if any."""
    parts = text.split("\n")
    last = parts.pop()
    lines = [part.rstrip("\r") for part in parts]
    if last:
        lines.append(last.rstrip("\r"))
    return lines


def test_lines_are_split_and_carriage_returns_stripped(readers, line_log):
    recorder = Recorder()
    transport = QueueTransport(
        [b"one\r\ntwo\r\r\nthr", b"ee\nfour\r", b"\n\nlast \r x\r\n", QueueTransport.END]
    )
    reader = readers(transport, line_log, watchers=[recorder])
    assert reader.wait_closed(5)
    assert line_log.texts == ["one", "two", "three", "four", "", "last \r x"]
    assert [line for line, _ in recorder.lines] == line_log.texts
    assert recorder.flushed == 1
    assert line_log.closed == [None]
    assert reader.buffer.closed
    assert reader.buffer.text() == "one\r\ntwo\r\r\nthree\nfour\r\n\nlast \r x\r\n"


def test_real_process_lines_and_arrival_times(resources, line_log):
    code = (
        "import sys\n"
        "print('first'); print('second', flush=True)\n"
        "sys.stdin.readline()\n"
        "print('third', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    transport = resources.process([PY, "-c", code])
    before = time.time()
    console = resources.console(transport, line_log)
    console.start()
    line_log.wait_line("second")
    between = time.time()
    console.write(b"go\n")
    _, third_ts = line_log.wait_line("third")
    after = time.time()
    lines = dict(line_log.lines)
    assert list(lines) == ["first", "second", "third"]
    assert before <= lines["first"] <= lines["second"] <= between
    assert between <= third_ts <= after


def test_arrival_time_is_that_of_the_first_byte(readers, line_log):
    transport = QueueTransport()
    reader = readers(transport, line_log, idle_flush=30.0)
    transport.feed(b"start of a line ")
    expect(reader.buffer, ["start of a line "], 5)  # the reader has it
    middle = time.time()
    transport.feed(b"and its end\r\n")
    line, ts = line_log.wait_line("and its end")
    assert line == "start of a line and its end"
    assert ts <= middle


def test_partial_line_is_flushed_when_the_console_goes_quiet(readers, line_log):
    recorder = Recorder()
    transport = QueueTransport()
    reader = readers(transport, line_log, watchers=[recorder], idle_flush=0.1)
    transport.feed(b"boot done\r\nroot@sim:~# ")
    start = time.monotonic()
    line, ts = line_log.wait_line("root@sim")
    delay = time.monotonic() - start
    assert line == "root@sim:~# "
    assert 0.05 <= delay < 1.0  # flushed by the read timeout, not at once, not late
    assert ts <= time.time() - 0.05
    # the rest of that line comes as a new call; its terminator alone adds no empty line
    transport.feed(b"ls\r\n")
    line_log.wait_line("ls")
    transport.feed(b"root@sim:~# ")
    line_log.wait_for(lambda log: len(log.lines) == 4)
    transport.feed(b"\r\nnext\n")
    line_log.wait_line("next")
    assert line_log.texts == ["boot done", "root@sim:~# ", "ls", "root@sim:~# ", "next"]
    # watchers always see whole lines
    assert [line for line, _ in recorder.lines] == [
        "boot done",
        "root@sim:~# ls",
        "root@sim:~# ",
        "next",
    ]
    assert reader.callback_error is None


def test_partial_line_from_a_real_shell_prompt(resources, line_log):
    transport = resources.process(
        [
            PY,
            "-c",
            "import sys; sys.stdout.write('login: '); sys.stdout.flush(); sys.stdin.readline()",
        ]
    )
    console = resources.console(transport, line_log)
    console.start()
    assert line_log.wait_line("login:")[0] == "login: "


def test_eof_delivers_the_pending_partial_line_and_closes_the_buffer(readers, line_log):
    transport = QueueTransport([b"line\nno newline at the end", QueueTransport.END])
    reader = readers(transport, line_log, idle_flush=30.0)
    assert reader.wait_closed(5)
    assert line_log.texts == ["line", "no newline at the end"]
    assert line_log.closed == [None]
    match = expect(reader.buffer, ["newline", EOF], 1)
    assert match.index == 0 and match.before == "line\nno "
    match = expect(reader.buffer, ["newline", EOF], 1)
    assert match.index == 1 and match.before == " at the end"
    with pytest.raises(errors.ConnectionClosedError):
        expect(reader.buffer, ["anything"], 1)


def test_eof_of_a_real_process(resources, line_log):
    transport = resources.process([PY, "-c", "print('bye')"])
    console = resources.console(transport, line_log)
    console.start()
    line_log.wait_for(lambda log: bool(log.closed))
    assert line_log.texts == ["bye"]
    assert line_log.closed == [None]
    assert console.closed  # the buffer saw EOF


def test_stop_keeps_the_transport_open(resources, line_log):
    transport = resources.process(["cat"])
    buffer = ExpectBuffer()
    reader = ConsoleReader(transport, name="cat", on_line=line_log.on_line, buffer=buffer)
    reader.start()
    transport.write(b"hello\n")
    line_log.wait_line("hello")
    transport.write(b"partial")  # cat echoes nothing until the newline: feed a partial via printf
    start = time.monotonic()
    reader.stop()
    assert time.monotonic() - start < 0.5
    assert not reader.running
    assert not transport.closed
    assert not buffer.closed  # stop is not EOF
    transport.write(b"\n")
    assert transport.read(100, 5).startswith(b"partial")


def test_stop_flushes_the_partial_line(readers, line_log):
    transport = QueueTransport([b"prompt> "])
    reader = readers(transport, line_log, idle_flush=30.0)
    expect(reader.buffer, ["prompt> "], 5)
    reader.stop()
    assert line_log.texts == ["prompt> "]
    assert line_log.closed == []  # on_closed is for EOF only


def test_a_failing_callback_does_not_stop_the_reader(readers):
    seen: list[str] = []

    def on_line(line: str, ts: float) -> None:
        seen.append(line)
        if line == "bad":
            raise RuntimeError("callback bug")

    transport = QueueTransport([b"good\nbad\nafter\n", QueueTransport.END])
    reader = ConsoleReader(transport, name="t", on_line=on_line)
    reader.start()
    try:
        assert reader.wait_closed(5)
        assert seen == ["good", "bad", "after"]
        assert isinstance(reader.callback_error, RuntimeError)
    finally:
        reader.stop()


def test_utf8_split_across_reads_and_invalid_bytes(readers, line_log):
    snowman = "☃".encode()
    transport = QueueTransport(
        [
            b"caf\xc3",
            b"\xa9 " + snowman[:1],
            snowman[1:] + b"\n",
            b"bad \xff\xfe byte\n",
            QueueTransport.END,
        ]
    )
    reader = readers(transport, line_log)
    assert reader.wait_closed(5)
    assert line_log.texts == ["café ☃", "bad \ufffd\ufffd byte"]


def test_overlong_line_is_delivered_in_pieces(readers, line_log):
    transport = QueueTransport([b"x" * 5000, b"y" * 5000, b"\n", QueueTransport.END])
    recorder = Recorder()
    reader = readers(transport, line_log, max_line=4096, watchers=[recorder])
    assert reader.wait_closed(5)
    assert "".join(line_log.texts) == "x" * 5000 + "y" * 5000
    assert all(len(line) <= 5000 for line in line_log.texts)
    assert len(recorder.lines) == 1


BURST_BYTES = 20 * 1024 * 1024

_BURST_WRITER = r"""
import os, sys
size = int(sys.argv[1])
lines = []
total = 0
number = 0
while total < size:
    line = "%08d %s\n" % (number, "x" * 70)
    lines.append(line)
    total += len(line)
    number += 1
data = "".join(lines).encode()
sys.stdout.write("count %d\n" % number)
sys.stdout.flush()
sys.stdin.readline()
view = memoryview(data)
while view:
    view = view[os.write(1, view):]
print("END", flush=True)
sys.stdin.readline()
"""


def test_20mb_burst_reaches_on_line_completely_and_in_order(resources):
    received: list[str] = []
    done = threading.Event()

    def on_line(line: str, ts: float) -> None:
        received.append(line)
        if line.startswith("END"):
            done.set()

    transport = resources.process([PY, "-c", _BURST_WRITER, str(BURST_BYTES)])
    buffer = ExpectBuffer(max_size=1 << 20)
    reader = ConsoleReader(transport, name="burst", on_line=on_line, buffer=buffer)
    resources.add(reader.stop)
    reader.start()
    count = int(expect(buffer, [r"count (\d+)\r\n"], 10).match.group(1))
    start = time.monotonic()
    transport.write(b"go\n")  # nobody expects anything while the burst runs
    while not done.is_set():
        # the main thread is "busy elsewhere": it only checks in every second
        done.wait(1.0)
        assert time.monotonic() - start < 60
    elapsed = time.monotonic() - start
    transport.write(b"\n")
    body = received[1:-1]
    assert received[0] == f"count {count}"
    assert len(body) == count
    for number in (0, 1, count // 2, count - 1):
        assert body[number] == f"{number:08d} {'x' * 70}"
    assert all(int(line[:8]) == number for number, line in enumerate(body))
    # the expect buffer stayed bounded: its oldest text was dropped (it was logged)
    assert len(buffer) <= 1 << 20
    assert buffer.dropped > 0
    match = expect(buffer, ["END"], 5)
    assert match.before.endswith(f"{count - 1:08d} {'x' * 70}\r\n")
    megabytes = reader.bytes_read / 1e6
    print(
        f"\nreader over a pty: {megabytes:.1f} MB in {elapsed:.2f} s = {megabytes / elapsed:.0f} MB/s"
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=24),
            st.lists(
                st.sampled_from(
                    [
                        b"\r",
                        b"\n",
                        b"\r\n",
                        b"\r\r\n",
                        b"a",
                        b"\xc3",
                        b"\xa9",
                        b"\xe2\x98",
                        b"\x83",
                        b"\xff",
                    ]
                ),
                max_size=12,
            ).map(b"".join),
            st.just(QueueTransport.IDLE),
        ),
        max_size=30,
    )
)
def test_random_chunks_are_delivered_as_lines(chunks):
    data = b"".join(c for c in chunks if c is not QueueTransport.IDLE)
    decoded = data.decode("utf-8", errors="replace")
    lines: list[str] = []
    recorder = Recorder()
    transport = QueueTransport([*chunks, QueueTransport.END])
    reader = ConsoleReader(
        transport,
        name="hyp",
        on_line=lambda line, ts: lines.append(line),
        watchers=[recorder],
        idle_flush=30.0,  # only the IDLE markers make the reader flush
    )
    reader.start()
    try:
        assert reader.wait_closed(10)
    finally:
        reader.stop()
    expected = expected_lines(decoded)
    # watchers see exactly the lines of the decoded input
    assert [line for line, _ in recorder.lines] == expected
    # on_line sees them too, partial lines flushed at idle coming in pieces
    # an empty chunk reads as b"": a quiet console, like IDLE
    if not any(chunk is QueueTransport.IDLE or chunk == b"" for chunk in chunks):
        # (a last partial line of nothing but "\r" is not worth an on_line call)
        complete = expected_lines(decoded.rpartition("\n")[0] + "\n") if "\n" in decoded else []
        assert lines in (expected, complete)
        assert lines == expected or expected[-1] == ""
    assert "".join(lines).replace("\r", "") == decoded.replace("\n", "").replace("\r", "")
    # the expect buffer holds all the decoded text
    assert reader.buffer.text() == decoded
    assert reader.callback_error is None
