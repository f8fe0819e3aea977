"""The catalogue in a real browser: every language, a phone, the keyboard, axe-core."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import (
    NARROW,
    PHONE,
    FrontDoor,
    look,
    new_page,
    no_horizontal_scroll,
)


class TestCatalogue:
    @pytest.mark.parametrize(("tag", "direction"), [
        ("en", "ltr"), ("es", "ltr"), ("ar", "rtl"), ("zh-Hans", "ltr")])
    def test_every_language_renders_accessibly(self, front_door: FrontDoor, page: Page,
                                               tag: str, direction: str) -> None:
        """?lang= sets the page's language and direction; axe finds nothing serious."""
        page.goto(f"{front_door.url}/?lang={tag}")
        html = page.locator("html")
        expect(html).to_have_attribute("lang", tag)
        expect(html).to_have_attribute("dir", direction)
        assert page.locator(".usa-card").count() >= 3
        assert no_horizontal_scroll(page), "the page is wider than its viewport"
        look(page, f"catalogue-{tag}")

    def test_the_browser_language_is_negotiated(self, browser: Browser,
                                                front_door: FrontDoor) -> None:
        """A browser set to Mexican Spanish gets the Spanish page, without asking."""
        context, page = new_page(browser, locale="es-MX")
        try:
            page.goto(front_door.url + "/")
            expect(page.locator("html")).to_have_attribute("lang", "es")
        finally:
            context.close()

    def test_the_drop_down_changes_and_remembers_the_language(
            self, front_door: FrontDoor, page: Page) -> None:
        """Choosing Arabic in the drop-down (no JavaScript needed) sticks for later pages."""
        page.goto(front_door.url + "/")
        page.select_option("#nwd-language-select", "ar")
        page.locator(".nwd-language button[type=submit]").click()
        expect(page.locator("html")).to_have_attribute("dir", "rtl")
        page.goto(front_door.url + "/?q=")
        expect(page.locator("html")).to_have_attribute("lang", "ar")

    def test_search_narrows_the_services(self, front_door: FrontDoor, page: Page) -> None:
        page.goto(front_door.url + "/")
        page.fill("#nwd-search", "business")
        page.keyboard.press("Enter")
        expect(page.locator(".usa-card")).to_have_count(1)
        expect(page.locator(".usa-card h2")).to_contain_text("business")
        look(page, "catalogue-search")

    @pytest.mark.parametrize("viewport", [PHONE, NARROW], ids=["phone", "320px"])
    def test_a_phone_sees_the_whole_page(self, browser: Browser, front_door: FrontDoor,
                                         viewport: dict[str, int]) -> None:
        """At 390 x 844 and at 320 px wide nothing scrolls sideways (WCAG 1.4.10)."""
        context, page = new_page(browser, viewport=viewport)
        try:
            page.goto(front_door.url + "/")
            assert no_horizontal_scroll(page)
            look(page, f"catalogue-{viewport['width']}px")
        finally:
            context.close()

    def test_keyboard_only_reaches_a_service(self, front_door: FrontDoor, page: Page) -> None:
        """The skip link comes first and focus is visible; Enter on a service opens it."""
        page.goto(front_door.url + "/")
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.className")
        assert "usa-skipnav" in focused
        page.keyboard.press("Enter")
        assert page.evaluate("location.hash") == "#main-content"
        for _ in range(30):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.closest('.usa-card') !== null"):
                break
        else:
            pytest.fail("no service card link is reachable with Tab")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none", "the focused link shows no focus indicator"
