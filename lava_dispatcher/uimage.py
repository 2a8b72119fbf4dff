"""Legacy U-Boot image headers (what ``mkimage -T ramdisk|kernel -C none`` writes).

Written here rather than by running mkimage: 64 bytes of struct and two
CRCs do not justify a host dependency, and a job's ramdisk never meets a
command line. Values are U-Boot's (include/image.h).
"""

from __future__ import annotations

import time
from pathlib import Path

from lava_dispatcher.ramdisk import UIMAGE_HEADER, UIMAGE_MAGIC, wrap_uimage

#: mkimage -A names -> IH_ARCH_*
ARCHES = {
    "arm": 2,
    "i386": 3,
    "x86": 3,
    "mips": 5,
    "powerpc": 7,
    "ppc": 7,
    "arm64": 22,
    "x86_64": 24,
    "riscv": 26,
}
OS_LINUX = 5
TYPE_KERNEL = 2
TYPE_RAMDISK = 3
COMP_NONE = 0


def has_header(data: bytes) -> bool:
    """Whether ``data`` (the whole file, or only its first 4 bytes) starts with the uImage magic."""
    return data[:4] == UIMAGE_MAGIC.to_bytes(4, "big")


def file_has_header(path: Path) -> bool:
    with open(path, "rb") as handle:
        return has_header(handle.read(4))


def make(
    payload: bytes, *, arch: str, image_type: int, name: str = "", load: int = 0, entry: int = 0
) -> bytes:
    """``payload`` behind a fresh header (no compression, OS Linux)."""
    if arch not in ARCHES:
        raise ValueError(
            f"unknown mkimage architecture {arch!r}; expected one of {', '.join(sorted(ARCHES))}"
        )
    header = UIMAGE_HEADER.pack(
        UIMAGE_MAGIC, 0, int(time.time()), 0, load, entry, 0,
        OS_LINUX, ARCHES[arch], image_type, COMP_NONE, name.encode()[:32],
    )  # fmt: skip
    return wrap_uimage(header, payload)
