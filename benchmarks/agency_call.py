"""The benchmark's agency call, shared by the hand-written Temporal baseline and the DBOS app.

One POST as the engine makes it (same URL, contract body, headers and idempotency key), the
models around it, and the agency client's settings. It imports neither Temporal nor the
engine's worker, so the DBOS process (:mod:`benchmarks.dbos_app`) loads only what a DBOS
application would: its peak RSS is then comparable with the Temporal workers'. The contract's
header names and key format come from the agency kit, as any agency client's would (the kit
needs only pydantic and the standard library).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from pydantic import BaseModel

from agency_kit.contract import IDEMPOTENCY_HEADER, REFERENCE_HEADER, idempotency_key

HTTP_MAX_CONNECTIONS = 200
"""As ``worker.HTTP_MAX_CONNECTIONS`` (a unit test keeps the two equal)."""
HTTP_TIMEOUT_S = 30.0
"""As ``worker.agency_http_session``'s session timeout and every call's own timeout."""


class BaselineCall(BaseModel):
    url: str
    step: str
    item: str | None = None
    input: dict[str, Any]
    idempotency_key: str


class BaselineInput(BaseModel):
    reference: str
    sequential: bool = False
    calls: list[BaselineCall]


class BaselineCallResult(BaseModel):
    status: str
    agency_reference: str | None = None
    output: dict[str, Any] = {}


class BaselineResult(BaseModel):
    reference: str
    completed: int


def agency_http_session() -> aiohttp.ClientSession:
    """A client configured as ``worker.agency_http_session()``; the caller owns (and closes) it.

    The Temporal workers use the worker's own function; the DBOS process uses this copy
    because importing ``worker`` loads the engine and Temporal (≈ 47 MB of RSS that a DBOS
    application would not carry). ``tests/unit/test_bench_stats.py`` checks the two agree.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=HTTP_MAX_CONNECTIONS, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
    )


async def post_agency_call(
    http: aiohttp.ClientSession, call: BaselineCall, reference: str
) -> BaselineCallResult:
    """One agency call: the contract body, headers and idempotency key the engine sends.

    Args:
        http: the shared agency client; the caller owns it.
        call: where to POST and what.
        reference: the request's reference (the workflow id), sent in the body and a header.

    Raises:
        RuntimeError: the agency answered 5xx (the caller's retry policy retries it).
    """
    body = json.dumps(
        {"reference": reference, "step": call.step, "item": call.item, "language": "en",
         "input": call.input, "callback_url": None},
        separators=(",", ":"),
    ).encode()
    async with http.post(
        call.url, data=body, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
        headers={
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: call.idempotency_key,
            REFERENCE_HEADER: reference,
        },
    ) as response:
        if response.status >= 500:
            raise RuntimeError(f"agency answered HTTP {response.status}")  # retried
        data = json.loads(await response.read())
    return BaselineCallResult(
        status=str(data.get("status")),
        agency_reference=data.get("agency_reference"),
        output=data.get("output") or {},
    )


def baseline_input(
    reference: str, calls: list[tuple[str, str, str | None, dict[str, Any]]], sequential: bool
) -> BaselineInput:
    """The baseline's input: ``(url, step, item, input)`` per call, keys as the engine makes."""
    return BaselineInput(
        reference=reference,
        sequential=sequential,
        calls=[
            BaselineCall(url=url, step=step, item=item, input=data,
                         idempotency_key=idempotency_key(reference, step, item))
            for url, step, item, data in calls
        ],
    )
