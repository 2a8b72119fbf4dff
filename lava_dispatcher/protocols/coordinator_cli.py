"""``lava-dispatch coordinator`` (also ``lava-coordinator``): settings, logging, signals.

The address comes from ``--listen``, else from the ``port`` of LAVA's
``lava-coordinator.conf`` (on loopback: a lab admin opens it to the network
with ``--listen``), else 127.0.0.1:3079. Every startup problem is one line
on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import signal
import sys
from pathlib import Path
from typing import Any

from lava_dispatcher.protocols.coordinator import DEFAULT_HOST, DEFAULT_PORT, CoordinatorServer
from lava_dispatcher.protocols.coordinator_auth import read_secret
from lava_dispatcher.protocols.coordinator_store import StateError

LOG = logging.getLogger("lava-coordinator")

DEFAULT_CONFIG = Path("/etc/lava-coordinator/lava-coordinator.conf")
LOG_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}
#: bad options or files
EXIT_USAGE = 2
#: the address cannot be listened on
EXIT_LISTEN = 1


class SettingsError(Exception):
    """A startup problem, said in one line."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as a host and a port number."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address needs its brackets
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SettingsError(f"bad --listen {text!r}: expected HOST:PORT, such as 0.0.0.0:3079")
    return host, int(port)


def read_lava_config(path: Path, *, required: bool) -> dict[str, Any]:
    """LAVA's JSON config (port, blocksize, poll_delay, coordinator_hostname); {} when absent."""
    if not required and not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read config {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise SettingsError(f"config {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"config {path}: expected a JSON object")
    port = data.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise SettingsError(f"config {path}: bad port {port!r}")
    return data


def address(args: argparse.Namespace) -> tuple[str, int]:
    if args.listen:
        return parse_listen(args.listen)
    config = read_lava_config(args.config or DEFAULT_CONFIG, required=args.config is not None)
    return DEFAULT_HOST, int(config.get("port", DEFAULT_PORT))


def setup_logging(logfile: str, level: str) -> None:
    if logfile == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = logging.handlers.WatchedFileHandler(logfile)
        except OSError as exc:
            raise SettingsError(f"cannot open log file {logfile}: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(LOG_LEVELS[level.upper()])
    LOG.propagate = False


async def serve(server: CoordinatorServer) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly."""
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        LOG.info("stopping")
    finally:
        await server.close()


def run(args: argparse.Namespace) -> int:
    """The ``coordinator`` subcommand; its exit status."""
    prog = "lava-dispatch coordinator"
    try:
        setup_logging(args.logfile, args.loglevel)
        host, port = address(args)
        secret = None
        if args.secret_file is not None:
            try:
                secret = read_secret(args.secret_file)
            except ValueError as exc:
                raise SettingsError(str(exc)) from None
        server = CoordinatorServer(host, port, state_dir=args.state, secret=secret)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(serve(server))
    except StateError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"{prog}: cannot listen on {server.address}: {reason}", file=sys.stderr)
        return EXIT_LISTEN
    except KeyboardInterrupt:
        pass
    return 0
