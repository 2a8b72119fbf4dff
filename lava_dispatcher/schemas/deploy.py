"""Deploy blocks: the keys of each ``to:`` method.

Each entry of :data:`DEPLOY_METHODS` lists the method's own keys; the keys
every action has (:data:`~lava_dispatcher.schemas.common.ACTION_COMMON`) and
every deploy has (:data:`DEPLOY_COMMON`) are added by the job schema.
"""

from __future__ import annotations

from typing import Any

from voluptuous import Optional, Required

from lava_dispatcher.schemas.common import (
    DOCKER_IMAGE,
    OVERLAY_BACKEND,
    STRINGS,
    URL,
    MethodSchema,
    docker,
    images,
    url_dict,
)
from lava_dispatcher.schemas.validators import (
    Bool,
    Either,
    Int,
    Keyed,
    ListOf,
    Map,
    Mismatch,
    OneOf,
    Pattern,
    Str,
    exclusive,
)

DEPLOY_COMMON: dict[Any, Any] = {
    Optional("os"): Str(expected="an OS name such as 'debian', 'oe' or 'android'"),
    Optional("authorize"): OneOf("ssh"),
    Optional("overlay_backend"): OVERLAY_BACKEND,
}

_ARTIFACT = url_dict()
_KERNEL = url_dict({Optional("type"): OneOf("image", "uimage", "zimage")})
_WITH_IMAGE_ARG = url_dict(
    {
        Optional("image_arg"): Str(
            expected="a QEMU argument such as '-drive format=raw,file={rootfs}'"
        )
    }
)
_ROOT_PARTITION = Int(0, expected="a partition number (0 or more)")

_TOOL = Map(
    {Required("tool"): Str(), Required("options"): Str(), Required("prompt"): Str()},
    expected="a mapping such as {tool: /usr/bin/dd, options: 'if={DOWNLOAD_URL} of={DEVICE}', prompt: 'records out'}",
)


def _not_empty(data: dict[Any, Any]) -> None:
    if not data:
        raise Mismatch("at least one artifact")


def _removable() -> MethodSchema:
    """usb, sd and sata: write an image to secondary media from the running system."""
    return MethodSchema(
        {
            Optional("images"): Map(
                {Required("image"): _ARTIFACT, Optional(str): _ARTIFACT},
                expected="a mapping of labels to artifacts that includes 'image'",
            ),
            Optional("image"): url_dict({Optional("root_partition"): Int()}),
            Required("device"): Str(expected="the label of the media in the device dictionary"),
            Optional("download"): _TOOL,
            Optional("writer"): _TOOL,
            Optional("tool"): Map({Required("prompts"): STRINGS}),
            Optional("uniquify"): Bool(),
        },
        # neither: the image is already on the media (secondary media)
        exclusive("images", "image"),
    )


_DOCKER_NAMED = docker("name")

DEPLOY_METHODS: dict[str, MethodSchema] = {
    "avh": MethodSchema(
        {
            Optional("images"): images(
                url_dict(
                    {
                        Optional("format"): OneOf("ext4"),
                        Optional("root_partition"): _ROOT_PARTITION,
                        Optional("type"): OneOf("image"),
                    }
                )
            ),
            Optional("fw_package"): url_dict(
                {
                    Optional("format"): OneOf("ext4"),
                    Optional("root_partition"): _ROOT_PARTITION,
                    Optional("type"): OneOf("image"),
                    Optional("storage_file"): Str(),
                }
            ),
            Optional("options"): Map(
                {
                    Optional("model"): Str(),
                    Optional("api_endpoint"): Str(),
                    Optional("project_name"): Str(),
                }
            ),
        },
        exclusive("images", "fw_package", required=True, what="what to deploy"),
    ),
    "docker": MethodSchema(
        {
            Required("image"): Either(
                DOCKER_IMAGE,
                _DOCKER_NAMED,
                expected="a docker image name such as 'debian:bookworm' or {name: debian:bookworm, local: true}",
            ),
        }
    ),
    "download": MethodSchema({Required("images"): images(_ARTIFACT)}),
    "downloads": MethodSchema(
        {
            Required("images"): images(_ARTIFACT),
            Optional("uniquify"): Bool(),
            Optional("postprocess"): Map(
                {
                    Required("docker"): docker(
                        more={Required("steps"): STRINGS, Optional("devices"): STRINGS}
                    )
                },
                expected="{docker: {image: ..., steps: [...]}}",
            ),
        }
    ),
    "fastboot": MethodSchema(
        {
            Required("images"): images(
                url_dict(
                    {
                        Optional("apply-overlay"): Bool(),
                        Optional("root_partition"): _ROOT_PARTITION,
                        Optional("sparse"): Bool(),
                        Optional("reboot"): OneOf(
                            "hard-reset",
                            "fastboot-reboot",
                            "fastboot-reboot-bootloader",
                            "fastboot-reboot-fastboot",
                        ),
                    }
                ),
                what="partition images",
            ),
            Optional("docker"): docker(),
        }
    ),
    "flasher": MethodSchema(
        {
            Required("images"): images(url_dict({Optional("download"): Bool()}), nonempty=False),
            Optional("uniquify"): Bool(),
        }
    ),
    "fvp": MethodSchema(
        {
            Required("images"): images(_ARTIFACT),
            Optional("ramdisk"): Map(
                {
                    Optional("install_overlay"): Bool(),
                    Optional("compression"): Str(),
                    Optional("header"): OneOf("u-boot"),
                }
            ),
            Optional("uniquify"): Bool(),
        }
    ),
    "iso-installer": MethodSchema(
        {
            Required("images"): Map(
                {
                    Required("iso"): url_dict({Optional("image_arg"): Str()}),
                    Required("preseed"): _ARTIFACT,
                },
                expected="a mapping with 'iso' and 'preseed' artifacts",
            ),
            Required("iso"): Map(
                {
                    Required("installation_size"): Str(expected="a size string such as '2G'"),
                    Optional("kernel"): Str(),
                    Optional("initrd"): Str(),
                }
            ),
        }
    ),
    "mps": MethodSchema(
        {
            Required("images"): Map(
                {
                    Optional("recovery_image"): _ARTIFACT,
                    Optional(
                        Pattern(
                            r"test_binary(_\w+)?", "a 'test_binary' or 'test_binary_<name>' label"
                        )
                    ): url_dict({Optional("rename"): Str()}),
                },
                expected="a mapping with 'recovery_image' and/or 'test_binary[_<name>]' artifacts",
                checks=[_not_empty],
            ),
        }
    ),
    "musca": MethodSchema(
        {
            Required("images"): Map(
                {Required("test_binary"): _ARTIFACT}, expected="{test_binary: {url: ...}}"
            )
        }
    ),
    "nbd": MethodSchema(
        {
            Required("kernel"): _KERNEL,
            Required("nbdroot"): _ARTIFACT,
            Required("initrd"): _ARTIFACT,
            Optional("dtb"): _ARTIFACT,
        }
    ),
    "nfs": MethodSchema(
        {
            Optional("nfsrootfs"): _ARTIFACT,
            Optional("modules"): _ARTIFACT,
            Optional("images"): images(_WITH_IMAGE_ARG),
        },
        exclusive("images", "nfsrootfs"),
        exclusive("images", "modules"),
    ),
    "overlay": MethodSchema({}),
    "qdl": MethodSchema(
        {
            Required("qcomflash"): url_dict({Optional("apply-overlay"): Bool()}),
            # documented by LAVA: where the overlay goes inside rootfs_image
            Optional("overlay_path"): Str(),
            Optional("uniquify"): Bool(),
            Optional("rootfs_image"): Str(),
        }
    ),
    "recovery": MethodSchema({Required("images"): images(_ARTIFACT)}),
    "sata": _removable(),
    "sd": _removable(),
    "ssh": MethodSchema(
        {
            # shown in LAVA's documentation; ignored
            Optional("connection"): OneOf("ssh"),
            Optional("firmware"): _ARTIFACT,
            Optional("kernel"): _ARTIFACT,
            Optional("rootfs"): _ARTIFACT,
            Optional("modules"): _ARTIFACT,
        }
    ),
    "tftp": MethodSchema(
        {
            Optional("kernel"): _KERNEL,
            Optional("dtb"): _ARTIFACT,
            Optional("dtbo"): ListOf(
                _ARTIFACT, expected="a list of artifacts such as [{url: https://.../overlay.dtbo}]"
            ),
            Optional("modules"): _ARTIFACT,
            Optional("preseed"): _ARTIFACT,
            Optional("ramdisk"): url_dict(
                {
                    Optional("install_modules"): Bool(),
                    Optional("install_overlay"): Bool(),
                    Optional("header"): OneOf("u-boot"),
                }
            ),
            Optional("nfsrootfs"): url_dict(
                {
                    Optional("install_modules"): Bool(),
                    Optional("install_overlay"): Bool(),
                    Optional("prefix"): Str(),
                }
            ),
            Optional("persistent_nfs"): Map(
                {
                    Required("address"): Str(expected="an NFS export such as 'server:/srv/rootfs'"),
                    Optional("install_overlay"): Bool(),
                }
            ),
            Optional("tee"): _ARTIFACT,
            Optional("extra_files"): Keyed(_ARTIFACT, expected="a mapping of names to artifacts"),
        },
        exclusive("nfsrootfs", "persistent_nfs"),
    ),
    "tmpfs": MethodSchema(
        {
            Required("images"): images(_WITH_IMAGE_ARG),
            Optional("type"): OneOf("monitor"),
            Optional("uefi"): _ARTIFACT,
        }
    ),
    "u-boot-ums": MethodSchema(
        {Required("image"): url_dict({Optional("root_partition"): _ROOT_PARTITION})}
    ),
    "usb": _removable(),
    "usbg-ms": MethodSchema({Required("image"): _ARTIFACT}),
    "uuu": MethodSchema(
        {
            Required("images"): Map(
                {
                    Required("boot"): _ARTIFACT,
                    Optional(str): url_dict(
                        {
                            Optional("apply-overlay"): Bool(),
                            Optional("root_partition"): _ROOT_PARTITION,
                            # documented by LAVA for sparse system images
                            Optional("sparse"): Bool(),
                        }
                    ),
                },
                expected="a mapping of labels to artifacts that includes 'boot'",
            ),
            Optional("uniquify"): Bool(),
        }
    ),
    "vemsd": MethodSchema({Required("recovery_image"): _ARTIFACT}),
}

__all__ = ["DEPLOY_COMMON", "DEPLOY_METHODS", "URL"]
