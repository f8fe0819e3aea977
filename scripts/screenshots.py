"""Retake the Temporal UI screenshots of docs/operations.md from a running demo stack.

    apt-get install -y chromium && .venv/bin/pip install playwright
    .venv/bin/nwd up
    .venv/bin/nwd submit change-of-address examples/change-of-address.json
    .venv/bin/python scripts/screenshots.py [--reference REF] [--out docs/images]

Writes ``ui-list.png`` (the requests filtered by a search-attribute query) and
``ui-history.png`` (one request's event history, payloads decoded by the codec server).

The browser is headless Chromium from Debian's ``chromium`` package, driven by Playwright (its
own browser download is not needed). The demo UI has no sign-on, so it sends no token to the
codec server; like an operator's authenticated browser, this script adds
``Authorization: Bearer <NWD_CODEC_TOKEN>`` to the UI's codec calls (token from the stack's
secrets, or the environment).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from urllib.parse import quote

from runtime.process import exit_now

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LIST_QUERY = 'CitizenService = "change-of-address" AND RequestStatus != "running"'
CHROMIUM = "/usr/bin/chromium"


def stack_facts() -> tuple[str, str, str, str]:
    """(UI URL, namespace, intake URL, codec token) of the stack this shell talks to."""
    from nwd.stack import Stack

    stack = Stack.from_env()
    settings = stack.client_settings()
    token = stack.codec_token()
    return stack.temporal_ui_url, settings.temporal_namespace, settings.intake_url, token


async def latest_reference(namespace: str) -> str:
    from nwd.stack import Stack
    from runtime.temporal import connect

    client = await connect(Stack.from_env().client_settings())
    async for execution in client.list_workflows(LIST_QUERY, limit=1):
        return execution.id
    raise SystemExit("no finished change-of-address request: submit one first "
                     "(nwd submit change-of-address examples/change-of-address.json)")


async def shoot(ui_url: str, namespace: str, intake_url: str, token: str, reference: str,
                out: Path) -> None:
    from playwright.async_api import Route, async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--headless", "--disable-gpu"])
        page = await browser.new_page(viewport={"width": 1440, "height": 900})

        async def with_token(route: Route) -> None:
            origin = ui_url.rstrip("/")
            if route.request.method == "OPTIONS":  # preflight: answered for the UI's origin
                await route.fulfill(status=204, headers={
                    "access-control-allow-origin": origin,
                    "access-control-allow-methods": "POST, OPTIONS",
                    "access-control-allow-headers": "authorization, content-type, x-namespace",
                })
                return
            headers = {**route.request.headers, "authorization": f"Bearer {token}"}
            response = await route.fetch(headers=headers)
            await route.fulfill(response=response, headers={
                **response.headers,
                "access-control-allow-origin": origin,
            })

        await page.route(f"{intake_url}/codec/**", with_token)

        query = quote(LIST_QUERY)
        await page.goto(f"{ui_url}/namespaces/{namespace}/workflows?query={query}",
                        wait_until="networkidle")
        await page.wait_for_timeout(1500)
        await page.screenshot(path=str(out / "ui-list.png"))

        await page.set_viewport_size({"width": 1440, "height": 1500})
        await page.goto(f"{ui_url}/namespaces/{namespace}/workflows/{reference}",
                        wait_until="networkidle")
        await page.get_by_text("Event History", exact=False).first.click()
        await page.wait_for_load_state("networkidle")
        await page.wait_for_timeout(2500)
        await page.screenshot(path=str(out / "ui-history.png"))
        await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", help="the request to show (default: the latest finished "
                                            "change-of-address request)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    ui_url, namespace, intake_url, token = stack_facts()
    args.out.mkdir(parents=True, exist_ok=True)
    reference = args.reference or asyncio.run(latest_reference(namespace))
    asyncio.run(shoot(ui_url, namespace, intake_url, token, reference, args.out))
    print(f"wrote {args.out / 'ui-list.png'} and {args.out / 'ui-history.png'} ({reference})")
    exit_now(0)


if __name__ == "__main__":
    main()
