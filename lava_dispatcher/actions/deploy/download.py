"""Downloading a deploy block's images, and putting the overlay into them.

``download-retry`` (one per image key) wraps the transfer action named after
the URL's scheme (``http-download``, ``file-download``), and, when the image
says ``overlays: {lava: true}``, ``append-overlays`` puts the test overlay
into it (cpio ramdisks: as an extra archive segment the kernel unpacks too).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lava_dispatcher.actions.overlay_data import OVERLAY_FILE
from lava_dispatcher.data import Key
from lava_dispatcher.download import CHECKSUMS, fetch, filename_of
from lava_dispatcher.errors import InfrastructureError, JobError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext

#: the downloaded file for an image key (label: the key, e.g. "ramdisk")
DOWNLOADED: Key[Path] = Key("downloaded-file", Path, "an image downloaded by download-retry")

_COMPRESSION_SUFFIX = {"gz": ".gz", "xz": ".xz", "bz2": ".bz2", "zstd": ".zst", "zip": ".zip"}


def local_name(url: str, compression: str | None) -> str:
    """The downloaded file's name: the URL's, without the suffix of the compression removed."""
    name = filename_of(url)
    suffix = _COMPRESSION_SUFFIX.get(compression or "")
    if suffix and name.endswith(suffix) and len(name) > len(suffix):
        name = name[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)


class DownloadAction(Action):
    """Fetch one image: checksums verified and decompression done while streaming."""

    name = "file-download"
    description = "download an image"
    summary = "download"
    timeout_exception = InfrastructureError

    def __init__(self, key: str, params: Mapping[str, Any]) -> None:
        scheme = urllib.parse.urlparse(str(params.get("url", ""))).scheme
        self.name = "http-download" if scheme in ("http", "https") else "file-download"
        super().__init__()
        self.key = key
        self.image = params

    def validate(self) -> None:
        url = str(self.image.get("url") or "")
        if urllib.parse.urlparse(url).scheme not in ("http", "https", "file"):
            self.errors.append(f"images.{self.key}.url: {url!r} is not an http(s) or file URL")

    def run(self, ctx: RunContext) -> None:
        url = str(self.image["url"])
        compression = self.image.get("compression")
        directory = ctx.mkdtemp(f"download-{self.key}")
        dest = directory / local_name(url, compression)
        last = [0]

        def progress(received: int) -> None:
            # a line per 10% of a known size would need the size; log every 64 MiB
            if received - last[0] >= 64 << 20:
                last[0] = received
                ctx.logger.debug(f"{self.key}: {received >> 20} MiB")

        ctx.logger.info(f"downloading {url}")
        result = fetch(
            url,
            dest,
            timeout=ctx.remaining(),
            interrupter=ctx.interrupter,
            headers=self.image.get("headers") or {},
            checksums={k: self.image[k] for k in CHECKSUMS if self.image.get(k)},
            compression=compression,
            on_progress=progress,
        )
        ctx.data(self.namespace).set(DOWNLOADED, dest, label=self.key)
        self.results = {"label": self.key, "size": result.size, **result.digests}
        ctx.logger.info(f"{self.key}: {result.size} bytes from {url}")


class DownloaderAction(RetryAction):
    name = "download-retry"
    description = "download with retry"
    summary = "download-retry"

    def __init__(self, key: str, params: Mapping[str, Any]) -> None:
        super().__init__()
        self.key = key
        self.image = params

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(DownloadAction(self.key, self.image))
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
                self.errors.append(f"images.{self.key}.overlays.{name}: only the 'lava' overlay is supported")

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
