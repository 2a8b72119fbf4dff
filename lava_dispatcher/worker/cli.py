"""``lava-dispatch worker`` (also ``bin/lava-worker``) and ``lava-dispatch users``.

Exit status of ``worker``: 0 stopped cleanly (SIGTERM, SIGINT), 2 a bad
option, config file, device file or health-check job, or a state directory
in use (one line on stderr says which). ``worker --check-config``: 0 good,
2 errors (each on stderr). ``worker --install-systemd-unit``: 0 installed,
2 could not. ``users``: 0 done, 2 refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lava_dispatcher.worker.config import DEFAULT_CONFIG, WorkerConfig, load_config
from lava_dispatcher.worker.errors import ConfigError, WorkerError

EXIT_OK, EXIT_INVALID = 0, 2
#: options that are also config-file keys
CONFIG_OPTIONS = (
    "state_dir", "devices", "listen", "tls_cert", "tls_key", "dispatcher", "coordinator",
    "health_check_interval", "cancel_timeout", "stop_timeout", "name", "log_level",
    "event_topic", "event_host", "event_port",
)  # fmt: skip


def _config_options(parser: argparse.ArgumentParser, full: bool) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help=f"worker config (default: {DEFAULT_CONFIG} when it exists); "
                        "its keys are these options' names; options win")  # fmt: skip
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="store, job directories, health checks (default: /var/lib/lava-dispatcher)")  # fmt: skip
    if not full:
        return
    parser.add_argument("--devices", type=Path, metavar="DIR",
                        help="one device file per device, <hostname>.yaml (default: /etc/lava-dispatcher/devices)")  # fmt: skip
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="HTTP listener (default: 127.0.0.1:8000; port 0 picks a free one)")  # fmt: skip
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="... and this key")
    parser.add_argument("--dispatcher", type=Path, metavar="FILE", help="dispatcher config given to every job")
    parser.add_argument("--coordinator", metavar="HOST:PORT",
                        help="MultiNode coordinator to use (default: one of ours on a loopback port)")  # fmt: skip
    parser.add_argument("--health-check-interval", type=float, metavar="SECONDS",
                        help="check a Good device again after this long (default: 86400; 0: never)")  # fmt: skip
    parser.add_argument("--cancel-timeout", type=float, metavar="SECONDS",
                        help="SIGKILL a canceled job this long after SIGTERM (default: 60)")  # fmt: skip
    parser.add_argument("--stop-timeout", type=float, metavar="SECONDS",
                        help="how long a stopping worker waits for its canceled jobs (default: 30)")  # fmt: skip
    parser.add_argument("--name", metavar="NAME", help="the worker's name (default: the host name)")
    parser.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO (default), WARNING, ERROR")
    events = parser.add_argument_group("event notifications (off unless a topic is given)")
    events.add_argument("--event-topic", metavar="TOPIC",
                        help="publish events with this topic prefix (LAVA's EVENT_TOPIC, e.g. "
                        "org.lavasoftware) on a ZeroMQ PUB socket and the /ws/ WebSocket")  # fmt: skip
    events.add_argument("--event-port", type=int, metavar="PORT",
                        help="the ZeroMQ PUB socket's port (default: 5500; 0 picks a free one)")  # fmt: skip
    events.add_argument("--event-host", metavar="HOST",
                        help="the address the ZeroMQ socket binds (default: 127.0.0.1)")  # fmt: skip


def config_from(args: argparse.Namespace) -> WorkerConfig:
    overrides: dict[str, Any] = {k: getattr(args, k, None) for k in CONFIG_OPTIONS}
    return load_config(args.config, overrides)


def cmd_worker(args: argparse.Namespace) -> int:
    # imports here: every `lava-dispatch run` builds this parser, and asyncio costs 30 ms
    import asyncio
    import faulthandler

    from lava_dispatcher.worker.daemon import serve
    from lava_dispatcher.worker.logging_setup import is_journal, setup_logging

    try:
        config = config_from(args)
        if args.prefix is not None and not args.install_systemd_unit:
            raise ConfigError("--prefix: only with --install-systemd-unit")
    except ConfigError as exc:
        priority = "<3>" if is_journal(sys.stderr) else ""  # an error, for journalctl -p err
        print(f"{priority}lava-dispatch worker: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.check_config:
        return _check_config(args, config)
    if args.install_systemd_unit:
        return _install_systemd_unit(args, config)
    setup_logging(config.log_level)
    faulthandler.enable()  # a watchdog SIGABRT shows where every thread was
    try:
        return asyncio.run(serve(config))
    except KeyboardInterrupt:
        return EXIT_OK


def _check_config(args: argparse.Namespace, config: WorkerConfig) -> int:
    """``--check-config``: a line per device and setting on stdout, each error on stderr."""
    import asyncio

    from lava_dispatcher.worker.checkconfig import check_config

    source = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    print(f"config: {source.absolute()}" if source else "config: no file, defaults and options")
    report = asyncio.run(check_config(config))
    for line in report.lines:
        print(line)
    for error in report.errors:
        print(f"lava-dispatch worker --check-config: {error}", file=sys.stderr)
    if report.errors:
        print(f"{len(report.errors)} error(s)", file=sys.stderr)
        return EXIT_INVALID
    devices = sum(line.startswith("device ") for line in report.lines)
    print(f"ok: {devices} device(s)")
    return EXIT_OK


def _install_systemd_unit(args: argparse.Namespace, config: WorkerConfig) -> int:
    """``--install-systemd-unit``: the unit runs this installation with the options given here."""
    from lava_dispatcher.worker.systemd import UNIT_NAME, install_unit

    worker_args = ["--config", str(args.config.absolute())] if args.config else []
    for key in CONFIG_OPTIONS:
        if getattr(args, key) is not None:
            value = getattr(config, key)  # checked, paths made absolute
            worker_args += [f"--{key.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    try:
        path, changed = install_unit((args.prefix or Path("/")).absolute(), worker_args, config)
    except ConfigError as exc:
        print(f"lava-dispatch worker: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"{'installed' if changed else 'unchanged:'} {path}")
    print(f"then: systemctl daemon-reload && systemctl enable --now {UNIT_NAME.removesuffix('.service')}")
    return EXIT_OK


def cmd_users(args: argparse.Namespace) -> int:
    from lava_dispatcher.worker import auth
    from lava_dispatcher.worker.store import Store

    try:
        config = config_from(args)
        store = Store(config.state_dir)
    except (WorkerError, OSError) as exc:
        print(f"lava-dispatch users: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        if args.users_command == "add":
            token = auth.add_user(store, args.name, admin=args.admin)
            kind = "admin" if args.admin else "user"
            print(f"{kind} {args.name} added; API token: {token}")
        elif args.users_command == "token":
            print(f"new API token for {args.name}: {auth.add_token(store, args.name)}")
        elif args.users_command == "del":
            auth.delete_user(store, args.name)
            print(f"user {args.name} deleted")
        else:
            counts = auth.token_counts(store)
            for user in store.users():
                kind = "admin" if user.is_admin else "user"
                print(f"{user.name:24} {kind:6} {counts.get(user.name, 0)} token(s)")
    except WorkerError as exc:
        print(f"lava-dispatch users: {exc}", file=sys.stderr)
        return EXIT_INVALID
    finally:
        store.close()
    return EXIT_OK


def register(sub: Any) -> None:
    """Add ``worker`` and ``users`` to ``lava-dispatch``'s sub-commands."""
    worker = sub.add_parser(
        "worker", help="the worker service: queue, schedule and run jobs on this lab's devices",
        description="The worker daemon (also bin/lava-worker): owns the devices in --devices, "
        "queues jobs submitted over HTTP (XML-RPC, REST), runs each in its own "
        "'lava-dispatch run' process, and keeps jobs, logs and results in --state-dir. "
        "Stops cleanly on SIGTERM or SIGINT.",
        epilog="Exit status: 0 stopped cleanly (or checked, installed), 2 bad option, config, "
        "device file or health check. Under systemd see docs/worker.md, 'Running under systemd'.",
    )  # fmt: skip
    _config_options(worker, full=True)
    once = worker.add_mutually_exclusive_group()
    once.add_argument("--check-config", action="store_true",
                      help="check the config, every device file and health-check job, the TLS files "
                      "and the state directory; start nothing, write nothing; exit 0 or 2")  # fmt: skip
    once.add_argument("--install-systemd-unit", action="store_true",
                      help="write the systemd unit that runs this lava-dispatch worker (with the "
                      "options given here) to PREFIX/etc/systemd/system, and exit")  # fmt: skip
    worker.add_argument("--prefix", type=Path, metavar="PREFIX",
                        help="with --install-systemd-unit: install under PREFIX (default: /)")  # fmt: skip
    worker.set_defaults(func=cmd_worker)

    users = sub.add_parser("users", help="the worker's users and their API tokens",
                           description="Tokens are shown once, when made; the store keeps their hash.")  # fmt: skip
    actions = users.add_subparsers(dest="users_command", metavar="ACTION")
    actions.required = True
    add = actions.add_parser("add", help="add a user; prints its API token (the last word)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--admin", action="store_true", help="may do everything (devices, others' jobs)")
    token = actions.add_parser("token", help="make another API token for a user (the last word)")
    token.add_argument("name", metavar="NAME")
    delete = actions.add_parser("del", help="delete a user and its tokens")
    delete.add_argument("name", metavar="NAME")
    actions.add_parser("list", help="list users")
    for parser in (add, token, delete, actions.choices["list"]):
        _config_options(parser, full=False)
    users.set_defaults(func=cmd_users)
