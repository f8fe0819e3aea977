"""The citizen is kept informed by email, end to end: a request made in Spanish whose tax
office asks for information sends a Spanish email with the reference and the status page's
link to the real SMTP sink; the answer lets it finish; the "finished" email lists each agency
and what it did — once each, with the ledger saying so."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from definitions.catalog import Catalog
from definitions.loader import load_catalog
from nwd.stack.mailsink import StoredMail
from readmodel.citizen_emails import CitizenEmailLedger
from runtime.settings import DEFAULT_CATALOG_DIR
from tests.e2e.conftest import Engine, example
from tests.polling import eventually, progress_until

TAX_STEP = "update_tax_address"
ASK_PROOF = {"needs_information": {
    "fields": {"proof_of_address": {"type": "text",
                                    "label": {"en": "Proof of address",
                                              "es": "Justificante de domicilio"}}},
    "message": {"en": "Send us a proof of address", "es": "Envíenos un justificante"}}}


def spanish_submission() -> dict[str, Any]:
    return {**example("change-of-address"), "preferred_language": "es"}


async def mails(engine: Engine, count: int) -> list[StoredMail]:
    """Within 20 s, the sink holds ``count`` messages (newest first)."""
    assert engine.mail is not None
    sink = engine.mail

    async def probe() -> list[StoredMail]:
        found = sink.messages()
        assert len(found) >= count, f"{len(found)} messages in the sink"
        return found

    found: list[StoredMail] = await eventually(probe, within_s=20)
    return found


class TestKeepingTheCitizenInformed:
    async def test_information_request_then_finish_each_email_once_in_spanish(
        self, engine: Engine, catalog: Catalog
    ) -> None:
        await engine.agencies.set_behaviour("tax-authority", ASK_PROOF)
        submission = spanish_submission()
        reference = await engine.submit("change-of-address", submission)

        [asked] = await mails(engine, 1)
        assert asked.to == submission["email"]
        assert asked.message["Content-Language"] == "es"
        assert asked.subject.startswith(
            f"Se necesita información para su solicitud {reference}")
        body = asked.body()
        assert "Envíenos un justificante" in body and "Justificante de domicilio" in body
        assert f"Su referencia: {reference}" in body
        assert f"{engine.intake_url}/track/{reference}" in body

        await engine.agencies.set_behaviour("tax-authority", {})
        answered = await engine.intake.post(f"/requests/{reference}/information", json={
            "step_id": TAX_STEP, "answers": {"proof_of_address": "bill"}})
        assert answered.status_code == 200, answered.text
        result = await engine.result(reference)
        assert result.status == "completed"

        newest, first = await mails(engine, 2)
        assert first.path == asked.path  # nothing sent twice
        assert newest.subject.startswith(f"Su solicitud {reference} ha terminado")
        finished = newest.body()
        snapshot = catalog.snapshot("change-of-address")
        done = [s for s in result.steps if s.status != "skipped"]
        assert done, result.steps
        lines = finished.splitlines()
        for step in done:  # each agency told: its line, in Spanish, says it was done
            definition = snapshot.service.step(step.step_id)
            assert definition is not None and definition.title is not None
            title = definition.title["es"]
            [line] = [x for x in lines if x.startswith(f"  - {title}")]
            assert ": hecho" in line, line
        assert len(done) == 4  # licence, electoral roll, tax, benefits
        assert len(engine.mail.messages() if engine.mail else []) == 2

        rows = await CitizenEmailLedger(engine.pool).of_request(reference)
        assert [(r.kind, r.status, r.attempts) for r in rows] == [
            ("information_requested", "sent", 1), ("finished", "sent", 1)]
        assert rows[0].key == f"information_requested:{TAX_STEP}:-:1"

    async def test_a_rejection_is_emailed_with_its_reason(
        self, engine: Engine, contact_catalog: Catalog
    ) -> None:
        """A caseworker rejects: the citizen gets a "not approved" email with the reason;
        the request ends, and its "finished" email follows, once each."""
        submissions = engine.submissions_for(contact_catalog, recorded_at_submit=True)
        submitted = await submissions.submit(
            "licensed-business", example("register-a-business"), idempotency_key="reject-1")
        reference = submitted.reference
        engine.started.append(reference)
        await progress_until(engine.submissions.handle(reference), lambda p: any(
            s.step_id == "approve_trading" and s.status == "waiting" for s in p.steps),
            within_s=20)
        rejected = await engine.decide(reference, "approve_trading", approve=False,
                                       reason="premises not inspected", subject="kim",
                                       roles=["licensing-officer"])
        assert rejected.status_code == 200, rejected.text
        await engine.result(reference)
        newest, decided = await mails(engine, 2)
        assert decided.subject.startswith(f"Your request {reference} was not approved")
        assert decided.to == example("register-a-business")["owner_email"]
        assert "The reason given:\n  premises not inspected" in decided.body()
        assert newest.subject.startswith(f"Your request {reference} is finished")
        rows = await CitizenEmailLedger(engine.pool).of_request(reference)
        assert sorted((r.key, r.status) for r in rows) == [
            ("decided:approve_trading", "sent"), ("finished", "sent")]


@pytest.fixture(scope="module")
def contact_catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The test catalog's licensed-business (a decision step), with a contact block."""
    folder = tmp_path_factory.mktemp("contact-catalog")
    shutil.copy(DEFAULT_CATALOG_DIR / "agencies.yaml", folder / "agencies.yaml")
    (folder / "services").mkdir()
    source = Path(__file__).parent / "catalog" / "services" / "licensed-business.yaml"
    (folder / "services" / "licensed-business.yaml").write_text(
        source.read_text() + "\ncontact:\n  email: submission.owner_email\n")
    return load_catalog(folder)
