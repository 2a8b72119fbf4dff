"""``deploy: to: tftp`` and ``deploy: to: nfs``: files for a bootloader to fetch.

tftp (LAVA's ``tftp-deploy``): the overlay, then each of kernel, dtb,
dtbo, modules, preseed, tee, ramdisk, nfsrootfs and extra_files downloaded
into the job's directory under the TFTP root (see :mod:`lava_dispatcher.tftp`),
then ``prepare-tftp-overlay``:

- the NFS root filesystem unpacked next to them, with the overlay and the
  modules in it;
- the overlay and the modules added to the ramdisk as one extra cpio segment
  (the kernel unpacks them over the first; the original is not repacked),
  then a U-Boot header when the device says ``add_header: u-boot``;
- a zImage wrapped as a uImage when the device can only ``bootm``.

What the boot actions substitute ({KERNEL}, {RAMDISK}, {DTB}, {NFSROOTFS}...)
is recorded as the files' names relative to the TFTP root.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lava_dispatcher import tftp
from lava_dispatcher.actions.deploy.download import DOWNLOADED, DownloaderAction
from lava_dispatcher.actions.deploy.overlay import OverlayAction, dispatcher_ip, needs_overlay
from lava_dispatcher.actions.overlay_data import (
    BOOT_COMMAND,
    BOOT_FILE,
    NFS_ROOT,
    OVERLAY_FILE,
    TFTP_SUFFIX,
)
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.download import unpack_tar
from lava_dispatcher.errors import InfrastructureError, JobError
from lava_dispatcher.pipeline import Action, RunContext
from lava_dispatcher.plugins import hookimpl

#: the files of a tftp deploy, in LAVA's download order
FILE_KEYS = ("ramdisk", "kernel", "dtb", "nfsrootfs", "modules", "preseed", "tee")
#: the ones a bootloader fetches, named in its commands
BOOT_KEYS = ("kernel", "ramdisk", "dtb", "tee", "preseed")


def job_tftp_directory(ctx: RunContext) -> tftp.JobTftpDirectory:
    """The job's directory under the TFTP root: made on first use, removed at the job's end."""
    return ctx.shared(
        "tftp-directory",
        lambda: tftp.JobTftpDirectory(tftp.tftp_root(ctx.job.dispatcher), ctx.job.job_id),
        lambda directory: directory.remove(),
    )


def _into_tftp(ctx: RunContext) -> Path:
    return job_tftp_directory(ctx).path


def _into_extra_files(ctx: RunContext) -> Path:
    return job_tftp_directory(ctx).path / "extra_files"


def deploy_parameters(action: Action) -> Mapping[str, Any]:
    """The device's ``actions.deploy.parameters`` (add_header, mkimage_arch...)."""
    deploy = (action.settings.device.get("actions") or {}).get("deploy") or {}
    return deploy.get("parameters") or {}


def boot_command_for(kernel_type: str, device_parameters: Mapping[str, Any]) -> str:
    """The U-Boot command for a kernel ``type``, by the load addresses the device has
    (LAVA's rule: bootz for zImage, booti for Image, when the device gives their
    addresses; bootm otherwise, and for uImage)."""
    wanted = {"zimage": "bootz", "image": "booti"}.get(kernel_type.lower())
    if wanted and wanted in device_parameters:
        return wanted
    return "bootm"


class TftpAction(Action):
    name = "tftp-deploy"
    description = "download files and deploy using tftp"
    summary = "tftp deployment"
    section = "deploy"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        if needs_overlay(self.settings, str(parameters.get("namespace") or "common")):
            pipeline.add_action(OverlayAction())
        for key in FILE_KEYS:
            if parameters.get(key):
                pipeline.add_action(DownloaderAction(key, parameters[key], into=_into_tftp))
        for index, dtbo in enumerate(parameters.get("dtbo") or []):
            pipeline.add_action(DownloaderAction(f"dtbo{index}", dtbo, into=_into_tftp))
        for name, entry in (parameters.get("extra_files") or {}).items():
            pipeline.add_action(DownloaderAction(name, entry, into=_into_extra_files))
        pipeline.add_action(PrepareOverlayTftp())

    def validate(self) -> None:
        if self.parameters.get("nfsrootfs") and self.parameters.get("persistent_nfs"):
            self.errors.append("Only one of nfsrootfs or persistent_nfs can be specified")
        persistent = self.parameters.get("persistent_nfs") or {}
        if persistent and ":" not in str(persistent.get("address", "")):
            self.errors.append(
                f"persistent_nfs.address: {persistent.get('address')!r} is not an NFS export such as 'server:/srv/rootfs'"
            )
        kernel = self.parameters.get("kernel") or {}
        kernel_type = str(kernel.get("type") or "")
        if kernel_type and kernel_type.lower() not in ("image", "uimage", "zimage"):
            self.errors.append(f"kernel.type: {kernel_type!r} is not one of image, uimage, zimage")

    def run(self, ctx: RunContext) -> None:
        directory = job_tftp_directory(ctx)
        ctx.logger.debug(f"TFTP directory for this deploy: {directory.path}")
        super().run(ctx)
        space = ctx.data(self.namespace)
        space.set(TFTP_SUFFIX, directory.relative(directory.path))
        limit = tftp.size_limit(ctx.job.dispatcher)
        files: dict[str, str] = {}
        labels = [key for key in BOOT_KEYS if self.parameters.get(key)]
        labels += [f"dtbo{i}" for i in range(len(self.parameters.get("dtbo") or []))]
        for key in labels:
            path = space.get(DOWNLOADED, label=key)
            size = path.stat().st_size
            if size >= limit:
                raise JobError(
                    f"Unable to send '{path.name}' over tftp: file too large ({size} > {limit})"
                )
            files[key] = directory.relative(path)
            space.set(BOOT_FILE, files[key], label=key)
        self.results = {"files": files}


class PrepareOverlayTftp(Action):
    """Overlay and modules into the ramdisk or the NFS root, headers, kernel format."""

    name = "prepare-tftp-overlay"
    description = "extract ramdisk or nfsrootfs in preparation for lava overlay"
    summary = "extract ramdisk or nfsrootfs"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        if parameters.get("nfsrootfs"):
            pipeline.add_action(ExtractNfsRootfs())
        if parameters.get("persistent_nfs"):
            pipeline.add_action(PersistentNfs())
        if parameters.get("ramdisk"):
            pipeline.add_action(PrepareRamdisk())
        if parameters.get("kernel"):
            pipeline.add_action(PrepareKernel())


def _wants_overlay(ctx: RunContext, action: Action, params: Mapping[str, Any]) -> Path | None:
    """The overlay tarball, when the job has one and ``install_overlay`` is not false."""
    if params.get("install_overlay", True) is False:
        return None
    return ctx.data(action.namespace).get(OVERLAY_FILE, default=None)


def _unpack_over(tarball: Path, root: Path, what: str) -> None:
    """Unpack ``tarball`` over the existing tree ``root`` (no path traversal)."""
    try:
        with tarfile.open(tarball, "r:*") as tar:
            tar.extractall(root, filter="tar")
    except tarfile.FilterError as exc:
        raise JobError(f"refusing to unpack {what}: {exc}") from exc
    except (tarfile.TarError, EOFError) as exc:
        raise JobError(f"{what} is not a valid tar archive: {exc}") from exc
    except OSError as exc:
        raise InfrastructureError(f"cannot unpack {what} into {root}: {exc}") from exc


class ExtractNfsRootfs(Action):
    name = "extract-nfsrootfs"
    description = "unpack nfsrootfs"
    summary = "unpack nfsrootfs, ready to apply lava overlay"
    timeout_exception = InfrastructureError

    def run(self, ctx: RunContext) -> None:
        params = self.parameters["nfsrootfs"]
        space = ctx.data(self.namespace)
        tarball = space.get(DOWNLOADED, label="nfsrootfs")
        if tarball.is_dir():  # archive: tar already unpacked it
            root = tarball
        else:
            root = tarball.parent / "rootfs"
            unpack_tar(tarball, root, str(params.get("url")), rootfs=True)
            tarball.unlink()
        prefix = str(params.get("prefix") or "").strip("/")
        if prefix:
            root = root / prefix
            if not root.is_dir():
                raise JobError(
                    f"nfsrootfs.prefix: {prefix!r} is not a directory in {params.get('url')}"
                )
        overlay = _wants_overlay(ctx, self, params)
        if overlay is not None:
            _unpack_over(overlay, root, "the overlay")
            ctx.logger.info(f"[{self.namespace}] overlay unpacked into the NFS root {root}")
        modules = space.get(DOWNLOADED, label="modules", default=None)
        if modules is not None and params.get("install_modules", True) is not False:
            _unpack_over(modules, root, str((self.parameters.get("modules") or {}).get("url")))
            ctx.logger.info(f"[{self.namespace}] modules unpacked into the NFS root")
        space.set(NFS_ROOT, str(root), label="path")
        space.set(NFS_ROOT, dispatcher_ip(ctx.job.dispatcher), label="server")
        self.results = {"nfsroot": str(root)}


class PersistentNfs(Action):
    name = "persistent-nfs-overlay"
    description = "add test overlay to NFS"
    summary = "add test overlay to persistent NFS"

    def validate(self) -> None:
        params = self.parameters.get("persistent_nfs") or {}
        if params.get("install_overlay", True) is not False and needs_overlay(
            self.settings, str(self.parameters.get("namespace") or "common")
        ):
            self.errors.append(
                "persistent_nfs: the overlay cannot be installed into a persistent NFS export "
                "from here; set persistent_nfs.install_overlay: false and use transfer_overlay"
            )

    def run(self, ctx: RunContext) -> None:
        address = str(self.parameters["persistent_nfs"]["address"])
        server, _, path = address.partition(":")
        space = ctx.data(self.namespace)
        space.set(NFS_ROOT, path, label="path")
        space.set(NFS_ROOT, server, label="server")
        self.results = {"nfsroot": address}


class PrepareRamdisk(Action):
    """Overlay and modules as one extra cpio segment; then the U-Boot header if the device wants one."""

    name = "compress-ramdisk"
    description = "Add the overlay and modules to the ramdisk, and a U-Boot header if needed"
    summary = "prepare the ramdisk"
    timeout_exception = InfrastructureError

    def run(self, ctx: RunContext) -> None:
        from lava_dispatcher import ramdisk, uimage  # off the start-up path, as AppendOverlays

        params = self.parameters["ramdisk"]
        space = ctx.data(self.namespace)
        path = space.get(DOWNLOADED, label="ramdisk")
        has_header = uimage.file_has_header(path)
        if params.get("header") == "u-boot" and not has_header:
            raise JobError(f"ramdisk.header is u-boot but {params.get('url')} has no U-Boot header")
        added: list[str] = []
        entries: list[ramdisk.Entry] = []
        overlay = _wants_overlay(ctx, self, params)
        modules = space.get(DOWNLOADED, label="modules", default=None)
        try:
            if overlay is not None:
                entries += ramdisk.entries_from_tarball(overlay)
                added.append("overlay")
            if modules is not None and params.get("install_modules", True) is not False:
                entries += ramdisk.entries_from_tarball(modules)
                added.append("modules")
            if entries:  # one new segment: the ramdisk is read and written once
                ramdisk.append_entries(path, entries)
        except ramdisk.RamdiskError as exc:
            raise JobError(f"cannot add the overlay to the ramdisk {path.name}: {exc}") from exc
        if added:
            ctx.logger.info(
                f"[{self.namespace}] added the {' and '.join(added)} to {path.name} as cpio segments"
            )
        wants_header = deploy_parameters(self).get("add_header") == "u-boot"
        if wants_header and not has_header:
            arch = str(deploy_parameters(self).get("mkimage_arch") or "arm")
            try:
                wrapped = uimage.make(
                    path.read_bytes(), arch=arch, image_type=uimage.TYPE_RAMDISK, name="ramdisk"
                )
            except ValueError as exc:
                raise JobError(f"actions.deploy.parameters.mkimage_arch: {exc}") from exc
            target = path.with_name(path.name + ".uboot")
            target.write_bytes(wrapped)
            path.unlink()
            space.set(DOWNLOADED, target, label="ramdisk")
            ctx.logger.info(f"[{self.namespace}] U-Boot header added: {target.name}")
        self.results = {"ramdisk": space.get(DOWNLOADED, label="ramdisk").name, "added": added}


class PrepareKernel(Action):
    """Decide bootz/booti/bootm for the kernel; wrap a zImage for a bootm-only device."""

    name = "prepare-kernel"
    description = "populates the pipeline with a kernel conversion action"
    summary = "add a kernel conversion"

    def run(self, ctx: RunContext) -> None:
        from lava_dispatcher import uimage  # off the start-up path

        kernel = self.parameters["kernel"]
        kernel_type = str(kernel.get("type") or "")
        space = ctx.data(self.namespace)
        if not kernel_type:
            ctx.logger.debug("the kernel has no type: the boot commands must say how to boot it")
            return
        methods = ((self.settings.device.get("actions") or {}).get("boot") or {}).get("methods")
        if "u-boot" not in (methods or {}):
            # as LAVA: bootz/booti/bootm and uImage wrapping are U-Boot's business
            ctx.logger.debug(f"kernel type {kernel_type!r}: no u-boot boot method, nothing to prepare")
            return
        device_parameters = self.settings.device.get("parameters") or {}
        command = boot_command_for(kernel_type, device_parameters)
        space.set(BOOT_COMMAND, command)
        if kernel_type.lower() != "uimage" and command == "bootm":
            path = space.get(DOWNLOADED, label="kernel")
            data = path.read_bytes()
            if not uimage.has_header(data):
                address = int(str((device_parameters.get("bootm") or {}).get("kernel") or "0"), 0)
                arch = str(deploy_parameters(self).get("mkimage_arch") or "arm")
                ctx.logger.warning(f"No {'bootz' if kernel_type.lower() == 'zimage' else 'booti'} parameters "
                                   f"available, falling back to bootm and converting the kernel to a uImage")  # fmt: skip
                try:
                    wrapped = uimage.make(data, arch=arch, image_type=uimage.TYPE_KERNEL, name="kernel",
                                          load=address, entry=address)  # fmt: skip
                except ValueError as exc:
                    raise JobError(f"actions.deploy.parameters.mkimage_arch: {exc}") from exc
                target = path.with_name("uImage")
                target.write_bytes(wrapped)
                path.unlink()
                space.set(DOWNLOADED, target, label="kernel")
        self.results = {"bootcommand": command}


class NfsAction(Action):
    """``to: nfs``: a root filesystem unpacked for the DUT to mount over NFS."""

    name = "nfs-deploy"
    description = "deploy nfsrootfs"
    summary = "NFS deployment"
    section = "deploy"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        if needs_overlay(self.settings, str(parameters.get("namespace") or "common")):
            pipeline.add_action(OverlayAction())
        for key in ("nfsrootfs", "modules"):
            if parameters.get(key):
                pipeline.add_action(DownloaderAction(key, parameters[key], into=_into_tftp))
        if parameters.get("nfsrootfs"):
            pipeline.add_action(ExtractNfsRootfs())

    def validate(self) -> None:
        if not self.parameters.get("nfsrootfs"):
            self.errors.append("an nfs deploy needs nfsrootfs")


class Tftp(Strategy):
    section = "deploy"
    name = "tftp"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return TftpAction()


class Nfs(Strategy):
    section = "deploy"
    name = "nfs"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return NfsAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Tftp, Nfs]
