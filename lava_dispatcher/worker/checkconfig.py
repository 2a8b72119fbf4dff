"""``lava-dispatch worker --check-config``: would this worker start, and with what?

It reads the config as the worker does (file, then options), then checks
what the start checks, with the start's own code: every device file and
health-check job by the dispatcher (:meth:`Daemon.check_inputs`, in the
validator child), the TLS certificate and key (:func:`tls_context`). It also
checks that the state directory is usable (and says whether a worker is
running on it). It starts no worker, takes no lock and writes nothing, so
it can run beside the worker it is checking, before a restart.

It is stricter than the start on one point: a health-check job for a device
type that has no device here is an error (the worker only warns), because a
misspelt file name would leave that type's devices without a health check.
Every error is reported, not only the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from lava_dispatcher.worker.config import WorkerConfig
from lava_dispatcher.worker.daemon import Daemon, tls_context
from lava_dispatcher.worker.errors import WorkerError
from lava_dispatcher.worker.store import SCHEMA_VERSION


@dataclass
class Report:
    #: one line per device, then one per setting checked
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _lock_holder(lock: Path) -> str | None:
    """The pid written by the worker that holds ``lock``, or None if none does (read-only probe)."""
    with open(lock, encoding="utf-8") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return probe.read().strip() or "unknown"
        fcntl.flock(probe, fcntl.LOCK_UN)
    return None


def _store_version(path: Path) -> int:
    # immutable: no lock, no -wal or -shm file made; the header's version is enough
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?immutable=1", uri=True)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def check_state_dir(state_dir: Path, report: Report) -> None:
    """Usable: a writable directory, or one that can be made; a store this version can read."""
    key = f"state-dir: {state_dir}"
    if not state_dir.exists():
        parent = _nearest_existing(state_dir.parent)
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            report.errors.append(f"{key} does not exist and cannot be made: {parent} is not a writable directory")
        else:
            report.lines.append(f"{key}: will be made at the first start")
        return
    if not state_dir.is_dir():
        report.errors.append(f"{key} is not a directory")
        return
    if not os.access(state_dir, os.W_OK | os.X_OK):
        report.errors.append(f"{key} is not writable by this user (uid {os.getuid()})")
        return
    notes = []
    try:
        store = state_dir / "worker.sqlite3"
        if store.exists():
            version = _store_version(store)
            if version > SCHEMA_VERSION:
                report.errors.append(f"{key}: {store} was written by a newer lava-dispatcher "
                                     f"(schema {version}; this one knows {SCHEMA_VERSION})")  # fmt: skip
                return
        lock = state_dir / "worker.lock"
        holder = _lock_holder(lock) if lock.exists() else None
    except (OSError, sqlite3.Error) as exc:
        report.errors.append(f"{key}: cannot read: {exc}")
        return
    if holder is not None:
        notes.append(f"in use by a running worker (pid {holder})")
    report.lines.append(f"{key}: usable" + "".join(f"; {note}" for note in notes))


async def check_config(config: WorkerConfig) -> Report:
    """Everything the start would check, and nothing started (but the validator child)."""
    report = Report()
    daemon = Daemon(config)
    await daemon.validator.start()
    try:
        inputs = await daemon.check_inputs(keep_going=True)
    except WorkerError as exc:  # no devices directory, or the validator died
        report.errors.append(str(exc))
        return report
    finally:
        await daemon.validator.close()
    report.errors += inputs.errors
    for hostname, (device_type, path) in sorted(inputs.devices.items()):
        check = config.health_checks / f"{device_type}.yaml"
        health = f"health check {check}" if device_type in inputs.checks else "no health check"
        report.lines.append(f"device {hostname}: {device_type}, {path}, {health}")
    here = ", ".join(sorted({t for t, _ in inputs.devices.values()})) or "none"
    for device_type, unused in sorted(inputs.unused_checks.items()):
        report.errors.append(f"health check {unused}: no device of type {device_type!r} here "
                             f"(device types here: {here}); it would never run")  # fmt: skip
    try:
        https = tls_context(config) is not None
        report.lines.append(f"listen: {'https' if https else 'http'}://{config.listen}")
    except WorkerError as exc:
        report.errors.append(str(exc))
    check_state_dir(config.state_dir, report)
    return report
