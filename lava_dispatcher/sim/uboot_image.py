"""What the simulated U-Boot loads: its RAM, files from the TFTP root, and
legacy uImage headers (`mkimage -T ramdisk|kernel`)."""

from __future__ import annotations

import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from lava_dispatcher.ramdisk import UIMAGE_HEADER, UIMAGE_MAGIC
from lava_dispatcher.uimage import ARCHES, OS_LINUX, TYPE_KERNEL, TYPE_RAMDISK

HEADER_SIZE = UIMAGE_HEADER.size  # 64
ARCH_ARM = ARCHES["arm"]
ARCH_ARM64 = ARCHES["arm64"]
ARCH_NAMES = {
    ARCH_ARM: "ARM",
    3: "Intel x86",
    5: "MIPS",
    7: "PowerPC",
    ARCH_ARM64: "AArch64",
    24: "AMD x86_64",
    26: "RISC-V",
}
OS_NAMES = {OS_LINUX: "Linux"}
TYPE_NAMES = {
    TYPE_KERNEL: "Kernel Image",
    TYPE_RAMDISK: "RAMDisk Image",
    4: "Multi-File Image",
    5: "Firmware",
    6: "Script File",
    8: "Flat Device Tree",
}
COMP_NAMES = {
    0: "uncompressed",
    1: "gzip compressed",
    2: "bzip2 compressed",
    3: "lzma compressed",
    4: "lzo compressed",
    5: "lz4 compressed",
    6: "zstd compressed",
}

# TFTP error packets, as tftpd-hpa sends them
TFTP_NOT_FOUND = (1, "File not found")
TFTP_ACCESS = (2, "Access violation")


class Memory:
    """The board's RAM, as far as anything was loaded into it: the regions
    written by `tftp`. A later load overwrites what it overlaps."""

    def __init__(self) -> None:
        self.regions: dict[int, bytes] = {}

    def write(self, addr: int, data: bytes) -> None:
        end = addr + len(data)
        kept: dict[int, bytes] = {}
        for start, old in self.regions.items():
            old_end = start + len(old)
            if old_end <= addr or start >= end:
                kept[start] = old
                continue
            if start < addr:
                kept[start] = old[: addr - start]
            if old_end > end:
                kept[end] = old[end - start :]
        kept[addr] = data
        self.regions = kept

    def read(self, addr: int) -> bytes | None:
        """What was loaded from `addr` to the end of its region; None when
        nothing was loaded there."""
        for start, data in self.regions.items():
            if start == addr or start <= addr < start + len(data):
                return data[addr - start :]
        return None


def tftp_read(root: str | None, name: str) -> bytes | tuple[int, str]:
    """The file a TFTP server rooted at `root` sends for `name`, or its error
    (code, message). Like tftpd-hpa --secure: a leading '/' is dropped,
    '..' and links out of the root are refused."""
    if root is None:
        return TFTP_NOT_FOUND
    relative = name.lstrip("/")
    if not relative or ".." in relative.split("/"):
        return TFTP_ACCESS
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([base, path]) != base:
        return TFTP_ACCESS
    try:
        if not os.path.isfile(path):
            return TFTP_NOT_FOUND
        return Path(path).read_bytes()
    except PermissionError:
        return TFTP_ACCESS
    except OSError:
        return TFTP_NOT_FOUND


@dataclass
class LegacyImage:
    """A legacy uImage: the 64-byte header's fields and what follows it."""

    header: bytes
    header_crc: int
    created: int
    size: int
    load: int
    entry: int
    data_crc: int
    os: int
    arch: int
    type: int
    comp: int
    name: str
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> LegacyImage | None:
        """The image at the start of `data`, if it has the uImage magic."""
        if len(data) < HEADER_SIZE or struct.unpack(">I", data[:4])[0] != UIMAGE_MAGIC:
            return None
        fields = UIMAGE_HEADER.unpack(data[:HEADER_SIZE])
        _magic, hcrc, created, size, load, entry, dcrc, os_, arch, kind, comp, name = fields
        return cls(
            header=data[:HEADER_SIZE],
            header_crc=hcrc,
            created=created,
            size=size,
            load=load,
            entry=entry,
            data_crc=dcrc,
            os=os_,
            arch=arch,
            type=kind,
            comp=comp,
            name=name.split(b"\0", 1)[0].decode("utf-8", "replace"),
            payload=data[HEADER_SIZE : HEADER_SIZE + size],
        )

    def header_ok(self) -> bool:
        blank = self.header[:4] + b"\0\0\0\0" + self.header[8:]
        return zlib.crc32(blank) == self.header_crc

    def data_ok(self) -> bool:
        return len(self.payload) == self.size and zlib.crc32(self.payload) == self.data_crc

    def describe(self, size_text: str) -> list[str]:
        """The lines U-Boot prints about the image (`size_text`: the size
        in U-Boot's words)."""
        when = time.gmtime(self.created)
        kind = " ".join(
            (
                ARCH_NAMES.get(self.arch, "Unknown Architecture"),
                OS_NAMES.get(self.os, "Unknown OS"),
                TYPE_NAMES.get(self.type, "Unknown Image"),
            )
        )
        return [
            f"   Image Name:   {self.name}",
            f"   Created:      {when.tm_year:4d}-{when.tm_mon:02d}-{when.tm_mday:02d}  "
            f"{when.tm_hour:2d}:{when.tm_min:02d}:{when.tm_sec:02d} UTC",
            f"   Image Type:   {kind} ({COMP_NAMES.get(self.comp, 'unknown compression')})",
            f"   Data Size:    {self.size} Bytes = {size_text}",
            f"   Load Address: {self.load:08x}",
            f"   Entry Point:  {self.entry:08x}",
        ]
