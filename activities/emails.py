"""Emails to the citizen: an agency asks for information, a caseworker decides, the end.

``send_citizen_email`` renders one email from ``activities/templates/<kind>.txt`` in the
citizen's language (gettext catalogs of :mod:`i18n`, strings extracted by ``make messages``)
and sends it through the configured SMTP server (aiosmtplib)::

    claim (reference, key) ─▶ already sent ─────────────────────────▶ already_sent, nothing
          │ first attempt or a retry of one that did not go out
          ▼
    render ─▶ SMTP ─▶ accepted ─▶ mark sent ─────────────────────────▶ sent
                  └─▶ refused for good (5xx) ─▶ MailRefused    (not retried)
                  └─▶ unreachable, 4xx, timeout ─▶ MailUnavailable (Temporal retries)

Exactly once: the ledger (:mod:`readmodel.citizen_emails`) is claimed before the server is
spoken to, so a retry of a key that was sent does nothing; the Message-ID is derived from
``(reference, key)``, so if a crash falls between the server's acceptance and the mark, the
copy sent on retry carries the same Message-ID and a receiver can drop it.

The address, the subject and the body are personal or may be: log lines carry the
reference, the kind and the key only, and a failure names the SMTP error's type, never its
text (a refused recipient's text holds the address).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from pathlib import Path

import aiosmtplib
import structlog
from jinja2 import Environment, FileSystemLoader
from temporalio import activity
from temporalio.exceptions import ApplicationError

from i18n import catalogs, languages
from readmodel.citizen_emails import CitizenEmailLedger
from runtime.messages import (
    MAIL_REFUSED,
    MAIL_UNAVAILABLE,
    CitizenEmailInput,
    CitizenEmailResult,
)

log = structlog.get_logger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
SMTP_TIMEOUT_S = 20.0
"""One SMTP conversation's limit (the activity's own timeout is longer, so it reports why)."""


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to send (from the worker's settings)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    sender: str = "No Wrong Door <no-reply@nwd.example>"


def local(text: Mapping[str, str] | None, tag: str) -> str:
    """``text`` in ``tag``, else its base language, else English."""
    if not text:
        return ""
    return text.get(tag) or text.get(tag.split("-")[0]) or text.get("en") or ""


def mail_language(tag: str) -> str:
    """The catalog language closest to ``tag`` (English when none is)."""
    return languages.negotiate([tag], languages.tags()) or languages.DEFAULT


def message_id(reference: str, key: str, sender: str) -> str:
    """The same Message-ID for every attempt at one ``(reference, key)``."""
    digest = hashlib.sha256(f"{reference}\x00{key}".encode()).hexdigest()[:32]
    domain = parseaddr(sender)[1].rpartition("@")[2] or "nwd.example"
    return f"<{digest}.{reference.lower()}@{domain}>"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=False,
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.install_gettext_callables(  # type: ignore[attr-defined]
        catalogs.gettext, catalogs.ngettext, newstyle=True, pgettext=catalogs.pgettext)
    return env


ENVIRONMENT = _environment()


def subject_of(email: CitizenEmailInput, tag: str) -> str:
    """The subject line, in the language in force (``catalogs.use``)."""
    _ = catalogs.gettext
    service = local(email.service_title, tag)
    if email.kind == "information_requested":
        text = _("Information needed for your request %(reference)s")
    elif email.kind == "decided":
        text = (_("Your request %(reference)s was approved") if email.approved
                else _("Your request %(reference)s was not approved"))
    else:
        text = _("Your request %(reference)s is finished")
    return f"{text % {'reference': email.reference}} · {service}"


def render(email: CitizenEmailInput, *, status_url: str) -> tuple[str, str, str]:
    """``(language, subject, plain-text body)`` of ``email``."""
    tag = mail_language(email.language)
    with catalogs.use(tag):
        body = ENVIRONMENT.get_template(f"{email.kind}.txt").render(
            email=email, status_url=status_url, service=local(email.service_title, tag),
            local=lambda text: local(text, tag))
        return tag, subject_of(email, tag), body


class CitizenEmails:
    """Sends emails to citizens, once each.

    Args:
        ledger: which keys were sent (the read model's pool; owned by the caller).
        smtp: the SMTP server and the From address; None: no server is configured, and
            every email is logged as not sent (``mail_off``).
        intake_url: the front door's public URL (each email links the status page).
    """

    def __init__(self, ledger: CitizenEmailLedger, smtp: SmtpServer | None, *,
                 intake_url: str) -> None:
        self._ledger = ledger
        self._smtp = smtp
        self._intake_url = intake_url.rstrip("/")

    @activity.defn(name="send_citizen_email")
    async def send_citizen_email(self, email: CitizenEmailInput) -> CitizenEmailResult:
        bound = log.bind(reference=email.reference, service=email.service, kind=email.kind,
                         key=email.key)
        if self._smtp is None:
            bound.warning("citizen_email_not_sent", why="no SMTP server (NWD_SMTP_HOST)")
            return CitizenEmailResult(status="mail_off")
        smtp = self._smtp
        mid = message_id(email.reference, email.key, smtp.sender)
        attempt = await self._ledger.claim(email.reference, email.key, email.kind, mid)
        if attempt is None:
            bound.info("citizen_email_already_sent")
            return CitizenEmailResult(status="already_sent", message_id=mid)
        message = self.compose(email, mid, smtp.sender)
        try:
            await aiosmtplib.send(
                message, hostname=smtp.host, port=smtp.port, username=smtp.username,
                password=smtp.password, start_tls=smtp.starttls, use_tls=False,
                timeout=SMTP_TIMEOUT_S)
        except aiosmtplib.SMTPResponseException as exc:
            error = type(exc).__name__
            await self._ledger.mark_failed(email.reference, email.key, error)
            final = 500 <= exc.code < 600
            bound.warning("citizen_email_failed", attempt=attempt, error=error,
                          smtp_code=exc.code, retried=not final)
            raise ApplicationError(
                f"the SMTP server answered {exc.code} ({error})",
                type=MAIL_REFUSED if final else MAIL_UNAVAILABLE, non_retryable=final,
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            error = type(exc).__name__
            await self._ledger.mark_failed(email.reference, email.key, error)
            bound.warning("citizen_email_failed", attempt=attempt, error=error, retried=True)
            raise ApplicationError(
                f"the SMTP server {smtp.host}:{smtp.port} could not be reached "
                f"({error})", type=MAIL_UNAVAILABLE) from None
        await self._ledger.mark_sent(email.reference, email.key)
        bound.info("citizen_email_sent", attempt=attempt, language=message["Content-Language"])
        return CitizenEmailResult(status="sent", message_id=mid)

    def compose(self, email: CitizenEmailInput, mid: str, sender: str) -> EmailMessage:
        """The MIME message (plain text, UTF-8) with a stable Message-ID."""
        tag, subject, body = render(email, status_url=f"{self._intake_url}/track/{email.reference}")
        message = EmailMessage()
        message["From"] = sender
        message["To"] = email.to
        message["Subject"] = subject
        message["Message-ID"] = mid
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["X-NWD-Reference"] = email.reference
        message["X-NWD-Kind"] = email.kind
        message.set_content(body)
        message["Content-Language"] = tag  # after set_content, which clears Content-*
        return message
