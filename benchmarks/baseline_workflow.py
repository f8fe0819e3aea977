"""The benchmark's baseline: a plain, hand-written Temporal workflow. NOT part of the engine.

It makes the same agency calls as the engine does for the benchmark services (same URLs,
same contract body and headers, same idempotency keys), with the same concurrency: all calls
of a fan-out together under ``asyncio.gather``, or one after another for a chain; one httpx
call per activity, through the same shared, pooled client and limits as the engine's worker,
with the same data converter (pydantic + the encrypting codec). Nothing else: no read model,
no search attributes, no summaries, no planner.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import aiohttp
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy


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


class BaselineActivities:
    def __init__(self, http: aiohttp.ClientSession) -> None:
        self._http = http

    @activity.defn(name="baseline_call")
    async def baseline_call(self, call: BaselineCall) -> BaselineCallResult:
        info = activity.info()
        reference = info.workflow_id or ""
        body = json.dumps(
            {"reference": reference, "step": call.step, "item": call.item, "language": "en",
             "input": call.input, "callback_url": None},
            separators=(",", ":"),
        ).encode()
        async with self._http.post(
            call.url, data=body, timeout=aiohttp.ClientTimeout(total=30.0),
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": call.idempotency_key,
                "X-NWD-Reference": reference,
                "X-NWD-Timestamp": str(int(time.time())),
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


@workflow.defn(name="BaselineFanOut")
class BaselineFanOut:
    @workflow.run
    async def run(self, request: BaselineInput) -> BaselineResult:
        if request.sequential:
            results = [await self._call(call) for call in request.calls]
        else:
            results = list(await asyncio.gather(*(self._call(c) for c in request.calls)))
        return BaselineResult(
            reference=request.reference,
            completed=sum(1 for r in results if r.status == "completed"),
        )

    async def _call(self, call: BaselineCall) -> BaselineCallResult:
        result: BaselineCallResult = await workflow.execute_activity(
            "baseline_call",
            call,
            result_type=BaselineCallResult,
            start_to_close_timeout=timedelta(seconds=35),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
        return result


def baseline_input(
    reference: str, calls: list[tuple[str, str, str | None, dict[str, Any]]], sequential: bool
) -> BaselineInput:
    """The baseline's input: ``(url, step, item, input)`` per call, keys as the engine makes."""
    from definitions.requests import idempotency_key

    return BaselineInput(
        reference=reference,
        sequential=sequential,
        calls=[
            BaselineCall(url=url, step=step, item=item, input=data,
                         idempotency_key=idempotency_key(reference, step, item))
            for url, step, item, data in calls
        ],
    )
