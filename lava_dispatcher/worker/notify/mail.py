"""Sending an email with the standard library's smtplib, in a worker thread.

The SMTP conversation blocks, so it runs in the notifier's thread pool with
the socket timeout from the settings: the event loop never waits on a mail
server. STARTTLS or SMTPS and a login are the admin's choice
(:class:`SmtpSettings`). SMTP 4xx answers and connection trouble are worth
another attempt; 5xx answers (a refused recipient, a refused login) are not.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from lava_dispatcher.worker.notify.errors import Permanent, Temporary
from lava_dispatcher.worker.notify.settings import SmtpSettings

#: what we accept as an address: local@domain, no spaces, brackets or controls
ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def check_address(address: str) -> str:
    if not ADDRESS.match(address) or any(not c.isprintable() for c in address):
        raise Permanent(f"{address!r} is not an email address this worker sends to")
    return address


def message(settings: SmtpSettings, to: str, subject: str, body: str) -> EmailMessage:
    """The email; ``subject`` must already be one line (:func:`messages.one_line`)."""
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = check_address(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or None)
    msg.set_content(body)
    return msg


def send(settings: SmtpSettings, msg: EmailMessage) -> str:
    """One attempt (blocking: run it in a thread). What the server said, or Temporary/Permanent."""
    try:
        return _conversation(settings, msg)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _text in exc.recipients.values()]
        said = "; ".join(f"{to}: {code} {text.decode('utf-8', 'replace')}" for to, (code, text) in exc.recipients.items())
        raise (Permanent if all(c >= 500 for c in codes) else Temporary)(f"recipient refused: {said}") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise Permanent(f"SMTP login refused ({exc.smtp_code}): check notify smtp username and password") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise Permanent(f"the SMTP server {settings.host}:{settings.port} cannot do this: {exc}") from None
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise (Permanent if exc.smtp_code >= 500 else Temporary)(f"SMTP {exc.smtp_code} {text}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise Temporary(f"SMTP server {settings.host}:{settings.port}: {type(exc).__name__}: {exc}") from None


def _conversation(settings: SmtpSettings, msg: EmailMessage) -> str:
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if settings.ssl:
        smtp = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    with smtp:
        smtp.ehlo_or_helo_if_needed()
        if settings.starttls:
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.username is not None and settings.password is not None:
            smtp.login(settings.username, settings.password)
        smtp.send_message(msg)
    return f"accepted by {settings.host}:{settings.port}"
