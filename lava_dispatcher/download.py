"""Fetching a URL to a file: checksums verified and decompression done while streaming.

The transfer runs in a worker thread so that the job's deadline and a
cancel stop it at once (the caller's thread only waits); a stopped or
failed download leaves no partial file behind. Errors name the URL:
InfrastructureError when the file cannot be had (unreachable host, 404),
JobError when what arrived is not what the job said (checksum mismatch,
not the compression it claimed).
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from lava_dispatcher.errors import InfrastructureError, JobError
from lava_dispatcher.timing import Interrupter

CHUNK = 1 << 20
CHECKSUMS = ("md5sum", "sha256sum", "sha512sum")
COMPRESSIONS = ("gz", "xz", "bz2", "zstd", "zip")


class _Decompressor(Protocol):
    def decompress(self, data: bytes) -> bytes: ...


class _Gzip:
    """gzip, including several members back to back (as gzip -c a b makes)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._d.decompress(data))
            if not self._d.eof:
                break
            data = self._d.unused_data
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return b"".join(out)


def _decompressor(compression: str | None) -> _Decompressor | None:
    if compression in (None, "", "none", "zip"):
        return None
    if compression == "gz":
        return _Gzip()
    if compression == "xz":
        return lzma.LZMADecompressor()
    if compression == "bz2":
        return bz2.BZ2Decompressor()
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj()
    raise JobError(f"unsupported compression {compression!r}; expected one of {', '.join(COMPRESSIONS)}")


@dataclass
class Downloaded:
    path: Path
    size: int  # bytes received (before decompression)
    digests: dict[str, str]


def _open(url: str, headers: Mapping[str, str], timeout: float) -> BinaryIO:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = urllib.request.url2pathname(parsed.path)
        try:
            return open(path, "rb")
        except OSError as exc:
            raise InfrastructureError(f"cannot read {url}: {exc.strerror}") from exc
    if parsed.scheme not in ("http", "https"):
        raise JobError(f"unsupported URL scheme in {url!r}; expected file, http or https")
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise InfrastructureError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InfrastructureError(f"cannot download {url}: {reason}") from exc


def fetch(
    url: str,
    dest: Path,
    *,
    timeout: float,
    interrupter: Interrupter | None = None,
    headers: Mapping[str, str] | None = None,
    checksums: Mapping[str, str] | None = None,
    compression: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Downloaded:
    """Download ``url`` to ``dest`` (decompressed), verifying ``checksums`` of what was received."""
    wanted = {k: str(v).lower() for k, v in (checksums or {}).items() if v}
    for name in wanted:
        if name not in CHECKSUMS:
            raise JobError(f"unknown checksum {name!r}; expected one of {', '.join(CHECKSUMS)}")
    hashes = {name: hashlib.new(name[: -len("sum")]) for name in wanted}
    decompressor = _decompressor(compression)
    stop = threading.Event()
    done = threading.Event()
    outcome: dict[str, Any] = {}
    partial = dest.with_name(dest.name + ".part")
    stream_holder: list[BinaryIO] = []

    def work() -> None:
        try:
            stream = _open(url, headers or {}, timeout)
            stream_holder.append(stream)
            received = 0
            with stream, open(partial, "wb") as out:
                while not stop.is_set():
                    chunk = stream.read(CHUNK)
                    if not chunk:
                        break
                    received += len(chunk)
                    for digest in hashes.values():
                        digest.update(chunk)
                    out.write(decompressor.decompress(chunk) if decompressor else chunk)
                    if on_progress is not None:
                        on_progress(received)
            outcome["size"] = received
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=work, daemon=True, name="download")
    worker.start()
    try:
        finished = (
            interrupter.wait_event(done, timeout) if interrupter is not None else done.wait(timeout)
        )
        if not finished:
            raise InfrastructureError(f"download of {url} did not finish within {timeout:g} seconds")
    except BaseException:
        stop.set()
        for stream in stream_holder:
            try:
                stream.close()
            except Exception:
                pass
        worker.join(1.0)
        partial.unlink(missing_ok=True)
        raise
    if "error" in outcome:
        partial.unlink(missing_ok=True)
        error = outcome["error"]
        if isinstance(error, (InfrastructureError, JobError)):
            raise error
        if isinstance(error, (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError)):
            raise JobError(f"cannot decompress {url} as {compression}: {error}") from error
        raise InfrastructureError(f"cannot download {url}: {error}") from error
    digests = {name: digest.hexdigest() for name, digest in hashes.items()}
    for name, expected in wanted.items():
        if digests[name] != expected:
            partial.unlink(missing_ok=True)
            raise JobError(f"{name} mismatch for {url}: expected {expected}, got {digests[name]}")
    if compression == "zip":
        _unzip_single(partial, dest, url)
    else:
        os.replace(partial, dest)
    return Downloaded(dest, int(outcome.get("size", 0)), digests)


def _unzip_single(archive: Path, dest: Path, url: str) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise JobError(f"{url}: a zip image must hold exactly one file, it holds {len(members)}")
            with zipped.open(members[0]) as source, open(dest, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
    except zipfile.BadZipFile as exc:
        raise JobError(f"{url} is not a zip archive: {exc}") from exc
    finally:
        archive.unlink(missing_ok=True)


def filename_of(url: str) -> str:
    """The file name a URL names (its last path component), never empty or unsafe."""
    name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))
    return name if name and name not in (".", "..") else "download"
