"""How a delivery attempt fails: worth another attempt, or not."""

from __future__ import annotations


class DeliveryError(Exception):
    """An attempt failed; ``retry`` says whether another attempt may succeed."""

    retry = True


class Temporary(DeliveryError):
    """The receiver is down, slow or busy (connection refused, timeout, HTTP 5xx, SMTP 4xx)."""

    retry = True


class Permanent(DeliveryError):
    """Trying again cannot help: a refused address, a host not allowed, HTTP 404, SMTP 550."""

    retry = False
