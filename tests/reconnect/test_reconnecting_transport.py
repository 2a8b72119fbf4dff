"""ReconnectingTransport against a real ser2net-like TCP port on loopback:
through pyserial (socket://) and through a `telnet` process, as labs connect."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from lava_dispatcher.console import open_transport
from lava_dispatcher.console.reconnect import ReconnectingTransport
from lava_dispatcher.console.transport import TransportClosed

from .relay import ConsolePort

DEADLINE = 30.0


@pytest.fixture
def port() -> Iterator[ConsolePort]:
    with ConsolePort() as console_port:
        yield console_port


def specs(port: ConsolePort) -> dict[str, dict[str, str]]:
    return {
        "pyserial": {"serial": f"socket://127.0.0.1:{port.port}"},
        "telnet": {"connect": f"telnet 127.0.0.1 {port.port}"},
    }


def opened(
    port: ConsolePort, kind: str, **options: float
) -> tuple[ReconnectingTransport, list[str]]:
    if kind == "telnet" and shutil.which("telnet") is None:
        pytest.skip("telnet is not installed (run .ci/setup)")
    spec = specs(port)[kind]
    notes: list[str] = []
    transport = ReconnectingTransport(
        lambda: open_transport(spec), name="uart", notify=notes.append,
        **{"within": 10.0, "stable": 0.3, **options},
    )  # fmt: skip
    assert port.wait_client(1, DEADLINE)
    return transport, notes


class Pump:
    """Reads the transport all the time in a thread, as the console reader does
    (reconnecting happens inside read())."""

    def __init__(self, transport: ReconnectingTransport) -> None:
        self.transport = transport
        self.data = b""
        self.error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.transport.closed:
            try:
                chunk = self.transport.read(4096, 0.05)
            except BaseException as exc:
                self.error = exc
                break
            with self._changed:
                self.data += chunk
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait(self, until: Callable[[], bool], what: str) -> None:
        with self._changed:
            ok = self._changed.wait_for(lambda: until() or self.error is not None, DEADLINE)
        assert ok and self.error is None, f"{what}: {self.error!r} {self.data[-300:]!r}"

    def join(self) -> None:
        self._thread.join(DEADLINE)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.parametrize("kind", ["pyserial", "telnet"])
def test_a_dropped_connection_comes_back_and_the_gap_is_flagged(
    port: ConsolePort, kind: str
) -> None:
    transport, notes = opened(port, kind)
    pump = Pump(transport)
    try:
        port.board_print(b"before the drop\r\n")
        pump.wait(lambda: b"before the drop" in pump.data, "first output")
        port.drop_client()
        port.board_print(b"printed while nobody listens\r\n")  # lost, as on a real UART
        assert port.lost > 0
        assert port.wait_client(2, DEADLINE), notes
        port.board_print(b"after the drop\r\n")
        pump.wait(lambda: b"after the drop" in pump.data and bool(transport.drops[0].ended), "back")
        assert b"nobody listens" not in pump.data
        (drop,) = transport.drops
        assert drop.ended is not None and 0 < drop.ended - drop.started < DEADLINE
        assert drop.attempts == 1
        assert "console uart dropped" in notes[0] and "lost" in notes[0]
        assert "console uart reopened after" in notes[-1] and "may be lost" in notes[-1]
        # what we type reaches the board over the new connection
        transport.write(b"help\r")
        wait_for(lambda: b"help" in port.received, "typed text at the board")
    finally:
        transport.close()
        pump.join()
    assert transport.closed


@pytest.mark.parametrize("kind", ["pyserial", "telnet"])
def test_a_port_that_refuses_for_a_while_is_retried_with_back_off(
    port: ConsolePort, kind: str
) -> None:
    transport, notes = opened(port, kind)
    pump = Pump(transport)
    try:
        port.refuse(2)  # "port already in use" twice
        port.drop_client()
        assert port.wait_client(2, DEADLINE), notes
        port.board_print(b"back\r\n")
        pump.wait(lambda: b"back" in pump.data and bool(transport.drops[0].ended), "back")
        (drop,) = transport.drops
        assert port.refused == 2
        assert drop.attempts == 3, (drop, notes)
        assert len(drop.failures) == 2
    finally:
        transport.close()
        pump.join()


def test_writes_wait_for_the_connection_to_come_back(port: ConsolePort) -> None:
    transport, _notes = opened(port, "pyserial")
    pump = Pump(transport)
    try:
        port.refuse(1)
        port.drop_client()
        wait_for(lambda: bool(transport.drops), "the drop seen")
        transport.write(b"typed during the gap\r")  # waits for the connection
        wait_for(lambda: b"typed during the gap" in port.received, "typed text at the board")
        assert transport.drops[0].attempts == 2
    finally:
        transport.close()
        pump.join()


@pytest.mark.parametrize("kind", ["pyserial", "telnet"])
def test_a_port_gone_for_good_fails_after_the_bound_naming_it(kind: str) -> None:
    console_port = ConsolePort()
    transport, _notes = opened(console_port, kind, within=0.6)
    console_port.close()  # ser2net stopped: every attempt is refused
    started = time.monotonic()
    pump = Pump(transport)
    pump.join()
    took = time.monotonic() - started
    assert isinstance(pump.error, TransportClosed), pump.error
    message = str(pump.error)
    assert "console uart dropped at" in message
    assert "could not be reconnected within 0.6 s" in message
    assert took < 0.6 + 5, took  # the bound, not a long timeout
    assert transport.drops[0].attempts >= 2
    assert transport.closed
    transport.close()  # closing again is harmless
    with pytest.raises(TransportClosed):
        transport.write(b"x")


def test_the_first_connection_failing_is_reported_as_before(port: ConsolePort) -> None:
    with pytest.raises(ValueError, match="connect"):
        ReconnectingTransport(lambda: open_transport({"connect": ""}), name="uart")
