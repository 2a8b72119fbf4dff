"""Root file systems for the simulated board: a minimal busybox root, as a
directory (`sim run --rootfs DIR`) or packed as an initramfs (`--ramdisk`).

    root = build_busybox_rootfs(tmp_path / "root")
    initrd = build_busybox_initramfs(tmp_path / "initrd.cpio.gz")

The root holds /bin/busybox, copied from the host's statically linked
busybox (Debian: busybox-static), with a symbolic link for each of its
applets at the place `busybox --list-full` gives (sh, ls, cat, mount, tar,
wget, ...); /etc/passwd, /etc/group and /etc/hostname; and the empty
directories a root needs (/proc, /dev, /sys, /run, /tmp, /root, ...).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from lava_dispatcher import ramdisk

# Applets the tests and the dispatcher's helper scripts rely on.
APPLETS = (
    "sh",
    "ls",
    "cat",
    "echo",
    "mkdir",
    "rm",
    "mount",
    "tar",
    "gzip",
    "gunzip",
    "base64",
    "sha256sum",
    "md5sum",
    "wget",
    "sleep",
    "uname",
    "ps",
    "head",
    "tail",
    "tr",
    "sed",
    "grep",
    "awk",
    "cut",
    "wc",
    "printf",
    "test",
    "[",
    "env",
    "id",
    "hostname",
    "dmesg",
    "find",
    "chmod",
    "touch",
    "cp",
    "mv",
    "date",
    "kill",
    "true",
    "false",
    "xargs",
)
DIRECTORIES = {
    "bin": 0o755,
    "sbin": 0o755,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "etc": 0o755,
    "dev": 0o755,
    "proc": 0o555,
    "sys": 0o555,
    "run": 0o755,
    "tmp": 0o1777,
    "root": 0o700,
    "var": 0o755,
    "mnt": 0o755,
}
BUSYBOX_PLACES = ("/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox")


class RootfsError(RuntimeError):
    """A root file system cannot be built here (no static busybox, say)."""


def is_static_elf(path: str | os.PathLike[str]) -> bool:
    """True for an ELF executable without a program interpreter (static)."""
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if ident[:4] != b"\x7fELF" or len(ident) < 64:
                return False
            wide = ident[4] == 2
            order = "<" if ident[5] == 1 else ">"
            if wide:
                (phoff,) = struct.unpack_from(order + "Q", ident, 32)
                phentsize, phnum = struct.unpack_from(order + "HH", ident, 54)
            else:
                (phoff,) = struct.unpack_from(order + "I", ident, 28)
                phentsize, phnum = struct.unpack_from(order + "HH", ident, 42)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(phnum):
        if len(table) < (i + 1) * phentsize:
            return False
        (kind,) = struct.unpack_from(order + "I", table, i * phentsize)
        if kind == 3:  # PT_INTERP: needs a dynamic loader
            return False
    return True


def find_busybox() -> Path:
    """The host's statically linked busybox, or RootfsError saying why not."""
    candidates = [p for p in (shutil.which("busybox"), *BUSYBOX_PLACES) if p]
    present = [p for p in dict.fromkeys(candidates) if os.path.isfile(p)]
    for path in present:
        if is_static_elf(path):
            return Path(path)
    if present:
        raise RootfsError(
            f"busybox at {present[0]} is dynamically linked: a root file system needs a "
            "static one (Debian/Ubuntu: apt install busybox-static)"
        )
    raise RootfsError("busybox is not installed (Debian/Ubuntu: apt install busybox-static)")


def _applet_paths(busybox: Path) -> list[str]:
    """Where each applet goes ('bin/sh', 'usr/bin/wget', ...)."""
    try:
        result = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RootfsError(f"cannot run {busybox}: {exc}")
    paths = [line.strip().lstrip("/") for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not paths:
        raise RootfsError(f"{busybox} --list-full gave no applets: {result.stderr.strip()}")
    return paths


def build_busybox_rootfs(
    dest: str | os.PathLike[str], *, hostname: str = "sim", busybox: str | None = None
) -> Path:
    """A minimal busybox root file system in `dest` (created; it must be
    empty if it exists). Returns `dest`."""
    root = Path(dest)
    source = Path(busybox) if busybox else find_busybox()
    if busybox and not is_static_elf(source):
        raise RootfsError(f"{source} is not a statically linked executable")
    applets = _applet_paths(source)
    names = {os.path.basename(p) for p in applets}
    missing = [a for a in APPLETS if a not in names]
    if missing:
        raise RootfsError(f"{source} lacks applets: {' '.join(missing)}")
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise RootfsError(f"{root} is not empty")
    for name, mode in DIRECTORIES.items():
        (root / name).mkdir(exist_ok=True)
        os.chmod(root / name, mode)
    shutil.copyfile(source, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    for applet in applets:
        if os.path.basename(applet) == "busybox":
            continue
        link = root / applet
        if os.path.lexists(link):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(root / "bin" / "busybox", link.parent))
    etc = root / "etc"
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "hostname").write_text(f"{hostname}\n")
    (etc / "profile").write_text('export PATH="$PATH:/usr/sbin:/usr/bin:/sbin:/bin"\n')
    return root


def build_busybox_initramfs(
    path: str | os.PathLike[str],
    compression: str = "gz",
    *,
    hostname: str = "sim",
    busybox: str | None = None,
) -> Path:
    """The busybox root of `build_busybox_rootfs` packed as a ramdisk at
    `path` (one cpio newc archive, compressed as asked). Returns `path`."""
    with tempfile.TemporaryDirectory(prefix="lava-sim-rootfs-") as directory:
        root = build_busybox_rootfs(Path(directory) / "root", hostname=hostname, busybox=busybox)
        return ramdisk.pack_tree(root, path, compression)
