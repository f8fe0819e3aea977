"""``send_citizen_email`` against a real SMTP server (the stack's aiosmtpd sink) and a real
PostgreSQL ledger: the message arrives in the citizen's language with the reference and the
status page's link, a retry sends nothing twice, an unreachable server is retried without
marking anything sent, and no log line holds the address."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from structlog.testing import capture_logs
from temporalio.exceptions import ApplicationError

from activities.emails import CitizenEmails, SmtpServer, message_id
from nwd.stack.mailsink import RunningSink
from readmodel.citizen_emails import CitizenEmailLedger
from readmodel.migrations import apply_migrations
from readmodel.store import open_pool
from runtime.messages import MAIL_UNAVAILABLE, CitizenEmailInput, EmailOutcome
from runtime.process import free_port

ADDRESS = "alex.private@example.org"
REFERENCE = "CHANGE-OF-ADDRESS-ABCD-EFGH-JKLM"
INTAKE = "http://front.example:8000"


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[RunningSink]:
    with RunningSink(tmp_path / "mail") as running:
        yield running


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_pool(database_url, max_size=3)
    await apply_migrations(pool)
    yield pool
    await pool.close()


def information(language: str, key: str = "information_requested:update_tax:-:1"
                ) -> CitizenEmailInput:
    return CitizenEmailInput(
        reference=REFERENCE, service="change-of-address",
        service_title={"en": "Tell government you have moved",
                       "es": "Comunique su cambio de domicilio"},
        kind="information_requested", key=key, language=language, to=ADDRESS,
        step_title={"en": "Tax"}, agency_name={"en": "Tax authority", "es": "Hacienda"},
        information_message={"en": "Send a proof of address", "es": "Envíe un justificante"},
        information_fields=[{"en": "Proof of address", "es": "Justificante de domicilio"}])


def finished(language: str) -> CitizenEmailInput:
    return CitizenEmailInput(
        reference=REFERENCE, service="change-of-address",
        service_title={"en": "Tell government you have moved"}, kind="finished",
        key="finished", language=language, to=ADDRESS, request_status="completed",
        outcomes=[EmailOutcome(title={"en": "Tax"}, agency={"en": "Tax authority"},
                               status="completed", agency_reference="TAX-1"),
                  EmailOutcome(title={"en": "Electoral roll"},
                               agency={"en": "Electoral registration"}, status="failed")])


def sender(pool: asyncpg.Pool, sink: RunningSink) -> CitizenEmails:
    return CitizenEmails(CitizenEmailLedger(pool), SmtpServer(sink.host, sink.port),
                         intake_url=INTAKE)


class TestSending:
    async def test_the_email_arrives_in_spanish_with_reference_and_link(
        self, pool: asyncpg.Pool, sink: RunningSink
    ) -> None:
        """A Spanish request's email is Spanish, names the agency, the message, the field,
        the reference and the status page, and carries the key's Message-ID."""
        result = await sender(pool, sink).send_citizen_email(information("es"))
        assert result.status == "sent"
        [mail] = sink.messages()
        assert mail.to == ADDRESS
        assert mail.subject == (f"Se necesita información para su solicitud {REFERENCE}"
                                " · Comunique su cambio de domicilio")
        body = mail.body()
        assert "Hacienda necesita más información" in body
        assert "Envíe un justificante" in body and "Justificante de domicilio" in body
        assert f"Su referencia: {REFERENCE}" in body
        assert f"{INTAKE}/track/{REFERENCE}" in body
        assert mail.message["Content-Language"] == "es"
        assert mail.message["Message-ID"] == result.message_id == message_id(
            REFERENCE, "information_requested:update_tax:-:1", SmtpServer("x", 1).sender)

    async def test_arabic_and_a_language_without_a_catalog(
        self, pool: asyncpg.Pool, sink: RunningSink
    ) -> None:
        """``ar`` is written in Arabic; ``fr`` (no catalog) falls back to English."""
        await sender(pool, sink).send_citizen_email(finished("ar"))
        [mail] = sink.messages()
        assert mail.subject.startswith(f"اكتمل طلبك {REFERENCE}")
        assert "ما قامت به كل جهة:" in mail.body()
        assert "TAX-1" in mail.body()
        await sender(pool, sink).send_citizen_email(
            finished("fr").model_copy(update={"key": "finished-again"}))
        newest = sink.messages()[0]
        assert newest.subject.startswith(f"Your request {REFERENCE} is finished")
        assert newest.message["Content-Language"] == "en"

    async def test_the_finished_email_lists_each_agency_and_what_it_did(
        self, pool: asyncpg.Pool, sink: RunningSink
    ) -> None:
        await sender(pool, sink).send_citizen_email(finished("en"))
        body = sink.messages()[0].body()
        assert "  - Tax (Tax authority): done · their reference: TAX-1" in body
        assert "  - Electoral roll (Electoral registration): could not be done" in body


class TestExactlyOnce:
    async def test_a_retry_of_a_sent_key_sends_nothing(
        self, pool: asyncpg.Pool, sink: RunningSink
    ) -> None:
        """The same key twice (a retry after the mark, a replayed schedule): one message,
        and the ledger says sent, once."""
        emails = sender(pool, sink)
        first = await emails.send_citizen_email(information("en"))
        again = await emails.send_citizen_email(information("en"))
        assert (first.status, again.status) == ("sent", "already_sent")
        assert first.message_id == again.message_id
        assert len(sink.messages()) == 1
        [row] = await CitizenEmailLedger(pool).of_request(REFERENCE)
        assert (row.status, row.attempts, row.kind) == ("sent", 1, "information_requested")
        assert row.sent_at is not None

    async def test_another_round_is_another_email(
        self, pool: asyncpg.Pool, sink: RunningSink
    ) -> None:
        emails = sender(pool, sink)
        await emails.send_citizen_email(information("en"))
        await emails.send_citizen_email(information("en", "information_requested:update_tax:-:2"))
        assert len(sink.messages()) == 2

    async def test_an_unreachable_server_is_retried_and_nothing_is_marked_sent(
        self, pool: asyncpg.Pool, sink: RunningSink
    ) -> None:
        """Connection refused: a retryable MailUnavailable naming no address; the ledger says
        failed with the error's type; the next attempt (server back) sends it once."""
        down = CitizenEmails(CitizenEmailLedger(pool), SmtpServer("127.0.0.1", free_port()),
                             intake_url=INTAKE)
        with pytest.raises(ApplicationError) as raised:
            await down.send_citizen_email(information("en"))
        assert raised.value.type == MAIL_UNAVAILABLE and not raised.value.non_retryable
        assert ADDRESS not in str(raised.value)
        [row] = await CitizenEmailLedger(pool).of_request(REFERENCE)
        assert (row.status, row.attempts, row.sent_at) == ("failed", 1, None)
        assert row.error in ("SMTPConnectError", "ConnectionRefusedError")
        assert sink.messages() == []
        result = await sender(pool, sink).send_citizen_email(information("en"))
        assert result.status == "sent" and len(sink.messages()) == 1
        [row] = await CitizenEmailLedger(pool).of_request(REFERENCE)
        assert (row.status, row.attempts, row.error) == ("sent", 2, None)

    async def test_without_a_server_nothing_is_sent_or_claimed(
        self, pool: asyncpg.Pool, sink: RunningSink
    ) -> None:
        off = CitizenEmails(CitizenEmailLedger(pool), None, intake_url=INTAKE)
        assert (await off.send_citizen_email(information("en"))).status == "mail_off"
        assert await CitizenEmailLedger(pool).of_request(REFERENCE) == []


class TestPrivacy:
    async def test_no_log_line_holds_the_address_or_the_text(
        self, pool: asyncpg.Pool, sink: RunningSink
    ) -> None:
        """Sent, already sent and failed: every line names the reference and the kind, and
        none holds the address or the agency's message."""
        down = CitizenEmails(CitizenEmailLedger(pool), SmtpServer("127.0.0.1", free_port()),
                             intake_url=INTAKE)
        with capture_logs() as logs:
            with pytest.raises(ApplicationError):
                await down.send_citizen_email(information("en"))
            await sender(pool, sink).send_citizen_email(information("en"))
            await sender(pool, sink).send_citizen_email(information("en"))
        assert [e["event"] for e in logs] == [
            "citizen_email_failed", "citizen_email_sent", "citizen_email_already_sent"]
        for entry in logs:
            assert entry["reference"] == REFERENCE
            assert entry["kind"] == "information_requested"
            text = repr(entry)
            assert ADDRESS not in text and "proof of address" not in text.lower()
