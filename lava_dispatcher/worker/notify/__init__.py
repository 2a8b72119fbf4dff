"""User notifications from a job's ``notify`` block: callbacks, email, IRC.

The worker makes one :class:`Notifier` (:meth:`Notifier.for_worker`), calls
:meth:`Notifier.job_changed` on every job state change, lists a job's
deliveries with :meth:`Notifier.deliveries` and calls :meth:`Notifier.close`
when it stops. See docs/notifications.md.
"""

from __future__ import annotations

from lava_dispatcher.worker.notify.lookup import JobQuery, Lookup, StoreLookup
from lava_dispatcher.worker.notify.notifier import Notifier
from lava_dispatcher.worker.notify.records import (
    Attempt,
    DeliveryRecord,
    MemoryRecords,
    Records,
    SqliteRecords,
)
from lava_dispatcher.worker.notify.settings import (
    CallbackSettings,
    Contact,
    IrcSettings,
    NotifySettings,
    RetrySettings,
    SmtpSettings,
)

__all__ = [
    "Attempt",
    "CallbackSettings",
    "Contact",
    "DeliveryRecord",
    "IrcSettings",
    "JobQuery",
    "Lookup",
    "MemoryRecords",
    "Notifier",
    "NotifySettings",
    "Records",
    "RetrySettings",
    "SmtpSettings",
    "SqliteRecords",
    "StoreLookup",
]
