"""Talking to a bootloader over the console: substitutions, interrupt, commands.

Shared by u-boot, bootloader, and the other interrupt-and-commands methods
(grub, ipxe, barebox, depthcharge), each with its device constants
(``constants.<method>``: interrupt-prompt, interrupt-character,
interrupt_ctrl_list, interrupt-newline, final-message, error-messages) and
its method parameters (``actions.boot.methods.<method>.parameters``:
bootloader_prompt, interrupt_prompt, interrupt_char, needs_interrupt...).

Where we do better than LAVA, on real boards:

- The interrupt is sent again, with a bounded back-off, until the
  bootloader prompt appears: a key lost on the line or ignored by the board
  does not let the board boot on. A board that boots on anyway fails at
  once (InfrastructureError, the boot retried), not at a timeout.
- With ``reset: false`` a bootloader already sitting at its prompt is
  recognised (a line separator is sent and the prompt looked for).
- Every command line is checked against the bootloader's echo before it is
  entered: a character dropped on the way in is caught, the line cancelled
  (Ctrl-C) and typed again, instead of the bootloader running a mangled
  command. (``echo_check: false`` in the method parameters turns it off for
  a bootloader that does not echo.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from lava_dispatcher.actions.connection import current_connection, expect
from lava_dispatcher.actions.deploy.download import DOWNLOADED
from lava_dispatcher.actions.deploy.overlay import dispatcher_ip
from lava_dispatcher.actions.deploy.tftp import boot_command_for, deploy_parameters
from lava_dispatcher.actions.overlay_data import BOOT_COMMAND, BOOT_FILE, NFS_ROOT, TFTP_SUFFIX
from lava_dispatcher.console.expect import ExpectTimeout
from lava_dispatcher.data import Key
from lava_dispatcher.errors import InfrastructureError, JobError
from lava_dispatcher.pipeline import Action, RunContext

#: the bootloader commands of a method once substituted (label: the method)
BOOT_COMMANDS: Key[list] = Key(
    "bootloader-commands", list, "substituted bootloader commands, by method"
)
#: set by the interrupt when it leaves the bootloader at its prompt
AT_PROMPT: Key[bool] = Key("at-bootloader-prompt", bool, "the bootloader is at its prompt")

#: first wait for the bootloader prompt after an interrupt, then doubled up to the cap
INTERRUPT_FIRST_WAIT = 0.25
INTERRUPT_MAX_WAIT = 2.0
#: how often a command line is typed again when its echo does not match
ECHO_ATTEMPTS = 3
#: what a kernel prints when it starts: the interrupt came too late
KERNEL_STARTED = ("Starting kernel", "Linux version [0-9]")


def method_parameters(action: Action, method: str) -> Mapping[str, Any]:
    methods = ((action.settings.device.get("actions") or {}).get("boot") or {}).get("methods") or {}
    return (methods.get(method) or {}).get("parameters") or {}


def substitute(commands: Sequence[str], substitutions: Mapping[str, str | None]) -> list[str]:
    """Replace each ``{KEY}``; a line naming a key without a value is dropped (as LAVA does)."""
    result = []
    for line in commands:
        keep = True
        for key, value in substitutions.items():
            if key not in line:
                continue
            if value:
                line = line.replace(key, value)
            else:
                keep = False
                break
        if keep:
            result.append(line)
    return result


class BootloaderCommandOverlay(Action):
    """The method's commands (a named stanza of the device, or the job's own list)
    with the job's values put in: files, addresses, server address..."""

    name = "bootloader-overlay"
    description = "substitute job data into bootloader command list"
    summary = "replace placeholders with job data"

    def __init__(self, method: str | None = None) -> None:
        super().__init__()
        self.method = method or ""
        self.commands: list[str] = []

    def validate(self) -> None:
        method = self.method or str(self.parameters.get("method"))
        self.method = method
        methods = ((self.settings.device.get("actions") or {}).get("boot") or {}).get(
            "methods"
        ) or {}
        if method not in methods:
            self.errors.append(f"the device has no {method!r} boot method")
            return
        wanted = self.parameters.get("commands")
        if self.parameters.get("method") == "bootloader":
            commands = wanted or []
        elif isinstance(wanted, list):
            commands = wanted
        elif wanted is None:
            self.errors.append(
                "missing commands: name one of the device's command sets or give a list"
            )
            return
        else:
            stanza = (
                methods[method].get(str(wanted)) if isinstance(methods[method], Mapping) else None
            )
            if not isinstance(stanza, Mapping):
                known = [
                    k
                    for k, v in (methods[method] or {}).items()
                    if isinstance(v, Mapping) and "commands" in v
                ]
                self.errors.append(
                    f"commands: {wanted!r} is not a command set of the device's {method} method; "
                    f"expected one of {', '.join(repr(k) for k in known) or '(none)'}"
                )
                return
            commands = stanza.get("commands") or []
            if not commands:
                self.errors.append(f"the device's {method}.{wanted} has no commands")
        for command in commands:
            if not isinstance(command, str):
                self.errors.append(f"boot command {command!r} is not a string")
        self.commands = [str(c) for c in commands]
        lava_mac = method_parameters(self, method).get("lava_mac")
        if lava_mac and not re.fullmatch(r"([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}", str(lava_mac)):
            self.errors.append(f"lava_mac: {lava_mac!r} is not a valid MAC address")

    def substitutions(self, ctx: RunContext) -> dict[str, str | None]:
        space = ctx.data(self.namespace)
        server = dispatcher_ip(ctx.job.dispatcher)

        def file(label: str) -> str | None:
            return space.get(BOOT_FILE, label=label, default=None)

        ramdisk = file("ramdisk")
        subs: dict[str, str | None] = {
            "{SERVER_IP}": server,
            "{LAVA_DISPATCHER_IP}": server,
            "{LAVA_JOB_ID}": str(ctx.job.job_id),
            "{KERNEL}": file("kernel"),
            "{RAMDISK}": ramdisk,
            "{INITRD}": ramdisk,
            "{DTB}": file("dtb"),
            "{TEE}": file("tee"),
            "{PRESEED_CONFIG}": file("preseed"),
            "{LAVA_MAC}": method_parameters(self, self.method).get("lava_mac"),
            "{ROOT}": None,
            "{ROOT_PART}": None,
            "{APPLY_DTBO_COMMANDS}": None,
        }
        bootcommand = space.get(BOOT_COMMAND, default=None) or ""
        if not bootcommand and self.parameters.get("type"):
            # LAVA's deprecated boot.type, used when the deploy gave no kernel type
            ctx.logger.warning(
                "boot.type is deprecated: give the kernel's type in the deploy block"
            )
            bootcommand = boot_command_for(
                str(self.parameters["type"]), self.settings.device.get("parameters") or {}
            )
        if bootcommand:
            addresses = (self.settings.device.get("parameters") or {}).get(bootcommand) or {}
            if not addresses.get("kernel"):
                raise JobError(
                    f"the device gives no load addresses for {bootcommand} (parameters.{bootcommand})"
                )
            kernel_addr, dtb_addr = str(addresses.get("kernel")), str(addresses.get("dtb") or "")
            ramdisk_addr = str(addresses.get("ramdisk") or "")
            tee_addr = str(addresses.get("tee") or "") or None
            add_header = deploy_parameters(self).get("add_header")
            boot_ramdisk = "-"
            if ramdisk:
                if (
                    self.method != "u-boot"
                    or add_header == "u-boot"
                    or _has_uimage_header(ctx, self)
                ):
                    boot_ramdisk = ramdisk_addr
                elif add_header == "raw":
                    boot_ramdisk = f"{ramdisk_addr}:${{initrd_size}}"
                else:
                    ctx.logger.debug("No u-boot header, not passing ramdisk to bootX cmd")
            first = tee_addr if file("tee") and tee_addr else kernel_addr
            subs["{BOOTX}"] = f"{bootcommand} {first} {boot_ramdisk} {dtb_addr}".rstrip()
            subs["{KERNEL_ADDR}"] = kernel_addr
            subs["{DTB_ADDR}"] = dtb_addr or None
            subs["{RAMDISK_ADDR}"] = ramdisk_addr if ramdisk else "-"
            subs["{TEE_ADDR}"] = tee_addr
            self.results = {
                "kernel_addr": kernel_addr,
                "dtb_addr": dtb_addr,
                "ramdisk_addr": ramdisk_addr,
            }
        nfs_path = space.get(NFS_ROOT, label="path", default=None)
        if nfs_path:
            subs["{NFSROOTFS}"] = nfs_path
            subs["{NFS_SERVER_IP}"] = space.get(NFS_ROOT, label="server", default=None) or server
        suffix = space.get(TFTP_SUFFIX, default=None)
        if suffix:
            subs["{EXTRA_FILES_DIR}"] = f"{suffix}/extra_files"
        return subs

    def run(self, ctx: RunContext) -> None:
        subs = self.substitutions(ctx)
        if self.commands and any("{BOOTX}" in c for c in self.commands) and "{BOOTX}" not in subs:
            raise JobError(
                "the boot commands use {BOOTX} but the kernel's type is not known: "
                "give the deploy's kernel a type (image, zimage or uimage)"
            )
        commands = substitute(self.commands, subs)
        ctx.data(self.namespace).set(BOOT_COMMANDS, commands, label=self.method)
        ctx.logger.debug("substitutions:")
        for key, value in subs.items():
            ctx.logger.debug(f"- {key}: {value}")
        ctx.logger.info("Parsed boot commands:")
        for command in commands:
            ctx.logger.info(f"- {command}")


def _has_uimage_header(ctx: RunContext, action: Action) -> bool:
    """Whether the deployed ramdisk starts with a legacy U-Boot header (the job's own)."""
    from lava_dispatcher import uimage  # off the start-up path

    path = ctx.data(action.namespace).get(DOWNLOADED, label="ramdisk", default=None)
    try:
        return path is not None and uimage.file_has_header(path)
    except OSError:
        return False


class _BootloaderSettings:
    """One method's bootloader knobs, from its constants and parameters."""

    def __init__(self, action: Action, method: str) -> None:
        params = method_parameters(action, method)
        self.params = params
        self.prompt = str(params.get("bootloader_prompt") or "")
        self.interrupt_prompt = str(
            params.get("interrupt_prompt")
            or action.get_constant("interrupt-prompt", prefix=method)
            or ""
        )
        self.needs_interrupt = params.get("needs_interrupt", True) is not False
        newline = action.get_constant("interrupt-newline", prefix=method)
        self.interrupt_newline = True if newline is None else bool(newline)
        char = params.get("interrupt_char")
        if char is None:
            char = action.get_constant("interrupt-character", prefix=method)
        self.interrupt_char = "" if char is None or method == "ipxe" else str(char)
        ctrl = params.get("interrupt_ctrl_list")
        if ctrl is None:
            ctrl = action.get_constant("interrupt_ctrl_list", prefix=method)
        self.ctrl_list = [str(c) for c in (ctrl or [])]
        self.errors = [str(e) for e in (action.get_constant("error-messages", prefix=method) or [])]
        self.final_message = action.get_constant("final-message", prefix=method)
        job_final = (action.parameters.get("parameters") or {}).get("bootloader-final-message")
        if job_final:
            self.final_message = job_final
        self.echo_check = params.get("echo_check", True) is not False


class BootloaderInterruptAction(Action):
    """Stop the bootloader's autoboot and leave it at its prompt."""

    name = "bootloader-interrupt"
    description = "interrupt bootloader"
    summary = "interrupt bootloader to get an interactive shell"
    timeout_exception = InfrastructureError
    section = "boot"

    def __init__(self, method: str | None = None) -> None:
        super().__init__()
        self.method = method or ""

    def validate(self) -> None:
        self.method = self.method or str(self.parameters.get("method"))
        settings = _BootloaderSettings(self, self.method)
        if not settings.prompt:
            self.errors.append(
                f"Missing bootloader prompt for device (actions.boot.methods.{self.method}.parameters.bootloader_prompt)"
            )
        if settings.needs_interrupt and not settings.interrupt_prompt:
            self.errors.append(f"Missing interrupt prompt for the {self.method} bootloader")

    def run(self, ctx: RunContext) -> None:
        settings = _BootloaderSettings(self, self.method)
        connection = current_connection(ctx, self)
        space = ctx.data(self.namespace)
        space.set(AT_PROMPT, False)
        if not settings.needs_interrupt:
            ctx.logger.info("Not interrupting bootloader, waiting for bootloader prompt")
            expect(ctx, self, connection, [settings.prompt])
            space.set(AT_PROMPT, True)
            return
        if self.parameters.get("reset", True) is False and self._already_at_prompt(
            ctx, connection, settings
        ):
            ctx.logger.info("the bootloader is already at its prompt")
            space.set(AT_PROMPT, True)
            return
        expect(ctx, self, connection, [settings.interrupt_prompt])
        wait = INTERRUPT_FIRST_WAIT
        attempts = 0
        while True:
            attempts += 1
            self._send_interrupt(connection, settings)
            try:
                found = connection.shell.expect(
                    [settings.prompt, *KERNEL_STARTED], timeout=min(wait, max(ctx.remaining(), 0.0))
                )
            except ExpectTimeout:
                if ctx.remaining() <= 0:
                    raise ctx.timeout_error(
                        "waiting for the bootloader prompt after the interrupt"
                    ) from None
                ctx.logger.debug(
                    f"no bootloader prompt {wait:g}s after interrupt {attempts}: interrupting again"
                )
                wait = min(wait * 2, INTERRUPT_MAX_WAIT)
                continue
            if found.index > 0:
                raise InfrastructureError(
                    f"the bootloader was not interrupted: it went on booting ({found.after.strip()!r}) "
                    f"after {attempts} interrupt(s)"
                )
            break
        space.set(AT_PROMPT, True)
        if attempts > 1:
            ctx.logger.warning(f"the bootloader needed {attempts} interrupts")
        self.results = {"interrupts": attempts}

    @staticmethod
    def _send_interrupt(connection: Any, settings: _BootloaderSettings) -> None:
        if settings.ctrl_list:
            for char in settings.ctrl_list:
                connection.shell.sendcontrol(char)
        elif settings.interrupt_newline:
            connection.shell.sendline(settings.interrupt_char)
        else:
            connection.shell.send(settings.interrupt_char)

    def _already_at_prompt(
        self, ctx: RunContext, connection: Any, settings: _BootloaderSettings
    ) -> bool:
        connection.shell.sendline("")
        try:
            connection.shell.expect([settings.prompt], timeout=min(1.0, max(ctx.remaining(), 0.0)))
        except ExpectTimeout:
            return False
        return True


class BootloaderCommandsAction(Action):
    """Type the substituted commands, one per bootloader prompt; end on the final message."""

    name = "bootloader-commands"
    description = "send commands to bootloader"
    summary = "interactive bootloader"
    timeout_exception = InfrastructureError
    section = "boot"
    default_timeout = 180.0

    def __init__(self, method: str | None = None, expect_final: bool = True) -> None:
        super().__init__()
        self.method = method or ""
        self.expect_final = expect_final

    def validate(self) -> None:
        self.method = self.method or str(self.parameters.get("method"))

    def run(self, ctx: RunContext) -> None:
        settings = _BootloaderSettings(self, self.method)
        connection = current_connection(ctx, self)
        space = ctx.data(self.namespace)
        commands = space.get(BOOT_COMMANDS, label=self.method, default=None)
        if commands is None:
            raise JobError(f"Bootloader commands for {self.method!r} method are not defined")
        if not space.get(AT_PROMPT, default=False):
            expect(ctx, self, connection, [settings.prompt])
        space.set(AT_PROMPT, False)
        for index, line in enumerate(commands):
            last = index + 1 == len(commands)
            self._type(ctx, connection, settings, line)
            if last and (not settings.final_message or not self.expect_final):
                break
            wanted = [settings.final_message] if last else [settings.prompt]
            found = expect(ctx, self, connection, [*wanted, *settings.errors])
            if found.index > 0:
                raise InfrastructureError(
                    f"matched a bootloader error message: {settings.errors[found.index - 1]!r} "
                    f"(after {line!r}: {found.after.strip()!r})"
                )
        self.results = {"commands": len(commands)}

    def _type(
        self, ctx: RunContext, connection: Any, settings: _BootloaderSettings, line: str
    ) -> None:
        """Type ``line``, check the echo, then enter it."""
        shell = connection.shell
        if not settings.echo_check or not line:
            shell.sendline(line, delay=self.character_delay)
            return
        echo = re.compile(re.escape(line))
        for attempt in range(1, ECHO_ATTEMPTS + 1):
            shell.send(line, delay=self.character_delay)
            limit = 2.0 + len(line) * self.character_delay * 2
            try:
                shell.expect([echo], timeout=min(limit, max(ctx.remaining(), 0.0)))
            except ExpectTimeout as exc:
                tail = exc.tail.replace("\r", "").split("\n")[-1][-200:]
                ctx.logger.warning(
                    f"the bootloader echoed {tail!r} for {line!r} (attempt {attempt}): cancelling the line"
                )
                shell.sendcontrol("C")
                if settings.prompt:
                    expect(ctx, self, connection, [settings.prompt], timeout=10)
                continue
            shell.sendline("", delay=0)
            return
        raise InfrastructureError(
            f"the bootloader did not echo {line!r} as typed in {ECHO_ATTEMPTS} attempts: "
            "characters are being lost on the console"
        )
