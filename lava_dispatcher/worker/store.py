"""The worker's store: one SQLite database (WAL) in the state directory.

Tables: jobs, devices, users, tokens and results (one row per result
record a job logged, for queries). Logs are files beside it
(:mod:`lava_dispatcher.worker.logs`). Every change of state is one
transaction, committed with ``synchronous=FULL`` before anyone is told about
it: a job whose id was returned is on disk, and a job marked Running has its
process id recorded. The daemon, ``lava-dispatch users`` and tests may open
the same database at once (WAL readers never block the writer).

Times are UTC epoch seconds (float) or None.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from lava_dispatcher.worker.errors import ConfigError

# job states and healths (LAVA's display strings)
SUBMITTED, SCHEDULED, RUNNING, CANCELING, FINISHED = (
    "Submitted", "Scheduled", "Running", "Canceling", "Finished",
)  # fmt: skip
JOB_STATES = ("Submitted", "Scheduling", SCHEDULED, RUNNING, CANCELING, FINISHED)
UNKNOWN, COMPLETE, INCOMPLETE, CANCELED = "Unknown", "Complete", "Incomplete", "Canceled"
JOB_HEALTHS = (UNKNOWN, COMPLETE, INCOMPLETE, CANCELED)
#: jobs that hold a device
ACTIVE = (SCHEDULED, RUNNING, CANCELING)
# device states and healths
IDLE, RESERVED = "Idle", "Reserved"
DEVICE_STATES = (IDLE, RESERVED, RUNNING)
GOOD, BAD, MAINTENANCE, RETIRED, LOOPING = "Good", "Bad", "Maintenance", "Retired", "Looping"
DEVICE_HEALTHS = (GOOD, UNKNOWN, LOOPING, BAD, MAINTENANCE, RETIRED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sub_id TEXT UNIQUE,
    target_group TEXT,
    description TEXT NOT NULL DEFAULT '',
    requested_device_type TEXT,
    pinned_device TEXT,
    actual_device TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    priority INTEGER NOT NULL DEFAULT 50,
    visibility TEXT NOT NULL DEFAULT 'public',
    submitter TEXT NOT NULL,
    health_check INTEGER NOT NULL DEFAULT 0,
    essential INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    health TEXT NOT NULL DEFAULT 'Unknown',
    submit_time REAL NOT NULL,
    start_time REAL,
    end_time REAL,
    failure_comment TEXT,
    error_type TEXT,
    error_msg TEXT,
    pid INTEGER,
    definition TEXT NOT NULL,
    original_definition TEXT NOT NULL,
    multinode_definition TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, health_check, priority, submit_time);
CREATE INDEX IF NOT EXISTS jobs_group ON jobs (target_group);
CREATE TABLE IF NOT EXISTS devices (
    hostname TEXT PRIMARY KEY,
    device_type TEXT NOT NULL,
    path TEXT NOT NULL,
    present INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL DEFAULT 'Idle',
    health TEXT NOT NULL DEFAULT 'Unknown',
    health_reason TEXT,
    current_job INTEGER,
    tags TEXT NOT NULL DEFAULT '[]',
    description TEXT NOT NULL DEFAULT '',
    last_health_check REAL
);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    is_admin INTEGER NOT NULL DEFAULT 0,
    is_active INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    last_used REAL
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    line INTEGER NOT NULL,
    suite TEXT NOT NULL,
    name TEXT NOT NULL,
    result TEXT NOT NULL,
    measurement TEXT,
    units TEXT,
    level TEXT,
    logged TEXT,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_job ON results (job_id, suite, name);
"""

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class JobRecord:
    """One job as stored. ``display_id`` is what LAVA shows (``<first>.<n>`` for sub-jobs)."""

    id: int
    sub_id: str | None
    target_group: str | None
    description: str
    requested_device_type: str | None
    pinned_device: str | None
    actual_device: str | None
    tags: tuple[str, ...]
    priority: int
    visibility: str
    submitter: str
    health_check: bool
    essential: bool
    state: str
    health: str
    submit_time: float
    start_time: float | None
    end_time: float | None
    failure_comment: str | None
    error_type: str | None
    error_msg: str | None
    pid: int | None
    definition: str
    original_definition: str
    multinode_definition: str

    @property
    def display_id(self) -> str:
        return self.sub_id or str(self.id)

    @property
    def is_public(self) -> bool:
        return self.visibility == "public"


@dataclass(frozen=True)
class DeviceRecord:
    """One device: its file, where it stands in the scheduler, its health."""

    hostname: str
    device_type: str
    path: str
    present: bool
    state: str
    health: str
    health_reason: str | None
    current_job: int | None
    tags: tuple[str, ...]
    description: str
    last_health_check: float | None


@dataclass(frozen=True)
class UserRecord:
    name: str
    is_admin: bool
    is_active: bool
    created: float


@dataclass(frozen=True)
class ResultRecord:
    """One result record of a job's log; ``line`` is its 0-based log line."""

    id: int
    job_id: int
    line: int
    suite: str
    name: str
    result: str
    measurement: str | None
    units: str | None
    level: str | None
    logged: str | None
    metadata: dict[str, Any]


R = TypeVar("R")
#: every column but the definitions (what scheduling reads many times a second)
_LIGHT = ", ".join(
    [f.name for f in fields(JobRecord) if not f.name.endswith("definition")]
    + ["'' AS definition", "'' AS original_definition", "'' AS multinode_definition"]
)


def _record(cls: type[R], row: sqlite3.Row) -> R:
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        value = row[f.name]
        if f.name == "tags":
            value = tuple(json.loads(value))
        elif f.name == "metadata":
            value = json.loads(value)
        elif f.type in ("bool",):
            value = bool(value)
        values[f.name] = value
    return cls(**values)


def _durable(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=10000")


class Store:
    """The database of one state directory. Not thread-safe: one per thread or loop."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / "worker.sqlite3"
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        #: called after each commit with what it changed: ("job", id) and ("device", hostname)
        #: pairs (events and notifications are told only of what is on disk)
        self.on_commit: Callable[[set[tuple[str, Any]]], None] | None = None
        self._changed: set[tuple[str, Any]] = set()
        try:
            _durable(self.db)
            with self.transaction():
                version = self.db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise ConfigError(
                        f"{self.path}: written by a newer lava-dispatcher (schema {version}); "
                        f"this one knows schema {SCHEMA_VERSION}"
                    )
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise ConfigError(f"{self.path}: cannot use the store: {exc}") from None
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing; nested use joins the outer transaction."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            self._changed.clear()
            raise
        self.db.execute("COMMIT")
        changed, self._changed = self._changed, set()
        if changed and self.on_commit is not None:
            self.on_commit(changed)

    # -- jobs ----------------------------------------------------------------

    def next_job_id(self) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
        return (int(row[0]) if row else 0) + 1

    def insert_jobs(self, jobs: Sequence[Mapping[str, Any]]) -> list[JobRecord]:
        """Insert jobs (each a mapping of columns, ``id`` included) in one transaction."""
        with self.transaction() as db:
            for job in jobs:
                values = dict(job)
                values["tags"] = json.dumps(list(values.get("tags") or ()))
                columns = ", ".join(values)
                marks = ", ".join(f":{k}" for k in values)
                db.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", values)
                self._changed.add(("job", int(job["id"])))
        return [self.job(int(job["id"])) for job in jobs]

    def job(self, job_id: int) -> JobRecord:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return _record(JobRecord, row)

    def find_job(self, display_id: str) -> JobRecord | None:
        """By ``<id>`` or by a sub-job's ``<first>.<n>``."""
        text = str(display_id).strip()
        if "." in text:
            row = self.db.execute("SELECT * FROM jobs WHERE sub_id = ?", (text,)).fetchone()
        elif text.isascii() and text.isdigit():
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (int(text),)).fetchone()
        else:
            row = None
        return None if row is None else _record(JobRecord, row)

    def jobs(
        self, where: str = "1", params: Iterable[Any] = (), order: str = "id", light: bool = False
    ) -> list[JobRecord]:
        """Jobs matching ``where``; ``light`` leaves their definitions out (empty strings)."""
        columns = _LIGHT if light else "*"
        rows = self.db.execute(f"SELECT {columns} FROM jobs WHERE {where} ORDER BY {order}", tuple(params))
        return [_record(JobRecord, row) for row in rows]

    def queue(self) -> list[JobRecord]:
        """Waiting jobs in scheduling order (health checks, priority, submit time), light."""
        return self.jobs(
            "state = ?", (SUBMITTED,), "health_check DESC, priority DESC, submit_time, id", light=True
        )

    def group(self, target_group: str) -> list[JobRecord]:
        return self.jobs("target_group = ?", (target_group,), "id")

    def update_job(self, job_id: int, **values: Any) -> None:
        sets = ", ".join(f"{k} = :{k}" for k in values)
        with self.transaction() as db:
            db.execute(f"UPDATE jobs SET {sets} WHERE id = :job_id", {**values, "job_id": job_id})
            self._changed.add(("job", job_id))

    # -- devices -------------------------------------------------------------

    def devices(self, present_only: bool = False) -> list[DeviceRecord]:
        where = "WHERE present = 1" if present_only else ""
        rows = self.db.execute(f"SELECT * FROM devices {where} ORDER BY hostname")
        return [_record(DeviceRecord, row) for row in rows]

    def device(self, hostname: str) -> DeviceRecord | None:
        row = self.db.execute("SELECT * FROM devices WHERE hostname = ?", (hostname,)).fetchone()
        return None if row is None else _record(DeviceRecord, row)

    def update_device(self, hostname: str, **values: Any) -> None:
        if "tags" in values:
            values["tags"] = json.dumps(sorted(set(values["tags"])))
        sets = ", ".join(f"{k} = :{k}" for k in values)
        with self.transaction() as db:
            db.execute(
                f"UPDATE devices SET {sets} WHERE hostname = :hostname_", {**values, "hostname_": hostname}
            )
            self._changed.add(("device", hostname))

    def sync_devices(self, found: Mapping[str, tuple[str, str]]) -> None:
        """Make the devices table match the device files: ``hostname -> (type, path)``.

        A new device, one that comes back or one whose type changed is
        Unknown (a health check decides); one whose file is gone is Retired.
        """
        with self.transaction() as db:
            known = {d.hostname: d for d in self.devices()}
            self._changed.update(("device", hostname) for hostname in set(found) | set(known))
            for hostname, (device_type, path) in found.items():
                old = known.get(hostname)
                if old is None:
                    db.execute(
                        "INSERT INTO devices (hostname, device_type, path, health, health_reason) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (hostname, device_type, path, UNKNOWN, "new device"),
                    )
                elif not old.present or old.device_type != device_type:
                    why = "device file is back" if not old.present else f"device type was {old.device_type}"
                    db.execute(
                        "UPDATE devices SET device_type = ?, path = ?, present = 1, health = ?, "
                        "health_reason = ? WHERE hostname = ?",
                        (device_type, path, UNKNOWN, why, hostname),
                    )
                elif old.path != path:
                    db.execute("UPDATE devices SET path = ? WHERE hostname = ?", (path, hostname))
            for hostname, old in known.items():
                if hostname not in found and old.present:
                    db.execute(
                        "UPDATE devices SET present = 0, health = ?, health_reason = ? "
                        "WHERE hostname = ?",
                        (RETIRED, "device file removed", hostname),
                    )

    # -- users and tokens ----------------------------------------------------

    def user(self, name: str) -> UserRecord | None:
        row = self.db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else _record(UserRecord, row)

    def users(self) -> list[UserRecord]:
        return [_record(UserRecord, r) for r in self.db.execute("SELECT * FROM users ORDER BY name")]

    # -- results -------------------------------------------------------------

    def add_results(self, job_id: int, rows: Sequence[tuple[int, Mapping[str, Any], str]]) -> None:
        """Index result records: (log line, the record's msg, its dt)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO results (job_id, line, suite, name, result, measurement, units, "
                "level, logged, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        job_id,
                        line,
                        str(msg.get("definition", "")),
                        str(msg.get("case", "")),
                        str(msg.get("result", "unknown")),
                        None if msg.get("measurement") is None else str(msg["measurement"]),
                        None if msg.get("units") is None else str(msg["units"]),
                        None if msg.get("level") is None else str(msg["level"]),
                        dt,
                        json.dumps(dict(msg), default=str),
                    )
                    for line, msg, dt in rows
                ],
            )

    def forget_results_from(self, job_id: int, line: int) -> None:
        """Drop results at or after a log line (re-read after a crash)."""
        with self.transaction() as db:
            db.execute("DELETE FROM results WHERE job_id = ? AND line >= ?", (job_id, line))

    def results(
        self,
        job_id: int,
        suite: str | None = None,
        case: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ResultRecord]:
        where = "job_id = ?"
        params: list[Any] = [job_id]
        if suite is not None:
            where, params = where + " AND suite = ?", [*params, suite]
        if case is not None:
            where, params = where + " AND name = ?", [*params, case]
        sql = f"SELECT * FROM results WHERE {where} ORDER BY id LIMIT ? OFFSET ?"
        rows = self.db.execute(sql, (*params, -1 if limit is None else limit, offset))
        return [_record(ResultRecord, row) for row in rows]

    def suites(self, job_id: int) -> list[str]:
        rows = self.db.execute(
            "SELECT suite FROM results WHERE job_id = ? GROUP BY suite ORDER BY MIN(id)", (job_id,)
        )
        return [row[0] for row in rows]


def now() -> float:
    return time.time()
