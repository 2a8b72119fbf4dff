"""A simulated fastboot device on 127.0.0.1, spoken to by the real `fastboot` tool.

The host tool reaches it as a network device: ``fastboot -s tcp:127.0.0.1:PORT
getvar product``. The wire protocol is the fastboot TCP transport (version 1,
as Android's fastboot README describes it): both sides send the 4-byte
handshake ``FB01``, then every message, each way, is framed by its length as
an 8-byte big-endian number. Inside the frames is the ordinary fastboot
protocol: one command per frame (``getvar:NAME``, ``download:%08x``,
``flash:PART``, ``erase:PART``, ``boot``, ``continue``, ``reboot``,
``reboot-bootloader``, ``reboot-fastboot``, ``set_active:SLOT``), answered by
``INFO...`` lines and then one ``OKAY...`` or ``FAIL...``; ``download`` is
answered ``DATA%08x``, the data follows in as many frames as the host likes,
then ``OKAY``.

The board it stands for is a HiKey-like one: powered on (or hard reset), its
bootloader waits in fastboot mode; ``reboot``, ``continue`` and ``boot`` leave
fastboot mode and boot the OS, after which the device no longer answers on
the fastboot port (the host tool then prints ``< waiting for tcp:... >`` and
waits, as it does for a USB board that has gone), until the board is reset
again. What was flashed is kept as files in the simulator's directory and
reported with sizes and sha256 digests (``status``).

The OS console is the ordinary simulated board (``lava-dispatch sim serve``):
given ``console=<its control directory>``, booting the OS powers that board
on (a reset), and powering this one off or resetting it powers that one off.
When the image booted (``fastboot boot IMG``, or the flashed ``boot``
partition for ``reboot``/``continue``) is an Android boot image with a
ramdisk, the ramdisk is handed to that board first (``sim flash``), so the
board runs the deployed initramfs (and keeps it for its later power-ons, as
``sim flash`` does). Other images are only recorded; sparse images are stored
as sent, not unsparsed. ``reboot-fastboot`` enters fastbootd (``getvar
is-userspace`` says yes), which answers like the bootloader.

Faults on demand: ``fail={"flash:system": "flash write failure"}`` makes that
command (as the device receives it) answer ``FAIL`` with the message; a flash
to a partition the device does not have fails as a real bootloader's does.

    with FastbootSim(tmp_path / "fb", console=console_sim.control) as device:
        device.power("on")
        subprocess.run(["fastboot", "-s", device.serial_arg, "flash", "boot", "boot.img"])
        device.status()["flashed"]["boot"]["sha256"]

From the command line (a device dictionary's power commands use the last ones):

    python -m lava_dispatcher.sim.fastboot serve --control DIR [--port N] [--console DIR]
    python -m lava_dispatcher.sim.fastboot power on|off|reset|status --control DIR
    python -m lava_dispatcher.sim.fastboot stop --control DIR

Security: the port is on 127.0.0.1 only, and flashed images are only
written under the simulator's directory (partition names are checked).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from lava_dispatcher.sim.control import (
    INFO_NAME,
    SOCKET_NAME,
    ControlError,
    request,
    socket_address,
    write_info,
)

HANDSHAKE = b"FB01"
#: the longest command a host may send, and the longest answer a device gives
MAX_COMMAND = 4096
MAX_RESPONSE = 256
#: how long a session may sit idle in the middle of a command before it is dropped
IO_TIMEOUT = 30.0
#: the partitions of a HiKey (LAVA's hi6220-hikey flash order) plus the usual Android ones
DEFAULT_PARTITIONS = (
    "ptable", "xloader", "fastboot", "nvme", "fw_lpm3", "trustfirmware", "boot", "dts",
    "system", "vendor", "userdata", "cache", "recovery", "ramdisk",
)  # fmt: skip
DEFAULT_MAX_DOWNLOAD = 512 << 20
ANDROID_MAGIC = b"ANDROID!"
SPARSE_MAGIC = 0xED26FF3A
_PARTITION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

#: the board's states: only the two fastboot modes answer on the port
OFF, FASTBOOT, FASTBOOTD, OS = "off", "fastboot", "fastbootd", "os"


class FastbootSimError(Exception):
    """The simulator could not start, or a control request failed."""


# -- Android boot images --------------------------------------------------------


def make_boot_image(
    kernel: bytes, ramdisk: bytes = b"", cmdline: str = "", page_size: int = 2048
) -> bytes:
    """An Android boot image (header version 0) holding ``kernel`` and ``ramdisk``,
    as ``mkbootimg`` makes one: what ``fastboot boot`` and a ``boot`` partition take."""

    def pad(data: bytes) -> bytes:
        return data + bytes(-len(data) % page_size)

    header = struct.pack(
        "<8s10I16s512s32s1024s",
        ANDROID_MAGIC,
        len(kernel), 0x10008000,  # kernel size, load address
        len(ramdisk), 0x11000000,  # ramdisk size, load address
        0, 0x10F00000,  # second stage size, address
        0x10000100,  # tags address
        page_size,
        0,  # header version
        0,  # os version
        b"",  # board name
        cmdline.encode()[:511],
        b"",  # id
        b"",  # extra command line
    )  # fmt: skip
    return pad(header) + pad(kernel) + pad(ramdisk)


def boot_image_parts(data: bytes) -> tuple[bytes, bytes] | None:
    """(kernel, ramdisk) of an Android boot image (header versions 0 to 4), or
    None when ``data`` is not one."""
    if len(data) < 48 or not data.startswith(ANDROID_MAGIC):
        return None
    version = struct.unpack_from("<I", data, 40)[0]
    if version >= 3:
        kernel_size, ramdisk_size = struct.unpack_from("<2I", data, 8)
        page = 4096
    else:
        kernel_size, _, ramdisk_size = struct.unpack_from("<3I", data, 8)
        page = struct.unpack_from("<I", data, 36)[0] or 2048
    kernel_at = page
    ramdisk_at = kernel_at + kernel_size + (-kernel_size % page)
    if ramdisk_at + ramdisk_size > len(data):
        return None
    return data[kernel_at : kernel_at + kernel_size], data[ramdisk_at : ramdisk_at + ramdisk_size]


# -- the device -------------------------------------------------------------------


def _reset(conn: socket.socket) -> None:
    """Close with a TCP reset, not an orderly shutdown."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class _Session:
    """One host connection: framed reads and writes over a blocking socket."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def recv_exact(self, size: int) -> bytes | None:
        data = bytearray()
        while len(data) < size:
            chunk = self.conn.recv(min(size - len(data), 1 << 20))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def recv_frame_header(self) -> int | None:
        header = self.recv_exact(8)
        return None if header is None else int(struct.unpack(">Q", header)[0])

    def send(self, kind: str, message: str = "") -> None:
        payload = (kind + message).encode("utf-8", "replace")[:MAX_RESPONSE]
        self.conn.sendall(struct.pack(">Q", len(payload)) + payload)


class FastbootSim:
    """The simulated device: a TCP server thread, a control socket thread, its state.

    Thread-safe: each host connection runs in a thread of its own, and every
    command holds the device's lock, as a bootloader handles one at a time.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        port: int = 0,
        serial: str = "SIMFB0001",
        product: str = "sim-fastboot",
        partitions: Sequence[str] = DEFAULT_PARTITIONS,
        console: str | os.PathLike[str] | None = None,
        fail: Mapping[str, str] | None = None,
        max_download: int = DEFAULT_MAX_DOWNLOAD,
        powered: bool = False,
        control: bool = True,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.requested_port = port
        self.serial = serial
        self.product = product
        self.partitions = list(partitions)
        self.console = str(console) if console is not None else None
        self.fail: dict[str, str] = dict(fail or {})
        self.max_download = max_download
        self.with_control = control
        self.port = 0
        self.mode = FASTBOOT if powered else OFF
        self.flashed: dict[str, dict[str, Any]] = {}
        self.erased: list[str] = []
        self.boots: list[str] = []
        self.commands: list[str] = []
        self.console_errors: list[str] = []
        self.active_slot: str | None = None
        self._download: Path | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._listener: socket.socket | None = None
        self._control: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._sessions: set[socket.socket] = set()
        self._started = False
        self._closed = False

    # -- lifetime -------------------------------------------------------------------
    @property
    def serial_arg(self) -> str:
        """What ``fastboot -s`` takes to reach this device."""
        return f"tcp:127.0.0.1:{self.port}"

    @property
    def control_dir(self) -> str:
        return str(self.directory)

    def start(self) -> FastbootSim:
        if self._started:
            raise FastbootSimError("already started")
        self._started = True
        (self.directory / "partitions").mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self.requested_port))
        except OSError as exc:
            listener.close()
            raise FastbootSimError(
                f"cannot listen on 127.0.0.1:{self.requested_port}: {exc.strerror}"
            ) from exc
        listener.listen(16)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._spawn(self._accept_loop, "fastboot-sim-accept")
        if self.with_control:
            control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with contextlib.suppress(FileNotFoundError):
                (self.directory / SOCKET_NAME).unlink()
            with socket_address(self.directory) as address:
                control.bind(address)
            control.listen(16)
            self._control = control
            self._spawn(self._control_loop, "fastboot-sim-control")
        return self

    def stop(self) -> None:
        """Stop serving, end open sessions and join every thread."""
        if self._closed or not self._started:
            return
        self._closed = True
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        with self._lock:
            sessions = list(self._sessions)
        for conn in sessions:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)  # wakes its thread, which resets the connection
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(5.0)
        for sock in (self._listener, self._control):
            if sock is not None:
                sock.close()
        if self._control is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / SOCKET_NAME).unlink()
        os.close(self._wake_r)
        os.close(self._wake_w)
        with self._lock:
            self._drop_download()

    def wait(self) -> None:
        """Block until :meth:`stop` (or a ``stop`` request) ends the simulator."""
        self._stop.wait()

    def __enter__(self) -> FastbootSim:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    # -- power (the device dictionary's commands) ------------------------------------
    def power(self, action: str) -> dict[str, Any]:
        """on: the bootloader starts and waits in fastboot mode; off: nothing answers;
        reset: off then on. Each change powers the OS console board off (a board in
        its bootloader, or without power, runs no OS)."""
        if action not in ("on", "off", "reset", "status"):
            raise FastbootSimError(f"unknown power action {action!r}")
        with self._lock:
            if action == "off" or action == "reset" or (action == "on" and self.mode == OFF):
                self.mode = OFF if action == "off" else FASTBOOT
                self._drop_download()  # RAM does not survive a power cut
                self._console_request({"op": "power", "action": "off"})
            return self.status()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "power": "off" if self.mode == OFF else "on",
                "mode": self.mode,
                "serial": self.serial,
                "product": self.product,
                "port": self.port,
                "flashed": {name: dict(info) for name, info in self.flashed.items()},
                "erased": list(self.erased),
                "boots": list(self.boots),
                "active_slot": self.active_slot,
                "commands": self.commands[-500:],
                "console_errors": list(self.console_errors),
            }

    def partition_file(self, name: str) -> Path:
        return self.directory / "partitions" / f"{name}.img"

    # -- the fastboot port ------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener.fileno(), self._wake_r], [], [])
            if self._wake_r in ready or self._stop.is_set():
                return
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                answering = self.mode in (FASTBOOT, FASTBOOTD)
            if not answering:
                # a board that is off or running its OS has no fastboot server: refuse
                # with a reset (after an orderly close, fastboot 29 spins on the empty
                # reads of its handshake instead of retrying)
                _reset(conn)
                continue
            with self._lock:
                self._sessions.add(conn)
            self._spawn(self._serve_session, "fastboot-sim-session", conn)

    def _serve_session(self, conn: socket.socket) -> None:
        session = _Session(conn)
        orderly = False  # only a device that rebooted after its answer says goodbye politely
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(IO_TIMEOUT)
            hello = session.recv_exact(4)
            if hello is None or hello[:2] != b"FB" or not hello[2:].isdigit():
                return
            conn.sendall(HANDSHAKE)
            while not self._stop.is_set():
                size = session.recv_frame_header()
                if size is None or size > MAX_COMMAND:
                    return
                packet = session.recv_exact(size)
                if packet is None:
                    return
                command = packet.decode("ascii", "replace")
                with self._lock:
                    if self.mode not in (FASTBOOT, FASTBOOTD):
                        return  # powered off or reset under the host's feet
                    self.commands.append(command)
                    if not self._command(session, command):
                        orderly = True
                        return
        except OSError:
            return
        finally:
            with self._lock:
                self._sessions.discard(conn)
            if orderly:
                conn.close()
            else:
                _reset(conn)

    def _command(self, session: _Session, command: str) -> bool:
        """Answer one command; False when the session ends (the device rebooted)."""
        if command in self.fail:
            session.send("FAIL", self.fail[command])
            return True
        verb, _, argument = command.partition(":")
        if verb == "getvar":
            return self._getvar(session, argument)
        if verb == "download":
            return self._receive(session, argument)
        if verb == "flash":
            self._flash(session, argument)
            return True
        if verb == "erase":
            if self._check_partition(session, argument):
                self.partition_file(argument).unlink(missing_ok=True)
                self.flashed.pop(argument, None)
                self.erased.append(argument)
                session.send("OKAY")
            return True
        if verb == "set_active":
            if argument not in ("a", "b"):
                session.send("FAIL", f"invalid slot '{argument}'")
            else:
                self.active_slot = argument
                session.send("OKAY")
            return True
        if command == "boot":
            if self._download is None:
                session.send("FAIL", "no image downloaded to boot")
                return True
            self._boot_os("boot", self._download.read_bytes(), session)
            return False
        if command in ("continue", "reboot", "reboot-recovery"):
            image = self.partition_file("boot")
            data = image.read_bytes() if image.is_file() else b""
            self._boot_os(command, data, session)
            return False
        if command == "reboot-bootloader":
            session.send("OKAY")
            self.boots.append(command)
            self.mode = FASTBOOT
            return False
        if command == "reboot-fastboot":
            session.send("OKAY")
            self.boots.append(command)
            self.mode = FASTBOOTD
            return False
        session.send("FAIL", f"unknown command '{command[:64]}'")
        return True

    def _variables(self) -> dict[str, str]:
        found = {
            "version": "0.4",
            "version-bootloader": "sim-1.0",
            "product": self.product,
            "serialno": self.serial,
            "secure": "no",
            "unlocked": "yes",
            "max-download-size": f"0x{self.max_download:x}",
            "is-userspace": "yes" if self.mode == FASTBOOTD else "no",
        }
        for name in self.partitions:
            found[f"partition-type:{name}"] = "raw"
            found[f"has-slot:{name}"] = "no"
            found[f"is-logical:{name}"] = "no"
        return found

    def _getvar(self, session: _Session, name: str) -> bool:
        variables = self._variables()
        if name == "all":
            for key, value in variables.items():
                session.send("INFO", f"{key}: {value}")
            session.send("OKAY")
        elif name in variables:
            session.send("OKAY", variables[name])
        else:
            session.send("FAIL", "Variable not found")
        return True

    def _receive(self, session: _Session, argument: str) -> bool:
        try:
            size = int(argument, 16)
        except ValueError:
            session.send("FAIL", f"invalid download size '{argument[:16]}'")
            return True
        if size > self.max_download:
            session.send("FAIL", f"data too large ({size} > {self.max_download})")
            return True
        session.send("DATA", f"{size:08x}")
        fd, name = tempfile.mkstemp(prefix=".download-", dir=self.directory)
        received = 0
        with os.fdopen(fd, "wb") as out:
            while received < size:
                frame = session.recv_frame_header()
                if frame is None or frame > size - received:
                    os.unlink(name)
                    return False
                left = frame
                while left:
                    chunk = session.conn.recv(min(left, 1 << 20))
                    if not chunk:
                        os.unlink(name)
                        return False
                    out.write(chunk)
                    left -= len(chunk)
                received += frame
        self._drop_download()
        self._download = Path(name)
        session.send("OKAY")
        return True

    def _drop_download(self) -> None:
        if self._download is not None:
            self._download.unlink(missing_ok=True)
            self._download = None

    def _check_partition(self, session: _Session, name: str) -> bool:
        if not _PARTITION_NAME.fullmatch(name) or name not in self.partitions:
            session.send("FAIL", f"partition '{name[:64]}' does not exist")
            return False
        return True

    def _flash(self, session: _Session, name: str) -> None:
        if not self._check_partition(session, name):
            return
        if self._download is None:
            session.send("FAIL", "no image downloaded to flash")
            return
        target = self.partition_file(name)
        data = self._download.read_bytes()
        session.send("INFO", f"writing '{name}' ({len(data)} bytes)")
        os.replace(self._download, target)
        self._download = None
        sparse = len(data) >= 4 and struct.unpack_from("<I", data)[0] == SPARSE_MAGIC
        self.flashed[name] = {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "sparse": sparse,  # stored as sent: the simulator does not unsparse
        }
        session.send("OKAY")

    def _boot_os(self, how: str, image: bytes, session: _Session) -> None:
        """Leave fastboot mode and start the OS on the console board, with the
        image's ramdisk when it has one."""
        parts = boot_image_parts(image)
        ramdisk = parts[1] if parts else b""
        if ramdisk:
            path = self.directory / "boot-ramdisk"
            path.write_bytes(ramdisk)
            self._console_request({"op": "flash", "ramdisk": str(path)})
        self._console_request({"op": "power", "action": "reset"})
        self.boots.append(how)
        self.mode = OS
        session.send("OKAY")

    def _console_request(self, message: dict[str, Any]) -> None:
        if self.console is None:
            return
        try:
            request(self.console, message, timeout=IO_TIMEOUT)
        except (ControlError, OSError, ValueError) as exc:
            error = f"{message.get('op')} {message.get('action', '')}: {exc}".strip()
            self.console_errors.append(error)
            print(f"fastboot sim: console board: {error}", file=sys.stderr)

    # -- the control socket -------------------------------------------------------------
    def _control_loop(self) -> None:
        assert self._control is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._control.fileno(), self._wake_r], [], [])
            if self._wake_r in ready or self._stop.is_set():
                return
            try:
                conn, _ = self._control.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5.0)
                try:
                    data = b""
                    while b"\n" not in data and len(data) < 65536:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    message = json.loads(data.split(b"\n", 1)[0] or b"null")
                    reply = self.handle(message)
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except (OSError, ValueError):
                    continue
            if isinstance(message, dict) and message.get("op") == "stop":
                self._stop.set()
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"x")
                return

    def handle(self, message: Any) -> dict[str, Any]:
        """One control request, as the console simulator's (``sim.control``) are."""
        if not isinstance(message, dict):
            return {"ok": False, "error": "a request is a JSON object"}
        op = message.get("op")
        try:
            if op == "power":
                status = self.power(str(message.get("action")))
                return {"ok": True, "status": status, "pid": os.getpid()}
            if op == "status":
                return {"ok": True, "status": self.status(), "pid": os.getpid()}
            if op == "stop":
                return {"ok": True, "pid": os.getpid()}
        except FastbootSimError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown request {op!r}"}


# -- command line -----------------------------------------------------------------------


def command(*args: str) -> list[str]:
    """argv of ``python -m lava_dispatcher.sim.fastboot ARGS`` with this interpreter."""
    return [sys.executable, "-m", "lava_dispatcher.sim.fastboot", *args]


def power_command(control: str | os.PathLike[str], action: str) -> list[str]:
    """argv of the power command a device dictionary gives for this simulator."""
    return command("power", action, "--control", os.fspath(control))


def _fail_option(value: str) -> tuple[str, str]:
    name, _, message = value.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"expected COMMAND[=MESSAGE], not {value!r}")
    return name, message or "simulated failure"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lava_dispatcher.sim.fastboot",
        description="A simulated fastboot device on 127.0.0.1 (fastboot -s tcp:127.0.0.1:PORT).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the device in the foreground until stopped")
    serve.add_argument("--control", required=True, metavar="DIR",
                       help="directory for the control socket, info.json and flashed images")  # fmt: skip
    serve.add_argument("--port", type=int, default=0, help="TCP port (0: any free one)")
    serve.add_argument("--serial", default="SIMFB0001", help="what getvar:serialno answers")
    serve.add_argument("--product", default="sim-fastboot", help="what getvar:product answers")
    serve.add_argument("--partitions", help="comma-separated partition names")
    serve.add_argument("--console", metavar="DIR",
                       help="control directory of the `sim serve` board that is the OS console")  # fmt: skip
    serve.add_argument("--fail", type=_fail_option, action="append", default=[],
                       metavar="COMMAND[=MESSAGE]",
                       help="answer FAIL to this command, e.g. flash:system (repeatable)")  # fmt: skip
    serve.add_argument("--powered", action="store_true", help="start in fastboot mode")
    for name in ("power", "stop"):
        sub = commands.add_parser(name, help=f"{name} request to a running simulator")
        if name == "power":
            sub.add_argument("action", choices=("on", "off", "reset", "status"))
        sub.add_argument("--control", required=True, metavar="DIR")
        sub.add_argument("--timeout", type=float, default=30.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "power":
            reply = request(args.control, {"op": "power", "action": args.action}, args.timeout)
            status = reply["status"]
            print(json.dumps(status) if args.action == "status" else
                  f"power {args.action}: {status['mode']}")  # fmt: skip
            return 0
        request(args.control, {"op": "stop"}, args.timeout)
        return 0
    except (ControlError, FastbootSimError, OSError) as exc:
        print(f"fastboot sim {args.command}: {exc}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    partitions = args.partitions.split(",") if args.partitions else DEFAULT_PARTITIONS
    device = FastbootSim(args.control, port=args.port, serial=args.serial, product=args.product,
                         partitions=partitions, console=args.console, fail=dict(args.fail),
                         powered=args.powered)  # fmt: skip
    device.start()
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: device._stop.set())
        info = {"pid": os.getpid(), "port": device.port, "serial": device.serial_arg,
                "control": device.control_dir}  # fmt: skip
        write_info(device.directory, info)
        print(json.dumps(info), flush=True)
        device.wait()
    finally:
        device.stop()
        with contextlib.suppress(FileNotFoundError):
            (device.directory / INFO_NAME).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
