"""The citizen's language through the JSON API: any language the interface speaks is taken,
stored and told to every agency; anything else is a 422 that starts nothing."""

from __future__ import annotations

import json

import pytest

from intake.schemas import LANGUAGES
from tests.e2e.conftest import Engine, example

pytestmark = pytest.mark.e2e

SERVICE = "change-of-address"


class TestLanguageOfARequest:
    async def test_every_agency_is_told_the_language(self, engine: Engine) -> None:
        """A request in Chinese (Simplified) reaches each agency with ``zh-Hans``, as sent;
        the read model keeps it."""
        assert {"en", "es", "ar", "zh-Hans"} <= set(LANGUAGES)
        response = await engine.intake.post("/requests", json={
            "service": SERVICE, "submission": example(SERVICE), "language": "zh-Hans"})
        assert response.status_code == 202, response.text
        reference = response.json()["reference"]
        engine.started.append(reference)
        assert (await engine.result(reference)).status == "completed"

        tap = engine.agencies.wiretap
        assert tap is not None
        sent = [json.loads(call.body) for call in tap.calls
                if call.method == "POST" and reference.encode() in call.body]
        assert len(sent) >= 3  # licence, electoral roll, tax (and each benefit)
        assert {body["language"] for body in sent} == {"zh-Hans"}
        for agency in ("driver-licensing", "electoral-registration", "tax-authority"):
            records = await engine.agencies.records(agency, reference=reference)
            assert [r["language"] for r in records] == ["zh-Hans"], agency
        async with engine.pool.acquire() as conn:
            stored = await conn.fetchval(
                "SELECT language FROM requests WHERE reference = $1", reference)
        assert stored == "zh-Hans"

    @pytest.mark.parametrize("language", ["zh_Hans", "zh-hans", "AR", "fr", "", "en-US"])
    async def test_a_language_the_interface_does_not_speak_is_refused(
        self, engine: Engine, language: str
    ) -> None:
        """Not a supported tag as written (Babel's ``zh_Hans``, another case, one without a
        catalog): 422 at ``language`` naming the tags to use, and no request is started."""
        async with engine.pool.acquire() as conn:
            before = await conn.fetchval("SELECT count(*) FROM requests")
        response = await engine.intake.post("/requests", json={
            "service": SERVICE, "submission": example(SERVICE), "language": language})
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["loc"] == ["language"]
        assert f"{language!r} is not a language this service speaks" in error["msg"]
        assert "zh-Hans" in error["msg"]
        async with engine.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM requests") == before
        workflows = [w.id async for w in engine.client.list_workflows(
            f'TaskQueue="{engine.task_queue}"')]
        assert workflows == []
