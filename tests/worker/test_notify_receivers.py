"""Real receivers on loopback for the notification tests, and the IRC client against them.

* :class:`HttpReceiver`: an aiohttp server that records every request
  (method, path, query, headers, body) and answers with a chosen status, or
  accepts and never answers (``hang``);
* :class:`SmtpReceiver`: aiosmtpd on the test's loop, recording envelopes,
  optionally requiring a login;
* :class:`IrcServer`: a small IRC server of our own: NICK/USER, a PING before
  the welcome (as real servers do), 001, JOIN (echo and 366), PRIVMSG
  (recorded; 401 for nicks it does not know), QUIT (ERROR and close).

Each is an async context manager that stops its server whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from lava_dispatcher.worker.notify import irc
from lava_dispatcher.worker.notify.errors import Permanent

LOOPBACK = "127.0.0.1"


def run(coro: Any, timeout: float = 30.0) -> Any:
    """Run a test scenario with a deadline, so a hung test fails instead of hanging CI."""

    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait for ``condition`` (checked every 5 ms), failing the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# -- HTTP -------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float


class HttpReceiver:
    """Records requests; ``status`` is the answer, ``hang`` holds every request open."""

    def __init__(self, status: int = 200, hang: bool = False, port: int = 0) -> None:
        self.status = status
        self.hang = hang
        self.port = port
        self.requests: list[Request] = []
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Request(request.method, request.path, dict(request.query),
                                     dict(request.headers), body, time.monotonic()))  # fmt: skip
        if self.hang:
            await self._release.wait()
        return web.Response(status=self.status, text="thanks" if self.status < 300 else "no")

    async def __aenter__(self) -> HttpReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()


def free_port() -> int:
    """A loopback port nobody listens on (connections to it are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


# -- SMTP -------------------------------------------------------------------------------


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: Message

    @property
    def body(self) -> str:
        payload = self.message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode("utf-8")


@dataclass
class SmtpReceiver:
    """aiosmtpd on this loop; with ``login`` set, AUTH with that (user, password) is required."""

    login: tuple[str, str] | None = None
    mails: list[Mail] = field(default_factory=list)
    port: int = 0
    _server: asyncio.base_events.Server | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.mails.append(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), message_from_bytes(content)))
        return "250 OK"

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        wanted = self.login or ("", "")
        ok = (data.login.decode(), data.password.decode()) == wanted
        return AuthResult(success=ok, handled=False)

    async def __aenter__(self) -> SmtpReceiver:
        def factory() -> SMTP:
            return SMTP(self, hostname="receiver.test", auth_required=self.login is not None,
                        auth_require_tls=False, authenticator=self._authenticate)  # fmt: skip

        self._server = await asyncio.get_running_loop().create_server(factory, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()


# -- IRC --------------------------------------------------------------------------------


class IrcServer:
    """Just enough IRC: registration with a PING first, JOIN, PRIVMSG, QUIT."""

    def __init__(self, known_nicks: tuple[str, ...] = ("alice", "bob"), taken: tuple[str, ...] = ()) -> None:
        self.known = set(known_nicks)
        self.taken = set(taken)
        #: (nick, command, params) of every command received
        self.commands: list[tuple[str, str, list[str]]] = []
        self.messages: list[tuple[str, str, str]] = []
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        nick, user, pinged, welcomed = "*", False, "", False

        def say(line: str) -> None:
            writer.write(f"{line}\r\n".encode())

        try:
            while raw := await reader.readline():
                _prefix, command, params = irc._parse(raw.decode().rstrip("\r\n"))
                self.commands.append((nick, command, params))
                if command == "NICK":
                    if params[0] in self.taken:
                        say(f":irc.test 433 * {params[0]} :Nickname is already in use")
                    else:
                        nick = params[0]
                elif command == "USER":
                    user = True
                elif command == "PONG" and params and params[-1] == pinged:
                    pinged = "ok"
                elif command == "JOIN" and welcomed:
                    say(f":{nick}!u@127.0.0.1 JOIN {params[0]}")
                    say(f":irc.test 366 {nick} {params[0]} :End of /NAMES list")
                elif command == "PRIVMSG" and welcomed:
                    to, text = params[0], params[-1]
                    if to.startswith("#") or to in self.known:
                        self.messages.append((nick, to, text))
                    else:
                        say(f":irc.test 401 {nick} {to} :No such nick/channel")
                elif command == "QUIT":
                    say(f"ERROR :Closing link ({nick})")
                    break
                if user and nick != "*" and not pinged:
                    pinged = f"cookie{len(self.commands)}"
                    say(f"PING :{pinged}")
                if pinged == "ok" and not welcomed:
                    welcomed = True
                    say(f":irc.test 001 {nick} :Welcome to the test network {nick}")
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)

    async def __aenter__(self) -> IrcServer:
        self._server = await asyncio.start_server(self._client, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()

    @property
    def server(self) -> str:
        return f"{LOOPBACK}:{self.port}"


# -- the IRC client against the server ----------------------------------------------------------


def test_irc_client_messages_a_nick_and_a_channel() -> None:
    async def scenario() -> None:
        async with IrcServer() as server:
            said = await irc.send(irc.target("alice", server.server, 6667), ["hello alice"], timeout=5)
            await irc.send(irc.target("#lab", server.server, 6667), ["hello lab"], timeout=5)
        assert said == f"sent as lava-bot to alice@{server.server}"
        assert server.messages == [("lava-bot", "alice", "hello alice"), ("lava-bot", "#lab", "hello lab")]
        commands = [c for _n, c, _p in server.commands]
        # registered (answering the PING), joined the channel before speaking in it, quit
        assert commands[:4] == ["NICK", "USER", "PONG", "PRIVMSG"]
        assert commands[-4:] == ["PONG", "JOIN", "PRIVMSG", "QUIT"]

    run(scenario())


def test_irc_client_takes_another_nick_and_reports_unknown_nicks() -> None:
    async def scenario() -> None:
        async with IrcServer(taken=("lava-bot",)) as server:
            said = await irc.send(irc.target("bob", server.server, 6667), ["hi"], timeout=5)
            assert said.startswith("sent as lava-bot1 ")
            with pytest.raises(Permanent, match="not delivered: 401 nobody: No such nick/channel"):
                await irc.send(irc.target("nobody", server.server, 6667), ["hi"], timeout=5)
        assert server.messages == [("lava-bot1", "bob", "hi")]

    run(scenario())


@pytest.mark.parametrize(
    ("to", "server"),
    [("alice\r\nQUIT", "irc.test"), ("alice bob", "irc.test"), ("#a,#b", "irc.test"),
     ("alice", "irc.test; rm -rf /"), ("alice", "irc.test:99999"), ("", "irc.test")],
)  # fmt: skip
def test_irc_targets_are_checked_before_anything_is_sent(to: str, server: str) -> None:
    with pytest.raises(Permanent):
        irc.target(to, server, 6667)
