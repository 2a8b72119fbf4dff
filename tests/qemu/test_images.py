"""Real Debian kernels booting busybox initramfs images under QEMU (TCG).

The images come from .ci/qemu-images; an arch that is not prepared here is
skipped with the reason. The boot tests print how long each step took
(seconds since QEMU was spawned; see them with `pytest -s` or -rA).
"""

from __future__ import annotations

import gzip
import hashlib
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lava_dispatcher import ramdisk

from . import images
from .conftest import BOOT_DEADLINE, STEP_DEADLINE, ImageServer, QemuImages

ARCHES = images.ARCHES
BIN_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin")


# -- the helpers, without QEMU ---------------------------------------------------------


def test_commands_per_arch() -> None:
    assert images.qemu_command("amd64") == [
        "qemu-system-x86_64", "-nographic", "-monitor", "none", "-m", "512", "-no-reboot",
    ]  # fmt: skip
    assert images.qemu_command("aarch64") == [
        "qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a57", "-nographic",
        "-monitor", "none", "-m", "512", "-no-reboot",
    ]  # fmt: skip
    assert (images.console("x86_64"), images.console("arm64")) == ("ttyS0", "ttyAMA0")
    for arch in ARCHES:
        append = images.kernel_append(arch).split()
        assert f"console={images.console(arch)},115200" in append
        assert "panic=-1" in append
        assert "quiet" not in append  # "Linux version" must be printed
        assert images.kernel(arch) == images.images_dir() / arch / "vmlinuz"
    with pytest.raises(ValueError, match="unknown architecture"):
        images.qemu_command("mips")


def test_images_dir_and_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(images.ENV_DIR, str(tmp_path))
    assert images.images_dir() == tmp_path
    for arch in ARCHES:
        reason = images.available(arch)
        assert reason  # nothing prepared in an empty directory
        if "is not installed" not in reason:
            assert "kernel" in reason and ".ci/qemu-images" in reason
    (tmp_path / "arm64").mkdir()
    (tmp_path / "arm64" / "unavailable").write_text("no arm64 in the sources\n")
    assert "no arm64 in the sources" in images.available("arm64")
    assert "unknown architecture" in images.available("sparc")


@pytest.mark.parametrize("arch", ARCHES)
def test_initramfs_contents(arch: str, tmp_path: Path) -> None:
    if not images.busybox(arch).is_file():
        pytest.skip(images.available(arch) or f"no {arch} busybox")
    path = images.build_initramfs(tmp_path / "initrd.cpio.gz", arch)
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b"
    segments = list(ramdisk.iter_segments(data))
    assert [s.compression for s in segments] == ["gz"]
    entries = {e.path: e for e in segments[0].entries}
    busybox = entries["bin/busybox"]
    assert busybox.data == images.busybox(arch).read_bytes()
    assert stat.S_IMODE(busybox.mode) == 0o755
    for applet in images.APPLETS:
        links = [entries[f"{d}/{applet}"] for d in BIN_DIRS if f"{d}/{applet}" in entries]
        assert links and all(e.kind == "symlink" for e in links), applet
        assert links[0].target.endswith("busybox"), applet
    init = entries["init"]
    assert init.kind == "file" and stat.S_IMODE(init.mode) == 0o755
    assert init.data.startswith(b"#!/bin/sh\n") and images.MARKER.encode() in init.data
    assert entries["etc/passwd"].data == b"root::0:0:root:/root:/bin/sh\n"
    assert entries["etc/hostname"].data == b"lava-qemu\n"
    assert f"PS1='{images.PROMPT}'".encode() in entries["etc/profile"].data
    assert b"getty" in entries["etc/lava-console"].data
    console = entries["dev/console"]
    assert console.kind == "chardev" and console.rdev == (5, 1)
    for directory in ("proc", "sys", "dev", "tmp", "root", "etc"):
        assert entries[directory].kind == "dir"
    # reproducible: the same inputs give the same bytes
    again = images.build_initramfs(tmp_path / "again.cpio.gz", arch)
    assert again.read_bytes() == data


@pytest.mark.parametrize("compression", ["none", "xz", "zstd"])
def test_initramfs_variants(compression: str, tmp_path: Path) -> None:
    arch = "amd64" if images.busybox("amd64").is_file() else "arm64"
    if not images.busybox(arch).is_file():
        pytest.skip(images.available(arch) or "no busybox prepared")
    own = "#!/bin/sh\necho mine\n"
    path = images.build_initramfs(
        tmp_path / "initrd", arch, init=own, login=False, compression=compression
    )
    assert ramdisk.detect_compression(path.read_bytes()[:8]) == compression
    entries = {e.path: e for e in ramdisk.read_ramdisk(path)}
    assert entries["init"].data == own.encode()
    assert b"getty" not in entries["etc/lava-console"].data
    assert b"/bin/sh -l" in entries["etc/lava-console"].data


def test_initramfs_without_a_runnable_busybox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No busybox here can list the applets (another arch, another version):
    the needed ones go to /bin and /sbin, /init installs the rest at boot."""
    arch = "arm64" if images.busybox("arm64").is_file() else "amd64"
    if not images.busybox(arch).is_file():
        pytest.skip(images.available(arch) or "no busybox prepared")
    monkeypatch.setattr(images, "_applet_lister", lambda arch, binary: None)
    entries = {
        e.path: e for e in ramdisk.read_ramdisk(images.build_initramfs(tmp_path / "i", arch))
    }
    assert entries["sbin/init"].target == "../bin/busybox"
    assert entries["bin/sh"].target == "busybox"
    assert not any(path.startswith("usr/bin/") for path in entries)
    assert b"busybox --install -s" in entries["init"].data


# -- the HTTP server ---------------------------------------------------------------------


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def test_image_server_serves_and_counts(image_server: ImageServer, tmp_path: Path) -> None:
    image_server.reset()
    blob = tmp_path / "vmlinuz"
    blob.write_bytes(gzip.compress(b"kernel" * 1000))
    url = image_server.publish(blob)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/vmlinuz")
    assert _get(url) == blob.read_bytes()
    odd = image_server.publish(blob, "dir/with space.img")
    assert hashlib.sha256(_get(odd)).digest() == hashlib.sha256(blob.read_bytes()).digest()
    assert _get(url) == blob.read_bytes()
    with pytest.raises(urllib.error.HTTPError) as missing:
        _get(image_server.url("nothing-here"))
    assert missing.value.code == 404
    assert image_server.requests("vmlinuz") == 2
    assert image_server.requests("/dir/with space.img") == 1
    assert image_server.requests("nothing-here") == 1
    assert image_server.requests("never-asked") == 0
    assert image_server.requests() == 4
    image_server.reset()
    assert image_server.requests() == 0


# -- booting for real -------------------------------------------------------------------------


def _report(arch: str, what: str, times: dict[str, float]) -> None:
    steps = ", ".join(f"{name}: {seconds:.1f} s" for name, seconds in times.items())
    print(f"\n[{arch}] {what}: {steps}")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHES)
def test_boot_login_shell_poweroff(
    arch: str, qemu_images: QemuImages, qemu_spawn, record_property
) -> None:
    image = qemu_images.require(arch)
    qemu = qemu_spawn(image.command())
    qemu.expect(images.KERNEL_START, BOOT_DEADLINE, name="Linux version")
    qemu.expect(images.MARKER, BOOT_DEADLINE, name="marker")
    qemu.expect(images.LOGIN_PROMPT, BOOT_DEADLINE, name="login prompt")
    qemu.child.sendline("root")
    qemu.expect(images.PROMPT, STEP_DEADLINE, name="shell prompt")
    assert qemu.run("uname -m") == images.guest_machine(arch)
    assert qemu.run("echo $((6*7))") == "42"
    assert qemu.run("id -u; hostname; cat /proc/1/comm") == "0\nlava-qemu\ninit"
    qemu.child.sendline("poweroff")
    assert qemu.wait_exit(STEP_DEADLINE) == 0
    _report(arch, "login boot", qemu.times)
    record_property(f"{arch}-login-boot-seconds", qemu.times)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHES)
def test_boot_straight_to_a_shell(arch: str, qemu_images: QemuImages, qemu_spawn) -> None:
    image = qemu_images.require(arch)
    initramfs = qemu_images.build(arch, "shell.cpio.gz", login=False)
    qemu = qemu_spawn(image.command(initramfs, extra=images.CTRL_C_TO_GUEST))
    qemu.expect(images.KERNEL_START, BOOT_DEADLINE, name="Linux version")
    qemu.expect(images.MARKER, BOOT_DEADLINE, name="marker")
    qemu.expect(images.PROMPT, BOOT_DEADLINE, name="shell prompt")
    assert qemu.run("uname -m") == images.guest_machine(arch)
    assert qemu.run("echo $((6*7))") == "42"
    # commands start with no signal ignored, and Ctrl-C reaches them
    assert qemu.run("grep SigIgn /proc/self/status") == "SigIgn:\t0000000000000000"
    # (printed by the child once it is the terminal's foreground process group)
    qemu.child.sendline("sh -c 'echo sleeping; exec sleep 600'")
    qemu.expect("sleeping\r", STEP_DEADLINE)  # the output, not the echo
    qemu.child.sendcontrol("c")
    qemu.expect(images.PROMPT, STEP_DEADLINE)
    assert qemu.run("echo still here") == "still here"
    # the shell ending powers the machine off
    qemu.child.sendline("exit")
    qemu.expect(images.SHELL_EXITED, STEP_DEADLINE)
    assert qemu.wait_exit(STEP_DEADLINE) == 0
    _report(arch, "no-login boot", qemu.times)


@pytest.mark.slow
def test_ctrl_c_ends_qemu_with_the_plain_command(qemu_images: QemuImages, qemu_spawn) -> None:
    """A pitfall worth a test: with qemu_command alone, Ctrl-C is QEMU's."""
    arch = next((a for a in ARCHES if not qemu_images.available(a)), ARCHES[0])
    qemu = qemu_spawn(qemu_images.require(arch).command())
    qemu.expect(images.KERNEL_START, BOOT_DEADLINE)
    qemu.child.sendcontrol("c")
    qemu.expect("terminating on signal 2", STEP_DEADLINE)
    qemu.wait_exit(STEP_DEADLINE)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHES)
def test_init_exiting_panics_and_qemu_exits(arch: str, qemu_images: QemuImages, qemu_spawn) -> None:
    image = qemu_images.require(arch)
    initramfs = qemu_images.build(
        arch, "panic.cpio.gz", init="#!/bin/sh\necho 'lava-qemu-init: leaving at once'\nexit 3\n"
    )
    qemu = qemu_spawn(image.command(initramfs))
    qemu.expect(images.KERNEL_START, BOOT_DEADLINE, name="Linux version")
    qemu.expect("lava-qemu-init: leaving at once", BOOT_DEADLINE, name="init")
    qemu.expect(images.PANIC, STEP_DEADLINE, name="panic")
    qemu.expect("Attempted to kill init!", STEP_DEADLINE)
    # panic=-1 reboots at once, and -no-reboot turns that into QEMU's exit
    assert qemu.wait_exit(STEP_DEADLINE) == 0
    _report(arch, "panic", qemu.times)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHES)
def test_reboot_ends_qemu(arch: str, qemu_images: QemuImages, qemu_spawn) -> None:
    image = qemu_images.require(arch)
    initramfs = qemu_images.build(arch, "shell.cpio.gz", login=False)
    qemu = qemu_spawn(image.command(initramfs))
    qemu.expect(images.PROMPT, BOOT_DEADLINE, name="shell prompt")
    qemu.child.sendline("reboot")
    qemu.expect("Requesting system reboot", STEP_DEADLINE)
    assert qemu.wait_exit(STEP_DEADLINE) == 0


@pytest.mark.slow
def test_initramfs_without_a_runnable_busybox_boots(
    qemu_images: QemuImages, qemu_spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    arch = next((a for a in reversed(ARCHES) if not qemu_images.available(a)), ARCHES[-1])
    image = qemu_images.require(arch)
    monkeypatch.setattr(images, "_applet_lister", lambda arch, binary: None)
    initramfs = qemu_images.build(arch, "fallback.cpio.gz", login=False)
    qemu = qemu_spawn(image.command(initramfs))
    qemu.expect(images.PROMPT, BOOT_DEADLINE)
    # /usr/bin/wc and /usr/bin/seq were not in the image: busybox --install made them
    assert qemu.run("readlink /usr/bin/wc; seq 3 | wc -l") == "/bin/busybox\n3"
    qemu.child.sendline("poweroff")
    assert qemu.wait_exit(STEP_DEADLINE) == 0
