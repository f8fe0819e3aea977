"""Injected behaviour of the reference agencies: latency, errors, outages, modes, rejections.

Behaviour is JSON, per agency, optionally per operation; ``"*"`` gives every agency a base::

    {
      "*":   {"latency_ms": 20},
      "dmv": {
        "latency_ms": 50,                      # asyncio.sleep before answering
        "latency_calls": 2,                    # ... on the first 2 calls only
        "error_rate": 0.1, "seed": 7,          # 503 for ~10% of calls, reproducible
        "error_every": 3,                      # 503 on every 3rd call (3rd, 6th, ...)
        "outage": {"duration_s": 30},          # 503 (+ Retry-After) for 30 s from now;
                                               # or {"start": ISO, "end": ISO}, either optional
        "mode": "callback", "callback_delay_s": 2.0,   # 202 now, signed callback later
        "needs_information": {"fields": {"proof": {"type": "text"}},
                              "message": {"en": "Send proof", "es": "Envíe prueba"}},
        "reject": {"code": "not_found", "reason": "No such licence", "status": 409},
        "malformed": {"body": "html", "calls": 1},     # the effect is done, the answer is
                                               # garbled (first call only; default: all)
        "operations": {"update-address": {"latency_ms": 500}}
      }
    }

Layers merge key by key: ``"*"``, then the agency, then the agency's ``operations`` entry.
503s are decided before anything is written; a ``malformed`` answer after the effect is
done (and stored for the idempotency key: a retry replays the true answer, garbled again
while ``calls`` lasts). Counters (``error_every``, ``latency_calls``, ``malformed.calls``) and
random generators (``error_rate`` with ``seed``) are kept per agency and operation, and
restart whenever the agency's behaviour is set and on reset.

The malformed bodies are those the fault tests need (tests/faults/): ``not_json`` (text),
``html`` (a gateway's error page, ``text/html``), ``not_an_object`` (a JSON array),
``missing_fields`` (a JSON object without the contract's keys), ``truncated_json`` (the true
answer cut in half) and ``as_is`` (the true answer, with only ``content_type`` wrong).
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from definitions.models import FieldSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutageWindow(_Strict):
    """A window during which every contract call answers 503."""

    start: datetime | None = Field(None, description="When it starts (default: now).")
    end: datetime | None = Field(None, description="When it ends (default: never).")
    duration_s: float | None = Field(
        None, gt=0, description="Length from ``start`` (or from when it is set)."
    )

    def anchored(self, now: datetime) -> OutageWindow:
        """The window with ``duration_s`` turned into absolute times."""
        if self.duration_s is None:
            return self
        start = self.start or now
        return OutageWindow(start=start, end=start + timedelta(seconds=self.duration_s))

    def active(self, now: datetime) -> bool:
        return (self.start is None or now >= self.start) and (self.end is None or now < self.end)

    def retry_after(self, now: datetime) -> int | None:
        if self.end is None:
            return None
        return max(1, math.ceil((self.end - now).total_seconds()))


class NeedsInformationSpec(_Strict):
    """Ask for more information on the first call; the answer completes the operation."""

    fields: dict[str, FieldSpec] = Field(min_length=1)
    message: dict[str, str] = Field(
        default_factory=lambda: {"en": "More information is needed."}
    )


class RejectSpec(_Strict):
    """Refuse every call with this code and reason."""

    code: str = "rejected"
    reason: str = "The agency cannot carry out this operation."
    status: Literal[400, 403, 409, 410, 422] = 409


MalformedBody = Literal[
    "not_json", "html", "not_an_object", "missing_fields", "truncated_json", "as_is"]


class MalformedSpec(_Strict):
    """Answer with a body (or content type) the contract does not allow, the effect done."""

    body: MalformedBody = "not_json"
    content_type: str | None = Field(
        None, description="The answer's Content-Type (default: the body kind's own)."
    )
    calls: int | None = Field(None, ge=1, description="Only the first N calls (default: all).")

    def render(self, true_body: bytes) -> tuple[bytes, str]:
        """The garbled answer's bytes and content type, from the true answer's bytes."""
        body, media = {
            "not_json": (b"OK, done", "text/plain"),
            "html": (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
            "not_an_object": (b'["completed"]', "application/json"),
            "missing_fields": (b'{"ok": true}', "application/json"),
            "truncated_json": (true_body[: len(true_body) // 2], "application/json"),
            "as_is": (true_body, "text/plain"),
        }[self.body]
        return body, self.content_type or media


class BehaviourSpec(_Strict):
    """One layer of behaviour; unset keys fall through to the layer below."""

    latency_ms: float | None = Field(None, ge=0)
    latency_calls: int | None = Field(None, ge=1)
    error_rate: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    error_every: int | None = Field(None, ge=1)
    outage: OutageWindow | None = None
    mode: Literal["sync", "callback"] | None = None
    callback_delay_s: float | None = Field(None, ge=0)
    needs_information: NeedsInformationSpec | None = None
    reject: RejectSpec | None = None
    malformed: MalformedSpec | None = None


class AgencyBehaviour(BehaviourSpec):
    """An agency's behaviour, with per-operation overrides."""

    operations: dict[str, BehaviourSpec] = Field(default_factory=dict)


class Effective(_Strict):
    """The behaviour in force for one call, every key resolved."""

    latency_ms: float = 0
    latency_calls: int | None = None
    error_rate: float = 0
    seed: int | None = None
    error_every: int | None = None
    outage: OutageWindow | None = None
    mode: Literal["sync", "callback"] = "sync"
    callback_delay_s: float = 0.5
    needs_information: NeedsInformationSpec | None = None
    reject: RejectSpec | None = None
    malformed: MalformedSpec | None = None


def _layer(spec: BehaviourSpec | None) -> dict[str, Any]:
    if spec is None:
        return {}
    return {
        key: getattr(spec, key)
        for key in spec.model_fields_set
        if key != "operations" and getattr(spec, key) is not None
    }


def parse_behaviours(data: Any) -> dict[str, AgencyBehaviour]:
    """Parse the ``NWD_AGENCY_BEHAVIOUR`` JSON object (agency id or ``*`` -> behaviour)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("behaviour must be a JSON object: agency id (or '*') -> behaviour")
    return {str(k): AgencyBehaviour.model_validate(v) for k, v in data.items()}


class BehaviourBook:
    """The behaviour of every agency, with the counters and generators that drive errors."""

    def __init__(self, initial: dict[str, AgencyBehaviour] | None = None) -> None:
        self._initial = dict(initial or {})
        self._behaviours: dict[str, AgencyBehaviour] = {}
        self._counters: dict[tuple[str, str], int] = {}
        self._slow: dict[tuple[str, str], int] = {}
        self._garbled: dict[tuple[str, str], int] = {}
        self._rngs: dict[tuple[str, str], random.Random] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the start-up behaviour; counters restart."""
        now = datetime.now(UTC)
        self._behaviours = {k: self._anchor(v, now) for k, v in self._initial.items()}
        for counts in (self._counters, self._slow, self._garbled):
            counts.clear()
        self._rngs.clear()

    @staticmethod
    def _anchor(behaviour: AgencyBehaviour, now: datetime) -> AgencyBehaviour:
        update: dict[str, Any] = {}
        if behaviour.outage is not None:
            update["outage"] = behaviour.outage.anchored(now)
        ops = {
            op: spec.model_copy(update={"outage": spec.outage.anchored(now)})
            if spec.outage is not None
            else spec
            for op, spec in behaviour.operations.items()
        }
        update["operations"] = ops
        return behaviour.model_copy(update=update)

    def get(self, agency_id: str) -> AgencyBehaviour:
        return self._behaviours.get(agency_id, AgencyBehaviour())

    def set(self, agency_id: str, behaviour: AgencyBehaviour) -> AgencyBehaviour:
        """Replace an agency's behaviour (``"*"`` for the base); its counters restart."""
        anchored = self._anchor(behaviour, datetime.now(UTC))
        self._behaviours[agency_id] = anchored
        for counts in (self._counters, self._slow, self._garbled):
            for key in [k for k in counts if agency_id in ("*", k[0])]:
                del counts[key]
        for key in [k for k in self._rngs if agency_id in ("*", k[0])]:
            del self._rngs[key]
        return anchored

    def effective(self, agency_id: str, operation_id: str) -> Effective:
        base = self._behaviours.get("*")
        agency = self._behaviours.get(agency_id)
        merged: dict[str, Any] = {}
        for layer in (
            base,
            base.operations.get(operation_id) if base else None,
            agency,
            agency.operations.get(operation_id) if agency else None,
        ):
            merged.update(_layer(layer))
        return Effective(**merged)

    def unavailable(
        self, agency_id: str, operation_id: str, behaviour: Effective
    ) -> tuple[str, int | None] | None:
        """Whether this call gets a 503: (reason, Retry-After seconds) or None.

        Counts the call (for ``error_every``) and draws (for ``error_rate``).
        """
        now = datetime.now(UTC)
        if behaviour.outage is not None and behaviour.outage.active(now):
            return "the agency system is down for maintenance", behaviour.outage.retry_after(now)
        key = (agency_id, operation_id)
        count = self._counters.get(key, 0) + 1
        self._counters[key] = count
        if behaviour.error_every is not None and count % behaviour.error_every == 0:
            return f"injected failure (every {behaviour.error_every} calls)", 1
        if behaviour.error_rate > 0:
            rng = self._rngs.get(key)
            if rng is None:
                rng = self._rngs[key] = random.Random(behaviour.seed)
            if rng.random() < behaviour.error_rate:
                return "injected failure (error_rate)", 1
        return None

    def latency_s(self, agency_id: str, operation_id: str, behaviour: Effective) -> float:
        """The latency of this call, in seconds: ``latency_ms``, on the first
        ``latency_calls`` calls only when that is set (counts the call)."""
        if not behaviour.latency_ms:
            return 0.0
        if behaviour.latency_calls is not None:
            key = (agency_id, operation_id)
            count = self._slow[key] = self._slow.get(key, 0) + 1
            if count > behaviour.latency_calls:
                return 0.0
        return behaviour.latency_ms / 1000

    def garble(
        self, agency_id: str, operation_id: str, behaviour: Effective, true_body: bytes
    ) -> tuple[bytes, str] | None:
        """The malformed answer to send instead of ``true_body`` (bytes, content type), or
        None to send the true one (counts the call against ``malformed.calls``)."""
        spec = behaviour.malformed
        if spec is None:
            return None
        if spec.calls is not None:
            key = (agency_id, operation_id)
            count = self._garbled[key] = self._garbled.get(key, 0) + 1
            if count > spec.calls:
                return None
        return spec.render(true_body)
