"""A local cache of downloaded files, shared by the jobs (processes) of one host.

What is kept is what the server sent (before decompression), with what is
needed to reuse it: the URL, the size, the md5/sha256/sha512 digests and the
validators (ETag, Last-Modified) for a conditional GET.

Layout under the cache directory::

    entries/<key>.json      the metadata of one entry (replaced atomically)
    blobs/<key>.<token>     its data (named in the metadata; never rewritten)
    locks/<key>.lock        flock()ed by the one process working on <key>
    tmp/<key>.<token>.*     being written; renamed into blobs/ or entries/

A key is a digest of the URL, the request headers and the checksums the job
gave (so that a file fetched with a token never serves a job without it,
and a file the job pinned by checksum stays found under that checksum even
once the URL serves something else). Nothing half written is ever visible:
data and metadata are written under ``tmp/`` and renamed into place, the
metadata last. Readers take no lock: a blob they have opened stays readable
even if the entry is replaced or evicted meanwhile. Writers of one key are
serialized by its lock file, so that two jobs wanting the same file download
it once. Eviction (least recently used first, by the blob's mtime, which
every use refreshes) skips the keys another process holds.

A corrupt entry is noticed by whoever uses it (the digests are checked
again on every use) and dropped, which is why no fsync is needed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lava_dispatcher.errors import ConfigurationError

#: ``download_cache_size`` when the dispatcher configuration does not say
DEFAULT_MAX_SIZE = 10 << 30
#: the environment variable naming the cache directory (below the dispatcher config)
ENV_DIRECTORY = "LAVA_DOWNLOAD_CACHE"
_FORMAT = 1
_DIGESTS = ("md5sum", "sha256sum", "sha512sum")


def default_directory(environ: Mapping[str, str] | None = None) -> Path:
    """``$LAVA_DOWNLOAD_CACHE``, else ``$XDG_CACHE_HOME/lava-dispatcher/downloads``
    (``~/.cache/...`` when XDG_CACHE_HOME is unset or not absolute)."""
    env = os.environ if environ is None else environ
    explicit = env.get(ENV_DIRECTORY, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "lava-dispatcher" / "downloads"


def parse_size(value: Any) -> int:
    """``download_cache_size``: a number of bytes (an int, or a string of digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigurationError(
            f"download_cache_size: {value!r} is not a number of bytes (such as {DEFAULT_MAX_SIZE})"
        )
    text = str(value).strip()
    if not text.isdigit():
        raise ConfigurationError(
            f"download_cache_size: {value!r} is not a number of bytes (such as {DEFAULT_MAX_SIZE})"
        )
    return int(text)


def from_config(
    dispatcher: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> DownloadCache | None:
    """The cache the dispatcher configuration asks for, or None when it says
    ``download_cache: false``.

    ``download_cache``: the directory (a path; ``true`` or unset: the default
    from :func:`default_directory`). ``download_cache_size``: the limit in
    bytes (default 10 GiB). Raises OSError when the directory cannot be made.
    """
    setting = dispatcher.get("download_cache")
    if setting is False or (
        isinstance(setting, str) and setting.strip().lower() in ("false", "no", "off", "none")
    ):
        return None
    if isinstance(setting, str) and setting.strip().lower() in ("", "true", "yes", "on"):
        setting = None
    if isinstance(setting, (str, os.PathLike)):
        root = Path(setting).expanduser()
    elif setting is None or setting is True:
        root = default_directory(environ)
    else:
        raise ConfigurationError(
            f"download_cache: {setting!r} is neither a directory nor false"
        )
    size = dispatcher.get("download_cache_size")
    return DownloadCache(root, DEFAULT_MAX_SIZE if size is None else parse_size(size))


def cache_key(
    url: str, headers: Mapping[str, Any] | None = None, checksums: Mapping[str, str] | None = None
) -> str:
    """The key of a request: its URL, its headers and the checksums the job gave."""
    material = json.dumps(
        {
            "url": url,
            "headers": sorted((str(k).lower(), str(v)) for k, v in (headers or {}).items()),
            "checksums": sorted((k, str(v).lower()) for k, v in (checksums or {}).items() if v),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass
class CacheEntry:
    """One cached file, as its metadata describes it."""

    key: str
    url: str
    blob: Path
    size: int
    digests: dict[str, str]
    etag: str | None = None
    last_modified: str | None = None
    stored: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def matches(self, checksums: Mapping[str, str]) -> bool:
        """Whether every checksum given is known for this entry and equal."""
        return bool(checksums) and all(
            self.digests.get(name) == str(value).lower() for name, value in checksums.items()
        )

    def last_used(self) -> float:
        try:
            return self.blob.stat().st_mtime
        except OSError:
            return 0.0


class DownloadCache:
    """The cache directory ``root``, holding at most ``max_size`` bytes of data."""

    def __init__(self, root: str | os.PathLike[str], max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.root = Path(root)
        self.max_size = int(max_size)
        self.entries_dir = self.root / "entries"
        self.blobs_dir = self.root / "blobs"
        self.locks_dir = self.root / "locks"
        self.tmp_dir = self.root / "tmp"
        for directory in (self.entries_dir, self.blobs_dir, self.locks_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DownloadCache({str(self.root)!r}, max_size={self.max_size})"

    key = staticmethod(cache_key)

    # --- reading ----------------------------------------------------------------
    def get(self, key: str) -> CacheEntry | None:
        """The entry stored under ``key``, if there is a complete one."""
        try:
            meta = json.loads((self.entries_dir / f"{key}.json").read_text(encoding="utf-8"))
            entry = CacheEntry(
                key=key,
                url=str(meta["url"]),
                blob=self.blobs_dir / os.path.basename(str(meta["blob"])),
                size=int(meta["size"]),
                digests={k: str(v) for k, v in dict(meta["digests"]).items()},
                etag=meta.get("etag"),
                last_modified=meta.get("last_modified"),
                stored=float(meta.get("stored") or 0.0),
                extra=dict(meta.get("extra") or {}),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return entry if entry.blob.is_file() else None

    def lookup(
        self, url: str, headers: Mapping[str, Any] | None, checksums: Mapping[str, str]
    ) -> CacheEntry | None:
        """An entry with the checksums given: stored under this very request, or
        fetched for the same URL and headers without a checksum but matching."""
        if not checksums:
            return None
        for key in (cache_key(url, headers, checksums), cache_key(url, headers)):
            entry = self.get(key)
            if entry is not None and entry.url == url and entry.matches(checksums):
                return entry
        return None

    def entries(self) -> list[CacheEntry]:
        found = []
        for meta in self.entries_dir.glob("*.json"):
            entry = self.get(meta.stem)
            if entry is not None:
                found.append(entry)
        return found

    def total_size(self) -> int:
        return sum(entry.size for entry in self.entries())

    def touch(self, entry: CacheEntry) -> None:
        """Mark ``entry`` as just used (eviction takes the least recently used first)."""
        with contextlib.suppress(OSError):
            os.utime(entry.blob)

    # --- locking ----------------------------------------------------------------
    def lock_path(self, key: str) -> Path:
        return self.locks_dir / f"{key}.lock"

    @contextlib.contextmanager
    def lock(self, key: str, on_wait: Callable[[Path], None] | None = None) -> Iterator[Path]:
        """Hold ``key`` (blocking while another process or thread holds it).

        ``on_wait`` is called (with the lock file) before waiting, if waiting
        is needed. The wait itself cannot be bounded here: fetch() runs it in
        its worker thread and stops waiting for it at its deadline.
        """
        path = self.lock_path(key)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(path)
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            os.close(fd)

    def _try_lock(self, key: str) -> int | None:
        """An fd holding ``key``'s lock, or None when someone else holds it."""
        try:
            fd = os.open(self.lock_path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    # --- writing (the caller holds the key's lock) -----------------------------
    def new_file(self, key: str) -> Path:
        """A fresh path under ``tmp/`` for the data of ``key`` (not visible as an entry)."""
        return self.tmp_dir / f"{key}.{secrets.token_hex(8)}.part"

    def publish(
        self,
        key: str,
        data: Path,
        *,
        url: str,
        size: int,
        digests: Mapping[str, str],
        etag: str | None = None,
        last_modified: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> CacheEntry:
        """Make ``data`` (written under ``tmp/``) the entry for ``key``, atomically."""
        previous = self.get(key)
        token = secrets.token_hex(8)
        blob = self.blobs_dir / f"{key}.{token}"
        os.replace(data, blob)
        meta = {
            "format": _FORMAT,
            "url": url,
            "blob": blob.name,
            "size": size,
            "digests": dict(digests),
            "etag": etag,
            "last_modified": last_modified,
            "stored": time.time(),
            "extra": dict(extra or {}),
        }
        staging = self.tmp_dir / f"{key}.{token}.json"
        try:
            staging.write_text(json.dumps(meta, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(staging, self.entries_dir / f"{key}.json")
        except BaseException:
            staging.unlink(missing_ok=True)
            blob.unlink(missing_ok=True)
            raise
        if previous is not None and previous.blob != blob:
            previous.blob.unlink(missing_ok=True)
        entry = self.get(key)
        if entry is None:  # pragma: no cover - only if someone removed it behind our lock
            raise FileNotFoundError(errno.ENOENT, "cache entry vanished", str(blob))
        return entry

    def drop(self, entry: CacheEntry, *, locked: bool = False) -> bool:
        """Remove ``entry`` (if it is still the current one for its key).

        ``locked``: the caller holds the key's lock; otherwise the lock is
        tried without waiting and a busy key is left alone (returns False).
        """
        fd = None
        if not locked:
            fd = self._try_lock(entry.key)
            if fd is None:
                return False
        try:
            current = self.get(entry.key)
            if current is not None and current.blob != entry.blob:
                return False
            (self.entries_dir / f"{entry.key}.json").unlink(missing_ok=True)
            entry.blob.unlink(missing_ok=True)
            return True
        finally:
            if fd is not None:
                os.close(fd)

    # --- size -------------------------------------------------------------------
    def evict(self, keep: str | None = None, reserve: int = 0) -> list[CacheEntry]:
        """Drop least recently used entries until the data (plus ``reserve``
        bytes about to be written) fits in ``max_size``; never ``keep``, nor a
        key another process holds. Also sweeps leftovers of crashed writers.
        Returns the entries dropped."""
        dropped: list[CacheEntry] = []
        entries = sorted(self.entries(), key=lambda e: e.last_used())
        total = sum(e.size for e in entries) + max(0, reserve)
        for entry in entries:
            if total <= self.max_size:
                break
            if entry.key == keep:
                continue
            if self.drop(entry):
                total -= entry.size
                dropped.append(entry)
        self.sweep(keep)
        return dropped

    def sweep(self, keep: str | None = None) -> None:
        """Remove what crashed writers left: unreferenced blobs, temporary files."""
        referenced: dict[str, str | None] = {}

        def current_blob(key: str) -> str | None:
            if key not in referenced:
                entry = self.get(key)
                referenced[key] = entry.blob.name if entry is not None else None
            return referenced[key]

        leftovers = [
            path
            for path in self.blobs_dir.iterdir()
            if current_blob(path.name.split(".", 1)[0]) != path.name
        ]
        leftovers.extend(self.tmp_dir.iterdir())
        for meta in self.entries_dir.glob("*.json"):
            if current_blob(meta.stem) is None:
                leftovers.append(meta)
        for path in leftovers:
            key = path.name.split(".", 1)[0]
            if key == keep:
                continue
            fd = self._try_lock(key)
            if fd is None:
                continue
            try:
                # look again, now that nobody can be writing this key
                entry = self.get(key)
                if entry is not None and (
                    path.parent == self.entries_dir or entry.blob.name == path.name
                ):
                    continue
                with contextlib.suppress(OSError):
                    path.unlink()
            finally:
                os.close(fd)
