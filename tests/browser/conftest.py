"""Browser tests: Debian's chromium, driven by Playwright, against the whole embedded stack.

The stack is the one ``nwd up`` runs — Temporal dev server, PostgreSQL, the OIDC provider,
the reference agencies, the worker, the intake (and its pages) — on free ports of its own, as
child processes (:func:`tests.conftest.quiet_stack`). Nothing is mocked: a page a test opens
is served by the real intake, a request it submits runs on the real worker.

The browser is Debian's ``chromium`` (``CHROMIUM``, default ``/usr/bin/chromium``, which
``make test`` installs with apt-get when it can), launched through Playwright's
``executable_path``: Playwright never downloads a browser here. Each page a test checks runs
axe-core (``axe-playwright-python``) for WCAG 2.2 A/AA and must have no serious or critical
violation; its screenshot is kept in ``test-artifacts/screenshots/`` (:func:`look`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from nwd.stack import Stack
from tests.conftest import quiet_stack
from tests.tiers import mark_folder

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
NARROW = {"width": 320, "height": 640}
"""WCAG 1.4.10 reflow: content must work at 320 CSS px without horizontal scrolling."""
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
BLOCKING = {"serious", "critical"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests drive the whole stack: they are e2e (not in `make test-fast`)."""
    mark_folder(items, Path(__file__).parent, pytest.mark.e2e)


@dataclass(frozen=True)
class FrontDoor:
    stack: Stack
    url: str
    """The intake's base URL, e.g. ``http://127.0.0.1:PORT``."""


@pytest.fixture(scope="session")
def front_door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontDoor]:
    stack = quiet_stack(tmp_path_factory.mktemp("browser-stack") / "state", start_timeout=60)
    try:
        stack.up()
        yield FrontDoor(stack=stack, url=str(stack.settings.intake_url).rstrip("/"))
    finally:
        stack.down()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread while
    it lives, and an asyncio test of the same pytest process (xdist runs other files after
    this one) could not start its own beside it."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
                    "(`apt-get install chromium`, which `make test` runs as root), or "
                    "CHROMIUM=/path/to/chromium")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
    try:
        yield browser
    finally:
        browser.close()


def new_page(browser: Browser, *, viewport: dict[str, int] = DESKTOP,
             locale: str = "en-US", javascript: bool = True) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=viewport, locale=locale,  # type: ignore[arg-type]
                                  java_script_enabled=javascript)
    page = context.new_page()
    page.set_default_timeout(20_000)
    return context, page


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context, page = new_page(browser)
    try:
        yield page
    finally:
        context.close()


_AXE = Axe()


def accessibility_problems(page: Page) -> list[str]:
    """axe-core's serious and critical WCAG 2.2 A/AA violations on ``page``, one line each."""
    results = _AXE.run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS},
                                      "resultTypes": ["violations"]})
    problems = []
    for violation in results.response["violations"]:
        if violation.get("impact") in BLOCKING:
            targets = [" ".join(map(str, node.get("target", []))) for node in violation["nodes"]]
            problems.append(f"{violation['id']} ({violation['impact']}): {violation['help']} "
                            f"at {targets[:5]}")
    return problems


def look(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Check ``page`` with axe-core (no serious/critical violation) and keep its screenshot
    as ``test-artifacts/screenshots/<name>.png``; the path."""
    problems = accessibility_problems(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^a-z0-9_.-]+', '-', name.lower())}.png"
    page.screenshot(path=str(path), full_page=full_page)
    assert not problems, f"{page.url}: accessibility violations:\n" + "\n".join(problems)
    return path


def no_horizontal_scroll(page: Page) -> bool:
    """Whether the page fits its viewport's width (WCAG 1.4.10 reflow)."""
    return bool(page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1"))
