"""The bodies of the intake's HTTP API, as models: what the OpenAPI document says, and what the
routes read and write.

Request bodies are read by :mod:`intake.bodies` (size limit and strict JSON first), then
validated with these models in strict mode, so the document and the checks cannot disagree:
the document's schemas are generated from the same classes. The messages into a running
request are the workflow's own wire types from :mod:`runtime.messages` (an answer), or
bodies of their own where the caller must not say what the intake decides (a decision names
no decider or role: the token does; a cancellation names no canceller), and a callback is
the agency contract's
:class:`agency_kit.contract.Callback`: one concept, one model. Those ignore unknown keys, as
their readers always have (an agency may add keys; an old history must still decode); the
submission envelope does not, since the engine must not hold data it did not ask for.

Responses are built from the models here (or from the read model's and the workflow's types),
and every refusal is an :class:`ErrorBody`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from agency_kit.contract import Callback
from definitions.models import DataSchema
from i18n.languages import tags as language_tags
from readmodel.store import RequestRow
from runtime.messages import InformationAnswer, RequestProgress

LANGUAGES: tuple[str, ...] = language_tags()
"""The languages a citizen may choose (BCP 47): those the interface has a catalog for, read
once at import from i18n/locales/, so a new language's catalog makes it one here too."""


def _supported(tag: str) -> str:
    if tag not in LANGUAGES:
        raise ValueError(f"{tag!r} is not a language this service speaks; use one of "
                         f"{', '.join(LANGUAGES)} (BCP 47 tags, in this case)")
    return tag


Language = Annotated[
    str,
    AfterValidator(_supported),
    WithJsonSchema({"type": "string", "enum": list(LANGUAGES),
                    "description": "A BCP 47 language tag the interface speaks."}),
]
"""The languages a citizen may choose; the agencies receive it with every call."""

IDEMPOTENCY_KEY_MAX = 255
"""The longest ``Idempotency-Key``: a uuid, a content hash or a client's own id fits."""


class FieldProblem(BaseModel):
    """One field at fault: where it is inside the body, and what is wrong with it."""

    loc: list[str | int] = Field(
        description="The path to the field inside the body: keys and list positions.")
    msg: str = Field(description="What is wrong, written for the person who sent it.")


class ErrorBody(BaseModel):
    """Every refusal: a stable ``code``, a message, and the fields at fault when there are any."""

    code: str = Field(description="Stable machine code, e.g. invalid_submission, not_expected.")
    message: str = Field(description="What happened and what to do next.")
    errors: list[FieldProblem] = Field(
        default_factory=list, description="Present only when fields are at fault.")


class MessageOutcome(BaseModel):
    """How a message into a running request ended, when the request took it."""

    code: str = Field(description="accepted (answers, callbacks), recorded (decisions), "
                                  "cancelling (cancel).")
    message: str


class Health(BaseModel):
    status: Literal["ok"]


# --------------------------------------------------------------------------- services


class ServiceSummary(BaseModel):
    id: str
    version: int
    title: dict[str, str] = Field(description="The service's name, by language.")
    description: dict[str, str] = Field(description="What it does, by language.")


class ServiceList(BaseModel):
    services: list[ServiceSummary]


class ServiceView(ServiceSummary):
    """One service, with the form a submission must fill in."""

    input: DataSchema = Field(description=(
        "The service's form: field types and rules (docs/definitions.md). Unset rules are left "
        "out."))
    content_hash: str = Field(description="sha256 of the definition a new request would run.")


# --------------------------------------------------------------------------- requests


class SubmissionEnvelope(BaseModel):
    """``POST /requests``: which service, and the citizen's submission for it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    service: str = Field(min_length=1, max_length=64,
                         description="A service id from GET /services.")
    submission: dict[str, object] = Field(description=(
        "Exactly the fields of the service's input (GET /services/{id}): checked against that "
        "form, so unknown fields are refused, not dropped, and each bad field is reported "
        "with its path under `submission`."))
    language: Language = Field("en", description="The citizen's language, passed to agencies.")


class Submitted(BaseModel):
    reference: str = Field(description="The request reference, SERVICE-XXXX-XXXX-XXXX.")
    created: bool = Field(description="False when the Idempotency-Key named an existing request.")
    status_url: str
    temporal_ui: str = Field(description="The request in the Temporal UI, for operators.")
    access_code: str | None = Field(None, description=(
        "Only in the 202 of a request submitted without a bearer token: the one-time access "
        "code that, sent as `X-Access-Code`, lets its holder follow, answer and cancel the "
        "request. Shown once (only its HMAC is kept); keep it with the reference."))


class DecisionBody(BaseModel):
    """A caseworker's decision. Who decides comes from the bearer token (its subject), and the
    role is the step's: a body naming either is refused (422)."""

    model_config = ConfigDict(extra="forbid")

    step_id: str = Field(description="The decision step.")
    approve: bool
    reason: str | None = Field(None, description="Why; required to reject.")


class CancelBody(BaseModel):
    """The citizen withdraws the request; completed steps are undone."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field("cancelled by the citizen", max_length=500)


class RequestView(BaseModel):
    """``GET /requests/{reference}``: the read model's record and the workflow's live view."""

    reference: str
    record: RequestRow | None = Field(None, description=(
        "The read model's row: status, times, every step and item with its agency reference, "
        "attempts and reason. Absent when the read model has none (or cannot be reached)."))
    live: RequestProgress | None = Field(None, description=(
        "The workflow's `progress` query (agency outputs left out), while Temporal answers."))
    live_unavailable: ErrorBody | None = Field(None, description=(
        "Present when the live view could not be had (Temporal unreachable, or no worker "
        "answered in time): `record` may then be behind the request."))
    record_unavailable: ErrorBody | None = Field(None, description=(
        "Present when the read model could not be reached: `live` is all there is."))


# --------------------------------------------------------------------------- codec server


BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
"""Standard base64 with padding, as proto3 JSON writes bytes."""


class Payload(BaseModel):
    """One Temporal payload in proto3 JSON: metadata values and data are base64 bytes."""

    metadata: dict[str, Annotated[str, Field(pattern=BASE64)]] = Field(default_factory=dict)
    data: str = Field("", pattern=BASE64)


class Payloads(BaseModel):
    """The codec server's request and answer (``temporal.api.common.v1.Payloads``)."""

    payloads: list[Payload] = Field(default_factory=list)


REQUEST_BODIES: tuple[type[BaseModel], ...] = (
    SubmissionEnvelope, InformationAnswer, DecisionBody, CancelBody, Callback, Payloads,
)
"""Every model a route reads its body as; the OpenAPI document lists each under components."""
