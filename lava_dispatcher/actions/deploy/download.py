"""Downloading a deploy block's images, and putting the overlay into them.

``download-retry`` (one per image key) wraps the transfer action named after
the URL's scheme (``http-download``, ``file-download``), and, when the image
says ``overlays: {lava: true}``, ``append-overlays`` puts the test overlay
into it (cpio ramdisks: as an extra archive segment the kernel unpacks too).

http(s) downloads go through the host's download cache (see
:mod:`lava_dispatcher.download_cache` and :func:`cache_for`); the transfer
action's result says ``cache: hit``, ``miss``, ``revalidated`` or ``off``.
``download-retry`` retries an InfrastructureError (the network) and, as in
LAVA, a JobError too (a checksum mismatch fails every attempt the same way).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lava_dispatcher import download_cache
from lava_dispatcher.actions.overlay_data import OVERLAY_FILE
from lava_dispatcher.data import Key
from lava_dispatcher.download import ARCHIVES, CHECKSUMS, COMPRESSIONS, fetch, filename_of
from lava_dispatcher.download_cache import DownloadCache
from lava_dispatcher.errors import InfrastructureError, JobError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext

#: the downloaded file for an image key (label: the key, e.g. "ramdisk"); with
#: ``archive: tar``, the directory the tarball was unpacked into
DOWNLOADED: Key[Path] = Key("downloaded-file", Path, "an image downloaded by download-retry")

#: where an image goes (a directory the key's own directory is made in),
#: when not in the job's temporary directory: the job's TFTP directory...
Into = Callable[[RunContext], Path]

_COMPRESSION_SUFFIX = {"gz": ".gz", "xz": ".xz", "bz2": ".bz2", "zstd": ".zst", "zip": ".zip"}


def local_name(url: str, compression: str | None) -> str:
    """The downloaded file's name: the URL's, without the suffix of the compression removed."""
    name = filename_of(url)
    suffix = _COMPRESSION_SUFFIX.get(compression or "")
    if suffix and name.endswith(suffix) and len(name) > len(suffix):
        name = name[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


def cache_for(ctx: RunContext) -> DownloadCache | None:
    """The job's download cache (one per job, from the dispatcher configuration).

    ``download_cache``: the directory, or ``false`` to go without; unset:
    ``$LAVA_DOWNLOAD_CACHE``, else ``$XDG_CACHE_HOME/lava-dispatcher/downloads``.
    ``download_cache_size``: the limit in bytes (10 GiB by default). A cache
    directory that cannot be made is logged, and the job goes without.
    """

    def open_cache() -> DownloadCache | None:
        try:
            return download_cache.from_config(ctx.job.dispatcher)
        except OSError as exc:
            ctx.logger.warning(f"not using a download cache: {exc}")
            return None

    return ctx.shared("download-cache", open_cache, lambda _cache: None)


class DownloadAction(Action):
    """Fetch one image: checksums verified and decompression done while streaming,
    through the download cache (http and https only; ``use_cache: false`` skips it)."""

    name = "file-download"
    description = "download an image"
    summary = "download"
    timeout_exception = InfrastructureError
    provides = (DOWNLOADED,)

    def __init__(self, key: str, params: Mapping[str, Any], into: Into | None = None) -> None:
        scheme = urllib.parse.urlparse(str(params.get("url", ""))).scheme
        self.name = "http-download" if scheme in ("http", "https") else "file-download"
        super().__init__()
        self.key = key
        self.image = params
        self.into = into

    def validate(self) -> None:
        url = str(self.image.get("url") or "")
        if urllib.parse.urlparse(url).scheme not in ("http", "https", "file"):
            self.errors.append(f"images.{self.key}.url: {url!r} is not an http(s) or file URL")
        compression = self.image.get("compression")
        if compression not in (None, *COMPRESSIONS):
            self.errors.append(
                f"images.{self.key}.compression: {compression!r} is not one of {', '.join(COMPRESSIONS)}"
            )
        archive = self.image.get("archive")
        if archive not in (None, *ARCHIVES):
            self.errors.append(
                f"images.{self.key}.archive: {archive!r} is not one of {', '.join(ARCHIVES)}"
            )

    def run(self, ctx: RunContext) -> None:
        url = str(self.image["url"])
        compression = self.image.get("compression")
        archive = self.image.get("archive")
        if self.into is None:
            directory = ctx.mkdtemp(f"download-{self.key}")
        else:
            directory = self.into(ctx) / self.key
            directory.mkdir(parents=True, exist_ok=True)
        # with archive: tar, the directory the tarball is unpacked into
        dest = directory / (self.key if archive else local_name(url, compression))
        cache = cache_for(ctx) if self.image.get("use_cache", True) is not False else None
        result = fetch(
            url,
            dest,
            timeout=ctx.remaining(),
            interrupter=ctx.interrupter,
            headers=self.image.get("headers") or {},
            checksums={k: self.image[k] for k in CHECKSUMS if self.image.get(k)},
            compression=compression,
            archive=archive,
            cache=cache,
            logger=ctx.logger,
            label=self.key,
        )
        ctx.data(self.namespace).set(DOWNLOADED, result.path, label=self.key)
        self.results = {
            "label": self.key,
            "size": result.size,
            **result.digests,
            "cache": result.cache,
        }


class DownloaderAction(RetryAction):
    name = "download-retry"
    description = "download with retry"
    summary = "download-retry"

    def __init__(self, key: str, params: Mapping[str, Any], into: Into | None = None) -> None:
        super().__init__()
        self.key = key
        self.image = params
        self.into = into

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(DownloadAction(self.key, self.image, self.into))
        if self.image.get("overlays"):
            pipeline.add_action(AppendOverlays(self.key, self.image))


class AppendOverlays(Action):
    """Put the LAVA overlay into a downloaded image (``overlays: {lava: true}``)."""

    name = "append-overlays"
    description = "append overlays to an image"
    summary = "append overlays to an image"
    FORMATS = ("cpio.newc",)

    def __init__(self, key: str, params: Mapping[str, Any]) -> None:
        super().__init__()
        self.key = key
        self.image = params

    def validate(self) -> None:
        overlays = self.image.get("overlays")
        if not isinstance(overlays, Mapping):
            self.errors.append(f"images.{self.key}.overlays must be a mapping")
            return
        if self.image.get("format") not in self.FORMATS:
            self.errors.append(
                f"images.{self.key}.format: {self.image.get('format')!r} cannot take overlays here; "
                f"expected one of {', '.join(self.FORMATS)}"
            )
        for name in overlays:
            if name != "lava":
                self.errors.append(
                    f"images.{self.key}.overlays.{name}: only the 'lava' overlay is supported"
                )

    def run(self, ctx: RunContext) -> None:
        from lava_dispatcher import ramdisk

        space = ctx.data(self.namespace)
        image = space.get(DOWNLOADED, label=self.key)
        tarball = space.get(OVERLAY_FILE, default=None)
        if not (self.image.get("overlays") or {}).get("lava"):
            return
        if tarball is None:
            raise JobError(f"images.{self.key}: overlays.lava is set but no test needs an overlay")
        try:
            ramdisk.append_tarball(image, tarball)
        except ramdisk.RamdiskError as exc:
            raise JobError(f"cannot add the overlay to {self.key} ({image.name}): {exc}") from exc
        self.results = {"image": self.key, "overlay": tarball.name}
        ctx.logger.info(f"added {tarball.name} to {self.key} as a new cpio segment")
