"""The benchmark's baseline: a plain, hand-written Temporal workflow. NOT part of the engine.

It makes the same agency calls as the engine does for the benchmark services (same URLs,
same contract body and headers, same idempotency keys), with the same concurrency: all calls
of a fan-out together under ``asyncio.gather``, or one after another for a chain; one aiohttp
POST per activity (:func:`benchmarks.agency_call.post_agency_call`, which the DBOS comparison
sends too), through the same shared, pooled client and limits as the engine's worker, with the
same data converter (pydantic + the encrypting codec). Nothing else: no read model, no search
attributes, no summaries, no planner.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aiohttp
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

from benchmarks.agency_call import (
    BaselineCall,
    BaselineCallResult,
    BaselineInput,
    BaselineResult,
    baseline_input,
    post_agency_call,
)

__all__ = [
    "BaselineActivities",
    "BaselineCall",
    "BaselineCallResult",
    "BaselineFanOut",
    "BaselineInput",
    "BaselineResult",
    "baseline_input",
]


class BaselineActivities:
    def __init__(self, http: aiohttp.ClientSession) -> None:
        self._http = http

    @activity.defn(name="baseline_call")
    async def baseline_call(self, call: BaselineCall) -> BaselineCallResult:
        return await post_agency_call(self._http, call, activity.info().workflow_id or "")


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

