"""Group state on disk, so that a coordinator restart (even SIGKILL) loses nothing.

One JSON file per group, replaced atomically (write a temporary file, fsync,
rename, fsync the directory) before the reply that reports the change is
sent: whatever a client has been told survives a crash. A lock file keeps a
second coordinator away from the same directory.
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

    @staticmethod
    def filename(name: str) -> str:
        """Group names are arbitrary text: the file is named after their digest."""
        return f"group-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:32]}.json"

    def load(self) -> dict[str, Group]:
        """Every group saved here; unreadable files are logged and set aside."""
        groups: dict[str, Group] = {}
        for stale in self.directory.glob("group-*.json.tmp"):
            stale.unlink(missing_ok=True)  # a write that a crash interrupted
        for path in sorted(self.directory.glob("group-*.json")):
            try:
                group = Group.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                LOG.error("ignoring unreadable group state %s: %s", path, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                continue
            groups[group.name] = group
        return groups

    def save(self, group: Group) -> None:
        path = self.directory / self.filename(group.name)
        tmp = path.with_name(path.name + ".tmp")
        data = json.dumps(group.to_json(), sort_keys=True).encode("utf-8")
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
        os.fsync(self._dir_fd)

    def delete(self, name: str) -> None:
        (self.directory / self.filename(name)).unlink(missing_ok=True)
        os.fsync(self._dir_fd)

    def close(self) -> None:
        for fd in (self._dir_fd, self._lock):
            with contextlib.suppress(OSError):
                os.close(fd)
