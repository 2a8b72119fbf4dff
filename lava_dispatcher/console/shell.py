"""A console (transport + reader + expect buffer) and the shell session on top of it.

:class:`Console` bundles one transport with its always-on reader and the
expect buffer the reader fills. :class:`ShellSession` talks to a shell on a
console: prompts, ``sendline`` with an optional per-character delay (only
when the device needs it), commands with return-code checks, login, and
``force_prompt`` without blind sleeps.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lava_dispatcher import errors
from lava_dispatcher.console.expect import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_SEARCH_WINDOW,
    EOF,
    ExpectBuffer,
    ExpectMatch,
    ExpectTimeout,
    Pattern,
    expect,
)
from lava_dispatcher.console.reader import ClosedCallback, ConsoleReader, LineCallback
from lava_dispatcher.console.transport import Transport, TransportClosed
from lava_dispatcher.console.watchers import Watcher
from lava_dispatcher.timing import Interrupter

#: LAVA's return-code signal (the misspelling is LAVA's, and part of the contract)
RETURN_CODE_SIGNAL = "LAVA_SIGNAL_RETRUNCODE"
#: only digits match, so the echoed command line (which shows ``$?``) never does
RETURN_CODE_PATTERN = re.compile(r"<LAVA_SIGNAL_RETRUNCODE (\d+)>")

#: what a terminal may put between echoed characters: a wrap (CR, LF, the
#: " \b" of line editors), cursor moves and colours
_ECHO_NOISE = r"(?:\r|\n| \x08| \r|\x1b\[[0-9;?]*[A-Za-z])*"
#: how often an echo-checked line is typed before giving up
ECHO_ATTEMPTS = 5

LOGIN_INCORRECT = "Login incorrect"
LOGIN_TIMED_OUT = "Login timed out"


class Console:
    """One console: a transport, the reader thread that reads it all the
    time, and the expect buffer that thread fills.

    ``on_line(text, arrival_time)`` gets every line the DUT prints;
    ``on_input(text)`` every line a :class:`ShellSession` sends;
    ``on_closed(exc_or_None)`` is called (from the reader thread) when the
    far end goes away, not when :meth:`close` is called.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        name: str,
        on_line: LineCallback,
        on_input: Callable[[str], None] | None = None,
        watchers: Sequence[Watcher] = (),
        interrupter: Interrupter | None = None,
        on_closed: ClosedCallback | None = None,
        idle_flush: float = 0.1,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        search_window: int = DEFAULT_SEARCH_WINDOW,
    ) -> None:
        self.transport = transport
        self.name = name
        self.on_input = on_input
        self.interrupter = interrupter
        self.search_window = search_window
        self.buffer = ExpectBuffer(max_size=buffer_size)
        self.reader = ConsoleReader(
            transport,
            name=name,
            on_line=on_line,
            on_closed=on_closed,
            watchers=watchers,
            idle_flush=idle_flush,
            buffer=self.buffer,
        )
        self._closed = False

    def __enter__(self) -> Console:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Console {self.name} {self.transport.describe()}>"

    @property
    def watchers(self) -> list[Watcher]:
        """The reader's watchers (a live list: add or remove between lines)."""
        return self.reader.watchers

    def start(self) -> None:
        self.reader.start()

    def write(self, data: bytes) -> None:
        if self._closed:
            raise TransportClosed(f"console {self.name} is closed")
        self.transport.write(data)

    def report_input(self, text: str) -> None:
        """Tell ``on_input`` about text sent to the DUT."""
        if self.on_input is not None:
            self.on_input(text)

    def expect(self, patterns: Sequence[Pattern], timeout: float) -> ExpectMatch:
        return expect(
            self.buffer,
            patterns,
            timeout,
            interrupter=self.interrupter,
            search_window=self.search_window,
        )

    def flush(self) -> str:
        """Discard the unconsumed text (it was already given to on_line)."""
        return self.buffer.clear()

    @property
    def closed(self) -> bool:
        return self._closed or self.transport.closed or self.buffer.closed

    def close(self) -> None:
        """Stop the reader (it delivers its pending partial line), then close the transport."""
        if self._closed:
            return
        self._closed = True
        try:
            self.reader.stop()
        finally:
            try:
                self.transport.close()
            finally:
                self.buffer.close()


@dataclass(frozen=True)
class CommandResult:
    """The output of a command (without the echoed command line, ``\\n`` line
    endings, no trailing newline) and its return code."""

    output: str
    returncode: int


class CommandFailed(errors.JobError):
    """A command run with ``check=True`` returned non-zero (LAVA raises JobError)."""

    def __init__(self, command: str, returncode: int, output: str) -> None:
        super().__init__(f"{command!r} failed with return code {returncode}")
        self.command = command
        self.returncode = returncode
        self.output = output


class LoginFailed(errors.JobError):
    """The DUT refused the login ("Login incorrect", "Login timed out")."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_LINE_END = re.compile(r"\r*\n")


#: control characters that are not Ctrl-<letter>
_CONTROL = {"@": b"\x00", "[": b"\x1b", "\\": b"\x1c", "]": b"\x1d", "^": b"\x1e", "_": b"\x1f", "?": b"\x7f"}


class ShellSession:
    """A shell on a console.

    ``prompts`` are regexes for the shell prompt. ``linesep`` ends every line
    sent. ``char_delay`` (seconds) is the pause between characters for a
    device whose UART drops input; 0 sends a line in one write.
    """

    def __init__(
        self,
        console: Console,
        *,
        prompts: Sequence[str],
        linesep: str = "\n",
        char_delay: float = 0.0,
    ) -> None:
        self.console = console
        self.prompts = prompts
        self.linesep = linesep
        self.char_delay = char_delay
        #: whether the shell echoes what is typed (None: not known yet)
        self.echo: bool | None = None
        self._interrupter = (
            console.interrupter if console.interrupter is not None else Interrupter()
        )

    @property
    def prompts(self) -> list[str]:
        return list(self._prompts)

    @prompts.setter
    def prompts(self, value: Sequence[str]) -> None:
        if isinstance(value, str):
            value = [value]
        self._prompts: list[str] = list(value)

    # -- sending -------------------------------------------------------------

    def _write(self, text: str, delay: float | None) -> None:
        pause = self.char_delay if delay is None else delay
        if pause and pause > 0:
            chars = text
            for position, char in enumerate(chars):
                self.console.write(char.encode("utf-8"))
                if position + 1 < len(chars):
                    self._interrupter.sleep(pause)
        else:
            self.console.write(text.encode("utf-8"))

    def send(self, text: str, delay: float | None = None) -> None:
        """Send ``text`` as is (reported to on_input)."""
        self.console.report_input(text)
        self._write(text, delay)

    def sendcontrol(self, char: str) -> None:
        """Send the control character for ``char`` ('c' -> Ctrl-C), as pexpect's sendcontrol."""
        code = _CONTROL.get(char) or (
            bytes([ord(char.lower()) - ord("a") + 1]) if "a" <= char.lower() <= "z" else b""
        )
        self.console.report_input(f"Ctrl-{char}")
        self.console.write(code)

    def sendline(self, text: str = "", delay: float | None = None) -> None:
        """Send ``text`` and the line separator (``text`` is reported to on_input)."""
        self.console.report_input(text)
        self._write(text + self.linesep, delay)

    def type_line(
        self,
        text: str,
        delay: float | None = None,
        *,
        timeout: float = 30.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """Type ``text``, and enter it only once the shell has echoed it as typed.

        A character lost on the way in (a UART that drops input) shows as an
        echo that differs: the line is cancelled with Ctrl-C, the prompt
        awaited, and the line typed again (``on_retry`` is told why), up to
        ECHO_ATTEMPTS times, then :class:`errors.ConnectionClosedError`'s
        sibling InfrastructureError. A shell that echoes nothing at all (echo
        off) is left alone from then on: the line is entered as it is.
        """
        if not text or self.echo is False:
            self.sendline(text, delay)
            return
        noise = _ECHO_NOISE
        echo = re.compile(noise.join(re.escape(c) for c in text))
        end = time.monotonic() + timeout
        for attempt in range(1, ECHO_ATTEMPTS + 1):
            before = len(self.console.buffer)
            self.send(text, delay)
            wait = 2.0 + len(text) * (delay or 0.0) * 2
            try:
                self.console.expect([echo], min(wait, max(0.0, end - time.monotonic())))
            except ExpectTimeout as exc:
                if len(self.console.buffer) <= before:
                    self.echo = False  # nothing came back: a shell without echo
                    self.sendline("", delay=0)
                    return
                shown = exc.tail.replace("\r", "").split("\n")[-1][-200:]
                if on_retry is not None:
                    on_retry(f"the shell echoed {shown!r} for {text!r} (attempt {attempt}): "
                             "cancelling the line")  # fmt: skip
                self.sendcontrol("C")
                if self._prompts:
                    self.force_prompt(max(0.0, min(10.0, end - time.monotonic())))
                continue
            self.echo = True
            self.sendline("", delay=0)
            return
        if on_retry is not None:
            on_retry(f"the shell's echo never matched in {ECHO_ATTEMPTS} attempts: "
                     "typing lines unchecked from now on")  # fmt: skip
        self.echo = False
        self.sendline(text, delay)

    # -- waiting -------------------------------------------------------------

    def expect(self, patterns: Sequence[Pattern], timeout: float) -> ExpectMatch:
        return self.console.expect(patterns, timeout)

    def wait_for_prompt(self, timeout: float) -> ExpectMatch:
        """Wait for one of the prompts; raises ExpectTimeout."""
        if not self._prompts:
            raise ValueError("no prompts set on this shell session")
        return self.console.expect(self._prompts, timeout)

    def force_prompt(self, timeout: float, first_wait: float = 0.25) -> ExpectMatch:
        """Provoke a prompt: send a line separator and wait a little for the
        prompt; if none came, send another with a doubled wait, until
        ``timeout``. Raises ExpectTimeout."""
        if not self._prompts:
            raise ValueError("no prompts set on this shell session")
        end = time.monotonic() + timeout
        wait = max(0.01, first_wait)
        while True:
            left = end - time.monotonic()
            self.sendline("")
            try:
                return self.console.expect(self._prompts, min(wait, max(0.0, left)))
            except ExpectTimeout:
                if end - time.monotonic() <= 0:
                    raise ExpectTimeout(timeout, self.console.buffer.tail()) from None
            wait *= 2

    # -- commands ------------------------------------------------------------

    def run(
        self,
        command: str,
        timeout: float,
        check: bool = True,
        *,
        echo_check: bool = False,
        on_retry: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run ``command`` in the shell and return its output and return code.

        LAVA's marker is appended: ``command ; printf "<LAVA_SIGNAL_RETRUNCODE $?>\\n"``;
        then the marker and the following prompt are awaited. Raises
        CommandFailed when ``check`` and the code is not 0, ExpectTimeout when
        the marker or the prompt does not come in time. With ``echo_check``
        the line is typed with :meth:`type_line`.
        """
        end = time.monotonic() + timeout
        line = f'{command} ; printf "<{RETURN_CODE_SIGNAL} $?>\\n"'
        if echo_check:
            self.type_line(line, timeout=timeout, on_retry=on_retry)
        else:
            self.sendline(line)
        found = self.console.expect([RETURN_CODE_PATTERN], timeout)
        assert found.match is not None
        returncode = int(found.match.group(1))
        output = self._command_output(found.before)
        self.console.expect(self._prompts, max(0.0, end - time.monotonic()))
        if check and returncode != 0:
            raise CommandFailed(command, returncode, output)
        return CommandResult(output, returncode)

    @staticmethod
    def _command_output(before: str) -> str:
        # drop the echo of the command line (and whatever came before it)
        echo = before.find(f"<{RETURN_CODE_SIGNAL} $?>")
        if echo >= 0:
            newline = before.find("\n", echo)
            before = before[newline + 1 :] if newline >= 0 else ""
        text = _LINE_END.sub("\n", before)
        return text[:-1] if text.endswith("\n") else text

    def login(
        self,
        *,
        login_prompt: str,
        username: str,
        password_prompt: str | None = None,
        password: str | None = None,
        login_commands: Sequence[str] = (),
        timeout: float,
        incorrect: Sequence[str] = (LOGIN_INCORRECT, LOGIN_TIMED_OUT),
    ) -> ExpectMatch:
        """Log in: wait for the login prompt (or an already-present shell
        prompt: then the login is skipped), send the username, the password
        after its prompt, wait for the shell prompt, and run each login
        command (waiting for the prompt after each). Raises LoginFailed when
        the DUT says "Login incorrect"; returns the final prompt's match."""
        if not self._prompts:
            raise ValueError("no prompts set on this shell session")
        end = time.monotonic() + timeout

        def left() -> float:
            return max(0.0, end - time.monotonic())

        prompts = self._prompts
        first = self.console.expect([login_prompt, *prompts], timeout)
        result = first
        if first.index == 0:
            self.sendline(username)
            failures = list(incorrect)
            if password_prompt is not None and password is not None:
                got = self.console.expect([password_prompt, *failures, EOF], left())
                if got.index != 0:
                    raise self._login_failure(got, password_prompt)
                self.sendline(password)
            got = self.console.expect([*prompts, *failures, EOF], left())
            if got.index >= len(prompts):
                raise self._login_failure(got, None)
            result = got
        for command in login_commands:
            self.sendline(command)
            result = self.console.expect(prompts, left())
        return result

    def _login_failure(self, got: ExpectMatch, waited_for: str | None) -> Exception:
        if got.pattern is EOF:
            return errors.ConnectionClosedError(
                f"console closed during login; last output: {self.console.buffer.tail()[-200:]!r}"
            )
        message = got.after.strip() or str(got.pattern)
        if waited_for is not None and message.startswith(LOGIN_TIMED_OUT):
            message += f" (the password prompt {waited_for!r} did not match)"
        return LoginFailed(message)
