"""The fault proxy itself: each action does what it says, against a tiny real HTTP server.

If the proxy passed everything through, the fault tests would still pass and prove nothing;
these tests show each action reaches the client as the fault it names (and reach the
upstream, or not, as ``forward`` says).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from tests.faults.proxy import FaultProxy, Rule

BODY = b'{"status": "completed", "agency_reference": "X-1", "padding": "' + b"x" * 200 + b'"}'


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[tuple[str, list[str]]]:
    """An aiohttp server answering every POST with :data:`BODY`; the paths it received."""
    received: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        received.append(request.path)
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def proxy(upstream: tuple[str, list[str]]) -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy.start(upstream[0])
    try:
        yield proxy
    finally:
        await proxy.stop()


async def post(proxy: FaultProxy, path: str, timeout_s: float = 2.0) -> bytes:
    async with aiohttp.ClientSession() as http, http.post(
        f"{proxy.url}{path}", data=b"{}", timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as answer:
        return await answer.read()


class TestFaultProxy:
    async def test_pass_and_rewrite(
        self, proxy: FaultProxy, upstream: tuple[str, list[str]]
    ) -> None:
        url, received = upstream
        assert proxy.rewrite({"A": f"{url}/agencies/a", "B": "http://elsewhere:1/x"}) == {
            "A": f"{proxy.url}/agencies/a", "B": "http://elsewhere:1/x"}
        assert await post(proxy, "/one") == BODY
        assert received == ["/one"] and proxy.seen == [("POST /one HTTP/1.1", "pass")]

    @pytest.mark.parametrize(("rule", "error"), [
        (Rule("/x", "reset"), aiohttp.ClientOSError),
        (Rule("/x", "reset", after_bytes=40), aiohttp.ClientOSError),  # ECONNRESET
        (Rule("/x", "truncate", after_bytes=len(BODY)), aiohttp.ClientPayloadError),
    ])
    async def test_reset_and_truncate_after_the_upstream_answered(
        self, proxy: FaultProxy, upstream: tuple[str, list[str]], rule: Rule,
        error: type[Exception],
    ) -> None:
        proxy.add(rule)
        with pytest.raises(error):
            await post(proxy, "/x")
        assert upstream[1] == ["/x"]  # the upstream did the work
        assert await post(proxy, "/x") == BODY  # once: the next request passes
        assert proxy.applied(rule.action, "/x") == 1

    async def test_not_forwarded(self, proxy: FaultProxy, upstream: tuple[str, list[str]]) -> None:
        proxy.add(Rule("/x", "reset", forward=False))
        proxy.add(Rule("/y", "drop", forward=False))
        with pytest.raises(aiohttp.ClientError):
            await post(proxy, "/x")
        with pytest.raises(asyncio.TimeoutError):
            await post(proxy, "/y", timeout_s=0.5)
        assert upstream[1] == []

    async def test_drop_and_delay(
        self, proxy: FaultProxy, upstream: tuple[str, list[str]]
    ) -> None:
        proxy.add(Rule("/drop", "drop"))
        proxy.add(Rule("/slow", "delay", delay_s=0.6))
        with pytest.raises(asyncio.TimeoutError):
            await post(proxy, "/drop", timeout_s=0.5)
        started = time.monotonic()
        assert await post(proxy, "/slow") == BODY
        assert time.monotonic() - started >= 0.6
        assert upstream[1] == ["/drop", "/slow"]
