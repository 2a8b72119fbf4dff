"""Talking to a served board with the simulated U-Boot over its TCP console."""

from __future__ import annotations

import socket
import struct
import time
import zlib

from pexpect import fdpexpect

from lava_dispatcher.sim import SimServer

PROMPT = "=> "
BANNER = "\r\n\r\nU-Boot 2023.01 (sim) (Jan 10 2023 - 00:00:00 +0000)\r\n"
COUNTDOWN = "Hit any key to stop autoboot: "
SHELL_PROMPT = "root@sim:~# "


class Board:
    """A served board and a pexpect session on its TCP console."""

    def __init__(self, sim: SimServer, timeout: float = 10.0) -> None:
        self.sim = sim
        assert sim.tcp_port
        self.sock = socket.create_connection(("127.0.0.1", sim.tcp_port))
        # a round trip to the daemon: it has taken the connection before any power-on
        sim.status()
        self.console = fdpexpect.fdspawn(self.sock.fileno(), timeout=timeout)

    def close(self) -> None:
        self.sock.close()

    def expect(self, text: str, timeout: float | None = None) -> str:
        """Wait for `text`; return what came before it."""
        self.console.expect_exact(text, timeout=timeout if timeout is not None else -1)
        return self.console.before.decode("utf-8", "replace")

    def send(self, data: str) -> None:
        self.sock.sendall(data.encode())

    def power_on_and_interrupt(self) -> str:
        """Power on, stop the countdown, wait for the prompt; return the banner."""
        self.sim.power_on()
        banner = self.expect(COUNTDOWN)
        self.send(" ")
        self.expect(PROMPT)
        return banner

    def run(self, command: str, timeout: float | None = None) -> str:
        """Type a command line; return its output (CR LF made LF) up to the next prompt."""
        self.send(command + "\n")
        self.expect(command + "\r\n")
        return self.expect(PROMPT, timeout).replace("\r\n", "\n")


def uimage(
    payload: bytes, *, image_type: int = 3, arch: int = 22, name: bytes = b"ramdisk"
) -> bytes:
    """`payload` behind a legacy U-Boot header, as `mkimage -A arm64 -T ramdisk -C none` makes it."""
    fields = [0x27051956, 0, int(time.time()), len(payload), 0, 0, zlib.crc32(payload)]
    fields += [5, arch, image_type, 0, name]
    layout = ">IIIIIIIBBBB32s"
    fields[1] = zlib.crc32(struct.pack(layout, *fields))
    return struct.pack(layout, *fields) + payload
