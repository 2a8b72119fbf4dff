"""Every delivery and every attempt, kept apart from the worker's store.

A delivery is one message to one receiver for one state change of one job
(``key`` makes it unique, so the same change notified twice sends once).
Its ``state`` is ``pending`` while attempts go on, then ``delivered``,
``failed`` (no attempt left, or one that cannot succeed), or ``abandoned``
(the worker stopped first). A notify block that cannot be evaluated (a bad
dependency query) or a recipient that cannot be resolved is kept as a
``failed`` delivery with no attempt, so that the job's owner can see why.

:class:`SqliteRecords` keeps them in ``notifications.sqlite`` in the state
directory (not the worker's store: losing it loses nothing a job needs);
:class:`MemoryRecords` is the same in memory, for tests and tools.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

PENDING, DELIVERED, FAILED, ABANDONED = "pending", "delivered", "failed", "abandoned"


@dataclass(frozen=True)
class Attempt:
    number: int
    #: UTC epoch seconds
    started: float
    seconds: float
    ok: bool
    #: what the receiver answered, or why the attempt failed
    detail: str


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    job_id: int
    #: the job state that triggered it: Running or Finished
    trigger: str
    #: callback, email, irc, or criteria/recipient for what could not be evaluated
    kind: str
    #: where it goes: ``POST https://...``, an address, ``nick@server:port``
    target: str
    key: str
    state: str
    created: float
    updated: float
    detail: str
    attempts: tuple[Attempt, ...] = ()


class Records(Protocol):
    """Where deliveries are kept; called on the worker's event loop (quick calls)."""

    def add(self, job_id: int, trigger: str, kind: str, target: str, key: str) -> DeliveryRecord | None:
        """A new pending delivery, or None when ``key`` was recorded already."""
        ...

    def attempt(self, delivery_id: int, attempt: Attempt) -> None: ...

    def finish(self, delivery_id: int, state: str, detail: str) -> None: ...

    def for_job(self, job_id: int) -> list[DeliveryRecord]:
        """A job's deliveries in the order they were made, with their attempts."""
        ...

    def close(self) -> None: ...


class MemoryRecords:
    """Records in memory (tests, and a worker that keeps none)."""

    def __init__(self) -> None:
        self._records: dict[int, DeliveryRecord] = {}
        self._keys: set[str] = set()

    def add(self, job_id: int, trigger: str, kind: str, target: str, key: str) -> DeliveryRecord | None:
        if key in self._keys:
            return None
        self._keys.add(key)
        now = time.time()
        record = DeliveryRecord(len(self._records) + 1, job_id, trigger, kind, target, key, PENDING, now, now, "")
        self._records[record.id] = record
        return record

    def attempt(self, delivery_id: int, attempt: Attempt) -> None:
        record = self._records[delivery_id]
        self._records[delivery_id] = replace(
            record, attempts=(*record.attempts, attempt), updated=time.time(), detail=attempt.detail
        )

    def finish(self, delivery_id: int, state: str, detail: str) -> None:
        self._records[delivery_id] = replace(
            self._records[delivery_id], state=state, detail=detail, updated=time.time()
        )

    def for_job(self, job_id: int) -> list[DeliveryRecord]:
        return [r for r in self._records.values() if r.job_id == job_id]

    def close(self) -> None:
        pass


SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS deliveries_job ON deliveries (job_id, id);
CREATE TABLE IF NOT EXISTS attempts (
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    started REAL NOT NULL,
    seconds REAL NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
"""

#: what a delivery still pending when the worker starts again becomes
RESTARTED = "the worker stopped before this delivery ended; it is not attempted again"


class SqliteRecords:
    """Records in a SQLite file; deliveries left pending by a stopped worker become abandoned."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(SCHEMA)
            self.db.execute(
                "UPDATE deliveries SET state = ?, detail = ?, updated = ? WHERE state = ?",
                (ABANDONED, RESTARTED, time.time(), PENDING),
            )
        except sqlite3.DatabaseError:
            self.db.close()
            raise

    def add(self, job_id: int, trigger: str, kind: str, target: str, key: str) -> DeliveryRecord | None:
        now = time.time()
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO deliveries (job_id, trigger, kind, target, key, state, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, trigger, kind, target, key, PENDING, now, now),
        )
        if cursor.rowcount == 0:
            return None
        return DeliveryRecord(int(cursor.lastrowid or 0), job_id, trigger, kind, target, key, PENDING, now, now, "")

    def attempt(self, delivery_id: int, attempt: Attempt) -> None:
        self.db.execute("BEGIN")
        self.db.execute(
            "INSERT INTO attempts (delivery_id, number, started, seconds, ok, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (delivery_id, attempt.number, attempt.started, attempt.seconds, int(attempt.ok), attempt.detail),
        )
        self.db.execute(
            "UPDATE deliveries SET detail = ?, updated = ? WHERE id = ?", (attempt.detail, time.time(), delivery_id)
        )
        self.db.execute("COMMIT")

    def finish(self, delivery_id: int, state: str, detail: str) -> None:
        self.db.execute(
            "UPDATE deliveries SET state = ?, detail = ?, updated = ? WHERE id = ?",
            (state, detail, time.time(), delivery_id),
        )

    def for_job(self, job_id: int) -> list[DeliveryRecord]:
        attempts: dict[int, list[Attempt]] = {}
        for row in self.db.execute(
            "SELECT a.* FROM attempts a JOIN deliveries d ON d.id = a.delivery_id "
            "WHERE d.job_id = ? ORDER BY a.delivery_id, a.number",
            (job_id,),
        ):
            attempts.setdefault(row[0], []).append(Attempt(row[1], row[2], row[3], bool(row[4]), row[5]))
        rows = self.db.execute(
            "SELECT id, job_id, trigger, kind, target, key, state, created, updated, detail "
            "FROM deliveries WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return [
            DeliveryRecord(
                row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9],
                attempts=tuple(attempts.get(row[0], ())),
            )
            for row in rows
        ]

    def close(self) -> None:
        self.db.close()
