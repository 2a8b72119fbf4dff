"""Input schemas: job definitions, device dictionaries, test definitions.

Every validator raises exactly one error (:class:`~lava_dispatcher.errors.InvalidJobError`
or :class:`~lava_dispatcher.errors.InvalidDeviceError`) whose message names the
key path, the bad value and what was expected, for example::

    actions[1].boot.method: got 'qemux'; expected one of 'avh', 'barebox', ... (did you mean 'qemu'?)
    timeouts.job: required key missing; expected a timeout such as {minutes: 10}

The exception also carries ``path``, ``value`` and ``expected`` separately.

* :func:`validate_job` - the LAVA v2 job definition (strict; see :mod:`.job`);
  ``method_schemas`` lets plugins add deploy/boot methods and test kinds.
* :func:`validate_device` - the rendered device dictionary (see :mod:`.device`).
* :func:`validate_testdef` - a "Lava-Test Test Definition 1.0" file.
* :func:`load_yaml` - safe YAML loading that refuses conflicting duplicate
  keys and reports syntax errors as ``source:line:column: problem``.

The validators return the validated data (equal to the input: nothing is
added or normalised).
"""

from __future__ import annotations

from typing import Any

import voluptuous as vol

from lava_dispatcher.errors import InvalidJobError
from lava_dispatcher.schemas.boot import BOOT_METHODS
from lava_dispatcher.schemas.deploy import DEPLOY_METHODS
from lava_dispatcher.schemas.device import validate_device
from lava_dispatcher.schemas.errors import format_path, format_value, make_error
from lava_dispatcher.schemas.job import CONTEXT_VARIABLES, validate_job
from lava_dispatcher.schemas.loader import load_yaml
from lava_dispatcher.schemas.test import TEST_KINDS
from lava_dispatcher.schemas.testdef import TESTDEF, TESTDEF_FORMAT

_TESTDEF_SCHEMA = vol.Schema(TESTDEF)


def validate_testdef(data: Any) -> dict[str, Any]:
    """Validate a loaded test definition file; return it, or raise one InvalidJobError."""
    if not isinstance(data, dict):
        kind = "an empty document" if data is None else type(data).__name__
        raise InvalidJobError(
            f"test definition: got {kind}; expected a mapping with metadata and run",
            path="",
            value=data,
            expected="a mapping",
        )
    try:
        out: dict[str, Any] = _TESTDEF_SCHEMA(data)
    except vol.Invalid as exc:
        raise make_error(exc, data, InvalidJobError, "test definition") from None
    return out


#: the names of the built-in methods, for listings (``lava-dispatch describe``)
KNOWN_METHODS: dict[str, tuple[str, ...]] = {
    "deploy": tuple(sorted(DEPLOY_METHODS)),
    "boot": tuple(sorted(BOOT_METHODS)),
    "test": tuple(k for k in TEST_KINDS if k != "docker"),
}

__all__ = [
    "CONTEXT_VARIABLES",
    "KNOWN_METHODS",
    "TESTDEF_FORMAT",
    "format_path",
    "format_value",
    "load_yaml",
    "validate_device",
    "validate_job",
    "validate_testdef",
]
