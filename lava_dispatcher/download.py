"""Fetching a URL to a file: checksums verified and decompression done while streaming.

The whole transfer (waiting for the cache lock, the request, the copy,
unpacking) runs in a worker thread, so that the job's deadline and a cancel
stop it at once: the caller's thread only waits, and on a cancel it shuts
the connection's socket down, so the worker stops within milliseconds too.
A stopped or failed download leaves no partial file behind.

Errors name the URL: InfrastructureError when the file cannot be had
(unreachable host, refused connection, timeout, HTTP 404 or 5xx, a transfer
cut short), JobError when what arrived is not what the job said (checksum
mismatch, not the compression or archive it claimed, a scheme we do not
fetch, a redirect from https to plain http).

With a :class:`~lava_dispatcher.download_cache.DownloadCache`, what the
server sent (before decompression) is kept for the next job: a job that gives
a checksum is served from the cache without any request when an entry has
that checksum; a job that gives none revalidates the entry with a
conditional GET (If-None-Match / If-Modified-Since) and uses it on 304.
Decompression keeps memory bounded whatever the ratio (sparse images
compress a thousandfold), and concatenated streams (pigz, pbzip2, pzstd,
``xz`` of several streams) are read whole.
"""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import lzma
import os
import shutil
import tarfile
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, cast

from lava_dispatcher.download_cache import CacheEntry, DownloadCache
from lava_dispatcher.errors import InfrastructureError, JobError
from lava_dispatcher.timing import Interrupter

CHUNK = 1 << 20
CHECKSUMS = ("md5sum", "sha256sum", "sha512sum")
COMPRESSIONS = ("gz", "xz", "bz2", "zstd", "zip")
ARCHIVES = ("tar",)
#: a progress line every this many bytes when the size is not known
PROGRESS_STEP = 64 << 20
#: how long a canceled fetch waits for its worker to let go of its files
_JOIN_AFTER_ABORT = 0.25


class Logger(Protocol):
    """What fetch() logs to (a JobLogger will do)."""

    def debug(self, msg: Any) -> None: ...

    def info(self, msg: Any) -> None: ...

    def warning(self, msg: Any) -> None: ...


def format_size(size: float) -> str:
    """``40.0 MiB``, ``1.5 GiB``, ``512 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} bytes"


class Progress:
    """Progress lines by bytes received, not by time: a debug line at every
    10% of a known size (``kernel: 40% (40.0 MiB of 100.0 MiB)``), else every
    64 MiB (``kernel: 128.0 MiB``); :meth:`done` logs the final info line."""

    def __init__(
        self, logger: Logger, label: str, total: int | None, step: int = PROGRESS_STEP
    ) -> None:
        self.logger = logger
        self.label = label
        self.total = total if total and total > 0 else None
        self.step = step
        self._last = 0

    def __call__(self, received: int) -> None:
        if self.total is not None:
            tenth = min(received * 10 // self.total, 10) * 10
            if self._last < tenth < 100:
                self._last = tenth
                self.logger.debug(
                    f"{self.label}: {tenth}% ({format_size(received)} of {format_size(self.total)})"
                )
        elif received - self._last >= self.step:
            self._last = received - received % self.step
            self.logger.debug(f"{self.label}: {format_size(received)}")

    def done(self, size: int, seconds: float, how: str = "downloaded") -> None:
        rate = size / max(seconds, 1e-6)
        self.logger.info(
            f"{self.label}: {format_size(size)} {how} in {seconds:.2f} s ({format_size(rate)}/s)"
        )


@dataclass
class Downloaded:
    path: Path  # the file (or, with archive, the directory it was unpacked into)
    size: int  # bytes received (before decompression)
    digests: dict[str, str]
    #: hit | miss | revalidated (from the cache), or off (no cache for this URL)
    cache: str = "off"
    cache_path: Path | None = None
    seconds: float = 0.0


class _Stopped(Exception):
    """The caller gave up (cancel, deadline): the worker just unwinds."""


class _Corrupt(Exception):
    """A cache entry whose data no longer has its recorded digest."""


class _DecodeError(Exception):
    """The data is not what its compression said."""


# --------------------------------------------------------------------------- output
class _Sink:
    """The output file; a failed write (disk full) is the lab's problem."""

    def __init__(self, file: IO[bytes], path: Path) -> None:
        self.file = file
        self.path = path

    def write(self, data: bytes) -> int:
        if data:
            try:
                self.file.write(data)
            except OSError as exc:
                raise InfrastructureError(f"cannot write {self.path}: {exc}") from exc
        return len(data)

    def flush(self) -> None:
        pass


class _Decoder(Protocol):
    def feed(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


class _Plain:
    def __init__(self, sink: _Sink) -> None:
        self.sink = sink

    def feed(self, data: bytes) -> None:
        self.sink.write(data)

    def finish(self) -> None:
        pass


class _Members:
    """gz, xz, bz2 through the stdlib decompressors, output in pieces of at
    most CHUNK, several members back to back. Bytes after a complete member
    that do not start another one are ignored (as the stdlib's readers do);
    data ending inside a member is an error (a truncated file)."""

    _ERRORS = (zlib.error, lzma.LZMAError, OSError, EOFError)

    def __init__(self, kind: str, sink: _Sink) -> None:
        self.kind = kind
        self.sink = sink
        self._d: Any = self._new()
        self._fed = False
        self._members = 0
        self._ignoring = False

    def _new(self) -> Any:
        if self.kind == "gz":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self.kind == "xz":
            return lzma.LZMADecompressor()
        return bz2.BZ2Decompressor()

    def feed(self, data: bytes) -> None:
        while data and not self._ignoring:
            if self._members and not self._fed and not data.strip(b"\0"):
                return  # zero padding after a complete member (gzip and xz allow it)
            starting = not self._fed
            self._fed = True
            try:
                data = self._member(data)
            except self._ERRORS as exc:
                if starting and self._members:
                    self._ignoring = True
                    return
                raise _DecodeError(str(exc) or type(exc).__name__) from exc

    def _member(self, data: bytes) -> bytes:
        """Feed ``data`` to the current member; returns what follows its end."""
        d = self._d
        if self.kind == "gz":
            out = d.decompress(data, CHUNK)
            self.sink.write(out)
            while d.unconsumed_tail or (len(out) == CHUNK and not d.eof):
                out = d.decompress(d.unconsumed_tail, CHUNK)
                self.sink.write(out)
        else:
            self.sink.write(d.decompress(data, CHUNK))
            while not d.eof and not d.needs_input:
                self.sink.write(d.decompress(b"", CHUNK))
        if not d.eof:
            return b""
        rest: bytes = d.unused_data
        self._members += 1
        self._d = self._new()
        self._fed = False
        return rest

    def finish(self) -> None:
        if self._fed and not self._ignoring:
            raise _DecodeError("the data ends before the end of the compressed stream")
        if not self._members:
            raise _DecodeError("there is no compressed data")


class _ZstdFrames:
    """Follows the frame structure of zstd data (RFC 8878) to tell a complete
    stream from a truncated one, which the zstandard streaming API does not."""

    MAGIC = 0xFD2FB528

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4
        self._buf = b""
        self._skip = 0
        self._checksum = False
        self.frames = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._buf), end - pos)
            self._buf += bytes(view[pos : pos + take])
            pos += take
            if len(self._buf) == self._need:
                header, self._buf = self._buf, b""
                self._advance(header)

    def _advance(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        if self._state == "magic":
            if value == self.MAGIC:
                self._state, self._need = "descriptor", 1
            elif value & 0xFFFFFFF0 == 0x184D2A50:
                self._state, self._need = "skippable", 4
            else:
                raise ValueError(f"not a zstd frame (magic number {value:#010x})")
        elif self._state == "descriptor":
            fcs_flag, single = value >> 6, (value >> 5) & 1
            self._checksum = bool((value >> 2) & 1)
            size = (0 if single else 1) + (0, 1, 2, 4)[value & 3]
            size += ((1 if single else 0), 2, 4, 8)[fcs_flag]
            self._state, self._need = "header", size
        elif self._state == "header":
            self._state, self._need = "block", 3
        elif self._state == "block":
            kind, size = (value >> 1) & 3, value >> 3
            if kind == 3:
                raise ValueError("reserved zstd block type")
            self._skip = 1 if kind == 1 else size
            if value & 1:  # last block
                if self._checksum:
                    self._state, self._need = "checksum", 4
                else:
                    self._state, self._need = "magic", 4
                    self.frames += 1
        elif self._state == "checksum":
            self._state, self._need = "magic", 4
            self.frames += 1
        elif self._state == "skippable":
            self._skip = value
            self._state, self._need = "magic", 4
            self.frames += 1

    def complete(self) -> bool:
        return self._state == "magic" and not self._buf and not self._skip and self.frames > 0

    def started(self) -> bool:
        return bool(self.frames or self._buf or self._state != "magic")


class _Zstd:
    def __init__(self, sink: _Sink) -> None:
        import zstandard

        self._errors: tuple[type[Exception], ...] = (zstandard.ZstdError, ValueError)
        self._writer = zstandard.ZstdDecompressor().stream_writer(
            cast(IO[bytes], sink), write_size=CHUNK, closefd=False
        )
        self._frames = _ZstdFrames()

    def feed(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            self._frames.feed(data)
        except self._errors as exc:
            raise _DecodeError(str(exc)) from exc

    def finish(self) -> None:
        try:
            self._writer.flush()
            self._writer.close()
        except self._errors as exc:
            raise _DecodeError(str(exc)) from exc
        if not self._frames.complete():
            raise _DecodeError(
                "the data ends before the end of the compressed stream"
                if self._frames.started()
                else "there is no compressed data"
            )


def _decoder(compression: str | None, sink: _Sink) -> _Decoder:
    if compression in (None, "", "none", "zip"):
        return _Plain(sink)
    if compression in ("gz", "xz", "bz2"):
        return _Members(compression, sink)
    if compression == "zstd":
        return _Zstd(sink)
    raise JobError(
        f"unsupported compression {compression!r}; expected one of {', '.join(COMPRESSIONS)}"
    )


def _read_errors(scheme: str) -> tuple[type[BaseException], ...]:
    if scheme == "file":
        return ()
    from lava_dispatcher import http_opener

    return http_opener.READ_ERRORS


def _reason(exc: BaseException) -> str:
    from lava_dispatcher import http_opener

    return http_opener.reason(exc)


# --------------------------------------------------------------------------- the cache's copy
class _Tee:
    """What was received, written to a cache file too; a failure here (disk
    full, too large) only means the file is not cached."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self.reason = ""
        self._file: BinaryIO | None = open(path, "xb")  # noqa: SIM115 - closed in close()/abandon()

    @property
    def active(self) -> bool:
        return self._file is not None

    def write(self, data: bytes) -> None:
        if self._file is None:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.abandon(f"it is larger than download_cache_size ({format_size(self.limit)})")
            return
        try:
            self._file.write(data)
        except OSError as exc:
            self.abandon(f"cannot write {self.path}: {exc}")

    def close(self) -> bool:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self.abandon(f"cannot write {self.path}: {exc}")
        return self.active

    def abandon(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- one fetch
class _QuietLog:
    """Logs until the caller gives up, then keeps quiet (the job has moved on)."""

    def __init__(self, logger: Logger | None, stop: threading.Event) -> None:
        self._logger = logger
        self._stop = stop

    def debug(self, msg: Any) -> None:
        if self._logger is not None and not self._stop.is_set():
            self._logger.debug(msg)

    def info(self, msg: Any) -> None:
        if self._logger is not None and not self._stop.is_set():
            self._logger.info(msg)

    def warning(self, msg: Any) -> None:
        if self._logger is not None and not self._stop.is_set():
            self._logger.warning(msg)


class _Transfer:
    def __init__(
        self,
        url: str,
        dest: Path,
        *,
        timeout: float,
        headers: Mapping[str, Any] | None,
        checksums: Mapping[str, Any] | None,
        compression: str | None,
        archive: str | None,
        on_progress: Callable[[int], None] | None,
        cache: DownloadCache | None,
        logger: Logger | None,
        label: str,
    ) -> None:
        self.url = url
        self.dest = Path(dest)
        self.timeout = timeout
        self.deadline = time.monotonic() + max(0.0, timeout)
        self.headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self.wanted = {k: str(v).strip().lower() for k, v in (checksums or {}).items() if v}
        for name in self.wanted:
            if name not in CHECKSUMS:
                raise JobError(f"unknown checksum {name!r}; expected one of {', '.join(CHECKSUMS)}")
        if compression in ("", "none"):
            compression = None
        if compression is not None and compression not in COMPRESSIONS:
            raise JobError(
                f"unsupported compression {compression!r} for {url}; "
                f"expected one of {', '.join(COMPRESSIONS)}"
            )
        self.compression = compression
        if archive is not None and archive not in ARCHIVES:
            raise JobError(
                f"unsupported archive {archive!r} for {url}; expected one of {', '.join(ARCHIVES)}"
            )
        self.archive = archive
        self.scheme = urllib.parse.urlsplit(url).scheme
        if self.scheme not in ("http", "https", "file"):
            raise JobError(f"unsupported URL scheme in {url!r}; expected file, http or https")
        self.on_progress = on_progress
        self.cache = cache if self.scheme != "file" else None
        self.label = label or filename_of(url)
        self.stop = threading.Event()
        self.log = _QuietLog(logger, self.stop)
        self.logging = logger is not None
        self.status = ""
        self.waiting_for_lock = False
        self._commit = threading.Lock()
        self._sockets: Any = None  # http_opener.Sockets, for http(s) URLs
        self._opener: Any = None
        name = self.dest.name
        self._partial = self.dest.with_name(name + ".part")
        self._unzipped = self.dest.with_name(name + ".unzip.part")
        self._unpacking = self.dest.with_name(name + ".untar.part")

    # --- the caller's side ------------------------------------------------------
    def wait(self, interrupter: Interrupter | None) -> Downloaded:
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["result"] = self.run()
            except BaseException as exc:
                outcome["error"] = exc
                self.remove_leftovers()
            finally:
                done.set()

        worker = threading.Thread(target=work, daemon=True, name=f"download {self.label}")
        worker.start()
        try:
            left = self.deadline - time.monotonic()
            if interrupter is not None:
                finished = interrupter.wait_event(done, left)
            else:
                finished = done.wait(max(0.0, left))
            if not finished:
                detail = f" ({self.status})" if self.status else ""
                raise InfrastructureError(
                    f"download of {self.url} did not finish within {self.timeout:g} seconds{detail}"
                )
        except BaseException:
            self.abort()
            if not self.waiting_for_lock:  # else it holds no file, and may wait long
                worker.join(_JOIN_AFTER_ABORT)
            self.remove_leftovers()
            raise
        error = outcome.get("error")
        if error is None:
            result: Downloaded = outcome["result"]
            return result
        if isinstance(error, OSError):
            raise InfrastructureError(f"cannot download {self.url}: {error}") from error
        raise error

    def abort(self) -> None:
        with self._commit:
            self.stop.set()
        if self._sockets is not None:
            self._sockets.shutdown()

    def remove_leftovers(self) -> None:
        for path in (self._partial, self._unzipped):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        shutil.rmtree(self._unpacking, ignore_errors=True)

    # --- the worker's side ------------------------------------------------------
    def check(self) -> None:
        if self.stop.is_set():
            raise _Stopped()

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise InfrastructureError(
                f"download of {self.url} did not finish within {self.timeout:g} seconds"
            )
        return left

    def run(self) -> Downloaded:
        if self.cache is None:
            self.log.info(f"downloading {self.url}")
            return self.download("off")
        key = self.cache.key(self.url, self.headers, self.wanted)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.cache.lock(key, on_wait=self._waiting))
            except OSError as exc:  # a cache we may not write: do without it
                self.log.warning(f"not using the download cache {self.cache.root}: {exc}")
                self.log.info(f"downloading {self.url}")
                return self.download("off")
            self.status = ""
            self.waiting_for_lock = False
            self.check()
            return self.cached(self.cache, key)

    def _waiting(self, lock: Path) -> None:
        self.waiting_for_lock = True
        self.status = f"still waiting for another job downloading it (lock {lock})"
        self.log.info(f"waiting for another job downloading {self.url} (lock {lock})")

    def cached(self, cache: DownloadCache, key: str) -> Downloaded:
        if self.wanted:
            entry = cache.lookup(self.url, self.headers, self.wanted)
            if entry is not None:
                result = self.from_cache(cache, entry, "hit", locked=entry.key == key)
                if result is not None:
                    return result
            self.log.info(f"downloading {self.url} (cache miss)")
            return self.download("miss", cache, key)
        entry = cache.get(key)
        conditional: dict[str, str] = {}
        if entry is not None and entry.etag:
            conditional["If-None-Match"] = entry.etag
        if entry is not None and entry.last_modified:
            conditional["If-Modified-Since"] = entry.last_modified
        if entry is None or not conditional:
            self.log.info(f"downloading {self.url} (cache miss)")
            return self.download("miss", cache, key)
        self.log.debug(
            f"revalidating the cached copy of {self.url} ("
            + ", ".join(f"{k}: {v}" for k, v in conditional.items())
            + ")"
        )
        response = self.open_url(conditional)
        if response is None:
            self.log.info(f"revalidated (304): {self.url} has not changed, using {entry.blob}")
            result = self.from_cache(cache, entry, "revalidated", locked=True)
            if result is not None:
                return result
            self.log.info(f"downloading {self.url} (cache miss)")
            return self.download("miss", cache, key)
        self.log.info(f"downloading {self.url} (cache miss: it changed since it was cached)")
        return self.download("miss", cache, key, response)

    def from_cache(
        self, cache: DownloadCache, entry: CacheEntry, state: str, *, locked: bool
    ) -> Downloaded | None:
        """The job's file made from a cache entry, or None if the entry is gone or corrupt."""
        try:
            source = open(entry.blob, "rb")  # noqa: SIM115 - closed below
        except OSError:
            return None
        with source:
            try:
                size = os.fstat(source.fileno()).st_size
                if size != entry.size:
                    raise _Corrupt(f"{size} bytes, expected {entry.size}")
                if state == "hit":
                    self.log.info(f"cache hit for {self.url}: {entry.blob}")
                result = self.deliver(source, size, state, verify=entry.digests)
            except _Corrupt as exc:
                self.log.warning(
                    f"dropping the corrupt cache entry {entry.blob} for {self.url} ({exc}); "
                    "downloading it again"
                )
                with contextlib.suppress(OSError):
                    cache.drop(entry, locked=locked)
                return None
        cache.touch(entry)
        result.digests = {**entry.digests, **result.digests}
        result.cache_path = entry.blob
        return result

    def open_url(self, conditional: Mapping[str, str] | None = None) -> BinaryIO | None:
        """The response to GET url; None for 304 Not Modified (conditional only)."""
        self.check()
        if self.scheme == "file":
            path = urllib.parse.unquote(
                urllib.parse.urlsplit(self.url).path
            )  # url2pathname on POSIX
            try:
                return open(path, "rb")
            except OSError as exc:
                raise InfrastructureError(f"cannot read {self.url}: {exc.strerror or exc}") from exc
        from lava_dispatcher import http_opener  # lazily: see its docstring

        if self._opener is None:
            self._sockets = http_opener.Sockets()
            self._opener = http_opener.build_opener(self.url, self._sockets)
            if self.stop.is_set():  # canceled while the opener was built
                self._sockets.shutdown()
        request = http_opener.request(self.url, {**self.headers, **(conditional or {})})
        try:
            response: BinaryIO = self._opener.open(request, timeout=self.remaining())
            return response
        except http_opener.HTTPError as exc:
            exc.close()
            if exc.code == 304 and conditional:
                return None
            raise InfrastructureError(
                f"cannot download {self.url}: HTTP {exc.code} {exc.reason}"
            ) from exc
        except http_opener.READ_ERRORS as exc:
            self.check()
            raise InfrastructureError(
                f"cannot download {self.url}: {http_opener.reason(exc)}"
            ) from exc

    def download(
        self,
        state: str,
        cache: DownloadCache | None = None,
        key: str | None = None,
        response: BinaryIO | None = None,
    ) -> Downloaded:
        if response is None:
            response = self.open_url()
            if response is None:  # pragma: no cover - 304 only answers a conditional GET
                raise InfrastructureError(f"cannot download {self.url}: unexpected 304")
        tee: _Tee | None = None
        with response:
            total = _length(response)
            if cache is not None and key is not None:
                tee = self._tee(cache, key, total)
            try:
                result = self.deliver(response, total, state, tee=tee)
                if tee is not None:
                    self._publish(cache, key, tee, response, result)
            finally:
                if tee is not None and tee.active:
                    tee.abandon("")
        return result

    def _tee(self, cache: DownloadCache, key: str, total: int | None) -> _Tee | None:
        if total is not None and total > cache.max_size:
            self.log.info(
                f"not caching {self.url}: {format_size(total)} is more than "
                f"download_cache_size ({format_size(cache.max_size)})"
            )
            return None
        try:
            if total:
                self._evicted(cache, cache.evict(keep=key, reserve=total))
            return _Tee(cache.new_file(key), cache.max_size)
        except OSError as exc:
            self.log.warning(f"not caching {self.url}: {exc}")
            return None

    def _publish(
        self,
        cache: DownloadCache | None,
        key: str | None,
        tee: _Tee,
        response: BinaryIO,
        result: Downloaded,
    ) -> None:
        if cache is None or key is None:
            return
        if not tee.close():
            if tee.reason:
                self.log.warning(f"not caching {self.url}: {tee.reason}")
            return
        headers = getattr(response, "headers", None)
        try:
            entry = cache.publish(
                key,
                tee.path,
                url=self.url,
                size=result.size,
                digests=result.digests,
                etag=headers.get("ETag") if headers is not None else None,
                last_modified=headers.get("Last-Modified") if headers is not None else None,
                extra={"headers": sorted(self.headers), "checksums": dict(self.wanted)},
            )
        except OSError as exc:
            self.log.warning(f"not caching {self.url}: {exc}")
            return
        self.log.debug(f"cached {self.url} as {entry.blob}")
        result.cache_path = entry.blob
        with contextlib.suppress(OSError):
            self._evicted(cache, cache.evict(keep=key))

    def _evicted(self, cache: DownloadCache, dropped: list[CacheEntry]) -> None:
        if dropped:
            self.log.info(
                f"download cache {cache.root}: evicted {len(dropped)} least recently used "
                f"entries ({format_size(sum(e.size for e in dropped))}) to stay under "
                f"{format_size(cache.max_size)}"
            )

    def deliver(
        self,
        source: BinaryIO,
        total: int | None,
        state: str,
        *,
        verify: Mapping[str, str] | None = None,
        tee: _Tee | None = None,
    ) -> Downloaded:
        """Stream ``source`` into the destination: hash, tee, decompress, unpack."""
        # as LAVA: sha256 always, md5 and sha512 when the job gives them
        # (each digest costs CPU time on every byte)
        names = set(self.wanted) | {"sha256sum"}
        hashes = {
            name: hashlib.new(name[: -len("sum")], usedforsecurity=False) for name in sorted(names)
        }
        progress = Progress(self.log, self.label, total) if self.logging else None
        started = time.monotonic()
        received = 0
        self.check()
        self.log.debug(f"saving as {self.dest}")
        with open(self._partial, "wb") as out:
            decoder = _decoder(self.compression, _Sink(out, self._partial))
            read_errors: tuple[type[BaseException], ...] = (
                OSError,
                ValueError,
                *_read_errors(self.scheme),
            )
            while True:
                self.check()
                try:
                    chunk = source.read(CHUNK)
                except read_errors as exc:
                    self.check()
                    raise InfrastructureError(
                        f"download of {self.url} failed after {received} bytes: {_reason(exc)}"
                    ) from exc
                if not chunk:
                    break
                received += len(chunk)
                for digest in hashes.values():
                    digest.update(chunk)
                if tee is not None:
                    tee.write(chunk)
                try:
                    decoder.feed(chunk)
                except _DecodeError as exc:
                    raise JobError(
                        f"cannot decompress {self.url} as {self.compression}: {exc}"
                    ) from exc
                if progress is not None:
                    progress(received)
                if self.on_progress is not None:
                    self.on_progress(received)
            self.check()
            if total is not None and received != total:
                raise InfrastructureError(
                    f"download of {self.url} ended after {received} of {total} bytes"
                )
            digests = {name: digest.hexdigest() for name, digest in hashes.items()}
            for name, expected in (verify or {}).items():
                if name in digests and digests[name] != expected:
                    raise _Corrupt(f"{name} {digests[name]}, expected {expected}")
            for name, expected in self.wanted.items():
                if digests[name] != expected:
                    raise JobError(
                        f"{name} mismatch for {self.url}: expected {expected}, got {digests[name]}"
                    )
            try:
                decoder.finish()
            except _DecodeError as exc:
                raise JobError(
                    f"cannot decompress {self.url} as {self.compression}: {exc}"
                ) from exc
        made = self._partial
        if self.compression == "zip":
            _unzip_single(self._partial, self._unzipped, self.url, self.check)
            self._partial.unlink()
            made = self._unzipped
        if self.archive == "tar":
            _untar(made, self._unpacking, self.url, self.check)
            made.unlink()
            made = self._unpacking
        with self._commit:
            self.check()
            if self.dest.is_dir() and not self.dest.is_symlink():
                shutil.rmtree(self.dest)
            os.replace(made, self.dest)
        seconds = time.monotonic() - started
        if progress is not None:
            how = "copied from the cache" if state in ("hit", "revalidated") else "downloaded"
            progress.done(received, seconds, how)
        return Downloaded(self.dest, received, digests, state, None, seconds)


def _length(response: BinaryIO) -> int | None:
    """The size the source announces (Content-Length, or a local file's size)."""
    headers = getattr(response, "headers", None)
    if headers is not None:
        value = headers.get("Content-Length")
        if value is not None and str(value).strip().isdigit():
            return int(value)
        return None
    try:
        return os.fstat(response.fileno()).st_size
    except (OSError, ValueError, AttributeError):
        return None


def fetch(
    url: str,
    dest: Path,
    *,
    timeout: float,
    interrupter: Interrupter | None = None,
    headers: Mapping[str, Any] | None = None,
    checksums: Mapping[str, Any] | None = None,
    compression: str | None = None,
    archive: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    cache: DownloadCache | None = None,
    logger: Logger | None = None,
    label: str = "",
) -> Downloaded:
    """Download ``url`` to ``dest`` (decompressed), verifying ``checksums`` of what was received.

    ``archive="tar"``: ``dest`` becomes a directory holding the (decompressed)
    tarball's contents. ``cache``: use and fill that download cache (never
    for file:// URLs). ``logger``: log what happens (cache hit or miss,
    progress, the final size and rate), each line prefixed with ``label``.
    ``on_progress`` is called with the number of bytes received so far.
    Everything, including waiting for another job's download of the same
    file, happens within ``timeout`` seconds and stops at once when
    ``interrupter`` is interrupted.
    """
    transfer = _Transfer(
        url,
        dest,
        timeout=timeout,
        headers=headers,
        checksums=checksums,
        compression=compression,
        archive=archive,
        on_progress=on_progress,
        cache=cache,
        logger=logger,
        label=label,
    )
    return transfer.wait(interrupter)


def _unzip_single(archive: Path, dest: Path, url: str, check: Callable[[], None]) -> None:
    """The one file of a zip archive (``compression: zip``)."""
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise JobError(
                    f"{url}: a zip image must hold exactly one file, it holds {len(members)}"
                )
            with zipped.open(members[0]) as source, open(dest, "wb") as out:
                while True:
                    check()
                    chunk = source.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError) as exc:
        raise JobError(f"{url} is not a valid zip archive: {exc}") from exc
    except OSError as exc:
        if exc.errno is None:  # bz2 members: "Invalid data stream"
            raise JobError(f"{url} is not a valid zip archive: {exc}") from exc
        raise InfrastructureError(f"cannot unzip {url} into {dest}: {exc}") from exc


def unpack_tar(tarball: Path, target: Path, url: str, *, rootfs: bool = False) -> None:
    """Unpack ``tarball`` into the new directory ``target``, without path
    traversal. ``rootfs``: a root filesystem (device nodes and modes kept,
    setuid bits dropped: tarfile's "tar" filter), else plain data."""
    _untar(tarball, target, url, lambda: None, rootfs=rootfs)


def _untar(tarball: Path, target: Path, url: str, check: Callable[[], None], *, rootfs: bool = False) -> None:
    """Unpack ``tarball`` into the new directory ``target``, without path traversal."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    try:
        with tarfile.open(tarball, "r:*") as tar:

            def members() -> Iterator[tarfile.TarInfo]:
                for member in tar:
                    check()
                    yield member

            tar.extractall(target, members=members(), filter="tar" if rootfs else "data")
    except tarfile.FilterError as exc:
        raise JobError(f"refusing to unpack {url}: {exc}") from exc
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise JobError(f"{url} is not a valid tar archive (archive: tar): {exc}") from exc
    except OSError as exc:
        if exc.errno is None:
            raise JobError(f"{url} is not a valid tar archive (archive: tar): {exc}") from exc
        raise InfrastructureError(f"cannot unpack {url} into {target}: {exc}") from exc


def filename_of(url: str) -> str:
    """The file name a URL names (its last path component), never empty or unsafe."""
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    return name if name and name not in (".", "..") else "download"
