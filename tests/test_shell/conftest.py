"""Fixtures of the DUT-side script tests: one run per available shell."""

from __future__ import annotations

from pathlib import Path

import pytest

from .dut import Group, Overlay, Shell, build_overlay, find_shells

_SHELLS = find_shells()


def _shell_params() -> list[object]:
    params: list[object] = []
    for name, shell, why in _SHELLS:
        marks = [] if shell is not None else [pytest.mark.skip(reason=f"shell {name}: {why}")]
        params.append(pytest.param(shell, id=name, marks=marks))
    return params


@pytest.fixture(params=_shell_params(), scope="session")
def shell(request: pytest.FixtureRequest) -> Shell:
    """Each shell a device may run the scripts with (its lava_test_sh_cmd)."""
    return request.param


@pytest.fixture(scope="session")
def overlay(shell: Shell, tmp_path_factory: pytest.TempPathFactory) -> Overlay:
    """Generic and MultiNode scripts installed for SHELL; shared, so tests must not change bin/."""
    return build_overlay(tmp_path_factory.mktemp(f"overlay-{shell.name}"), shell, group=Group())


@pytest.fixture
def fresh_overlay(shell: Shell, tmp_path: Path) -> Overlay:
    """An overlay of one's own (a test that runs lava-test-runner or writes the cache)."""
    return build_overlay(tmp_path, shell, group=Group())
