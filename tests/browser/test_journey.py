"""A citizen's whole journey in a real browser, on the real stack: pick a service, make a
mistake, correct it, check the answers, send, get the reference, and watch every agency
reach its final state on the status page — in English on a desktop, in Spanish and Arabic
on a phone; and a stranger who has only the reference sees nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import DESKTOP, PHONE, FrontDoor, look, new_page, no_horizontal_scroll

EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "examples" / "change-of-address.json").read_text())
FINAL = {"completed", "failed", "cancelled", "skipped", "compensated"}


def choose(page: Page, name: str, value: str) -> None:
    """Pick a radio button the way a person does: by its label (USWDS draws its own box
    and hides the input itself)."""
    radio = page.locator(f'[name="{name}"][value="{value}"]')
    page.locator(f'label[for="{radio.get_attribute("id")}"]').click()
    expect(radio).to_be_checked()


def fill_change_of_address(page: Page, data: dict[str, Any]) -> None:
    """Type the example's answers into the generated form, field by field, by their names."""
    def date(name: str, iso: str) -> None:
        year, month, day = iso.split("-")
        page.fill(f'[name="{name}.day"]', day)
        page.fill(f'[name="{name}.month"]', month)
        page.fill(f'[name="{name}.year"]', year)

    page.fill('[name="full_name"]', data["full_name"])
    date("date_of_birth", data["date_of_birth"])
    date("moved_on", data["moved_on"])
    for which in ("new_address", "previous_address"):
        for part, text in data[which].items():
            locator = page.locator(f'[name="{which}.{part}"]')
            if locator.evaluate("e => e.tagName") == "SELECT":
                locator.select_option(text)
            else:
                locator.fill(text)
    choose(page, "has_driving_licence", "true")
    page.fill('[name="licence_number"]', data["licence_number"])
    choose(page, "registered_to_vote", "true")
    page.fill('[name="tax_id"]', data["tax_id"])
    benefit = data["benefits"][0]
    programme = page.locator('[name="benefits[0].programme"]')
    if programme.first.evaluate("e => e.tagName") == "SELECT":
        programme.select_option(benefit["programme"])
    else:
        choose(page, "benefits[0].programme", benefit["programme"])
    page.fill('[name="benefits[0].case_number"]', benefit["case_number"])
    page.fill('[name="email"]', data["email"])
    choose(page, "preferred_language", data["preferred_language"])


def continue_form(page: Page) -> None:
    page.locator("form .usa-button[type=submit]").last.click()


def journey(page: Page, url: str, tag: str, shot: str, *, signed_in: bool = False) -> str:
    """From the catalogue to a finished request; the reference."""
    page.goto(f"{url}/?lang={tag}")
    page.locator('a[href="/apply/change-of-address"]').click()
    expect(page.locator("html")).to_have_attribute("lang", tag)
    look(page, f"{shot}-1-start")
    page.locator('a[href="/apply/change-of-address/form"]').first.click()
    # a first try with a mistake: the tax number in the wrong form, the name left out
    fill_change_of_address(page, {**EXAMPLE, "tax_id": "nope", "full_name": ""})
    continue_form(page)
    summary = page.locator(".nwd-error-summary")
    expect(summary).to_be_visible()
    if tag == "en":
        expect(page).to_have_title(re.compile(r"^Error: "))
    links = summary.locator("a")
    assert links.count() == 2, summary.inner_text()
    hrefs = {links.nth(i).get_attribute("href") for i in range(links.count())}
    assert hrefs == {"#f-full_name", "#f-tax_id"}, hrefs
    expect(page.locator("#f-tax_id")).to_have_attribute("aria-invalid", "true")
    look(page, f"{shot}-2-errors")
    # the summary's link takes the citizen to the field
    summary.locator('a[href="#f-tax_id"]').click()
    expect(page.locator("#f-tax_id")).to_be_focused()
    page.fill("#f-tax_id", EXAMPLE["tax_id"])
    page.fill("#f-full_name", EXAMPLE["full_name"])
    continue_form(page)
    expect(page.locator(".nwd-error-summary")).to_have_count(0)
    assert EXAMPLE["tax_id"] in page.inner_text("main")
    look(page, f"{shot}-3-check")
    page.locator("form .usa-button--big[type=submit]").click()
    reference = page.locator('[data-testid="reference"]').inner_text().strip()
    assert reference
    if signed_in:  # the request is the signed-in citizen's: no access code to keep
        expect(page.locator('[data-testid="access-code"]')).to_have_count(0)
    else:
        assert len(page.locator('[data-testid="access-code"]').inner_text().strip()) >= 20
    look(page, f"{shot}-4-confirmation")
    page.locator(f'a[href="/track/{reference}"]').click()
    # the status page follows the request live until every agency is done
    steps = page.locator(".usa-process-list__item[data-status]")
    expect(steps.first).to_be_visible()
    for _ in range(60):
        statuses = {steps.nth(i).get_attribute("data-status") for i in range(steps.count())}
        if statuses and statuses <= FINAL:
            break
        page.wait_for_timeout(1000)
        if page.evaluate("typeof EventSource") == "undefined":
            page.reload()
    assert statuses <= FINAL, statuses
    assert "completed" in statuses
    look(page, f"{shot}-5-status")
    return reference


class TestJourney:
    def test_english_on_a_desktop(self, browser: Browser, front_door: FrontDoor) -> None:
        context, page = new_page(browser, viewport=DESKTOP)
        try:
            reference = journey(page, front_door.url, "en", "journey-en")
            assert page.locator(".nwd-agency").count() >= 3
            assert reference in page.inner_text("main")
        finally:
            context.close()

    @pytest.mark.parametrize(("tag", "direction"), [("es", "ltr"), ("ar", "rtl")])
    def test_on_a_phone_in(self, browser: Browser, front_door: FrontDoor, tag: str,
                           direction: str) -> None:
        context, page = new_page(browser, viewport=PHONE)
        try:
            journey(page, front_door.url, tag, f"journey-{tag}-phone")
            expect(page.locator("html")).to_have_attribute("dir", direction)
            assert no_horizontal_scroll(page)
        finally:
            context.close()

    def test_a_stranger_with_the_reference_sees_nothing(self, browser: Browser,
                                                        front_door: FrontDoor) -> None:
        """Another browser (no session, no code) gets the page of a request that does not
        exist, and the same for a made-up reference."""
        context, page = new_page(browser)
        try:
            reference = journey(page, front_door.url, "en", "journey-owner")
        finally:
            context.close()
        context, stranger = new_page(browser)
        try:
            answer = stranger.goto(f"{front_door.url}/track/{reference}")
            assert answer is not None and answer.status == 404
            assert reference not in stranger.inner_text("main")
            made_up = stranger.goto(f"{front_door.url}/track/CHANGE-OF-ADDRESS-AAAA-BBBB-CCCC")
            assert made_up is not None and made_up.status == 404
            assert stranger.inner_text("main") .replace("CHANGE-OF-ADDRESS-AAAA-BBBB-CCCC", "") \
                == stranger.inner_text("main").replace("CHANGE-OF-ADDRESS-AAAA-BBBB-CCCC", "")
            look(stranger, "stranger-404")
        finally:
            context.close()


def sign_in(page: Page, url: str, subject: str) -> None:
    """Sign in through the embedded OpenID Connect provider's own form (a real issuer: the
    authorization-code flow with PKCE, the token verified by the intake)."""
    page.goto(f"{url}/")
    page.locator('a[href^="/sign-in"]').first.click()
    page.fill("input", subject)
    page.locator("button").first.click()
    expect(page.locator("form[action='/sign-out']")).to_have_count(1)


class TestSignedIn:
    def test_a_citizen_finds_their_requests_and_only_theirs(self, browser: Browser,
                                                            front_door: FrontDoor) -> None:
        context, page = new_page(browser)
        try:
            sign_in(page, front_door.url, "citizen-ada")
            reference = journey(page, front_door.url, "en", "journey-signed-in",
                                signed_in=True)
            page.goto(f"{front_door.url}/my-requests")
            expect(page.locator("main")).to_contain_text(reference)
            look(page, "my-requests")
            page.locator("form[action='/sign-out'] button").click()
            answer = page.goto(f"{front_door.url}/track/{reference}")
            assert answer is not None and answer.status == 404  # signed out: a stranger
        finally:
            context.close()
        context, other = new_page(browser)
        try:
            sign_in(other, front_door.url, "citizen-bob")
            other.goto(f"{front_door.url}/my-requests")
            assert reference not in other.inner_text("main")
            answer = other.goto(f"{front_door.url}/track/{reference}")
            assert answer is not None and answer.status == 404
        finally:
            context.close()
