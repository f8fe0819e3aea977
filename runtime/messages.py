"""The runtime contract between the front door, the workflow and the activities.

These models travel as Temporal payloads (through the pydantic data converter and the
encrypting codec) and are shared by `workflows/` and `activities/`, which may both import
`definitions` but not each other. Keep them small: they are in every history event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from definitions.models import AgencyKeys, ServiceSnapshot


class Wire(BaseModel):
    """Base of runtime models: immutable; unknown keys ignored so old histories still decode."""

    model_config = ConfigDict(frozen=True, extra="ignore")


RequestStatus = Literal["running", "completed", "partially_completed", "failed", "cancelled"]
StepStatus = Literal[
    "pending", "running", "waiting", "completed", "failed", "skipped", "cancelled", "compensated"
]
WaitingFor = Literal["callback", "information", "decision"]


def request_reference(service_id: str, idempotency_key: str, key: bytes) -> str:
    """The request reference (and workflow id) for a submission: the same key gives the same one.

    An HMAC-SHA256 under the server's reference key (``NWD_REFERENCE_KEY``) of the service and
    the idempotency key, so nobody without that key can compute a reference from a service and
    a key, nor guess one from another. Short, unambiguous characters (base32 of 60 bits, no
    padding) so a citizen can read it out on the phone; the service prefix keeps it readable in
    the Temporal UI. A reference alone opens nothing: following the request needs its owner's
    token or its access code (``intake.access``).
    """
    if not key:
        raise ValueError("a reference key is needed (NWD_REFERENCE_KEY)")
    digest = hmac.new(key, f"{service_id}\x00{idempotency_key}".encode(), hashlib.sha256).digest()
    code = base64.b32encode(digest[:10]).decode().rstrip("=")
    return f"{service_id}-{code[:4]}-{code[4:8]}-{code[8:12]}".upper().replace("_", "-")


# --------------------------------------------------------------------------- workflow I/O


class RequestOptions(Wire):
    """Operational knobs carried by a request (they are not part of the definition)."""

    continue_as_new_after_events: int | None = None
    """Continue as new once the history passes this many events (default: when the server
    suggests it). Small values are for tests and for operators compacting long waits."""
    search_attributes: bool = True
    """Keep the engine's search attributes up to date. Off only on a namespace where they
    cannot be registered (e.g. Temporal's time-skipping test server)."""
    awaited: Literal["busy", "long_waits"] = "busy"
    """What AgenciesAwaited lists: every agency with a call in flight or a wait ("busy", the
    first release's meaning, kept for the histories of requests it started), or only long
    waits: callbacks, citizens' answers, decisions ("long_waits", what new requests use).
    Chosen by the starter rather than patched in the workflow: a patch would cost every new
    request a marker and a search-attribute write (TemporalChangeVersion)."""
    recorded_at_submit: bool = False
    """The front door already wrote the request's row in the read model: the workflow skips
    its own first record (one local activity and one history marker fewer)."""


class RequestInput(Wire):
    """Everything a request needs, pinned at start: it never reads the catalog again."""

    reference: str
    snapshot: ServiceSnapshot
    submission: dict[str, Any] = Field(description="Validated submission (personal; encrypted).")
    language: str = "en"
    submitted_at: datetime
    callback_base_url: str | None = None
    options: RequestOptions = Field(default_factory=RequestOptions)
    carried: CarriedState | None = None
    """Set only when the workflow continues as new."""


class ItemOutcome(Wire):
    """One agency call of a step (a step has several items with for_each)."""

    key: str | None = None
    status: StepStatus = "pending"
    agency_reference: str | None = None
    attempts: int = 0
    reason: str | None = None
    output: dict[str, Any] | None = None
    waiting_for: WaitingFor | None = None
    information_fields: dict[str, Any] | None = None
    """The fields the agency asked the citizen for (FieldSpec-like dicts by name)."""
    information_message: dict[str, str] | None = None
    information_rounds: int = 0
    escalated: bool = False
    waiting_since: datetime | None = None
    callback_digest: str | None = None
    """:meth:`AgencyCallback.digest` of the last callback this item settled (applied, or
    dropped because the call's own answer came first), so that a copy of it sent again is
    answered ``already_received`` instead of being refused."""


class StepOutcome(Wire):
    step_id: str
    kind: Literal["call", "decision"] = "call"
    agency: str | None = None
    operation: str | None = None
    status: StepStatus = "pending"
    required: bool = True
    reason: str | None = None
    items: list[ItemOutcome] = Field(default_factory=list)
    escalated: bool = False
    decided_by: str | None = None
    deadline_at: datetime | None = None
    started_at: datetime | None = None


class CompensationOutcome(Wire):
    step_id: str
    item_key: str | None = None
    operation: str
    status: Literal["undone", "failed", "not_needed"]
    reason: str | None = None


class RequestResult(Wire):
    reference: str
    service: str
    version: int
    content_hash: str
    status: RequestStatus
    steps: list[StepOutcome]
    compensations: list[CompensationOutcome] = Field(default_factory=list)
    agencies_contacted: int = 0


class RequestProgress(Wire):
    """What the `progress` query answers: live state per step."""

    reference: str
    service: str
    content_hash: str
    status: RequestStatus
    steps: list[StepOutcome]
    waiting: list[str] = Field(default_factory=list)
    """Plain-words list of what the request is waiting for."""


class CarriedState(Wire):
    """State carried across continue-as-new."""

    steps: list[StepOutcome]
    planner: dict[str, str]
    """The planner's snapshot; its key order also carries the completion order (for the saga)."""
    outputs: dict[str, Any]
    halting: str | None = None
    """Why the request stopped launching steps (a required failure, or the citizen cancelled)."""


# --------------------------------------------------------------------------- activity I/O


class AgencyEndpoint(Wire):
    """Where and how to reach an agency: names of settings, never the secret itself."""

    agency_id: str
    base_url_env: str | None = None
    default_base_url: str | None = None
    keys: AgencyKeys | None = None
    """Where the agency's public keys are (its answers are verified with them); None: its
    answers are taken unsigned."""


class AgencyCallInput(Wire):
    reference: str
    step_id: str
    item_key: str | None = None
    endpoint: AgencyEndpoint
    operation: str
    action: Literal["operation", "information", "cancel"] = "operation"
    payload: dict[str, Any]
    """Only the fields the step declares: exactly what the agency receives."""
    idempotency_key: str
    callback_url: str | None = None
    language: str = "en"
    timeout_seconds: float = 30.0
    deadline_at: datetime | None = None
    """The step's deadline, if it has one: its callback URL expires a grace period after it."""


class AgencyCallResult(Wire):
    status: Literal["completed", "accepted", "needs_information", "cancelled"]
    agency_reference: str | None = None
    output: dict[str, Any] = Field(default_factory=dict)
    fields: dict[str, Any] | None = None
    message: dict[str, str] | None = None
    attempts: int = 1


class AgencyCallback(Wire):
    """An agency's asynchronous answer, delivered by the intake's callback endpoint."""

    step_id: str
    item_key: str | None = None
    status: Literal["completed", "rejected", "needs_information"]
    agency_reference: str | None = None
    output: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None
    code: str | None = None
    fields: dict[str, Any] | None = None
    message: dict[str, str] | None = None

    def digest(self, information_round: int) -> str:
        """What makes two deliveries "the same callback": its content, and the round of
        information it answers (an agency may ask the same question again in a later round).

        Canonical JSON (sorted keys), so a copy parsed again from the same body matches
        whatever order its keys came in; sha256, cut to 128 bits (one item compares only
        its own few callbacks). Signature headers are not part of it: they change on
        every delivery attempt.
        """
        canonical = json.dumps([information_round, self.model_dump(mode="json")],
                               sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class InformationAnswer(Wire):
    """The citizen's answer to an agency's request for information."""

    step_id: str
    item_key: str | None = None
    answers: dict[str, Any]


class CaseworkerDecision(Wire):
    step_id: str
    approve: bool
    reason: str | None = None
    decided_by: str
    role: str


class DecisionView(Wire):
    """What a caseworker deciding a step is shown: the step's ``show`` expressions, evaluated
    over the request (personal data: only for a token holding the step's ``role``)."""

    service: str
    step_id: str
    role: str
    status: StepStatus
    """The step's state: a decision can be made only while it is ``waiting``."""
    show: dict[str, Any] = Field(default_factory=dict)
    """Each ``show`` name and its value; a value the citizen left out is absent."""
    unavailable: dict[str, str] = Field(default_factory=dict)
    """Each ``show`` name that could not be evaluated, with why (a definition error)."""


class CancelRequest(Wire):
    reason: str = "cancelled by the citizen"
    requested_by: str = "citizen"


class OperatorNotice(Wire):
    """An escalation: recorded in the audit log and sent to an operator role."""

    reference: str
    service: str
    step_id: str
    role: str | None
    kind: Literal["deadline_missed", "information_overdue", "decision_overdue"]
    detail: str


class RecordRequestInput(Wire):
    reference: str
    service: str
    version: int
    content_hash: str
    language: str
    submitted_at: datetime
    status: RequestStatus
    agencies: list[str]
    steps: list[StepOutcome] = Field(default_factory=list)
    finished: bool = False
    agencies_contacted: int = 0
    as_of: datetime | None = None
    """The workflow time of the state recorded (``workflow.now()``): the read model keeps a
    step's row from going back to an older state written late. None from older workers."""


class RecordProgressInput(Wire):
    """One step's change after a message landed (a callback, an answer, a decision).

    ``step`` holds only the items that changed (one, for a message about one item), so a
    callback on a 500-item fan-out writes one row, not 500.
    """

    reference: str
    step: StepOutcome
    event: str
    """The audit event's kind, e.g. ``callback_completed``, ``information_answered``."""
    as_of: datetime
    """The workflow time of this state (see :attr:`RecordRequestInput.as_of`)."""


EmailKind = Literal["information_requested", "decided", "finished"]


class EmailOutcome(Wire):
    """What one step came to, for the citizen's "finished" email (no personal data)."""

    title: dict[str, str]
    """The step's title (or the agency's name), by language."""
    agency: dict[str, str] | None = None
    """The agency's name, by language (None for a caseworker's decision)."""
    status: StepStatus
    agency_reference: str | None = None


class CitizenEmailInput(Wire):
    """One email to the citizen: ``send_citizen_email`` renders it in ``language`` and sends
    it once per ``(reference, key)``. ``to`` is personal (the payload is encrypted by the
    codec); it is never logged. The rest are the non-personal facts the text needs."""

    reference: str
    service: str
    service_title: dict[str, str]
    kind: EmailKind
    key: str
    """Stable per occasion, e.g. ``information_requested:step:item:round``: a retry, a
    replay or a second worker sends nothing twice."""
    language: str = "en"
    to: str = Field(description="The citizen's address (personal; encrypted).")
    step_title: dict[str, str] | None = None
    agency_name: dict[str, str] | None = None
    information_message: dict[str, str] | None = None
    """information_requested: the agency's message to the citizen, by language."""
    information_fields: list[dict[str, str]] = Field(default_factory=list)
    """information_requested: the label of each field asked for, by language."""
    approved: bool | None = None
    """decided: approved or rejected."""
    reason: str | None = None
    """decided: the caseworker's reason."""
    request_status: RequestStatus | None = None
    """finished: how the request ended."""
    outcomes: list[EmailOutcome] = Field(default_factory=list)
    """finished: what each step (each agency) did."""


class CitizenEmailResult(Wire):
    status: Literal["sent", "already_sent", "mail_off"]
    """``mail_off``: the worker has no SMTP server (``NWD_SMTP_HOST``); nothing was sent."""
    message_id: str | None = None


RequestInput.model_rebuild()


# --------------------------------------------------------------------------- retry contract
# Exception *type names* are part of Temporal's retry contract: the activities raise them and
# the workflow lists the final ones in every retry policy, so they are defined once, here.
AGENCY_REJECTED = "AgencyRejected"
AGENCY_UNAVAILABLE = "AgencyUnavailable"
AGENCY_PROTOCOL_ERROR = "AgencyProtocolError"
AGENCY_MISCONFIGURED = "AgencyMisconfigured"
NON_RETRYABLE_ERRORS = (AGENCY_REJECTED, AGENCY_PROTOCOL_ERROR, AGENCY_MISCONFIGURED)
MAIL_UNAVAILABLE = "MailUnavailable"
"""The SMTP server could not be reached or answered with a temporary error: retried."""
MAIL_REFUSED = "MailRefused"
"""The SMTP server refused the message for good (a bad address, say): not retried."""
INVALID_ANSWER = "InvalidAnswer"
NOT_EXPECTED = "NotExpected"
"""Update validators raise these: a late, duplicate or unexpected message changes nothing."""
ALREADY_RECEIVED = "already_received"
"""What ``agency_callback`` answers for a copy of a callback it already has (HTTP 200):
the agency's first delivery succeeded even if its answer was lost on the way back."""
