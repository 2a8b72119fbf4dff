"""``boot: method: qemu``: start QEMU with the deployed images; its serial console is the console.

The command is built as LAVA builds it: the device's
``actions.boot.methods.qemu.parameters`` ``command``, each of ``options``
and ``extra_options`` (an option may hold several words: ``-net nic -net
user``), then every deployed image's ``image_arg`` with ``{label}`` replaced
by the downloaded file, and the guest disk when the overlay is on one. It is
an argument list run without any shell: each option is split into words
first and placeholders are replaced inside single words, so a job value can
never become extra arguments. Ending the job ends QEMU at once (SIGTERM,
then SIGKILL by PID); there is no listening for a shutdown.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.boot.transfer import OverlayUnpack
from lava_dispatcher.actions.connection import CONNECTION, open_connection
from lava_dispatcher.actions.deploy.download import DOWNLOADED
from lava_dispatcher.actions.login import AutoLoginAction, ExpectShellSession, prompts_of
from lava_dispatcher.actions.overlay_data import GUEST_DISK, IMAGE_ARGS
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.errors import ConfigurationError, InfrastructureError, JobError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext
from lava_dispatcher.plugins import hookimpl


def split_words(value: Any) -> list[str]:
    """A device option (a string of words, or a list of them) as argv words."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [word for item in value for word in split_words(item)]
    return shlex.split(str(value))


def substitute(word: str, substitutions: Mapping[str, str]) -> str:
    for placeholder, value in substitutions.items():
        word = word.replace(placeholder, value)
    return word


class BootQEMUImageAction(RetryAction):
    name = "boot-image-retry"
    description = "boot image with retry"
    summary = "boot with retry"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(BootQemuRetry())
        if prompts_of(parameters) or parameters.get("auto_login"):
            pipeline.add_action(AutoLoginAction())
            pipeline.add_action(ExpectShellSession())
            if "transfer_overlay" in parameters:
                pipeline.add_action(OverlayUnpack())


class BootQemuRetry(RetryAction):
    name = "boot-qemu-image"
    description = "boot image using QEMU command line"
    summary = "boot QEMU image"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        self.new_pipeline(parameters).add_action(CallQemuAction())


class CallQemuAction(Action):
    name = "execute-qemu"
    description = "call qemu to boot the image"
    summary = "execute qemu to boot the image"
    timeout_exception = InfrastructureError
    provides = (CONNECTION,)

    def qemu_parameters(self) -> Mapping[str, Any]:
        methods = (self.settings.device.get("actions") or {}).get("boot", {}).get("methods", {})
        return ((methods.get("qemu") or {}).get("parameters")) or {}

    def validate(self) -> None:
        arch = (self.settings.parameters.get("context") or {}).get("arch")
        available = self.settings.device.get("available_architectures")
        if arch is None:
            self.errors.append("Missing 'arch' in job context (LAVA needs it for QEMU jobs)")
        elif available is not None and arch not in available:
            self.errors.append(
                f"context.arch {arch!r} is not one of the device's available_architectures ({', '.join(map(str, available))})"
            )
        params = self.qemu_parameters()
        command = params.get("command")
        if not command:
            self.errors.append("the device has no actions.boot.methods.qemu.parameters.command")
        elif shutil.which(str(command)) is None:
            self.errors.append(f"{command} is not installed on the dispatcher")
        if "-enable-kvm" in split_words(params.get("options")) and not os.path.exists("/dev/kvm"):
            self.errors.append("the device's options ask for -enable-kvm but /dev/kvm is missing")
        if not prompts_of(self.parameters) and any(
            s.has_shell(p) for s, p in self.settings.test_info.get(self.namespace, [])
        ):
            self.errors.append("Unable to identify boot prompts from job definition.")

    def command(self, ctx: RunContext) -> list[str]:
        params = self.qemu_parameters()
        argv = [str(params["command"])]
        argv += split_words(params.get("options"))
        argv += split_words(params.get("extra_options"))
        argv += split_words((self.settings.parameters.get("context") or {}).get("extra_options"))
        space = ctx.data(self.namespace)
        substitutions: dict[str, str] = {}
        image_words: list[str] = []
        for label in space.labels(IMAGE_ARGS):
            path = space.get(DOWNLOADED, label=label, default=None)
            if path is None:
                ctx.logger.warning(f"Missing image for {label}")
                continue
            substitutions["{" + label + "}"] = str(path)
            image_words += split_words(space.get(IMAGE_ARGS, label=label))
        argv += [substitute(word, substitutions) for word in image_words]
        guest = space.get(GUEST_DISK, default=None)
        if guest is not None:
            settings = (
                ((self.settings.device.get("actions") or {}).get("deploy", {}).get("methods", {}).get("image") or {})
                .get("parameters", {})
                .get("guest", {})
            )
            interface = settings.get("interface", "virtio")
            driveid = settings.get("driveid", "lavatest")
            argv += ["-drive", f"format=raw,file={guest},media=disk,if={interface},id={driveid}"]
        return argv

    def run(self, ctx: RunContext) -> None:
        space = ctx.data(self.namespace)
        previous = space.pop(CONNECTION)
        if previous is not None:
            previous.close()  # a retry starts a new QEMU
        argv = self.command(ctx)
        ctx.logger.info(f"Boot command: {shlex.join(argv)}")
        prompt = self.get_constant("default-shell-prompt")
        try:
            connection = open_connection(
                ctx, self.namespace, "qemu", {"connect": argv}, [], prompts=[prompt] if prompt else []
            )
        except ConfigurationError as exc:
            raise InfrastructureError(f"cannot start QEMU: {exc}") from exc
        self.results = {"pid": getattr(connection.console.transport, "pid", None)}


class Qemu(Strategy):
    section = "boot"
    name = "qemu"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        if parameters.get("media", "tmpfs") != "tmpfs":
            raise JobError(f"boot method qemu: media {parameters.get('media')!r} is not supported; expected tmpfs")
        return BootQEMUImageAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Qemu]
