"""The expect engine: pexpect semantics over the text the console reader decoded.

The reader thread appends every decoded chunk to an :class:`ExpectBuffer`;
:func:`expect` waits on the buffer's condition for one of a list of patterns.
Semantics follow pexpect: among the patterns, the match that starts earliest
in the unconsumed text wins (ties go to the lowest index); the text up to the
match is ``before``, the match is ``after``, and both are consumed. ``EOF``
and ``TIMEOUT`` may be listed to get their index instead of an exception.

Matching cost is linear in the console's output: the first round of an
expect searches the unconsumed text once, and each later round searches only
the new text plus ``search_window`` characters before it (so that a match
straddling two reads is still found). A console that prints megabytes never
makes matching quadratic. Unlike pexpect, the first round searches all the
unconsumed text, not just its last window: the reader reads all the time, so
a prompt that arrived while the dispatcher was busy elsewhere is still there.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Union

from lava_dispatcher import errors

if TYPE_CHECKING:
    from lava_dispatcher.timing import Interrupter

#: unconsumed text an ExpectBuffer keeps at most (its oldest text is dropped)
DEFAULT_BUFFER_SIZE = 1 << 20
#: how far back each later search round looks before the new text
DEFAULT_SEARCH_WINDOW = 8192
#: how much of the most recent output a timeout or EOF error quotes
TAIL_SIZE = 500
#: small chunks are coalesced up to this size so the chunk list stays short
_COALESCE = 4096


class _Sentinel:
    """EOF and TIMEOUT: values to list among the patterns."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        return self.name


EOF: Final = _Sentinel("EOF")
TIMEOUT: Final = _Sentinel("TIMEOUT")

Pattern = Union[str, "re.Pattern[str]", _Sentinel, type]


class ExpectTimeout(Exception):
    """No pattern matched within the timeout (and TIMEOUT was not listed)."""

    def __init__(self, timeout: float, tail: str) -> None:
        super().__init__(f"no match within {timeout:g} seconds; last output: {tail[-200:]!r}")
        self.timeout = timeout
        self.tail = tail


@dataclass(frozen=True)
class ExpectMatch:
    """What matched: ``index`` into the pattern list, the ``pattern`` itself,
    the text ``before`` it, the matched text ``after`` ("" for EOF/TIMEOUT) and
    the ``re.Match`` (None for EOF/TIMEOUT)."""

    index: int
    pattern: Pattern
    before: str
    after: str
    match: re.Match[str] | None

    def group(self, n: int | str = 0) -> str | None:
        return self.match.group(n) if self.match is not None else None


@dataclass
class SearchStats:
    """Counters that show the matching cost (tests prove it is linear)."""

    rounds: int = 0
    searched_chars: int = 0  # characters handed to regex searches, summed over patterns


class ExpectBuffer:
    """Thread-safe unconsumed console text, with a condition to wait on.

    Positions are absolute character offsets since the console started:
    ``start`` is the first unconsumed character, ``end`` one past the last.
    """

    def __init__(self, max_size: int = DEFAULT_BUFFER_SIZE) -> None:
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        self.max_size = max_size
        self.cond = threading.Condition(threading.Lock())
        self._chunks: collections.deque[str] = collections.deque()
        self._start = 0
        self._end = 0
        self._seq = 0  # bumped by append, close and wake: what waiters wait on
        self._closed = False
        self._close_reason: BaseException | None = None
        self._recent = ""
        self.dropped = 0  # characters dropped unconsumed because of max_size
        self.stats = SearchStats()
        # (patterns, position) of the last expect that gave up, to resume its search
        self._resume: tuple[tuple[re.Pattern[str], ...], int] | None = None

    # -- the writer side (the reader thread) --------------------------------

    def append(self, text: str) -> None:
        if not text:
            return
        with self.cond:
            chunks = self._chunks
            if chunks and len(chunks[-1]) < _COALESCE and len(text) < _COALESCE:
                chunks[-1] += text
            else:
                chunks.append(text)
            self._end += len(text)
            if len(text) >= TAIL_SIZE:
                self._recent = text[-TAIL_SIZE:]
            else:
                self._recent = (self._recent + text)[-TAIL_SIZE:]
            if self._end - self._start > self.max_size:
                self._trim()
            self._seq += 1
            self.cond.notify_all()

    def _trim(self) -> None:
        excess = self._end - self._start - self.max_size
        chunks = self._chunks
        while excess > 0 and chunks:
            first = chunks[0]
            if len(first) <= excess:
                chunks.popleft()
                self._start += len(first)
                self.dropped += len(first)
                excess -= len(first)
            else:
                chunks[0] = first[excess:]
                self._start += excess
                self.dropped += excess
                excess = 0

    def close(self, reason: BaseException | None = None) -> None:
        """No more text will come (EOF): wake the waiters."""
        with self.cond:
            if not self._closed:
                self._closed = True
                self._close_reason = reason
            self._seq += 1
            self.cond.notify_all()

    def wake(self) -> None:
        """Wake every waiter so that it re-checks its interrupter."""
        with self.cond:
            self._seq += 1
            self.cond.notify_all()

    # -- state ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> BaseException | None:
        return self._close_reason

    def __len__(self) -> int:
        return self._end - self._start

    def text(self) -> str:
        """The unconsumed text (not consumed by this call)."""
        with self.cond:
            return self._slice(self._start, self._end)

    def tail(self, size: int = TAIL_SIZE) -> str:
        """The last characters received, consumed or not."""
        with self.cond:
            return self._recent[-size:]

    def clear(self) -> str:
        """Discard the unconsumed text; returns it."""
        with self.cond:
            text = self._slice(self._start, self._end)
            self._consume_to(self._end)
            return text

    # -- helpers, called with the lock held -----------------------------------

    def _slice(self, begin: int, end: int) -> str:
        """Text between absolute offsets (clamped to what is held)."""
        begin = max(begin, self._start)
        end = min(end, self._end)
        if begin >= end:
            return ""
        pieces: list[str] = []
        if end - begin <= (self._end - self._start) // 2 and end == self._end:
            # a tail: walk from the right
            chunk_end = self._end
            for chunk in reversed(self._chunks):
                chunk_start = chunk_end - len(chunk)
                if chunk_end <= begin:
                    break
                pieces.append(chunk[max(0, begin - chunk_start) : end - chunk_start])
                chunk_end = chunk_start
            pieces.reverse()
        else:
            chunk_start = self._start
            for chunk in self._chunks:
                chunk_end = chunk_start + len(chunk)
                if chunk_start >= end:
                    break
                if chunk_end > begin:
                    pieces.append(chunk[max(0, begin - chunk_start) : end - chunk_start])
                chunk_start = chunk_end
        return pieces[0] if len(pieces) == 1 else "".join(pieces)

    def _consume_to(self, pos: int) -> None:
        pos = min(pos, self._end)
        chunks = self._chunks
        while self._start < pos and chunks:
            first = chunks[0]
            if self._start + len(first) <= pos:
                chunks.popleft()
                self._start += len(first)
            else:
                chunks[0] = first[pos - self._start :]
                self._start = pos
        if not chunks:
            self._start = self._end
        self._resume = None


def flush(buffer: ExpectBuffer) -> str:
    """Discard the buffer's unconsumed text (returns it)."""
    return buffer.clear()


@functools.lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str]:
    # pexpect compiles its string patterns with DOTALL
    return re.compile(pattern, re.DOTALL)


def _is_eof(pattern: object) -> bool:
    return pattern is EOF or (
        getattr(pattern, "__name__", None) == "EOF" and _from_pexpect(pattern)
    )


def _is_timeout(pattern: object) -> bool:
    return pattern is TIMEOUT or (
        getattr(pattern, "__name__", None) == "TIMEOUT" and _from_pexpect(pattern)
    )


def _from_pexpect(pattern: object) -> bool:
    return isinstance(pattern, type) and pattern.__module__.startswith("pexpect")


@dataclass
class _Compiled:
    regexes: list[tuple[int, re.Pattern[str]]]
    key: tuple[re.Pattern[str], ...]
    eof_index: int
    timeout_index: int


def _compile_patterns(patterns: Sequence[Pattern]) -> _Compiled:
    if isinstance(patterns, (str, re.Pattern)):
        raise TypeError("expect() takes a list of patterns, not a single pattern")
    regexes: list[tuple[int, re.Pattern[str]]] = []
    eof_index = timeout_index = -1
    for index, pattern in enumerate(patterns):
        if isinstance(pattern, str):
            regexes.append((index, _compile(pattern)))
        elif isinstance(pattern, re.Pattern):
            if not isinstance(pattern.pattern, str):
                raise TypeError(f"pattern #{index} is a bytes regex; the console speaks text")
            regexes.append((index, pattern))
        elif _is_eof(pattern):
            if eof_index < 0:
                eof_index = index
        elif _is_timeout(pattern):
            if timeout_index < 0:
                timeout_index = index
        else:
            raise TypeError(
                f"pattern #{index} must be a str, a compiled regex, EOF or TIMEOUT, got {pattern!r}"
            )
    return _Compiled(regexes, tuple(r for _, r in regexes), eof_index, timeout_index)


def _search(
    window: str, regexes: list[tuple[int, re.Pattern[str]]], pos: int = 0
) -> tuple[int, re.Match[str]] | None:
    """The earliest match in ``window`` from ``pos`` on (ties: lowest index)."""
    best: tuple[int, re.Match[str]] | None = None
    best_start = len(window) + 1
    for index, regex in regexes:
        found = regex.search(window, pos)
        if found is not None and found.start() < best_start:
            best, best_start = (index, found), found.start()
    return best


def expect(
    buffer: ExpectBuffer,
    patterns: Sequence[Pattern],
    timeout: float,
    *,
    interrupter: Interrupter | None = None,
    search_window: int = DEFAULT_SEARCH_WINDOW,
) -> ExpectMatch:
    """Wait up to ``timeout`` seconds for one of ``patterns`` in ``buffer``.

    Returns an :class:`ExpectMatch`. When nothing matched in time, returns
    TIMEOUT's index if it is listed, else raises :class:`ExpectTimeout`. At
    EOF, returns EOF's index if listed, else raises
    :class:`errors.ConnectionClosedError`. With an ``interrupter``, an
    interrupt (SIGTERM, a kernel panic seen by a watcher) raises out of the
    wait within milliseconds.
    """
    compiled = _compile_patterns(patterns)
    regexes = compiled.regexes
    window_size = max(0, int(search_window))
    deadline = time.monotonic() + max(0.0, timeout)
    stats = buffer.stats
    waking = (
        interrupter.waking(buffer.wake) if interrupter is not None else contextlib.nullcontext()
    )
    cond = buffer.cond
    with waking:
        with cond:
            resume = buffer._resume
            scanned: int | None = None
            if resume is not None and resume[0] == compiled.key and resume[1] >= buffer._start:
                scanned = resume[1]
        matched = False
        try:
            while True:
                if interrupter is not None:
                    interrupter.check()
                with cond:
                    seq = buffer._seq
                    closed = buffer._closed
                    end = buffer._end
                    begin = (
                        buffer._start
                        if scanned is None
                        else max(buffer._start, scanned - window_size)
                    )
                    fresh = end > (buffer._start if scanned is None else scanned)
                    # one character of context before a later round's window, so
                    # that "^" and "\b" do not take the window's start for the text's
                    context = 1 if begin > buffer._start else 0
                    begin -= context
                    window = buffer._slice(begin, end) if fresh else None
                if window:
                    stats.rounds += 1
                    stats.searched_chars += (len(window) - context) * len(regexes)
                    found = _search(window, regexes, context) if regexes else None
                    if found is not None:
                        index, match = found
                        with cond:
                            match_start = begin + match.start()
                            before = buffer._slice(buffer._start, match_start)
                            buffer._consume_to(begin + match.end())
                        matched = True
                        return ExpectMatch(index, patterns[index], before, match.group(0), match)
                    scanned = end
                if closed:
                    with cond:
                        text = buffer._slice(buffer._start, buffer._end)
                        tail = buffer._recent
                        reason = buffer._close_reason
                        if compiled.eof_index >= 0:
                            buffer._consume_to(buffer._end)
                    if compiled.eof_index >= 0:
                        matched = True
                        return ExpectMatch(
                            compiled.eof_index, patterns[compiled.eof_index], text, "", None
                        )
                    why = f" ({reason})" if reason is not None else ""
                    raise errors.ConnectionClosedError(
                        f"connection closed{why}; last output: {tail[-200:]!r}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    with cond:
                        text = buffer._slice(buffer._start, buffer._end)
                        tail = buffer._recent
                    if compiled.timeout_index >= 0:
                        return ExpectMatch(
                            compiled.timeout_index,
                            patterns[compiled.timeout_index],
                            text,
                            "",
                            None,
                        )
                    raise ExpectTimeout(timeout, tail)
                with cond:
                    if buffer._seq == seq:
                        cond.wait(left)
        finally:
            if scanned is not None and not matched:
                with cond:
                    if scanned >= buffer._start:
                        buffer._resume = (compiled.key, scanned)
