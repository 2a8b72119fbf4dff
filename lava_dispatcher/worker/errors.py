"""The worker's errors: each class is one answer a client can get.

The XML-RPC and REST layers map them to LAVA's fault codes and HTTP statuses
(reference: api-surface.md §1.3): :class:`NotFound` 404, :class:`NotAllowed`
403 (401 when nobody is logged in), :class:`InvalidJob` 400,
:class:`AuthFailed` HTTP 401, :class:`BadRequest` 400. Every message names
what is wrong, so it can be shown as it is.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error the service API raises on purpose."""

    #: LAVA's XML-RPC fault code for this kind of error
    fault_code = 400


class NotFound(WorkerError):
    """A job, device, device type or user that does not exist (LAVA: 404)."""

    fault_code = 404


class NotAllowed(WorkerError):
    """The caller may not see or do this (LAVA: 403, or 401 when anonymous)."""

    fault_code = 403

    def __init__(self, message: str, *, anonymous: bool = False) -> None:
        super().__init__(message)
        #: nobody was logged in: LAVA answers 401 "authentication required"
        self.anonymous = anonymous
        if anonymous:
            self.fault_code = 401


class InvalidJob(WorkerError):
    """A submission that cannot be accepted: bad YAML, schema, device type (LAVA: 400)."""

    fault_code = 400


class BadRequest(WorkerError):
    """A malformed request: a bad filter, a bad health name, a bad header (400)."""

    fault_code = 400


class AuthFailed(WorkerError):
    """Credentials were given and are wrong: HTTP 401 ``Invalid token``, not a fault."""

    fault_code = 401


class ConfigError(WorkerError):
    """A bad worker option, config file, device file or health-check file: nothing starts."""
