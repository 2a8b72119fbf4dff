"""A job's log in the store: the ``logs.yaml`` its ``lava-dispatch run`` writes, and an index.

The child writes LAVA's log format (one ``- {...}`` record per line) into
``output/logs.yaml``; the worker never copies it. As complete lines appear,
the worker appends to ``logs.idx`` the byte offset just past each one
(8 bytes, little-endian), so that lines ``[start, end)`` are one seek and
one read whatever the log's size, and indexes the ``results`` records in the
database. Only complete lines are ever indexed, so a reader never sees half
a record.

Crash order: result rows are committed before the index grows. A worker
killed in between finds, at its next start, rows past the index: they are
dropped and read again (:meth:`JobLog.open`), so no result is lost or
doubled, and lines written by the child meanwhile are indexed then.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lava_dispatcher.log import dump_record, timestamp
from lava_dispatcher.worker.store import Store

_OFFSET = struct.Struct("<Q")
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: how a results record starts (LAVA's field order: dt, lvl, msg)
_RESULTS = '"lvl": "results"'
#: a ``lava-test-event`` line
_EVENT = '"lvl": "event"'
#: read at most this much of a growing log at once (a flood is indexed in steps)
CHUNK = 4 << 20


def _parse_result(line: str) -> tuple[dict[str, Any], str] | None:
    if _RESULTS not in line[:80]:
        return None
    try:
        record = yaml.load(line[2:] if line.startswith("- ") else line, Loader=_LOADER)
    except yaml.YAMLError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("msg"), dict):
        return None
    return record["msg"], str(record.get("dt", ""))


def _parse_event(line: str) -> str | None:
    if _EVENT not in line[:80]:
        return None
    try:
        record = yaml.load(line[2:] if line.startswith("- ") else line, Loader=_LOADER)
    except yaml.YAMLError:
        return None
    return str(record["msg"]) if isinstance(record, dict) and "msg" in record else None


class JobLog:
    """Index and read one job's log. ``lines`` is how many lines are indexed."""

    def __init__(self, store: Store, job_id: int, directory: Path) -> None:
        self.store = store
        self.job_id = job_id
        self.path = directory / "output" / "logs.yaml"
        self.index_path = directory / "logs.idx"
        self.lines = 0
        #: byte offset just past the last indexed line
        self.offset = 0
        #: told of each ``lava-test-event`` line as it is indexed (the worker's events)
        self.on_event: Callable[[str], None] | None = None

    def open(self) -> JobLog:
        """Load the index (its size and last entry only: cheap for any log)."""
        try:
            size = self.index_path.stat().st_size
        except FileNotFoundError:
            size = 0
        self.lines = size // _OFFSET.size
        self.offset = 0
        if self.lines:
            with open(self.index_path, "rb") as index:
                index.seek((self.lines - 1) * _OFFSET.size)
                self.offset = _OFFSET.unpack(index.read(_OFFSET.size))[0]
        return self

    def repair(self) -> JobLog:
        """After a crash: drop a torn last index entry and the results past the index."""
        try:
            size = self.index_path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size % _OFFSET.size:
            with open(self.index_path, "r+b") as index:
                index.truncate(size - size % _OFFSET.size)
        self.open()
        self.store.forget_results_from(self.job_id, self.lines)
        return self

    def ingest(self) -> int:
        """Index the complete lines written since the last call; how many there were."""
        added = 0
        while True:
            try:
                with open(self.path, "rb") as stream:
                    stream.seek(self.offset)
                    data = stream.read(CHUNK)
            except FileNotFoundError:
                return added
            end = data.rfind(b"\n")
            if end < 0:
                return added
            offsets: list[int] = []
            results: list[tuple[int, dict[str, Any], str]] = []
            events: list[str] = []
            position = 0
            for raw in data[: end + 1].splitlines(keepends=True):
                position += len(raw)
                line = raw.decode("utf-8", "replace")
                parsed = _parse_result(line)
                if parsed is not None:
                    results.append((self.lines + len(offsets), *parsed))
                elif self.on_event is not None and (event := _parse_event(line)) is not None:
                    events.append(event)
                offsets.append(self.offset + position)
            if results:
                self.store.add_results(self.job_id, results)
            with open(self.index_path, "ab") as index:
                index.write(b"".join(_OFFSET.pack(o) for o in offsets))
            self.lines += len(offsets)
            self.offset = offsets[-1]
            added += len(offsets)
            for event in events:
                assert self.on_event is not None
                self.on_event(event)
            if len(data) < CHUNK:
                return added

    def _offsets(self, first: int, count: int) -> list[int]:
        with open(self.index_path, "rb") as index:
            index.seek(first * _OFFSET.size)
            data = index.read(count * _OFFSET.size)
        return [o for (o,) in _OFFSET.iter_unpack(data)]

    def read(self, start: int = 0, end: int | None = None) -> tuple[int, str]:
        """Lines ``[start, end)`` of the indexed log as text (``- {...}\\n`` each), and their count."""
        last = self.lines if end is None else min(end, self.lines)
        start = max(0, start)
        if start >= last:
            return 0, ""
        if start == 0:
            begin, (stop,) = 0, self._offsets(last - 1, 1)
        else:
            begin, *_, stop = self._offsets(start - 1, last - start + 1)
        with open(self.path, "rb") as stream:
            stream.seek(begin)
            text = stream.read(stop - begin).decode("utf-8", "replace")
        return last - start, text

    def append(self, level: str, msg: Any) -> None:
        """Add a worker's own record at the end (only once the job's process is gone).

        A torn last line (the process was killed in the middle of writing it)
        was never a record: it is cut off so that the log stays valid YAML.
        """
        self.ingest()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = f"- {dump_record({'dt': timestamp(), 'lvl': level, 'msg': msg})}\n"
        with open(self.path, "ab") as stream:
            stream.truncate(self.offset)
            stream.write(line.encode("utf-8"))
            stream.flush()
            os.fsync(stream.fileno())
        self.ingest()
