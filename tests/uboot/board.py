"""Power control of a QEMU arm64 "board" running Debian's U-Boot (u-boot-qemu).

What a LAVA device dictionary's power commands call:

    python board.py on     --state DIR   # start QEMU (detached), return once it listens
    python board.py off    --state DIR   # end that QEMU (by its pid); nothing to do if off
    python board.py reset  --state DIR   # system_reset on its monitor (or off + on)
    python board.py status --state DIR   # "on pid N port P" (exit 0) or "off" (exit 3)
    python board.py dumpdtb --state DIR FILE   # the board's device tree, as QEMU makes it
    python board.py start  --state DIR   # lab mode: the board's QEMU, its console port up
    python board.py stop   --state DIR   # lab mode: end that QEMU (by its pid)

(or ``python -m tests.uboot.board ...`` from the repository). DIR holds
``board.json``, written by whoever sets the board up (tests/uboot/conftest.py):

    {"port": 7101,                       # the serial console: tcp 127.0.0.1:PORT
     "tftp_root": "/srv/tftp",           # QEMU's user-net TFTP server root (10.0.2.2)
     "bios": "/usr/lib/u-boot/qemu_arm64/u-boot.bin",   # optional, this default
     "qemu": "qemu-system-aarch64",      # optional, this default
     "memory": 1024,                     # optional, MiB, this default
     "lab": false}                       # optional: lab mode (below)

and, while the board is on: ``qemu.pid``, ``monitor.sock`` (QEMU's human
monitor) and ``qemu.log`` (QEMU's own stdout/stderr; the console is on the
TCP port).

The serial console is a telnet server on 127.0.0.1:PORT (``-serial
telnet:...,server=on,wait=on``), as a ser2net port in telnet mode: its
option negotiation puts the telnet client in character mode, so a line typed
ends with a single newline (a raw ``tcp:`` port leaves telnet in line mode,
echoing locally and sending CR LF, and U-Boot runs the empty line after the
CR as "repeat the last command": every tftp twice). ``wait=on``: QEMU
starts the machine when the first client connects, so whoever connects after
``on`` sees U-Boot from its banner and never misses the 2 s autoboot
countdown. Output is dropped while no client is connected after that.

**Lab mode** (``"lab": true``) is a board as a lab has it: the serial
console (a ser2net port) is there whether the board is powered or not, so a
dispatcher connects first and powers on after, as LAVA's u-boot pipeline
does. ``start`` launches the QEMU paused (``-S``, ``wait=off``: the port
listens at once and stays through power cycles); ``on`` is ``system_reset``
+ ``cont`` on its monitor, ``off`` is ``stop`` (the machine halts, the
console stays connected and silent), ``reset`` is ``system_reset`` (+
``cont`` when off), ``status`` asks the monitor; ``stop`` ends the QEMU.
Output while no client is connected is lost, as on a real UART.

Only the standard library: this file runs as a plain script too. Errors
(no QEMU, no u-boot.bin, no board.json, QEMU failing to start) print one
line on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_BIOS = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
DEFAULT_QEMU = "qemu-system-aarch64"
DEFAULT_MEMORY = 1024
START_DEADLINE = 30.0  # QEMU start to its sockets listening (seconds)
STOP_DEADLINE = 10.0  # SIGTERM to exit, then SIGKILL to exit
MONITOR_PROMPT = b"(qemu) "
CONFIG = "board.json"
PIDFILE = "qemu.pid"
MONITOR = "monitor.sock"
LOG = "qemu.log"


class BoardError(Exception):
    """A failure to report on one line (exit status 1)."""


class Board:
    def __init__(self, state: str | os.PathLike[str]) -> None:
        self.state = Path(state).resolve()

    # -- configuration ---------------------------------------------------------------

    def config(self) -> dict[str, object]:
        path = self.state / CONFIG
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise BoardError(f"no {path}: the board's state directory is not set up")
        except (OSError, ValueError) as exc:
            raise BoardError(f"cannot read {path}: {exc}")
        if not isinstance(data, dict):
            raise BoardError(f"{path}: not a JSON object")
        return data

    @property
    def pidfile(self) -> Path:
        return self.state / PIDFILE

    @property
    def monitor(self) -> Path:
        return self.state / MONITOR

    @property
    def log(self) -> Path:
        return self.state / LOG

    def port(self) -> int:
        port = self.config().get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise BoardError(f"{self.state / CONFIG}: 'port' must be a TCP port number")
        return port

    def qemu_binary(self) -> str:
        name = str(self.config().get("qemu") or DEFAULT_QEMU)
        found = shutil.which(name)
        if found is None:
            raise BoardError(
                f"{name} not found (apt-get install qemu-system-arm, or run .ci/qemu-images)"
            )
        return found

    def bios(self) -> Path:
        path = Path(str(self.config().get("bios") or DEFAULT_BIOS))
        if not path.is_file():
            raise BoardError(
                f"no U-Boot at {path} (apt-get install u-boot-qemu, or run .ci/qemu-images)"
            )
        return path

    def machine_args(self) -> list[str]:
        """What makes the hardware (and so its device tree): machine, CPU, memory, NIC."""
        config = self.config()
        memory = int(str(config.get("memory") or DEFAULT_MEMORY))
        tftp_root = config.get("tftp_root")
        if not isinstance(tftp_root, str) or not tftp_root:
            raise BoardError(f"{self.state / CONFIG}: 'tftp_root' (a directory) is missing")
        if not Path(tftp_root).is_dir():
            raise BoardError(f"the TFTP root {tftp_root} is not a directory")
        return ["-M", "virt", "-cpu", "cortex-a57", "-m", str(memory), "-nographic",
                "-netdev", f"user,id=net0,tftp={tftp_root}",
                "-device", "virtio-net-device,netdev=net0"]  # fmt: skip

    @property
    def lab(self) -> bool:
        return self.config().get("lab") is True

    def argv(self) -> list[str]:
        # lab mode: paused until powered on, the console listening throughout
        wait, paused = ("off", ["-S"]) if self.lab else ("on", [])
        return [self.qemu_binary(), "-name", "uboot-board,debug-threads=on",
                *self.machine_args(), "-bios", str(self.bios()), *paused,
                "-monitor", f"unix:{self.monitor},server=on,wait=off",
                "-serial", f"telnet:127.0.0.1:{self.port()},server=on,wait={wait}"]  # fmt: skip

    # -- the process -----------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of this board's running QEMU, or None (no pid file, or a stale one)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self.is_ours(pid) else None

    def is_ours(self, pid: int) -> bool:
        """Whether `pid` is a live (not zombie) QEMU started for this state directory."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        if any(
            line.startswith("State:") and "Z" in line.split()[1:2] for line in status.splitlines()
        ):
            return False
        args = cmdline.split(b"\0")
        return (
            bool(args)
            and os.path.basename(args[0]).startswith(b"qemu-system")
            and os.fsencode(str(self.monitor)) in cmdline
        )

    def on(self) -> str:
        if self.lab:
            self._lab_pid("on")
            if self._vm_running():
                return "already on (running)"
            self.monitor_command("system_reset")
            self.monitor_command("cont")
            return "on (system_reset, cont)"
        return self.start()

    def start(self) -> str:
        pid = self.pid()
        if pid is not None:
            state = "running" if self.lab else "on"
            return f"already {state} (pid {pid}, console: telnet 127.0.0.1 {self.port()})"
        argv = self.argv()  # raises on a missing QEMU, u-boot.bin, config
        port = self.port()
        if _listening(port):
            raise BoardError(f"TCP port {port} is already in use on this machine")
        self.monitor.unlink(missing_ok=True)
        self.pidfile.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.state, start_new_session=True, close_fds=True,
            )  # fmt: skip
        self.pidfile.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + START_DEADLINE
        while True:
            code = process.poll()
            if code is not None:
                self.pidfile.unlink(missing_ok=True)
                raise BoardError(f"QEMU exited at once (status {code}): {self._log_tail()}")
            if _listening(port) and self._monitor_ready():
                break
            if time.monotonic() > deadline:
                self._stop(process.pid)
                raise BoardError(
                    f"QEMU (pid {process.pid}) not listening on 127.0.0.1:{port} and {self.monitor}"
                    f" after {START_DEADLINE:.0f} s: {self._log_tail()}"
                )
            time.sleep(0.02)
        # QEMU outlives this command: it is not ours to wait for (no ResourceWarning)
        process.returncode = 0
        return f"on (pid {process.pid}, console: telnet 127.0.0.1 {port})"

    def _monitor_ready(self) -> bool:
        """Whether the monitor socket listens (read from /proc/net/unix: a
        connection now would wait in its backlog until the machine starts)."""
        path = str(self.monitor)
        try:
            lines = Path("/proc/net/unix").read_text().splitlines()[1:]
        except OSError:
            return self.monitor.exists()
        for line in lines:
            fields = line.split(None, 7)
            # Num RefCount Protocol Flags Type St Inode Path; Flags 00010000: listening
            if len(fields) == 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                return True
        return False

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(empty log)"

    def _lab_pid(self, action: str) -> int:
        pid = self.pid()
        if pid is None:
            raise BoardError(
                f"{action}: the board's QEMU does not run (lab mode: 'board.py start' first)"
            )
        return pid

    def _vm_running(self) -> bool:
        # "VM status: running", "VM status: paused", "VM status: paused (prelaunch)"
        return self.monitor_command("info status").strip().endswith("running")

    def off(self) -> str:
        if self.lab:
            if self.pid() is None:
                return "already off (its QEMU does not run)"
            if not self._vm_running():
                return "already off (stopped)"
            self.monitor_command("stop")
            return "off (stopped)"
        return self.stop()

    def stop(self) -> str:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = None
        message = "already off"
        if pid is not None and self.is_ours(pid):
            self._stop(pid)
            message = f"off (pid {pid} ended)"
        elif pid is not None:
            message = f"already off (pid {pid} is not this board's QEMU any more)"
        self.pidfile.unlink(missing_ok=True)
        self.monitor.unlink(missing_ok=True)
        return message

    def _stop(self, pid: int) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.is_ours(pid):
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_gone(pid, STOP_DEADLINE, self.is_ours):
                return
        raise BoardError(f"QEMU (pid {pid}) still runs after SIGKILL")

    def reset(self) -> str:
        if self.lab:
            self._lab_pid("reset")
            running = self._vm_running()
            self.monitor_command("system_reset")
            if running:
                return "reset (system_reset)"
            self.monitor_command("cont")
            return "was off: on (system_reset, cont)"
        pid = self.pid()
        if pid is None:
            self.off()  # a stale pid file or socket
            return "was off: " + self.on()
        if not _machine_started(pid):
            # QEMU waits for the console connection (its monitor is silent
            # meanwhile); the machine starts from reset when it comes
            return "not started yet (QEMU waits for the console connection): nothing to reset"
        self.monitor_command("system_reset")
        return "reset (system_reset)"

    def monitor_command(self, command: str, timeout: float = 10.0) -> str:
        """Run one human-monitor command; what it printed."""
        deadline = time.monotonic() + timeout
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(self.monitor))
                _read_until(sock, MONITOR_PROMPT, deadline)
                sock.sendall(command.encode() + b"\n")
                output = _read_until(sock, MONITOR_PROMPT, deadline)
        except (OSError, TimeoutError) as exc:
            raise BoardError(f"QEMU monitor {self.monitor}: {command}: {exc}")
        text = output.decode(errors="replace").replace("\r", "")
        lines = text.split("\n")
        # drop the echoed command (with its line-editing escapes) and the prompt
        return "\n".join(lines[1:-1]).strip()

    def status(self) -> tuple[bool, str]:
        pid = self.pid()
        if pid is None:
            return False, "off"
        if self.lab:
            if self._vm_running():
                return True, f"on pid {pid} port {self.port()}"
            return False, f"off (pid {pid} stopped, port {self.port()})"
        waiting = "" if _machine_started(pid) else " (waiting for the console connection)"
        return True, f"on pid {pid} port {self.port()}{waiting}"

    def dumpdtb(self, dest: str | os.PathLike[str]) -> str:
        """Write the device tree QEMU gives this board (same machine, CPU, memory,
        devices) to `dest`: what a LAVA job deploys as its dtb."""
        out = Path(dest).resolve()
        # -bios matters: with firmware, QEMU 7.2's virt has no pl061 GPIO
        # (0x9030000), and a dtb dumped without it makes Linux probe that
        # absent device and die (synchronous external abort in amba_read_periphid)
        argv = [self.qemu_binary(), *self.machine_args(), "-bios", str(self.bios())]
        argv[argv.index("virt")] = f"virt,dumpdtb={out}"
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        if result.returncode != 0 or not out.is_file():
            raise BoardError(
                f"{' '.join(argv)} failed (status {result.returncode}): {result.stderr.strip()}"
            )
        return f"{out} ({out.stat().st_size} bytes)"


def _read_until(sock: socket.socket, marker: bytes, deadline: float) -> bytes:
    data = b""
    while not data.endswith(marker):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {marker!r} in {data[-200:]!r}")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r}: {data[-200:]!r}")
        data += chunk
    return data


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` (read from /proc/net/tcp:
    connecting to the console port would make QEMU send its output to us)."""
    local = f"0100007F:{port:04X}"
    any_address = f"00000000:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and fields[1] in (local, any_address):
            return True
    return False


def _machine_started(pid: int) -> bool:
    """Whether QEMU `pid` has started its machine: it has a vCPU thread
    ("CPU 0/TCG", named so by -name ...,debug-threads=on). Until the console
    is connected (wait=on) it has none, and its monitor does not answer."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            if (task / "comm").read_text().startswith("CPU "):
                return True
        except OSError:
            continue
    return False


def _wait_gone(pid: int, timeout: float, alive: Callable[[int], bool]) -> bool:
    """Wait until `pid` has exited (a zombie counts as gone); False after `timeout`."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        fd = None
    try:
        if fd is not None:
            ready, _, _ = select.select([fd], [], [], timeout)
            if ready:
                return True
        while time.monotonic() < deadline:
            if not alive(pid):
                return True
            time.sleep(0.05)
        return not alive(pid)
    finally:
        if fd is not None:
            os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="board.py", description="Power control of a QEMU arm64 board running U-Boot."
    )
    parser.add_argument("action", choices=("on", "off", "reset", "status", "dumpdtb", "start", "stop"))
    parser.add_argument("dest", nargs="?", help="dumpdtb: the file to write")
    parser.add_argument("--state", required=True, help="the board's state directory (board.json)")
    args = parser.parse_args(argv)
    board = Board(args.state)
    try:
        if args.action == "status":
            running, message = board.status()
            print(message)
            return 0 if running else 3
        if args.action == "dumpdtb":
            if not args.dest:
                parser.error("dumpdtb needs the file to write")
            print(board.dumpdtb(args.dest))
            return 0
        print(getattr(board, args.action)())
        return 0
    except BoardError as exc:
        print(f"board.py {args.action}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
