"""LAVA-style u-boot jobs (tftp deploy, u-boot boot with ramdisk commands, a test
shell) through `lava-dispatch run` against the simulated U-Boot board: over
its pty (pyserial) and over TCP (connection_command), and with the board
faults that matter: an ignored interrupt, a reset loop, a missing TFTP file,
a failing power command, characters lost while the dispatcher types.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.helpers import FAST, processes_naming, run_dispatch, write_yaml

from lava_dispatcher.sim import SimServer
from lava_dispatcher.sim.rootfs import RootfsError, build_busybox_initramfs

KERNEL = b"not really a kernel\n" * 5000
SHELL_PROMPT = "root@sim:~# "
UBOOT_CONSTANTS = {
    "interrupt-prompt": "Hit any key to stop autoboot",
    "interrupt-character": " ",
    "interrupt-newline": True,  # LAVA's default; telnet in line mode sends nothing before it
    "final-message": "Starting kernel",
    "error-messages": [
        "Resetting CPU",
        "Must RESET board to recover",
        "TIMEOUT",
        "Retry count exceeded",
        "File not found",
        "Bad Linux ARM64 Image magic!",
        "Wrong Ramdisk Image Format",
        "Ramdisk image is corrupt or invalid",
    ],
}
RAMDISK_COMMANDS = [
    "setenv autoload no",
    "dhcp",
    "setenv serverip {SERVER_IP}",
    "tftp {KERNEL_ADDR} {KERNEL}",
    "tftp {RAMDISK_ADDR} {RAMDISK}",
    "tftp {DTB_ADDR} {DTB}",
    "setenv bootargs 'console=ttyAMA0,115200 root=/dev/ram0'",
    "{BOOTX}",
]
SMOKE = {
    "from": "inline",
    "name": "smoke",
    "path": "inline/smoke.yaml",
    "repository": {
        "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke"},
        "run": {"steps": ["lava-test-case tftp-ramdisk --shell test -d /lava-1/bin", "lava-test-case echo --result pass"]},
    },
}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("uboot-images")
    try:
        build_busybox_initramfs(directory / "initrd.cpio.gz")
    except RootfsError as exc:
        pytest.skip(f"no busybox root file system here: {exc}")
    (directory / "Image").write_bytes(KERNEL)
    (directory / "board.dtb").write_bytes(b"\xd0\x0d\xfe\xed" + bytes(2044))
    return directory


@pytest.fixture
def lab(tmp_path: Path, images: Path) -> Any:
    """A TFTP root, a simulated U-Boot board serving it, and a way to run jobs on it."""
    root = tmp_path / "tftp"
    root.mkdir()
    servers: list[SimServer] = []

    class Lab:
        tftp_root = root

        def board(self, **knobs: Any) -> SimServer:
            sim = SimServer(tmp_path / f"sim{len(servers)}", pty=True, tcp=True,
                            **{**FAST, "bootloader": "u-boot", "autoboot_delay": 1, "tftp_root": str(root),
                               "no_login": True, **knobs})  # fmt: skip
            sim.start()
            servers.append(sim)
            return sim

        def run(self, sim: SimServer, *, tcp: bool = False, device_extra: dict[str, Any] | None = None,
                deploy_extra: dict[str, Any] | None = None,
                boot_commands: list[str] | None = None, connect: str | None = None,
                definitions: list[dict[str, Any]] | None = None) -> tuple[int, str, list[dict[str, Any]]]:  # fmt: skip
            commands: dict[str, Any] = {
                "power_on": shlex.join(sim.power_command("on")),
                "power_off": shlex.join(sim.power_command("off")),
                "hard_reset": shlex.join(sim.power_command("reset")),
            }
            if connect:
                commands["connect"] = connect
            elif tcp:
                commands["connect"] = f"telnet 127.0.0.1 {sim.tcp_port}"
            else:
                commands["connections"] = {"uart0": {"serial": str(sim.pty), "tags": ["primary"]}}
            device = {
                "extends": "sim",
                "hostname": "uboot-sim",
                "constants": {"u-boot": UBOOT_CONSTANTS},
                "commands": {**commands, **((device_extra or {}).get("commands") or {})},
                "parameters": {"booti": {"kernel": "0x40400000", "ramdisk": "0x44000000", "dtb": "0x40000000"}},
                "actions": {
                    "deploy": {"methods": {"tftp": None}, "parameters": {"add_header": "u-boot", "mkimage_arch": "arm64"}},
                    "boot": {
                        "methods": {
                            "u-boot": {
                                "parameters": {
                                    "bootloader_prompt": "=> ",
                                    "interrupt_prompt": "Hit any key to stop autoboot",
                                    "interrupt_char": " ",
                                    "needs_interrupt": True,
                                },
                                "ramdisk": {"commands": boot_commands or RAMDISK_COMMANDS},
                            }
                        }
                    },
                },
                "character_delays": {"boot": 2},
            }
            deploy = {
                "to": "tftp",
                "kernel": {"url": (images / "Image").as_uri(), "type": "image"},
                "ramdisk": {"url": (images / "initrd.cpio.gz").as_uri()},
                "dtb": {"url": (images / "board.dtb").as_uri()},
                **(deploy_extra or {}),
            }
            job = {
                "job_name": "u-boot ramdisk",
                "device_type": "sim",
                "visibility": "public",
                "timeouts": {"job": {"seconds": 120}, "action": {"seconds": 60}},
                "actions": [
                    {"deploy": deploy},
                    {"boot": {"method": "u-boot", "commands": "ramdisk", "prompts": [SHELL_PROMPT],
                              "timeout": {"seconds": 40}}},
                    {"test": {"definitions": definitions or [SMOKE], "timeout": {"seconds": 30}}},
                ],
            }
            work = tmp_path / f"job{len(list(tmp_path.glob('job*')))}"
            work.mkdir()
            write_yaml(work / "device.yaml", device)
            write_yaml(work / "job.yaml", job)
            write_yaml(work / "dispatcher.yaml", {"tftp_root": str(root), "dispatcher_ip": "10.0.2.2"})
            out = work / "out"
            tmpdir = work / "tmpdir"
            tmpdir.mkdir()
            proc = run_dispatch("run", str(work / "job.yaml"), "--device", str(work / "device.yaml"),
                                "--dispatcher", str(work / "dispatcher.yaml"), "--output-dir", str(out),
                                "--job-id", "1", timeout=180, env={"TMPDIR": str(tmpdir)})  # fmt: skip
            # must-show 4: whatever the outcome, nothing of the job is left
            assert list(tmpdir.iterdir()) == [], "temporary files left behind"
            assert list(root.iterdir()) == [], "a TFTP job directory was left behind"
            if commands.get("connect"):
                assert processes_naming(commands["connect"]) == [], "a console process was left"
            for action in ("on", "off", "reset"):
                assert processes_naming(f"power {action} --control {sim.control}") == []
            logs = (out / "logs.yaml").read_text() if (out / "logs.yaml").exists() else proc.stderr
            results = yaml.safe_load((out / "results.yaml").read_text()) if (out / "results.yaml").exists() else []
            return proc.returncode, logs, results or []

    yield Lab()
    for sim in servers:
        sim.stop()
    # no job directory is ever left under the TFTP root
    assert list(root.iterdir()) == []


def _cases(results: list[dict[str, Any]], suite: str) -> dict[str, str]:
    return {r["case"]: r["result"] for r in results if r["definition"] == suite}


@pytest.mark.slow
def test_ramdisk_job_over_the_pty(lab: Any) -> None:
    code, logs, results = lab.run(lab.board())
    assert code == 0, logs[-4000:]
    assert _cases(results, "0_smoke") == {"tftp-ramdisk": "pass", "echo": "pass"}
    assert "Bytes transferred" in logs and "Starting kernel" in logs
    assert "booti 0x40400000 0x44000000 0x40000000" in logs


@pytest.mark.slow
def test_ramdisk_job_over_tcp_with_a_connection_command(lab: Any) -> None:
    code, logs, results = lab.run(lab.board(), tcp=True)
    assert code == 0, logs[-4000:]
    assert _cases(results, "0_smoke") == {"tftp-ramdisk": "pass", "echo": "pass"}


@pytest.mark.slow
def test_an_ignored_interrupt_is_sent_again(lab: Any) -> None:
    code, logs, results = lab.run(lab.board(ignore_interrupt=1))
    assert code == 0, logs[-4000:]
    assert "the bootloader needed 2 interrupts" in logs
    assert _cases(results, "0_smoke") == {"tftp-ramdisk": "pass", "echo": "pass"}


@pytest.mark.slow
def test_a_reset_loop_is_an_infrastructure_error_quoting_the_banner(lab: Any) -> None:
    code, _logs, results = lab.run(lab.board(reset_loop=True))
    assert code == 1
    job = _cases(results, "lava")
    assert job["job"] == "fail"
    (record,) = [r for r in results if r["case"] == "job"]
    assert record["error_type"] == "Infrastructure"
    assert "the board reset: 'U-Boot 2023.01 (sim)" in record["error_msg"]


@pytest.mark.slow
def test_a_missing_tftp_file_fails_at_once(lab: Any, images: Path, tmp_path: Path) -> None:
    sim = lab.board()
    # the boot commands name a file that is not in the job's TFTP directory
    commands = [*RAMDISK_COMMANDS]
    commands[5] = "tftp {DTB_ADDR} missing/board.dtb"
    code, _logs, results = lab.run(sim, boot_commands=commands)
    assert code == 1
    (record,) = [r for r in results if r["case"] == "job"]
    assert record["error_type"] == "Infrastructure"
    assert "matched a bootloader error message: 'File not found'" in record["error_msg"]
    (boot,) = [r for r in results if r["case"] == "bootloader-commands"]
    assert boot["result"] == "fail" and float(boot["duration"]) < 20  # the error, not a timeout


@pytest.mark.slow
def test_a_failing_power_command_is_named(lab: Any) -> None:
    sim = lab.board()
    code, _logs, results = lab.run(sim, device_extra={"commands": {"hard_reset": "false --pdu 7"}})
    assert code == 1
    (record,) = [r for r in results if r["case"] == "job"]
    assert record["error_type"] == "Infrastructure"
    assert "false --pdu 7" in record["error_msg"]


@pytest.mark.slow
def test_characters_lost_while_typing_are_retyped(lab: Any) -> None:
    """1 character in 200 dropped on the way into the board: each line the
    dispatcher types (bootloader commands, and the test shell's lines at the
    Linux prompt) is checked against the echo and, when it differs, cancelled
    with Ctrl-C and typed again; so the job passes."""
    code, logs, results = lab.run(lab.board(input_drop_rate=0.005, seed=7))
    assert "the bootloader echoed" in logs and "cancelling the line" in logs
    assert "the shell echoed" in logs  # a test shell line was mangled and retyped
    assert "typing lines unchecked" not in logs
    assert code == 0, logs[-4000:]
    assert _cases(results, "0_smoke") == {"tftp-ramdisk": "pass", "echo": "pass"}


@pytest.mark.slow
def test_a_dropped_console_connection_is_reopened_and_the_job_passes(lab: Any) -> None:
    """The board's UART behind a ser2net-like port (tests/reconnect/relay.py)
    that drops the dispatcher's telnet twice: while U-Boot loads the kernel
    (the dispatcher is typing commands) and in the middle of the test shell.
    This port keeps what the board prints meanwhile (buffer=True), so the job
    loses nothing and passes; the log flags each gap."""
    from reconnect.relay import ConsolePort

    sim = lab.board()
    marked = {**SMOKE, "repository": {
        "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke"},
        "run": {"steps": ["lava-test-case before --result pass",
                          'echo "DROP-$((40+2))-HERE"',
                          "lava-test-case after --result pass"]}}}  # fmt: skip
    port = ConsolePort(str(sim.pty), telnet=True, buffer=True,
                       drop_on=(b"Bytes transferred", b"DROP-42-HERE"))  # fmt: skip
    try:
        code, logs, results = lab.run(sim, connect=f"telnet 127.0.0.1 {port.port}",
                                      definitions=[marked])  # fmt: skip
    finally:
        port.close()
    assert port.drops == 2 and port.clients == 3
    assert code == 0, logs[-4000:]
    assert _cases(results, "0_smoke") == {"before": "pass", "after": "pass"}
    assert logs.count("console connect dropped") == 2, logs[-4000:]
    assert logs.count("console connect reopened after") == 2
