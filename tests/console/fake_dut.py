#!/usr/bin/env python3
"""A tiny fake DUT for the console tests: run it on a pty.

It prints a boot log with CRLF line endings (which the pty's ONLCR turns into
"\\r\\r\\n", as real consoles often show), optionally a kernel panic, a login
prompt (getty-like: "Login incorrect" on a wrong password), then execs a
real ``/bin/sh -i`` with PS1 set.
"""

from __future__ import annotations

import argparse
import os
import sys
import termios

PS1 = "root@sim:~# "


def out(text: str) -> None:
    data = text.encode()
    while data:
        data = data[os.write(1, data) :]


def set_echo(on: bool) -> None:
    if not os.isatty(0):
        return
    attrs = termios.tcgetattr(0)
    if on:
        attrs[3] |= termios.ECHO
    else:
        attrs[3] &= ~termios.ECHO
    termios.tcsetattr(0, termios.TCSANOW, attrs)


def read_line() -> str | None:
    line = sys.stdin.readline()
    if not line:
        return None
    return line.rstrip("\r\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boot-lines", type=int, default=5)
    parser.add_argument("--user", default="root")
    parser.add_argument("--password", default="secret")
    parser.add_argument("--no-login", action="store_true", help="go straight to the shell")
    parser.add_argument("--echo", action="store_true", help="the tty echoes what is typed")
    parser.add_argument(
        "--wake-after",
        type=int,
        default=0,
        help="stay silent after the boot log until this many lines were typed",
    )
    parser.add_argument("--panic", action="store_true", help="panic after the boot log, then hang")
    args = parser.parse_args()

    set_echo(False)
    for number in range(args.boot_lines):
        out(f"[    {number}.{number:06d}] fake kernel: boot message {number}\r\n")
    if args.panic:
        out("[    9.000000] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n")
        out("[    9.000001] CPU: 0 PID: 1 Comm: swapper Not tainted\r\n")
        # hang like a panicked kernel: wait until the console goes away
        sys.stdin.read()
        return 0
    for _ in range(args.wake_after):
        if read_line() is None:
            return 1
    if not args.no_login:
        for _attempt in range(3):
            set_echo(args.echo)
            out("\r\nsim login: ")
            user = read_line()
            if user is None:
                return 1
            set_echo(False)
            out("Password: ")
            password = read_line()
            if password is None:
                return 1
            out("\r\n")
            if user == args.user and password == args.password:
                break
            out("Login incorrect\r\n")
        else:
            out("Login timed out\r\n")
            return 1
        out("Last login: never\r\n")
    set_echo(args.echo)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PS1": PS1,
        "HOME": os.environ.get("HOME", "/"),
        "TERM": "dumb",
        "LC_ALL": "C.UTF-8",
    }
    os.execve("/bin/sh", ["/bin/sh", "-i"], env)
    return 1  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
