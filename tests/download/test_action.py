"""download-retry / http-download / file-download in a small pipeline."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lava_dispatcher.actions.deploy.download import DOWNLOADED, DownloaderAction, cache_for
from lava_dispatcher.errors import InfrastructureError, JobError
from lava_dispatcher.log import JobLogger, read_records
from lava_dispatcher.pipeline import JobSettings, Pipeline, RunContext

from .conftest import Server

DATA = os.urandom(150_000)
SHA = hashlib.sha256(DATA).hexdigest()


@dataclass
class Job:
    ctx: RunContext
    pipeline: Pipeline
    log_file: Path

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.log_file.read_text().splitlines())

    def messages(self, level: str | None = None) -> list[str]:
        return [
            str(r["msg"]) for r in self.records() if level is None or r["lvl"] == level
        ]

    def results(self, case: str) -> list[dict[str, Any]]:
        return [r["msg"] for r in self.records() if r["lvl"] == "results" and r["msg"]["case"] == case]


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[list[Job]]:
    made: list[Job] = []
    yield made
    for job in made:
        job.ctx.logger.close()
        job.ctx.run_finalizers()
        job.ctx.remove_tmp()


def make_job(
    jobs: list[Job],
    tmp_path: Path,
    images: dict[str, dict[str, Any]],
    dispatcher: dict[str, Any] | None = None,
    block: dict[str, Any] | None = None,
) -> Job:
    number = len(jobs) + 1
    config = {"dispatcher_download_dir": str(tmp_path / "jobs"), "download_cache": str(tmp_path / "cache")}
    config.update(dispatcher or {})
    settings = JobSettings(job_id=str(number), parameters={}, device={}, dispatcher=config)
    logger = JobLogger()
    log_file = tmp_path / f"job{number}.yaml"
    logger.add_file(log_file)
    ctx = RunContext(settings, logger)
    pipeline = Pipeline(settings)
    parameters = {"namespace": "common", "to": "download", "images": images, **(block or {})}
    for key, image in images.items():
        pipeline.add_action(DownloaderAction(key, image), parameters)
    job = Job(ctx, pipeline, log_file)
    jobs.append(job)
    return job


def run(job: Job) -> None:
    assert job.pipeline.validate() == []
    try:
        with job.ctx.job_deadline(30):
            job.pipeline.run(job.ctx)
    finally:
        job.ctx.logger.flush()


def test_http_download_through_the_cache(server: Server, tmp_path: Path, jobs: list[Job]) -> None:
    url = server.add("/vmlinuz", DATA, etag='"k1"')
    image = {"url": url, "sha256sum": SHA}
    first = make_job(jobs, tmp_path, {"kernel": image})
    assert [a.name for a in first.pipeline.walk()] == ["download-retry", "http-download"]
    run(first)
    path = first.ctx.data("common").get(DOWNLOADED, label="kernel")
    assert path.name == "vmlinuz" and path.read_bytes() == DATA
    (record,) = first.results("http-download")
    assert record["result"] == "pass" and record["level"] == "1.1"
    extra = record["extra"]
    assert extra["label"] == "kernel" and extra["cache"] == "miss"
    assert int(extra["size"]) == len(DATA) and extra["sha256sum"] == SHA
    assert "md5sum" not in extra and "sha512sum" not in extra  # only what the job gave, and sha256
    infos = first.messages("info")
    assert f"downloading {url} (cache miss)" in infos
    assert any(m.startswith("kernel: 146.5 KiB downloaded in ") for m in infos)

    second = make_job(jobs, tmp_path, {"kernel": image})
    run(second)
    (record,) = second.results("http-download")
    assert record["extra"]["cache"] == "hit"
    assert any(m.startswith(f"cache hit for {url}: {tmp_path / 'cache'}") for m in second.messages("info"))
    assert second.ctx.data("common").get(DOWNLOADED, label="kernel").read_bytes() == DATA
    assert len(server.requests()) == 1


def test_md5_and_sha512_in_the_results_when_given(server: Server, tmp_path: Path, jobs: list[Job]) -> None:
    url = server.add("/dtb", DATA)
    md5, sha512 = hashlib.md5(DATA).hexdigest(), hashlib.sha512(DATA).hexdigest()
    job = make_job(jobs, tmp_path, {"dtb": {"url": url, "md5sum": md5, "sha512sum": sha512}})
    run(job)
    (record,) = job.results("http-download")
    assert record["extra"]["md5sum"] == md5 and record["extra"]["sha512sum"] == sha512
    assert record["extra"]["sha256sum"] == SHA


def test_revalidated_in_the_results(server: Server, tmp_path: Path, jobs: list[Job]) -> None:
    url = server.add("/rootfs.img.gz", gzip.compress(DATA), etag='"r1"')
    image = {"url": url, "compression": "gz"}
    run(make_job(jobs, tmp_path, {"rootfs": image}))
    job = make_job(jobs, tmp_path, {"rootfs": image})
    run(job)
    (record,) = job.results("http-download")
    assert record["extra"]["cache"] == "revalidated"
    path = job.ctx.data("common").get(DOWNLOADED, label="rootfs")
    assert path.name == "rootfs.img" and path.read_bytes() == DATA
    assert any(m.startswith(f"revalidated (304): {url}") for m in job.messages("info"))


def test_file_download_is_not_cached(tmp_path: Path, jobs: list[Job]) -> None:
    source = tmp_path / "dtb.dtb"
    source.write_bytes(DATA)
    job = make_job(jobs, tmp_path, {"dtb": {"url": source.as_uri()}})
    run(job)
    (record,) = job.results("file-download")
    assert record["extra"]["cache"] == "off" and record["extra"]["sha256sum"] == SHA
    assert not (tmp_path / "cache" / "entries").exists() or not list((tmp_path / "cache" / "entries").iterdir())


@pytest.mark.parametrize(
    ("dispatcher", "image_extra"),
    [({"download_cache": False}, {}), ({}, {"use_cache": False})],
    ids=["dispatcher-config", "use_cache"],
)
def test_cache_disabled(
    server: Server, tmp_path: Path, jobs: list[Job], dispatcher: dict[str, Any], image_extra: dict[str, Any]
) -> None:
    url = server.add("/vmlinuz", DATA, etag='"k1"')
    image = {"url": url, "sha256sum": SHA, **image_extra}
    for _ in range(2):
        job = make_job(jobs, tmp_path, {"kernel": image}, dispatcher)
        run(job)
        (record,) = job.results("http-download")
        assert record["extra"]["cache"] == "off"
        assert f"downloading {url}" in job.messages("info")
    assert server.downloads() == 2
    assert [h.headers.get("If-None-Match") for h in server.requests()] == [None, None]


def test_cache_from_the_environment(
    server: Server, tmp_path: Path, jobs: list[Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAVA_DOWNLOAD_CACHE", str(tmp_path / "from-env"))
    job = make_job(jobs, tmp_path, {"kernel": {"url": server.add("/k", DATA)}}, {"download_cache": None})
    run(job)
    cache = cache_for(job.ctx)
    assert cache is not None and cache.root == tmp_path / "from-env"
    assert len(cache.entries()) == 1


def test_archive_tar_gives_a_directory(server: Server, tmp_path: Path, jobs: list[Job]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("lib/modules/6.1/kernel.ko")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x7fELF"))
    url = server.add("/modules.tar.gz", buffer.getvalue())
    job = make_job(jobs, tmp_path, {"modules": {"url": url, "compression": "gz", "archive": "tar"}})
    run(job)
    path = job.ctx.data("common").get(DOWNLOADED, label="modules")
    assert path.is_dir() and path.name == "modules"
    assert (path / "lib" / "modules" / "6.1" / "kernel.ko").read_bytes() == b"\x7fELF"


def test_network_errors_are_retried(server: Server, tmp_path: Path, jobs: list[Job]) -> None:
    url = server.add("/vmlinuz", DATA, fail=[503])
    job = make_job(jobs, tmp_path, {"kernel": {"url": url, "sha256sum": SHA}}, block={"failure_retry": 2})
    run(job)
    assert [h.status for h in server.requests()] == [503, 200]
    errors = job.messages("error")
    assert any(m.startswith("download-retry failed: 1 of 2 attempts.") and "HTTP 503" in m for m in errors)
    assert any(m.startswith("Retrying: 1 download-retry") for m in job.messages("warning"))
    results = job.results("http-download")
    assert [r["result"] for r in results] == ["fail", "pass"]
    assert job.ctx.data("common").get(DOWNLOADED, label="kernel").read_bytes() == DATA


def test_404_fails_with_an_infrastructure_error(server: Server, tmp_path: Path, jobs: list[Job]) -> None:
    url = server.url("/gone")
    job = make_job(jobs, tmp_path, {"kernel": {"url": url}})
    with pytest.raises(InfrastructureError, match="HTTP 404"):
        run(job)
    (record,) = job.results("http-download")
    assert record["result"] == "fail" and url in record["extra"]["fail"]


def test_checksum_mismatch_fails_every_attempt(server: Server, tmp_path: Path, jobs: list[Job]) -> None:
    url = server.add("/vmlinuz", DATA)
    wrong = "0" * 64
    job = make_job(jobs, tmp_path, {"kernel": {"url": url, "sha256sum": wrong}}, block={"failure_retry": 2})
    with pytest.raises(JobError, match=f"sha256sum mismatch for .*expected {wrong}, got {SHA}"):
        run(job)
    # as in LAVA, RetryAction retries a JobError too: it fails the same way
    assert server.downloads() == 2
    assert [r["result"] for r in job.results("http-download")] == ["fail", "fail"]
    assert not list((tmp_path / "cache" / "entries").iterdir())


def test_validate_refuses_bad_compression_and_archive(server: Server, tmp_path: Path, jobs: list[Job]) -> None:
    job = make_job(
        jobs, tmp_path, {"kernel": {"url": server.url("/k"), "compression": "lz4", "archive": "cpio"}}
    )
    errors = job.pipeline.validate()
    assert any("images.kernel.compression: 'lz4'" in e for e in errors)
    assert any("images.kernel.archive: 'cpio'" in e for e in errors)
