"""Several archives in one file, read like the kernel does; appending an
overlay as a new segment; repacking into one archive; U-Boot headers."""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import zlib
from pathlib import Path

import pytest

from lava_dispatcher import ramdisk
from lava_dispatcher.ramdisk import Entry, RamdiskError

from .conftest import MTIME, tree_snapshot


def concatenated(entries: list[Entry]) -> bytes:
    """gz + zstd + raw segments with zero padding between, as an initramfs
    built in several steps looks (early microcode, modules, the rest)."""
    first = ramdisk.pack(entries, "gz")
    second = ramdisk.pack(
        [Entry.dir("etc", 0o755, MTIME), Entry.file("etc/hostname", b"second\n", 0o644, MTIME)],
        "zstd",
    )
    third = ramdisk.pack(
        [Entry.file("etc/hostname", b"third\n", 0o600, MTIME), Entry.file("new", b"n", 0o644)],
        "none",
    )
    data = first + b"\0" * 7
    data += second
    data += b"\0" * (-len(data) % 4 + 512)  # an uncompressed archive starts 4-aligned
    return data + third + b"\0" * 512


def test_segments_are_read_in_order_like_the_kernel(entries):
    data = concatenated(entries)
    segments = list(ramdisk.iter_segments(data))
    assert [s.compression for s in segments] == ["gz", "zstd", "none"]
    assert segments[0].offset == 0
    assert segments[1].offset == segments[0].end + 7
    assert segments[2].offset % 4 == 0
    assert segments[2].end < len(data)  # trailing zeros are padding
    merged = {e.path: e for e in ramdisk.read_entries(data)}
    assert merged["etc/hostname"].data == b"third\n"  # later segments win
    assert stat.S_IMODE(merged["etc/hostname"].mode) == 0o600
    assert merged["new"].data == b"n"
    assert merged["bin/tool"].data == entries[1].data
    assert len(merged) == len(entries) + 1


def test_one_compressed_stream_may_hold_several_archives(entries):
    inner = ramdisk.write_archive(entries) + b"\0" * 16
    inner += ramdisk.write_archive([Entry.file("extra", b"x")])
    (segment,) = ramdisk.iter_segments(ramdisk.compress(inner, "xz"))
    assert [e.name for e in segment.entries][-1] == "extra"
    junk = ramdisk.compress(ramdisk.write_archive(entries) + b"junk", "gz")
    with pytest.raises(RamdiskError, match=r"offset 0: gz segment, byte \d+ of its contents"):
        list(ramdisk.iter_segments(junk))


def test_read_ramdisk_and_extract_take_all_segments(tmp_path, entries):
    image = tmp_path / "initrd"
    image.write_bytes(concatenated(entries))
    names = {e.path for e in ramdisk.read_ramdisk(image)}
    assert {"bin/tool", "etc/hostname", "new"} <= names
    result = ramdisk.extract(image, tmp_path / "root")
    assert result.segments == ["gz", "zstd", "none"]
    assert (tmp_path / "root/etc/hostname").read_text() == "third\n"
    assert result.count == len(names)


def test_append_tree_adds_a_segment_compressed_like_the_first(tmp_path, entries):
    image = tmp_path / "initrd.cpio.zst"
    image.write_bytes(ramdisk.pack(entries, "zstd"))
    original = image.read_bytes()
    overlay = tmp_path / "overlay"
    (overlay / "lava-1234/bin").mkdir(parents=True)
    hello = overlay / "lava-1234/bin/hello"
    hello.write_text("#!/bin/sh\necho hello\n")
    hello.chmod(0o755)
    (overlay / "lava-1234/bin/link").symlink_to("hello")
    assert ramdisk.append_tree(image, overlay) == image
    data = image.read_bytes()
    assert data.startswith(original), "the original image is kept as it was"
    segments = list(ramdisk.iter_segments(data))
    assert [s.compression for s in segments] == ["zstd", "zstd"]
    added = {e.path: e for e in segments[1].entries}
    assert set(added) == {"lava-1234", "lava-1234/bin", "lava-1234/bin/hello", "lava-1234/bin/link"}
    assert added["lava-1234/bin/hello"].data == b"#!/bin/sh\necho hello\n"
    assert stat.S_IMODE(added["lava-1234/bin/hello"].mode) == 0o755
    assert added["lava-1234/bin/link"].kind == "symlink"
    assert all(e.uid == 0 and e.gid == 0 for e in added.values())
    # the tree's own root is not an entry: it would chmod the ramdisk's /
    assert "" not in added


def test_append_tree_with_other_compression_prefix_and_output(tmp_path, entries):
    image = tmp_path / "initrd.gz"
    image.write_bytes(ramdisk.pack(entries, "gz"))
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin/hello").write_text("hi")
    out = ramdisk.append_tree(image, tree, tmp_path / "out", compression="none", prefix="lava-9")
    assert out == tmp_path / "out"
    assert image.read_bytes() == ramdisk.pack(entries, "gz"), "input untouched"
    segments = list(ramdisk.iter_segments(out.read_bytes()))
    assert [s.compression for s in segments] == ["gz", "none"]
    assert segments[1].offset % 4 == 0
    assert [e.path for e in segments[1].entries] == ["lava-9", "lava-9/bin", "lava-9/bin/hello"]


def test_append_tarball_normalises_names(tmp_path, entries):
    image = tmp_path / "initrd"
    image.write_bytes(ramdisk.pack(entries, "xz"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("./lava-7/bin/run", b"run"), ("./lava-7/results", None)):
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o4755  # setuid in the tarball
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("lava-7/bin/again")
        info.type = tarfile.LNKTYPE
        info.linkname = "./lava-7/bin/run"
        tar.addfile(info)
    tarball = tmp_path / "overlay.tar.gz"
    tarball.write_bytes(buffer.getvalue())
    ramdisk.append_tarball(image, tarball)
    segments = list(ramdisk.iter_segments(image.read_bytes()))
    assert [s.compression for s in segments] == ["xz", "xz"]
    added = {e.path: e for e in segments[1].entries}
    assert added["lava-7"].kind == "dir"  # parents added
    assert added["lava-7/bin/again"].data == b"run"
    root = tmp_path / "root"
    ramdisk.extract(image, root)
    assert stat.S_IMODE((root / "lava-7/bin/run").stat().st_mode) == 0o755, "no setuid"
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../../etc/passwd")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(RamdiskError, match="climbs out of the root"):
        ramdisk.append_tarball(image, evil.getvalue())


def test_append_refuses_a_corrupt_ramdisk(tmp_path, entries):
    image = tmp_path / "initrd"
    image.write_bytes(ramdisk.pack(entries, "gz")[:-20])
    before = image.read_bytes()
    with pytest.raises(RamdiskError, match="offset 0: truncated gz data"):
        ramdisk.append_tree(image, tmp_path)
    assert image.read_bytes() == before
    assert list(tmp_path.iterdir()) == [image], "no temporary file left behind"


def test_repack_writes_one_archive_with_everything(tmp_path, entries):
    image = tmp_path / "initrd"
    image.write_bytes(concatenated(entries))
    extra = tmp_path / "extra"
    (extra / "lava-1/deep/er").mkdir(parents=True)
    (extra / "lava-1/deep/er/file").write_text("deep")
    (extra / "new").write_text("replaced")
    out = ramdisk.repack(image, tmp_path / "one.xz", extra, "xz")
    (segment,) = ramdisk.iter_segments(out.read_bytes())
    assert segment.compression == "xz"
    paths = [e.path for e in segment.entries]
    assert len(paths) == len(set(paths))
    for path in paths:  # parents before children: the kernel creates no missing directory
        parent = path.rpartition("/")[0]
        assert not parent or paths.index(parent) < paths.index(path)
    merged = {e.path: e for e in segment.entries}
    assert merged["etc/hostname"].data == b"third\n"
    assert merged["new"].data == b"replaced"
    assert merged["lava-1/deep/er/file"].data == b"deep"
    # unpacking the repacked image gives what unpacking the original plus extra gives
    ramdisk.extract(out, tmp_path / "a")
    ramdisk.extract(image, tmp_path / "b")
    ramdisk.extract(ramdisk.pack(ramdisk.entries_from_tree(extra), "none"), tmp_path / "b")
    assert tree_snapshot(tmp_path / "a") == tree_snapshot(tmp_path / "b")


def uimage(payload: bytes) -> bytes:
    """A legacy U-Boot ramdisk header, as `mkimage -A arm -T ramdisk -C none` writes."""
    fields = [0x27051956, 0, 0, len(payload), 0, 0, zlib.crc32(payload), 5, 2, 3, 0]
    header = struct.pack(">IIIIIIIBBBB32s", *fields, b"sim ramdisk")
    fields[1] = zlib.crc32(header)
    return struct.pack(">IIIIIIIBBBB32s", *fields, b"sim ramdisk") + payload


def test_uboot_header_is_skipped_and_kept_up_to_date(tmp_path, entries):
    image = tmp_path / "uInitrd"
    image.write_bytes(uimage(ramdisk.pack(entries, "gz")))
    (segment,) = ramdisk.iter_segments(image.read_bytes())
    assert segment.offset == 64
    overlay = tmp_path / "overlay"
    (overlay / "lava-5").mkdir(parents=True)
    (overlay / "lava-5/x").write_text("x")
    ramdisk.append_tree(image, overlay)
    data = image.read_bytes()
    header, payload = data[:64], data[64:]
    size, data_crc = struct.unpack(">I", header[12:16])[0], struct.unpack(">I", header[24:28])[0]
    assert size == len(payload) and data_crc == zlib.crc32(payload)
    zeroed = header[:4] + b"\0" * 4 + header[8:]
    assert struct.unpack(">I", header[4:8])[0] == zlib.crc32(zeroed)
    assert header[32:].rstrip(b"\0") == b"sim ramdisk"
    assert "lava-5/x" in {e.path for e in ramdisk.read_ramdisk(image)}
    with pytest.raises(RamdiskError, match="U-Boot image header announces"):
        ramdisk.read_entries(data[:-10])


def test_pack_tree_round_trips_a_directory(tmp_path):
    tree = tmp_path / "tree"
    (tree / "a/b").mkdir(parents=True)
    (tree / "a/b/f").write_bytes(b"\x00\x01binary")
    (tree / "a/exec").write_text("x")
    (tree / "a/exec").chmod(0o750)
    (tree / "a/b/up").symlink_to("../exec")
    (tree / "a").chmod(0o711)
    image = ramdisk.pack_tree(tree, tmp_path / "image.gz")
    ramdisk.extract(image, tmp_path / "out")
    assert tree_snapshot(tmp_path / "out") == tree_snapshot(tree)
    assert Path(tmp_path / "out/a/b/up").readlink() == Path("../exec")
