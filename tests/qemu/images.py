"""Real Linux for the QEMU tests: Debian kernels and busybox initramfs images.

The kernels and the static busybox binaries come from ``.ci/qemu-images``
(run as root), which keeps them in `images_dir()`:

    <dir>/<arch>/vmlinuz        the Debian kernel (a link into <arch>/boot/)
    <dir>/<arch>/busybox        a statically linked busybox for <arch>
    <dir>/<arch>/version        what they are (package versions)
    <dir>/<arch>/unavailable    why <arch> could not be prepared, if it could not

This module only reads them: `available(arch)` says why an arch cannot be
booted here ("" when it can), `build_initramfs` packs a busybox root with
`lava_dispatcher.ramdisk`, and `qemu_command`, `kernel`, `console` and
`kernel_append` give what a QEMU device runs:

    argv = [*qemu_command("arm64"), "-kernel", str(kernel("arm64")),
            "-initrd", str(build_initramfs(tmp / "initrd.gz", "arm64")),
            "-append", kernel_append("arm64")]

Arches are named as Debian names them, "amd64" and "arm64"; "x86_64" and
"aarch64" are accepted too. No pytest in here: benchmarks and scripts use it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lava_dispatcher import ramdisk
from lava_dispatcher.sim import rootfs

REPO = Path(__file__).resolve().parents[2]
ENV_DIR = "LAVA_QEMU_IMAGES"
SCRIPT = ".ci/qemu-images"

ARCHES = ("amd64", "arm64")
HOSTNAME = "lava-qemu"
PROMPT = f"root@{HOSTNAME}:~# "
LOGIN_PROMPT = "login: "  # busybox getty: "lava-qemu login: "
MARKER = "lava-qemu-init: started"  # the line /init prints once it runs
SHELL_EXITED = "lava-qemu-init: shell exited, powering off"
KERNEL_START = "Linux version"  # LAVA's kernel-start-message
PANIC = "Kernel panic - not syncing"
MTIME = 1_700_000_000  # the initramfs' file times (reproducible images)

# Applets the tests, the dispatcher's helper scripts and /init need.
APPLETS = (
    *rootfs.APPLETS,
    "init", "getty", "login", "setsid", "cttyhack", "poweroff", "reboot", "halt", "mdev",
    "ip", "ifconfig", "udhcpc", "route", "stty", "sync", "mknod", "ln", "rmdir",
    "umount", "nc", "seq", "sort", "uniq", "basename", "dirname", "readlink",
)  # fmt: skip
# Where an applet goes when the applet list cannot be asked from a runnable
# busybox of the same version (the rest go to /bin); /init then also runs
# `busybox --install -s` in the guest, which adds whatever is missing.
_SBIN = frozenset(
    (
        "init",
        "getty",
        "poweroff",
        "reboot",
        "halt",
        "mdev",
        "ip",
        "ifconfig",
        "udhcpc",
        "route",
        "mknod",
    )
)


@dataclass(frozen=True)
class Arch:
    """How QEMU runs one architecture."""

    name: str  # Debian's: amd64, arm64
    machine: str  # uname -m in the guest
    qemu: str
    machine_args: tuple[str, ...]
    console: str
    elf_machine: int  # ELF e_machine of its executables


_ARCHES = {
    "amd64": Arch("amd64", "x86_64", "qemu-system-x86_64", (), "ttyS0", 62),
    "arm64": Arch(
        "arm64", "aarch64", "qemu-system-aarch64", ("-machine", "virt", "-cpu", "cortex-a57"),
        "ttyAMA0", 183,
    ),
}  # fmt: skip
_ALIASES = {"amd64": "amd64", "x86_64": "amd64", "arm64": "arm64", "aarch64": "arm64"}


class ImagesError(RuntimeError):
    """An image cannot be had or built here; the message says why."""


def arch_info(arch: str) -> Arch:
    """The `Arch` for a name ("amd64", "x86_64", "arm64", "aarch64")."""
    name = _ALIASES.get(arch)
    if name is None:
        raise ValueError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHES)}")
    return _ARCHES[name]


def images_dir() -> Path:
    """Where .ci/qemu-images keeps its results: $LAVA_QEMU_IMAGES, by default
    .ci/cache/qemu in the repository."""
    configured = os.environ.get(ENV_DIR)
    return Path(configured) if configured else REPO / ".ci" / "cache" / "qemu"


def kernel(arch: str) -> Path:
    """The Debian kernel image for `arch` (vmlinuz: a bzImage on amd64, an
    arm64 Image on arm64)."""
    return images_dir() / arch_info(arch).name / "vmlinuz"


def busybox(arch: str) -> Path:
    """The static busybox for `arch`."""
    return images_dir() / arch_info(arch).name / "busybox"


def versions(arch: str) -> dict[str, str]:
    """What .ci/qemu-images recorded: kernel, release, busybox ({} if nothing)."""
    path = images_dir() / arch_info(arch).name / "version"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def console(arch: str) -> str:
    """The serial console's device name in the guest: ttyS0 or ttyAMA0."""
    return arch_info(arch).console


def guest_machine(arch: str) -> str:
    """What `uname -m` prints in the guest: x86_64 or aarch64."""
    return arch_info(arch).machine


def qemu_command(arch: str) -> list[str]:
    """The argv prefix a QEMU device runs (no -kernel/-initrd/-append yet):
    serial console on stdio, no monitor, 512 MiB, and exit instead of
    rebooting (so power-off, reboot and a panic with panic=-1 end QEMU)."""
    info = arch_info(arch)
    return [info.qemu, *info.machine_args, "-nographic", "-monitor", "none", "-m", "512",
            "-no-reboot"]  # fmt: skip


# With -nographic and "-monitor none", QEMU's serial console on stdio leaves
# the terminal's signal keys on: a Ctrl-C sent to the console ends QEMU
# ("terminating on signal 2") instead of reaching the guest. These options
# (after qemu_command's) give the guest its Ctrl-C.
CTRL_C_TO_GUEST = ("-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console")


def kernel_append(arch: str) -> str:
    """The kernel command line: the serial console, and reboot at once on a
    panic (with -no-reboot, QEMU exits). Boot messages stay visible, so
    "Linux version" (LAVA's kernel-start-message) is printed."""
    return f"console={console(arch)},115200 panic=-1"


def boot_command(
    arch: str,
    initramfs: str | os.PathLike[str],
    append: str = "",
    extra: Sequence[str] = (),
) -> list[str]:
    """The whole argv booting `kernel(arch)` with `initramfs`: `qemu_command`,
    then `extra` (more QEMU options, e.g. CTRL_C_TO_GUEST), -kernel, -initrd
    and -append with `kernel_append` (plus `append`)."""
    line = kernel_append(arch) + (f" {append}" if append else "")
    return [*qemu_command(arch), *extra, "-kernel", str(kernel(arch)), "-initrd",
            str(initramfs), "-append", line]  # fmt: skip


def _elf_machine(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def available(arch: str) -> str:
    """Why `arch` cannot be booted here (a sentence naming what is missing
    and how to get it), or "" when it can."""
    try:
        info = arch_info(arch)
    except ValueError as exc:
        return str(exc)
    directory = images_dir() / info.name
    hint = f"(run {SCRIPT} as root)"
    unavailable = directory / "unavailable"
    if unavailable.is_file():
        reason = unavailable.read_text().strip() or "no reason given"
        return f"{info.name}: {SCRIPT} could not prepare it: {reason}"
    if shutil.which(info.qemu) is None:
        return f"{info.qemu} is not installed {hint}"
    image = kernel(info.name)
    if not image.is_file():
        return f"no {info.name} kernel at {image} {hint}"
    binary = busybox(info.name)
    if not binary.is_file():
        return f"no {info.name} busybox at {binary} {hint}"
    if _elf_machine(binary) != info.elf_machine or not rootfs.is_static_elf(binary):
        return f"{binary} is not a static {info.machine} executable {hint}"
    return ""


# -- the initramfs ------------------------------------------------------------------

_PROFILE = f"""\
# /etc/profile of the {HOSTNAME} test initramfs
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME="${{HOME:-/root}}"
PS1='{PROMPT}'
"""

_UDHCPC_SCRIPT = """\
#!/bin/sh
# udhcpc's hook: configure the interface from the lease
case "$1" in
    deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route add default via "$r" dev "$interface"; break; done
        : > /etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done ;;
esac
exit 0
"""


def init_script(*, console_loglevel: int | None = 1) -> str:
    """The /init that `build_initramfs` writes (busybox sh, then busybox init).

    It mounts proc, sysfs, devtmpfs and devpts, sets the host name, prints
    MARKER, writes an /etc/inittab that runs /etc/lava-console once on the
    serial console (found in /sys/class/tty/console/active, as console=
    made it) and becomes busybox init, so that `poweroff`, `halt` and
    `reboot` work as on any system (with -no-reboot, each ends QEMU).
    `console_loglevel` (dmesg -n) keeps later kernel messages off the
    console (None: leave the kernel's); panics still show.
    """
    loglevel = "" if console_loglevel is None else f"dmesg -n {int(console_loglevel)}\n"
    return f"""\
#!/bin/sh
# /init of the {HOSTNAME} test initramfs (tests/qemu/images.py)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
/bin/busybox --install -s 2>/dev/null
hostname -F /etc/hostname
ip link set lo up 2>/dev/null
{loglevel}tty=$(cat /sys/class/tty/console/active 2>/dev/null)
tty=${{tty##* }}
[ -n "$tty" ] && [ -e "/dev/$tty" ] || tty=console
echo "{MARKER} on $tty ($(uname -m), Linux $(uname -r))"
printf '%s::once:/etc/lava-console %s\\n::ctrlaltdel:/sbin/reboot\\n' "$tty" "$tty" > /etc/inittab
exec /sbin/init
"""


def console_script(*, login: bool = True) -> str:
    """/etc/lava-console TTY, run once by init on the serial console (its
    stdin, stdout and stderr): a login prompt (busybox getty and login;
    root has no password) or, without `login`, a root login shell at once;
    when that ends, power off."""
    run = 'getty -L 115200 "$1" vt100' if login else "cd /root && /bin/sh -l"
    return f"""\
#!/bin/sh
# the {HOSTNAME} serial console, run by init (see /etc/inittab)
trap : INT QUIT  # Ctrl-C is for the shell below: this script outlives it
{run}
echo "{SHELL_EXITED}"
exec poweroff
"""


def _applet_lister(arch: str, binary: Path) -> Path | None:
    """A busybox that can run here and lists the same applets as `binary`:
    `binary` itself for the host's arch, else the host's busybox when it is
    the same version (Debian builds both from one configuration)."""
    if os.uname().machine == arch_info(arch).machine:
        return binary
    try:
        host = rootfs.find_busybox()
    except rootfs.RootfsError:
        return None

    def version(path: Path) -> bytes | None:
        found = re.search(rb"BusyBox v[0-9][^ \0]*", path.read_bytes())
        return found.group(0) if found else None

    same = version(binary)
    return host if same is not None and version(host) == same else None


def _busybox_tree(root: Path, arch: str, binary: Path) -> Path:
    """The busybox root of lava_dispatcher.sim.rootfs, with `binary` as
    /bin/busybox and its applets linked where they belong."""
    lister = _applet_lister(arch, binary)
    if lister is not None:
        try:
            rootfs.build_busybox_rootfs(root, hostname=HOSTNAME, busybox=str(lister))
        except rootfs.RootfsError as exc:
            raise ImagesError(f"cannot build the {arch} root file system: {exc}")
        shutil.copyfile(binary, root / "bin" / "busybox")
    else:  # no runnable busybox to ask: the applets this module needs, in /bin and /sbin
        for name, mode in rootfs.DIRECTORIES.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            os.chmod(root / name, mode)
        shutil.copyfile(binary, root / "bin" / "busybox")
        for applet in APPLETS:
            link = root / ("sbin" if applet in _SBIN else "bin") / applet
            if not os.path.lexists(link):
                link.symlink_to("../bin/busybox" if applet in _SBIN else "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    present = {path.name for path in root.rglob("*") if path.is_symlink()}
    missing = [applet for applet in APPLETS if applet not in present]
    if missing:
        raise ImagesError(f"{binary} lacks applets the initramfs needs: {' '.join(missing)}")
    return root


def build_initramfs(
    dest: str | os.PathLike[str],
    arch: str,
    *,
    init: str | None = None,
    login: bool = True,
    compression: str = "gz",
    console_loglevel: int | None = 1,
) -> Path:
    """A busybox initramfs for `arch` at `dest` (written atomically; returns it).

    It holds /bin/busybox for that arch with a link for each applet,
    /etc/passwd (root, no password), /etc/group, /etc/hostname (lava-qemu),
    /etc/profile (PS1 = PROMPT), /dev/console, the directories of a root
    file system, /etc/lava-console (`console_script(login=...)`) and /init:
    `init_script(console_loglevel=...)`, or the script `init` given (a
    test's own PID 1). Packed with
    lava_dispatcher.ramdisk as one cpio newc archive, compressed with
    `compression` (gz, xz, zstd or none). ImagesError when `arch` is not
    available (see `available`).
    """
    info = arch_info(arch)
    binary = busybox(info.name)
    if not binary.is_file() or _elf_machine(binary) != info.elf_machine:
        raise ImagesError(available(info.name) or f"{binary}: not a busybox for {info.name}")
    with tempfile.TemporaryDirectory(prefix="lava-qemu-initramfs-") as directory:
        root = _busybox_tree(Path(directory) / "root", info.name, binary)
        etc = root / "etc"
        (etc / "passwd").write_text("root::0:0:root:/root:/bin/sh\n")
        (etc / "group").write_text("root:x:0:\n")
        (etc / "hostname").write_text(f"{HOSTNAME}\n")
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n")
        (etc / "profile").write_text(_PROFILE)
        script = root / "usr" / "share" / "udhcpc" / "default.script"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(_UDHCPC_SCRIPT)
        script.chmod(0o755)
        for name, text in (
            ("init", init if init is not None else init_script(console_loglevel=console_loglevel)),
            ("etc/lava-console", console_script(login=login)),
        ):
            (root / name).write_text(text)
            (root / name).chmod(0o755)
        entries = ramdisk.entries_from_tree(root, mtime=MTIME)
        entries.append(ramdisk.Entry("dev/console", stat.S_IFCHR | 0o600, mtime=MTIME, rdev=(5, 1)))
        data = ramdisk.pack(ramdisk.with_parents(entries), compression)
    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
