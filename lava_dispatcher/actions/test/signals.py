"""Test-shell signals, read where the console is read: in its reader thread.

LAVA's test shell finds signals by expecting on the console from the main
thread, so a signal is seen when the main thread gets to it and its log
line number is a guess. Here a console watcher looks at every complete line
as it arrives: lines holding ``<LAVA_`` are parsed at once, and while a
definition runs its own ``parse.pattern`` is tried on the other lines. Each
finding becomes an :class:`Event` carrying the exact index of its line in
the log (for starttc/endtc) and its arrival time; the test-shell action
takes them from the queue in order. Nothing is parsed twice and nothing
waits on the main thread.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from dataclasses import dataclass, field
from re import Pattern
from typing import Any

from lava_dispatcher.log import JobLogger
from lava_dispatcher.timing import Interrupter

SIGNAL = re.compile(r"<LAVA_SIGNAL_(\S+) ([^>]+)>")
MULTINODE = re.compile(r"<LAVA_MULTI_NODE> <LAVA_(\S+) ([^>]+)>")
RUNNER_EXIT = "<LAVA_TEST_RUNNER EXIT>"
INSTALL_FAIL = "<LAVA_TEST_RUNNER INSTALL_FAIL>"

RESULTS = ("pass", "fail", "skip", "unknown")
#: the fixups every definition gets unless its parse block has its own (as LAVA)
DEFAULT_FIXUP = {"PASS": "pass", "FAIL": "fail", "SKIP": "skip", "UNKNOWN": "unknown"}


@dataclass
class Event:
    """Something the DUT said: ``kind`` is signal, multinode, pattern, exit, install-fail or eof."""

    kind: str
    name: str = ""
    params: list[str] = field(default_factory=list)
    groups: dict[str, Any] = field(default_factory=dict)
    line: int = -1
    ts: float = 0.0
    text: str = ""


class SignalWatcher:
    """A console watcher turning test-shell output into events (thread-safe queue)."""

    def __init__(self, logger: JobLogger, patterns: dict[str, Pattern[str] | None]) -> None:
        self.logger = logger
        #: testrun id ("0_smoke") -> that definition's parse pattern
        self.patterns = patterns
        self.active: Pattern[str] | None = None
        self._events: collections.deque[Event] = collections.deque()
        self._cond = threading.Condition(threading.RLock())

    # --- reader thread ---------------------------------------------------------
    def feed(self, line: str, ts: float) -> None:
        if "<LAVA_" in line:
            self._signals(line, ts)
        elif self.active is not None:
            found = self.active.search(line)
            if found is not None:
                index = self.logger.last_line_of_this_thread()
                self._push(Event("pattern", groups=found.groupdict(), line=index, ts=ts, text=line))

    def _signals(self, line: str, ts: float) -> None:
        index = self.logger.last_line_of_this_thread()
        found_any = False
        for match in SIGNAL.finditer(line):
            found_any = True
            name, raw = match.group(1), match.group(2)
            params = raw.split()
            if name == "STARTRUN" and params:
                self.active = self.patterns.get(params[0])
            elif name == "ENDRUN":
                self.active = None
            self._push(Event("signal", name, params, line=index, ts=ts, text=match.group(0)))
        for match in MULTINODE.finditer(line):
            found_any = True
            self._push(
                Event("multinode", match.group(1), [match.group(2)], line=index, ts=ts, text=match.group(0))
            )
        if RUNNER_EXIT in line:
            found_any = True
            self.active = None
            self._push(Event("exit", line=index, ts=ts, text=RUNNER_EXIT))
        if INSTALL_FAIL in line:
            found_any = True
            self._push(Event("install-fail", line=index, ts=ts, text=INSTALL_FAIL))
        if not found_any and self.active is not None:
            found = self.active.search(line)
            if found is not None:
                self._push(Event("pattern", groups=found.groupdict(), line=index, ts=ts, text=line))

    def flush(self) -> None:
        """The reader stopped (EOF or close): wake the action so it notices."""
        self._push(Event("eof"))

    def _push(self, event: Event) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    # --- main thread -------------------------------------------------------------
    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def take(self, timeout: float, interrupter: Interrupter) -> list[Event]:
        """Every queued event, waiting up to ``timeout`` for the first; raises on interrupt."""
        end = time.monotonic() + max(0.0, timeout)
        with interrupter.waking(self.wake), self._cond:
            while not self._events:
                interrupter.check()
                left = end - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            interrupter.check()
            batch = list(self._events)
            self._events.clear()
            return batch


def keyed_params(params: list[str]) -> dict[str, str]:
    """TESTCASE's ``KEY=value`` words as a dict with lower-case keys; ValueError if malformed."""
    data: dict[str, str] = {}
    for param in params:
        key, sep, value = param.partition("=")
        if not sep or not key:
            raise ValueError(f"malformed parameter {param!r} (expected KEY=value)")
        data[key.lower()] = value
    return data


def parse_test_case(
    data: dict[str, Any], fixup: dict[str, str]
) -> tuple[str, str, float | None, str | None]:
    """(case, result, measurement, units) from a TESTCASE or parse-pattern match.

    ValueError explains what is wrong: a missing id, a result that is not
    pass/fail/skip/unknown after the fixups, a measurement that is not a number.
    """
    case = data.get("test_case_id")
    if not case:
        raise ValueError(f"no test_case_id in {data!r}")
    result = data.get("result")
    if result is None:
        raise ValueError(f"test case {case!r} has no result")
    result = fixup.get(result, result)
    if result not in RESULTS:
        raise ValueError(f"test case {case!r}: bad result {result!r} (expected pass, fail, skip or unknown)")
    measurement: float | None = None
    raw = data.get("measurement")
    if raw not in (None, ""):
        try:
            measurement = float(raw)
        except ValueError:
            raise ValueError(f"test case {case!r}: measurement {raw!r} is not a number") from None
    units = data.get("units") or None
    return str(case), str(result), measurement, units
