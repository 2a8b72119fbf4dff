"""``deploy: to: tmpfs`` (virtual machines), ``to: download`` and ``to: downloads``.

tmpfs (LAVA's ``deployimages``): the overlay, then every image downloaded
(checksums, decompression, the cache), remembering each label's
``image_arg`` for the boot; then, unless an image took the overlay itself
(``overlays: {lava: true}`` on a cpio ramdisk), the overlay on a small ext2
guest disk that the test shell mounts, as LAVA does.

download / downloads: fetch the images for later actions (or for the user's
own commands), nothing more.
"""

from __future__ import annotations

import shutil
import uuid as uuid_module
from collections.abc import Mapping
from typing import Any

from lava_dispatcher import hostcmd, overlay
from lava_dispatcher.actions.deploy.download import DownloaderAction
from lava_dispatcher.actions.deploy.overlay import OverlayAction, needs_overlay
from lava_dispatcher.actions.overlay_data import (
    GUEST_DISK,
    IMAGE_ARGS,
    OVERLAY_LOCATION,
    PRE_COMMANDS,
    RESULTS_DIR,
)
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.devices import Device
from lava_dispatcher.errors import InfrastructureError
from lava_dispatcher.pipeline import Action, RunContext
from lava_dispatcher.plugins import hookimpl


def overlay_in_an_image(parameters: Mapping[str, Any]) -> bool:
    """Whether an image of the block takes the LAVA overlay itself."""
    return any(
        ((image or {}).get("overlays") or {}).get("lava")
        for image in (parameters.get("images") or {}).values()
    )


class DeployImagesAction(Action):
    name = "deployimages"
    description = "deploy images"
    summary = "deploy images"
    section = "deploy"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        tests = needs_overlay(self.settings, str(parameters.get("namespace") or "common"))
        if tests:
            pipeline.add_action(OverlayAction())
        for key, image in (parameters.get("images") or {}).items():
            pipeline.add_action(DownloaderAction(key, image))
        if tests and not overlay_in_an_image(parameters):
            pipeline.add_action(ApplyOverlayGuest())

    def validate(self) -> None:
        images = self.parameters.get("images") or {}
        if not images:
            self.errors.append("a tmpfs deploy needs at least one image")

    def run(self, ctx: RunContext) -> None:
        super().run(ctx)
        space = ctx.data(self.namespace)
        for key, image in (self.parameters.get("images") or {}).items():
            if image.get("image_arg"):
                space.set(IMAGE_ARGS, str(image["image_arg"]), label=key)


class ApplyOverlayGuest(Action):
    """The overlay on an ext2 disk image: its root is ``<results_dir>`` itself,
    mounted there by the test shell's pre-commands."""

    name = "apply-overlay-guest"
    description = "prepare a guest disk containing the overlay"
    summary = "build a guest filesystem with the overlay"
    timeout_exception = InfrastructureError
    provides = (GUEST_DISK, PRE_COMMANDS)

    def guest(self) -> Mapping[str, Any]:
        image = (self.settings.device.get("actions") or {}).get("deploy", {}).get("methods", {}).get("image") or {}
        return (image.get("parameters") or {}).get("guest") or {}

    def validate(self) -> None:
        if not self.guest().get("size"):
            self.errors.append(
                "the device does not give the size of the guest filesystem "
                "(actions.deploy.methods.image.parameters.guest.size)"
            )
        if shutil.which("mke2fs") is None:
            self.errors.append("mke2fs (e2fsprogs) is not installed on the dispatcher")

    def run(self, ctx: RunContext) -> None:
        space = ctx.data(self.namespace)
        results = space.get(RESULTS_DIR)
        source = overlay.tree_path(space.get(OVERLAY_LOCATION), results)
        disk = ctx.mkdtemp("guest") / "lava-guest.img"
        blkid = str(uuid_module.uuid4())
        size_mb = int(self.guest()["size"])
        argv = ["mke2fs", "-q", "-F", "-t", "ext2", "-U", blkid, "-L", "lavatest", "-d", str(source), str(disk), f"{size_mb}M"]
        try:
            result = hostcmd.run(argv, timeout=ctx.remaining(), interrupter=ctx.interrupter)
        except hostcmd.CommandNotFound as exc:
            raise InfrastructureError(str(exc)) from exc
        except hostcmd.CommandTimeout as exc:
            raise ctx.timeout_error("building the guest disk") from exc
        if result.returncode != 0:
            raise InfrastructureError(f"mke2fs could not build the guest disk: {result.last_lines}")
        space.set(GUEST_DISK, disk)
        space.set(
            PRE_COMMANDS,
            [
                f"mkdir -p {results}",
                f"mount /dev/disk/by-uuid/{blkid} -t ext2 {results}",
                f"ls -la {results}/bin/lava-test-runner",
            ],
        )
        self.results = {"success": blkid}


class DownloadOnlyAction(Action):
    """``to: download`` / ``to: downloads``: the images, for later actions."""

    name = "download-deploy"
    description = "download files and copy to LXC if available"
    summary = "download deployment"
    section = "deploy"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        if needs_overlay(self.settings, str(parameters.get("namespace") or "common")):
            pipeline.add_action(OverlayAction())
        for key, image in (parameters.get("images") or {}).items():
            pipeline.add_action(DownloaderAction(key, image))

    def validate(self) -> None:
        if not self.parameters.get("images"):
            self.errors.append(f"'to: {self.parameters.get('to')}' needs images to download")


class Tmpfs(Strategy):
    """Images for a virtual machine; the device must offer LAVA's 'image' deploy method."""

    section = "deploy"
    name = "tmpfs"
    needs_device_method = False  # 'image' (LAVA's name) or 'tmpfs', checked below

    @classmethod
    def accepts(cls, device: Device, parameters: Mapping[str, Any]) -> tuple[bool, str]:
        accepted, why = super().accepts(device, parameters)
        if not accepted:
            return accepted, why
        if not (device.has_method("deploy", "image") or device.has_method("deploy", "tmpfs")):
            return False, f"device {device.hostname!r} has no 'image' deploy method"
        return True, ""

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return DeployImagesAction()


class Download(Strategy):
    section = "deploy"
    name = "download"
    needs_device_method = False

    @classmethod
    def accepts(cls, device: Device, parameters: Mapping[str, Any]) -> tuple[bool, str]:
        if parameters.get("to") not in ("download", "downloads"):
            return False, f"to is {parameters.get('to')!r}, not 'download' or 'downloads'"
        return True, ""

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return DownloadOnlyAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Tmpfs, Download]

