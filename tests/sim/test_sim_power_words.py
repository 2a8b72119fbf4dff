"""Power commands typed into (or run by scripts on) the simulated DUT act on the
simulated board: the shell is a real host shell, and must never reboot the host."""

from __future__ import annotations

import pexpect

PROMPT = "root@sim:~# "


def test_typed_reboot_reboots_the_simulated_board(spawn) -> None:
    child = spawn(no_login=True)
    child.expect_exact(PROMPT)
    child.sendline("reboot -nf")
    child.expect_exact("The system is going down for reboot NOW")
    child.expect("Linux version [0-9]")
    child.expect_exact(PROMPT)
    child.sendline("echo $((6*7))")
    child.expect_exact("42")


def test_a_script_calling_reboot_reaches_the_shim(spawn) -> None:
    child = spawn(no_login=True)
    child.expect_exact(PROMPT)
    # computed output, so that the echoed command line cannot match
    child.sendline("sh -c 'echo A$((40+2)); reboot; echo B$((40+3))'")
    child.expect_exact("A42")
    index = child.expect_exact(["The system is going down for reboot NOW", "B43"])
    assert index == 0
    child.expect("Linux version [0-9]")


def test_poweroff_and_shutdown_power_the_board_off(spawn) -> None:
    for command in ("poweroff", "shutdown -h now", "/sbin/halt"):
        child = spawn(no_login=True)
        child.expect_exact(PROMPT)
        child.sendline(command)
        child.expect_exact("reboot: Power down")
        child.sendline("echo still-here")
        assert child.expect_exact(["still-here", pexpect.TIMEOUT], timeout=0.5) == 1


def test_shutdown_dash_r_is_a_reboot(spawn) -> None:
    child = spawn(no_login=True)
    child.expect_exact(PROMPT)
    child.sendline("shutdown -r now")
    child.expect_exact("The system is going down for reboot NOW")
    child.expect("Linux version [0-9]")


def test_words_that_merely_contain_reboot_run_normally(spawn) -> None:
    child = spawn(no_login=True)
    child.expect_exact(PROMPT)
    child.sendline("echo reboot-is-just-a-word")
    child.expect_exact("reboot-is-just-a-word")
    child.expect_exact(PROMPT)
    child.sendline("echo ok")
    child.expect_exact("ok")
