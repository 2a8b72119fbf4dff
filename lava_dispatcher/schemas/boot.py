"""Boot blocks: the keys of each ``method:``.

Each entry of :data:`BOOT_METHODS` lists the method's own keys; the keys
every action has and every boot has (:data:`BOOT_COMMON`) are added by the
job schema.
"""

from __future__ import annotations

from typing import Any

from voluptuous import Optional, Required

from lava_dispatcher.schemas.common import (
    AUTO_LOGIN,
    PROMPTS,
    STR_OR_STRINGS,
    STRINGS,
    TRANSFER_OVERLAY,
    MethodSchema,
    docker,
)
from lava_dispatcher.schemas.validators import (
    Bool,
    Either,
    Int,
    Keyed,
    ListOf,
    Map,
    OneOf,
    Str,
)

BOOT_PARAMETERS: dict[Any, Any] = {
    Optional("bootloader-final-message"): Str(),
    Optional("kernel-start-message"): Str(),
    Optional("shutdown-message"): Str(),
}

BOOT_COMMON: dict[Any, Any] = {
    Optional("parameters"): Map(
        BOOT_PARAMETERS,
        expected="a mapping such as {kernel-start-message: 'Linux version'}",
    ),
    Optional("soft_reboot"): STR_OR_STRINGS,
    Optional("ignore_kernel_messages"): Bool(),
    # read by the boot actions although LAVA's strict schema does not list it
    Optional("failure_message"): Str(),
}

_BOOTLOADER_COMMANDS = Either(
    Str(nonempty=True),
    STRINGS,
    expected="the name of a command stanza of the device (such as 'ramdisk') or a list of commands",
)

# keys shared by methods that end in a shell on the DUT
_SHELL: dict[Any, Any] = {
    Optional("prompts"): PROMPTS,
    Optional("auto_login"): AUTO_LOGIN,
    Optional("transfer_overlay"): TRANSFER_OVERLAY,
}

# booting a kernel already on secondary media (deployed by to: usb/sata/sd)
_SECONDARY_MEDIA: dict[Any, Any] = {
    Optional("kernel"): Str(expected="the path of the kernel inside the deployed image"),
    Optional("ramdisk"): Str(expected="the path of the ramdisk inside the deployed image"),
    Optional("dtb"): Str(expected="the path of the dtb inside the deployed image"),
    Optional("root_uuid"): Str(expected="the root filesystem, such as 'UUID=159d17cc-...'"),
    Optional("boot_part"): Either(
        Int(0), Str(), expected="the boot partition, such as 1 or '(hd0,gpt1)'"
    ),
}

_GRUB: dict[Any, Any] = {
    **_SECONDARY_MEDIA,
    Required("commands"): _BOOTLOADER_COMMANDS,
    Optional("boot_finished"): STR_OR_STRINGS,
    Optional("reset"): Bool(),
    Optional("expect_shell"): Bool(),
    Optional("use_bootscript"): Bool(),
    **_SHELL,
}

BOOT_METHODS: dict[str, MethodSchema] = {
    "avh": MethodSchema(
        {
            Optional("bootargs"): Map({Optional("normal"): Str(), Optional("restore"): Str()}),
            Optional("docker"): docker(),
            Required("prompts"): PROMPTS,
            Optional("auto_login"): AUTO_LOGIN,
        }
    ),
    "barebox": MethodSchema({Required("commands"): _BOOTLOADER_COMMANDS, **_SHELL}),
    "bootloader": MethodSchema(
        {
            Required("bootloader"): Str(expected="a bootloader name such as 'u-boot' or 'grub'"),
            Optional("commands"): STRINGS,
            Optional("use_bootscript"): Bool(),
            Optional("prompts"): PROMPTS,
            Optional("reset_connection"): Bool(),
            Optional("reset_device"): Bool(),
            Optional("reset"): Bool(),
        }
    ),
    "cmsis-dap": MethodSchema({}),
    "depthcharge": MethodSchema(
        {
            Required("commands"): _BOOTLOADER_COMMANDS,
            Optional("extra_kernel_args"): Str(),
            Optional("use_bootscript"): Bool(),
            **_SHELL,
        }
    ),
    "dfu": MethodSchema({}),
    "docker": MethodSchema(
        {
            Required("command"): Str(
                expected="the command to run in the container, such as 'bash'"
            ),
            Optional("prompts"): PROMPTS,
            Optional("downloads-namespace"): Str(),
        }
    ),
    "fastboot": MethodSchema(
        {
            Optional("commands"): STRINGS,
            Optional("use_bootscript"): Bool(),
            Optional("docker"): docker(),
            **_SHELL,
        }
    ),
    "fvp": MethodSchema(
        {
            Optional("use_telnet"): Bool(),
            Required("console_string"): Str(),
            Optional("feedbacks"): STRINGS,
            Required("image"): Str(expected="the path of the model binary in the container"),
            Optional("license_variable"): Str(),
            Optional("environment"): STRINGS,
            Optional("ubl_license"): Str(),
            Optional("version_string"): Str(),
            Optional("version_args"): Str(),
            Required("arguments"): STRINGS,
            Required("docker"): docker("name"),
            Optional("erpc_app"): Str(),
            Optional("commands"): STRINGS,
            **_SHELL,
        }
    ),
    "gdb": MethodSchema(
        {
            Required("commands"): Str(expected="the name of a gdb command set of the device"),
            Optional("container"): Str(),
        }
    ),
    "grub": MethodSchema(dict(_GRUB)),
    "grub-efi": MethodSchema(dict(_GRUB)),
    "ipxe": MethodSchema(
        {
            Required("commands"): _BOOTLOADER_COMMANDS,
            Optional("use_bootscript"): Bool(),
            **_SHELL,
        }
    ),
    "jlink": MethodSchema(
        {
            Optional("prompts"): STRINGS,
            Optional("commands"): STRINGS,
            Optional("coretype"): Str(),
        }
    ),
    "kexec": MethodSchema(
        {
            Required("boot_message"): Str(),
            Optional("deploy"): Bool(),
            Optional("command"): Str(),
            Optional("kernel"): Str(),
            Optional("dtb"): Str(),
            Optional("initrd"): Str(),
            Optional("options"): STRINGS,
            Optional("kernel-config"): Str(),
            Optional("on_panic"): Bool(),
            **_SHELL,
        }
    ),
    "minimal": MethodSchema(
        {
            Optional("pre_power_command"): Bool(),
            Optional("pre_os_command"): Bool(),
            Optional("reset"): Bool(),
            **_SHELL,
        }
    ),
    "monitor": MethodSchema({}),
    "musca": MethodSchema({Optional("prompts"): PROMPTS}),
    "new_connection": MethodSchema(
        {
            Required("connection"): Str(
                expected="the name of a connection of the device, such as 'uart1'"
            ),
            **_SHELL,
        }
    ),
    "nodebooter": MethodSchema(
        {
            Required("command"): Str(),
            Optional("prompts"): PROMPTS,
            Optional("downloads-namespace"): Str(),
            # read by the nodebooter action although LAVA's strict schema lacks it
            Optional("docker"): docker(),
        }
    ),
    "openocd": MethodSchema({}),
    "pyocd": MethodSchema({}),
    "qdl": MethodSchema(
        {
            Required("firehose_program"): Str(),
            Required("rawprogram"): Str(),
            Optional("patch"): Str(),
            Optional("path"): Str(),
            Optional("storage"): Str(),
            Optional("debug"): Bool(),
            Optional("docker"): docker(),
        }
    ),
    "qemu": MethodSchema(
        {
            Optional("connection"): OneOf("serial"),
            Optional("media"): OneOf("tmpfs"),
            Optional("docker"): docker(more={Optional("binary"): Str()}),
            **_SHELL,
        }
    ),
    "qemu-iso": MethodSchema(
        {
            Required("media"): OneOf("img"),
            # shown in LAVA's documentation; ignored (the console is the QEMU process)
            Optional("connection"): OneOf("serial"),
            Optional("prompts"): PROMPTS,
            Optional("auto_login"): AUTO_LOGIN,
        }
    ),
    "qemu-nfs": MethodSchema({Optional("connection"): OneOf("serial"), **_SHELL}),
    "recovery": MethodSchema({Required("commands"): OneOf("recovery", "exit")}),
    "schroot": MethodSchema(
        {
            Optional("prompts"): PROMPTS,
            Required("connection"): OneOf("ssh"),
            Required("schroot"): Str(expected="the name of a schroot of the device"),
        }
    ),
    "ssh": MethodSchema(
        {
            Optional("prompts"): PROMPTS,
            # shown in LAVA's documentation; ignored
            Optional("connection"): OneOf("ssh"),
            Optional("parameters"): Map(
                {
                    **BOOT_PARAMETERS,
                    Optional("hostID"): Str(
                        expected="a MultiNode messageID carrying the host address"
                    ),
                    Optional("host_key"): Str(
                        expected="the key of the host address in that message"
                    ),
                },
                expected="a mapping such as {hostID: ipv4, host_key: ipaddr}",
            ),
        }
    ),
    "u-boot": MethodSchema(
        {
            Required("commands"): _BOOTLOADER_COMMANDS,
            **_SECONDARY_MEDIA,
            Optional("kernel_type"): OneOf("image", "uimage", "zimage"),
            Optional("reset"): Bool(),
            Optional("use_bootscript"): Bool(),
            **_SHELL,
        }
    ),
    "uefi": MethodSchema(
        {
            Required("commands"): _BOOTLOADER_COMMANDS,
            Optional("shell_menu"): Str(),
            Optional("prompts"): PROMPTS,
            Optional("auto_login"): AUTO_LOGIN,
        }
    ),
    "uefi-menu": MethodSchema(
        {
            Optional("commands"): Str(expected="the name of a menu command set of the device"),
            Optional("line_separator"): Str(),
            Optional("prompts"): PROMPTS,
            Optional("auto_login"): AUTO_LOGIN,
        }
    ),
    "uuu": MethodSchema(
        {
            Required("commands"): Either(
                Str(),
                ListOf(Keyed(Str())),
                expected="a command set name or a list of {<uuu protocol>: <command>} mappings",
            ),
            Optional("docker"): docker(),
            Optional("skip_uuu_if_bootloader_valid"): Bool(),
        }
    ),
}

__all__ = ["BOOT_COMMON", "BOOT_METHODS"]
