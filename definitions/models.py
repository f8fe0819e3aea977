"""The definition language: what a developer writes in YAML, as frozen pydantic models.

Every model rejects unknown keys (``extra="forbid"``) so a typo such as ``needs:`` fails
loudly instead of silently dropping a dependency. Descriptions on fields flow into the JSON
Schema (``nwd definitions schema``) so editors explain each key as it is typed.

Cross-file rules (agencies exist, ``needs`` is acyclic, expressions refer to upstream steps,
input mappings match the operation's schema) live in :mod:`definitions.validation`; this
module checks only what one document can check on its own.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from definitions.field_types import FieldType, rule_problem, rules_json_schema

ID_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
"""Ids appear in workflow ids, idempotency keys, URLs and metric labels: keep them plain."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """Accept ``"30s"``, ``"5m"``, ``"10d"``, a number of seconds, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration such as '30s', '5m', '2h' or '10d' is expected")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    raise ValueError(
        f"{value!r} is not a duration: write a number and a unit, e.g. '30s', '5m', '2h', '10d'"
    )


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*$",
            "description": "A duration: a number and a unit (ms, s, m, h, d, w), e.g. '30s'.",
        }
    ),
]

Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
Expression = Annotated[
    str,
    Field(
        min_length=1,
        description=(
            "A CEL expression over `submission`, `steps.<id>.output`, `item` (inside for_each) "
            "and `request` (reference, language)."
        ),
    ),
]


LANGUAGE_TAG = r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-([A-Z]{2}|[0-9]{3}))?$"
"""A BCP 47 tag (RFC 5646) of language, optional script and optional region, in its
canonical case: ``en``, ``es``, ``pt-BR``, ``zh-Hans``, ``sr-Latn-RS``, ``es-419``."""


def _require_english(value: dict[str, str]) -> dict[str, str]:
    if "en" not in value:
        raise ValueError("an English text ('en') is required; add other languages beside it")
    for code in value:
        if not re.fullmatch(LANGUAGE_TAG, code):
            raise ValueError(f"{code!r} is not a BCP 47 language tag such as 'en', 'es', "
                             "'pt-BR' or 'zh-Hans'")
    return value


_LOCALIZED_TEXT_DESCRIPTION = (
    "Text by language code; English ('en') is required. A plain string is English."
)

LocalizedText = Annotated[
    dict[str, str],
    BeforeValidator(lambda v: {"en": v} if isinstance(v, str) else v),
    AfterValidator(_require_english),
    Field(description=_LOCALIZED_TEXT_DESCRIPTION),
    # The JSON Schema says what the validator accepts: a plain string, or texts by language.
    WithJsonSchema(
        {
            "description": _LOCALIZED_TEXT_DESCRIPTION,
            "anyOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "object",
                    "required": ["en"],
                    "propertyNames": {"pattern": LANGUAGE_TAG},
                    "additionalProperties": {"type": "string"},
                },
            ],
        }
    ),
]


class Model(BaseModel):
    """Base of every definition model: immutable, and unknown keys are errors, not ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- data schemas

class FieldSpec(Model):
    """One typed field of a submission or of an agency operation's input or output."""

    # What a `type` means (the rules it takes, how values are checked, samples) is that type's
    # object in definitions.field_types; this model holds the keys and asks the registry. The
    # docstring above is the JSON Schema's description, hence this comment.
    model_config = ConfigDict(json_schema_extra=rules_json_schema)

    type: FieldType = Field(description="The field's type.")
    required: bool = Field(True, description="Whether the field must be present.")
    personal: bool = Field(
        False,
        description=(
            "Personal data: encrypted in Temporal payloads, never logged, "
            "shown masked to operators."
        ),
    )
    label: LocalizedText | None = Field(None, description="What the citizen sees, by language.")
    hint: LocalizedText | None = Field(
        None, description="Help shown under the label (a format, where to find it), by language.")
    options: dict[str, LocalizedText] | None = Field(
        None, description="enum: what the citizen sees for each value, by language "
                          "(default: the value itself).")
    description: str | None = Field(None, description="A note for developers.")
    min_length: int | None = Field(None, ge=0, description="text: shortest allowed length.")
    max_length: int | None = Field(None, ge=1, description="text: longest allowed length.")
    pattern: str | None = Field(None, description="text: a regular expression the value matches.")
    minimum: float | None = Field(None, description="integer/number: smallest allowed value.")
    maximum: float | None = Field(None, description="integer/number: largest allowed value.")
    values: tuple[str, ...] | None = Field(None, description="enum: the allowed values.")
    items: FieldSpec | None = Field(None, description="list: the type of each item.")
    min_items: int | None = Field(None, ge=0, description="list: fewest items.")
    max_items: int | None = Field(None, ge=1, description="list: most items.")
    fields: dict[str, FieldSpec] | None = Field(None, description="object: its fields.")

    @model_validator(mode="after")
    def _rules_fit_type(self) -> FieldSpec:
        problem = rule_problem(self)
        if problem is not None:
            raise ValueError(problem)
        return self


class DataSchema(Model):
    """A set of named fields: a service's input, or an operation's input or output."""

    fields: dict[str, FieldSpec] = Field(default_factory=dict, description="Fields by name.")

    @field_validator("fields")
    @classmethod
    def _field_names(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"field name {name!r} must be snake_case (a-z, 0-9, _)")
        return value


# --------------------------------------------------------------------------- agencies


class HttpEndpoint(Model):
    """How the engine reaches an agency over HTTP."""

    base_url_env: str = Field(
        description="Environment variable holding the agency's base URL (read by the worker).",
        pattern=r"^[A-Z][A-Z0-9_]*$",
    )
    default_base_url: str | None = Field(
        None, description="Base URL used when the variable is unset (the reference agencies)."
    )


class PublicKey(Model):
    """One Ed25519 public key of an agency, as a JWK's ``kid`` and ``x``."""

    kid: str = Field(description="The key id the agency's signatures name (`keyid`).",
                     min_length=1, max_length=200)
    x: str = Field(description="The 32-byte public key, base64url without padding (JWK `x`).",
                   pattern=r"^[A-Za-z0-9_-]{43}$")


class AgencyKeys(Model):
    """Where the agency's public keys are: its JWKS URL (a variable, a default) or inline."""

    jwks_url_env: str | None = Field(
        None, pattern=r"^[A-Z][A-Z0-9_]*$",
        description="Environment variable holding the agency's JWKS URL "
                    "(`NWD_AGENCY_<ID>_JWKS_URL`).",
    )
    default_jwks_url: str | None = Field(
        None, description="JWKS URL used when the variable is unset (the reference agencies)."
    )
    public: tuple[PublicKey, ...] = Field(
        (), description="Inline public keys; two at once while a key is rotated."
    )

    @model_validator(mode="after")
    def _somewhere(self) -> AgencyKeys:
        if not self.public and self.jwks_url_env is None and self.default_jwks_url is None:
            raise ValueError(
                "keys needs jwks_url_env (and/or default_jwks_url), or public: [{kid, x}]")
        return self


class Operation(Model):
    """One thing an agency can do, with the data it accepts and returns."""

    id: Identifier = Field(description="Operation id, unique within the agency.")
    title: LocalizedText = Field(description="What the operation does, by language.")
    input: DataSchema = Field(default_factory=DataSchema, description="What the agency accepts.")
    output: DataSchema = Field(default_factory=DataSchema, description="What it returns.")
    cancellable: bool = Field(
        False, description="Whether an accepted (202) call can be withdrawn while in progress."
    )


class Agency(Model):
    """An agency system the engine can call."""

    id: Identifier = Field(description="Agency id, used by steps.")
    name: LocalizedText = Field(description="The agency's name, by language.")
    http: HttpEndpoint | None = Field(None, description="How it is reached over HTTP.")
    task_queue: str | None = Field(
        None, description="Reserved: a Temporal task queue the agency's own worker polls."
    )
    keys: AgencyKeys | None = Field(
        None,
        description=(
            "The agency's public Ed25519 keys, which verify its signed answers and callbacks "
            "(RFC 9421): a JWKS URL or inline keys, never a secret. Without keys its answers "
            "and callbacks are taken unsigned (development only)."
        ),
    )
    operations: tuple[Operation, ...] = Field(description="What the agency offers.")

    @model_validator(mode="after")
    def _reachable(self) -> Agency:
        if self.http is None and self.task_queue is None:
            raise ValueError("an agency needs 'http' (or 'task_queue') so the engine can reach it")
        return self

    def operation(self, operation_id: str) -> Operation | None:
        return next((op for op in self.operations if op.id == operation_id), None)


class AgencyRegistry(Model):
    """The registry file (``agencies.yaml``)."""

    agencies: tuple[Agency, ...] = Field(description="Every agency the catalog may call.")


# --------------------------------------------------------------------------- steps


class RetrySpec(Model):
    """How a failed call is retried (5xx, timeouts, connection errors; never a 4xx)."""

    max_attempts: int = Field(5, ge=1, le=1000, description="Attempts in all, the first included.")
    initial_interval: Duration = Field(
        timedelta(seconds=1), description="Wait before the 2nd attempt."
    )
    backoff: float = Field(2.0, ge=1.0, le=10.0, description="Each wait is this times the last.")
    max_interval: Duration = Field(
        timedelta(minutes=1), description="Longest wait between attempts."
    )


class Compensation(Model):
    """The operation that undoes a completed step (saga)."""

    operation: Identifier = Field(description="Operation of the same agency that undoes the step.")
    input: dict[str, Expression] = Field(
        default_factory=dict,
        description=(
            "Input of the undo call; may also use `output` (this step's result). "
            "Only these fields are sent."
        ),
    )


class Deadline(Model):
    """A promised response time; a timer, not polling, watches it."""

    after: Duration = Field(description="Time allowed, counted from when the step starts.")
    on_miss: Literal["escalate", "fail"] = Field(
        "escalate", description="escalate: record and notify, keep waiting; fail: the step fails."
    )
    notify: str | None = Field(None, description="Operator role told when the deadline passes.")


class InformationPolicy(Model):
    """How long the citizen has to answer an agency's request for information."""

    answer_within: Duration = Field(timedelta(days=14), description="Time the citizen has.")
    on_miss: Literal["fail", "escalate"] = Field("fail", description="What happens then.")
    notify: str | None = Field(None, description="Operator role told on escalation.")


class StepBase(Model):
    id: Identifier = Field(description="Step id, unique within the service.")
    title: LocalizedText | None = Field(None, description="What the citizen sees for this step.")
    needs: tuple[Identifier, ...] = Field(
        (), description="Steps that must finish first; steps with nothing pending run in parallel."
    )
    when: Expression | None = Field(
        None, description="Condition (CEL, boolean); false skips the step."
    )
    required: bool = Field(
        True, description="A required step's failure fails the request; an optional one's does not."
    )
    deadline: Deadline | None = Field(None, description="Promised response time.")


class CallStep(StepBase):
    """A call to an agency operation."""

    kind: Literal["call"] = Field("call", description="A call to an agency (the default kind).")
    agency: Identifier = Field(description="Agency id from the registry.")
    operation: Identifier = Field(description="Operation id of that agency.")
    input: dict[str, Expression] = Field(
        default_factory=dict,
        description=(
            "Input mapping: operation field -> CEL expression. Only these fields are ever sent."
        ),
    )
    for_each: Expression | None = Field(
        None, description="A list expression: one call per item, the item bound to `item`."
    )
    item_key: Expression | None = Field(
        None,
        description="Stable key of an item in idempotency keys (default: its position).",
    )
    mode: Literal["sync", "callback"] = Field(
        "sync", description="callback: the agency answers 202 and calls back later."
    )
    timeout: Duration = Field(timedelta(seconds=30), description="Time allowed for one HTTP call.")
    retry: RetrySpec = Field(default_factory=RetrySpec, description="Retry policy.")
    compensation: Compensation | None = Field(None, description="How to undo this step.")
    information: InformationPolicy = Field(
        default_factory=InformationPolicy,
        description="Rules for answering the agency's requests for more information.",
    )
    consent: LocalizedText | None = Field(
        None, description="Reserved: consent the citizen must give before this data is shared."
    )


class DecisionStep(StepBase):
    """A step that waits for a human decision (approve or reject, with a reason)."""

    kind: Literal["decision"] = Field(description="A caseworker decision.")
    role: str = Field(description="The role allowed to decide, e.g. 'benefits-caseworker'.")
    due: Duration = Field(timedelta(days=10), description="When the decision is due.")
    show: dict[str, Expression] = Field(
        default_factory=dict, description="What the caseworker is shown (CEL expressions)."
    )


def _step_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "call"))
    return str(getattr(value, "kind", "call"))


Step = Annotated[
    Annotated[CallStep, Tag("call")] | Annotated[DecisionStep, Tag("decision")],
    Discriminator(_step_kind),
]


MAX_STEPS = 100
"""Most steps in one service (the shipped services have 3 to 5, the benchmark's chain 20).
Checking `needs` and the scope of every expression grows with the square of the step count, so
an unbounded count would let one file stall `nwd definitions check`."""


class Contact(Model):
    """Where the engine writes to the citizen about this request (information requested, a
    decision, the end): CEL expressions over ``submission`` and ``request``, evaluated when a
    message is sent. A request whose address is absent (an optional field left out) gets none."""

    email: Expression = Field(
        description="The citizen's email address, e.g. `submission.email`.")
    language: Expression | None = Field(
        None, description="The language of the emails (a BCP 47 tag), e.g. "
        "`submission.preferred_language`; default: the language the request was made in.")


class ServiceDefinition(Model):
    """A citizen service: what the citizen submits and which steps carry it out."""

    service: Identifier = Field(description="Service id, e.g. 'change-of-address'.")
    # At most PostgreSQL's `integer`: the read model stores it in one (and a search attribute).
    version: int = Field(
        ge=1, le=2_147_483_647,
        description="Bump when the meaning changes; the hash pins the text.",
    )
    title: LocalizedText = Field(description="Service name, by language.")
    description: LocalizedText = Field(description="What the service does, by language.")
    input: DataSchema = Field(description="What the citizen submits.")
    steps: tuple[Step, ...] = Field(
        min_length=1, max_length=MAX_STEPS, description="What the engine does."
    )
    contact: Contact | None = Field(
        None, description="How to reach the citizen by email; none: no emails are sent.")

    def step(self, step_id: str) -> CallStep | DecisionStep | None:
        return next((s for s in self.steps if s.id == step_id), None)


# --------------------------------------------------------------------------- snapshots


class ServiceSnapshot(Model):
    """What a request is pinned to: the service and the agencies it uses, with a content hash.

    It travels in the workflow input, so editing a YAML never changes a request in flight.
    """

    content_hash: str = Field(description="sha256 over the canonical JSON of service + agencies.")
    service: ServiceDefinition
    agencies: tuple[Agency, ...]

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        """Snapshots of requests started before agencies had keys name ``auth_secret`` (the
        retired shared secret): dropped here so those requests still decode and replay."""
        if isinstance(data, dict) and isinstance(data.get("agencies"), list | tuple):
            data = {**data, "agencies": [
                {k: v for k, v in a.items() if k != "auth_secret"} if isinstance(a, dict) else a
                for a in data["agencies"]]}
        return data

    def agency(self, agency_id: str) -> Agency:
        for agency in self.agencies:
            if agency.id == agency_id:
                return agency
        raise KeyError(agency_id)
