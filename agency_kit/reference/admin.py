"""The admin API of the reference agencies: for tests, the demo and benchmarks, not the contract.

- ``PUT /_admin/agencies/{agency}/behaviour`` (``*`` for every agency) — replace behaviour;
- ``GET /_admin/agencies/{agency}/behaviour``;
- ``GET /_admin/agencies/{agency}/records[?reference=&operation=]`` — rows as JSON;
- ``GET /_admin/agencies/{agency}/outbox[?reference=&state=]`` — the callbacks owed or sent:
  state, attempts, last status and error code, next attempt (not the body or the URL);
- ``POST /_admin/reset`` — empty every table (records, outbox, keys), restore start-up
  behaviour.

It has no authentication: bind the reference agencies to a local address. With
``NWD_DEPLOYMENT=production`` it is not served at all (404).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import APIRouter, Request
from pydantic import ValidationError

from agency_kit.outbox import STATES
from agency_kit.reference.behaviour import AgencyBehaviour, BehaviourBook
from agency_kit.reference.hosted import HostedAgencies
from agency_kit.reference.plumbing import Refusal, field_errors, parse_body

log = structlog.get_logger("agency_kit.reference")


def admin_router(
    hosted: HostedAgencies, book: BehaviourBook, reset: Callable[[], Awaitable[None]]
) -> APIRouter:
    """The admin routes over the hosted agencies, their behaviour book, and a full reset."""
    routes = APIRouter(prefix="/_admin")

    @routes.put("/agencies/{agency_id}/behaviour")
    async def put_behaviour(agency_id: str, request: Request) -> dict[str, Any]:
        if agency_id != "*":
            hosted.agency(agency_id)
        data = parse_body(await request.body())
        try:
            behaviour = AgencyBehaviour.model_validate(data)
        except ValidationError as exc:
            raise Refusal(
                422, "invalid_behaviour", "the behaviour is not valid", errors=field_errors(exc)
            ) from exc
        stored = book.set(agency_id, behaviour)
        keys = sorted(data) if isinstance(data, dict) else []
        log.info("agency.behaviour_set", agency=agency_id, keys=keys)
        return stored.model_dump(mode="json", exclude_none=True)

    @routes.get("/agencies/{agency_id}/behaviour")
    async def get_behaviour(agency_id: str) -> dict[str, Any]:
        if agency_id != "*":
            hosted.agency(agency_id)
        return book.get(agency_id).model_dump(mode="json", exclude_none=True)

    @routes.get("/agencies/{agency_id}/records")
    async def records(
        agency_id: str, reference: str | None = None, operation: str | None = None
    ) -> list[dict[str, Any]]:
        hosted.agency(agency_id)
        async with hosted.pool.acquire() as conn:
            rows = await hosted.stores[agency_id].list_records(
                conn, reference=reference, operation=operation
            )
        return [row.as_json() for row in rows]

    @routes.get("/agencies/{agency_id}/outbox")
    async def outbox(
        agency_id: str, reference: str | None = None, state: str | None = None
    ) -> list[dict[str, Any]]:
        hosted.agency(agency_id)
        if state is not None and state not in STATES:
            raise Refusal(
                422, "invalid_state",
                f"state must be one of {', '.join(sorted(STATES))}, not {state!r}",
            )
        async with hosted.pool.acquire() as conn:
            rows = await hosted.stores[agency_id].outbox.rows(
                conn, reference=reference, state=state
            )
        return [row.as_json() for row in rows]

    @routes.post("/reset")
    async def reset_all() -> dict[str, str]:
        await reset()
        return {"status": "reset"}

    return routes
