"""LAVA-style ssh jobs (``deploy: to: ssh``, ``boot: method: ssh``, a test shell)
through `lava-dispatch run` against a real OpenSSH server on loopback (see
conftest.py): the overlay is copied with scp into a results directory under
the test's tmp, unpacked there, and the test shell runs on the machine over
an ``ssh -t`` console that the job leaves with ``~.``. A wrong key and a
closed port fail the job as an InfrastructureError in ssh's words, before
anything is left on the machine. LAVA's ssh device dictionary
(lava-devices/ssh-01.yaml in the shared tree) loads and validates an ssh job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.helpers import run_dispatch, write_yaml

from lava_dispatcher.devices import load_device
from lava_dispatcher.parser import parse_job

from .conftest import LAVA_OPTIONS, PROMPT, SshServer, free_port, gone

SHARED_SSH_DEVICE = (
    Path(__file__).resolve().parents[2].parent / "shared" / "lava-devices" / "ssh-01.yaml"
)
JOB_ID = "73519"  # what /lava-<id> would be called if anything went to the default place


def smoke(results: str) -> dict[str, Any]:
    """An inline definition with several results, one of them a measurement."""
    return {
        "from": "inline",
        "name": "ssh-smoke",
        "path": "inline/ssh-smoke.yaml",
        "repository": {
            "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "ssh-smoke"},
            "run": {
                "steps": [
                    "lava-test-case shell-true --shell true",
                    "lava-test-case shell-false --shell false",
                    "lava-test-case skipped --result skip",
                    "lava-test-case measured --result pass --measurement 42.5 --units ms",
                    f"lava-test-case overlay-here --shell test -x {results}/bin/lava-test-case",
                ]
            },
        },
    }


def ssh_job(results: str | None, *, retries: int | None = None) -> dict[str, Any]:
    """deploy to ssh, boot over ssh, and (with `results`) a test shell."""
    boot: dict[str, Any] = {
        "method": "ssh",
        "connection": "ssh",
        "prompts": [PROMPT],
        "timeout": {"seconds": 30},
    }
    if retries is not None:
        boot["failure_retry"] = retries
    actions: list[dict[str, Any]] = [
        {"deploy": {"to": "ssh", "os": "debian", "timeout": {"seconds": 30}}},
        {"boot": boot},
    ]
    if results is not None:
        actions.append({"test": {"timeout": {"seconds": 60}, "definitions": [smoke(results)]}})
    return {
        "job_name": "ssh e2e",
        "device_type": "ssh",
        "visibility": "public",
        "timeouts": {"job": {"seconds": 120}, "action": {"seconds": 60}},
        "actions": actions,
    }


class Run:
    """One `lava-dispatch run` and what it left."""

    def __init__(self, tmp: Path, job: dict[str, Any], device: dict[str, Any]) -> None:
        work = tmp / f"job{len(list(tmp.glob('job*')))}"
        work.mkdir()
        self.download_dir = work / "dispatcher-tmp"
        write_yaml(work / "job.yaml", job)
        write_yaml(work / "device.yaml", device)
        write_yaml(work / "dispatcher.yaml", {"dispatcher_download_dir": str(self.download_dir)})
        out = work / "out"
        proc = run_dispatch("run", str(work / "job.yaml"), "--device", str(work / "device.yaml"),
                            "--dispatcher", str(work / "dispatcher.yaml"), "--output-dir", str(out),
                            "--job-id", JOB_ID, timeout=180)  # fmt: skip
        self.code = proc.returncode
        self.logs = (out / "logs.yaml").read_text() if (out / "logs.yaml").exists() else proc.stderr
        results = out / "results.yaml"
        self.results: list[dict[str, Any]] = (
            yaml.safe_load(results.read_text()) or [] if results.exists() else []
        )

    def cases(self, suite: str) -> dict[str, str]:
        return {r["case"]: r["result"] for r in self.results if r["definition"] == suite}

    def record(self, case: str) -> dict[str, Any]:
        (found,) = [r for r in self.results if r["case"] == case]
        return found

    def pids(self, pattern: str) -> list[int]:
        return [int(pid) for pid in re.findall(pattern, self.logs)]


@pytest.fixture
def outside(tmp_path: Path) -> Any:
    """What a job must not touch outside the test's tmp: /lava-<id> and the
    worker user's known_hosts; checked after the test."""
    default = Path(f"/lava-{JOB_ID}")
    known_hosts = Path.home() / ".ssh" / "known_hosts"

    def snapshot() -> tuple[bool, bytes | None]:
        return default.exists(), known_hosts.read_bytes() if known_hosts.exists() else None

    before = snapshot()
    assert not before[0], f"{default} exists before the test"
    yield
    assert snapshot() == before, f"{default} or {known_hosts} changed"


@pytest.mark.slow
def test_an_ssh_job_runs_its_test_shell_on_the_machine(
    sshd: SshServer, tmp_path: Path, outside: Any
) -> None:
    machine = tmp_path / "machine"
    results = f"{machine}/lava-{JOB_ID}"
    run = Run(tmp_path, ssh_job(results), sshd.device(machine))
    assert run.code == 0, run.logs[-5000:]
    assert run.cases("0_ssh-smoke") == {
        "shell-true": "pass",
        "shell-false": "fail",
        "skipped": "skip",
        "measured": "pass",
        "overlay-here": "pass",
    }
    measured = run.record("measured")
    assert float(measured["measurement"]) == 42.5 and measured["units"] == "ms"
    lava = run.cases("lava")
    for case in ("prepare-scp-overlay", "scp-deploy", "ssh-connection", "login-action",
                 "scp-overlay-unpack", "0_ssh-smoke", "job"):  # fmt: skip
        assert lava.get(case) == "pass", (case, lava)
    # the overlay went where the device said, on the machine, and was unpacked there
    assert (machine / f"lava-{JOB_ID}" / "bin" / "lava-test-runner").is_file()
    tarballs = list((machine / f"lava-{JOB_ID}").glob("overlay-*.tar.gz"))
    assert len(tarballs) == 1
    # the console was ssh -t with the device's options then LAVA's, ended with ~.
    (command,) = re.findall(r"connecting to [^:]+: (ssh .*?)['\"]?\n", run.logs)
    assert "-o LogLevel=FATAL" in command and "-o StrictHostKeyChecking=no" in command
    assert command.index("LogLevel=FATAL") < command.index("StrictHostKeyChecking=no")
    assert f"-i {sshd.key}" in command and f"-p {sshd.port} -t -- {sshd.user}@127.0.0.1" in command
    (pid,) = run.pids(r"ended with ~\. \(pid (\d+)\)")
    assert gone(pid)
    assert "did not end on ~." not in run.logs
    # sshd saw the client leave (not a killed connection)
    assert sshd.wait_logged("disconnected by user"), sshd.log
    # the dispatcher's own temporary files are gone
    assert not any(run.download_dir.iterdir())


@pytest.mark.slow
def test_a_wrong_key_is_an_infrastructure_error_in_ssh_words(
    sshd: SshServer, tmp_path: Path, outside: Any
) -> None:
    machine = tmp_path / "machine"
    run = Run(
        tmp_path, ssh_job(f"{machine}/lava-{JOB_ID}"), sshd.device(machine, key=sshd.wrong_key)
    )
    assert run.code == 1, run.logs[-5000:]
    job = run.record("job")
    assert job["result"] == "fail" and job["error_type"] == "Infrastructure"
    assert "Permission denied (publickey)" in job["error_msg"]
    assert run.cases("lava")["scp-deploy"] == "fail"
    # nothing reached the machine, no console was opened
    assert not machine.exists()
    assert "ssh-connection" not in run.cases("lava")


@pytest.mark.slow
@pytest.mark.parametrize("quiet", [True, False], ids=["LogLevel=FATAL", "ssh-defaults"])
def test_a_closed_port_is_an_infrastructure_error(
    sshd: SshServer, tmp_path: Path, outside: Any, quiet: bool
) -> None:
    machine = tmp_path / "machine"
    options = LAVA_OPTIONS if quiet else ["-o", "PasswordAuthentication=no"]
    device = sshd.device(machine, port=free_port(), options=options)
    run = Run(tmp_path, ssh_job(f"{machine}/lava-{JOB_ID}"), device)
    assert run.code == 1, run.logs[-5000:]
    job = run.record("job")
    assert job["error_type"] == "Infrastructure"
    assert "Connection refused" in job["error_msg"]
    if quiet:  # ssh said nothing: the dispatcher's own probe of the port says why
        assert "ssh printed nothing; cannot connect to 127.0.0.1 port" in job["error_msg"]
    assert not machine.exists()


@pytest.mark.slow
def test_the_console_failing_to_log_in_leaves_no_ssh_process(
    sshd: SshServer, tmp_path: Path, outside: Any
) -> None:
    """No test shell, so nothing to copy: the console itself meets the wrong key."""
    machine = tmp_path / "machine"
    run = Run(tmp_path, ssh_job(None, retries=2), sshd.device(machine, key=sshd.wrong_key))
    assert run.code == 1, run.logs[-5000:]
    job = run.record("job")
    assert job["error_type"] == "Infrastructure"
    assert "Permission denied (publickey)" in job["error_msg"]
    assert "(exit status 255)" in job["error_msg"]
    assert run.cases("lava")["ssh-connection"] == "fail"
    pids = run.pids(r"ssh-connection: process '.*?' pid (\d+)")
    assert len(pids) == 2  # retried once, each attempt its own ssh, both gone
    assert all(gone(pid) for pid in pids)


@pytest.mark.slow
def test_a_login_without_tests_ends_the_session_with_the_escape(
    sshd: SshServer, tmp_path: Path, outside: Any
) -> None:
    run = Run(tmp_path, ssh_job(None), sshd.device(tmp_path / "machine", options=[]))
    assert run.code == 0, run.logs[-5000:]
    (pid,) = run.pids(r"ended with ~\. \(pid (\d+)\)")
    assert gone(pid)
    assert "Connection to 127.0.0.1 closed." in run.logs  # ssh's own goodbye
    assert not (tmp_path / "machine").exists()


@pytest.mark.slow
def test_a_missing_key_file_is_a_configuration_error(
    sshd: SshServer, tmp_path: Path, outside: Any
) -> None:
    """LAVA's relative identity_file (dynamic_vm_keys/lava, which LAVA ships and
    we do not) is looked for in the package directory, as LAVA does."""
    machine = tmp_path / "machine"
    device = sshd.device(machine)
    device["actions"]["deploy"]["methods"]["ssh"]["identity_file"] = "dynamic_vm_keys/lava"
    run = Run(tmp_path, ssh_job(f"{machine}/lava-{JOB_ID}"), device)
    assert run.code == 1, run.logs[-5000:]
    job = run.record("job")
    assert job["error_type"] == "Configuration"
    assert "lava_dispatcher/dynamic_vm_keys/lava" in job["error_msg"]
    assert not machine.exists()


def _pipeline_names(tree: list[dict[str, Any]]) -> list[Any]:
    return [
        (node["name"], _pipeline_names(node["pipeline"])) if "pipeline" in node else node["name"]
        for node in tree
    ]


def test_the_pipeline_has_lava_action_names(tmp_path: Path) -> None:
    device_path = write_yaml(
        tmp_path / "device.yaml", SshServer(tmp_path).device(tmp_path, port=22)
    )
    device = load_device(device_path)
    job = parse_job(yaml.safe_dump(ssh_job("/lava-1")), device, "1")
    job.validate()
    names = _pipeline_names(job.describe()["pipeline"])
    assert names[:2] == [
        ("scp-overlay", [("lava-overlay", [
            "lava-multinode-overlay",
            ("test-definition", ["inline-repo-action", "test-overlay", "test-install-overlay",
                                 "test-runscript-overlay"]),
            "compress-overlay"]), "prepare-scp-overlay"]),
        ("login-ssh", ["scp-deploy", "prepare-ssh", "ssh-connection",
                       ("auto-login-action", ["login-action"]), "expect-shell-connection",
                       "scp-overlay-unpack"]),
    ]  # fmt: skip


def test_lava_ssh_device_dictionary_loads_and_validates_an_ssh_job(tmp_path: Path) -> None:
    if not SHARED_SSH_DEVICE.exists():
        pytest.skip(
            f"{SHARED_SSH_DEVICE} is absent: the shared LAVA device dictionaries are not available"
        )
    device = load_device(SHARED_SSH_DEVICE)
    assert device["actions"]["deploy"]["methods"]["ssh"]["host"] == "192.0.2.10"
    job_path = write_yaml(tmp_path / "job.yaml", ssh_job("/lava-1"))
    proc = run_dispatch("validate", str(job_path), "--device", str(SHARED_SSH_DEVICE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_secondary_connections_are_refused_with_a_reason(tmp_path: Path) -> None:
    device_data = SshServer(tmp_path).device(tmp_path, port=22)
    device = load_device(write_yaml(tmp_path / "device.yaml", device_data))
    definition = ssh_job(None)
    definition["actions"][1]["boot"]["parameters"] = {"hostID": "ipv4", "host_key": "ipaddr"}
    job = parse_job(yaml.safe_dump(definition), device, "1")
    with pytest.raises(Exception, match="MultiNode secondary ssh connections"):
        job.validate()


def test_an_unsafe_results_dir_is_refused(tmp_path: Path) -> None:
    from lava_dispatcher.actions.boot.ssh import safe_results_dir
    from lava_dispatcher.errors import JobError

    assert safe_results_dir("/tmp/x/lava-1") == "/tmp/x/lava-1"
    for bad in ("/tmp/a b/lava-1", "/tmp/$(reboot)/lava-1", "relative/lava-1", "/tmp/../lava-1"):
        with pytest.raises(JobError):
            safe_results_dir(bad)


def test_ssh_and_scp_commands_are_argument_lists() -> None:
    from lava_dispatcher.actions.boot.ssh import ssh_target

    device = SshServer(Path("/nonexistent")).device(Path("/tmp"))
    ssh = device["actions"]["deploy"]["methods"]["ssh"]
    ssh.update(host="[::1]", port=2222, user="lava", options=["-o", "Compression=yes"])
    target = ssh_target(device)
    assert target.ssh_argv("/k", "mkdir -p -- /x") == [
        "ssh", "-o", "Compression=yes", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes", "-i", "/k", "-p", "2222",
        "--", "lava@::1", "mkdir -p -- /x",
    ]  # fmt: skip
    assert target.scp_argv("", Path("/o.tar.gz"), "/x/o.tar.gz")[-3:] == [
        "--", "/o.tar.gz", "lava@[::1]:/x/o.tar.gz",
    ]  # fmt: skip
    from lava_dispatcher.errors import ConfigurationError

    for key, bad in (("host", "-oProxyCommand=x"), ("user", "a b"), ("port", "22x"),
                     ("options", "-o Compression=yes"), ("host", "")):  # fmt: skip
        broken = {**ssh, key: bad}
        with pytest.raises(ConfigurationError):
            ssh_target({"actions": {"deploy": {"methods": {"ssh": broken}}}})


def test_without_sshd_the_tests_skip_or_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from . import conftest

    monkeypatch.setattr(conftest, "SSHD", Path("/nonexistent/sshd"))
    monkeypatch.delenv("LAVA_TESTS_REQUIRE_QEMU", raising=False)
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/sshd is not installed"):
        conftest.require()
    monkeypatch.setenv("LAVA_TESTS_REQUIRE_QEMU", "1")
    with pytest.raises(pytest.fail.Exception, match="requires the ssh tests to run"):
        conftest.require()
