"""Cross-checks with GNU cpio(1): it reads what we write, we read what it writes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lava_dispatcher import ramdisk

from .conftest import describe, sample_entries, tree_snapshot

pytestmark = pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio(1) is not installed")


def cpio(args: list[str], cwd: Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        ["cpio", *args], cwd=cwd, input=stdin, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    return result


def make_tree(root: Path) -> Path:
    (root / "lava-42/bin").mkdir(parents=True)
    (root / "lava-42/bin/lava-test-runner").write_text("#!/bin/sh\necho runner\n")
    (root / "lava-42/bin/lava-test-runner").chmod(0o755)
    (root / "lava-42/secret").write_bytes(b"\x00\xff" * 1000)
    (root / "lava-42/secret").chmod(0o600)
    (root / "lava-42/odd").write_text("abc")
    (root / "lava-42/bin/runner").symlink_to("lava-test-runner")
    (root / "lava-42/empty").mkdir(mode=0o700)
    os.link(root / "lava-42/odd", root / "lava-42/odd-link")
    return root


def test_cpio_lists_and_extracts_what_we_write(tmp_path):
    archive = ramdisk.write_archive(sample_entries())
    listing = cpio(["-t"], tmp_path, archive).stdout.decode().split()
    assert listing == [e.name for e in sample_entries()]
    out = tmp_path / "out"
    out.mkdir()
    result = cpio(["-idmv", "--no-absolute-filenames"], out, archive)
    assert "bin/tool" in result.stderr.decode()
    ours = tmp_path / "ours"
    ramdisk.extract(archive, ours)
    assert tree_snapshot(out) == tree_snapshot(ours)
    assert (out / "etc/hostname").stat().st_mtime == sample_entries()[3].mtime


def test_cpio_extracts_an_appended_overlay_segment(tmp_path):
    tree = make_tree(tmp_path / "tree")
    image = tmp_path / "initrd"
    image.write_bytes(ramdisk.write_archive(sample_entries()))
    ramdisk.append_tree(image, tree, compression="none")
    # cpio reads one archive a run: the second starts where the first ended
    (_, second) = ramdisk.iter_segments(image.read_bytes())
    data = image.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    cpio(["-idm"], out, data[second.offset :])
    assert (out / "lava-42/bin/lava-test-runner").read_text() == "#!/bin/sh\necho runner\n"
    assert os.readlink(out / "lava-42/bin/runner") == "lava-test-runner"


@pytest.mark.parametrize("form", ["newc", "crc"])
def test_we_read_what_cpio_writes(tmp_path, form):
    tree = make_tree(tmp_path / "tree")
    names = subprocess.run(
        ["find", "."], cwd=tree, capture_output=True, check=True, timeout=60
    ).stdout
    archive = cpio(["-o", "-H", form], tree, names).stdout
    assert len(archive) % 512 == 0, "cpio pads to its block size"
    entries = ramdisk.read_entries(archive)
    by_path = {e.path: e for e in entries}
    assert "" in by_path and by_path[""].kind == "dir"  # find lists "." itself
    assert by_path["lava-42/odd"].data == by_path["lava-42/odd-link"].data == b"abc"
    assert by_path["lava-42/bin/runner"].target == "lava-test-runner"
    out = tmp_path / "out"
    ramdisk.extract(archive, out)
    assert tree_snapshot(out) == tree_snapshot(tree)
    # and compressed, the way initramfs tools ship it
    again = ramdisk.read_entries(ramdisk.compress(archive, "gz"))
    assert describe(again) == describe(entries)
