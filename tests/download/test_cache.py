"""The download cache: hits without requests, 304 revalidation, eviction,
corruption, concurrent processes, configuration."""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lava_dispatcher.download import Downloaded, fetch
from lava_dispatcher.download_cache import (
    DEFAULT_MAX_SIZE,
    DownloadCache,
    cache_key,
    default_directory,
    from_config,
)
from lava_dispatcher.errors import ConfigurationError, InfrastructureError, JobCanceled, JobError
from lava_dispatcher.timing import Interrupter

from .conftest import Lines, Server

DATA = os.urandom(200_000)
SHA = hashlib.sha256(DATA).hexdigest()
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"


@pytest.fixture
def cache(tmp_path: Path) -> DownloadCache:
    return DownloadCache(tmp_path / "cache")


def get(
    url: str, dest: Path, cache: DownloadCache | None, log: Lines | None = None, **kwargs: Any
) -> Downloaded:
    return fetch(url, dest, timeout=10, cache=cache, logger=log, label="image", **kwargs)


# ------------------------------------------------------------------ hits
def test_with_a_checksum_the_second_fetch_makes_no_request(
    server: Server, tmp_path: Path, cache: DownloadCache, log: Lines
) -> None:
    url = server.add("/image.img", DATA, etag='"v1"')
    first = get(url, tmp_path / "one", cache, log, checksums={"sha256sum": SHA})
    assert first.cache == "miss"
    assert f"downloading {url} (cache miss)" in log.messages("info")
    second = get(url, tmp_path / "two", cache, log, checksums={"sha256sum": SHA})
    assert second.cache == "hit"
    assert (tmp_path / "two").read_bytes() == DATA
    assert len(server.requests()) == 1
    assert second.cache_path is not None and second.cache_path.is_file()
    assert f"cache hit for {url}: {second.cache_path}" in log.messages("info")
    assert second.digests == {"sha256sum": SHA}
    assert log.messages("info")[-1].startswith("image: 195.3 KiB copied from the cache in ")


def test_a_checksum_finds_what_a_job_without_one_cached(
    server: Server, tmp_path: Path, cache: DownloadCache
) -> None:
    url = server.add("/image.img", DATA, etag='"v1"')
    get(url, tmp_path / "one", cache)
    assert get(url, tmp_path / "two", cache, checksums={"sha256sum": SHA}).cache == "hit"
    assert len(server.requests()) == 1
    # only sha256 is computed unless the job asks (as LAVA): an md5sum job
    # downloads once, then finds its own entry
    md5 = {"md5sum": hashlib.md5(DATA).hexdigest()}
    assert get(url, tmp_path / "three", cache, checksums=md5).cache == "miss"
    assert get(url, tmp_path / "four", cache, checksums=md5).cache == "hit"
    assert server.downloads() == 2


def test_without_a_checksum_one_conditional_request_answered_304(
    server: Server, tmp_path: Path, cache: DownloadCache, log: Lines
) -> None:
    url = server.add("/image.img", DATA, etag='"v1"', last_modified=LAST_MODIFIED)
    assert get(url, tmp_path / "one", cache).cache == "miss"
    result = get(url, tmp_path / "two", cache, log)
    assert result.cache == "revalidated"
    assert (tmp_path / "two").read_bytes() == DATA
    first, second = server.requests()
    assert "If-None-Match" not in first.headers
    assert second.headers["If-None-Match"] == '"v1"'
    assert second.headers["If-Modified-Since"] == LAST_MODIFIED
    assert second.status == 304
    assert any(m.startswith(f"revalidated (304): {url}") for m in log.messages("info"))


def test_last_modified_alone_revalidates(server: Server, tmp_path: Path, cache: DownloadCache) -> None:
    url = server.add("/image.img", DATA, last_modified=LAST_MODIFIED)
    get(url, tmp_path / "one", cache)
    assert get(url, tmp_path / "two", cache).cache == "revalidated"
    assert [h.status for h in server.requests()] == [200, 304]


def test_a_changed_file_is_downloaded_again(
    server: Server, tmp_path: Path, cache: DownloadCache, log: Lines
) -> None:
    url = server.add("/image.img", DATA, etag='"v1"')
    old = get(url, tmp_path / "one", cache)
    server.add("/image.img", DATA[::-1], etag='"v2"')
    new = get(url, tmp_path / "two", cache, log)
    assert new.cache == "miss"
    assert (tmp_path / "two").read_bytes() == DATA[::-1]
    assert [h.status for h in server.requests()] == [200, 200]
    assert server.requests()[1].headers["If-None-Match"] == '"v1"'
    assert f"downloading {url} (cache miss: it changed since it was cached)" in log.messages("info")
    assert old.cache_path is not None and not old.cache_path.exists()
    (entry,) = cache.entries()
    assert entry.etag == '"v2"' and entry.blob == new.cache_path
    assert get(url, tmp_path / "three", cache).cache == "revalidated"


def test_no_validators_means_downloading_again(server: Server, tmp_path: Path, cache: DownloadCache) -> None:
    url = server.add("/image.img", DATA)
    assert get(url, tmp_path / "one", cache).cache == "miss"
    assert get(url, tmp_path / "two", cache).cache == "miss"
    assert server.downloads() == 2
    assert len(cache.entries()) == 1


def test_cached_data_is_what_was_received_before_decompression(
    server: Server, tmp_path: Path, cache: DownloadCache
) -> None:
    import gzip

    packed = gzip.compress(DATA)
    url = server.add("/image.img.gz", packed, etag='"gz"')
    result = get(url, tmp_path / "image.img", cache, compression="gz")
    assert result.cache_path is not None and result.cache_path.read_bytes() == packed
    again = get(url, tmp_path / "again.img", cache, compression="gz")
    assert again.cache == "revalidated" and (tmp_path / "again.img").read_bytes() == DATA


def test_headers_are_part_of_the_key(server: Server, tmp_path: Path, cache: DownloadCache) -> None:
    """What a token fetched is never served to a job without that token."""
    url = server.add("/private.img", DATA, etag='"p"')
    get(url, tmp_path / "one", cache, headers={"Authorization": "Bearer a"})
    assert get(url, tmp_path / "two", cache, checksums={"sha256sum": SHA}).cache == "miss"
    assert server.downloads() == 2
    assert get(url, tmp_path / "three", cache, headers={"authorization": "Bearer a"}).cache == "revalidated"
    assert cache_key(url, {"Authorization": "Bearer a"}) != cache_key(url, {"Authorization": "Bearer b"})


def test_a_checksum_mismatch_is_not_cached(server: Server, tmp_path: Path, cache: DownloadCache) -> None:
    url = server.add("/image.img", DATA, etag='"v1"')
    with pytest.raises(JobError, match="sha256sum mismatch"):
        get(url, tmp_path / "one", cache, checksums={"sha256sum": "0" * 64})
    assert cache.entries() == []
    assert list(cache.tmp_dir.iterdir()) == [] and list(cache.blobs_dir.iterdir()) == []


def test_file_urls_are_never_cached(tmp_path: Path, cache: DownloadCache) -> None:
    source = tmp_path / "local.img"
    source.write_bytes(DATA)
    result = get(source.as_uri(), tmp_path / "copy", cache, checksums={"sha256sum": SHA})
    assert result.cache == "off"
    assert cache.entries() == []


def test_an_unusable_cache_is_logged_and_skipped(
    server: Server, tmp_path: Path, cache: DownloadCache, log: Lines
) -> None:
    cache.locks_dir.rmdir()
    cache.locks_dir.write_text("not a directory")
    url = server.add("/image.img", DATA, etag='"v1"')
    result = get(url, tmp_path / "image", cache, log, checksums={"sha256sum": SHA})
    assert result.cache == "off" and (tmp_path / "image").read_bytes() == DATA
    assert log.messages("warning")[0].startswith(f"not using the download cache {cache.root}: ")


# ------------------------------------------------------------------ corruption
def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_entry_is_dropped_and_downloaded_again(
    server: Server, tmp_path: Path, cache: DownloadCache, log: Lines
) -> None:
    url = server.add("/image.img", DATA, etag='"v1"')
    first = get(url, tmp_path / "one", cache, checksums={"sha256sum": SHA})
    assert first.cache_path is not None
    corrupt(first.cache_path)
    second = get(url, tmp_path / "two", cache, log, checksums={"sha256sum": SHA})
    assert second.cache == "miss"
    assert (tmp_path / "two").read_bytes() == DATA
    assert server.downloads() == 2
    (warning,) = log.messages("warning")
    assert warning.startswith(f"dropping the corrupt cache entry {first.cache_path} for {url}")
    assert not first.cache_path.exists()
    assert get(url, tmp_path / "three", cache, checksums={"sha256sum": SHA}).cache == "hit"


def test_a_truncated_entry_found_on_304_is_downloaded_again(
    server: Server, tmp_path: Path, cache: DownloadCache, log: Lines
) -> None:
    url = server.add("/image.img", DATA, etag='"v1"')
    first = get(url, tmp_path / "one", cache)
    assert first.cache_path is not None
    first.cache_path.write_bytes(DATA[:1000])
    second = get(url, tmp_path / "two", cache, log)
    assert second.cache == "miss"
    assert (tmp_path / "two").read_bytes() == DATA
    assert [h.status for h in server.requests()] == [200, 304, 200]
    assert "corrupt cache entry" in log.messages("warning")[0]


def test_unreadable_metadata_is_ignored(server: Server, tmp_path: Path, cache: DownloadCache) -> None:
    url = server.add("/image.img", DATA, etag='"v1"')
    get(url, tmp_path / "one", cache)
    (meta,) = cache.entries_dir.iterdir()
    meta.write_text("{not json")
    assert get(url, tmp_path / "two", cache).cache == "miss"
    assert get(url, tmp_path / "three", cache).cache == "revalidated"


# ------------------------------------------------------------------ size
def test_least_recently_used_entries_are_evicted(server: Server, tmp_path: Path, log: Lines) -> None:
    size = len(DATA)
    cache = DownloadCache(tmp_path / "cache", max_size=int(size * 2.5))
    urls = {name: server.add(f"/{name}", DATA, etag=f'"{name}"') for name in "abc"}
    get(urls["a"], tmp_path / "a1", cache)
    get(urls["b"], tmp_path / "b1", cache)
    os.utime(cache.get(cache_key(urls["b"])).blob, (1, 1))  # type: ignore[union-attr]
    get(urls["a"], tmp_path / "a2", cache)  # a is used again: b is the oldest
    get(urls["c"], tmp_path / "c1", cache, log)
    kept = sorted(entry.url for entry in cache.entries())
    assert kept == sorted([urls["a"], urls["c"]])
    assert cache.total_size() <= cache.max_size
    assert any("evicted 1 least recently used entries" in m for m in log.messages("info"))
    assert len(list(cache.blobs_dir.iterdir())) == 2


def test_a_file_larger_than_the_cache_is_not_kept(server: Server, tmp_path: Path, log: Lines) -> None:
    cache = DownloadCache(tmp_path / "cache", max_size=1000)
    url = server.add("/big", DATA, etag='"big"')
    assert get(url, tmp_path / "big", cache, log).cache == "miss"
    assert (tmp_path / "big").read_bytes() == DATA
    assert cache.entries() == [] and list(cache.tmp_dir.iterdir()) == []
    assert any(m.startswith(f"not caching {url}") for m in log.messages())


def test_a_file_of_unknown_size_larger_than_the_cache_is_not_kept(
    server: Server, tmp_path: Path, log: Lines
) -> None:
    cache = DownloadCache(tmp_path / "cache", max_size=1000)
    url = server.add("/stream", DATA, etag='"s"', length=False)
    get(url, tmp_path / "stream", cache, log)
    assert (tmp_path / "stream").read_bytes() == DATA
    assert cache.entries() == [] and list(cache.tmp_dir.iterdir()) == []
    assert any("larger than download_cache_size" in m for m in log.messages("warning"))


def test_sweep_removes_what_crashed_writers_left(tmp_path: Path, cache: DownloadCache) -> None:
    stale = cache.tmp_dir / f"{'a' * 64}.0123.part"
    stale.write_bytes(b"half")
    orphan = cache.blobs_dir / f"{'b' * 64}.4567"
    orphan.write_bytes(b"never published")
    busy = cache.tmp_dir / f"{'c' * 64}.89ab.part"
    busy.write_bytes(b"being written")
    with cache.lock("c" * 64):
        cache.evict()
    assert not stale.exists() and not orphan.exists()
    assert busy.exists()  # its writer holds the lock


# ------------------------------------------------------------------ concurrency
class Child:
    """A fetch in another process; its log lines arrive on a queue."""

    def __init__(self, url: str, dest: Path, root: Path, checksum: str) -> None:
        env = dict(os.environ)
        repo = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("fetch_child.py")), url, str(dest), str(root), checksum],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("")  # end of output

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        end = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            self.seen.append(line)
            if re.search(pattern, line):
                return line
            if line == "" and self.proc.poll() is not None:
                raise AssertionError(f"{pattern!r} never came; output: {self.seen}")

    def finish(self, timeout: float = 30) -> str:
        self.proc.wait(timeout)
        result = self.wait_for(r"^RESULT ", timeout)
        return result.split()[1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            child.kill()


@pytest.mark.parametrize("checksum", [SHA, "-"], ids=["checksum", "no-checksum"])
def test_two_processes_download_the_same_url_once(
    server: Server, tmp_path: Path, children: list[Child], checksum: str
) -> None:
    url = server.add("/shared.img", DATA, etag='"v1"', stall_after=50_000)
    root = tmp_path / "cache"
    first = Child(url, tmp_path / "first.img", root, checksum)
    children.append(first)
    assert server.stalled.wait(30), "the first download never started"
    second = Child(url, tmp_path / "second.img", root, checksum)
    children.append(second)
    second.wait_for(r"waiting for another job downloading .*shared\.img")
    server.release.set()
    assert first.finish() == "miss"
    assert second.finish() == ("hit" if checksum != "-" else "revalidated")
    assert (tmp_path / "first.img").read_bytes() == DATA
    assert (tmp_path / "second.img").read_bytes() == DATA
    assert server.downloads("/shared.img") == 1
    assert len(DownloadCache(root).entries()) == 1


def test_a_second_job_waits_within_its_own_deadline(
    server: Server, tmp_path: Path, cache: DownloadCache, log: Lines
) -> None:
    url = server.add("/image.img", DATA, etag='"v1"')
    key = cache_key(url, {}, {"sha256sum": SHA})
    fd = os.open(cache.lock_path(key), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another process downloading it
        with pytest.raises(InfrastructureError, match=r"did not finish within 0\.3 seconds \(still waiting for another job"):
            fetch(url, tmp_path / "image", timeout=0.3, cache=cache, checksums={"sha256sum": SHA}, logger=log)
        # a cancel while waiting for the lock ends the wait at once
        interrupter = Interrupter()
        waiting = Lines()
        canceled_at: list[float] = []

        def cancel_when_waiting() -> None:
            if waiting.wait_for("waiting for another job downloading"):
                canceled_at.append(time.monotonic())
                interrupter.cancel(JobCanceled("canceled"))

        canceller = threading.Thread(target=cancel_when_waiting)
        canceller.start()
        with pytest.raises(JobCanceled):
            fetch(
                url,
                tmp_path / "image",
                timeout=30,
                cache=cache,
                checksums={"sha256sum": SHA},
                interrupter=interrupter,
                logger=waiting,
            )
        returned = time.monotonic()
        canceller.join(10)
        assert canceled_at and returned - canceled_at[0] < 0.5
    finally:
        os.close(fd)
    assert server.requests() == []
    assert any("waiting for another job downloading" in m for m in log.messages("info"))
    assert get(url, tmp_path / "image", cache, checksums={"sha256sum": SHA}).cache == "miss"


def test_a_partial_entry_is_never_visible(
    server: Server, tmp_path: Path, cache: DownloadCache, log: Lines
) -> None:
    url = server.add("/slow.img", DATA, etag='"v1"', stall_after=100_000)
    outcome: list[object] = []

    def download() -> None:
        try:
            outcome.append(get(url, tmp_path / "slow", cache, log, checksums={"sha256sum": SHA}))
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=download)
    worker.start()
    try:
        assert server.stalled.wait(10)
        assert log.wait_for("saving as")  # the cache's copy is being written by now
        assert cache.entries() == [] and list(cache.blobs_dir.iterdir()) == []
        assert cache.lookup(url, {}, {"sha256sum": SHA}) is None
        assert len(list(cache.tmp_dir.iterdir())) == 1
    finally:
        server.release.set()
        worker.join(10)
    assert outcome and getattr(outcome[0], "cache", None) == "miss"
    assert len(cache.entries()) == 1 and list(cache.tmp_dir.iterdir()) == []


# ------------------------------------------------------------------ configuration
def test_config_directory_and_size(tmp_path: Path) -> None:
    cache = from_config({"download_cache": str(tmp_path / "c"), "download_cache_size": 12345})
    assert cache is not None
    assert cache.root == tmp_path / "c" and cache.max_size == 12345
    assert (tmp_path / "c" / "entries").is_dir()
    assert from_config({"download_cache_size": "99"}).max_size == 99  # type: ignore[union-attr]


def test_config_disables_the_cache(tmp_path: Path) -> None:
    assert from_config({"download_cache": False}) is None
    assert from_config({"download_cache": "off"}) is None
    assert from_config({"download_cache": True}).root == tmp_path / "env-cache"  # type: ignore[union-attr]
    assert from_config({"download_cache": "yes"}).root == tmp_path / "env-cache"  # type: ignore[union-attr]


def test_default_directory(tmp_path: Path) -> None:
    assert from_config({}).root == tmp_path / "env-cache"  # type: ignore[union-attr]
    assert from_config({}).max_size == DEFAULT_MAX_SIZE  # type: ignore[union-attr]
    assert default_directory({"LAVA_DOWNLOAD_CACHE": "/srv/cache"}) == Path("/srv/cache")
    assert default_directory({"XDG_CACHE_HOME": "/var/xdg"}) == Path("/var/xdg/lava-dispatcher/downloads")
    assert default_directory({}) == Path.home() / ".cache" / "lava-dispatcher" / "downloads"
    assert default_directory({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "lava-dispatcher" / "downloads"


@pytest.mark.parametrize("value", ["10G", -1, 1.5, True])
def test_bad_size_is_a_configuration_error(value: object) -> None:
    with pytest.raises(ConfigurationError, match="download_cache_size"):
        from_config({"download_cache_size": value})
