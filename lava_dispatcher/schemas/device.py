"""The device dictionary: a rendered LAVA ``device.yaml`` (plus our extensions).

Strictness is chosen by what a typo would cost:

* **strict** (an unknown key is refused): the top level, ``commands`` and its
  connections and user commands, ``character_delays``, ``timeouts``,
  ``actions`` and its ``deploy``/``boot``/``test`` sections.  A misspelt key
  there (``comands``, ``hard_rest``) would silently leave a lab without its
  console or its power control.
* **typo-guarded** (unknown keys accepted unless they look like a misspelling
  of a known key): ``constants`` and its per-bootloader blocks, and
  ``parameters``.  Admins' own templates add keys there and the dispatcher
  looks them up by name (``get_constant``), so new names must pass, while
  ``kernel-start-mesage`` must not.
* **open**: the settings of each deploy/boot method, ``device_info`` and
  friends, ``environment``, ``interfaces``: their shape is the business of
  the method or of the test that reads them.

Everything LAVA's device templates render (checked against every template of
LAVA 2026.07 and the device dictionaries of its test suite) is accepted,
including the odd shapes: empty values, ``boot_retry:`` null, docker
``options: [null]``, strings with newlines, a method given as a list.

Our extensions: a connection under ``commands.connections.<name>`` may say
``serial: /dev/ttyUSB0`` (or a pyserial URL such as ``rfc2217://host:port``)
and ``baudrate: 115200`` instead of ``connect``; ``device_type`` names the
device type for the worker service.
"""

from __future__ import annotations

import re
from typing import Any

import voluptuous as vol
from voluptuous import Optional, Required

from lava_dispatcher.errors import InvalidDeviceError
from lava_dispatcher.schemas.common import COMMANDS, STRINGS, TIMEOUT
from lava_dispatcher.schemas.errors import make_error
from lava_dispatcher.schemas.validators import (
    Anything,
    Bool,
    Conflict,
    Either,
    Int,
    Keyed,
    ListOf,
    Map,
    Mismatch,
    MissingKey,
    Nullable,
    OneOf,
    Scalar,
    Str,
    Validator,
)

BOOTLOADERS = ("u-boot", "barebox", "grub", "grub-efi", "ipxe", "depthcharge")

_SERIAL_URL = re.compile(r"[a-z][a-z0-9+.-]*://.+")


class SerialPort(Validator):
    expected = (
        "a serial device path such as /dev/ttyUSB0 or a pyserial URL such as rfc2217://host:port"
    )

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or not (
            (value.startswith("/") and len(value) > 1) or _SERIAL_URL.fullmatch(value)
        ):
            raise Mismatch(self.expected)
        return value


def _connection_rules(data: dict[Any, Any]) -> None:
    if "connect" in data and "serial" in data:
        raise Conflict(
            "'serial' cannot be used together with 'connect'",
            "either 'connect: <command>' or 'serial: <port>'",
            ["serial"],
        )
    if "connect" not in data and "serial" not in data:
        raise MissingKey(
            "the command that opens the console, such as 'telnet ser2net 7001'"
            " (or 'serial: /dev/ttyUSB0')",
            ["connect"],
        )
    if "baudrate" in data and "serial" not in data:
        raise Conflict(
            "'baudrate' is only used with 'serial'",
            "'serial: <port>' alongside 'baudrate'",
            ["baudrate"],
        )


CONNECTION = Map(
    {
        Optional("connect"): Str(nonempty=True, expected="a command such as 'telnet ser2net 7001'"),
        Optional("serial"): SerialPort(),
        Optional("baudrate"): Int(1, expected="a baud rate such as 115200"),
        Optional("tags"): ListOf(Str(), expected="a list of tags such as [primary, telnet]"),
    },
    expected="a connection such as {connect: 'telnet ser2net 7001', tags: [primary, telnet]}",
    checks=[_connection_rules],
)

USER_COMMAND = Map(
    {Required("do"): COMMANDS, Optional("undo"): COMMANDS},
    expected="a user command such as {do: 'relay on 3', undo: 'relay off 3'}",
)

COMMANDS_BLOCK = Map(
    {
        Optional("connect"): Str(nonempty=True, expected="a command such as 'telnet ser2net 7001'"),
        Optional("connections"): Keyed(
            CONNECTION,
            expected="a mapping of connection names to {connect: ..., tags: [...]}",
            key_expected="a connection name (a string)",
        ),
        Optional("must_use_connection"): Bool(),
        Optional("hard_reset"): COMMANDS,
        Optional("soft_reboot"): COMMANDS,
        Optional("power_on"): COMMANDS,
        Optional("power_off"): COMMANDS,
        Optional("pre_power_command"): COMMANDS,
        Optional("pre_os_command"): COMMANDS,
        Optional("recovery_mode"): COMMANDS,
        Optional("recovery_exit"): COMMANDS,
        Optional("users"): Keyed(
            USER_COMMAND,
            expected="a mapping of command names to {do: ..., undo: ...}",
            key_expected="a command name (a string)",
        ),
    },
    expected="a mapping such as {connect: 'telnet ser2net 7001', power_on: ..., power_off: ...}",
)

TEXT = Str()
MESSAGES = ListOf(Str(), expected="a list of messages (regular expressions)")

BOOTLOADER_CONSTANTS = Map(
    {
        Optional("interrupt-prompt"): TEXT,
        Optional("interrupt-character"): TEXT,
        Optional("interrupt_ctrl_list"): ListOf(
            Str(), expected="a list of control characters such as ['c']"
        ),
        Optional("interrupt-newline"): Bool(),
        Optional("final-message"): TEXT,
        Optional("error-messages"): MESSAGES,
        Optional("dfu-download"): TEXT,
    },
    expected="a mapping such as {interrupt-prompt: 'Hit any key', final-message: 'Starting kernel'}",
    typo_guard=True,
)

CONSTANTS = Map(
    {
        Optional("posix"): Map(
            {
                Optional("lava_test_sh_cmd"): TEXT,
                Optional("lava_test_results_dir"): TEXT,
                Optional("lava_test_shell_file"): TEXT,
            },
            expected="a mapping such as {lava_test_sh_cmd: /bin/sh, lava_test_results_dir: /lava-%s}",
        ),
        **{Optional(name): BOOTLOADER_CONSTANTS for name in BOOTLOADERS},
        Optional("shutdown-message"): TEXT,
        Optional("kernel-start-message"): TEXT,
        Optional("default-shell-prompt"): TEXT,
        Optional("spawn_maxread"): Either(
            Str(), Int(1), expected="a number of bytes such as '4092'"
        ),
        Optional("failure_retry"): Nullable(Int(0)),
        Optional("boot_retry"): Nullable(Int(0)),
    },
    expected="a mapping of constants such as {kernel-start-message: 'Linux version', u-boot: {...}}",
    typo_guard=True,
)

ADDRESS = Either(Str(), Int(0), expected="a load address such as '0x82000000'")
LOAD_ADDRESSES = Map(
    {
        Optional("kernel"): ADDRESS,
        Optional("ramdisk"): ADDRESS,
        Optional("dtb"): ADDRESS,
        Optional("tee"): ADDRESS,
        Optional("dtbo"): ADDRESS,
    },
    expected="load addresses such as {kernel: '0x82000000', ramdisk: '0x83000000', dtb: '0x88000000'}",
)

_MEDIUM = Map(
    {
        Required("uuid"): Str(expected="the /dev/disk/by-id/ name of the medium"),
        Required("device_id"): Either(
            Str(), Int(0), expected="the bootloader's number for the medium"
        ),
        Optional("uboot_interface"): Str(),
        Optional("grub_interface"): Str(),
        Optional("boot_part"): Int(0),
    },
    expected="a medium such as {uuid: usb-SanDisk_Ultra_..., device_id: 0}",
)

MEDIA = Map(
    {
        Optional(kind): Map(
            {Optional("UUID-required"): Bool(), Optional(str): _MEDIUM},
            expected="a mapping of medium labels to {uuid, device_id}",
        )
        for kind in ("sata", "sd", "usb")
    },
    expected="a mapping with 'sata', 'sd' and/or 'usb'",
)

PARAMETERS = Map(
    {
        Optional("pass"): Anything(),
        Optional("allow_test_services"): Bool(),
        Optional("interfaces"): Keyed(
            Anything(), key=Anything(), expected="a mapping of interfaces"
        ),
        Optional("media"): MEDIA,
        **{
            Optional(name): LOAD_ADDRESSES
            for name in ("image", "booti", "uimage", "bootm", "zimage", "bootz")
        },
        Optional("dtb_base_resize"): Int(0),
        Optional("load_address"): ADDRESS,
        Optional("text_offset"): ADDRESS,
    },
    expected="a mapping of device parameters such as {bootz: {kernel: ..., ramdisk: ..., dtb: ...}}",
    typo_guard=True,
)

_OPEN_MAPPING = Nullable(
    Keyed(Anything(), expected="a mapping of names to settings"),
    expected="a mapping of names to settings (or nothing)",
)

DOCKER_TEST_METHOD = Nullable(
    Map(
        {
            Optional("global_options"): ListOf(Anything(), expected="a list of docker options"),
            Optional("options"): ListOf(Anything(), expected="a list of docker options"),
        },
        expected="a mapping such as {global_options: [...], options: [...]}",
    )
)

ACTIONS = Map(
    {
        Required("deploy"): Map(
            {
                Required("methods"): _OPEN_MAPPING,
                Optional("connections"): _OPEN_MAPPING,
                Optional("parameters"): _OPEN_MAPPING,
            },
            expected="a mapping such as {methods: {tftp: null}, connections: {serial: null}}",
        ),
        Required("boot"): Map(
            {
                Required("methods"): _OPEN_MAPPING,
                Optional("connections"): _OPEN_MAPPING,
            },
            expected="a mapping such as {methods: {u-boot: {...}}, connections: {serial: null}}",
        ),
        Optional("test"): Map(
            {
                Optional("methods"): Nullable(
                    Map(
                        {Optional("docker"): DOCKER_TEST_METHOD},
                        extra=Anything(),
                        expected="a mapping of test methods",
                    )
                ),
            },
            expected="a mapping such as {methods: {docker: {options: [...]}}}",
        ),
    },
    expected="a mapping with 'deploy' and 'boot' (each with 'methods')",
)

_BY_NAME = Keyed(
    TIMEOUT,
    expected="a mapping of action names to timeouts, such as {lava-test-shell: {minutes: 3}}",
    key_expected="an action name (a string)",
)

TIMEOUTS = Map(
    {Optional("actions"): _BY_NAME, Optional("connections"): _BY_NAME},
    expected="a mapping such as {actions: {...}, connections: {...}}",
)

CHARACTER_DELAYS = Map(
    {
        Optional("deploy"): Int(0, expected="a delay in milliseconds"),
        Optional("boot"): Int(0, expected="a delay in milliseconds"),
        Optional("test"): Int(0, expected="a delay in milliseconds"),
    },
    expected="a mapping such as {boot: 10, test: 30} (milliseconds)",
)

_INFO = ListOf(
    Keyed(Anything(), key=Anything(), expected="a mapping"),
    expected="a list of mappings such as [{board_id: '0123'}]",
)
_USB_ID = Either(
    Str(),
    Int(0),
    expected="a 4-digit hexadecimal USB id such as '0d28'",
)

DEVICE_FIELDS: dict[Any, Any] = {
    Optional("hostname"): Str(),
    Optional("devicetype"): Str(),
    Optional("device_type"): Str(nonempty=True, expected="a device type name"),
    Optional("character_delays"): CHARACTER_DELAYS,
    Optional("commands"): COMMANDS_BLOCK,
    Optional("constants"): CONSTANTS,
    Optional("parameters"): PARAMETERS,
    Required("actions"): ACTIONS,
    Optional("timeouts"): TIMEOUTS,
    Optional("adb_serial_number"): Str(),
    Optional("fastboot_serial_number"): Str(),
    Optional("fastboot_options"): STRINGS,
    Optional("fastboot_via_uboot"): Bool(),
    Optional("fastboot_auto_detection"): Bool(),
    Optional("flash_cmds_order"): STRINGS,
    Optional("device_info"): _INFO,
    Optional("static_info"): _INFO,
    Optional("storage_info"): _INFO,
    Optional("environment"): Keyed(
        Anything(), key=Anything(), expected="a mapping of variable names to values"
    ),
    Optional("board_id"): Scalar(),
    Optional("board_qdl_id"): Scalar(),
    Optional("usb_vendor_id"): _USB_ID,
    Optional("usb_product_id"): _USB_ID,
    Optional("usb_sleep"): Int(0),
    Optional("usb_filesystem_label"): Str(),
    Optional("usb_serial_driver"): Str(),
    Optional("available_architectures"): STRINGS,
    Optional("uuu_usb_otg_path"): Either(Str(), STRINGS),
    Optional("uuu_usb_otg_path_command"): STRINGS,
    Optional("uuu_corrupt_boot_media_command"): STRINGS,
    # added at run time by the dispatcher (accepted so that a dumped device validates)
    Optional("power_state"): OneOf("on", "off"),
    Optional("dynamic_data"): Keyed(Anything(), key=Anything()),
}

POWER_COMMANDS = ("power_off", "power_on", "hard_reset")


def _ssh_primary_rules(data: dict[Any, Any]) -> None:
    """A device reached over ssh as its primary connection has no power control."""
    methods = data.get("actions", {}).get("deploy", {}).get("methods") or {}
    ssh = methods.get("ssh") if isinstance(methods, dict) else None
    if not isinstance(ssh, dict) or not ssh.get("host"):
        return
    for command in POWER_COMMANDS:
        if command in (data.get("commands") or {}):
            raise Conflict(
                "the device is reached over ssh as its primary connection"
                f" (actions.deploy.methods.ssh.host is {ssh['host']!r})",
                "no power commands (power_on, power_off, hard_reset) on a primary-ssh device",
                ["commands", command],
            )


DEVICE = Map(
    DEVICE_FIELDS,
    expected="a device dictionary: a mapping with constants, parameters, actions and timeouts",
    checks=[_ssh_primary_rules],
)
_DEVICE_SCHEMA = vol.Schema(DEVICE)


def validate_device(data: Any) -> dict[str, Any]:
    """Validate a rendered device dictionary; return it, or raise one InvalidDeviceError."""
    if not isinstance(data, dict):
        kind = "an empty document" if data is None else type(data).__name__
        raise InvalidDeviceError(
            f"device dictionary: got {kind}; expected a mapping with actions, constants, parameters and timeouts",
            path="",
            value=data,
            expected="a mapping",
        )
    try:
        out: dict[str, Any] = _DEVICE_SCHEMA(data)
    except vol.Invalid as exc:
        raise make_error(exc, data, InvalidDeviceError, "device dictionary") from None
    return out


__all__ = ["DEVICE_FIELDS", "validate_device"]
