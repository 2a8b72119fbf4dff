"""The error taxonomy, with LAVA's ``error_type`` strings.

Every failure a job can have is one of these classes; the class decides the
job's ``error_type`` in ``result.yaml`` and whether a RetryAction may retry.
The ``error_type`` values are part of the compatibility contract (LAVA's
server and its users filter on them), so they must not change.
"""

from __future__ import annotations

from typing import Any


class LAVAError(Exception):
    """Base of every error the dispatcher reports as a job outcome."""

    error_type = ""
    error_help = ""


class InfrastructureError(LAVAError):
    """The lab failed: a power command, a serial server, a download host."""

    error_type = "Infrastructure"
    error_help = "InfrastructureError: The Infrastructure is not working correctly."


class ConnectionClosedError(InfrastructureError):
    """The console's far end went away."""

    error_help = "ConnectionClosedError: connection closed"


class JobError(LAVAError):
    """What the job asked for cannot be done (bad URL, bad value, timeout)."""

    error_type = "Job"
    error_help = "JobError: Your job cannot terminate cleanly."


class TestError(LAVAError):
    """The test definition misbehaved on the DUT; retryable, not fatal to the lab."""

    __test__ = False  # not a pytest test class
    error_type = "Test"
    error_help = "TestError: A test failed to run, look at the error message."


class LAVABug(LAVAError):
    """A bug in the dispatcher itself; also what any unexpected exception becomes."""

    error_type = "Bug"
    error_help = "LAVABug: This is probably a bug in the dispatcher, please report it."


class ConfigurationError(LAVAError):
    """The device or dispatcher configuration is wrong: an admin must act."""

    error_type = "Configuration"
    error_help = "ConfigurationError: The instance is not configured correctly."


class JobCanceled(LAVAError):
    """The job was canceled (SIGTERM, a cancel request)."""

    error_type = "Canceled"
    error_help = "JobCanceled: The job was canceled"


class LAVATimeoutError(LAVAError):
    """A test shell timed out; converted to TestError so that it can be retried."""

    error_type = "LAVATimeout"
    error_help = "LAVATimeoutError: test shell has timed out."


class MultinodeProtocolTimeoutError(LAVAError):
    """A MultiNode wait or sync call was not answered in time."""

    error_type = "MultinodeTimeout"
    error_help = "MultinodeProtocolTimeoutError: Multinode wait/sync call has timed out."


class FastbootDeviceNotFound(LAVAError):
    error_type = "FastbootDeviceNotFound"
    error_help = "FastbootDeviceNotFound: fastboot device not found."


class _InvalidInput:
    """Mixin for schema failures: one message naming key path, bad value and expectation."""

    def __init__(self, message: str, path: str = "", value: Any = None, expected: str = "") -> None:
        super().__init__(message)  # type: ignore[call-arg]
        self.path = path
        self.value = value
        self.expected = expected


class InvalidJobError(_InvalidInput, JobError):
    """The job definition does not match the schema; nothing ran."""


class InvalidDeviceError(_InvalidInput, ConfigurationError):
    """The device dictionary does not match the schema; nothing ran."""


#: the exceptions a RetryAction retries (never LAVABug, never a cancel)
RETRYABLE: tuple[type[LAVAError], ...] = (InfrastructureError, JobError, TestError)


def error_type_of(exc: BaseException) -> str:
    """LAVA's error_type for any exception: non-LAVA exceptions are bugs."""
    if isinstance(exc, LAVAError) and exc.error_type:
        return exc.error_type
    return LAVABug.error_type
