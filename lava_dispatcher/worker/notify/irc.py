"""A small IRC client of our own: connect, register, message a nick or a channel, quit.

LAVA pipes ``NICK``/``USER``/``PRIVMSG``/``QUIT`` into ``nc`` through a
shell, with the job's handle in the command line. Here the conversation is
asyncio, the handle and server are checked before anything is sent, and the
whole attempt is bounded by one timeout. The client answers ``PING`` (many
servers ping before they welcome), waits for the welcome (001), picks
another nick when its own is taken, joins a channel before speaking in it,
and reads the server's answers until the connection closes after ``QUIT``
so that "no such nick" or "cannot send to channel" are reported as failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from lava_dispatcher.worker.notify.errors import Permanent, Temporary

NICK = re.compile(r"^[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]{0,29}$")
CHANNEL = re.compile(r"^[#&][^\s,\x07\x00]{1,49}$")
HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")
#: numerics that say the message cannot be delivered (no such nick, cannot send...)
UNDELIVERABLE = {"401", "403", "404", "405", "411", "412", "471", "473", "474", "475", "477"}
#: numerics that say our nick is refused; another is tried
NICK_TAKEN = {"432", "433", "436", "437"}
NICK_TRIES = 5
#: after QUIT, how long to wait for the server to close before calling it done
QUIT_GRACE = 5.0


@dataclass(frozen=True)
class IrcTarget:
    host: str
    port: int
    #: a nick, or a channel (``#name``)
    to: str

    @property
    def is_channel(self) -> bool:
        return self.to[:1] in "#&"

    def __str__(self) -> str:
        return f"{self.to}@{self.host}:{self.port}"


def target(to: str, server: str, default_port: int) -> IrcTarget:
    """Check a recipient's handle and ``server`` (``host`` or ``host:port``); Permanent if bad."""
    if not (NICK.match(to) or CHANNEL.match(to)):
        raise Permanent(f"{to!r} is not an IRC nick or channel")
    host, port = server, default_port
    if re.match(r"^.*:\d+$", server) and not server.endswith("]"):
        host, _, digits = server.rpartition(":")
        port = int(digits)
    if not HOST.match(host) or not 0 < port < 65536:
        raise Permanent(f"{server!r} is not an IRC server (host or host:port)")
    return IrcTarget(host.strip("[]"), port, to)


def _parse(line: str) -> tuple[str, str, list[str]]:
    """``(prefix, command, params)`` of one IRC line."""
    prefix = ""
    if line.startswith(":"):
        prefix, _, line = line[1:].partition(" ")
    head, _, trailing = line.partition(" :")
    words = head.split()
    params = words[1:] + ([trailing] if trailing or " :" in line else [])
    return prefix, (words[0].upper() if words else ""), params


def _said(command: str, params: list[str]) -> str:
    """A server's numeric answer for people: ``401 nobody: No such nick/channel``."""
    words = params[1:]  # the first parameter is our own nick
    if len(words) > 1:
        return f"{command} {' '.join(words[:-1])}: {words[-1]}"
    return " ".join([command, *words])


class _Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, line: str) -> None:
        self.writer.write(line.encode("utf-8") + b"\r\n")
        await self.writer.drain()

    async def receive(self) -> tuple[str, str, list[str]] | None:
        """The next line that is not a PING (PINGs are answered here); None at the end."""
        while True:
            raw = await self.reader.readline()
            if not raw:
                return None
            prefix, command, params = _parse(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if command == "PING":
                await self.send(f"PONG :{params[-1] if params else ''}")
                continue
            return prefix, command, params


async def _register(session: _Session, nick: str) -> str:
    """NICK/USER until the welcome; the nick the server accepted."""
    await session.send(f"NICK {nick}")
    await session.send(f"USER {nick} 0 * :lava-dispatcher notifications")
    tries = 0
    while True:
        line = await session.receive()
        if line is None:
            raise Temporary("the IRC server closed the connection before welcoming us")
        _prefix, command, params = line
        if command == "001":
            return params[0] if params else nick
        if command in NICK_TAKEN:
            tries += 1
            if tries > NICK_TRIES:
                raise Permanent(f"the IRC server refused the nicks {nick} to {nick}{tries - 1}")
            await session.send(f"NICK {nick}{tries}")
        elif command == "465":
            raise Permanent(f"the IRC server refused us: {_said(command, params)}")
        elif command == "ERROR":
            raise Temporary(f"the IRC server said: {' '.join(params)}")


async def _join(session: _Session, channel: str, nick: str) -> None:
    await session.send(f"JOIN {channel}")
    while True:
        line = await session.receive()
        if line is None:
            raise Temporary(f"the IRC server closed the connection when joining {channel}")
        prefix, command, params = line
        if command == "JOIN" and prefix.split("!")[0] == nick:
            return
        if command == "366":
            return
        if command in UNDELIVERABLE:
            raise Permanent(f"cannot join {channel}: {_said(command, params)}")


async def _quit(session: _Session) -> None:
    """QUIT, then read what is left: an undeliverable answer is a failure."""
    await session.send("QUIT :done")
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(QUIT_GRACE):
            while (line := await session.receive()) is not None:
                _prefix, command, params = line
                if command in UNDELIVERABLE:
                    raise Permanent(f"not delivered: {_said(command, params)}")


async def send(
    where: IrcTarget, lines: Sequence[str], *, nick: str = "lava-bot", tls: bool = False, timeout: float = 30.0
) -> str:
    """One attempt: the whole conversation within ``timeout``."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            context = ssl.create_default_context() if tls else None
            reader, writer = await asyncio.open_connection(where.host, where.port, ssl=context)
            session = _Session(reader, writer)
            nick = await _register(session, nick)
            if where.is_channel:
                await _join(session, where.to, nick)
            for line in lines:
                text = " ".join(line.split())  # one protocol line each, whatever the text
                await session.send(f"PRIVMSG {where.to} :{text}")
            await _quit(session)
    except TimeoutError:
        raise Temporary(f"the IRC conversation with {where.host}:{where.port} took more than {timeout:g} s") from None
    except (OSError, ssl.SSLError) as exc:
        raise Temporary(f"IRC server {where.host}:{where.port}: {type(exc).__name__}: {exc}") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return f"sent as {nick} to {where}"
