"""Group state on disk, so that a coordinator restart (even SIGKILL) loses nothing.

Each change of a group is appended to that group's journal as one line
holding the group's whole state, and made durable with one ``fdatasync``
before the reply that reports the change is sent: whatever a client has been
told survives a crash. An append costs a quarter of what replacing a file
atomically costs (write, fsync, rename, fsync the directory), and a release
of a whole group at a sync is written once (see ``CoordinatorServer._commit``).

When a journal grows past :data:`COMPACT_BYTES`, the state is written as a
snapshot (``group-<digest>.json``, replaced atomically) and the journal is
emptied. At start, a group is its journal's last complete line, else its
snapshot: a line torn by a crash is ignored. A lock file keeps a second
coordinator away from the same directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path

from lava_dispatcher.protocols.coordinator_state import Group

LOG = logging.getLogger("lava-coordinator")

#: a journal longer than this is folded into its snapshot (bytes)
COMPACT_BYTES = 256 * 1024


class StateError(Exception):
    """The state directory cannot be used."""


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot use state directory {directory}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            raise StateError(
                f"state directory {directory} is in use by another coordinator"
            ) from None
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        #: group name -> its open journal
        self._journals: dict[str, int] = {}

    @staticmethod
    def filename(name: str) -> str:
        """Group names are arbitrary text: the files are named after their digest."""
        return f"group-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:32]}.json"

    @classmethod
    def journal_name(cls, name: str) -> str:
        return cls.filename(name).removesuffix(".json") + ".journal"

    # --- reading ---------------------------------------------------------------

    def load(self) -> dict[str, Group]:
        """Every group saved here; unreadable files are logged and set aside."""
        groups: dict[str, Group] = {}
        for stale in self.directory.glob("group-*.json.tmp"):
            stale.unlink(missing_ok=True)  # a snapshot that a crash interrupted
        stems = {p.name.split(".", 1)[0] for p in self.directory.glob("group-*.json")}
        stems |= {p.name.split(".", 1)[0] for p in self.directory.glob("group-*.journal")}
        for stem in sorted(stems):
            group = self._load_one(self.directory / f"{stem}.json", self.directory / f"{stem}.journal")
            if group is not None:
                groups[group.name] = group
        return groups

    def _load_one(self, snapshot: Path, journal: Path) -> Group | None:
        latest: Group | None = None
        with contextlib.suppress(FileNotFoundError):
            lines = journal.read_bytes().split(b"\n")
            # the last line is complete only when the journal ends with "\n"
            for line in reversed(lines[:-1]):
                try:
                    latest = Group.from_json(json.loads(line))
                    break
                except ValueError:  # (json's errors are ValueErrors too)
                    LOG.warning("ignoring a damaged line of %s", journal)
        if latest is not None:
            return latest
        try:
            return Group.from_json(json.loads(snapshot.read_text(encoding="utf-8")))
        except FileNotFoundError:
            if journal.exists():
                LOG.error("ignoring %s: no complete state in it", journal)
                self._set_aside(journal)
        except (OSError, ValueError) as exc:
            LOG.error("ignoring unreadable group state %s: %s", snapshot, exc)
            self._set_aside(snapshot)
            if journal.exists():
                self._set_aside(journal)
        return None

    @staticmethod
    def _set_aside(path: Path) -> None:
        """group-X.json -> group-X.bad, group-X.journal -> group-X.journal.bad"""
        target = path.with_suffix(".bad") if path.suffix == ".json" else path.with_name(path.name + ".bad")
        with contextlib.suppress(OSError):
            path.rename(target)

    # --- writing ---------------------------------------------------------------

    def save(self, group: Group) -> None:
        """Make the group's current state durable (one append and one fdatasync)."""
        fd = self._journals.get(group.name)
        if fd is None:
            path = self.directory / self.journal_name(group.name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._journals[group.name] = fd
            os.fsync(self._dir_fd)  # the journal's name is durable too
        line = json.dumps(group.to_json(), sort_keys=True, separators=(",", ":")) + "\n"
        os.write(fd, line.encode("utf-8"))
        os.fdatasync(fd)
        if os.fstat(fd).st_size > COMPACT_BYTES:
            self._compact(group, fd)

    def _compact(self, group: Group, fd: int) -> None:
        """Write the state as the snapshot, then empty the journal (in that order)."""
        path = self.directory / self.filename(group.name)
        tmp = path.with_name(path.name + ".tmp")
        data = json.dumps(group.to_json(), sort_keys=True).encode("utf-8")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
        os.fsync(self._dir_fd)
        os.ftruncate(fd, 0)
        os.fdatasync(fd)

    def delete(self, name: str) -> None:
        fd = self._journals.pop(name, None)
        if fd is not None:
            os.close(fd)
        (self.directory / self.journal_name(name)).unlink(missing_ok=True)
        (self.directory / self.filename(name)).unlink(missing_ok=True)
        os.fsync(self._dir_fd)

    def close(self) -> None:
        for fd in (*self._journals.values(), self._dir_fd, self._lock):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._journals.clear()
