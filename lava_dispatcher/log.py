"""The job log in LAVA's format: one YAML flow mapping per record, one record per line.

A record is ``{"dt": ..., "lvl": ..., "msg": ...}`` with every scalar
double-quoted, exactly as LAVA's ``yaml.dump(default_flow_style=True,
default_style='"')`` writes it, so that lavacli, LAVA's server and any tool
reading LAVA logs read ours. ``logs.yaml`` prefixes each line with ``- `` so
the whole file is a YAML list; on stderr (lava-run without a server) the
record is printed bare, as LAVA does.

Console reader threads log concurrently with the main thread, so writing is
serialized by one lock; the line counter (used for ``starttc``/``endtc``
markers) is taken under the same lock. Target lines are by far the most
frequent records, so plain-string messages take a fast path that produces
byte-for-byte what PyYAML would (a test checks that with hypothesis).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import yaml

try:  # LAVA uses libyaml when present; so do we, for the same bytes
    from yaml import CSafeDumper as _Dumper

    _C_DUMPER = True
except ImportError:  # pragma: no cover - depends on the platform's PyYAML
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]

    _C_DUMPER = False

#: the levels LAVA's clients know (lavacli's colour table, lava-api's enum)
LEVELS = (
    "debug",
    "info",
    "warning",
    "error",
    "exception",
    "results",
    "target",
    "input",
    "feedback",
    "event",
)

#: a record longer than this is replaced, as LAVA does, to keep readers sane
MAX_LINE = 10**5
TOO_LONG = "<line way too long ...>"
MASK = "[MASKED]"

# Characters PyYAML's emitter leaves alone in a double-quoted scalar when
# allow_unicode is off: printable ASCII except '"' and '\\'.
_NEEDS_ESCAPE = re.compile(r'[^\x20-\x21\x23-\x5b\x5d-\x7e]')
_NAMED_ESCAPES = {
    "\0": "\\0",
    "\x07": "\\a",
    "\x08": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\x0b": "\\v",
    "\x0c": "\\f",
    "\r": "\\r",
    "\x1b": "\\e",
    '"': '\\"',
    "\\": "\\\\",
    "\x85": "\\N",
    "\xa0": "\\_",
    "\u2028": "\\L",
    "\u2029": "\\P",
}


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    named = _NAMED_ESCAPES.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def quote(text: str) -> str:
    """``text`` as PyYAML writes a double-quoted scalar (ASCII-only output)."""
    # printable ASCII without quote or backslash needs no escape: most lines
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, text) + '"'


_second_cache: tuple[int, str] = (-1, "")


def timestamp(when: float | None = None) -> str:
    """UTC ISO-8601, as LAVA writes ``dt`` (``datetime.isoformat()``'s form).

    Console lines arrive many per second: the date and time part is cached
    per second, only the microseconds are formatted per line.
    """
    global _second_cache
    if when is None:
        when = time.time()
    # round the fraction alone, half to even, as datetime.fromtimestamp does
    frac, whole = math.modf(when)
    fraction = round(frac * 1_000_000)
    second = int(whole)
    if fraction >= 1_000_000:
        second, fraction = second + 1, fraction - 1_000_000
    cached_second, text = _second_cache
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_cache = (second, text)
    if fraction:
        return f"{text}.{fraction:06d}+00:00"
    return text + "+00:00"


class _NotFlat(Exception):
    """A value the fast formatter does not handle: let PyYAML write it."""


def _float_text(value: float) -> str:
    """PyYAML's spelling of a float (SafeRepresenter.represent_float)."""
    if value != value:
        return ".nan"
    if value == float("inf"):
        return ".inf"
    if value == -float("inf"):
        return "-.inf"
    text = repr(value).lower()
    if "." not in text and "e" in text:
        text = text.replace("e", ".0e", 1)
    return text


def _simple_key(key: str) -> bool:
    return len(key) < 128 and key.isascii() and key.isprintable()


def _flow(value: Any) -> str:
    """``value`` as libyaml writes it with default_style='"' (non-strings as ``! "..."``)."""
    if isinstance(value, str):
        return quote(value)
    if value is None:
        return '! "null"'
    if isinstance(value, bool):
        return '! "true"' if value else '! "false"'
    if isinstance(value, int):
        return f'! "{value}"'
    if isinstance(value, float):
        return f'! "{_float_text(value)}"'
    if isinstance(value, dict):
        # libyaml writes other keys in its explicit '? key' form
        if not all(isinstance(k, str) and _simple_key(k) for k in value):
            raise _NotFlat
        return "{" + ", ".join(f"{quote(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    raise _NotFlat


def flow(value: Any) -> str:
    """Any YAML-able value as one double-quoted flow line (fast for plain data)."""
    if _C_DUMPER:
        try:
            return _flow(value)
        except _NotFlat:
            pass
    return yaml.dump(
        value, Dumper=_Dumper, default_flow_style=True, default_style='"', width=10**9, sort_keys=False
    ).rstrip("\n")


def dump_record(record: Mapping[str, Any]) -> str:
    """One record as one line, without the list prefix.

    Plain data (strings, numbers, booleans, None, lists and mappings of them)
    is formatted here, byte-identical to libyaml's output (a test checks it);
    anything else goes through PyYAML.
    """
    msg = record.get("msg")
    line = ""
    if isinstance(msg, str) and all(isinstance(v, str) for v in record.values()):
        line = "{" + ", ".join(f"{quote(k)}: {quote(v)}" for k, v in record.items()) + "}"
    elif _C_DUMPER:
        try:
            line = _flow(dict(record))
        except _NotFlat:
            line = ""
    if not line:
        line = yaml.dump(
            dict(record),
            Dumper=_Dumper,
            default_flow_style=True,
            default_style='"',
            width=MAX_LINE,
            sort_keys=False,
        ).rstrip("\n")
    if len(line) >= MAX_LINE:
        shortened = dict(record)
        shortened["msg"] = TOO_LONG if isinstance(msg, str) else {"skip": "line way too long ..."}
        return dump_record(shortened)
    return line


#: messages up to this long cannot outgrow MAX_LINE even fully escaped (x10)
_FAST_PATH_MAX = 8000
#: levels written in batches: the console's own lines and the results parsed
#: from them, which come in floods
_BATCHED = frozenset({"target", "feedback", "results"})
#: stream lines held back at most (characters) before the files are flushed for them
_PENDING_MAX = 1 << 16

Observer = Callable[[str, Any, str], None]
"""Called with (level, msg, dt) for every record: live progress, events."""


class JobLogger:
    """Writes LAVA-format records to files and streams; thread-safe.

    Secrets are masked in the formatted line, so they never reach a sink.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: list[tuple[IO[str], str, bool]] = []
        #: lines for the streams (stdout...), held until the files have them: a
        #: reader of the stream (the worker's doorbell) then always finds the line
        #: in the file, whatever the stream's own buffering
        self._pending: list[str] = []
        self._pending_size = 0
        self._files = False
        self._observers: list[Observer] = []
        self._secrets: list[str] = []
        self._markers: dict[str, dict[str, int]] = {}
        self._local = threading.local()
        self.line = 0

    # sinks -----------------------------------------------------------------
    def add_file(self, path: str | Path) -> None:
        """Append records to ``path`` as a YAML list (``- `` prefix)."""
        stream = open(path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115 - closed in close()
        self._sinks.append((stream, "- ", True))
        self._files = True

    def add_stream(self, stream: IO[str], prefix: str = "") -> None:
        """Also write to ``stream`` (not closed by :meth:`close`)."""
        self._sinks.append((stream, prefix, False))

    def add_observer(self, observer: Observer) -> None:
        self._observers.append(observer)

    def add_secret(self, secret: str) -> None:
        """Mask ``secret`` in every later record (empty strings are ignored)."""
        if secret and secret not in self._secrets:
            self._secrets.append(secret)
            # longest first, so a secret containing another is masked whole
            self._secrets.sort(key=len, reverse=True)

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            for stream, _prefix, owned in self._sinks:
                if owned:
                    stream.close()
                else:
                    stream.flush()
            self._sinks.clear()

    # records ---------------------------------------------------------------
    def log(
        self, level: str, msg: Any, *, when: float | None = None, ns: str | None = None
    ) -> None:
        dt = timestamp(when)
        if isinstance(msg, str) and ns is None and len(msg) < _FAST_PATH_MAX:
            # the common case (console lines), formatted directly: dt and the
            # level are plain ASCII, so only the message needs quoting
            line = f'{{"dt": "{dt}", "lvl": "{level}", "msg": {quote(msg)}}}'
        else:
            record: dict[str, Any] = {"dt": dt, "lvl": level, "msg": msg}
            if ns is not None and level == "feedback":
                record["ns"] = ns
            line = dump_record(record)
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, MASK)
        with self._lock:
            self.line += 1
            self._local.line = self.line - 1
            for stream, prefix, owned in self._sinks:
                if owned or not self._files:
                    stream.write(f"{prefix}{line}\n")
                else:
                    text = f"{prefix}{line}\n"
                    self._pending.append(text)
                    self._pending_size += len(text)
            # console lines are flushed in batches (flush() when a console goes
            # quiet, or every _PENDING_MAX characters in a flood); everything
            # else reaches the files, then the streams, at once
            if level not in _BATCHED or self._pending_size > _PENDING_MAX:
                self._flush_locked()
        for observer in self._observers:
            observer(level, msg, dt)

    def flush(self) -> None:
        """Write out buffered console lines (called when a console goes quiet)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        """The files first, then the streams: a line is never on a stream before it is on disk."""
        for stream, _prefix, owned in self._sinks:
            if owned:
                stream.flush()
        if self._pending:
            text, self._pending, self._pending_size = "".join(self._pending), [], 0
            for stream, _prefix, owned in self._sinks:
                if not owned:
                    stream.write(text)
        for stream, _prefix, owned in self._sinks:
            if not owned:
                stream.flush()

    def debug(self, msg: Any) -> None:
        self.log("debug", msg)

    def info(self, msg: Any) -> None:
        self.log("info", msg)

    def warning(self, msg: Any) -> None:
        self.log("warning", msg)

    def error(self, msg: Any) -> None:
        self.log("error", msg)

    def exception(self, msg: Any) -> None:
        self.log("exception", msg)

    def target(self, msg: str, when: float | None = None) -> None:
        self.log("target", msg, when=when)

    def input(self, msg: str) -> None:
        self.log("input", msg)

    def feedback(self, msg: str, ns: str, when: float | None = None) -> None:
        self.log("feedback", msg, when=when, ns=ns)

    def event(self, msg: str) -> None:
        self.log("event", msg)

    def last_line_of_this_thread(self) -> int:
        """0-based index of the record this thread logged last (-1: none yet).

        A console reader thread logs a line and then feeds it to watchers: a
        watcher asks this to learn exactly where in the log its line is,
        whatever other threads logged meanwhile.
        """
        return int(getattr(self._local, "line", -1))

    def marker(self, case: str, kind: str, line: int | None = None) -> None:
        """Mark a log line (by default the one just logged) for ``case``.

        ``kind`` is ``start_test_case``, ``end_test_case`` or ``test_case``;
        the next result for that case gets ``starttc``/``endtc``: the 0-based
        index of the marked line in the log, as LAVA counts them.
        """
        with self._lock:
            self._markers.setdefault(case, {})[kind] = self.line - 1 if line is None else line

    def results(self, record: dict[str, Any]) -> dict[str, Any]:
        """Log a result record (adding markers) and return it as logged."""
        if "extra" in record and "level" not in record:
            raise ValueError("a result with 'extra' needs 'level'")
        with self._lock:
            markers = self._markers.pop(str(record.get("case")), None)
        if markers is not None:
            single = markers.get("test_case")
            record["starttc"] = markers.get("start_test_case", single)
            record["endtc"] = markers.get("end_test_case", single)
        self.log("results", record)
        return record


def read_records(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Parse LAVA log lines (with or without the ``- `` prefix); for tests and tools."""
    out = []
    for line in lines:
        text = line[2:] if line.startswith("- ") else line
        if text.strip():
            out.append(yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    return out
