"""The simulated U-Boot on a served board's console: banner, countdown,
interrupt, the prompt's line editing, environment and scripting commands."""

from __future__ import annotations

import time

import pexpect

from .helpers import BANNER, COUNTDOWN, PROMPT


def test_banner_countdown_and_interrupt(board):
    b = board(autoboot_delay=2)
    assert b.sim.status()["power"] == "off"
    b.sim.power_on()
    banner = b.expect(COUNTDOWN)
    assert banner.startswith(BANNER), banner
    for line in ("DRAM:  2 GiB", "MMC:   ", "Net:   eth0: ", "Loading Environment from MMC"):
        assert f"\r\n{line}" in banner
    start = time.monotonic()
    b.expect(" 2 \b\b\b 1 ")  # one second later, as U-Boot prints it
    assert 0.7 < time.monotonic() - start < 1.6
    status = b.sim.status()
    assert status["stage"] == "bootloader"
    assert status["bootloader_state"] == "countdown"
    b.send("\n")
    b.expect("\b\b\b 0 \r\n" + PROMPT)
    assert b.sim.status()["bootloader_state"] == "prompt"
    # the key that stopped autoboot is used up: nothing else was typed
    b.send("version\n")
    assert b.expect(PROMPT) == (
        "version\r\nU-Boot 2023.01 (sim) (Jan 10 2023 - 00:00:00 +0000)\r\n\r\n"
        "aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0\r\n"
        "GNU ld (GNU Binutils for Debian) 2.40\r\n"
    )


def test_autoboot_runs_bootcmd_to_the_configured_kernel(board):
    b = board(autoboot_delay=1)
    b.sim.power_on()
    b.expect(COUNTDOWN + " 1 ")
    start = time.monotonic()
    b.expect("\b\b\b 0 \r\n")
    assert time.monotonic() - start > 0.7
    out = b.expect("Starting kernel ...\r\n\r\n")
    assert "Retrieving file: /extlinux/extlinux.conf" in out
    b.expect("Booting Linux on physical CPU")
    b.expect("sim login: ")
    assert b.sim.status()["stage"] == "login"
    assert b.sim.status()["boot_ramdisk"] is None


def test_no_autoboot_and_the_prompt_option(board):
    b = board(autoboot_delay=-1, bootloader_prompt="sim-uboot# ")
    b.sim.power_on()
    banner = b.expect("sim-uboot# ")
    assert COUNTDOWN not in banner
    b.send("printenv bootdelay\n")
    b.expect("bootdelay=-1\r\nsim-uboot# ")


def test_line_editing(board):
    b = board()
    b.power_on_and_interrupt()
    # typed characters are echoed; backspace and DEL rub out
    b.send("echo abcd\b\bx\x7fy\r")
    b.expect("echo abcd\b \b\b \bx\b \by\r\naby\r\n" + PROMPT)
    # Ctrl-C drops the line
    b.send("echo never\x03")
    b.expect("echo never<INTERRUPT>\r\n" + PROMPT)
    # Ctrl-U erases it
    b.send("echo no\x15echo yes\n")
    b.expect("echo no" + "\b \b" * 7 + "echo yes\r\nyes\r\n" + PROMPT)
    # an empty line gives a new prompt; an open quote asks for more
    b.send("\n")
    b.expect("\r\n" + PROMPT)
    b.send("echo 'one\n")
    b.expect("echo 'one\r\n> ")
    b.send("two'\n")
    b.expect("two'\r\none\r\ntwo\r\n" + PROMPT)


def test_unknown_commands_and_abbreviations(board):
    b = board()
    b.power_on_and_interrupt()
    assert b.run("foo") == "Unknown command 'foo' - try 'help'\n"
    assert b.run("ver").startswith("U-Boot 2023.01 (sim)")  # unambiguous abbreviation
    assert b.run("boo") == "Unknown command 'boo' - try 'help'\n"  # ambiguous
    listing = b.run("help")
    for name in ("bootm", "booti", "bootz", "dhcp", "printenv", "setenv", "tftpboot", "reset"):
        assert f"\n{name:<10}- " in "\n" + listing
    assert b.run("help echo") == (
        "echo - echo args to console\n\nUsage:\n"
        "echo [-n] [args..]\n    - echo args to console; -n suppresses newline\n"
    )


def test_setenv_printenv_and_substitution(board):
    b = board()
    b.power_on_and_interrupt()
    assert b.run("setenv foo 1 2   3") == ""
    assert b.run("printenv foo") == "foo=1 2 3\n"
    assert b.run("setenv foo") == ""  # no value: unset
    assert b.run("printenv foo") == '## Error: "foo" not defined\n'
    assert b.run("setenv bootargs 'console=ttyS0,115200n8 root=/dev/ram0'") == ""
    assert b.run("printenv bootargs") == "bootargs=console=ttyS0,115200n8 root=/dev/ram0\n"
    assert b.run("echo a   b ${kernel_addr_r} '$x' \"$kernel_addr_r\" $nothing.") == (
        "a b 0x40400000 $x 0x40400000 .\n"
    )
    everything = b.run("printenv")
    assert "\nkernel_addr_r=0x40400000\n" in everything
    assert everything.rstrip().splitlines()[-1].startswith("Environment size: ")
    lines = everything.split("\n\nEnvironment size")[0].splitlines()
    assert lines == sorted(lines)
    assert b.run("setenv").startswith("setenv - set environment variables\n\nUsage:\n")
    assert b.run("env default -a") == "## Resetting to default environment\n"
    assert b.run("printenv bootargs") == '## Error: "bootargs" not defined\n'


def test_command_lists_and_run(board):
    b = board()
    b.power_on_and_interrupt()
    # ';' goes on after a failure, as in U-Boot; && and || depend on it
    assert b.run("false; echo after") == "after\n"
    assert b.run("foo; echo after") == "Unknown command 'foo' - try 'help'\nafter\n"
    assert b.run("false && echo no") == ""
    assert b.run("false || echo yes") == "yes\n"
    assert b.run("echo \"a;b\" 'c;d'; echo e") == "a;b c;d\ne\n"
    assert b.run("x=5; echo $x; printenv x") == '5\n## Error: "x" not defined\n'
    # variables are expanded when each command runs
    assert b.run("setenv a 'echo A1; setenv v 2; echo v=${v}'; setenv v 1; run a") == "A1\nv=2\n"
    assert b.run("run nosuch") == '## Error: "nosuch" not defined\n'
    assert b.run("setenv loop 'run loop'; run loop; echo survived").endswith("survived\n")


def test_sleep_keeps_typed_ahead_input(board):
    b = board()
    b.power_on_and_interrupt()
    start = time.monotonic()
    b.send("sleep 0.5; echo slept\necho next\n")
    b.expect("sleep 0.5; echo slept\r\n")
    # typed during the sleep: read (and echoed) once the prompt is back
    b.expect("slept\r\n" + PROMPT + "echo next\r\nnext\r\n" + PROMPT)
    assert time.monotonic() - start >= 0.5


def test_saveenv_and_reset(board):
    b = board()
    banner = b.power_on_and_interrupt()
    assert (
        "Loading Environment from MMC... *** Warning - bad CRC, using default environment" in banner
    )
    b.run("setenv kept yes; setenv lost yes")
    assert b.run("saveenv") == "Saving Environment to MMC... Writing to MMC(0)... OK\n"
    b.run("setenv lost; setenv unsaved 1")
    b.send("reset\n")
    b.expect("reset\r\nresetting ...\r\n" + BANNER)
    banner = b.expect(COUNTDOWN)
    assert "Loading Environment from MMC... OK\r\n" in banner
    b.send(" ")
    b.expect(PROMPT)
    assert b.run("printenv kept lost unsaved") == (
        'kept=yes\nlost=yes\n## Error: "unsaved" not defined\n'
    )


def test_power_off_silences_the_bootloader(board):
    b = board(autoboot_delay=5)
    b.sim.power_on()
    b.expect(COUNTDOWN)
    b.sim.power_off()
    b.send(" ")
    try:
        b.console.expect_exact(PROMPT, timeout=1)
        raise AssertionError("a board without power answered")
    except pexpect.TIMEOUT:
        pass
    assert b.sim.status()["power"] == "off"
