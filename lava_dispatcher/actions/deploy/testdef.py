"""Test definitions into the overlay: fetch each one, write its run.sh and install.sh.

One ``test-definition`` action per overlay; for every definition of every
test block of the namespace (in job order) it adds a repo action (git,
inline or url), then ``test-overlay`` (testdef.yaml, uuid, metadata),
``test-install-overlay`` (install.sh) and ``test-runscript-overlay``
(run.sh). Definitions are numbered across all test blocks of the namespace
(``0_smoke``, ``1_other``...): that number-and-name is the result suite.
Each test block needing an overlay is a stage with its own
``lava-test-runner.conf``.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lava_dispatcher import hostcmd, overlay
from lava_dispatcher.actions.overlay_data import (
    OVERLAY_LOCATION,
    RESULTS_DIR,
    TEST_DEFINITIONS,
    TestDefinitionInfo,
)
from lava_dispatcher.download import fetch, filename_of
from lava_dispatcher.errors import InfrastructureError, InvalidJobError, JobError, TestError
from lava_dispatcher.pipeline import Action, JobSettings, RunContext
from lava_dispatcher.schemas import load_yaml, validate_testdef

#: what a definition's name may be made of (as LAVA checks it)
NAME_PATTERN = re.compile(r"^[-_a-zA-Z0-9.]+\Z")


def overlay_test_blocks(settings: JobSettings, namespace: str) -> list[Mapping[str, Any]]:
    """The test blocks of ``namespace`` that need an overlay, in job order (= stages)."""
    blocks = []
    for strategy, params in settings.test_info.get(namespace, []):
        if strategy.needs_overlay(params):
            blocks.append(params)
    return blocks


def definitions_by_stage(settings: JobSettings, namespace: str) -> list[list[Mapping[str, Any]]]:
    return [list(block.get("definitions") or []) for block in overlay_test_blocks(settings, namespace)]


def definitions(ctx: RunContext, namespace: str) -> dict[str, TestDefinitionInfo]:
    space = ctx.data(namespace)
    found = space.get(TEST_DEFINITIONS, default=None)
    if found is None:
        found = {}
        space.set(TEST_DEFINITIONS, found)
    return found


def test_dir_on_dut(results: str, stage: int, test_name: str) -> str:
    return f"{results}/{stage}/tests/{test_name}"


def read_testdef(path: Path, name: str) -> dict[str, Any]:
    """Load and validate a fetched definition file; errors name the definition."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JobError(f"test definition {name!r}: cannot read {path.name}: {exc.strerror}") from exc
    try:
        return validate_testdef(load_yaml(text, f"{name}: {path.name}", allow_duplicates=True))
    except InvalidJobError as exc:
        raise JobError(f"test definition {name!r}: {exc}") from exc


class RepoAction(Action):
    """Base of the three ways a definition arrives; subclasses fetch into ``target``."""

    name = "repo-action"
    description = "apply tests to the test image"
    summary = "repo base class"
    source = ""

    def __init__(self) -> None:
        super().__init__()
        self.uuid = ""
        self.stage = 0

    @property
    def test_name(self) -> str:
        return str(self.parameters["test_name"])

    def validate(self) -> None:
        path = self.parameters.get("path")
        if self.source != "inline" and not path:
            self.errors.append(f"definition {self.parameters.get('name')!r} has no 'path'")
        if path and not overlay.safe_relative(str(path)):
            self.errors.append(f"definition path {path!r} must stay inside the repository")

    def target(self, ctx: RunContext) -> Path:
        space = ctx.data(self.namespace)
        root = overlay.tree_path(space.get(OVERLAY_LOCATION), space.get(RESULTS_DIR))
        return root / str(self.stage) / "tests" / self.test_name

    def fetch(self, ctx: RunContext, target: Path) -> dict[str, str]:
        raise NotImplementedError

    def run(self, ctx: RunContext) -> None:
        target = self.target(ctx)
        if target.exists():
            shutil.rmtree(target)
        details = self.fetch(ctx, target)
        path = str(self.parameters.get("path") or "")
        testdef = read_testdef(target / path, str(self.parameters["name"]))
        parse = testdef.get("parse") or {}
        pattern = None
        if parse.get("pattern"):
            try:
                pattern = re.compile(parse["pattern"], re.M)
            except re.error as exc:
                raise TestError(
                    f"definition {self.parameters['name']!r}: bad parse pattern "
                    f"{parse['pattern']!r}: {exc}"
                ) from exc
        metadata = testdef.get("metadata") or {}
        info = TestDefinitionInfo(
            name=str(self.parameters["name"]),
            testrun_id=self.test_name,
            uuid=self.uuid,
            stage=self.stage,
            source=self.source,
            path=path,
            repository=details.get("repository", ""),
            revision=str(self.parameters.get("revision") or ""),
            commit_id=details.get("commit", ""),
            pattern=pattern,
            fixupdict=dict(parse.get("fixupdict") or {}),
            expected=list(self.parameters.get("expected") or testdef.get("expected") or []),
            metadata={
                "os": metadata.get("os", ""),
                "devices": metadata.get("devices", ""),
                "environment": metadata.get("environment", ""),
                "branch_vcs": self.source,
                "project_name": metadata.get("name", ""),
                **({"commit_id": details["commit"]} if details.get("commit") else {}),
            },
        )
        definitions(ctx, self.namespace)[self.uuid] = info
        self.results = {k: v for k, v in details.items() if v} | {"path": path}


class InlineRepoAction(RepoAction):
    name = "inline-repo-action"
    description = "apply inline test definition to the test image"
    summary = "extract inline test definition"
    source = "inline"

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.parameters.get("repository"), Mapping):
            self.errors.append("an inline definition needs 'repository' as a mapping")

    def fetch(self, ctx: RunContext, target: Path) -> dict[str, str]:
        path = target / str(self.parameters.get("path") or "inline.yaml")
        overlay.write_text(path, overlay.dump_yaml(dict(self.parameters["repository"])))
        return {}


def run_git(ctx: RunContext, *args: str, cwd: Path | None = None, what: str = "") -> str:
    """One git command on the worker, within the action's deadline; its output."""
    argv = ["git", *args]
    try:
        result = hostcmd.run(
            argv,
            timeout=ctx.remaining(),
            interrupter=ctx.interrupter,
            env={"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"},
            cwd=str(cwd) if cwd else None,
        )
    except hostcmd.CommandTimeout as exc:
        raise ctx.timeout_error(f"'{' '.join(argv)}' was still running") from exc
    except hostcmd.CommandNotFound as exc:
        raise InfrastructureError(str(exc)) from exc
    if result.returncode != 0:
        raise InfrastructureError(f"git {args[0]} failed for {what}: {result.last_lines}")
    return result.output.strip()


class GitRepoAction(RepoAction):
    name = "git-repo-action"
    description = "apply git repository of tests to the test image"
    summary = "clone git test repo"
    source = "git"
    timeout_exception = InfrastructureError

    def validate(self) -> None:
        super().validate()
        if not self.parameters.get("repository"):
            self.errors.append("a git definition needs 'repository'")
        if shutil.which("git") is None:
            self.errors.append("git is not installed on the dispatcher")

    def fetch(self, ctx: RunContext, target: Path) -> dict[str, str]:
        repository = str(self.parameters["repository"])
        revision = self.parameters.get("revision")
        branch = self.parameters.get("branch")
        ctx.logger.info(f"Fetching tests from {repository}")
        args = ["clone", "--quiet"]
        # a shallow clone cannot check out an arbitrary revision
        if not revision and self.parameters.get("shallow", True) and _is_remote(repository):
            args += ["--depth", "1"]
        if branch:
            args += ["--branch", str(branch)]
        if self.parameters.get("recursive"):
            args.append("--recurse-submodules")
        # '--' so that a repository named like an option is never read as one
        run_git(ctx, *args, "--", repository, str(target), what=repository)
        if revision:
            run_git(ctx, "checkout", "--quiet", str(revision), "--", cwd=target, what=repository)
        commit = run_git(ctx, "rev-parse", "HEAD", cwd=target, what=repository)
        if self.parameters.get("history") is False:
            shutil.rmtree(target / ".git", ignore_errors=True)
        return {"repository": repository, "commit": commit}


def _is_remote(repository: str) -> bool:
    return "://" in repository or re.match(r"^[\w.-]+@[\w.-]+:", repository) is not None


class UrlRepoAction(RepoAction):
    name = "url-repo-action"
    description = "apply a single test file to the test image"
    summary = "download file test"
    source = "url"
    timeout_exception = InfrastructureError

    def validate(self) -> None:
        super().validate()
        if not self.parameters.get("repository"):
            self.errors.append("a url definition needs 'repository'")

    def fetch(self, ctx: RunContext, target: Path) -> dict[str, str]:
        url = str(self.parameters["repository"])
        ctx.logger.info(f"Downloading tests from {url}")
        download_dir = ctx.mkdtemp("url-repo")
        downloaded = fetch(
            url,
            download_dir / filename_of(url),
            timeout=ctx.remaining(),
            interrupter=ctx.interrupter,
            headers=self.parameters.get("headers") or {},
            compression=self.parameters.get("compression"),
        ).path
        target.mkdir(parents=True, exist_ok=True)
        if tarfile.is_tarfile(downloaded):
            extract_tar(downloaded, target, int(self.parameters.get("strip-components") or 0))
        else:
            # a single definition file: it is the one 'path' names
            path = str(self.parameters.get("path") or filename_of(url))
            destination = target / path
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(downloaded, destination)
        return {"repository": url}


def extract_tar(archive: Path, dest: Path, strip: int = 0) -> None:
    """Unpack without path traversal (tarfile's 'data' filter), dropping ``strip`` leading dirs."""
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            parts = Path(member.name).parts[strip:]
            if not parts:
                continue
            member.name = str(Path(*parts))
            members.append(member)
        try:
            tar.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise JobError(f"refusing to unpack {archive.name}: {exc}") from exc


class _DefinitionFilesAction(Action):
    """Shared by the actions that write files next to a fetched definition."""

    def info(self, ctx: RunContext) -> TestDefinitionInfo:
        return definitions(ctx, self.namespace)[self.parameters["uuid"]]

    def paths(self, ctx: RunContext) -> tuple[Path, str]:
        space = ctx.data(self.namespace)
        results = space.get(RESULTS_DIR)
        info = self.info(ctx)
        local = overlay.tree_path(space.get(OVERLAY_LOCATION), results)
        local = local / str(info.stage) / "tests" / info.testrun_id
        return local, test_dir_on_dut(results, info.stage, info.testrun_id)

    def testdef(self, ctx: RunContext) -> dict[str, Any]:
        local, _ = self.paths(ctx)
        return read_testdef(local / self.info(ctx).path, str(self.parameters["name"]))


class TestOverlayAction(_DefinitionFilesAction):
    __test__ = False
    name = "test-overlay"
    description = "overlay test support files onto image"
    summary = "applying LAVA test overlay"

    def run(self, ctx: RunContext) -> None:
        local, _ = self.paths(ctx)
        info = self.info(ctx)
        overlay.write_text(local / "testdef.yaml", overlay.dump_yaml(self.testdef(ctx)))
        overlay.write_text(local / "uuid", info.uuid)
        overlay.write_text(local / "testdef_metadata", overlay.dump_yaml(info.metadata))
        self.results = {"uuid": info.uuid, "name": info.name, "path": info.path, "from": info.source}
        if info.source != "inline":
            self.results["repository"] = info.repository


class TestInstallAction(_DefinitionFilesAction):
    __test__ = False
    name = "test-install-overlay"
    description = "overlay dependency installation support files onto image"
    summary = "applying LAVA test install scripts"

    def validate(self) -> None:
        unknown = set(self.parameters.get("skip_install") or []) - set(overlay.INSTALL_SKIP_CHOICES)
        if unknown:
            self.errors.append(
                f"skip_install: unknown {sorted(unknown)}; expected some of {list(overlay.INSTALL_SKIP_CHOICES)}"
            )

    def run(self, ctx: RunContext) -> None:
        local, on_dut = self.paths(ctx)
        testdef = self.testdef(ctx)
        try:
            script = overlay.render_install_sh(
                testdef, self.parameters, on_dut, distro=self.parameters.get("distro")
            )
        except ValueError as exc:
            raise JobError(f"definition {self.parameters['name']!r}: {exc}") from exc
        if script is None:
            self.results = {f"skipped {self.name}": self.info(ctx).uuid}
            return
        overlay.write_text(local / "install.sh", script, executable=True)
        if "git-repos" not in overlay.skipped_install_parts(self.parameters):
            self.clone_git_repos(ctx, testdef, local)
        self.results = {"uuid": self.info(ctx).uuid}

    def clone_git_repos(self, ctx: RunContext, testdef: Mapping[str, Any], local: Path) -> None:
        """install.git-repos are cloned on the worker into the definition's directory."""
        for repo in (testdef.get("install") or {}).get("git-repos") or []:
            if isinstance(repo, str):
                url, branch, destination = repo, None, None
            else:
                url, branch, destination = repo.get("url"), repo.get("branch"), repo.get("destination")
            if not url:
                raise TestError("install.git-repos: an entry has no url")
            name = destination or Path(urllib.parse.urlparse(str(url)).path).name.removesuffix(".git")
            if not overlay.safe_relative(str(name)) or "/" in str(name):
                raise JobError(f"install.git-repos: unacceptable destination {name!r}")
            branch_args = ["--branch", str(branch)] if branch else []
            run_git(ctx, "clone", "--quiet", *branch_args, "--", str(url), str(local / name), what=str(url))


class TestRunnerAction(_DefinitionFilesAction):
    __test__ = False
    name = "test-runscript-overlay"
    description = "overlay run script onto image"
    summary = "applying LAVA test run script"

    def run(self, ctx: RunContext) -> None:
        local, on_dut = self.paths(ctx)
        info = self.info(ctx)
        if info.name == "lava":
            raise TestError('The "lava" test definition name is reserved.')
        delays = self.settings.device.get("character_delays") or {}
        delay = float(delays.get("test") or 0) / 1000 if self.parameters.get("needs_character_delay") else 0.0
        try:
            script = overlay.render_run_sh(
                self.testdef(ctx),
                self.parameters,
                testrun_id=info.testrun_id,
                test_dir=on_dut,
                lava_signal=str(self.parameters.get("lava-signal") or "stdout"),
                character_delay=delay,
            )
        except ValueError as exc:
            raise JobError(f"definition {info.name!r}: {exc}") from exc
        overlay.write_text(local / "run.sh", script, executable=True)
        self.results = {"uuid": info.uuid}


REPO_ACTIONS: dict[str, type[RepoAction]] = {
    "git": GitRepoAction,
    "inline": InlineRepoAction,
    "url": UrlRepoAction,
}


class TestDefinitionAction(Action):
    __test__ = False
    name = "test-definition"
    description = "load test definitions into image"
    summary = "loading test definitions"

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.stages = 0

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        namespace = str(parameters.get("namespace") or "common")
        distro = (parameters.get("deployment_data") or {}).get("distro") or parameters.get("os")
        index = 0
        for stage, defs in enumerate(definitions_by_stage(self.settings, namespace)):
            for definition in defs:
                source = str(definition.get("from"))
                repo_class = REPO_ACTIONS.get(source)
                if repo_class is None:
                    raise JobError(
                        f"definition {definition.get('name')!r}: unknown 'from: {source}'; "
                        f"expected one of {', '.join(REPO_ACTIONS)}"
                    )
                test_name = f"{index}_{definition.get('name')}"
                child = {
                    **definition,
                    "namespace": namespace,
                    "test_name": test_name,
                    "stage": stage,
                    **({"distro": distro} if distro else {}),
                    **({"timeout": parameters["timeout"]} if parameters.get("timeout") else {}),
                }
                repo = repo_class()
                repo.stage = stage
                pipeline.add_action(repo, child)
                repo.uuid = f"{self.settings.job_id}_{repo.level}"
                child["uuid"] = repo.uuid
                for action in (TestOverlayAction(), TestInstallAction(), TestRunnerAction()):
                    pipeline.add_action(action, child)
                self.names.append(str(definition.get("name")))
                index += 1
        self.stages = len(definitions_by_stage(self.settings, namespace))

    def validate(self) -> None:
        seen = set()
        for name in self.names:
            if not NAME_PATTERN.match(name):
                self.errors.append(f"invalid characters in test definition name {name!r}")
            if name in seen:
                self.errors.append(f"test definition names need to be unique: {name!r} is repeated")
            seen.add(name)

    def run(self, ctx: RunContext) -> None:
        ctx.logger.info("Loading test definitions")
        super().run(ctx)
        space = ctx.data(self.namespace)
        root = overlay.tree_path(space.get(OVERLAY_LOCATION), space.get(RESULTS_DIR))
        infos = sorted(definitions(ctx, self.namespace).values(), key=lambda i: int(i.testrun_id.split("_")[0]))
        ctx.logger.info("Creating lava-test-runner.conf files")
        for stage in range(self.stages):
            lines = [
                test_dir_on_dut(space.get(RESULTS_DIR), stage, info.testrun_id)
                for info in infos
                if info.stage == stage
            ]
            overlay.write_text(root / str(stage) / "lava-test-runner.conf", "".join(f"{line}\n" for line in lines))
