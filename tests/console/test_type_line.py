"""ShellSession.type_line against a shell process on a real pty: a shell that
loses characters on the way in, one that echoes nothing, one that wraps."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator

import pytest

from lava_dispatcher.console import Console, ProcessTransport, ShellSession

# A line-editing shell in miniature: echoes each character it keeps (it
# drops the characters at the positions given in argv, counted over all
# input; or with "every N", the Nth character of every line), wraps its echo every WIDTH columns with " \b\r\n" as a terminal
# line editor does, cancels the line on Ctrl-C with a new prompt, and on
# Enter prints "ran: <line>" and the prompt.
FAKE_SHELL = textwrap.dedent(r"""
    import os, sys, termios, tty
    tty.setraw(0)
    every = sys.argv[2:3] == ["every"]
    drops = {int(a) for a in sys.argv[3 if every else 2:]}
    echo = sys.argv[1] == "echo"
    WIDTH = 40
    def out(s):
        os.write(1, s.encode())
    out("$ ")
    line, seen, pos = "", 0, 0
    while True:
        data = os.read(0, 1)
        if not data:
            break
        c = data.decode()
        seen += 1
        pos = 0 if c in "\x03\r\n" else pos + 1
        if (pos if every else seen) in drops and c not in "\x03\r\n":
            drops = drops if every else drops - {seen}
            continue
        if c == "\x03":
            out("^C\r\n$ ")
            line = ""
        elif c in "\r\n":
            out(f"\r\nran: {line}\r\n$ ")
            line = ""
        else:
            line += c
            if echo:
                out(c)
                if (len(line) + 2) % WIDTH == 0:
                    out(" \b\r\n")
""")


@pytest.fixture
def shell_factory() -> Iterator:
    consoles: list[Console] = []

    def start(*args: str) -> tuple[ShellSession, list[str]]:
        transport = ProcessTransport([sys.executable, "-c", FAKE_SHELL, *args])
        console = Console(transport, name="fake", on_line=lambda line, ts: None)
        console.start()
        consoles.append(console)
        shell = ShellSession(console, prompts=[r"\$ "])
        shell.wait_for_prompt(10)
        return shell, []

    yield start
    for console in consoles:
        console.close()


LINE = "export SHELL=/bin/sh; test -r /lava-1/environment && . /lava-1/environment"


def test_a_lost_character_is_caught_and_the_line_typed_again(shell_factory) -> None:
    shell, notes = shell_factory("echo", "5")  # the 5th character typed is lost
    shell.type_line(LINE, timeout=30, on_retry=notes.append)
    found = shell.expect([r"ran: ([^\r\n]+)\r\n"], 10)
    assert found.match is not None and found.match.group(1) == LINE
    assert len(notes) == 1 and "cancelling the line" in notes[0]
    assert "expo" in notes[0] and LINE not in notes[0].split(" for ")[0]
    assert shell.echo is True


def test_a_wrapped_echo_still_matches(shell_factory) -> None:
    shell, notes = shell_factory("echo")
    shell.type_line(LINE, timeout=30, on_retry=notes.append)
    found = shell.expect([r"ran: ([^\r\n]+)\r\n"], 10)
    assert found.match is not None and found.match.group(1) == LINE
    assert notes == []


def test_a_shell_without_echo_gets_its_lines_unchecked(shell_factory) -> None:
    shell, notes = shell_factory("noecho")
    shell.type_line("first line", timeout=30, on_retry=notes.append)
    found = shell.expect([r"ran: ([^\r\n]+)\r\n"], 10)
    assert found.match is not None and found.match.group(1) == "first line"
    assert shell.echo is False and notes == []
    shell.type_line("second line", timeout=30, on_retry=notes.append)  # no wait for an echo
    found = shell.expect([r"ran: ([^\r\n]+)\r\n"], 10)
    assert found.match is not None and found.match.group(1) == "second line"


@pytest.mark.slow
def test_an_echo_that_never_matches_falls_back_to_typing_unchecked(shell_factory) -> None:
    # every attempt loses a character: the 3rd of every line typed
    line = "abcdefghij"
    shell, notes = shell_factory("echo", "every", "3")
    shell.type_line(line, timeout=60, on_retry=notes.append)
    assert len(notes) == 6 and "typing lines unchecked" in notes[-1]
    assert shell.echo is False
    found = shell.expect([r"ran: ([^\r\n]+)\r\n"], 10)
    # unchecked, the line runs as the shell got it (as it would with LAVA)
    assert found.match is not None and found.match.group(1) == "abdefghij"
