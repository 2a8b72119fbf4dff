"""The cpio newc writer and reader, one archive at a time, and the compressions."""

from __future__ import annotations

import bz2
import gzip
import lzma
import stat

import pytest
import zstandard

from lava_dispatcher import ramdisk
from lava_dispatcher.ramdisk import RamdiskError

from .conftest import MTIME, describe


def headers(archive: bytes) -> list[tuple[int, str, dict[str, int]]]:
    """(offset, name, fields) of each header, walking the archive by hand."""
    names = (
        "ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check"
    )
    found = []
    pos = 0
    while True:
        assert archive[pos : pos + 6] == b"070701", pos
        values = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        fields = dict(zip(names.split(), values, strict=True))
        name = archive[pos + 110 : pos + 110 + fields["namesize"] - 1].decode()
        found.append((pos, name, fields))
        data = pos + ((110 + fields["namesize"] + 3) & ~3)
        pos = data + ((fields["filesize"] + 3) & ~3)
        if name == "TRAILER!!!":
            assert pos == len(archive)
            return found


def test_newc_layout_modes_owners_padding_trailer(entries):
    archive = ramdisk.write_archive(entries)
    assert len(archive) % 4 == 0
    found = headers(archive)
    assert [name for _, name, _ in found] == [e.name for e in entries] + ["TRAILER!!!"]
    for (offset, name, fields), entry in zip(found, entries, strict=False):
        assert offset % 4 == 0, name
        assert fields["mode"] == entry.mode
        assert fields["uid"] == fields["gid"] == 0
        assert fields["mtime"] == MTIME
        assert fields["filesize"] == len(entry.data)
        assert fields["check"] == 0
    inodes = [fields["ino"] for _, name, fields in found[:-1]]
    assert len(set(inodes)) == len(inodes), "each member has its own inode number"
    trailer = found[-1][2]
    assert trailer["filesize"] == 0 and trailer["mode"] == 0


@pytest.mark.parametrize("compression", ["none", "gz", "xz", "zstd"])
def test_round_trip_for_each_compression(entries, compression):
    data = ramdisk.pack(entries, compression)
    assert ramdisk.detect_compression(data) == compression
    (segment,) = ramdisk.iter_segments(data)
    assert segment.compression == compression
    assert (segment.offset, segment.end) == (0, len(data))
    assert describe(list(segment.entries)) == describe(entries)
    assert describe(ramdisk.read_entries(data)) == describe(entries)


def test_writers_produce_what_other_tools_read(entries):
    archive = ramdisk.write_archive(entries)
    assert gzip.decompress(ramdisk.pack(entries, "gz")) == archive
    assert zstandard.ZstdDecompressor().decompress(ramdisk.pack(entries, "zstd")) == archive
    xz = ramdisk.pack(entries, "xz")
    assert lzma.decompress(xz) == archive
    # the kernel's xz decoder only knows CRC32 (or no) checks: flags byte 7 = 0x01
    assert xz[6:8] == b"\x00\x01"
    # gzip with a zero timestamp: the same input gives the same bytes
    assert ramdisk.pack(entries, "gz") == ramdisk.pack(entries, "gzip")


def test_bzip2_is_read(entries):
    data = bz2.compress(ramdisk.write_archive(entries))
    (segment,) = ramdisk.iter_segments(data)
    assert segment.compression == "bz2"
    assert describe(list(segment.entries)) == describe(entries)
    with pytest.raises(ValueError, match="cannot write bz2"):
        ramdisk.compress(b"", "bz2")


def test_compression_names():
    assert ramdisk.normalise_compression(None) == "none"
    assert ramdisk.normalise_compression("GZIP") == "gz"
    assert ramdisk.normalise_compression("zst") == "zstd"
    with pytest.raises(ValueError, match="unknown compression 'rar'"):
        ramdisk.normalise_compression("rar")


def crc_archive(members: list[tuple[str, int, bytes]], bad: bool = False) -> bytes:
    """A "crc" (070702) archive written by hand."""
    out = bytearray()
    for index, (name, mode, data) in enumerate([*members, ("TRAILER!!!", 0, b"")]):
        encoded = name.encode() + b"\0"
        check = (sum(data) + (1 if bad else 0)) & 0xFFFFFFFF if stat.S_ISREG(mode) else 0
        fields = (index, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), check)
        out += b"070702" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-(110 + len(encoded)) % 4) + data + b"\0" * (-len(data) % 4)
    return bytes(out)


def test_crc_format_is_read_and_checked():
    members = [("etc", stat.S_IFDIR | 0o755, b""), ("etc/x", stat.S_IFREG | 0o644, b"\xff" * 9)]
    (segment,) = ramdisk.iter_segments(crc_archive(members))
    assert [(e.name, e.data) for e in segment.entries] == [("etc", b""), ("etc/x", b"\xff" * 9)]
    with pytest.raises(RamdiskError, match="offset 116: entry 'etc/x': checksum mismatch"):
        list(ramdisk.iter_segments(crc_archive(members, bad=True)))


def newc_member(name: str, mode: int, data: bytes, ino: int, nlink: int) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    out = b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
    return out + b"\0" * (-(110 + len(encoded)) % 4) + data + b"\0" * (-len(data) % 4)


def test_hard_links_share_the_contents_of_their_inode():
    # GNU cpio puts the contents with the last name of an inode
    mode = stat.S_IFREG | 0o644
    archive = (
        newc_member("a", mode, b"", ino=42, nlink=2)
        + newc_member("b", mode, b"shared", ino=42, nlink=2)
        + ramdisk.write_archive([])
    )
    entries = ramdisk.read_entries(archive)
    assert [(e.name, e.data) for e in entries] == [("a", b"shared"), ("b", b"shared")]
    # written back, each is a file of its own
    again = ramdisk.read_entries(ramdisk.write_archive(entries))
    assert [(e.name, e.data, e.nlink) for e in again] == [("a", b"shared", 1), ("b", b"shared", 1)]


@pytest.mark.parametrize(
    ("data", "offset", "message"),
    [
        (b"070701" + b"0" * 50, 0, "truncated cpio header"),
        (b"070701" + b"zz" + b"0" * 102, 0, "cpio header field 0 is not 8 hex digits"),
        (b"070701" + b"-0000001" + b"0" * 96, 0, "cpio header field 0 is not 8 hex digits"),
        (b"PK\x03\x04 zip file", 0, "neither a cpio archive nor compressed data"),
        (b"\x02\x21\x4c\x18 lz4", 0, "lz4-compressed data: not supported"),
        (b"\x1f\x8b\x08\x00\0\0\0\0\0\x03\xff\xff", 0, "corrupt gz data: "),
        (b"\0\0\0\0\x28\xb5\x2f\xfd" + b"\xff" * 20, 4, "corrupt zstd data: "),
        (b"\x1f\x8b\x08\x00garbage", 0, "truncated gz data"),
        (b"\0\0" + b"070701", 2, "cpio archive not at a multiple of 4 bytes"),
    ],
)
def test_bad_input_names_offset_and_problem(data, offset, message):
    with pytest.raises(RamdiskError) as raised:
        list(ramdisk.iter_segments(data))
    assert isinstance(raised.value, ValueError)
    assert raised.value.offset == offset
    assert str(raised.value).startswith(f"offset {offset}: {message}")


def test_truncated_archives_and_streams(entries):
    archive = ramdisk.write_archive(entries)
    with pytest.raises(RamdiskError, match=r"truncated|no TRAILER"):
        list(ramdisk.iter_segments(archive[:-120]))
    gz = ramdisk.pack(entries, "gz")
    with pytest.raises(RamdiskError, match="offset 0: truncated gz data"):
        list(ramdisk.iter_segments(gz[:-10]))
    # a complete stream whose contents end early
    with pytest.raises(RamdiskError, match=r"gz segment, byte \d+ of its contents: truncated"):
        list(ramdisk.iter_segments(ramdisk.compress(archive[:300], "gz")))


def test_empty_input_has_no_segments():
    assert list(ramdisk.iter_segments(b"")) == []
    assert list(ramdisk.iter_segments(b"\0" * 64)) == []
    with pytest.raises(RamdiskError, match="no cpio archive found"):
        ramdisk.read_entries(b"\0" * 64)


def test_size_limit_stops_decompression_bombs():
    bomb = ramdisk.compress(b"\0" * (8 << 20), "zstd")
    assert len(bomb) < 4096
    with pytest.raises(RamdiskError, match="more than 1048576 bytes"):
        list(ramdisk.iter_segments(bomb, max_size=1 << 20))
