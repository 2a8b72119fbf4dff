"""``deploy: to: fastboot``: download partition images, flash them with the host's fastboot.

LAVA's ``fastboot-deploy``: the overlay (when a test shell needs one), one
``download-retry`` per image, then the board is brought to its bootloader's
fastboot mode (a device with ``hard_reset``: connect its console, the
pre-power command, a reset; otherwise ``enter-fastboot-action``), then
``fastboot-flash-order-action`` flashes the images in the device's
``flash_cmds_order`` (the job's other images after them, in job order), each
after ``wait-device-boardid``, each followed by the reboot its image asks for
(``reboot: fastboot-reboot | fastboot-reboot-bootloader |
fastboot-reboot-fastboot | hard-reset``).

The tool is always called as LAVA calls it: ``fastboot -s
<fastboot_serial_number> <command...> <fastboot_options...>``, from an
argument list (never a shell: partition names and files come from the job),
with the action's deadline as its timeout and its output logged. A network
device is named as the tool names it: ``fastboot_serial_number:
tcp:HOST:PORT`` (the simulator, :mod:`lava_dispatcher.sim.fastboot`).

Where we differ from LAVA:

- fastboot runs on the worker, never in LXC or Docker (a ``docker:`` block
  is reported and ignored); adb is not used.
- ``wait-device-boardid`` waits for the device to answer over fastboot
  (``getvar product``) instead of for a udev event, so it also works for
  network devices; a device that never answers ends the job with an
  InfrastructureError naming it when the action's time is up.
- A command the device refuses is a JobError (as LAVA's) that names the
  command, the partition and fastboot's own words; a missing fastboot tool
  is an InfrastructureError.
- Not supported (refused at validation, never silently skipped):
  ``apply-overlay`` (LAVA rewrites sparse ext4 images; give the boot block a
  ``transfer_overlay`` instead) and ``fastboot_auto_detection`` with an unset
  serial number. The flash action does not wait for the device's
  ``interrupt_prompt``, and no ``read-feedback`` runs between flashes (our
  consoles are read all the time).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from lava_dispatcher import hostcmd
from lava_dispatcher.actions.connection import ConnectDevice
from lava_dispatcher.actions.deploy.download import DOWNLOADED, DownloaderAction
from lava_dispatcher.actions.deploy.overlay import OverlayAction, needs_overlay
from lava_dispatcher.actions.power import PDUReboot, PrePower, ResetDevice, device_commands
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.devices import Device
from lava_dispatcher.errors import InfrastructureError, JobError, LAVAError
from lava_dispatcher.pipeline import Action, RunContext
from lava_dispatcher.plugins import hookimpl

#: the host tool (found on PATH)
FASTBOOT = "fastboot"
#: LAVA's value for "no serial number set"
UNSET_SERIAL = "0000000000"
#: how long enter-fastboot-action asks a network device whether it is in fastboot mode
PROBE_TIMEOUT = 3.0


# -- running fastboot ---------------------------------------------------------------


class FastbootMissing(InfrastructureError):
    """The worker has no fastboot tool (an Infrastructure error, as any other)."""


def fastboot_serial(device: Mapping[str, Any]) -> str:
    return str(device.get("fastboot_serial_number") or "")


def fastboot_argv(device: Mapping[str, Any], args: Sequence[str]) -> list[str]:
    """``fastboot -s SERIAL ARGS OPTIONS``, LAVA's order (options last)."""
    options = [str(option) for option in device.get("fastboot_options") or []]
    return [FASTBOOT, "-s", fastboot_serial(device), *args, *options]


def is_network_serial(serial: str) -> bool:
    return serial.startswith(("tcp:", "udp:"))


def fastboot_says(output: str) -> str:
    """fastboot's own reason for a failure: its ``FAILED (...)`` or ``error:`` line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if "FAILED" in line:
            return line[line.index("FAILED") :]
    for line in reversed(lines):
        if line.startswith(("error:", "fastboot: error:")) and "Command failed" not in line:
            return line
    return lines[-1] if lines else "(no output)"


def run_fastboot(
    ctx: RunContext,
    action: Action,
    args: Sequence[str],
    *,
    what: str,
    error: type[LAVAError] = JobError,
    timeout: float | None = None,
) -> hostcmd.CommandResult:
    """Run fastboot for ``action``; its output is logged as ``>> line``.

    Raises InfrastructureError when the tool is missing, the deadline's error
    naming the device when it never answered, ``error`` (naming ``what`` and
    fastboot's reason) when the command failed.
    """
    device = action.settings.device
    serial = fastboot_serial(device)
    argv = fastboot_argv(device, args)
    shown = shlex.join(argv)
    ctx.logger.debug(f"running: {shown}")
    # a bound of the caller's own, shorter than the deadline: its expiry is not the action's
    bounded = timeout is not None and timeout < ctx.remaining()
    limit = timeout if bounded and timeout is not None else ctx.remaining()
    try:
        result = hostcmd.run(
            argv,
            timeout=limit,
            interrupter=ctx.interrupter,
            on_line=lambda line: ctx.logger.debug(f">> {line}"),
        )
    except hostcmd.CommandNotFound as exc:
        raise FastbootMissing(
            f"{what}: the fastboot tool is not installed on this worker ({exc}); "
            "install it (Debian: apt install fastboot)"
        ) from exc
    except hostcmd.CommandTimeout as exc:
        said = fastboot_says(exc.output) if exc.output.strip() else "nothing"
        if "< waiting for" in exc.output:
            detail = (f"fastboot device {serial} did not answer: '{shown}' was still waiting "
                      f"for it (fastboot said: {said})")  # fmt: skip
        else:
            detail = f"fastboot device {serial} did not finish '{shown}' (fastboot said: {said})"
        if bounded:
            raise InfrastructureError(f"{what}: {detail}, within {limit:g} seconds") from exc
        raise ctx.timeout_error(detail) from exc
    if result.returncode != 0:
        raise error(f"{what}: '{shown}' failed: {fastboot_says(result.output)}")
    return result


def finished_line(output: str) -> str | None:
    """fastboot's ``Finished. Total time: ...`` line (LAVA's ``status`` result)."""
    for line in output.splitlines():
        if "finished" in line.lower():
            return line.strip()
    return None


def device_errors(device: Mapping[str, Any], *, deploy: bool = False) -> list[str]:
    """What a device dictionary lacks for fastboot (LAVA's checks, same words)."""
    errors = []
    if deploy:
        connections = ((device.get("actions") or {}).get("deploy") or {}).get("connections")
        if not isinstance(connections, Mapping) or "fastboot" not in connections:
            errors.append("Device not configured to support fastboot deployment connections.")
        if "flash_cmds_order" not in device:
            errors.append("device flash commands order missing")
        elif not isinstance(device["flash_cmds_order"], list):
            errors.append("device flash commands order is not a list")
    if "fastboot_serial_number" not in device:
        errors.append("device fastboot serial number missing")
    elif str(device["fastboot_serial_number"]) == UNSET_SERIAL:
        if device.get("fastboot_auto_detection", False):
            errors.append(
                "fastboot_auto_detection is not supported by this dispatcher: "
                "set the device's fastboot_serial_number"
            )
        else:
            errors.append("device fastboot serial number unset")
    if "fastboot_options" not in device:
        errors.append("device fastboot options missing")
    elif not isinstance(device["fastboot_options"], list):
        errors.append("device fastboot options is not a list")
    return errors


def boot_sequence(device: Mapping[str, Any]) -> Any:
    """The device's ``actions.boot.methods.fastboot``: LAVA's fastboot boot sequence."""
    methods = ((device.get("actions") or {}).get("boot") or {}).get("methods") or {}
    return methods.get("fastboot")


class FastbootCommandAction(Action):
    """An action that talks to the device with fastboot. (The device dictionary is
    checked once per block, by fastboot-flash-order-action and fastboot-boot, not
    by each of these: one gap, one error.)"""

    timeout_exception = InfrastructureError


# -- actions ----------------------------------------------------------------------------


class WaitFastbootDevice(FastbootCommandAction):
    """Wait until the device answers over fastboot (LAVA waits for its udev event)."""

    name = "wait-device-boardid"
    description = "wait for udev device with board ID"
    summary = "wait for udev device with board ID"

    def run(self, ctx: RunContext) -> None:
        serial = fastboot_serial(self.settings.device)
        info = self.settings.device.get("device_info")
        first = info[0] if isinstance(info, list) and info else None
        if isinstance(first, Mapping) and first.get("wait_device_board_id", True) is False:
            ctx.logger.debug(f"not waiting for {serial}: device_info says so")
            return
        ctx.logger.debug(f"Waiting for fastboot device {serial}")
        result = run_fastboot(ctx, self, ["getvar", "product"], what=f"asking {serial} its product",
                              error=InfrastructureError)  # fmt: skip
        product = ""
        for line in result.output.splitlines():
            if line.startswith("product:"):
                product = line.partition(":")[2].strip()
        self.results = {"board_id": serial, "product": product}


class EnterFastbootAction(FastbootCommandAction):
    """A device without hard_reset: if it is in fastboot mode, restart its bootloader."""

    name = "enter-fastboot-action"
    description = "enter fastboot bootloader"
    summary = "enter fastboot"

    def run(self, ctx: RunContext) -> None:
        serial = fastboot_serial(self.settings.device)
        if is_network_serial(serial):
            # `fastboot devices` lists USB devices only: ask the device itself, briefly
            try:
                run_fastboot(ctx, self, ["getvar", "product"], what=f"probing {serial}",
                             error=InfrastructureError, timeout=PROBE_TIMEOUT)  # fmt: skip
                present = True
            except FastbootMissing:
                raise
            except InfrastructureError:
                present = False
        else:
            listed = run_fastboot(ctx, self, ["devices"], what="listing fastboot devices",
                                  error=InfrastructureError)  # fmt: skip
            present = any(line.split()[:1] == [serial] for line in listed.output.splitlines())
        if not present:
            ctx.logger.info(f"{serial} is not in fastboot mode (adb is not used to put it there)")
            return
        result = run_fastboot(ctx, self, ["reboot-bootloader"], what="Unable to enter fastboot",
                              error=InfrastructureError)  # fmt: skip
        self.results = {"status": finished_line(result.output) or "rebooted to the bootloader"}


class FastbootFlashOrderAction(FastbootCommandAction):
    name = "fastboot-flash-order-action"
    description = "Determine support for each flash operation"
    summary = "Handle reset and options for each flash url."

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        images = parameters.get("images") or {}
        for partition in flash_order(self.settings.device, images):
            pipeline.add_action(WaitFastbootDevice())
            pipeline.add_action(FastbootFlashAction(partition))
            reboot = (images[partition] or {}).get("reboot")
            if reboot == "fastboot-reboot":
                pipeline.add_action(FastbootReboot())
            elif reboot == "fastboot-reboot-bootloader":
                pipeline.add_action(FastbootRebootBootloader())
            elif reboot == "fastboot-reboot-fastboot":
                pipeline.add_action(FastbootRebootFastboot())
            elif reboot == "hard-reset":
                pipeline.add_action(PDUReboot())

    def validate(self) -> None:
        self.errors.extend(device_errors(self.settings.device, deploy=True))


def flash_order(device: Mapping[str, Any], images: Mapping[str, Any]) -> list[str]:
    """The device's ``flash_cmds_order`` first, then the job's other images in job order."""
    order = [str(name) for name in device.get("flash_cmds_order") or [] if name in images]
    return order + [name for name in images if name not in order]


class FastbootFlashAction(FastbootCommandAction):
    name = "fastboot-flash-action"
    description = "Run a specified flash command"
    summary = "Execute fastboot flash command"

    def __init__(self, partition: str) -> None:
        super().__init__()
        self.partition = partition

    def run(self, ctx: RunContext) -> None:
        space = ctx.data(self.namespace)
        path = space.get(DOWNLOADED, label=self.partition, default=None)
        if path is None:
            ctx.logger.debug(f"no image downloaded for {self.partition}")
            return
        sequence = boot_sequence(self.settings.device)
        if self.partition == "boot" and isinstance(sequence, list) and "no-flash-boot" in sequence:
            ctx.logger.info(
                "not flashing boot: the device boots it with 'fastboot boot' (no-flash-boot)"
            )
            return
        if path.is_dir():
            raise JobError(f"images.{self.partition}: an unpacked archive cannot be flashed")
        size = path.stat().st_size
        ctx.logger.info(f"Handling {self.partition}: {path.name} ({size} bytes)")
        result = run_fastboot(ctx, self, ["flash", self.partition, str(path)],
                              what=f"flashing partition '{self.partition}'")  # fmt: skip
        self.results = {"label": self.partition, "size": size,
                        "status": finished_line(result.output) or "flashed"}  # fmt: skip


class FastbootReboot(FastbootCommandAction):
    """``fastboot reboot``: between flashes, and the boot sequence's ``reboot``."""

    name = "fastboot-reboot"
    description = "Reset a device between flash operations using fastboot reboot."
    summary = "execute a reboot using fastboot"
    args: tuple[str, ...] = ("reboot",)
    what = "Unable to fastboot reboot"

    def run(self, ctx: RunContext) -> None:
        ctx.logger.info(f"fastboot {' '.join(self.args)}")
        result = run_fastboot(ctx, self, list(self.args), what=self.what)
        self.results = {"status": finished_line(result.output) or "rebooted"}


class FastbootRebootBootloader(FastbootReboot):
    name = "fastboot-reboot-bootloader"
    description = "Reset a device between flash operations using fastboot reboot-bootloader."
    summary = "execute a reboot to bootloader using fastboot"
    args = ("reboot-bootloader",)
    what = "Unable to reboot to the bootloader"


class FastbootRebootFastboot(FastbootReboot):
    name = "fastboot-reboot-fastboot"
    description = "Reset a device between flash operations using fastboot reboot fastboot."
    summary = "execute a reboot to fastbootd using fastboot"
    args = ("reboot", "fastboot")
    what = "Unable to reboot to fastbootd"


class FastbootAction(Action):
    name = "fastboot-deploy"
    description = "download files and deploy using fastboot"
    summary = "fastboot deployment"
    section = "deploy"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        if needs_overlay(self.settings, str(parameters.get("namespace") or "common")):
            pipeline.add_action(OverlayAction())
        for partition, image in (parameters.get("images") or {}).items():
            pipeline.add_action(DownloaderAction(partition, image or {}))
        add_enter_fastboot(self, pipeline, deploy=True)
        pipeline.add_action(FastbootFlashOrderAction())

    def validate(self) -> None:
        overlay = needs_overlay(self.settings, self.namespace)
        for partition, image in (self.parameters.get("images") or {}).items():
            if overlay and (image or {}).get("apply-overlay"):
                self.errors.append(
                    f"images.{partition}.apply-overlay is not supported by this dispatcher: "
                    "give the boot block a transfer_overlay to deliver the tests"
                )

    def run(self, ctx: RunContext) -> None:
        if self.parameters.get("docker"):
            ctx.logger.warning("docker: ignored, fastboot runs on the worker itself")
        super().run(ctx)


def add_enter_fastboot(action: Action, pipeline: Any, *, deploy: bool) -> None:
    """Bring the board to fastboot mode: power-cycle it (with its console open) when
    it has hard_reset, else ask it to restart its bootloader (LAVA's two paths).

    (Before enter-fastboot-action at boot, LAVA waits for the board's udev
    event, which an adb device also raises; waiting for fastboot answers
    there would wait for ever on a board running its OS, so we do not.)"""
    if device_commands(action, "hard_reset"):
        pipeline.add_action(ConnectDevice())
        if deploy:
            pipeline.add_action(PrePower())
        pipeline.add_action(ResetDevice())
    else:
        pipeline.add_action(EnterFastbootAction())


class Fastboot(Strategy):
    section = "deploy"
    name = "fastboot"

    @classmethod
    def accepts(cls, device: Device, parameters: Mapping[str, Any]) -> tuple[bool, str]:
        accepted, why = super().accepts(device, parameters)
        if not accepted:
            return accepted, why
        if (
            not device.get("fastboot_auto_detection", False)
            and "fastboot_serial_number" not in device
        ):
            return False, '"fastboot_serial_number" is not in the device configuration'
        if "fastboot_options" not in device:
            return False, '"fastboot_options" is not in the device configuration'
        return True, ""

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return FastbootAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Fastboot]
