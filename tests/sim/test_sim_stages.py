"""The stage machine's bootloader hook, used the way a bootloader stage would be."""

from __future__ import annotations

from lava_dispatcher.sim import SimConfig, SimDUT, Stage, StageHandler
from lava_dispatcher.sim.line import SerialLine
from lava_dispatcher.sim.loop import EventLoop


class Capture:
    """A console that keeps what the board prints."""

    on_drain = None

    def __init__(self, loop: EventLoop, stop_at: bytes) -> None:
        self.loop = loop
        self.stop_at = stop_at
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data
        if self.stop_at in self.data:
            self.loop.stop()

    def backlog(self) -> int:
        return 0


class Countdown(StageHandler):
    """A tiny bootloader: a banner, a countdown a key press interrupts, `boot`."""

    stage = Stage.BOOTLOADER

    def enter(self) -> None:
        self.emit(b"U-Boot 2024.01-sim\r\nHit any key to stop autoboot:  1 ")
        self.autoboot = self.call_later(0.05, self.dut.start_kernel)
        self.typed = b""

    def input(self, data: bytes) -> None:
        if self.autoboot is not None:
            self.autoboot.cancel()
            self.autoboot = None
            self.emit(b"\r\n=> ")
            return
        self.typed += data
        if self.typed.endswith(b"boot\n"):
            self.dut.start_kernel()


def run_board(bootloader, typed: list[bytes]) -> bytes:
    loop = EventLoop()
    console = Capture(loop, stop_at=b"sim login: ")
    config = SimConfig(boot_time=0, boot_lines=3, hang_at="login")  # no shell needed
    dut = SimDUT(loop, config, SerialLine(loop, console), bootloader=bootloader)
    try:
        dut.power_on()
        assert dut.stage is Stage.BOOTLOADER
        for data in typed:
            dut.input(data)
        safety = loop.call_later(10, loop.stop)
        loop.run()
        safety.cancel()
        status = dut.status()  # once: uptime moves between two calls
        assert (status["stage"], status["reason"]) == ("dead", "hang at login")
        return bytes(console.data)
    finally:
        dut.power_off()
        loop.close()


def test_bootloader_autoboots_into_the_kernel():
    out = run_board(Countdown, [])
    assert out.index(b"autoboot") < out.index(b"Linux version") < out.index(b"sim login: ")


def test_bootloader_interrupted_then_told_to_boot():
    out = run_board(Countdown, [b" ", b"bo", b"ot\n"])
    assert b"autoboot:  1 \r\n=> " in out
    assert out.index(b"=> ") < out.index(b"Linux version")
