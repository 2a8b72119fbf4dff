"""The simulated board with a root file system of its own: `--rootfs DIR`
(chroot in new namespaces) and `--ramdisk FILE` (an initramfs unpacked at
every power-on), with `sim flash` for served boards."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pexpect
import pytest
import serial

from lava_dispatcher import ramdisk
from lava_dispatcher.sim import SimServer, child_env, namespace, run_command, sim_command
from lava_dispatcher.sim.namespace import BoardError
from lava_dispatcher.sim.rootfs import (
    APPLETS,
    RootfsError,
    build_busybox_initramfs,
    build_busybox_rootfs,
    is_static_elf,
)

from .helpers import process_gone, read_until, run_cli

PROMPT = "root@sim:~# "
KMSG_LINE = rb"\[ *\d+\.\d{6}\] "
HELLO = "#!/bin/sh\necho hello from the overlay on $(hostname), pid $$\n"


@pytest.fixture(scope="module")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        root = build_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "root")
    except RootfsError as exc:
        pytest.skip(f"no busybox root file system here: {exc}")
    try:
        namespace.check_host()
    except BoardError as exc:
        pytest.skip(f"this host cannot run a board in namespaces: {exc}")
    return root


@pytest.fixture(scope="module")
def initramfs(busybox_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox initramfs plus an appended (zstd) segment holding /lava-1234/bin/hello."""
    directory = tmp_path_factory.mktemp("initramfs")
    image = build_busybox_initramfs(directory / "initrd.cpio.gz")
    overlay = directory / "overlay"
    (overlay / "lava-1234/bin").mkdir(parents=True)
    (overlay / "lava-1234/bin/hello").write_text(HELLO)
    (overlay / "lava-1234/bin/hello").chmod(0o755)
    ramdisk.append_tree(image, overlay, compression="zstd")
    return image


GUARDED_REBOOT = """#!/bin/sh
# only inside the simulator's box: there PID 1 is the shell and /run/lava-sim exists
[ -e /run/lava-sim/profile ] || exit 1
[ "$(tr '\\0' ' ' < /proc/1/cmdline)" = "/bin/sh -i " ] || exit 1
exec busybox reboot -f
"""


def serial_reader(port: serial.Serial):
    return lambda: port.read(65536)


def login(child: pexpect.spawn) -> None:
    child.expect_exact("sim login: ")
    child.sendline("root")
    child.expect_exact(PROMPT)


def run(child: pexpect.spawn, command: str) -> str:
    """Type a command, return its output (the echo and the prompt removed)."""
    child.sendline(command)
    child.expect_exact(command + "\r\n")
    child.expect_exact(PROMPT)
    return child.before.decode().replace("\r\n", "\n")


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text()


def test_busybox_root_has_the_applets_and_files(busybox_root):
    for applet in APPLETS:
        found = [
            p
            for p in ("bin", "sbin", "usr/bin", "usr/sbin")
            if (busybox_root / p / applet).is_symlink()
        ]
        assert found, applet
    assert is_static_elf(busybox_root / "bin/busybox")
    assert (busybox_root / "etc/passwd").read_text().startswith("root:x:0:0:")
    assert (busybox_root / "etc/hostname").read_text() == "sim\n"
    assert stat.S_IMODE((busybox_root / "tmp").stat().st_mode) == 0o1777


def test_busybox_must_be_installed_and_static(monkeypatch, tmp_path):
    from lava_dispatcher.sim import rootfs

    monkeypatch.setattr(rootfs.shutil, "which", lambda name: None)
    monkeypatch.setattr(rootfs, "BUSYBOX_PLACES", (str(tmp_path / "nothing"),))
    with pytest.raises(RootfsError, match=r"busybox is not installed .*busybox-static"):
        build_busybox_rootfs(tmp_path / "root")
    dynamic = os.path.realpath(sys.executable)  # a dynamically linked program
    assert not is_static_elf(dynamic)
    monkeypatch.setattr(rootfs, "BUSYBOX_PLACES", (dynamic,))
    with pytest.raises(RootfsError, match=r"is dynamically linked: .* needs a static one"):
        build_busybox_rootfs(tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_rootfs_shell_runs_in_the_board_root(spawn, busybox_root):
    marker = f"host-made-{uuid.uuid4().hex[:8]}"
    (busybox_root / marker).write_text("")
    child = spawn(rootfs=str(busybox_root))
    login(child)
    # the console behaves as before: echo, output, CR LF, prompt
    child.sendline("echo $((6*7))")
    child.expect_exact("echo $((6*7))\r\n42\r\n" + PROMPT)
    listing = run(child, "ls -1 /").split()
    assert marker in listing and "linuxrc" in listing
    assert set(listing) == set(os.listdir(busybox_root))
    assert run(child, "echo $$").strip() == "1", "the shell is PID 1 of its own namespace"
    assert run(child, "tr '\\0' ' ' < /proc/1/cmdline; echo").strip() == "/bin/sh -i"
    pids = run(child, "ls /proc | grep '^[0-9]' | wc -l").strip()
    assert int(pids) < 6, "only the board's processes are visible"
    assert run(child, "hostname").strip() == "sim"
    assert run(child, "id -u").strip() == "0"
    # files written under / land in the root directory, not on the host's /
    name = f"from-board-{uuid.uuid4().hex[:8]}"
    run(child, f"echo written inside > /{name}")
    assert (busybox_root / name).read_text() == "written inside\n"
    assert not Path("/" + name).exists()
    run(child, "echo tmp > /tmp/t && cat /tmp/t")
    # devices
    assert run(child, "head -c 4 /dev/zero | wc -c").strip() == "4"
    assert run(child, "echo gone > /dev/null; echo $?").strip() == "0"
    assert run(child, "head -c 16 /dev/urandom | wc -c").strip() == "16"
    # /dev/kmsg: what is written reaches the console as a kernel message
    child.sendline("echo '<6>hello from kmsg' > /dev/kmsg")
    child.expect(KMSG_LINE + rb"hello from kmsg\r\n")
    child.expect_exact(PROMPT)


def test_reboot_and_poweroff_act_on_the_board_never_the_host(spawn, busybox_root):
    before = boot_id()
    child = spawn(rootfs=str(busybox_root))
    login(child)
    child.sendline("reboot")  # typed: taken off the line
    child.expect_exact("The system is going down for reboot NOW!")
    child.expect("Linux version [0-9]")
    login(child)
    # reboot(2) itself, from a script: in the board's PID namespace it only
    # ends that namespace's init. Guarded: the script acts only in the box.
    (busybox_root / "guarded-reboot").write_text(GUARDED_REBOOT)
    child.sendline("sh /guarded-reboot")
    child.expect_exact("The system is going down for reboot NOW!")
    child.expect("Linux version [0-9]")
    login(child)
    # busybox's poweroff signals init (USR2): the shell's trap asks for a power-off
    child.sendline("sh -c 'busybox poweroff'")
    child.expect_exact("reboot: Power down")
    child.sendline("echo still-here")
    assert child.expect_exact(["still-here", pexpect.TIMEOUT], timeout=0.5) == 1
    assert boot_id() == before, "the host did not reboot"


def test_ramdisk_with_an_appended_overlay(spawn, initramfs, tmp_path):
    segments = [s.compression for s in ramdisk.iter_segments(initramfs.read_bytes())]
    assert segments == ["gz", "zstd"]
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    child = spawn(ramdisk=str(initramfs), env={"TMPDIR": str(scratch)})
    child.expect_exact("Trying to unpack rootfs image as initramfs...")
    child.expect(rb"Unpacking initramfs\.\.\. (\d+) files \(gz, zstd\)\r\n")
    assert int(child.match.group(1)) > len(APPLETS)
    child.expect_exact("Run /init as init process")
    login(child)
    output = run(child, "/lava-1234/bin/hello")
    assert re.fullmatch(r"hello from the overlay on sim, pid \d+\n", output), output
    assert "linuxrc" in run(child, "ls /").split()
    unpacked = [p for p in scratch.iterdir() if p.name.startswith("lava-sim-initramfs-")]
    assert len(unpacked) == 1 and (unpacked[0] / "lava-1234/bin/hello").is_file()
    run(child, "echo changed > /lava-1234/state")
    # a reboot unpacks the ramdisk again: a fresh root
    child.sendline("reboot")
    child.expect(rb"Unpacking initramfs\.\.\. \d+ files")
    login(child)
    assert "No such file" in run(child, "cat /lava-1234/state 2>&1")
    child.close()
    assert child.exitstatus == 0
    assert list(scratch.iterdir()) == [], "the unpacked root is deleted at power-off"


def test_corrupt_ramdisk_or_no_shell_panics(spawn, initramfs, tmp_path):
    broken = tmp_path / "broken"
    broken.write_bytes(initramfs.read_bytes()[:40000])
    child = spawn(ramdisk=str(broken))
    child.expect(rb"Initramfs unpacking failed: offset \d+: [^\r\n]+\r\n")
    child.expect_exact(
        "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
    )
    child.expect_exact("---[ end Kernel panic")
    assert b"login:" not in child.before
    no_shell = tmp_path / "no-shell"
    no_shell.write_bytes(ramdisk.pack([ramdisk.Entry.dir("etc")], "gz"))
    child = spawn(ramdisk=str(no_shell))
    child.expect(rb"Unpacking initramfs\.\.\. 1 files \(gz\)")
    child.expect_exact("Kernel panic - not syncing: No working init found.")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a noexec tmpfs")
def test_a_ramdisk_unpacked_on_a_noexec_tmpdir_is_reported(initramfs, tmp_path):
    scratch = tmp_path / "noexec"
    scratch.mkdir()
    # in a mount namespace of its own, the simulator sees TMPDIR mounted noexec
    script = 'mount -t tmpfs -o noexec lava-test "$1" && shift && exec "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    argv += [str(scratch), *run_command(ramdisk=str(initramfs), boot_time=0, boot_lines=4)]
    env = child_env({**os.environ, "TMPDIR": str(scratch)})
    child = pexpect.spawn(argv[0], argv[1:], env=env, timeout=10)
    try:
        child.expect_exact("is on a file system mounted noexec: nothing can run from it")
        child.expect_exact("Kernel panic - not syncing: No working init found.")
    finally:
        child.close(force=True)


def test_a_root_the_box_cannot_be_set_up_in_panics(spawn, busybox_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(busybox_root, root, symlinks=True)
    (root / "dev").rmdir()
    (root / "dev").write_text("not a directory: nothing can be mounted here")
    child = spawn(rootfs=str(root), no_login=True)
    child.expect_exact(f"lava-sim: cannot start the root file system {root}: mount -t tmpfs")
    child.expect_exact("Kernel panic - not syncing: No working init found.")
    child.expect_exact("---[ end Kernel panic")


def test_flash_then_power_on_over_the_pty(server, initramfs, tmp_path):
    sim = server(pty=True)  # a plain board: flashing gives it a ramdisk
    assert sim.status()["ramdisk"] is None
    argv = sim.flash_command(initramfs)
    assert argv[-4:] == ["--control", sim.control, "--ramdisk", str(initramfs)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=child_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"flashed {initramfs} (")
    flashed = sim.status()["ramdisk"]
    assert Path(flashed).read_bytes() == initramfs.read_bytes()
    assert Path(flashed).parent.parent == Path(sim.control), "a copy, in the control directory"
    port = serial.Serial(sim.pty, timeout=0.1)
    read = serial_reader(port)
    try:
        sim.power_on()
        assert b"Unpacking initramfs..." in read_until(read, b"sim login: ")
        port.write(b"root\n")
        read_until(read, PROMPT.encode())
        port.write(b"/lava-1234/bin/hello\n")
        assert b"hello from the overlay on sim" in read_until(read, b"\r\n" + PROMPT.encode())
        status = sim.status()
        root = Path(status["root"])
        assert (root / "lava-1234/bin/hello").is_file()
        # what the box runs: unshare, and the shell as the namespace's PID 1
        port.write(b"sleep 1000 & setsid sleep 1001 & echo started\n")
        read_until(read, b"started\r\n")
        members = namespace.box_members(status["shell_pid"])
        assert status["shell_pid"] in members and len(members) >= 4, members
        sim.power_off()
        for pid in members:
            assert process_gone(pid, timeout=0), f"process {pid} outlived the power-off"
        assert not root.exists(), "the unpacked root is deleted at power-off"
        # flash a broken image: the next power-on panics
        broken = tmp_path / "broken"
        broken.write_bytes(b"\x1f\x8b" + b"\0" * 100)
        assert sim.flash(broken)["size"] == 102
        sim.power_on()
        assert b"Kernel panic - not syncing" in read_until(read, b"---[ end Kernel panic")
        assert sim.status()["stage"] == "dead"
    finally:
        port.close()


def test_every_box_process_is_gone_after_power_off(server, busybox_root):
    sim = server(pty=True, rootfs=busybox_root, no_login=True)
    port = serial.Serial(sim.pty, timeout=0.1)
    read = serial_reader(port)
    try:
        sim.power_on()
        read_until(read, PROMPT.encode())
        port.write(b"(sleep 1002 &) ; sh -c 'sleep 1003' & echo started\n")
        read_until(read, b"started\r\n" + PROMPT.encode())
        shell = sim.status()["shell_pid"]
        members = namespace.box_members(shell)
        commands = {Path(f"/proc/{pid}/cmdline").read_bytes() for pid in members}
        assert b"sleep\x001002\x00" in commands and b"sleep\x001003\x00" in commands
        sim.power_off()
        for pid in members:
            assert process_gone(pid, timeout=0), f"process {pid} outlived the power-off"
        assert sim.status()["root"] is None
    finally:
        port.close()
    # the root directory is the user's: it stays
    assert (busybox_root / "bin/busybox").is_file()


def test_missing_tools_are_named(monkeypatch, tmp_path):
    monkeypatch.setattr(namespace, "host_path", lambda: str(tmp_path))
    with pytest.raises(BoardError, match="needs util-linux's unshare and mount, chroot"):
        namespace.check_host()


def test_when_namespaces_are_refused_power_on_fails_clearly(busybox_root, tmp_path, monkeypatch):
    fake = tmp_path / "bin/unshare"  # an unshare that fails as a locked-down host's would
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    path = f"{fake.parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    result = subprocess.run(
        sim_command("run", "--rootfs", str(busybox_root)),
        capture_output=True, input=b"", timeout=30, env=child_env({**os.environ, "PATH": path}),
    )  # fmt: skip
    assert result.returncode == 1
    message = result.stderr.decode()
    assert message.startswith(
        "lava-dispatch sim run: power on: cannot create the board's namespaces with unshare"
    )
    assert "Operation not permitted" in message
    monkeypatch.setenv("PATH", path)
    with SimServer(tmp_path / "sim", pty=True, rootfs=busybox_root) as sim:
        power = subprocess.run(
            sim.power_command("on"), capture_output=True, text=True, timeout=30, env=child_env()
        )
        assert power.returncode == 1
        assert "power on: cannot create the board's namespaces" in power.stderr
        assert sim.status()["power"] == "off"


def test_bad_root_options_exit_2(tmp_path, initramfs):
    cases = [
        (["run", "--rootfs", str(tmp_path / "missing")], "--rootfs"),
        (["run", "--ramdisk", str(tmp_path)], "--ramdisk"),
        (["run", "--rootfs", str(tmp_path), "--ramdisk", str(initramfs)], "not both"),
        (["flash", "--control", str(tmp_path)], "--ramdisk"),
    ]
    for argv, message in cases:
        result = run_cli(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert message in result.stderr, (argv, result.stderr)
    result = run_cli("flash", "--control", str(tmp_path), "--ramdisk", str(initramfs))
    assert result.returncode == 1
    assert "no simulator daemon" in result.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to act as another user",
)
def test_not_root_the_box_uses_a_user_namespace(busybox_root):
    """The same box, started by an unprivileged user (nobody), as `sim` does
    when not root: --user --map-root-user."""
    nobody = 65534
    base = Path(tempfile.mkdtemp(prefix="lava-sim-nobody-"))
    runtime = namespace.Runtime()
    try:
        os.chmod(base, 0o755)
        root = base / "root"
        shutil.copytree(busybox_root, root, symlinks=True)
        for path in [root, *root.rglob("*"), runtime.path, *runtime.path.rglob("*")]:
            os.chown(path, nobody, nobody, follow_symlinks=False)
        script = (
            "echo pid=$$ uid=$(id -u); cat /proc/self/uid_map; hostname; "
            "echo x > /written; echo '<5>kmsg as nobody' > /dev/kmsg; busybox reboot -f; echo survived"
        )
        argv, env = namespace.box_command(
            root, runtime, ["/bin/sh", "-c", script], hostname="board7", env={}, user_ns=True
        )
        as_nobody = ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"]
        result = subprocess.run(
            [*as_nobody, *argv], capture_output=True, text=True, timeout=30, env=env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if (
            "Operation not permitted" in result.stdout + result.stderr
            and "pid=" not in result.stdout
        ):
            pytest.skip(f"unprivileged user namespaces are not allowed here: {result.stdout}")
        assert result.returncode == -signal.SIGHUP, (result.stdout, result.stderr)
        lines = result.stdout.splitlines()
        assert lines[0] == "pid=1 uid=0"
        assert lines[1].split() == ["0", str(nobody), "1"]
        assert lines[2] == "board7"
        assert "survived" not in result.stdout
        assert (root / "written").stat().st_uid == nobody
        assert "kmsg as nobody" in runtime.kmsg.read_text()
    finally:
        runtime.close()
        namespace.remove_tree(base)
