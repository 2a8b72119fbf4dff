"""ShellSession against the fake DUT (a real /bin/sh on a pty): login, run, force_prompt, delays."""

from __future__ import annotations

import itertools
import sys
import threading
import time

import pytest
from console_helpers import PROMPT, QueueTransport, fake_dut_argv, pid_gone

from lava_dispatcher import errors
from lava_dispatcher.console import (
    CommandFailed,
    CommandResult,
    Console,
    ExpectTimeout,
    LoginFailed,
    ShellSession,
)
from lava_dispatcher.timing import Interrupter

LOGIN = {"login_prompt": r"login: ", "username": "root", "password_prompt": r"Password: "}


@pytest.fixture
def dut(resources, line_log):
    """Start the fake DUT with the given options; returns (console, shell)."""

    def start(*options: str, interrupter: Interrupter | None = None, **shell_options):
        console = resources.console(
            resources.process(fake_dut_argv(*options)), line_log, interrupter=interrupter
        )
        console.start()
        return console, ShellSession(console, prompts=[PROMPT], **shell_options)

    return start


@pytest.mark.parametrize("echo", [False, True], ids=["no-echo", "tty-echo"])
def test_login_and_run_commands(dut, line_log, echo):
    _console, shell = dut(*(["--echo"] if echo else []))
    match = shell.login(**LOGIN, password="secret", timeout=10)
    assert match.after == PROMPT
    assert "Last login" in match.before

    result = shell.run("echo hello; echo world", timeout=10)
    assert result == CommandResult("hello\nworld", 0)

    # output without a final newline, and output with blank lines
    assert shell.run("printf abc", timeout=10) == CommandResult("abc", 0)
    assert shell.run("printf 'a\\n\\nb\\n'", timeout=10).output == "a\n\nb"

    with pytest.raises(CommandFailed) as info:
        shell.run("echo failing; (exit 3)", timeout=10)
    assert (info.value.returncode, info.value.output, info.value.command) == (
        3,
        "failing",
        "echo failing; (exit 3)",
    )
    assert isinstance(info.value, errors.JobError)

    assert shell.run("(exit 3)", timeout=10, check=False) == CommandResult("", 3)
    # the session is still in step: the next command sees only its own output
    assert shell.run("echo next", timeout=10) == CommandResult("next", 0)

    # every sent line went to on_input; the password too (the caller decides what to log)
    assert line_log.inputs[:2] == ["root", "secret"]
    assert line_log.inputs[2] == 'echo hello; echo world ; printf "<LAVA_SIGNAL_RETRUNCODE $?>\\n"'


def test_login_with_a_wrong_password(dut):
    _console, shell = dut()
    start = time.monotonic()
    with pytest.raises(LoginFailed, match="Login incorrect") as info:
        shell.login(**LOGIN, password="wrong", timeout=10)
    assert info.value.message == "Login incorrect"
    assert isinstance(info.value, errors.JobError)
    assert time.monotonic() - start < 5


def test_login_is_skipped_when_a_shell_prompt_is_already_there(dut, line_log):
    _console, shell = dut("--no-login")
    shell.login(
        **LOGIN, password="secret", login_commands=["export GREETING=hi", "cd /"], timeout=10
    )
    assert "root" not in line_log.inputs  # no username typed into the shell
    assert line_log.inputs[:2] == ["export GREETING=hi", "cd /"]
    assert shell.run('echo "$GREETING $PWD"', timeout=10).output == "hi /"


def test_login_without_a_password_prompt(resources, line_log):
    code = (
        "import os, sys\n"
        "sys.stdout.write('box login: '); sys.stdout.flush()\n"
        "sys.stdin.readline()\n"
        "os.execve('/bin/sh', ['/bin/sh', '-i'], {'PS1': 'box# ', 'PATH': os.environ['PATH']})\n"
    )
    console = resources.console(resources.process([sys.executable, "-c", code]), line_log)
    console.start()
    shell = ShellSession(console, prompts=["box# "])
    shell.login(login_prompt="login: ", username="admin", timeout=10)
    assert shell.run("echo in", timeout=10).output == "in"


def test_run_times_out_when_the_command_does_not_finish(dut):
    _console, shell = dut("--no-login")
    shell.wait_for_prompt(10)
    start = time.monotonic()
    with pytest.raises(ExpectTimeout):
        shell.run("read line", timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 2


def test_force_prompt_provokes_a_prompt(dut, line_log):
    # the DUT stays silent until it has read two lines
    _console, shell = dut("--no-login", "--wake-after", "2")
    start = time.monotonic()
    match = shell.force_prompt(10)
    assert match.after == PROMPT
    assert time.monotonic() - start < 3
    assert line_log.inputs.count("") >= 2


def test_force_prompt_finds_an_idle_shell_at_once(dut, line_log):
    console, shell = dut("--no-login")
    shell.wait_for_prompt(10)
    console.flush()
    start = time.monotonic()
    shell.force_prompt(10)
    assert time.monotonic() - start < 1
    assert line_log.inputs == [""]


def test_force_prompt_gives_up_at_its_timeout_with_growing_waits(resources, line_log):
    console = resources.console(resources.process(["cat"]), line_log)  # never prints a prompt
    console.start()
    shell = ShellSession(console, prompts=[PROMPT])
    start = time.monotonic()
    with pytest.raises(ExpectTimeout):
        shell.force_prompt(1.0)
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 2.0
    # waits of 0.25, 0.5, then what is left: three newlines, not one per tick
    assert line_log.inputs == ["", "", ""]


def test_char_delay_sends_one_character_at_a_time(line_log):
    transport = QueueTransport()
    console = Console(transport, name="slow", on_line=line_log.on_line, on_input=line_log.on_input)
    console.start()
    try:
        shell = ShellSession(console, prompts=[PROMPT], char_delay=0.02)
        start = time.monotonic()
        shell.sendline("ls -l")
        elapsed = time.monotonic() - start
        writes = transport.written
        assert [data for data, _ in writes] == [b"l", b"s", b" ", b"-", b"l", b"\n"]
        gaps = [b[1] - a[1] for a, b in itertools.pairwise(writes)]
        assert all(gap >= 0.015 for gap in gaps)
        assert elapsed >= 0.095
        assert line_log.inputs == ["ls -l"]
        # no delay: one write; an explicit delay overrides the session's
        transport.written.clear()
        shell.sendline("uname", delay=0)
        assert [data for data, _ in transport.written] == [b"uname\n"]
        shell.char_delay = 0
        transport.written.clear()
        shell.send("ab", delay=0.001)
        assert [data for data, _ in transport.written] == [b"a", b"b"]
    finally:
        console.close()


def test_char_delay_is_interrupted_by_a_cancel(line_log):
    transport = QueueTransport()
    interrupter = Interrupter()
    console = Console(transport, name="slow", on_line=line_log.on_line, interrupter=interrupter)
    console.start()
    timer = threading.Timer(0.1, interrupter.cancel, (errors.JobCanceled("SIGTERM"),))
    try:
        shell = ShellSession(console, prompts=[PROMPT], char_delay=0.05)
        timer.start()
        start = time.monotonic()
        with pytest.raises(errors.JobCanceled):
            shell.sendline("x" * 200)  # 10 s of typing
        assert time.monotonic() - start < 0.6
        assert len(transport.written) < 20
    finally:
        timer.cancel()
        timer.join(5)
        console.close()


def test_char_delay_on_a_real_shell(dut):
    _console, shell = dut("--no-login", "--echo", char_delay=0.002)
    shell.wait_for_prompt(10)
    assert shell.run("echo typed slowly", timeout=10).output == "typed slowly"


def test_linesep_and_prompts_are_settable(dut):
    _console, shell = dut("--no-login", linesep="\r")
    shell.prompts = ["no such prompt", PROMPT]
    assert shell.prompts == ["no such prompt", PROMPT]
    assert shell.wait_for_prompt(10).index == 1
    assert shell.run("echo cr", timeout=10).output == "cr"  # the tty turns \r into \n (ICRNL)


def test_console_close_ends_the_dut_and_later_calls_fail(dut):
    console, shell = dut("--no-login")
    shell.wait_for_prompt(10)
    pid = console.transport.pid
    start = time.monotonic()
    console.close()
    assert time.monotonic() - start < 1.5
    assert console.closed
    assert pid_gone(pid)
    with pytest.raises(errors.ConnectionClosedError):
        shell.sendline("echo too late")
    with pytest.raises(errors.ConnectionClosedError):
        shell.wait_for_prompt(1)


def test_on_closed_when_the_dut_goes_away(dut, line_log):
    _console, shell = dut("--no-login")
    shell.wait_for_prompt(10)
    shell.sendline("exit")
    line_log.wait_for(lambda log: bool(log.closed))
    assert line_log.closed == [None]
    with pytest.raises(errors.ConnectionClosedError):
        shell.wait_for_prompt(5)
