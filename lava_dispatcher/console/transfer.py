"""Send a file to a DUT through its console shell, for DUTs with no network.

:func:`send_file` types the file into the DUT's shell as base64, one chunk at
a time, and needs nothing on the DUT but a POSIX shell and the tools every
busybox or coreutils system has: ``base64 -d``, one of ``sha256sum`` /
``md5sum`` / ``cksum``, ``cat``, ``wc``, ``mv``, ``rm`` and ``dd``.

One chunk is one command line plus its here-document::

    p='/dest.part'; c='/dest.chunk'; base64 -d >"$c" 2>/dev/null <<'LAVA_XFER_END'; \
      s=$(sha256sum <"$c"); s=${s%% *}; t=$(printf %.12s "$s"); \
      if [ "$s" = <expected sha256> ]; then if cat "$c" >>"$p"; then r=ok; \
      else r=werr; fi; else r=bad; fi; n=$(wc -c <"$p"); \
      printf '\\074\\100X\\100 %s %s %s %s %s \\100\\076\\n' <nonce> <seq> "$r" "$n" "$t" ...
    <76-character base64 lines>
    LAVA_XFER_END

(one line on the wire), so the chunk is decoded into a scratch file, its
checksum is compared ON THE DUT with the one computed here, and it is
appended to ``dest.part`` only when it matches: a corrupted chunk never
reaches the part file (it is dropped, which is what truncating it away
would achieve, without the truncation) and is typed again, up to
``MAX_ATTEMPTS`` times. The DUT reports the result, the part file's size
and the start of the checksum it computed; the report is checked here as
well. At the end the whole part file is checked the same way and renamed
into place with ``mv``.

Reports are printed with ``printf`` and octal escapes, so the report line
(``<@X@ nonce seq ... @>``) never appears in the terminal's echo of the typed
command; a per-transfer nonce and a sequence number per command make a stale
or foreign line impossible to take for the answer awaited. Each report is
printed ``COPIES`` times, so that a copy mangled by line noise costs
nothing; an unexpected answer (a failure) is believed only when two copies
agree.

Only one wait per chunk: the command line, the data and the delimiter are
written in one go (in slices, so that a cancel is noticed), then the report is
awaited. When no report comes and the console has gone quiet for
``idle_timeout`` seconds (a report lost to line noise, a delimiter mangled so
that the shell still reads the here-document), the state of the part file is
asked for (size and checksum); the question starts with the delimiter line,
which ends a here-document the shell may be stuck in, and the second time
with ^C, which abandons a half-typed command. Whatever the answer, the
transfer resumes from a state verified against the local file (the part file
is cut back to the last verified size with ``dd`` when it is not one).

The timeout is honoured through the expect engine's timeouts: when it runs
out, :class:`TransferError` says how much had been verified on the DUT.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lava_dispatcher import errors
from lava_dispatcher.console.expect import TIMEOUT, ExpectTimeout
from lava_dispatcher.console.shell import ShellSession

#: how often one chunk (or the final check) may fail before the transfer does
MAX_ATTEMPTS = 3
#: unanswered questions in a row before the transfer gives up
MAX_STALLS = 4
#: copies of each report the DUT prints (one may be mangled by line noise)
COPIES = 3
#: leading characters of a checksum shown in reports (the DUT compares all of it)
SHOWN = 12
#: base64 characters per typed line (what ``base64`` itself writes)
LINE_LENGTH = 76
#: longest command line typed: a tty in canonical mode takes 4095, busybox's
#: line editor 1023
MAX_COMMAND = 900
#: the here-document delimiter (``_`` is not a base64 character)
DELIMITER = "LAVA_XFER_END"
#: bytes written to the console at once (a cancel is noticed between two)
WRITE_SLICE = 16384

# "<@X@" as printf octal escapes: the echo of the command never contains it
_OPEN = r"\074\100X\100"
_CLOSE = r"\100\076"
_PROBE_TEXT = b"LAVA"

ProgressCallback = Callable[[int, int], None]


class TransferError(errors.InfrastructureError):
    """The file could not be written on the DUT, or not verified there."""

    def __init__(self, message: str, *, done: int = 0, total: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.done = done
        self.total = total


@dataclass(frozen=True)
class TransferResult:
    """A file verified in place on the DUT: its size in ``bytes``, the
    ``seconds`` the transfer took, the ``checksum`` (hex digest, or the
    decimal CRC for cksum) both sides agree on, the number of ``retries``
    (chunks, or the final check, typed again because the DUT got other
    bytes), the ``algorithm`` used, and the number of ``recoveries``
    (reports lost to line noise, after which the DUT was asked for its state)."""

    bytes: int
    seconds: float
    checksum: str
    retries: int
    algorithm: str = "sha256"
    recoveries: int = 0

    @property
    def rate(self) -> float:
        """Bytes per second."""
        return self.bytes / self.seconds if self.seconds > 0 else float("inf")


# -- checksums, as the DUT's tools compute them -------------------------------------


class _Checksum(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def copy(self) -> _Checksum: ...

    def value(self) -> str: ...


class _HashSum:
    def __init__(self, name: str, state: hashlib._Hash | None = None) -> None:
        self.name = name
        self._hash = state if state is not None else hashlib.new(name, usedforsecurity=False)

    def update(self, data: bytes, /) -> None:
        self._hash.update(data)

    def copy(self) -> _HashSum:
        return _HashSum(self.name, self._hash.copy())

    def value(self) -> str:
        return self._hash.hexdigest()


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


class _Cksum:
    """POSIX ``cksum``: CRC-32 (polynomial 0x04C11DB7, not reflected) over the
    data and then its length, complemented; printed in decimal."""

    def __init__(self, crc: int = 0, length: int = 0) -> None:
        self._crc = crc
        self._length = length

    def update(self, data: bytes, /) -> None:
        crc, table = self._crc, _CRC_TABLE
        for byte in data:
            crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
        self._crc = crc
        self._length += len(data)

    def copy(self) -> _Cksum:
        return _Cksum(self._crc, self._length)

    def value(self) -> str:
        crc, table, length = self._crc, _CRC_TABLE, self._length
        while length:
            crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ (length & 0xFF)]
            length >>= 8
        return str(~crc & 0xFFFFFFFF)


#: DUT tool -> (algorithm name, local checksum), in order of preference
_TOOLS: dict[str, tuple[str, Callable[[], _Checksum]]] = {
    "sha256sum": ("sha256", lambda: _HashSum("sha256")),
    "md5sum": ("md5", lambda: _HashSum("md5")),
    "cksum": ("cksum", _Cksum),
}


def cksum(data: bytes) -> str:
    """What POSIX ``cksum`` prints first for ``data`` (exposed for tests)."""
    state = _Cksum()
    state.update(data)
    return state.value()


# -- the conversation with the DUT ----------------------------------------------------

#: what a judge says of a report: take it, take it only if its second copy
#: says the same (an unexpected answer), or ignore it (mangled)
GOOD, ODD, MANGLED = "good", "odd", "mangled"

Judge = Callable[[list[str]], str]


class _Stalled(Exception):
    """No acceptable report came and the console went quiet."""


class _Session:
    """One transfer's commands and reports (see the module documentation)."""

    def __init__(
        self,
        shell: ShellSession,
        *,
        dest: str,
        deadline: float,
        timeout: float,
        idle_timeout: float,
        total: int,
    ) -> None:
        self.shell = shell
        self.console = shell.console
        self.dest = dest
        self.deadline = deadline
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.total = total
        self.done = 0
        self.where = "checking the DUT's tools"
        self.retries = 0
        self.recoveries = 0
        self.nonce = secrets.token_hex(4)
        self.seq = 0
        self.linesep = shell.linesep
        self.report = re.compile(rf"<@X@ {self.nonce} (\d+) ([^\r\n]*?) @>")
        self.part = shlex.quote(dest + ".part")
        self.chunk = shlex.quote(dest + ".chunk")
        self.quoted_dest = shlex.quote(dest)

    # -- sending ---------------------------------------------------------------

    def command(self, text: str, values: str, *, prefix: str = "") -> int:
        """Type ``text`` followed by a printf of the report of ``values``
        (shell words, separated by single spaces, each quoted so that it
        expands to one argument); returns the report's sequence number."""
        self.seq += 1
        count = len(shlex.split(values)) + 2
        fmt = _OPEN + " %s" * count + " " + _CLOSE + r"\n"
        args = f"{self.nonce} {self.seq} {values}"
        # printf reuses its format for each `count` arguments: one copy each time
        line = f"{text}; printf '{fmt}' {' '.join([args] * COPIES)}"
        if len(line) > MAX_COMMAND:
            raise ValueError(
                f"the command line to type would be {len(line)} characters long (at most "
                f"{MAX_COMMAND}): use a shorter destination path than {self.dest!r}"
            )
        if prefix:
            self.write(prefix, report=repr(prefix))
        self.shell.sendline(line)
        return self.seq

    def write(self, text: str, *, report: str) -> None:
        """Write raw text (reported to on_input as ``report``), in slices."""
        self.console.report_input(report)
        interrupter = self.console.interrupter
        for start in range(0, len(text), WRITE_SLICE):
            if interrupter is not None:
                interrupter.check()
            if time.monotonic() >= self.deadline:
                raise self.timed_out()  # a slow line: do not type on past the deadline
            piece = text[start : start + WRITE_SLICE]
            if self.shell.char_delay > 0:
                # the device drops characters typed too fast: honour its delay
                self.shell._write(piece, None)
            else:
                self.console.write(piece.encode("ascii"))

    # -- waiting ---------------------------------------------------------------

    def _received(self) -> int:
        buffer = self.console.buffer
        return len(buffer) + buffer.dropped

    def wait(self, seq: int, judge: Judge) -> list[str]:
        """The fields of report ``seq`` that ``judge`` accepts.

        Reports of other commands (late copies, answers to questions given
        up on) are skipped. Raises _Stalled when none is accepted and the
        console stays quiet for ``idle_timeout`` seconds, TransferError when
        the transfer's timeout runs out."""
        mark = self._received()
        odd: list[list[str]] = []
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise self.timed_out()
            found = self.shell.expect([self.report, TIMEOUT], min(left, self.idle_timeout))
            if found.match is None:
                now = self._received()
                if now == mark and time.monotonic() < self.deadline:
                    raise _Stalled()
                mark = now
                continue
            mark = self._received()
            if int(found.match.group(1)) != seq:
                continue
            fields = found.match.group(2).split()
            verdict = judge(fields)
            if verdict == GOOD or (verdict == ODD and fields in odd):
                return fields
            if verdict == ODD:
                odd.append(fields)

    def ask(self, text: str, values: str, judge: Judge, *, stalls: int = 0) -> list[str]:
        """Type an idempotent command until an acceptable report of it comes;
        after an unanswered one, start with the recovery keys."""
        while True:
            prefix = self.recovery_prefix(stalls) if stalls else ""
            seq = self.command(text, values, prefix=prefix)
            try:
                return self.wait(seq, judge)
            except _Stalled:
                stalls += 1
                self.recoveries += 1
                if stalls >= MAX_STALLS:
                    raise self.fail(f"the DUT stopped answering while {self.where}") from None

    def recovery_prefix(self, stalls: int) -> str:
        """What to type before a question after ``stalls`` unanswered ones:
        the delimiter (ends a here-document the shell may still be reading),
        and from the second time on ^C first (abandons a half-typed command)."""
        end = self.linesep + DELIMITER + self.linesep
        return ("\x03" + end) if stalls > 1 else end

    # -- outcomes --------------------------------------------------------------

    def timed_out(self) -> TransferError:
        cause = ExpectTimeout(self.timeout, self.console.buffer.tail())
        error = TransferError(
            f"sending {self.dest} timed out after {self.timeout:g} seconds while "
            f"{self.where}: {self.done} of {self.total} bytes were verified on the DUT; "
            f"last output: {cause.tail[-200:]!r}",
            done=self.done,
            total=self.total,
        )
        error.__cause__ = cause
        return error

    def fail(self, message: str) -> TransferError:
        return TransferError(
            f"sending {self.dest}: {message} ({self.done} of {self.total} bytes verified "
            "on the DUT)",
            done=self.done,
            total=self.total,
        )

    def finish(self) -> None:
        """Consume the prompt after the last report, if it comes soon."""
        if not self.shell.prompts:
            return
        with contextlib.suppress(ExpectTimeout):
            left = max(0.0, self.deadline - time.monotonic())
            self.shell.wait_for_prompt(min(left, self.idle_timeout))


def _base64_lines(data: bytes, width: int) -> list[str]:
    text = base64.b64encode(data).decode("ascii")
    return [text[i : i + width] for i in range(0, len(text), width)]


def _sum(tool: str, variable: str) -> str:
    """Shell text leaving the checksum of the file named by ``$variable`` in
    ``$s``, and its first SHOWN characters (for the report) in ``$t``."""
    return (
        f's=$({tool} <"${variable}" 2>/dev/null); s=${{s%% *}}; t=$(printf %.{SHOWN}s "${{s:--}}")'
    )


def send_file(
    shell: ShellSession,
    source: Path,
    dest: str,
    *,
    timeout: float,
    chunk_size: int = 49152,
    progress: ProgressCallback | None = None,
    idle_timeout: float = 5.0,
    line_length: int = LINE_LENGTH,
) -> TransferResult:
    """Write the bytes of ``source`` to the path ``dest`` on the DUT through
    ``shell`` (whose shell must be at its prompt) and verify them there.

    ``timeout`` bounds the whole transfer. ``chunk_size`` bytes are typed
    between two waits for the DUT's report. ``progress(done, total)`` is
    called after each chunk verified on the DUT. ``idle_timeout`` is how
    long the console may stay quiet, with no report, before the DUT is asked
    where it got to (a report lost to line noise). Raises
    :class:`TransferError` when the DUT has no ``base64 -d`` or checksum
    tool, when ``dest`` cannot be written, when a chunk or the whole file
    keeps failing verification, or when the timeout runs out (saying how
    far it got). The part and scratch files are removed after a failure
    (not after a timeout: the DUT is not answering).
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    if not 4 <= line_length <= 512:
        raise ValueError(f"line_length must be between 4 and 512, not {line_length}")
    if not dest or dest.endswith("/") or any(c in dest for c in "\r\n\0"):
        raise ValueError(f"invalid destination path {dest!r}")
    started = time.monotonic()
    with open(source, "rb") as handle:
        total = os.fstat(handle.fileno()).st_size
        session = _Session(
            shell,
            dest=dest,
            deadline=started + max(0.0, timeout),
            timeout=timeout,
            idle_timeout=max(0.05, idle_timeout),
            total=total,
        )
        try:
            tool = _probe(session)
            verified = _TOOLS[tool][1]()  # the checksum of what the part file holds
            while True:
                block = handle.read(chunk_size)
                if not block:
                    break
                verified = _send_chunk(session, tool, verified, block, line_length)
                session.done += len(block)
                if progress is not None:
                    progress(session.done, total)
            if session.done != total:
                raise session.fail(f"{source} changed size while it was being sent")
            _finish(session, tool, verified)
        except TransferError as exc:
            if not isinstance(exc.__cause__, ExpectTimeout):
                _clean_up(session)
            raise
    session.finish()
    return TransferResult(
        bytes=total,
        seconds=time.monotonic() - started,
        checksum=verified.value(),
        retries=session.retries,
        algorithm=_TOOLS[tool][0],
        recoveries=session.recoveries,
    )


def _probe(session: _Session) -> str:
    """Check base64 and the checksum tools, create an empty part file;
    returns the checksum tool."""
    probe = base64.b64encode(_PROBE_TEXT).decode("ascii")
    text = (
        f"p={session.part}; c={session.chunk}; d={session.quoted_dest}; "
        f"b=$(printf '%s\\n' {probe} | base64 -d 2>/dev/null); a=; "
        f"for t in {' '.join(_TOOLS)}; do if echo | $t >/dev/null 2>&1; then a=$a$t,; fi; "
        'done; rm -f "$c"; if [ -d "$d" ]; then w=isdir; '
        'elif e=$( { true >"$p"; } 2>&1 ); then w=ok; else w=no; fi; e=${e%%[! -~]*}'
    )
    # the shell's error message: its first line, never empty
    values = '"${b:--}" "${a:--}" "$w" "${e:--}"'

    def judge(fields: list[str]) -> str:
        if len(fields) < 4 or fields[2] not in ("ok", "no", "isdir"):
            return MANGLED
        decoded, found = fields[:2]
        tools = [t for t in found.split(",") if t]
        if found != "-" and (not found.endswith(",") or not set(tools) <= set(_TOOLS)):
            return MANGLED
        if decoded == _PROBE_TEXT.decode() and tools and fields[2] == "ok":
            return GOOD
        return ODD

    fields = session.ask(text, values, judge)
    decoded, found, writable = fields[:3]
    message = " ".join(fields[3:])
    tool = next((t for t in _TOOLS if f"{t}," in found), None)
    if decoded != _PROBE_TEXT.decode():
        raise session.fail("the DUT has no working 'base64 -d' (busybox or coreutils base64)")
    if tool is None:
        raise session.fail(f"the DUT has none of {', '.join(_TOOLS)}")
    if writable == "isdir":
        raise session.fail(f"{session.dest} is a directory on the DUT")
    if writable != "ok":
        why = f": {message}" if message and message != "-" else ""
        raise session.fail(
            f"cannot write {session.dest}.part on the DUT (missing directory or read-only "
            f"file system?){why}"
        )
    return tool


def _send_chunk(
    session: _Session, tool: str, verified: _Checksum, block: bytes, line_length: int
) -> _Checksum:
    """Type one chunk until it is verified in the part file; returns the
    checksum of the part file with it."""
    offset = session.done
    new_size = offset + len(block)
    chunk_sum = _TOOLS[tool][1]()
    chunk_sum.update(block)
    expected = chunk_sum.value()
    after = verified.copy()
    after.update(block)
    before_state = (offset, verified.value()[:SHOWN])
    after_state = (new_size, after.value()[:SHOWN])
    lines = _base64_lines(block, line_length)
    body = session.linesep.join([*lines, DELIMITER]) + session.linesep
    text = (
        f"p={session.part}; c={session.chunk}; "
        f"base64 -d >\"$c\" 2>/dev/null <<'{DELIMITER}'; {_sum(tool, 'c')}; "
        f'if [ "$s" = {expected} ]; then if cat "$c" >>"$p"; then r=ok; else r=werr; fi; '
        'else r=bad; fi; n=$(wc -c <"$p" 2>/dev/null)'
    )

    def judge(fields: list[str]) -> str:
        if len(fields) != 3 or fields[0] not in ("ok", "bad", "werr") or not fields[1].isdigit():
            return MANGLED
        result, size, shown = fields[0], int(fields[1]), fields[2]
        if result == "ok" and size == new_size and shown == expected[:SHOWN]:
            return GOOD
        if result == "bad" and size == offset:
            return GOOD
        return ODD

    span = f"bytes {offset}-{new_size - 1}"
    problem = ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        session.where = f"sending {span}" + (f" (attempt {attempt})" if attempt > 1 else "")
        if attempt > 1:
            session.retries += 1
        seq = session.command(text, '"$r" "${n:--}" "$t"')
        session.write(body, report=f"[{len(lines)} lines of base64: {len(block)} bytes]")
        try:
            result, size, shown = session.wait(seq, judge)
        except _Stalled:
            session.recoveries += 1
            result, size, shown = "lost", "", ""
        if result == "ok" and int(size) == new_size and shown == expected[:SHOWN]:
            return after
        if result == "bad" and int(size) == offset:
            problem = f"the DUT's {tool} of the chunk began {shown}, not {expected[:SHOWN]}"
            continue
        # a lost report, a failed append, an odd size: ask for the part file's state
        if result == "werr":
            problem = "appending to the part file failed"
        elif result == "lost":
            problem = problem or "the DUT's report was lost"
        expected_states = (before_state, after_state)
        state = _part_state(session, tool, expected_states, stalls=int(result == "lost"))
        if state == after_state:
            return after
        if state != before_state:
            # neither before nor after the chunk: cut back to what was verified
            session.recoveries += 1
            state = _part_state(session, tool, expected_states, truncate=offset)
            if state != before_state:
                raise session.fail(
                    f"the part file could not be cut back to {offset} bytes (it has "
                    f"{state[0]} bytes, {tool} {state[1]}...)"
                )
            problem = problem or f"the part file did not grow by {span}"
    raise session.fail(f"{span} failed verification {MAX_ATTEMPTS} times ({problem})")


def _part_state(
    session: _Session,
    tool: str,
    expected: tuple[tuple[int, str], ...],
    *,
    truncate: int | None = None,
    stalls: int = 0,
) -> tuple[int, str]:
    """The size and (shown part of the) checksum of the part file, after
    cutting it back to ``truncate`` bytes. An ``expected`` state is believed
    at once, any other only when two copies of the report agree."""
    if truncate is None:
        cut = ""
    elif truncate == 0:
        cut = 'true >"$p"; '
    else:
        cut = f'dd if=/dev/null of="$p" bs=1 seek={truncate} 2>/dev/null; '
    text = f'p={session.part}; {cut}n=$(wc -c <"$p" 2>/dev/null); {_sum(tool, "p")}'

    def judge(fields: list[str]) -> str:
        if len(fields) != 2 or not fields[0].isdigit():
            return MANGLED
        return GOOD if (int(fields[0]), fields[1]) in expected else ODD

    fields = session.ask(text, '"${n:--}" "$t"', judge, stalls=stalls)
    return int(fields[0]), fields[1]


def _finish(session: _Session, tool: str, verified: _Checksum) -> None:
    """Check the whole part file and move it into place."""
    expected = verified.value()
    good = [str(session.total), expected[:SHOWN]]
    session.where = "checking the whole file"
    text = (
        f"p={session.part}; d={session.quoted_dest}; c={session.chunk}; "
        f'rm -f "$c"; {_sum(tool, "p")}; if [ "$s" = {expected} ]; then '
        'if mv -f "$p" "$d"; then r=ok; else r=mverr; fi; else r=bad; fi; '
        'n=$(wc -c <"$d" 2>/dev/null)'
    )
    state_text = (
        f"p={session.part}; d={session.quoted_dest}; "
        'if [ -e "$p" ]; then q=part; else q=moved; fi; n=$(wc -c <"$d" 2>/dev/null); '
        f"{_sum(tool, 'd')}"
    )

    def judge(fields: list[str]) -> str:
        if len(fields) != 3 or fields[0] not in ("ok", "bad", "mverr"):
            return MANGLED
        return GOOD if fields == ["ok", *good] else ODD

    def judge_state(fields: list[str]) -> str:
        if len(fields) != 3 or fields[0] not in ("part", "moved"):
            return MANGLED
        return GOOD if fields == ["moved", *good] else ODD

    problem = ""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if attempt > 1:
            session.retries += 1
        seq = session.command(text, '"$r" "${n:--}" "$t"')
        try:
            fields = session.wait(seq, judge)
        except _Stalled:
            session.recoveries += 1
            fields = session.ask(state_text, '"$q" "${n:--}" "$t"', judge_state, stalls=1)
            if fields == ["moved", *good]:
                return
            problem = f"the state after the check was unclear ({' '.join(fields)})"
            continue
        result, _, shown = fields
        if result == "ok":
            return
        if result == "mverr":
            raise session.fail(f"cannot move {session.dest}.part to {session.dest} on the DUT")
        problem = f"the DUT's {tool} of the whole file began {shown}, not {expected[:SHOWN]}"
    raise session.fail(f"the whole file failed verification {MAX_ATTEMPTS} times ({problem})")


def _clean_up(session: _Session) -> None:
    """Remove the part and scratch files after a failure (best effort, brief)."""
    session.deadline = max(session.deadline, time.monotonic() + session.idle_timeout)
    with contextlib.suppress(Exception):
        seq = session.command(f"rm -f {session.part} {session.chunk}", "done")
        session.wait(seq, lambda fields: GOOD)
    with contextlib.suppress(Exception):
        session.finish()
