"""The agency contract, v1: the bodies exchanged between the engine and an agency, as models.

Engine -> agency (all ``POST``, JSON, signed — see :mod:`agency_kit.signing`):

- ``{base_url}/operations/{operation_id}``: :class:`OperationRequest`
- ``{base_url}/operations/{operation_id}/information``: :class:`InformationRequest`
- ``{base_url}/operations/{operation_id}/cancel``: :class:`CancelRequest`
- ``GET {base_url}/health``: 200 when the agency is up.

Agency -> engine: one of :class:`Completed` (200), :class:`Accepted` (202, outcome by
callback), :class:`NeedsInformation` (200), :class:`Rejected` (4xx), :class:`Cancelled` (200);
and later, for accepted calls, a signed :class:`Callback` to the request's ``callback_url``.

Both sides import these models: the engine builds its request bodies from the envelopes and
reads answers with the reply models; an agency does the reverse. Each side is strict in what it
writes and tolerant in what it reads. Request envelopes ignore unknown keys (the engine may add
envelope fields; an operation's ``input`` itself is strict, see :mod:`agency_kit.validation`).
Reply models forbid unknown keys, so an agency building one with a misspelt key fails at once
(the OpenAPI document says ``additionalProperties: false``); a reader that must survive an
agency adding keys validates with ``extra="ignore"`` (the engine does: see
``activities/agency_calls.py``). The full text is ``docs/agency-contract.md``; the OpenAPI
document is ``docs/openapi/agency-contract.yaml``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CONTRACT_VERSION = "v1"
MAX_BODY_BYTES = 1024 * 1024
"""Request bodies above 1 MiB are refused with 413 (the engine does not send them)."""

IDEMPOTENCY_HEADER = "Idempotency-Key"
REFERENCE_HEADER = "X-NWD-Reference"
RETRY_AFTER_HEADER = "Retry-After"

RETRYABLE_STATUS = frozenset({408, 429})
"""4xx statuses the engine retries; every other 4xx is final, every 5xx is retried."""


def idempotency_key(reference: str, step: str, item: str | None, *suffix: str) -> str:
    """``{reference}:{step}:{item or "-"}`` then each non-empty suffix, colon-separated.

    Suffixes: ``undo`` (a compensation), ``cancel``, ``info:{n}`` (or ``"info", n``) for the
    n-th information answer, ``callback``. An empty suffix adds nothing, so a caller passing
    "no suffix" as ``""`` gets the plain key. Only ``None`` means "no item": an item key that is
    an empty string stays empty, as the engine has always sent it.
    """
    return ":".join([reference, step, "-" if item is None else item, *(s for s in suffix if s)])


class Envelope(BaseModel):
    """Base of request bodies: unknown envelope keys are ignored (forward compatible)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class StepEnvelope(Envelope):
    """What every request names: the request, the step (and item) it is for, the language.

    The field order is the order the engine has always written these keys in.
    """

    reference: str = Field(min_length=1, description="The engine's request reference.")
    step: str = Field(min_length=1, description="The step id within the citizen's request.")
    item: str | None = Field(None, description="The item key inside a for-each step, else null.")
    language: str = Field("en", description="The citizen's preferred language.")


class OperationRequest(StepEnvelope):
    """``POST /operations/{operation_id}``: do the operation once for this request step/item."""

    input: dict[str, Any] = Field(default_factory=dict, description="The operation's input.")
    callback_url: str | None = Field(
        None, description="Where to POST the outcome of an accepted (202) call."
    )


class InformationRequest(StepEnvelope):
    """``POST /operations/{operation_id}/information``: the citizen's answers."""

    agency_reference: str = Field(min_length=1, description="From the needs_information answer.")
    answers: dict[str, Any] = Field(default_factory=dict)


class CancelRequest(StepEnvelope):
    """``POST /operations/{operation_id}/cancel``: withdraw an accepted call."""

    agency_reference: str = Field(min_length=1)


class Reply(BaseModel):
    """Base of response bodies: strict when built (see the module docstring for reading)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Completed(Reply):
    """200: the operation is done; ``output`` follows the operation's output schema."""

    status: Literal["completed"] = "completed"
    agency_reference: str
    output: dict[str, Any] = Field(default_factory=dict)


class Accepted(Reply):
    """202: the agency took the call; it will POST a :class:`Callback` to ``callback_url``."""

    status: Literal["accepted"] = "accepted"
    agency_reference: str


class NeedsInformation(Reply):
    """200: the agency needs more from the citizen before it can finish."""

    status: Literal["needs_information"] = "needs_information"
    agency_reference: str
    fields: dict[str, dict[str, Any]] = Field(
        description="Field name -> FieldSpec-like dict (type, required, label, values, ...)."
    )
    message: dict[str, str] = Field(description="What to tell the citizen, by language.")


class FieldError(Reply):
    """One input problem: where (``input.new_address``, ``input.services[0]``) and what."""

    path: str
    message: str


class Rejected(Reply):
    """4xx: the agency refuses; final for the engine except 408 and 429."""

    status: Literal["rejected"] = "rejected"
    code: str = Field(description="Stable machine code, e.g. bad_signature, invalid_input.")
    reason: str = Field(description="Human text saying what is wrong and what to do.")
    errors: list[FieldError] | None = Field(None, description="Field problems (422 only).")


class Cancelled(Reply):
    """200 to a cancel: the accepted call is withdrawn and will not call back."""

    status: Literal["cancelled"] = "cancelled"
    agency_reference: str | None = None


class Callback(Reply):
    """Agency -> engine ``POST {callback_url}``: the outcome of an accepted call.

    Every key is sent; ``output`` is ``{}`` and the others null when they do not apply.
    """

    status: Literal["completed", "rejected", "needs_information"]
    agency_reference: str
    output: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None
    code: str | None = None
    fields: dict[str, dict[str, Any]] | None = None
    message: dict[str, str] | None = None


Answer = Annotated[
    Completed | Accepted | NeedsInformation | Cancelled, Field(discriminator="status")
]
"""A 2xx answer to a call, told apart by its ``status`` (a 202 is always :class:`Accepted`)."""
