"""`lava-dispatch sim ...` (also `python -m lava_dispatcher.sim ...`).

sim run [knobs]                         the board on stdin/stdout, powered on now
sim serve --control DIR [--pty LINK] [--tcp PORT] [--detach] [knobs]
    (knobs include --bootloader u-boot|grub|ipxe|barebox|depthcharge [--tftp-root DIR]
    [--autoboot-delay N] [--bootloader-prompt TEXT] [--ignore-interrupt N] [--reset-loop])
sim power on|off|reset|status --control DIR
sim flash --control DIR --ramdisk FILE  the initramfs a served board boots next
sim stop --control DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lava_dispatcher.sim.config import ConfigError, SimConfig, add_knob_arguments
from lava_dispatcher.sim.control import ControlError, request
from lava_dispatcher.sim.daemon import SimError, run_stdio, serve
from lava_dispatcher.sim.namespace import BoardError

PROG = "lava-dispatch sim"

DESCRIPTION = """\
Simulated devices under test: a board that prints a Linux boot log and a
login prompt on its console, then runs a real shell (on this host, with your
rights, or with --rootfs/--ramdisk chrooted into the board's own root file
system in namespaces of its own) whose echo and output come back with CR LF
line endings, like a serial console. With --bootloader, power-on and reboots
go through a bootloader first: U-Boot (countdown, '=> ' prompt, dhcp, tftp
from --tftp-root, booti/bootz/bootm with a ramdisk of the job's), GRUB, iPXE,
barebox or Depthcharge (the same: their own banners, interrupt keys, prompts
and commands).
Faults can be injected: kernel panics, hangs, lost or garbled characters
(typed ones too), a slow baud rate, floods of output, interrupts the
bootloader ignores, reset loops.
"""


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}")
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 0 and 65535, not {port}")
    return port


def build_parser(
    prog: str = PROG,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subs: dict[str, argparse.ArgumentParser] = {}

    run = commands.add_parser(
        "run",
        help="run the board on stdin/stdout (a spawned process, like QEMU)",
        description="Run one simulated board on this process's stdin and stdout. It powers "
        "on at once and powers off when stdin closes or on SIGTERM/SIGHUP. A tty on stdin "
        "is put in raw mode.",
    )
    add_knob_arguments(run)
    subs["run"] = run

    srv = commands.add_parser(
        "serve",
        help="host a board behind a pty and/or a TCP port, with power control",
        description="Host one simulated board, powered off, reachable through a pty "
        "(--pty) and/or a TCP port on 127.0.0.1 (--tcp, ser2net style); power it with "
        "'sim power'. DIR/info.json says where everything is once the daemon is ready.",
    )
    srv.add_argument(
        "--control",
        required=True,
        metavar="DIR",
        help="directory for the control socket and info.json",
    )
    srv.add_argument("--pty", metavar="LINK", help="create a pty and symlink its device at LINK")
    srv.add_argument(
        "--tcp", type=_port, metavar="PORT", help="listen on 127.0.0.1:PORT (0: any free port)"
    )
    srv.add_argument(
        "--detach",
        action="store_true",
        help="go to the background once ready (prints info.json's content)",
    )
    srv.add_argument("--log", metavar="FILE", help="with --detach: append error messages to FILE")
    add_knob_arguments(srv)
    subs["serve"] = srv

    power = commands.add_parser(
        "power", help="power a served board on or off, reset it, or ask its state"
    )
    power.add_argument("action", choices=("on", "off", "reset", "status"))
    power.add_argument(
        "--control", required=True, metavar="DIR", help="the daemon's control directory"
    )
    power.add_argument("--json", action="store_true", help="print the board's state as JSON")
    power.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up after this long (default: %(default)s)",
    )
    subs["power"] = power

    flash = commands.add_parser(
        "flash",
        help="give a served board the ramdisk to boot at its next power-on",
        description="Copy FILE into the daemon's control directory as the board's "
        "ramdisk: from the next power-on (or reboot) on, the board unpacks it as its "
        "initramfs and runs its shell there. This is what a device's flash or deploy "
        "command calls.",
    )
    flash.add_argument(
        "--control", required=True, metavar="DIR", help="the daemon's control directory"
    )
    flash.add_argument("--ramdisk", required=True, metavar="FILE", help="the initramfs to boot")
    flash.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up after this long (default: %(default)s)",
    )
    subs["flash"] = flash

    stop = commands.add_parser("stop", help="stop a daemon (powers its board off)")
    stop.add_argument(
        "--control", required=True, metavar="DIR", help="the daemon's control directory"
    )
    stop.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up after this long (default: %(default)s)",
    )
    subs["stop"] = stop
    return parser, subs


def _describe(status: dict[str, object]) -> str:
    if status.get("power") != "on":
        return "off"
    stage = str(status.get("stage"))
    if status.get("reason"):
        stage += f", {status['reason']}"
    return f"on ({stage})"


def main(argv: list[str] | None = None) -> int:
    parser, subs = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        config = None
        if args.command in ("run", "serve"):
            config = SimConfig.from_namespace(args)
            try:
                config.validate()
            except ConfigError as exc:
                subs[args.command].error(str(exc))
            if args.command == "serve" and args.pty is None and args.tcp is None:
                subs["serve"].error(
                    "give --pty LINK, --tcp PORT or both: the board needs a console"
                )
            if args.command == "serve" and args.log and not args.detach:
                subs["serve"].error(
                    "--log is for --detach (in the foreground, errors go to stderr)"
                )
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)

    try:
        if args.command == "run":
            assert config is not None
            return run_stdio(config)
        if args.command == "serve":
            assert config is not None
            return serve(
                config,
                args.control,
                pty_link=args.pty,
                tcp_port=args.tcp,
                detach=args.detach,
                log_file=args.log,
            )
        if args.command == "power":
            reply = request(args.control, {"op": "power", "action": args.action}, args.timeout)
            status = reply["status"]
            if args.json:
                print(json.dumps(status))
            elif args.action == "status":
                print(_describe(status))
            else:
                done = "" if reply.get("changed", True) else " (no change)"
                print(f"power {args.action}{done}: {_describe(status)}")
            return 0
        if args.command == "flash":
            path = os.path.abspath(args.ramdisk)
            if not os.path.isfile(path):
                print(f"{PROG} flash: {args.ramdisk}: no such file", file=sys.stderr)
                return 1
            reply = request(args.control, {"op": "flash", "ramdisk": path}, args.timeout)
            print(f"flashed {args.ramdisk} ({reply['size']} bytes): boots at the next power-on")
            return 0
        if args.command == "stop":
            request(args.control, {"op": "stop"}, args.timeout)
            return 0
    except (SimError, BoardError, ConfigError, ControlError, OSError) as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2
