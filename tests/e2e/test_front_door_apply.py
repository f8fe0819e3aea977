"""The citizen's pages from a service's start page to its confirmation, and answering an
agency's request for information — through the real pages on the real engine (dev server,
worker, PostgreSQL, reference agencies); a browser is played by an httpx client holding the
session cookie."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from html import unescape
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from temporalio.client import WorkflowExecutionStatus

from agency_kit.hardening import harden
from definitions.catalog import Catalog
from definitions.models import FieldSpec
from intake.access import ACCESS_CODE_HEADER
from intake.pages import apply, session
from intake.pages import router as pages
from intake.pages.deps import PageDeps
from intake.pages.forms import FORM_PATHS
from tests.e2e.conftest import REFERENCE_KEY, Engine, example
from tests.polling import eventually, progress_until

SERVICES = ("change-of-address", "register-a-business", "report-a-death")


def pages_app(engine: Engine, catalog: Catalog) -> FastAPI:
    """The page routers as ``intake.app.build_app`` wires them, on this engine's objects."""
    assert engine.access is not None
    deps = PageDeps(settings=engine.settings(reference_key=REFERENCE_KEY.decode()),
                    catalog=catalog, client=engine.client, submissions=engine.submissions,
                    verifier=engine.access.verifier, access=engine.access,
                    read_model=engine.read_model)
    app = FastAPI()
    harden(app, error_body=lambda code, message: {"code": code, "message": message},
           form_paths=FORM_PATHS)
    session.install(app, REFERENCE_KEY, https_only=False)
    app.include_router(pages.router(catalog))
    app.include_router(apply.router(deps))
    return app


@pytest.fixture
def front(engine: Engine, catalog: Catalog) -> httpx.ASGITransport:
    """The pages, served in this process (each browser below holds its own cookies)."""
    return httpx.ASGITransport(app=pages_app(engine, catalog))


def new_browser(front: httpx.ASGITransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=front, base_url="http://front.test")


@pytest_asyncio.fixture
async def browser(front: httpx.ASGITransport) -> AsyncIterator[httpx.AsyncClient]:
    async with new_browser(front) as client:
        yield client


def text_of(html: str) -> str:
    main = re.search(r"<main.*?</main>", html, re.S)
    body = re.sub(r"<[^>]+>", " ", main.group(0) if main else html)
    return re.sub(r"\s+", " ", unescape(body))


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert found is not None, f"no hidden field {name}"
    return unescape(found.group(1))


def form_of(fields: Mapping[str, FieldSpec], data: Mapping[str, Any],
            prefix: str = "") -> dict[str, list[str]]:
    """The fields a person fills in to send ``data`` (written here, not by the generator)."""
    out: dict[str, list[str]] = {}
    for name, spec in fields.items():
        value = data.get(name)
        key = f"{prefix}{name}"
        if value is None:
            continue
        if spec.type == "date":
            year, month, day = value.split("-")
            out |= {f"{key}.day": [day], f"{key}.month": [month], f"{key}.year": [year]}
        elif spec.type == "boolean":
            out[key] = ["true" if value else "false"]
        elif spec.type == "address":
            out |= {f"{key}.{part}": [text] for part, text in value.items()}
        elif spec.type == "object":
            out |= form_of(spec.fields or {}, value, f"{key}.")
        elif spec.type == "list" and spec.items is not None and spec.items.type == "enum":
            out[key] = list(value)
        elif spec.type == "list" and spec.items is not None:
            out[f"{key}.count"] = [str(len(value))]
            for index, item in enumerate(value):
                out |= form_of(spec.items.fields or {}, item, f"{key}[{index}].")
        else:
            out[key] = [str(value)]
    return out


async def csrf(browser: httpx.AsyncClient, service: str) -> str:
    answer = await browser.get(f"/apply/{service}/form")
    assert answer.status_code == 200
    return hidden(answer.text, "csrf_token")


async def request_rows(engine: Engine) -> int:
    return int(await engine.pool.fetchval("SELECT count(*) FROM requests"))


class TestStartPages:
    @pytest.mark.parametrize("service", SERVICES)
    async def test_each_service_lists_its_agencies_fields_and_form(
            self, browser: httpx.AsyncClient, catalog: Catalog, service: str) -> None:
        definition = catalog.service(service)
        start = await browser.get(f"/apply/{service}")
        assert start.status_code == 200
        shown = text_of(start.text)
        assert definition.title["en"] in shown
        for step in definition.steps:
            agency = getattr(step, "agency", None)
            if agency is not None:
                assert catalog.agencies[agency].name["en"] in shown
        for spec in definition.input.fields.values():
            assert spec.label is not None and spec.label["en"] in shown
        assert f'href="/apply/{service}/form"' in start.text
        form = await browser.get(f"/apply/{service}/form")
        assert form.status_code == 200
        for name in definition.input.fields:
            assert f'name="{name}' in form.text

    async def test_what_each_agency_receives_is_listed_per_agency(
            self, browser: httpx.AsyncClient) -> None:
        shown = text_of((await browser.get("/apply/change-of-address")).text)
        assert ("Tax Authority Tax authority They receive: Tax identification number, "
                "New address, Date you moved.") in shown
        assert "Benefits Agency only if it applies to you" in shown
        assert "for each of “Benefits you receive”: Programme, Case number." in shown

    async def test_in_spanish(self, browser: httpx.AsyncClient) -> None:
        start = await browser.get("/apply/change-of-address?lang=es")
        shown = text_of(start.text)
        assert "Agencia Tributaria" in shown and "Qué necesitará" in shown
        assert "solo si le corresponde" in shown

    async def test_an_unknown_service_is_a_404_page(self, browser: httpx.AsyncClient) -> None:
        for path in ("/apply/no-such-service", "/apply/no-such-service/form"):
            answer = await browser.get(path)
            assert answer.status_code == 404
            assert "Page not found" in answer.text


class TestApplying:
    async def test_errors_then_corrected_checked_submitted_and_followed(
            self, engine: Engine, browser: httpx.AsyncClient, catalog: Catalog,
            front: httpx.ASGITransport) -> None:
        service = "change-of-address"
        fields = catalog.service(service).input.fields
        token = await csrf(browser, service)
        data = example(service)
        bad = form_of(fields, {**data, "tax_id": "tx1", "email": None})
        bad |= {"csrf_token": [token], "moved_on.day": ["31"], "moved_on.month": ["2"]}
        refused = await browser.post(f"/apply/{service}/check", data=bad)
        assert refused.status_code == 422
        assert "<title>Error: " in refused.text
        shown = text_of(refused.text)
        assert "There is a problem" in shown
        for message, target in [
                ("“Date you moved” must be a real date", "f-moved_on"),
                ("“Tax identification number” is not in the expected format", "f-tax_id"),
                ("Enter “Email for updates”.", "f-email")]:
            assert message in shown
            assert f'href="#{target}"' in refused.text
        assert 'aria-invalid="true"' in refused.text and "usa-input--error" in refused.text
        assert 'aria-describedby="f-tax_id-hint f-tax_id-error"' in refused.text
        assert 'value="Alex Example"' in refused.text  # what was typed stays
        assert await request_rows(engine) == 0  # nothing started

        good = form_of(fields, data) | {"csrf_token": [token]}
        checked = await browser.post(f"/apply/{service}/check", data=good)
        assert checked.status_code == 200, text_of(checked.text)
        shown = text_of(checked.text)
        assert "Check your answers" in shown and "Alex Example" in shown
        assert "Child benefit" in shown and "12 Orchard Lane" in shown
        draft = hidden(checked.text, "draft")
        assert "Alex" not in draft and "TX12345678" not in draft
        assert await request_rows(engine) == 0

        sent = await browser.post(f"/apply/{service}/submit",
                                  data={"csrf_token": token, "draft": draft})
        assert sent.status_code == 303
        location = sent.headers["location"]
        reference = location.rsplit("/", 1)[1]
        engine.started.append(reference)
        assert location == f"/apply/{service}/confirmation/{reference}"
        again = await browser.post(f"/apply/{service}/submit",
                                   data={"csrf_token": token, "draft": draft})
        assert again.status_code == 303 and again.headers["location"] == location

        confirmation = await browser.get(location)
        assert confirmation.status_code == 200
        code = re.search(r'data-testid="access-code">([^<]+)<', confirmation.text)
        assert code is not None
        assert reference in confirmation.text and f'href="/track/{reference}"' in \
            confirmation.text
        assert "Electoral Registration Office" in text_of(confirmation.text)

        status = await engine.stranger().get(f"/requests/{reference}",
                                             headers={ACCESS_CODE_HEADER: code.group(1)})
        assert status.status_code == 200
        assert status.json()["record"]["service"] == service
        description = await engine.client.get_workflow_handle(reference).describe()
        assert description.status in (WorkflowExecutionStatus.RUNNING,
                                      WorkflowExecutionStatus.COMPLETED)
        assert await request_rows(engine) == 1  # the double submit made no second request
        # a stranger's browser gets the same 404 as a missing request
        async with new_browser(front) as stranger:
            assert (await stranger.get(location)).status_code == 404

    async def test_add_another_and_change_links_rerender_the_form(
            self, browser: httpx.AsyncClient, catalog: Catalog) -> None:
        service = "change-of-address"
        fields = catalog.service(service).input.fields
        token = await csrf(browser, service)
        data = example(service)
        form = form_of(fields, data) | {"csrf_token": [token]}
        added = await browser.post(f"/apply/{service}/form",
                                   data=form | {"_action": ["add:benefits"]})
        assert added.status_code == 200
        assert added.text.count('class="usa-fieldset nwd-list-item"') == 3
        assert 'name="benefits[2].case_number"' in added.text
        removed = await browser.post(f"/apply/{service}/form",
                                     data=form | {"_action": ["remove:benefits[0]"]})
        assert removed.text.count('class="usa-fieldset nwd-list-item"') == 1
        assert "HS-7781" in removed.text and "CB-20931" not in removed.text

        checked = await browser.post(f"/apply/{service}/check", data=form)
        change = await browser.post(f"/apply/{service}/form", data={
            "csrf_token": token, "draft": hidden(checked.text, "draft"),
            "_change": "new_address"})
        assert change.status_code == 200
        assert re.search(r'id="f-new_address-line1"[^>]*autofocus', change.text)
        assert 'value="12 Orchard Lane"' in change.text

    async def test_a_forged_or_expired_draft_submits_nothing(
            self, engine: Engine, browser: httpx.AsyncClient) -> None:
        token = await csrf(browser, "change-of-address")
        for draft in ("", "not-a-draft", "gAAAAABforged" + "A" * 80):
            answer = await browser.post("/apply/change-of-address/submit",
                                        data={"csrf_token": token, "draft": draft})
            assert answer.status_code == 400
            assert "Nothing was sent" in text_of(answer.text)
        # a draft of another service is refused too
        checked = await browser.post("/apply/register-a-business/check", data=form_of(
            engine.submissions.catalog.service("register-a-business").input.fields,
            example("register-a-business")) | {"csrf_token": [token]})
        assert checked.status_code == 200
        other = await browser.post("/apply/change-of-address/submit", data={
            "csrf_token": token, "draft": hidden(checked.text, "draft")})
        assert other.status_code == 400
        assert await request_rows(engine) == 0

    async def test_without_the_csrf_token_nothing_is_started(
            self, engine: Engine, browser: httpx.AsyncClient, catalog: Catalog) -> None:
        service = "register-a-business"
        token = await csrf(browser, service)
        form = form_of(catalog.service(service).input.fields, example(service))
        checked = await browser.post(f"/apply/{service}/check",
                                     data=form | {"csrf_token": [token]})
        draft = hidden(checked.text, "draft")
        for sent in ({"draft": draft}, {"draft": draft, "csrf_token": "wrong"}):
            answer = await browser.post(f"/apply/{service}/submit", data=sent)
            assert answer.status_code == 403
            assert "This form has expired" in answer.text
        refused = await browser.post(f"/apply/{service}/check", data=form)
        assert refused.status_code == 403
        assert await request_rows(engine) == 0


class TestAnsweringInformation:
    async def test_the_page_answers_through_the_update_and_strangers_get_404(
            self, engine: Engine, browser: httpx.AsyncClient, catalog: Catalog,
            front: httpx.ASGITransport) -> None:
        await engine.agencies.set_behaviour("tax-authority", {"needs_information": {
            "fields": {"proof_of_address": {"type": "text", "min_length": 3,
                                            "label": {"en": "Proof of address"}},
                       "months_at_address": {"type": "integer"}},
            "message": {"en": "Send proof of your new address", "es": "Envíe un justificante"},
        }})
        service = "change-of-address"
        token = await csrf(browser, service)
        checked = await browser.post(f"/apply/{service}/check", data=form_of(
            catalog.service(service).input.fields, example(service)) | {"csrf_token": [token]})
        sent = await browser.post(f"/apply/{service}/submit",
                                  data={"csrf_token": token, "draft": hidden(checked.text,
                                                                             "draft")})
        reference = sent.headers["location"].rsplit("/", 1)[1]
        engine.started.append(reference)
        handle = engine.submissions.handle(reference)
        await progress_until(handle, lambda p: any(
            s.step_id == "update_tax_address" and s.status == "waiting" for s in p.steps),
            within_s=30)
        path = f"/track/{reference}/information/update_tax_address"
        other_step = await browser.get(f"/track/{reference}/information/update_licence")
        assert other_step.status_code == 409 and "Nothing to answer" in other_step.text

        async with new_browser(front) as stranger:
            assert (await stranger.get(path)).status_code == 404
            stranger_token = await csrf(stranger, service)
            posted = await stranger.post(path, data={"csrf_token": stranger_token,
                                                     "proof_of_address": "bill",
                                                     "months_at_address": "2"})
            assert posted.status_code == 404

        page = await browser.get(path)
        assert page.status_code == 200
        shown = text_of(page.text)
        assert "Send proof of your new address" in shown and "Tax Authority" in shown
        assert 'name="proof_of_address"' in page.text

        bad = await browser.post(path, data={"csrf_token": token, "proof_of_address": "x",
                                             "months_at_address": "many"})
        assert bad.status_code == 422
        assert "“Proof of address” must be at least 3 characters long." in text_of(bad.text)
        no_csrf = await browser.post(path, data={"proof_of_address": "utility bill",
                                                 "months_at_address": "2"})
        assert no_csrf.status_code == 403
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

        good = await browser.post(path, data={"csrf_token": token,
                                              "proof_of_address": "utility bill",
                                              "months_at_address": "2"})
        assert good.status_code == 303 and good.headers["location"] == f"/track/{reference}"
        result = await engine.result(reference)
        assert result.status == "completed"

        async def answered_once() -> None:
            events = await engine.pool.fetch(
                "SELECT step_id FROM request_events WHERE reference = $1"
                " AND kind LIKE 'agency_information%'", reference)
            assert [e["step_id"] for e in events] == ["update_tax_address"]

        await eventually(answered_once, within_s=10)
        after = await browser.post(path, data={"csrf_token": token,
                                               "proof_of_address": "utility bill",
                                               "months_at_address": "2"})
        assert after.status_code in (404, 409)

