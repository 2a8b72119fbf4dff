"""``lava-dispatch coordinator`` and ``bin/lava-coordinator``: help, settings and errors
(one clear line on stderr, a non-zero exit status); ``run --coordinator``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lava_dispatcher.cli import build_parser, coordinator_settings

from .helpers import ROOT, CoordinatorProcess, call, free_port

REQUEST = {
    "request": "group_data",
    "group_name": "g",
    "client_name": "1",
    "role": "r",
    "hostname": "h",
    "group_size": 1,
}


def coordinator(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lava_dispatcher", "coordinator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lava-dispatch coordinator: ") and text in lines[0], lines[0]


def test_help() -> None:
    result = coordinator("--help")
    assert result.returncode == 0
    for option in ("--listen", "--state", "--secret-file", "--config"):
        assert option in result.stdout
    launcher = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "lava-coordinator"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert launcher.returncode == 0 and "--listen" in launcher.stdout


@pytest.mark.parametrize("listen", ["nonsense", "host:", ":3079", "host:99999", "::1:3079"])
def test_bad_listen(listen: str) -> None:
    one_line_error(coordinator("--listen", listen), 2, "bad --listen")


def test_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = coordinator("--listen", f"127.0.0.1:{port}")
    one_line_error(result, 1, f"cannot listen on 127.0.0.1:{port}")


def test_unusable_secret_file(tmp_path: Path) -> None:
    one_line_error(
        coordinator("--secret-file", str(tmp_path / "missing")), 2, "cannot read secret file"
    )
    one_line_error(coordinator("--secret-file", str(tmp_path)), 2, "cannot read secret file")
    (tmp_path / "empty").write_text(" \n")
    one_line_error(coordinator("--secret-file", str(tmp_path / "empty")), 2, "is empty")


def test_bad_config(tmp_path: Path) -> None:
    one_line_error(coordinator("--config", str(tmp_path / "missing.conf")), 2, "cannot read config")
    (tmp_path / "bad.conf").write_text("{port: 3079")
    one_line_error(coordinator("--config", str(tmp_path / "bad.conf")), 2, "not valid JSON")
    (tmp_path / "port.conf").write_text('{"port": "high"}')
    one_line_error(coordinator("--config", str(tmp_path / "port.conf")), 2, "bad port")


def test_bad_log_level() -> None:
    assert coordinator("--loglevel", "LOUD").returncode == 2


def test_port_from_lava_config(
    tmp_path: Path, coordinator_process: Callable[..., CoordinatorProcess]
) -> None:
    port = free_port()
    config = tmp_path / "lava-coordinator.conf"
    config.write_text(
        json.dumps(
            {
                "port": port,
                "blocksize": 4096,
                "poll_delay": 3,
                "coordinator_hostname": "coord.example",
            }
        )
    )
    process = coordinator_process("--config", str(config), listen=None)
    assert process.start() == ("127.0.0.1", port)
    assert call(("127.0.0.1", port), REQUEST)["response"] == "group_data"
    assert process.signal(signal.SIGTERM) == 0


def test_state_directory_in_use(
    tmp_path: Path, coordinator_process: Callable[..., CoordinatorProcess]
) -> None:
    first = coordinator_process("--state", str(tmp_path / "state"))
    first.start()
    one_line_error(
        coordinator("--listen", "127.0.0.1:0", "--state", str(tmp_path / "state")),
        2,
        "in use by another coordinator",
    )


def test_sigint_stops_cleanly(coordinator_process: Callable[..., CoordinatorProcess]) -> None:
    process = coordinator_process()
    address = process.start()
    assert call(address, REQUEST)["response"] == "group_data"
    assert process.signal(signal.SIGINT) == 0
    assert "stopping" in process.log()


def test_run_takes_the_coordinator_address_and_secret(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    args = build_parser().parse_args(
        [
            "run",
            "job.yaml",
            "--device",
            "dev.yaml",
            "--coordinator",
            "coord.lab:3079",
            "--coordinator-secret-file",
            str(secret),
        ]
    )
    assert coordinator_settings(args) == {
        "coordinator": "coord.lab:3079",
        "coordinator_secret": "s3cret",
    }
    plain = build_parser().parse_args(["run", "job.yaml", "--device", "dev.yaml"])
    assert coordinator_settings(plain) == {}


def test_run_refuses_a_bad_coordinator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "job.yaml", "--device", "d", "--coordinator", "nohost"])
    assert exit_info.value.code == 2
    assert "HOST:PORT" in capsys.readouterr().err
    from lava_dispatcher.cli import main

    code = main(
        [
            "run",
            "job.yaml",
            "--device",
            "d",
            "--coordinator-secret-file",
            str(tmp_path / "missing"),
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "cannot read secret file" in capsys.readouterr().err
