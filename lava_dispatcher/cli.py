"""``lava-dispatch``: run, validate and describe jobs; list device types; the simulator.

Exit status of ``run`` (and ``lava-run``): 0 the job completed (test cases
may still have failed), 1 incomplete, 2 invalid job or device (nothing
ran), 3 canceled.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from lava_dispatcher import __version__
from lava_dispatcher.errors import (
    ConfigurationError,
    InvalidDeviceError,
    JobCanceled,
    LAVAError,
)
from lava_dispatcher.log import JobLogger, dump_record, timestamp
from lava_dispatcher.timing import Interrupter, format_duration

EXIT_COMPLETE = 0
EXIT_INCOMPLETE = 1
EXIT_INVALID = 2
EXIT_CANCELED = 3

#: the signals that cancel a running job, as in LAVA's lava-run
CANCEL_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2)


class InvalidInput(Exception):
    """Bad job, device or configuration file: exit 2, nothing ran."""


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {path}: {exc.strerror}") from exc


def load_dispatcher_config(path: Path | None) -> dict[str, Any]:
    """LAVA's dispatcher.yaml (addresses, directories); empty when not given."""
    if path is None:
        return {}
    from lava_dispatcher.schemas import load_yaml

    try:
        data = load_yaml(_read_text(path, "dispatcher config"), str(path), error=ConfigurationError)
    except ConfigurationError as exc:
        raise InvalidInput(str(exc)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected a mapping of dispatcher settings, got {type(data).__name__}")
    return data


def load_inputs(
    job_path: Path,
    device_path: Path,
    job_id: str,
    dispatcher_path: Path | None = None,
    output_dir: Path | None = None,
    dispatcher_overrides: dict[str, Any] | None = None,
) -> Any:
    """Load, validate and build the job; InvalidInput for anything wrong."""
    from lava_dispatcher import plugins
    from lava_dispatcher.builtin_plugins import get_manager
    from lava_dispatcher.devices import load_device
    from lava_dispatcher.parser import parse_job

    job_text = _read_text(job_path, "job definition")
    dispatcher = {**load_dispatcher_config(dispatcher_path), **(dispatcher_overrides or {})}
    try:
        device = load_device(device_path, plugins.device_type_dirs(get_manager()))
        job = parse_job(
            job_text,
            device,
            job_id,
            source=str(job_path),
            dispatcher=dispatcher,
            output_dir=output_dir,
        )
        job.validate()
    except InvalidDeviceError as exc:
        raise InvalidInput(str(exc)) from exc
    except LAVAError as exc:
        raise InvalidInput(f"{job_path}: {exc}") from exc
    return job


# --- live output ---------------------------------------------------------------


class LiveProgress:
    """What ``run`` shows on a terminal: top-level actions, the DUT's console, results."""

    COLORS = {"error": "31", "exception": "31", "warning": "33", "results": "36", "input": "35"}

    def __init__(self, stream: Any, console: bool = True) -> None:
        self.stream = stream
        #: show the DUT's console lines (a MultiNode run hides its sub-jobs')
        self.console = console
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def _emit(self, text: str, color: str | None = None) -> None:
        stamp = f"{time.monotonic() - self.start:7.2f}s"
        if color:
            text = f"\x1b[{color}m{text}\x1b[0m"
        with self.lock:
            self.stream.write(f"\x1b[2m{stamp}\x1b[0m {text}\n")
            self.stream.flush()

    def __call__(self, level: str, msg: Any, dt: str) -> None:
        if level == "target":
            if self.console:
                self._emit(f"\x1b[2m|\x1b[0m {msg}")
        elif level == "info":
            bold = str(msg).startswith(("start:", "end:"))
            self._emit(str(msg), "1" if bold else None)
        elif level == "results" and isinstance(msg, dict):
            result = msg.get("result")
            color = "32" if result == "pass" else "31" if result == "fail" else "33"
            if msg.get("definition") != "lava" or msg.get("case") == "job" or result == "fail":
                extra = "".join(
                    f" {k}={msg[k]}" for k in ("measurement", "units", "error_msg") if k in msg
                )
                self._emit(f"result: {msg.get('definition')}/{msg.get('case')} {result}{extra}", color)
        elif level in ("error", "exception", "warning") or (level == "input" and self.console):
            self._emit(str(msg), self.COLORS[level])


def install_cancel_handlers(interrupter: Interrupter) -> None:
    """Signals cancel the job: the handler only starts a thread that wakes every wait."""
    count = {"n": 0}

    def handler(signum: int, frame: FrameType | None) -> None:
        count["n"] += 1
        message = (
            "The job was canceled"
            if count["n"] == 1
            else "The job was canceled again (too long to cancel)"
        )
        threading.Thread(
            target=interrupter.cancel, args=(JobCanceled(message),), daemon=True
        ).start()

    for sig in CANCEL_SIGNALS:
        signal.signal(sig, handler)


def run_job(
    job_path: Path,
    device_path: Path,
    *,
    job_id: str,
    output_dir: Path,
    dispatcher_path: Path | None,
    log_stream: Any,
    live: bool,
    dispatcher_overrides: dict[str, Any] | None = None,
    console: bool = True,
) -> int:
    """Shared by ``lava-dispatch run`` and ``lava-run``: the job end to end."""
    from lava_dispatcher.results import atomic_write

    output_dir = output_dir.resolve()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"cannot create output directory {output_dir}: {exc.strerror}", file=sys.stderr)
        return EXIT_INVALID
    logs = output_dir / "logs.yaml"
    logs.write_text("", encoding="utf-8")  # a new run starts a new log

    interrupter = Interrupter()
    install_cancel_handlers(interrupter)
    logger = JobLogger()
    logger.add_file(logs)
    if live:
        logger.add_observer(LiveProgress(log_stream, console))
    else:
        logger.add_stream(log_stream)
    os.environ["LAVA_JOB_ID"] = job_id
    try:
        try:
            job = load_inputs(
                job_path, device_path, job_id, dispatcher_path, output_dir, dispatcher_overrides
            )
        except InvalidInput as exc:
            logger.error(str(exc))
            record = {
                "definition": "lava",
                "case": "job",
                "result": "fail",
                "error_msg": str(exc),
                "error_type": "Job",
            }
            logger.results(record)
            atomic_write(output_dir / "result.yaml", yaml.safe_dump(record, sort_keys=False))
            if live:
                print(f"invalid input: {exc}", file=sys.stderr)
            return EXIT_INVALID
        # everything built so far (schemas, plugins, the pipeline) lives until
        # the end: keep the garbage collector from scanning it again and again,
        # and at exit (a full collection of ~60k objects costs ~50 ms)
        gc.freeze()
        for name, value in (job.parameters.get("secrets") or {}).items():
            os.environ[str(name)] = str(value)
            logger.add_secret(str(value))
        atomic_write(
            output_dir / "description.yaml",
            yaml.safe_dump(job.describe(), sort_keys=False, default_flow_style=False),
        )
        outcome = job.run(logger, interrupter)
        atomic_write(
            output_dir / "result.yaml", yaml.safe_dump(outcome.as_result(), sort_keys=False)
        )
        return outcome.exit_code
    finally:
        logger.close()


# --- subcommands -----------------------------------------------------------------


def coordinator_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Dispatcher settings given on the command line (they win over --dispatcher's file)."""
    settings: dict[str, Any] = {}
    if args.coordinator:
        settings["coordinator"] = args.coordinator
    if args.coordinator_secret_file is not None:
        from lava_dispatcher.protocols.coordinator_auth import read_secret

        try:
            settings["coordinator_secret"] = read_secret(args.coordinator_secret_file)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    return settings


def _multinode_submission(job_path: Path) -> bool:
    """Whether the job file is a MultiNode submission to split (unreadable: no,
    the single-job path reports it)."""
    from lava_dispatcher.multinode_group import is_multinode

    try:
        definition = yaml.safe_load(job_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(definition, dict) and is_multinode(definition)


def cmd_run_group(args: argparse.Namespace) -> int:
    from lava_dispatcher.multinode_group import GroupError, run_group

    output_dir = args.output_dir or Path(f"lava-job-{args.job_id}")
    try:
        return run_group(
            args.job, args.device, output_dir=output_dir, base_id=str(args.job_id),
            dispatcher_path=args.dispatcher, overrides=coordinator_settings(args),
            console=bool(args.console),
        )  # fmt: skip
    except (GroupError, InvalidInput) as exc:
        print(f"lava-dispatch run: {exc}", file=sys.stderr)
        return EXIT_INVALID


def cmd_run(args: argparse.Namespace) -> int:
    if _multinode_submission(args.job):
        return cmd_run_group(args)
    if len(args.device) != 1 or ("=" in args.device[0] and not Path(args.device[0]).exists()):
        print(
            f"lava-dispatch run: {args.job} is not a MultiNode job: give one --device FILE",
            file=sys.stderr,
        )
        return EXIT_INVALID
    output_dir = args.output_dir or Path(f"lava-job-{args.job_id}")
    live = sys.stdout.isatty() if args.live is None else args.live
    try:
        overrides = coordinator_settings(args)
    except InvalidInput as exc:
        print(f"lava-dispatch run: {exc}", file=sys.stderr)
        return EXIT_INVALID
    code = run_job(
        args.job,
        Path(args.device[0]),
        job_id=args.job_id,
        output_dir=output_dir,
        dispatcher_path=args.dispatcher,
        log_stream=sys.stdout,
        live=live,
        dispatcher_overrides=overrides,
        console=args.console is not False,
    )
    if live:
        outcome = {0: "Complete", 1: "Incomplete", 2: "Invalid", 3: "Canceled"}[code]
        print(f"job {args.job_id}: {outcome}; output in {output_dir}")
    return code


def cmd_validate(args: argparse.Namespace) -> int:
    from lava_dispatcher.parser import load_job_definition

    warnings: list[str] = []
    try:
        if args.device is not None:
            warnings = load_inputs(args.job, args.device, "0", args.dispatcher).warnings
        else:
            load_job_definition(
                _read_text(args.job, "job definition"), str(args.job), warnings=warnings
            )
    except InvalidInput as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    except LAVAError as exc:
        print(f"{args.job}: {exc}" if str(args.job) not in str(exc) else str(exc), file=sys.stderr)
        return EXIT_INVALID
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.job}: valid")
    return 0


def format_tree(nodes: Sequence[dict[str, Any]], depth: int = 0) -> list[str]:
    lines = []
    for node in nodes:
        retries = f", {node['max_retries']} attempts" if node.get("max_retries", 1) > 1 else ""
        lines.append(
            f"{'  ' * depth}{node['level']} {node['name']} "
            f"(timeout {format_duration(node['timeout'])}{retries})  {node.get('description', '')}"
        )
        lines.extend(format_tree(node.get("pipeline") or [], depth + 1))
    return lines


def cmd_describe(args: argparse.Namespace) -> int:
    try:
        job = load_inputs(args.job, args.device, args.job_id, args.dispatcher)
    except InvalidInput as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    if args.yaml:
        print(yaml.safe_dump(job.describe(), sort_keys=False), end="")
    else:
        print(f"job timeout {format_duration(job.settings.timeout)}")
        print("\n".join(format_tree(job.describe()["pipeline"])))
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from lava_dispatcher import plugins
    from lava_dispatcher.builtin_plugins import get_manager
    from lava_dispatcher.devices import find_device_type

    manager = get_manager()
    sources = plugins.device_type_sources(manager)
    dirs = [d for _n, d in sources]
    rows = []
    for plugin_name, directory in sources:
        for path in sorted(directory.glob("*.yaml")):
            winner = find_device_type(path.stem, dirs)
            origin = "built-in" if plugin_name == "lava_dispatcher.devices" else f"plugin {plugin_name}"
            note = "" if winner == path else f" (shadowed by {winner})"
            rows.append((path.stem, origin, f"{path}{note}"))
    if args.verbose:
        for name, origin, where in rows:
            print(f"{name:24} {origin:32} {where}")
    else:
        for name, origin, _where in rows:
            print(f"{name:24} {origin}")
    if args.verbose:
        print()
        for strategy in plugins.strategies(manager):
            print(f"{strategy.section:8} {strategy.name:20} {strategy.__module__}")
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from lava_dispatcher.sim.cli import main as sim_main

    return sim_main(list(args.sim_args))


def cmd_coordinator(args: argparse.Namespace) -> int:
    from lava_dispatcher.protocols.coordinator_cli import run

    return run(args)


def host_port(text: str) -> str:
    """A ``HOST:PORT`` option value, checked early (one clear error)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, such as coord.lab:3079, not {text!r}")
    return text


def cmd_later(args: argparse.Namespace) -> int:
    print(f"lava-dispatch {args.command}: not available in this version yet", file=sys.stderr)
    return EXIT_INVALID


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lava-dispatch",
        description="Run LAVA test jobs on boards and virtual machines.",
        epilog="Exit status of run: 0 Complete, 1 Incomplete, 2 invalid job or device "
        "(nothing ran), 3 Canceled.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run one job in the foreground")
    run.add_argument("job", type=Path, metavar="JOB", help="job definition (LAVA v2 YAML)")
    run.add_argument(
        "--device", required=True, action="append", metavar="DEV",
        help="device file; for a MultiNode job, ROLE=DEVICE_FILE for each role instance "
        "(repeat the option; one file for a role is shared by all its instances)",
    )  # fmt: skip
    run.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="where logs.yaml, results.yaml, result.yaml, description.yaml and junit.xml "
        "go (default: ./lava-job-<job-id>)",
    )
    run.add_argument("--job-id", default="1", metavar="N", help="job id (default: 1)")
    run.add_argument("--dispatcher", type=Path, metavar="FILE", help="dispatcher config (LAVA's dispatcher.yaml)")
    run.add_argument(
        "--coordinator",
        type=host_port,
        metavar="HOST:PORT",
        help="MultiNode coordinator to use (dispatcher setting 'coordinator'), instead of "
        "LAVA's /etc/lava-coordinator/lava-coordinator.conf; for a MultiNode submission, "
        "instead of starting one on a free loopback port",
    )
    run.add_argument(
        "--coordinator-secret-file",
        type=Path,
        metavar="FILE",
        help="file holding the coordinator's shared secret (dispatcher setting "
        "'coordinator_secret')",
    )
    run.add_argument(
        "--console", action=argparse.BooleanOptionalAction, default=None,
        help="with live progress, show the board's console lines (default: yes for one job; "
        "no for the sub-jobs of a MultiNode run, which show their actions and results)",
    )  # fmt: skip
    live = run.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_true", default=None, help="human progress even when not on a terminal")
    live.add_argument("--plain", dest="live", action="store_false", help="LAVA log records even on a terminal")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a job (and device) without running anything")
    validate.add_argument("job", type=Path, metavar="JOB")
    validate.add_argument("--device", type=Path, metavar="DEV", help="also build the pipeline for this device")
    validate.add_argument("--dispatcher", type=Path, metavar="FILE")
    validate.set_defaults(func=cmd_validate)

    describe = sub.add_parser("describe", help="print the pipeline a job would run, run nothing")
    describe.add_argument("job", type=Path, metavar="JOB")
    describe.add_argument("--device", type=Path, required=True, metavar="DEV")
    describe.add_argument("--job-id", default="1", metavar="N")
    describe.add_argument("--dispatcher", type=Path, metavar="FILE")
    describe.add_argument("--yaml", action="store_true", help="print description.yaml instead")
    describe.set_defaults(func=cmd_describe)

    devices = sub.add_parser("devices", help="list device types, built-in and from plugins")
    devices.add_argument("-v", "--verbose", action="store_true", help="show files and strategies")
    devices.set_defaults(func=cmd_devices)

    sim = sub.add_parser("sim", help="the simulated DUT (see 'lava-dispatch sim --help')", add_help=False)
    sim.add_argument("sim_args", nargs=argparse.REMAINDER)
    sim.set_defaults(func=cmd_sim)

    from lava_dispatcher.worker.cli import register as register_worker

    register_worker(sub)  # worker, users

    coord = sub.add_parser(
        "coordinator",
        help="the MultiNode coordinator (LAVA's protocol; also bin/lava-coordinator)",
        description="The MultiNode message broker, compatible with LAVA's lava-coordinator: "
        "LAVA dispatchers and ours can share it. Stops cleanly on SIGTERM or SIGINT.",
        epilog="Exit status: 0 stopped by a signal, 1 cannot listen, 2 bad option or file.",
    )
    coord.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to listen on (default: 127.0.0.1 and the port of --config, else 3079; "
        "use 0.0.0.0:3079 to serve a lab)",
    )
    coord.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="keep group state in DIR: a restarted coordinator resumes its groups",
    )
    coord.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="require every request to be signed with the secret in FILE (one line)",
    )
    coord.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="LAVA's coordinator config, JSON, for its port "
        "(default: /etc/lava-coordinator/lava-coordinator.conf when it exists)",
    )
    coord.add_argument(
        "--loglevel",
        "-l",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARN", "WARNING", "ERROR"],
        help="log level (default: INFO; DEBUG shows every poll and message)",
    )
    coord.add_argument(
        "--logfile", default="-", metavar="FILE", help="log file (default: - for stderr)"
    )
    coord.set_defaults(func=cmd_coordinator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


# --- lava-run ----------------------------------------------------------------------


def lava_run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lava-run",
        description="Run one LAVA job (LAVA-compatible flags); the log goes to stderr "
        "in LAVA's format when no --url is given.",
    )
    parser.add_argument("--job-id", required=True, metavar="ID")
    parser.add_argument("--output-dir", required=True, type=Path, metavar="DIR")
    parser.add_argument("--validate", action="store_true", help="validate the job only")
    logging = parser.add_argument_group("logging")
    logging.add_argument("--url", metavar="URL", help="server to send logs to (not supported yet)")
    logging.add_argument("--token", metavar="TOKEN")
    logging.add_argument("--job-log-interval", type=int, default=5, metavar="SECONDS")
    config = parser.add_argument_group("configuration files")
    config.add_argument("--device", required=True, type=Path, metavar="PATH")
    config.add_argument("--dispatcher", type=Path, metavar="PATH")
    config.add_argument("--env-dut", type=Path, metavar="PATH")
    parser.add_argument("--skip-sudo-warning", action="store_true", help="accepted for compatibility")
    parser.add_argument("--debug", action="store_true", help="accepted for compatibility")
    parser.add_argument("definition", type=Path)
    return parser


def lava_run_main(argv: Sequence[str] | None = None) -> int:
    args = lava_run_parser().parse_args(argv)
    if args.url:
        print("lava-run: --url (log upload to a server) is not supported yet", file=sys.stderr)
        return EXIT_INVALID
    if args.validate:
        try:
            job = load_inputs(args.definition, args.device, args.job_id, args.dispatcher)
        except InvalidInput as exc:
            print(dump_record({"dt": timestamp(), "lvl": "error", "msg": str(exc)}), file=sys.stderr)
            return EXIT_INVALID
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "description.yaml").write_text(
            yaml.safe_dump(job.describe(), sort_keys=False), encoding="utf-8"
        )
        return 0
    return run_job(
        args.definition,
        args.device,
        job_id=args.job_id,
        output_dir=args.output_dir,
        dispatcher_path=args.dispatcher,
        log_stream=sys.stderr,
        live=False,
    )
