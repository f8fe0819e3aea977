"""CPU per agency call of the HTTP client, by calls in flight (httpx as configured; aiohttp too).

The engine and the baseline share ``worker.agency_http_session`` (aiohttp, chosen by this
measurement); encode/httpx#3215 makes httpx's
pool scan every connection per request, so CPU per call grows with the calls in flight. This
measures it in the harness process against the reference agencies (real HTTP, same latency):
``waves`` waves of ``in_flight`` concurrent POSTs, process CPU time ÷ calls.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

IN_FLIGHT = (10, 50, 200)


def _body(i: int) -> bytes:
    return json.dumps({"reference": f"HTTPCOST-{i}", "step": "call_1", "item": None,
                       "language": "en", "input": {"label": "x"}, "callback_url": None}).encode()


def _headers(i: int) -> dict[str, str]:
    return {"Content-Type": "application/json", "Idempotency-Key": f"httpcost-{time.time()}-{i}",
            "X-NWD-Reference": f"HTTPCOST-{i}"}


async def _measure(call: Callable[[int], Awaitable[None]], in_flight: int, waves: int) -> float:
    await asyncio.gather(*(call(i) for i in range(in_flight)))  # warm the pool
    cpu = time.process_time()
    for wave in range(waves):
        await asyncio.gather(*(call(wave * in_flight + i) for i in range(in_flight)))
    return (time.process_time() - cpu) / (in_flight * waves) * 1000


async def client_cpu_per_call(agencies_url: str, waves: int = 4) -> dict[str, Any]:
    """ms of CPU per call: ``{"httpx": {"10": ms, ...}, "aiohttp": {...}}`` (aiohttp if present)."""
    from worker import HTTP_MAX_CONNECTIONS

    limits = httpx.Limits(max_connections=HTTP_MAX_CONNECTIONS,
                          max_keepalive_connections=HTTP_MAX_CONNECTIONS // 2)

    url = f"{agencies_url}/agencies/bench-1/operations/record"
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as http:
        async def httpx_call(i: int) -> None:
            try:
                response = await http.post(url, content=_body(i), headers=_headers(i))
            except httpx.TransportError:  # a kept-alive connection the server just closed
                response = await http.post(url, content=_body(i), headers=_headers(i))
            response.raise_for_status()

        out["httpx"] = {str(n): await _measure(httpx_call, n, waves) for n in IN_FLIGHT}
    try:
        import aiohttp  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return out
    connector = aiohttp.TCPConnector(limit=HTTP_MAX_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def aiohttp_call(i: int) -> None:
            for attempt in (1, 2):
                try:
                    async with session.post(url, data=_body(i), headers=_headers(i)) as response:
                        response.raise_for_status()
                        await response.read()
                        return
                except aiohttp.ClientConnectionError:
                    if attempt == 2:
                        raise

        out["aiohttp"] = {str(n): await _measure(aiohttp_call, n, waves) for n in IN_FLIGHT}
    return out
