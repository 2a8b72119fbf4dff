"""The bootloader's faults: interrupts ignored, a reset loop, typed characters lost."""

from __future__ import annotations

import select
import time

from .helpers import BANNER, COUNTDOWN, PROMPT, Board


def test_ignored_interrupts_need_a_retry(board):
    b = board(ignore_interrupt=2, autoboot_delay=1)
    b.sim.power_on()
    b.expect(COUNTDOWN + " 1 ")
    b.send(" \n")  # attempt 1 (both keys, typed together): ignored
    # the countdown goes on as if nothing was typed, and autoboot runs
    b.expect("\b\b\b 0 \r\nRetrieving file: /extlinux/extlinux.conf")
    b.expect("sim login: ")
    # the dispatcher's retry: reset, interrupt again (attempt 2: ignored too)
    b.sim.reset()
    b.expect(COUNTDOWN)
    b.send(" ")
    b.expect("Starting kernel ...")
    b.sim.reset()
    b.expect(COUNTDOWN)
    b.send(" ")  # attempt 3 stops it
    b.expect("\b\b\b 0 \r\n" + PROMPT)
    assert b.sim.status()["bootloader_state"] == "prompt"


def test_keys_of_one_ignored_attempt_are_all_ignored(board):
    b = board(ignore_interrupt=1, autoboot_delay=2)
    b.sim.power_on()
    b.expect(COUNTDOWN)
    for key in " \n":
        b.send(key)  # typed with a (short) character delay: the same attempt
        time.sleep(0.05)
    b.expect("\b\b\b 1 ")  # not stopped
    b.send(" ")  # a new attempt, which stops it
    b.expect("\b\b\b 0 \r\n" + PROMPT)


def test_interrupting_again_in_the_same_countdown(board):
    """What a dispatcher does when no prompt comes: interrupt again."""
    b = board(ignore_interrupt=1, autoboot_delay=2)
    b.sim.power_on()
    b.expect(COUNTDOWN)
    b.send(" \n")
    time.sleep(0.3)
    b.send(" \n")
    b.expect(" 2 \b\b\b 0 \r\n" + PROMPT)
    assert b.expect(PROMPT) == "\r\n"  # the newline after the key: an empty line


def test_reset_loop_never_reaches_linux(board):
    b = board(reset_loop=True, autoboot_delay=0)
    b.sim.power_on()
    for _ in range(3):
        banner = b.expect(COUNTDOWN + " 0 \r\n")
        assert BANNER.strip() in banner
        kernel = b.expect("Starting kernel ...\r\n\r\n")
        assert "sim login: " not in kernel
        b.expect("] Booting Linux on physical CPU")
        b.expect("] Kernel command line: ")
    assert b.sim.status()["power"] == "on"
    assert b.sim.status()["stage"] in ("bootloader", "kernel")


def test_reset_loop_after_booti_too(board, tftp_root):
    b = board(reset_loop=True, autoboot_delay=1, tftp_root=str(tftp_root))
    b.power_on_and_interrupt()
    b.run("setenv autoload no; dhcp; tftp ${kernel_addr_r} 1234/tftp-deploy-abcd/Image")
    b.send("booti ${kernel_addr_r}\n")
    b.expect("Starting kernel ...\r\n\r\n")
    b.expect("Linux version ")
    b.expect(BANNER)
    # the bootloader still works, Linux never comes
    b.expect(COUNTDOWN)
    b.send(" ")
    b.expect(PROMPT)
    assert b.run("echo still here") == "still here\n"


def quiet_read(b: Board, quiet: float = 0.5) -> bytes:
    """What the console prints until it is quiet for `quiet` seconds."""
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ready, _, _ = select.select([b.sock], [], [], quiet)
        if not ready:
            return data
        data += b.sock.recv(65536)
    raise AssertionError("the console never went quiet")


def typed_echo(board, **knobs) -> bytes:
    b = board(autoboot_delay=-1, **knobs)  # no countdown: a prompt at once
    b.sim.power_on()
    b.expect(PROMPT)
    b.send("x" * 400)
    return quiet_read(b)


def test_input_drop_rate_loses_typed_characters(board):
    echo = typed_echo(board, input_drop_rate=0.5, seed=7)
    assert set(echo) == {ord("x")}
    assert 120 < len(echo) < 280, len(echo)
    # the same seed, the same characters lost; none lost without the fault
    assert typed_echo(board, input_drop_rate=0.5, seed=7) == echo
    assert typed_echo(board) == b"x" * 400
