"""Ramdisks (initramfs images): read, write, extend and safely unpack them.

A ramdisk is what the Linux kernel unpacks into its initial root file
system: one or more cpio archives in the "newc" format (magic ``070701``;
``070702``, "crc", is read too), each compressed or not, one after the other,
with zero bytes allowed between them. The kernel unpacks every segment in
order, and a later entry replaces an earlier one of the same name. This
module reads such files the same way:

    for segment in iter_segments(data):        # Segment(offset, end, compression, entries)
        ...
    entries = read_ramdisk(path)               # all segments merged, later entries win

and writes them:

    pack_tree(tree, out, compression="gz")     # a new ramdisk from a directory
    append_tree(ramdisk, overlay_dir)          # the directory's files as a NEW segment
    append_tarball(ramdisk, "overlay.tar.gz")  # the same from a tar archive
    repack(ramdisk, out, extra_tree, "gz")     # one single archive, for picky bootloaders
    extract(ramdisk, dest)                     # safe unpacking into a directory

`append_tree` is how the dispatcher puts a test overlay (``/lava-<job>/...``)
into a ramdisk: the kernel unpacks the appended segment after the original
ones, so nothing else has to change and the original image is never
unpacked and rebuilt. A legacy U-Boot header (``mkimage -T ramdisk``) in
front of the image is understood: reading skips it, writing rewrites it with
the new size and checksums.

Compression is recognised by its magic number: gzip, xz, zstd and bzip2 are
read; gzip, xz (with the CRC32 check the kernel's decoder needs), zstd and
none are written. Names used here: ``"none"``, ``"gz"``, ``"xz"``, ``"zstd"``,
``"bz2"`` (``"gzip"``, ``"zst"``, ``"bzip2"`` and ``""`` are accepted too).

Safety: `extract` never writes outside `dest`. Names are normalised under
it (a leading ``/`` is dropped, as the kernel treats names relative to the
root); a name that climbs out with ``..`` is refused, and so is a path whose
parent inside `dest` is a symbolic link (links are created as links but never
followed while extracting). Device nodes, fifos and sockets are skipped (and
logged); setuid/setgid bits are dropped; ownership is not applied. Every
problem with the data (corrupt, truncated, unsafe) raises `RamdiskError`, a
`ValueError` naming the offset and the problem.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import io
import logging
import lzma
import os
import posixpath
import shutil
import stat
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

LOG = logging.getLogger(__name__)

NEWC_MAGIC = b"070701"
CRC_MAGIC = b"070702"
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
PATH_MAX = 4096
NAME_MAX = 255
# Refuse to unpack more than this (bytes after decompression, all segments).
MAX_UNPACKED = 2 << 30

UIMAGE_MAGIC = 0x27051956
UIMAGE_HEADER = struct.Struct(">IIIIIIIBBBB32s")  # 64 bytes

COMPRESSIONS = ("none", "gz", "xz", "zstd")  # written
READABLE = (*COMPRESSIONS, "bz2")
_ALIASES = {
    "": "none",
    "none": "none",
    "gz": "gz",
    "gzip": "gz",
    "xz": "xz",
    "zstd": "zstd",
    "zst": "zstd",
    "bz2": "bz2",
    "bzip2": "bz2",
}
_MAGICS = (
    (b"\x1f\x8b", "gz"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bz2"),
    # recognised only to say that they are not supported
    (b"\x5d\x00\x00", "lzma"),
    (b"\x89LZO", "lzo"),
    (b"\x02\x21\x4c\x18", "lz4"),
)
# Input fed to a decompressor at a time: bounds how far one step can
# overshoot the size limit (zstd can expand a few bytes into 128 KiB).
_FEED = {"gz": 65536, "xz": 65536, "bz2": 65536, "zstd": 2048}

_HEX = frozenset(b"0123456789abcdefABCDEF")
_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


class RamdiskError(ValueError):
    """The data is not a (safe) ramdisk: corrupt, truncated, or unsafe to unpack.

    `offset` is where in the file the problem is (None when it is not about
    one place), `problem` what it is.
    """

    def __init__(self, offset: int | None, problem: str) -> None:
        self.offset = offset
        self.problem = problem
        super().__init__(problem if offset is None else f"offset {offset}: {problem}")


# -- entries --------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One member of a cpio archive. `data` is a file's contents or a
    symbolic link's target; `mode` holds the file type and permission bits."""

    name: str
    mode: int
    data: bytes = b""
    mtime: int = 0
    uid: int = 0
    gid: int = 0
    ino: int = 0
    nlink: int = 1
    dev: tuple[int, int] = (0, 0)
    rdev: tuple[int, int] = (0, 0)

    @property
    def kind(self) -> str:
        """file, dir, symlink, chardev, blockdev, fifo, socket or unknown."""
        return _KINDS.get(stat.S_IFMT(self.mode), "unknown")

    @property
    def path(self) -> str:
        """The name normalised: no leading '/' or './', '' for the root."""
        return clean_name(self.name)

    @property
    def target(self) -> str:
        """A symbolic link's target."""
        return self.data.decode("utf-8", "surrogateescape")

    @classmethod
    def file(cls, name: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> Entry:
        return cls(name, stat.S_IFREG | (mode & 0o7777), data, mtime)

    @classmethod
    def dir(cls, name: str, mode: int = 0o755, mtime: int = 0) -> Entry:
        return cls(name, stat.S_IFDIR | (mode & 0o7777), b"", mtime, nlink=2)

    @classmethod
    def symlink(cls, name: str, target: str, mtime: int = 0) -> Entry:
        return cls(name, stat.S_IFLNK | 0o777, target.encode("utf-8", "surrogateescape"), mtime)


def clean_name(name: str) -> str:
    """Normalise an archive name lexically: '/./a//b/' -> 'a/b', '.' -> ''.

    '..' components are resolved where they can be ('a/../b' -> 'b'); a
    name that climbs above the root keeps its leading '..' (see `safe_parts`).
    """
    cleaned = posixpath.normpath("/" + name) if not _climbs(name) else posixpath.normpath(name)
    return cleaned.lstrip("/") if cleaned not in ("/", ".") else ""


def _climbs(name: str) -> bool:
    """True if the name goes above its starting point ('../x', 'a/../../x')."""
    depth = 0
    for part in name.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def safe_parts(name: str, offset: int | None = None) -> tuple[str, ...]:
    """The components of `name` under the root, or RamdiskError when it
    would climb out of it or cannot be a file name on Linux."""
    if _climbs(name.lstrip("/")):
        raise RamdiskError(offset, f"entry {name!r} climbs out of the root with '..': refused")
    path = clean_name(name)
    parts = tuple(p for p in path.split("/") if p)
    if "\0" in name:
        raise RamdiskError(offset, f"entry {name!r}: NUL byte in the name")
    if len(os.fsencode(path)) >= PATH_MAX:
        raise RamdiskError(offset, f"entry {name[:60]!r}...: name longer than {PATH_MAX} bytes")
    for part in parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise RamdiskError(
                offset, f"entry {name[:60]!r}: a component is longer than {NAME_MAX} bytes"
            )
    return parts


# -- reading ----------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One archive of a ramdisk file (or one compressed stream, which may hold
    several archives): where it is, how it is compressed, what it holds."""

    offset: int
    end: int
    compression: str
    entries: tuple[Entry, ...] = field(repr=False)


def _align4(n: int) -> int:
    return (n + 3) & ~3


class _Bad(Exception):
    """A problem at a position of the buffer being parsed (made into a
    RamdiskError by the caller, which knows where that buffer is)."""

    def __init__(self, pos: int, problem: str) -> None:
        super().__init__(problem)
        self.pos = pos
        self.problem = problem


def _hex_field(header: bytes, index: int, pos: int) -> int:
    raw = header[6 + 8 * index : 14 + 8 * index]
    if len(raw) != 8 or not _HEX.issuperset(raw):
        raise _Bad(pos, f"cpio header field {index} is not 8 hex digits: {raw!r}")
    return int(raw, 16)


def _parse_archive(buf: bytes, pos: int) -> tuple[list[Entry], int]:
    """Parse one cpio archive of `buf` from `pos` up to its TRAILER!!!;
    return its entries and the position after the trailer's padding."""
    entries: list[Entry] = []
    while True:
        if len(buf) - pos < HEADER_SIZE:
            raise _Bad(pos, "truncated cpio header (the archive has no TRAILER!!!)")
        header = buf[pos : pos + HEADER_SIZE]
        magic = header[:6]
        if magic not in (NEWC_MAGIC, CRC_MAGIC):
            raise _Bad(pos, f"no cpio newc magic (found {magic!r})")
        (ino, mode, uid, gid, nlink, mtime, size, dmaj, dmin, rmaj, rmin, namesize, check) = (
            _hex_field(header, i, pos) for i in range(13)
        )
        if namesize == 0 or namesize > PATH_MAX:
            raise _Bad(pos, f"bad name size {namesize}")
        name_end = pos + HEADER_SIZE + namesize
        if name_end > len(buf):
            raise _Bad(pos, "truncated cpio entry name")
        raw_name = buf[pos + HEADER_SIZE : name_end]
        if raw_name[-1:] != b"\0" or b"\0" in raw_name[:-1]:
            raise _Bad(pos, "cpio entry name is not one NUL-terminated string")
        name = raw_name[:-1].decode("utf-8", "surrogateescape")
        data_start = pos + _align4(HEADER_SIZE + namesize)
        data_end = data_start + size
        if data_end > len(buf):
            raise _Bad(pos, f"entry {name!r}: truncated data ({size} bytes expected)")
        if name == TRAILER:
            return _link_files(entries), min(len(buf), data_start + _align4(size))
        data = buf[data_start:data_end]
        kind = _KINDS.get(stat.S_IFMT(mode), "unknown")
        if magic == CRC_MAGIC and kind == "file" and (sum(data) & 0xFFFFFFFF) != check:
            raise _Bad(pos, f"entry {name!r}: checksum mismatch")
        if kind == "symlink" and not 0 < size < PATH_MAX:
            raise _Bad(pos, f"entry {name!r}: bad symbolic link target size {size}")
        if kind not in ("file", "symlink"):
            data = b""
        entries.append(
            Entry(name, mode, data, mtime, uid, gid, ino, nlink, (dmaj, dmin), (rmaj, rmin))
        )
        pos = data_start + _align4(size)


def _link_files(entries: list[Entry]) -> list[Entry]:
    """Hard links: in newc, the contents travel with one of the names (the
    last one, in GNU cpio); give every name of the inode those contents."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for index, entry in enumerate(entries):
        if entry.kind == "file" and entry.nlink > 1:
            groups.setdefault((*entry.dev, entry.ino), []).append(index)
    for indexes in groups.values():
        if len(indexes) < 2:
            continue
        data = next((entries[i].data for i in reversed(indexes) if entries[i].data), b"")
        for i in indexes:
            old = entries[i]
            entries[i] = Entry(
                old.name, old.mode, data, old.mtime, old.uid, old.gid, old.ino, old.nlink,
                old.dev, old.rdev,
            )  # fmt: skip
    return entries


def detect_compression(data: bytes) -> str | None:
    """'none' for a cpio archive, a compression name, or None if unknown."""
    if data[:6] in (NEWC_MAGIC, CRC_MAGIC):
        return "none"
    for magic, name in _MAGICS:
        if data.startswith(magic):
            return name
    return None


def normalise_compression(name: str | None) -> str:
    """The canonical name for `name` ('gzip' -> 'gz', None -> 'none')."""
    canonical = _ALIASES.get((name or "").lower())
    if canonical is None:
        raise ValueError(f"unknown compression {name!r}: use one of {', '.join(READABLE)}")
    return canonical


def _decompress(data: bytes, pos: int, kind: str, limit: int) -> tuple[bytes, int]:
    """Decompress the one stream of `kind` starting at `pos`; return its
    contents and the number of input bytes it took."""
    decoder: Any
    if kind == "gz":
        decoder = zlib.decompressobj(wbits=31)
    elif kind == "xz":
        decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    elif kind == "bz2":
        decoder = bz2.BZ2Decompressor()
    elif kind == "zstd":
        decoder = zstandard.ZstdDecompressor().decompressobj()
    else:
        raise RamdiskError(
            pos, f"{kind}-compressed data: not supported (use gz, xz, zstd, bz2 or none)"
        )
    out = bytearray()
    step = _FEED[kind]
    fed = pos
    try:
        while fed < len(data) and not decoder.eof:
            chunk = data[fed : fed + step]
            fed += len(chunk)
            out += decoder.decompress(chunk)
            if len(out) > limit:
                raise RamdiskError(pos, f"{kind} data unpacks to more than {limit} bytes")
    except RamdiskError:
        raise
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError, zstandard.ZstdError) as exc:
        raise RamdiskError(pos, f"corrupt {kind} data: {exc}")
    if not decoder.eof:
        raise RamdiskError(pos, f"truncated {kind} data (the stream does not end)")
    used = fed - pos - len(decoder.unused_data)
    if used <= 0:
        raise RamdiskError(pos, f"corrupt {kind} data: an empty stream")
    return bytes(out), used


def _parse_contents(buf: bytes, segment: int, kind: str) -> list[Entry]:
    """A compressed stream's contents: cpio archives with zero padding between."""
    entries: list[Entry] = []
    pos = 0
    found = False
    try:
        while pos < len(buf):
            if buf[pos] == 0:
                pos += 1
                continue
            if pos % 4:
                raise _Bad(pos, "junk after an archive (broken padding)")
            more, pos = _parse_archive(buf, pos)
            entries += more
            found = True
    except _Bad as exc:
        raise RamdiskError(
            segment, f"{kind} segment, byte {exc.pos} of its contents: {exc.problem}"
        )
    if not found:
        raise RamdiskError(segment, f"{kind} segment holds no cpio archive")
    return entries


def split_uimage(data: bytes) -> tuple[bytes | None, bytes]:
    """(legacy U-Boot header or None, the image it wraps)."""
    if len(data) < UIMAGE_HEADER.size or struct.unpack(">I", data[:4])[0] != UIMAGE_MAGIC:
        return None, data
    fields = UIMAGE_HEADER.unpack(data[: UIMAGE_HEADER.size])
    size = fields[3]
    if size > len(data) - UIMAGE_HEADER.size:
        raise RamdiskError(0, f"U-Boot image header announces {size} bytes, the file is shorter")
    return data[: UIMAGE_HEADER.size], data[UIMAGE_HEADER.size : UIMAGE_HEADER.size + size]


def wrap_uimage(header: bytes, payload: bytes) -> bytes:
    """`payload` behind a copy of the legacy U-Boot `header`, with the new
    size and checksums."""
    fields = list(UIMAGE_HEADER.unpack(header))
    fields[1] = 0  # header CRC, computed with this field zero
    fields[3] = len(payload)
    fields[6] = zlib.crc32(payload)
    fields[1] = zlib.crc32(UIMAGE_HEADER.pack(*fields))
    return UIMAGE_HEADER.pack(*fields) + payload


def iter_segments(data: bytes, *, max_size: int = MAX_UNPACKED) -> Iterator[Segment]:
    """The archives of a ramdisk, in order, read like the kernel reads them.

    An uncompressed archive (which must start at a multiple of 4 bytes) runs
    to its TRAILER!!!; a compressed one is one compressed stream that may
    hold several archives; zero bytes between segments are skipped.
    A legacy U-Boot header in front is skipped. Offsets are in `data`.
    """
    header, payload = split_uimage(bytes(data))
    base = 0 if header is None else len(header)
    total = 0
    pos = 0
    while pos < len(payload):
        if payload[pos] == 0:
            pos += 1
            continue
        start = pos
        kind = detect_compression(payload[pos : pos + 8])
        if kind == "none":
            if pos % 4:
                raise RamdiskError(
                    base + pos,
                    "cpio archive not at a multiple of 4 bytes (the kernel would not find it)",
                )
            try:
                entries, pos = _parse_archive(payload, pos)
            except _Bad as exc:
                raise RamdiskError(base + exc.pos, exc.problem)
            total += pos - start
        elif kind is None:
            raise RamdiskError(
                base + pos,
                f"neither a cpio archive nor compressed data (bytes {payload[pos : pos + 6].hex()})",
            )
        else:
            contents, used = _decompress(payload, pos, kind, max_size - total)
            total += len(contents)
            entries = _parse_contents(contents, base + pos, kind)
            pos += used
        if total > max_size:
            raise RamdiskError(base + start, f"the ramdisk unpacks to more than {max_size} bytes")
        yield Segment(base + start, base + pos, kind, tuple(entries))


def merge(entries: Iterable[Entry]) -> list[Entry]:
    """Entries by normalised name, a later one replacing an earlier one (in
    the earlier one's place); a directory replaced by something else takes
    what it held with it."""
    merged: dict[str, Entry] = {}
    for entry in entries:
        path = entry.path
        old = merged.get(path)
        if old is not None and old.kind == "dir" and entry.kind != "dir":
            inside = path + "/" if path else ""
            for name in [n for n in merged if n.startswith(inside) and n != path]:
                del merged[name]
        merged[path] = entry
    return list(merged.values())


def read_entries(data: bytes, *, max_size: int = MAX_UNPACKED) -> list[Entry]:
    """Every entry of every segment of a ramdisk held in memory, merged."""
    segments = list(iter_segments(data, max_size=max_size))
    if not segments:
        raise RamdiskError(0, "no cpio archive found (empty or only zero bytes)")
    return merge(entry for segment in segments for entry in segment.entries)


def read_ramdisk(path: str | os.PathLike[str], *, max_size: int = MAX_UNPACKED) -> list[Entry]:
    """Every entry of every segment of the ramdisk at `path`; later ones win."""
    return read_entries(Path(path).read_bytes(), max_size=max_size)


# -- writing ----------------------------------------------------------------------


def _header(entry: Entry, ino: int, namesize: int, filesize: int) -> bytes:
    fields = (
        ino,
        entry.mode,
        entry.uid,
        entry.gid,
        entry.nlink,
        entry.mtime,
        filesize,
        entry.dev[0],
        entry.dev[1],
        entry.rdev[0],
        entry.rdev[1],
        namesize,
        0,
    )
    for value in fields:
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"entry {entry.name!r}: field value {value} does not fit in newc")
    return NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)


def write_archive(entries: Iterable[Entry]) -> bytes:
    """One uncompressed newc archive of `entries`, with its TRAILER!!!.

    Entries are written as given (names, modes, owners, times); each regular
    file gets an inode number of its own and one link.
    """
    out = bytearray()
    ino = 0
    for entry in [*entries, Entry(TRAILER, 0, nlink=1)]:
        name = entry.name.encode("utf-8", "surrogateescape") + b"\0"
        data = entry.data if entry.kind in ("file", "symlink") else b""
        if entry.name == TRAILER:
            number = 0
        else:
            ino += 1
            number = ino
            if entry.kind == "file" and entry.nlink != 1:
                entry = Entry(entry.name, entry.mode, data, entry.mtime, entry.uid, entry.gid)
        out += _header(entry, number, len(name), len(data)) + name
        out += b"\0" * (_align4(HEADER_SIZE + len(name)) - HEADER_SIZE - len(name))
        out += data + b"\0" * (_align4(len(data)) - len(data))
    return bytes(out)


def compress(data: bytes, compression: str) -> bytes:
    """`data` compressed as the kernel can read it (gz, xz with CRC32, zstd, none)."""
    kind = normalise_compression(compression)
    if kind == "none":
        return data
    if kind == "gz":
        return zlib_gzip(data)
    if kind == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=3, write_content_size=True, threads=-1).compress(data)
    raise ValueError(
        f"cannot write {kind}-compressed ramdisks: use one of {', '.join(COMPRESSIONS)}"
    )


def zlib_gzip(data: bytes, level: int = 6) -> bytes:
    """gzip with a zero timestamp (the same input gives the same bytes)."""
    encoder = zlib.compressobj(level, zlib.DEFLATED, 31)
    return encoder.compress(data) + encoder.flush()


def entries_from_tree(
    tree: str | os.PathLike[str], prefix: str = "", *, mtime: int | None = None
) -> list[Entry]:
    """Entries for everything under `tree` (not `tree` itself), placed under
    `prefix` in the archive ('' for the root). Owners become 0; devices,
    fifos and sockets are skipped. Symbolic links are stored, not followed."""
    root = Path(tree)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    parts = safe_parts(prefix) if prefix else ()
    entries = [Entry.dir("/".join(parts[: i + 1])) for i in range(len(parts) - 1)]
    if parts:
        info = root.stat()
        when = int(info.st_mtime) if mtime is None else mtime
        entries.append(Entry.dir("/".join(parts), stat.S_IMODE(info.st_mode), when))
    base = "/".join(parts)
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        relative = os.path.relpath(directory, root)
        for name in sorted(dirnames) + sorted(filenames):
            path = os.path.join(directory, name)
            member = posixpath.join(base, "" if relative == "." else relative, name)
            info = os.lstat(path)
            when = int(info.st_mtime) if mtime is None else mtime
            perm = stat.S_IMODE(info.st_mode)
            if stat.S_ISDIR(info.st_mode):
                entries.append(Entry.dir(member, perm, when))
            elif stat.S_ISLNK(info.st_mode):
                entries.append(Entry.symlink(member, os.readlink(path), when))
            elif stat.S_ISREG(info.st_mode):
                entries.append(Entry.file(member, Path(path).read_bytes(), perm, when))
            else:
                LOG.info("ramdisk: skipping %s (not a file, directory or link)", path)
    return entries


def entries_from_tarball(tarball: str | os.PathLike[str] | bytes) -> list[Entry]:
    """Entries for the members of a tar archive (plain, gz, bz2, xz or zstd).

    Names are normalised ('./lava-1/x' -> 'lava-1/x'); a name climbing out
    with '..' raises RamdiskError; hard links become copies; devices, fifos
    and sockets are skipped. Missing parent directories are added.
    """
    raw = tarball if isinstance(tarball, bytes) else Path(tarball).read_bytes()
    if raw.startswith(b"\x28\xb5\x2f\xfd"):
        raw, _ = _decompress(raw, 0, "zstd", MAX_UNPACKED)
    entries: list[Entry] = []
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:*") as tar:
            for member in tar:
                parts = safe_parts(member.name)
                if not parts:
                    continue
                name = "/".join(parts)
                perm = member.mode & 0o7777
                when = int(member.mtime)
                if member.isdir():
                    entries.append(Entry.dir(name, perm, when))
                elif member.issym():
                    entries.append(Entry.symlink(name, member.linkname, when))
                elif member.islnk():
                    target = "/".join(safe_parts(member.linkname))
                    if target not in contents:
                        raise RamdiskError(
                            None, f"tar member {member.name!r}: link to a missing file"
                        )
                    entries.append(Entry.file(name, contents[target], perm, when))
                elif member.isreg():
                    stream = tar.extractfile(member)
                    data = stream.read() if stream is not None else b""
                    contents[name] = data
                    entries.append(Entry.file(name, data, perm, when))
                else:
                    LOG.info("ramdisk: skipping tar member %s (device, fifo or socket)", name)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        raise RamdiskError(None, f"cannot read the tar archive: {exc}")
    return with_parents(entries)


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """`entries` with a directory entry (0755) added before any path whose
    parent directory has none, and parents sorted before their children."""
    listed = merge(entries)
    names = {entry.path for entry in listed}
    extra = []
    for entry in listed:
        parts = entry.path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in names:
                names.add(parent)
                extra.append(Entry.dir(parent, 0o755, entry.mtime))
    return sorted([*extra, *listed], key=lambda e: e.path.split("/"))


def _write_atomically(path: Path, data: bytes, like: Path | None = None) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        mode = 0o644
        if like is not None:
            with contextlib.suppress(OSError):
                mode = stat.S_IMODE(like.stat().st_mode)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def pack(entries: Iterable[Entry], compression: str = "gz") -> bytes:
    """A one-segment ramdisk holding `entries`."""
    return compress(write_archive(entries), compression)


def pack_tree(
    tree: str | os.PathLike[str], out: str | os.PathLike[str], compression: str = "gz"
) -> Path:
    """Write a new ramdisk at `out` holding everything under `tree`."""
    return _write_atomically(Path(out), pack(entries_from_tree(tree), compression))


def append_entries(
    ramdisk: str | os.PathLike[str],
    entries: Iterable[Entry],
    out: str | os.PathLike[str] | None = None,
    compression: str | None = None,
) -> Path:
    """Append `entries` to `ramdisk` as a new segment (written to `out`, by
    default in place), compressed like the first segment unless told."""
    source = Path(ramdisk)
    data = source.read_bytes()
    header, payload = split_uimage(data)
    segments = list(iter_segments(payload))
    if not segments:
        raise RamdiskError(0, f"{source}: no cpio archive found (empty or only zero bytes)")
    kind = normalise_compression(compression) if compression else segments[0].compression
    if kind not in COMPRESSIONS:
        kind = "gz"  # bzip2 is read, not written
    segment = pack(entries, kind)
    payload = payload + b"\0" * (-len(payload) % 4) + segment
    result = payload if header is None else wrap_uimage(header, payload)
    return _write_atomically(Path(out) if out is not None else source, result, like=source)


def append_tree(
    ramdisk: str | os.PathLike[str],
    tree: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    compression: str | None = None,
    *,
    prefix: str = "",
) -> Path:
    """Add the files under `tree` (its contents, placed at the ramdisk's root,
    or under `prefix`) as a new segment after the existing data.

    With tree/lava-1234/bin/lava-test-runner, the booted system has
    /lava-1234/bin/lava-test-runner. The new segment is compressed like the
    first one unless `compression` says otherwise; `out` defaults to
    rewriting `ramdisk` (atomically). Returns the path written.
    """
    return append_entries(ramdisk, entries_from_tree(tree, prefix), out, compression)


def append_tarball(
    ramdisk: str | os.PathLike[str],
    tarball: str | os.PathLike[str] | bytes,
    out: str | os.PathLike[str] | None = None,
    compression: str | None = None,
) -> Path:
    """`append_tree` for the members of a tar archive (an overlay tarball)."""
    return append_entries(ramdisk, entries_from_tarball(tarball), out, compression)


def repack(
    ramdisk: str | os.PathLike[str],
    out: str | os.PathLike[str],
    extra_tree: str | os.PathLike[str] | None = None,
    compression: str = "gz",
    *,
    extra_tarball: str | os.PathLike[str] | bytes | None = None,
) -> Path:
    """Read every segment, add the files of `extra_tree` (and/or of
    `extra_tarball`) over them, and write ONE archive to `out`."""
    source = Path(ramdisk)
    data = source.read_bytes()
    header, payload = split_uimage(data)
    entries = read_entries(payload)
    if extra_tree is not None:
        entries += entries_from_tree(extra_tree)
    if extra_tarball is not None:
        entries += entries_from_tarball(extra_tarball)
    payload = pack(with_parents(entries), compression)
    result = payload if header is None else wrap_uimage(header, payload)
    return _write_atomically(Path(out), result, like=source)


# -- extracting -------------------------------------------------------------------


@dataclass
class Extracted:
    """What `extract` did: counts by kind, and what it skipped (name, why)."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)  # their compressions, in order

    @property
    def count(self) -> int:
        return self.files + self.dirs + self.symlinks


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# errors caused by what the archive holds (as opposed to a full disk, say)
_DATA_ERRNOS = {errno.ENAMETOOLONG, errno.EINVAL, errno.ELOOP, errno.ENOTDIR, errno.EEXIST,
                errno.EISDIR, errno.ENOTEMPTY}  # fmt: skip


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def _open_dir(root_fd: int, parts: tuple[str, ...], create: bool, entry: str) -> int:
    """An fd on root/parts, walking one component at a time without ever
    following a symbolic link; missing directories are created if `create`."""
    fd = os.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            info = _lstat(part, fd)
            if info is None and create:
                os.mkdir(part, 0o700, dir_fd=fd)
                info = _lstat(part, fd)
            where = "/".join(parts[: i + 1])
            if info is None:
                raise FileNotFoundError(errno.ENOENT, "missing", where)
            if stat.S_ISLNK(info.st_mode):
                raise RamdiskError(
                    None,
                    f"entry {entry!r}: its parent {where!r} is a symbolic link, which "
                    "extraction never follows",
                )
            if not stat.S_ISDIR(info.st_mode):
                raise RamdiskError(
                    None, f"entry {entry!r}: its parent {where!r} is not a directory"
                )
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _remove(name: str, dir_fd: int, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def extract(
    source: str | os.PathLike[str] | bytes,
    dest: str | os.PathLike[str],
    *,
    max_size: int = MAX_UNPACKED,
) -> Extracted:
    """Unpack every segment of a ramdisk (a path, or its bytes) into `dest`.

    Entries are written in order, as the kernel does, a later one replacing
    an earlier one of the same name (a directory with what it holds). Nothing is ever written outside
    `dest`: names are checked before anything is written (RamdiskError for
    one that climbs out), and a parent that is a symbolic link is refused.
    Files keep their permission bits less setuid/setgid, directories theirs
    (applied last), modification times are kept, owners are not applied.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    segments = list(iter_segments(data, max_size=max_size))
    if not segments:
        raise RamdiskError(0, "no cpio archive found (empty or only zero bytes)")
    entries = [entry for segment in segments for entry in segment.entries]
    plan: list[tuple[tuple[str, ...], Entry]] = []
    for entry in entries:
        parts = safe_parts(entry.name)
        if entry.kind == "symlink":
            target = entry.data
            if not target or b"\0" in target:
                raise RamdiskError(None, f"entry {entry.name!r}: empty link target or NUL in it")
        if not parts and entry.kind != "dir":
            raise RamdiskError(None, f"entry {entry.name!r} names the root but is a {entry.kind}")
        plan.append((parts, entry))
    target_dir = Path(dest)
    target_dir.mkdir(parents=True, exist_ok=True)
    result = Extracted(segments=[segment.compression for segment in segments])
    dir_modes: dict[tuple[str, ...], tuple[int, int]] = {}
    root_fd = os.open(target_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for parts, entry in plan:
            try:
                _extract_one(root_fd, parts, entry, result, dir_modes)
            except OSError as exc:
                if exc.errno not in _DATA_ERRNOS:
                    raise
                raise RamdiskError(None, f"entry {entry.name!r}: cannot be created: {exc.strerror}")
        for entry in merge(entries):
            if entry.kind == "file":
                result.files += 1
            elif entry.kind == "symlink":
                result.symlinks += 1
            elif entry.kind == "dir" and entry.path:
                result.dirs += 1
        for parts in sorted(dir_modes, key=len, reverse=True):
            mode, mtime = dir_modes[parts]
            try:
                fd = _open_dir(root_fd, parts, False, "/".join(parts))
            except (OSError, RamdiskError):
                continue  # replaced by a later entry
            try:
                os.fchmod(fd, mode)
                os.utime(fd, (mtime, mtime))
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
    return result


def _extract_one(
    root_fd: int,
    parts: tuple[str, ...],
    entry: Entry,
    result: Extracted,
    dir_modes: dict[tuple[str, ...], tuple[int, int]],
) -> None:
    kind = entry.kind
    if kind not in ("file", "dir", "symlink"):
        LOG.info("ramdisk: skipping %s (%s)", entry.name, kind)
        result.skipped.append((entry.name, kind))
        return
    if not parts:  # the root itself
        dir_modes[()] = (entry.mode & 0o1777, entry.mtime)
        return
    for i in range(1, len(parts)):
        dir_modes.setdefault(parts[:i], (0o755, entry.mtime))
    parent = _open_dir(root_fd, parts[:-1], True, entry.name)
    try:
        name = parts[-1]
        existing = _lstat(name, parent)
        if kind == "dir":
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                _remove(name, parent, existing)
                existing = None
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=parent)
            dir_modes[parts] = (entry.mode & 0o1777, entry.mtime)
            return
        if existing is not None:
            _remove(name, parent, existing)
        dir_modes.pop(parts, None)
        if kind == "symlink":
            os.symlink(entry.target, name, dir_fd=parent)
            os.utime(name, (entry.mtime, entry.mtime), dir_fd=parent, follow_symlinks=False)
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=parent)
        try:
            view = memoryview(entry.data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, entry.mode & 0o777)
            os.utime(fd, (entry.mtime, entry.mtime))
        finally:
            os.close(fd)
    finally:
        os.close(parent)
