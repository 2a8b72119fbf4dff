"""Unpacking is safe: nothing is ever written outside the destination, and
the reader meets corrupt input with RamdiskError and nothing else."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lava_dispatcher import ramdisk
from lava_dispatcher.ramdisk import Entry, RamdiskError

from .conftest import sample_entries, tree_snapshot


def test_absolute_names_are_unpacked_under_dest(tmp_path):
    image = ramdisk.pack(
        [Entry.dir("/etc"), Entry.file("/etc/motd", b"hi"), Entry.file("./x//y/../z", b"z")],
        "none",
    )
    ramdisk.extract(image, tmp_path / "root")
    assert (tmp_path / "root/etc/motd").read_bytes() == b"hi"
    assert (tmp_path / "root/x/z").read_bytes() == b"z"
    assert sorted(os.listdir(tmp_path)) == ["root"]


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/../escape", "..", "./../x"])
def test_names_climbing_out_are_refused_before_anything_is_written(tmp_path, name):
    image = ramdisk.pack([Entry.file("first", b"1"), Entry.file(name, b"evil")], "gz")
    with pytest.raises(RamdiskError, match=r"climbs out of the root with '\.\.': refused"):
        ramdisk.extract(image, tmp_path / "root")
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "root/first").exists(), "names are checked before writing"


def test_symlinks_are_created_but_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    image = ramdisk.pack(
        [
            Entry.symlink("up", "../outside"),
            Entry.symlink("abs", str(outside)),
            Entry.symlink("passwd", "/etc/passwd"),
        ],
        "none",
    )
    ramdisk.extract(image, tmp_path / "root")
    assert os.readlink(tmp_path / "root/up") == "../outside"
    assert os.readlink(tmp_path / "root/passwd") == "/etc/passwd"
    for evil in ("up/pwned", "abs/pwned"):
        attack = ramdisk.pack([Entry.symlink(evil.split("/")[0], "../outside")], "none")
        attack += ramdisk.pack([Entry.file(evil, b"pwned")], "gz")
        with pytest.raises(
            RamdiskError, match="is a symbolic link, which extraction never follows"
        ):
            ramdisk.extract(attack, tmp_path / "root2")
    # a file over an existing link replaces the link, it does not write through it
    replace = ramdisk.pack([Entry.symlink("target", "../outside/file")], "none")
    replace += ramdisk.pack([Entry.file("target", b"inside")], "none")
    ramdisk.extract(replace, tmp_path / "root3")
    assert (tmp_path / "root3/target").read_bytes() == b"inside"
    assert not (tmp_path / "root3/target").is_symlink()
    assert os.listdir(outside) == []


def test_device_nodes_fifos_are_skipped_and_logged(tmp_path, caplog):
    nodes = [
        Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        Entry("dev/sda", stat.S_IFBLK | 0o660, rdev=(8, 0)),
        Entry("run/fifo", stat.S_IFIFO | 0o644),
        Entry("odd", 0o644),  # no file type at all
    ]
    image = ramdisk.pack([Entry.dir("dev"), *nodes, Entry.file("ok", b"ok")], "gz")
    with caplog.at_level(logging.INFO, logger="lava_dispatcher.ramdisk"):
        result = ramdisk.extract(image, tmp_path / "root")
    assert result.skipped == [
        ("dev/console", "chardev"),
        ("dev/sda", "blockdev"),
        ("run/fifo", "fifo"),
        ("odd", "unknown"),
    ]
    assert "skipping dev/console (chardev)" in caplog.text
    assert sorted(os.listdir(tmp_path / "root")) == ["dev", "ok"]
    assert os.listdir(tmp_path / "root/dev") == []


def test_modes_kept_without_setuid_setgid_and_times_kept(tmp_path):
    image = ramdisk.pack(
        [
            Entry.file("suid", b"x", 0o4755, mtime=1234567890),
            Entry.file("sgid", b"x", 0o2750),
            Entry.dir("sticky", 0o1777, mtime=1000),
            Entry.dir("locked", 0o500),
            Entry.file("locked/inside", b"written before the directory was locked", 0o400),
        ],
        "none",
    )
    ramdisk.extract(image, tmp_path / "root")
    root = tmp_path / "root"
    assert stat.S_IMODE((root / "suid").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "sgid").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "sticky").stat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "locked").stat().st_mode) == 0o500
    assert (root / "suid").stat().st_mtime == 1234567890
    assert (root / "sticky").stat().st_mtime == 1000
    (root / "locked").chmod(0o700)


def test_later_entries_replace_earlier_ones_of_another_kind(tmp_path):
    image = ramdisk.pack([Entry.dir("a"), Entry.file("a/x", b"x"), Entry.file("b", b"b")], "gz")
    image += ramdisk.pack([Entry.file("a", b"now a file"), Entry.dir("b", 0o700)], "zstd")
    ramdisk.extract(image, tmp_path / "root")
    assert (tmp_path / "root/a").read_bytes() == b"now a file"
    assert (tmp_path / "root/b").is_dir()


def test_a_file_as_the_root_or_a_parent_is_refused(tmp_path):
    with pytest.raises(RamdiskError, match="names the root but is a file"):
        ramdisk.extract(ramdisk.pack([Entry.file(".", b"x")], "none"), tmp_path / "r1")
    image = ramdisk.pack([Entry.file("f", b"x"), Entry.file("f/g", b"y")], "none")
    with pytest.raises(RamdiskError, match="its parent 'f' is not a directory"):
        ramdisk.extract(image, tmp_path / "r2")


# -- fuzzing ----------------------------------------------------------------------

SAMPLE = ramdisk.pack(sample_entries(), "none")
SAMPLES = [SAMPLE, *(ramdisk.pack(sample_entries(), c) for c in ("gz", "xz", "zstd"))]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def unpack_in_a_box(data: bytes) -> None:
    """extract() into box/dest; nothing may appear in box but dest, and the
    only exception allowed is RamdiskError."""
    with tempfile.TemporaryDirectory() as box:
        dest = Path(box) / "dest"
        try:
            ramdisk.extract(data, dest, max_size=1 << 22)
        except RamdiskError:
            pass
        assert sorted(os.listdir(box)) in ([], ["dest"]), os.listdir(box)
        for directory, dirnames, _ in os.walk(box):  # make everything removable
            for name in dirnames:
                path = os.path.join(directory, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o700)


def read_or_refuse(data: bytes) -> None:
    try:
        segments = list(ramdisk.iter_segments(data, max_size=1 << 22))
    except RamdiskError as exc:
        assert str(exc)
        return
    for segment in segments:
        assert 0 <= segment.offset < segment.end <= len(data)


@FUZZ
@given(st.binary(max_size=2048))
@example(b"070701" + b"0" * 104)
@example(b"\x1f\x8b")
@example(b"BZh9")
def test_random_bytes(data):
    read_or_refuse(data)
    unpack_in_a_box(data)


@FUZZ
@given(st.sampled_from(SAMPLES), st.integers(min_value=0, max_value=len(SAMPLE)))
def test_truncated_archives(sample, length):
    read_or_refuse(sample[:length])
    unpack_in_a_box(sample[:length])


@FUZZ
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_archives(sample, changes):
    data = bytearray(sample)
    for position, value in changes:
        data[position % len(data)] = value
    read_or_refuse(bytes(data))
    unpack_in_a_box(bytes(data))


NAMES = st.lists(
    st.sampled_from(["a", "b", "..", ".", "", "/", "etc", "x" * 300]), min_size=1, max_size=5
).map("/".join)
ENTRIES = st.builds(
    lambda name, kind, data, mode: {
        "file": Entry.file(name, data, mode),
        "dir": Entry.dir(name, mode),
        "symlink": Entry.symlink(name, (data.decode("latin-1") or "x").replace("\0", "")),
        "node": Entry(name, stat.S_IFCHR | 0o666, rdev=(1, 3)),
    }[kind],
    NAMES,
    st.sampled_from(["file", "dir", "symlink", "node"]),
    st.sampled_from([b"", b"data", b"/", b"..", b"../..", b"/tmp", b"a/b"]),
    st.integers(0, 0o7777),
)


@FUZZ
@given(st.lists(st.lists(ENTRIES, max_size=6), min_size=1, max_size=3))
def test_adversarial_entries_never_escape(segments):
    data = b"".join(ramdisk.pack(entries, "none") for entries in segments)
    read_or_refuse(data)
    unpack_in_a_box(data)


def test_an_unpacked_sample_matches_its_entries(tmp_path):
    ramdisk.extract(SAMPLES[1], tmp_path)
    snapshot = tree_snapshot(tmp_path)
    for entry in sample_entries():
        kind, mode, data = snapshot[entry.path]
        assert kind == entry.kind
        if kind == "file":
            assert (mode, data) == (entry.mode & 0o777, entry.data)
