"""Helpers for the DUT-side script tests: shells, and overlays built as the dispatcher builds them.

The scripts under ``lava_dispatcher/test_shell`` run on the device; here they run
for real under each shell a device may have. An overlay is laid out in a
temporary directory exactly as the dispatcher lays it out on the DUT:

- each script copied to ``<results_dir>/bin/`` with its first line replaced by
  ``#!<lava_test_sh_cmd>`` (here: the shell under test), a blank line, then the
  variables the dispatcher injects;
- ``<results_dir>/<stage>/lava-test-runner.conf`` listing absolute test dirs;
- ``<results_dir>/<stage>/tests/<i>_<name>/`` with ``run.sh``, ``install.sh``,
  ``uuid``, ``testdef.yaml`` and ``testdef_metadata``, run.sh and install.sh
  written in LAVA's shape.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lava_dispatcher

SCRIPTS = Path(lava_dispatcher.__file__).resolve().parent / "test_shell"
SYSTEM_PATH = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
JOB_ID = "1234"


@dataclass(frozen=True)
class Shell:
    """A shell as a device's ``lava_test_sh_cmd``: an absolute path and maybe one option."""

    name: str
    argv: tuple[str, ...]
    #: system tools are busybox applets only (a busybox DUT), not the host's GNU ones
    busybox_tools: bool = False

    @property
    def cmd(self) -> str:
        return " ".join(self.argv)


def find_shells() -> list[tuple[str, Shell | None, str]]:
    """(name, shell or None, why it is missing) for every shell the tests want."""
    wanted = [
        ("busybox-sh", "busybox", ("sh",), False),
        ("busybox-tools", "busybox", ("sh",), True),
        ("dash", "dash", (), False),
        ("bash", "bash", (), False),
        ("bash-posix", "bash", ("--posix",), False),
    ]
    found: list[tuple[str, Shell | None, str]] = []
    for name, program, options, busybox_tools in wanted:
        path = shutil.which(program)
        if path is None:
            found.append((name, None, f"{program} is not installed"))
            continue
        shell = Shell(name, (path, *options), busybox_tools)
        probe = subprocess.run(
            [*shell.argv, "-c", "true"], capture_output=True, timeout=10, check=False
        )
        if probe.returncode != 0:
            found.append((name, None, f"{shell.cmd} does not run: {probe.stderr!r}"))
            continue
        found.append((name, shell, ""))
    return found


def source_files(distro: str | None = None, multinode: bool = False) -> list[Path]:
    """What the dispatcher installs: generic scripts, distro overrides, MultiNode scripts."""
    files = sorted(p for p in SCRIPTS.glob("lava-*") if p.is_file())
    if distro:
        files += sorted(p for p in (SCRIPTS / "distro" / distro).glob("lava-*") if p.is_file())
    if multinode:
        files += sorted(p for p in (SCRIPTS / "multi_node").glob("lava-*") if p.is_file())
    return files


def all_script_files() -> list[Path]:
    return sorted(p for p in SCRIPTS.rglob("lava-*") if p.is_file())


@dataclass
class Group:
    """MultiNode data the dispatcher injects."""

    members: Mapping[str, str] = field(default_factory=lambda: {"1234": "server", "1235": "client"})
    role: str = "server"
    job_id: str = JOB_ID


@dataclass
class Overlay:
    root: Path  # <results_dir>
    shell: Shell
    cache: Path  # LAVA_MULTI_NODE_CACHE injected into the MultiNode scripts
    system_path: str = SYSTEM_PATH  # where the device's own tools are

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(
        self, extra: Mapping[str, str] | None = None, *, path: str | None = None
    ) -> dict[str, str]:
        """The environment of a test step: bin first in PATH, as the runner sets it."""
        env = {
            "PATH": path if path is not None else f"{self.bin}:{self.system_path}",
            "HOME": str(self.root),
            "LC_ALL": "C",
            "SHELL": self.shell.cmd,
            "TMPDIR": str(self.root / "tmp"),
        }
        env.update(extra or {})
        return env

    def start_detached(self, script: str, *args: str, env: Mapping[str, str] | None = None) -> int:
        """Run a helper whose children outlive it: output to a file, not to a pipe we would wait on."""
        with open(self.root / "tmp" / "console.log", "a") as console:
            return subprocess.run(
                [str(self.bin / script), *args],
                env=self.env(env),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                timeout=20,
                check=False,
            ).returncode

    def run(
        self,
        script: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        path: str | None = None,
        stdin: str | None = None,
        timeout: float = 20,
    ) -> subprocess.CompletedProcess[str]:
        """Run one installed helper with ARGS (through its own #! line)."""
        return subprocess.run(
            [str(self.bin / script), *args],
            env=self.env(env, path=path),
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def injected_lines(name: str, overlay_root: Path, cache: Path, group: Group | None) -> list[str]:
    """The variable lines the dispatcher writes after the #! line of script NAME."""
    if name == "lava-target-ip":
        return ["TARGET_DEVICE_IP='10.1.2.3'"]
    if name == "lava-target-mac":
        return ["TARGET_DEVICE_MAC='00:11:22:33:44:55'"]
    if name == "lava-probe-ip":
        return ["PROBE_DEVICE_IP='10.9.8.7'"]
    if name == "lava-probe-channel":
        return ["PROBE_DEVICE_CHANNEL='3'"]
    if name == "lava-target-storage":
        # LAVA's form: a real newline, then \t-escaped lines with a leading tab.
        return [
            'LAVA_STORAGE="',
            r"\tUMS\t/dev/disk/by-id/usb-ums-0\n\tSATA\t/dev/disk/by-id/ata-disk\n"
            r"\tUMS\t/dev/disk/by-id/usb-ums-1\n",
            '"',
        ]
    if group is None:
        return []
    if name == "lava-group":
        return ['LAVA_GROUP="', *(rf"{job}\t{role}\n" for job, role in group.members.items()), '"']
    if name == "lava-role":
        return [f"TARGET_ROLE='{group.role}'"]
    if name == "lava-self":
        return [f"LAVA_HOSTNAME='{group.job_id}'"]
    return [
        f"LAVA_TEST_BIN='{overlay_root / 'bin'}'",
        f"LAVA_MULTI_NODE_CACHE='{cache}'",
        "LAVA_MULTI_NODE_DEBUG='yes'",
    ]


def build_overlay(
    tmp: Path,
    shell: Shell,
    *,
    distro: str | None = None,
    group: Group | None = None,
    job_id: str = JOB_ID,
) -> Overlay:
    """``<tmp>/lava-<job_id>/bin`` with every script installed as the dispatcher installs it."""
    root = tmp / f"lava-{job_id}"
    for sub in ("bin", "tests", "results", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cache = tmp / "mn" / "lava_multi_node_cache.txt"
    for source in source_files(distro, multinode=group is not None):
        install_script(source, root / "bin", shell, injected_lines(source.name, root, cache, group))
    system_path = busybox_applets(shell.argv[0]) if shell.busybox_tools else SYSTEM_PATH
    return Overlay(root, shell, cache, system_path)


_APPLET_DIRS: dict[str, str] = {}


def busybox_applets(busybox: str) -> str:
    """A directory of busybox applet links, to be the whole system PATH (made once per session)."""
    if busybox not in _APPLET_DIRS:
        directory = Path(tempfile.mkdtemp(prefix="busybox-tools-"))
        atexit.register(shutil.rmtree, directory, True)
        listed = subprocess.run(
            [busybox, "--list"], capture_output=True, text=True, timeout=10, check=True
        )
        for applet in listed.stdout.split():
            (directory / applet).symlink_to(busybox)
        _APPLET_DIRS[busybox] = str(directory)
    return _APPLET_DIRS[busybox]


def install_script(source: Path, bin_dir: Path, shell: Shell, injected: Sequence[str] = ()) -> Path:
    """The dispatcher's copy: '#!/bin/sh' becomes '#!<shell>', a blank line, the injected lines."""
    text = source.read_text(encoding="utf-8")
    first, _, rest = text.partition("\n")
    assert first == "#!/bin/sh", source
    header = f"#!{shell.cmd}\n\n" + "".join(f"{line}\n" for line in injected)
    target = bin_dir / source.name
    target.write_text(header + rest, encoding="utf-8")
    target.chmod(0o755)
    return target


@dataclass
class TestDef:
    """One test definition as it ends up in the overlay."""

    __test__ = False  # not a pytest class

    name: str
    steps: Sequence[str]
    install_steps: Sequence[str] | None = None
    deps: Sequence[str] = ()
    params: Mapping[str, str] = field(default_factory=dict)
    kmsg: str | None = None  # stand-in for /dev/kmsg: "lava-signal: kmsg" when set
    character_delay: float = 0.0


def parameter_header(params: Mapping[str, str]) -> list[str]:
    return [
        "###default parameters from test definition###",
        "######",
        "###test parameters from job submission###",
        *(f"{key}='{value}'" for key, value in params.items()),
        "######",
    ]


def render_run_sh(test: TestDef, testrun_id: str, test_dir: Path) -> str:
    """run.sh in LAVA's shape. A regular file stands in for /dev/kmsg, hence '>>'."""
    lines = parameter_header(test.params)
    lines += [
        "set -e",
        "set -x",
        f"export TESTRUN_ID={testrun_id}",
        f"cd {test_dir}",
        'UUID="$(cat uuid)"',
        "set +x",
    ]
    if test.character_delay:
        lines += [
            f"export CHARACTER_DELAY={test.character_delay:g}",
            f"sleep {test.character_delay:g}",
        ]
    if test.kmsg:
        lines += [
            "# USE_KMSG",
            "export KMSG=true",
            f'echo "<0><LAVA_SIGNAL_STARTRUN $TESTRUN_ID $UUID>" >> {test.kmsg}',
        ]
    else:
        lines.append('echo "<LAVA_SIGNAL_STARTRUN $TESTRUN_ID $UUID>"')
    lines.append("set -x")
    lines += list(test.steps)
    lines.append("set +x")
    if test.character_delay:
        lines.append(f"sleep {test.character_delay:g}")
    if test.kmsg:
        lines += ["unset KMSG", f'echo "<0><LAVA_SIGNAL_ENDRUN $TESTRUN_ID $UUID>" >> {test.kmsg}']
    else:
        lines.append('echo "<LAVA_SIGNAL_ENDRUN $TESTRUN_ID $UUID>"')
    return "\n".join(lines) + "\n"


def render_install_sh(test: TestDef, test_dir: Path) -> str:
    lines = parameter_header(test.params)
    if test.deps:
        lines.append("lava-install-packages " + " ".join(test.deps) + " ")
    if test.install_steps:
        lines += [f"cd {test_dir}", "pwd", *test.install_steps]
    return "\n".join(lines) + "\n"


def write_stage(
    overlay: Overlay, stage: int, tests: Sequence[TestDef], first_index: int = 0
) -> Path:
    """``<results_dir>/<stage>/`` with its runner conf and test directories."""
    stage_dir = overlay.root / str(stage)
    test_dirs = []
    for offset, test in enumerate(tests):
        index = first_index + offset
        testrun_id = f"{index}_{test.name}"
        test_dir = stage_dir / "tests" / testrun_id
        test_dir.mkdir(parents=True)
        (test_dir / "uuid").write_text(f"{JOB_ID}_1.{stage + 1}.2.{index + 1}", encoding="utf-8")
        (test_dir / "testdef.yaml").write_text(
            f"metadata:\n  name: {test.name}\n  format: Lava-Test Test Definition 1.0\n",
            encoding="utf-8",
        )
        (test_dir / "testdef_metadata").write_text(f"name: {test.name}\n", encoding="utf-8")
        (test_dir / "run.sh").write_text(
            render_run_sh(test, testrun_id, test_dir), encoding="utf-8"
        )
        if test.install_steps is not None or test.deps:
            (test_dir / "install.sh").write_text(
                render_install_sh(test, test_dir), encoding="utf-8"
            )
        test_dirs.append(test_dir)
    (stage_dir / "lava-test-runner.conf").write_text(
        "".join(f"{d}\n" for d in test_dirs), encoding="utf-8"
    )
    return stage_dir


def uuid_of(stage_dir: Path, testrun_id: str) -> str:
    return (stage_dir / "tests" / testrun_id / "uuid").read_text(encoding="utf-8")


def run_runner(
    overlay: Overlay,
    stage_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """What the dispatcher types: ``<results_dir>/bin/lava-test-runner <results_dir>/<stage>``.

    PATH is the system's; the runner puts bin first itself. ``env`` may replace it.
    """
    return subprocess.run(
        [str(overlay.bin / "lava-test-runner"), str(stage_dir)],
        env=overlay.env(env, path=overlay.system_path),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def signals(output: str) -> list[str]:
    """The lines of OUTPUT meant for the dispatcher."""
    return [line for line in output.splitlines() if line.startswith("<LAVA_")]
