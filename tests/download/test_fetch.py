"""fetch(): checksums, compressions, archives, errors, redirects, progress, cancel."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import re
import socket
import tarfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
import zstandard

from lava_dispatcher.download import (
    CHUNK,
    Progress,
    _Members,
    _Sink,
    _Zstd,
    fetch,
    format_size,
)
from lava_dispatcher.download_cache import DownloadCache
from lava_dispatcher.errors import InfrastructureError, JobCanceled, JobError
from lava_dispatcher.http_opener import _Redirects
from lava_dispatcher.timing import Interrupter

from .conftest import Lines, Server

DATA = os.urandom(300_000) + b"lava" * 50_000


def digest(name: str, data: bytes) -> str:
    return hashlib.new(name[: -len("sum")], data).hexdigest()


def compress(kind: str, data: bytes) -> bytes:
    if kind == "gz":
        return gzip.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "bz2":
        return bz2.compress(data)
    if kind == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if kind == "zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
            zipped.writestr("rootfs.img", data)
        return buffer.getvalue()
    raise AssertionError(kind)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------ checksums
@pytest.mark.parametrize("name", ["md5sum", "sha256sum", "sha512sum"])
def test_checksum_verified_while_streaming(server: Server, tmp_path: Path, name: str) -> None:
    url = server.add("/image.img", DATA)
    result = fetch(url, tmp_path / "image.img", timeout=10, checksums={name: digest(name, DATA)})
    assert (tmp_path / "image.img").read_bytes() == DATA
    assert result.size == len(DATA)
    assert result.digests[name] == digest(name, DATA)
    assert result.digests["sha256sum"] == digest("sha256sum", DATA)
    assert result.cache == "off"


@pytest.mark.parametrize("name", ["md5sum", "sha256sum", "sha512sum"])
def test_checksum_mismatch_names_url_and_both_digests(
    server: Server, tmp_path: Path, name: str
) -> None:
    url = server.add("/image.img", DATA)
    wrong = digest(name, b"something else")
    with pytest.raises(JobError) as caught:
        fetch(url, tmp_path / "image.img", timeout=10, checksums={name: wrong.upper()})
    message = str(caught.value)
    assert url in message and name in message
    assert wrong in message and digest(name, DATA) in message
    assert leftovers(tmp_path) == []


def test_unknown_checksum_name_is_a_job_error(server: Server, tmp_path: Path) -> None:
    with pytest.raises(JobError, match="sha1sum"):
        fetch(server.add("/x", DATA), tmp_path / "x", timeout=10, checksums={"sha1sum": "00"})
    assert server.requests() == []


# ------------------------------------------------------------------ compression
@pytest.mark.parametrize("kind", ["gz", "xz", "bz2", "zstd", "zip"])
def test_each_compression(server: Server, tmp_path: Path, kind: str) -> None:
    packed = compress(kind, DATA)
    url = server.add(f"/rootfs.img.{kind}", packed)
    result = fetch(
        url,
        tmp_path / "rootfs.img",
        timeout=10,
        compression=kind,
        checksums={"sha256sum": digest("sha256sum", packed)},
    )
    assert (tmp_path / "rootfs.img").read_bytes() == DATA
    assert result.size == len(packed)  # what was received, before decompression
    assert leftovers(tmp_path) == ["rootfs.img"]


@pytest.mark.parametrize("kind", ["gz", "xz", "bz2", "zstd"])
def test_concatenated_streams_are_read_whole(server: Server, tmp_path: Path, kind: str) -> None:
    # pigz, pbzip2, pzstd and `cat a.xz b.xz` make several streams back to back
    packed = compress(kind, DATA[:1000]) + compress(kind, DATA[1000:])
    url = server.add("/multi", packed)
    fetch(url, tmp_path / "multi", timeout=10, compression=kind)
    assert (tmp_path / "multi").read_bytes() == DATA


@pytest.mark.parametrize("kind", ["gz", "xz"])
def test_zero_padding_after_the_stream_is_allowed(
    server: Server, tmp_path: Path, kind: str
) -> None:
    url = server.add("/padded", compress(kind, DATA) + bytes(512))
    fetch(url, tmp_path / "padded", timeout=10, compression=kind)
    assert (tmp_path / "padded").read_bytes() == DATA


@pytest.mark.parametrize("kind", ["gz", "xz", "bz2", "zstd"])
def test_wrong_compression_is_a_job_error(server: Server, tmp_path: Path, kind: str) -> None:
    other = "xz" if kind != "xz" else "gz"
    url = server.add("/image", compress(other, DATA))
    with pytest.raises(JobError, match=f"cannot decompress {re.escape(url)} as {kind}"):
        fetch(url, tmp_path / "image", timeout=10, compression=kind)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["gz", "xz", "bz2", "zstd"])
def test_truncated_compressed_file_is_a_job_error(
    server: Server, tmp_path: Path, kind: str
) -> None:
    packed = compress(kind, DATA)
    url = server.add("/cut", packed[: len(packed) * 2 // 3])
    with pytest.raises(JobError, match="ends before the end of the compressed stream"):
        fetch(url, tmp_path / "cut", timeout=10, compression=kind)
    assert leftovers(tmp_path) == []


def test_not_a_zip(server: Server, tmp_path: Path) -> None:
    url = server.add("/image.zip", DATA)
    with pytest.raises(JobError, match=f"{re.escape(url)} is not a valid zip archive"):
        fetch(url, tmp_path / "image", timeout=10, compression="zip")
    assert leftovers(tmp_path) == []


def test_zip_must_hold_one_file(server: Server, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("a", b"1")
        zipped.writestr("b", b"2")
    url = server.add("/two.zip", buffer.getvalue())
    with pytest.raises(JobError, match="exactly one file, it holds 2"):
        fetch(url, tmp_path / "two", timeout=10, compression="zip")
    assert leftovers(tmp_path) == []


def test_unsupported_compression(server: Server, tmp_path: Path) -> None:
    with pytest.raises(JobError, match="unsupported compression 'lz4'"):
        fetch(server.add("/x", DATA), tmp_path / "x", timeout=10, compression="lz4")


@pytest.mark.parametrize("kind", ["gz", "xz", "bz2", "zstd"])
def test_decompression_memory_is_bounded(kind: str) -> None:
    """A sparse image compresses a thousandfold: output leaves in pieces of at most CHUNK."""
    zeros = bytes(8 << 20)
    packed = compress(kind, zeros)
    writes: list[int] = []

    class Recorder(io.RawIOBase):
        def write(self, data: Any) -> int:
            writes.append(len(data))
            return len(data)

    sink = _Sink(Recorder(), Path("recorder"))  # type: ignore[arg-type]
    decoder = _Zstd(sink) if kind == "zstd" else _Members(kind, sink)
    for start in range(0, len(packed), CHUNK):
        decoder.feed(packed[start : start + CHUNK])
    decoder.finish()
    assert sum(writes) == len(zeros)
    assert max(writes) <= CHUNK


# ------------------------------------------------------------------ archive: tar
def make_tar(members: dict[str, bytes], mode: Literal["w", "w:gz"] = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_archive_tar_is_unpacked_into_a_directory(server: Server, tmp_path: Path) -> None:
    url = server.add("/modules.tar.gz", make_tar({"lib/modules/a.ko": b"A", "README": b"hello"}))
    result = fetch(url, tmp_path / "modules", timeout=10, compression="gz", archive="tar")
    assert result.path == tmp_path / "modules" and result.path.is_dir()
    assert (tmp_path / "modules" / "lib" / "modules" / "a.ko").read_bytes() == b"A"
    assert (tmp_path / "modules" / "README").read_bytes() == b"hello"
    assert leftovers(tmp_path) == ["modules"]


def test_archive_tar_refuses_path_traversal(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "job"
    target.mkdir()
    url = server.add("/evil.tar", make_tar({"ok.txt": b"ok", "../../evil.txt": b"evil"}, "w"))
    with pytest.raises(JobError, match=f"refusing to unpack {re.escape(url)}"):
        fetch(url, target / "rootfs", timeout=10, archive="tar")
    assert not (tmp_path / "evil.txt").exists()
    assert leftovers(target) == []


def test_archive_tar_refuses_links_out_of_the_directory(server: Server, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("escape")
        link.type = tarfile.SYMTYPE
        link.linkname = "../../../etc"
        tar.addfile(link)
    url = server.add("/link.tar", buffer.getvalue())
    with pytest.raises(JobError, match="refusing to unpack"):
        fetch(url, tmp_path / "rootfs", timeout=10, archive="tar")
    assert leftovers(tmp_path) == []


def test_archive_that_is_not_a_tar(server: Server, tmp_path: Path) -> None:
    url = server.add("/image.tar", DATA)
    with pytest.raises(JobError, match=f"{re.escape(url)} is not a valid tar archive"):
        fetch(url, tmp_path / "image", timeout=10, archive="tar")
    assert leftovers(tmp_path) == []


def test_unsupported_archive(server: Server, tmp_path: Path) -> None:
    with pytest.raises(JobError, match="unsupported archive 'cpio'"):
        fetch(server.add("/x", DATA), tmp_path / "x", timeout=10, archive="cpio")


# ------------------------------------------------------------------ errors
def test_http_404_is_an_infrastructure_error(server: Server, tmp_path: Path) -> None:
    url = server.url("/missing.img")
    with pytest.raises(InfrastructureError, match=f"{re.escape(url)}: HTTP 404"):
        fetch(url, tmp_path / "missing.img", timeout=10)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("status", [500, 503])
def test_http_5xx_is_an_infrastructure_error(server: Server, tmp_path: Path, status: int) -> None:
    url = server.add("/image", DATA, fail=[status])
    with pytest.raises(InfrastructureError, match=f"{re.escape(url)}: HTTP {status}"):
        fetch(url, tmp_path / "image", timeout=10)


def test_unreachable_port_is_an_infrastructure_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/image.img"
    with pytest.raises(
        InfrastructureError, match=f"cannot download {re.escape(url)}: connection refused"
    ):
        fetch(url, tmp_path / "image.img", timeout=10)
    assert leftovers(tmp_path) == []


def test_a_transfer_cut_short_is_an_infrastructure_error(server: Server, tmp_path: Path) -> None:
    url = server.add("/image", DATA, short=1000)
    with pytest.raises(
        InfrastructureError, match=f"{re.escape(url)} ended after 1000 of {len(DATA)} bytes"
    ):
        fetch(url, tmp_path / "image", timeout=10)
    assert leftovers(tmp_path) == []


def test_a_stalled_server_times_out(server: Server, tmp_path: Path) -> None:
    url = server.add("/slow", DATA, stall_after=1000)
    start = time.monotonic()
    with pytest.raises(InfrastructureError, match=re.escape(url)):
        fetch(url, tmp_path / "slow", timeout=0.3)
    assert time.monotonic() - start < 2.0
    assert leftovers(tmp_path) == []


def test_unsupported_scheme_is_a_job_error(tmp_path: Path) -> None:
    with pytest.raises(
        JobError, match=re.escape("unsupported URL scheme in 'ftp://example.com/x'")
    ):
        fetch("ftp://example.com/x", tmp_path / "x", timeout=10)


def test_missing_local_file(tmp_path: Path) -> None:
    url = (tmp_path / "absent").as_uri()
    with pytest.raises(InfrastructureError, match=f"cannot read {re.escape(url)}"):
        fetch(url, tmp_path / "copy", timeout=10)


def test_local_file_with_compression(tmp_path: Path) -> None:
    source = tmp_path / "ramdisk.cpio.xz"
    source.write_bytes(lzma.compress(DATA))
    result = fetch(source.as_uri(), tmp_path / "ramdisk.cpio", timeout=10, compression="xz")
    assert (tmp_path / "ramdisk.cpio").read_bytes() == DATA
    assert result.size == source.stat().st_size


# ------------------------------------------------------------------ headers and redirects
def test_headers_are_sent(server: Server, tmp_path: Path) -> None:
    url = server.add("/private", DATA)
    fetch(
        url,
        tmp_path / "private",
        timeout=10,
        headers={"Authorization": "Bearer s3cret", "X-Lab": "7"},
    )
    (hit,) = server.requests("/private")
    assert hit.headers["Authorization"] == "Bearer s3cret"
    assert hit.headers["X-Lab"] == "7"


def test_redirects_are_followed(server: Server, tmp_path: Path) -> None:
    server.add("/real.img", DATA)
    url = server.add("/latest.img", b"", redirect="/real.img")
    fetch(url, tmp_path / "image", timeout=10, checksums={"md5sum": digest("md5sum", DATA)})
    assert (tmp_path / "image").read_bytes() == DATA
    assert [h.path for h in server.requests()] == ["/latest.img", "/real.img"]


def redirect(
    handler: _Redirects, old: str, new: str, headers: dict[str, str]
) -> urllib.request.Request | None:
    request = urllib.request.Request(old, headers=headers)
    return handler.redirect_request(request, io.BytesIO(), 302, "Found", {}, new)


def test_no_redirect_from_https_to_http() -> None:
    handler = _Redirects("https://example.com/image")
    with pytest.raises(
        JobError, match=r"https://example\.com/image: refusing .* from https to http"
    ):
        redirect(handler, "https://example.com/image", "http://example.com/image", {})


def test_no_redirect_to_other_schemes() -> None:
    handler = _Redirects("http://example.com/image")
    with pytest.raises(JobError, match="refusing to follow the redirect to ftp://"):
        redirect(handler, "http://example.com/image", "ftp://example.com/image", {})
    with pytest.raises(JobError, match="refusing to follow the redirect to file:"):
        redirect(handler, "http://example.com/image", "file:///etc/passwd", {})


def test_credentials_do_not_follow_a_redirect_to_another_host() -> None:
    handler = _Redirects("https://a.example.com/image")
    headers = {"Authorization": "Bearer x", "X-Other": "1"}
    same = redirect(
        handler, "https://a.example.com/image", "https://a.example.com/v2/image", headers
    )
    assert same is not None and same.get_header("Authorization") == "Bearer x"
    other = redirect(
        handler, "https://a.example.com/image", "https://cdn.example.com/image", headers
    )
    assert other is not None and other.get_header("Authorization") is None
    assert other.get_header("X-other") == "1"
    upgrade = redirect(
        handler, "https://a.example.com/image", "https://a.example.com:8443/image", headers
    )
    assert upgrade is not None and upgrade.get_header("Authorization") is None


def test_https(
    tls_server: Server,
    tmp_path: Path,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    url = tls_server.add("/image.img", DATA)
    fetch(
        url, tmp_path / "image.img", timeout=10, checksums={"sha256sum": digest("sha256sum", DATA)}
    )
    assert (tmp_path / "image.img").read_bytes() == DATA


def test_https_with_an_untrusted_certificate(tls_server: Server, tmp_path: Path) -> None:
    url = tls_server.add("/image.img", DATA)
    with pytest.raises(
        InfrastructureError, match=f"cannot download {re.escape(url)}: .*certificate verify failed"
    ):
        fetch(url, tmp_path / "image.img", timeout=10)
    assert leftovers(tmp_path) == []


def test_a_real_redirect_from_https_to_http_is_refused(
    tls_server: Server,
    server: Server,
    tmp_path: Path,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    plain = server.add("/image.img", DATA)
    url = tls_server.add("/image.img", b"", redirect=plain)
    with pytest.raises(
        JobError, match=f"{re.escape(url)}: refusing to follow the redirect from https to http"
    ):
        fetch(url, tmp_path / "image.img", timeout=10)
    assert server.requests() == []


def _cancel_when_stalled(server: Server, download: Callable[[Interrupter], object]) -> None:
    """Cancel ``download`` once the server stalls; it must return within 0.5 s
    and leave no worker thread blocked on the socket."""
    interrupter = Interrupter()
    canceled_at: list[float] = []

    def cancel() -> None:
        if server.stalled.wait(10):
            canceled_at.append(time.monotonic())
            interrupter.cancel(JobCanceled("canceled by the test"))

    canceller = threading.Thread(target=cancel)
    canceller.start()
    try:
        with pytest.raises(JobCanceled):
            download(interrupter)
        returned = time.monotonic()
    finally:
        server.release.set()
        canceller.join(10)
    assert canceled_at and returned - canceled_at[0] < 0.5
    # the socket was shut down: the worker thread is gone too, not left blocked
    assert not [t for t in threading.enumerate() if t.name == "download stall.img"]


def test_cancel_during_a_stalled_https_download(
    tls_server: Server,
    tmp_path: Path,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    url = tls_server.add("/stall.img", DATA, stall_after=100_000)
    _cancel_when_stalled(
        tls_server,
        lambda interrupter: fetch(url, tmp_path / "stall.img", timeout=30, interrupter=interrupter),
    )
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------ progress
def test_progress_every_ten_percent_of_a_known_size(
    server: Server, tmp_path: Path, log: Lines
) -> None:
    data = os.urandom(10 * CHUNK)
    url = server.add("/kernel", data)
    seen: list[int] = []
    fetch(url, tmp_path / "kernel", timeout=10, logger=log, label="kernel", on_progress=seen.append)
    steps = [m for m in log.messages("debug") if re.fullmatch(r"kernel: \d+% .*", m)]
    assert steps == [
        f"kernel: {10 * i}% ({format_size(i * CHUNK)} of 10.0 MiB)" for i in range(1, 10)
    ]
    assert "kernel: 10% (1.0 MiB of 10.0 MiB)" in steps
    assert seen[-1] == len(data)
    final = log.messages("info")[-1]
    assert re.fullmatch(
        r"kernel: 10\.0 MiB downloaded in \d+\.\d\d s \(\d+(\.\d)? [KMG]iB/s\)", final
    )
    assert f"downloading {url}" in log.messages("info")


def test_progress_without_a_size_every_64_mib() -> None:
    log = Lines()
    progress = Progress(log, "rootfs", None)
    for received in range(CHUNK, 200 * CHUNK + 1, CHUNK):
        progress(received)
    assert log.messages() == ["rootfs: 64.0 MiB", "rootfs: 128.0 MiB", "rootfs: 192.0 MiB"]


def test_no_size_no_percentages(server: Server, tmp_path: Path, log: Lines) -> None:
    url = server.add("/stream", DATA, length=False)
    result = fetch(url, tmp_path / "stream", timeout=10, logger=log, label="stream")
    assert result.size == len(DATA)
    assert not [m for m in log.messages() if "%" in m]
    assert log.messages("info")[-1].startswith(f"stream: {format_size(len(DATA))} downloaded in ")


# ------------------------------------------------------------------ cancel
def test_cancel_during_a_stalled_download(server: Server, tmp_path: Path) -> None:
    url = server.add("/stall.img", DATA, stall_after=100_000)
    cache = DownloadCache(tmp_path / "cache")
    job = tmp_path / "job"
    job.mkdir()
    _cancel_when_stalled(
        server,
        lambda interrupter: fetch(
            url, job / "stall.img", timeout=30, interrupter=interrupter, cache=cache
        ),
    )
    assert leftovers(job) == []
    assert leftovers(cache.tmp_dir) == [] and leftovers(cache.blobs_dir) == []
    assert cache.entries() == []


def test_deadline_while_waiting_for_the_response(server: Server, tmp_path: Path) -> None:
    """A server that accepts but never answers: the socket is shut down at the deadline."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/never"
        start = time.monotonic()
        with pytest.raises(InfrastructureError, match=re.escape(url)):
            fetch(url, tmp_path / "never", timeout=0.3)
        assert time.monotonic() - start < 1.5
    assert leftovers(tmp_path) == []
