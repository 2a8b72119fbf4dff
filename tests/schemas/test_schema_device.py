"""Device dictionaries: LAVA's rendered files pass unchanged, mistakes are named by path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from lava_dispatcher.errors import ConfigurationError, InvalidDeviceError
from lava_dispatcher.schemas import load_yaml, validate_device

HERE = Path(__file__).resolve().parent
VALID = sorted((HERE / "devices" / "valid").glob("*.yaml"))
INVALID = sorted((HERE / "devices" / "invalid").glob("*.yaml"))
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LAVA_DEVICES = sorted((SHARED / "lava-devices").glob("*.yaml"))


def _load(path: Path) -> Any:
    return load_yaml(path.read_text(), path.name, error=InvalidDeviceError)


def _lava_device(name: str) -> dict[str, Any]:
    path = SHARED / "lava-devices" / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared LAVA device dictionaries are not available")
    data: dict[str, Any] = _load(path)
    return data


def error_of(data: Any) -> InvalidDeviceError:
    with pytest.raises(InvalidDeviceError) as info:
        validate_device(data)
    return info.value


def test_shared_lava_devices_validate_unchanged() -> None:
    if not LAVA_DEVICES:
        pytest.skip(
            f"no LAVA device dictionaries in {SHARED / 'lava-devices'}: the shared tree is absent"
        )
    for path in LAVA_DEVICES:
        data = _load(path)
        before = copy.deepcopy(data)
        assert validate_device(data) == before, path.name
        assert data == before


@pytest.mark.parametrize("path", VALID, ids=[p.name for p in VALID])
def test_valid_device(path: Path) -> None:
    data = _load(path)
    assert validate_device(data) == data


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_invalid_device(path: Path) -> None:
    wanted = path.read_text().splitlines()[0].removeprefix("# error: ")
    with pytest.raises(InvalidDeviceError) as info:
        validate_device(_load(path))
    error = info.value
    assert isinstance(error, ConfigurationError)  # an admin must act
    assert wanted in str(error)
    if error.path:
        assert str(error).startswith(f"{error.path}: ")
    assert "expected " in str(error)


def test_odd_shapes_of_rendered_devices() -> None:
    bbb = _lava_device("bbb-01.yaml")
    assert bbb["constants"]["boot_retry"] is None
    assert bbb["actions"]["test"]["methods"]["docker"]["options"] == [None]
    assert bbb["actions"]["deploy"]["methods"]["tftp"] is None
    frdm = _lava_device("frdm-01.yaml")
    assert frdm["actions"]["deploy"]["connections"] is None
    hikey = _lava_device("hikey-01.yaml")
    assert hikey["actions"]["boot"]["methods"]["fastboot"] == ["boot"]  # a method given as a list


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.__setitem__("comands", d.pop("commands")), "comands"),
        (
            lambda d: d["commands"].__setitem__("connect", ["telnet", "host", 7001]),
            "commands.connect",
        ),
        (
            lambda d: d["timeouts"]["actions"].__setitem__("lava-test-shell", 180),
            "timeouts.actions.lava-test-shell",
        ),
        (
            lambda d: d["timeouts"]["connections"].__setitem__(
                "lava-test-shell", {"minutes": 1, "seconds": 5}
            ),
            "timeouts.connections.lava-test-shell.seconds",
        ),
        (
            lambda d: d["constants"].__setitem__("default-shell-promt", "# "),
            "constants.default-shell-promt",
        ),
        (
            lambda d: d["constants"]["u-boot"].__setitem__("final-mesage", "x"),
            "constants.u-boot.final-mesage",
        ),
        (
            lambda d: d["parameters"]["bootz"].__setitem__("kernal", "0x0"),
            "parameters.bootz.kernal",
        ),
        (lambda d: d["actions"].__setitem__("depoly", d["actions"]["deploy"]), "actions.depoly"),
        (
            lambda d: d["actions"]["deploy"].__setitem__("methods", ["tftp"]),
            "actions.deploy.methods",
        ),
        (lambda d: d.__setitem__("character_delays", {"boot": "10ms"}), "character_delays.boot"),
    ],
)
def test_mistakes_in_a_lava_device(mutate: Any, path: str) -> None:
    data = _lava_device("bbb-01.yaml")
    mutate(data)
    error = error_of(data)
    assert error.path == path
    assert str(error).startswith(f"{path}: ")


def test_typo_guard_accepts_new_names() -> None:
    data = _lava_device("bbb-01.yaml")
    data["constants"]["my-lab-bootloader"] = {"interrupt-prompt": "Press any key"}
    data["constants"]["uefi"] = {"interrupt-prompt": "Press ESC"}
    data["parameters"]["lab_power_rail"] = "3v3"
    data["actions"]["boot"]["methods"]["my-plugin-method"] = {"anything": [1, 2]}
    validate_device(data)


def test_serial_connections() -> None:
    data = _lava_device("bbb-01.yaml")
    del data["commands"]["connect"]
    data["commands"]["connections"] = {
        "uart0": {"serial": "/dev/ttyUSB0", "baudrate": 115200, "tags": ["primary"]},
        "uart1": {"serial": "socket://ser2net:7002"},
        "uart2": {"connect": "telnet ser2net 7003", "tags": ["telnet"]},
    }
    data["device_type"] = "beaglebone-black"
    validate_device(data)
    data["commands"]["connections"]["uart2"]["serial"] = "/dev/ttyUSB2"
    error = error_of(data)
    assert error.path == "commands.connections.uart2.serial"
    assert "cannot be used together with 'connect'" in str(error)


def test_not_a_mapping() -> None:
    values: list[Any] = [None, [], "device"]
    for value in values:
        error = error_of(value)
        assert str(error).startswith("device dictionary: got ")


def test_lava_template_duplicates_need_allow_duplicates() -> None:
    # LAVA's hi6220-hikey template renders flash_cmds_order twice, with different values
    text = "flash_cmds_order: [a, b]\nactions: {deploy: {methods: {}}, boot: {methods: {}}}\nflash_cmds_order: [c]\n"
    with pytest.raises(InvalidDeviceError, match="duplicate key 'flash_cmds_order'"):
        load_yaml(text, "hikey.yaml", error=InvalidDeviceError)
    data = load_yaml(text, "hikey.yaml", error=InvalidDeviceError, allow_duplicates=True)
    assert data["flash_cmds_order"] == ["c"]
    validate_device(data)
