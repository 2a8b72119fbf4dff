"""`sim run`: the simulated board as a spawned process on stdin/stdout."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import time

import pexpect

from lava_dispatcher.sim import child_env, run_command

from .helpers import fd_reader, process_gone, read_quiet, read_until, run_cli

PROMPT = "root@sim:~# "


def login(child: pexpect.spawn, prompt: str = PROMPT) -> None:
    child.expect_exact("sim login: ")
    child.sendline("root")
    child.expect_exact(prompt)


def shell_pid(child: pexpect.spawn, prompt: str = PROMPT) -> int:
    child.sendline("echo pid=$$")
    child.expect(rb"pid=(\d+)\r\n")
    pid = int(child.match.group(1))
    child.expect_exact(prompt)
    return pid


def test_boot_login_and_real_shell(spawn):
    child = spawn()
    child.expect(rb"\[ *[0-9.]+\] Linux version [0-9]")
    child.expect_exact("Run /sbin/init as init process\r\n")
    child.expect_exact("sim login: ")
    child.sendline("root")
    child.expect_exact(PROMPT)
    child.sendline("echo $((6*7))")
    # terminal echo of the command, then its output, CR LF as on a serial line
    child.expect_exact("echo $((6*7))\r\n42\r\n" + PROMPT)
    pid = shell_pid(child)
    assert not process_gone(pid, timeout=0)
    # logging out gives the login prompt back, as a getty would
    child.sendline("exit")
    child.expect_exact("sim login: ")
    assert process_gone(pid)
    child.sendline("root")
    child.expect_exact(PROMPT)
    pid = shell_pid(child)
    child.close()
    assert process_gone(pid), "the shell outlived the simulator"


def test_wrong_password_then_right_one(spawn):
    child = spawn(password="s3cret")
    child.expect_exact("sim login: ")
    child.sendline("root")
    child.expect_exact("Password: ")
    child.sendline("guess")
    child.expect_exact("Login incorrect\r\n")
    child.expect_exact("sim login: ")
    assert b"guess" not in child.before, "passwords must not be echoed"
    child.sendline("root")
    child.expect_exact("Password: ")
    child.sendline("s3cret")
    child.expect_exact(PROMPT)
    child.sendline("echo $((6*7))")
    child.expect_exact("42\r\n")


def test_unknown_user_is_refused(spawn):
    child = spawn()
    child.expect_exact("sim login: ")
    child.sendline("admin")
    child.expect_exact("Password: ")
    child.sendline("")
    child.expect_exact("Login incorrect\r\nsim login: ")


def test_no_login_custom_prompt_and_hostname(spawn):
    child = spawn(no_login=True, hostname="board7", prompt="board7 # ")
    child.expect_exact("board7 # ")
    assert b"login:" not in child.before
    child.sendline("echo $((6*7))")
    child.expect_exact("42\r\nboard7 # ")


def test_login_prompt_and_user_knobs(spawn):
    child = spawn(login_prompt="Login as: ", username="lava")
    child.expect_exact("Login as: ")
    child.sendline("lava")
    child.expect_exact("lava@sim:~$ ")


def test_panic_on_word_in_the_middle_of_a_session(spawn):
    child = spawn(panic_on="crashme")
    login(child)
    child.sendline("echo still fine")
    child.expect_exact("still fine\r\n" + PROMPT)
    pid = shell_pid(child)
    child.sendline("echo crashme")
    child.expect(rb"\] Kernel panic - not syncing: ([^\r\n]*)\r\n")
    reason = child.match.group(1)
    child.expect_exact(b"---[ end Kernel panic - not syncing: " + reason + b" ]---\r\n")
    assert process_gone(pid), "a panicked board keeps no shell"
    # dead board: no echo, no answer
    child.sendline("echo $((6*7))")
    assert child.expect([pexpect.TIMEOUT, b"."], timeout=0.5) == 0


def test_panic_after_seconds(spawn):
    child = spawn(no_login=True, panic_after=0.5)
    child.expect_exact(PROMPT)
    started = time.monotonic()
    child.expect_exact("Kernel panic - not syncing: ", timeout=10)
    assert time.monotonic() - started > 0.3
    child.expect_exact("---[ end Kernel panic - not syncing:")
    child.expect_exact(" ]---\r\n")
    child.sendline("echo hello")
    assert child.expect([pexpect.TIMEOUT, b"."], timeout=0.5) == 0


def test_hang_at_shell(spawn):
    child = spawn(hang_at="shell")
    login(child)
    child.sendline("echo $((6*7))")
    assert child.expect([pexpect.TIMEOUT, b"."], timeout=0.5) == 0
    assert child.before == b""


def test_hang_at_boot(spawn):
    child = spawn(hang_at="boot", boot_lines=20)
    child.expect(rb"Linux version [0-9]")
    assert child.expect([pexpect.TIMEOUT, b"login:"], timeout=0.5) == 0
    assert b"Run /sbin/init" not in child.before


def test_hang_at_login(spawn):
    child = spawn(hang_at="login")
    child.expect_exact("sim login: ")
    child.sendline("root")
    assert child.expect([pexpect.TIMEOUT, b"."], timeout=0.5) == 0


def test_baud_rate_paces_output(spawn):
    child = spawn(no_login=True, baud=9600, boot_lines=1, boot_time=0, prompt="$ ")
    child.expect_exact("$ ")
    started = time.monotonic()
    child.sendline("printf '%01024d\\n' 7")  # about 1 KB of output (and the echo)
    child.expect(rb"0{1023}7\r\n\$ ", timeout=10)
    elapsed = time.monotonic() - started
    # 1024 + CR LF + echo + prompt, 10 bits a byte at 9600 baud: about 1.1 s
    assert 0.7 < elapsed < 3.0, elapsed


def test_burst_keeps_every_line_in_order(popen):
    process = popen(
        run_command(no_login=True, boot_time=0, burst_mb=2, burst_after=0.1),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    started = time.monotonic()
    data = read_until(fd_reader(process.stdout.fileno()), b" lines\r\n", timeout=30)
    elapsed = time.monotonic() - started
    numbers = [int(n) for n in re.findall(rb"burst line (\d+) ", data)]
    total = int(re.search(rb"burst done: (\d+) lines", data).group(1))
    assert total * 80 >= 2 * 1024 * 1024
    assert numbers == list(range(1, total + 1))
    burst = data[data.index(b"burst line 000001") : data.index(b"burst done")]
    assert all(len(line) == 78 for line in burst.split(b"\r\n")[:-1])
    assert elapsed < 10, f"2 MB took {elapsed:.1f} s"
    process.stdin.close()
    assert process.wait(10) == 0


def _faulty_boot_output(popen, **knobs) -> bytes:
    process = popen(
        run_command(boot_time=0, hang_at="login", **knobs),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    return read_quiet(fd_reader(process.stdout.fileno(), wait=0.3), quiet=0.3)


def test_drop_and_garble_rates_are_reproducible_with_a_seed(popen):
    clean = _faulty_boot_output(popen)
    assert clean.endswith(b"sim login: ")
    first = _faulty_boot_output(popen, drop_rate=0.2, seed=1234)
    again = _faulty_boot_output(popen, drop_rate=0.2, seed=1234)
    other = _faulty_boot_output(popen, drop_rate=0.2, seed=99)
    assert first == again
    assert first != other
    assert 0.7 < len(first) / len(clean) < 0.9
    garbled = _faulty_boot_output(popen, garble_rate=0.1, seed=5)
    assert len(garbled) == len(clean)
    changed = sum(a != b for a, b in zip(garbled, clean, strict=True))
    assert 0.05 < changed / len(clean) < 0.15
    assert garbled == _faulty_boot_output(popen, garble_rate=0.1, seed=5)


def test_stdin_closing_powers_off_and_kills_the_shell(popen):
    process = popen(
        run_command(no_login=True, boot_time=0, prompt="$ "),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    reader = fd_reader(process.stdout.fileno())
    read_until(reader, b"$ ")
    process.stdin.write(b"sleep 1000 & echo pids=$$,$!\n")
    process.stdin.flush()
    match = re.search(rb"pids=(\d+),(\d+)\r\n", read_until(reader, b"\r\n$ "))
    shell, background = int(match.group(1)), int(match.group(2))
    process.stdin.close()
    assert process.wait(10) == 0
    assert process_gone(shell)
    assert process_gone(background), "a job the shell started outlived the board"


def test_sigterm_ends_cleanly(spawn):
    child = spawn(no_login=True)
    child.expect_exact(PROMPT)
    pid = shell_pid(child)
    child.kill(signal.SIGTERM)
    child.expect(pexpect.EOF)
    child.wait()
    assert child.exitstatus == 0
    assert process_gone(pid)


def test_bad_command_lines_exit_2_with_usage():
    cases = [
        ([], "required: COMMAND"),
        (["run", "--drop-rate", "2"], "--drop-rate"),
        (["run", "--no-such-knob"], "unrecognized arguments"),
        (["run", "--hang-at", "never"], "--hang-at"),
        (["run", "--boot-lines", "0"], "--boot-lines"),
        (["run", "--shell", "/no/such/shell"], "--shell"),
        (["run", "--burst-after", "1"], "--burst-mb"),
        (["serve", "--control", "/tmp/x"], "--pty"),
        (["serve", "--control", "/tmp/x", "--tcp", "70000"], "--tcp"),
        (["power", "on"], "--control"),
        (["power", "explode", "--control", "/tmp/x"], "invalid choice"),
    ]
    for argv, message in cases:
        result = run_cli(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert "usage: lava-dispatch sim" in result.stderr, argv
        assert message in result.stderr, (argv, result.stderr)


def test_help_exits_0():
    result = run_cli("run", "--help")
    assert result.returncode == 0
    assert "--panic-on" in result.stdout


def test_terminal_is_raw_while_running_and_restored_after():
    """Run from an interactive shell on a terminal, as a person would."""
    shell = pexpect.spawn(
        "bash", ["--norc", "--noprofile"], env={**child_env(), "PS1": "outer$ "}, timeout=10
    )
    try:
        shell.expect_exact("outer$ ")
        check = "stty -a | grep -o -w -e -icanon -e icanon -e -echo -e echo | tr '\\n' ' '; echo"
        shell.sendline(check)
        shell.expect(r"(-?icanon -?echo )")
        assert shell.match.group(1) == b"icanon echo "
        shell.expect_exact("outer$ ")
        shell.sendline(shlex.join(run_command(no_login=True, boot_time=0, prompt="inner$ ")))
        shell.expect_exact("inner$ ")
        # the board's shell sees the terminal raw: no local echo, no line editing
        shell.sendline(check.replace("stty -a", "stty -a -F /proc/$PPID/fd/0"))
        shell.expect(r"(-?icanon -?echo )")
        assert shell.match.group(1) == b"-icanon -echo "
        shell.expect_exact("inner$ ")
        shell.sendline("kill -TERM $PPID")  # the simulator is the shell's parent
        shell.expect_exact("outer$ ")
        shell.sendline(check)
        shell.expect(r"(-?icanon -?echo )")
        assert shell.match.group(1) == b"icanon echo ", "terminal modes not restored"
        shell.sendline(
            "python3 -c 'import fcntl, os; print(\"nonblock\", fcntl.fcntl(0, fcntl.F_GETFL) & os.O_NONBLOCK)'"
        )
        shell.expect(r"nonblock (\d+)")
        assert shell.match.group(1) == b"0"
    finally:
        shell.close(force=True)
