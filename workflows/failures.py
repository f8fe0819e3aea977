"""Reading why an activity failed: the structured parts, never the message text.

An agency call fails as ``ActivityError`` whose cause is the ``ApplicationError`` the
``call_agency`` activity raised (activities/agency_calls.py)::

    ActivityError                       (Temporal: the activity ended without a result)
     └─ cause: ApplicationError
          .type     AgencyRejected | AgencyUnavailable | AgencyProtocolError | AgencyMisconfigured
          .message  human text: what happened, where (agency, operation, URL)
          .details  ({"status": 409, "code": "too_late", "reason": ..., "attempt": 3},)

Decisions are taken on ``type`` and the details' ``code`` (the agency contract's stable
machine code, docs/agency-contract.md); the message is only ever shown. A cause that is not
an ``ApplicationError`` (a timeout, a cancelled activity) has neither: its text is the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.exceptions import ActivityError, ApplicationError

from runtime.messages import AGENCY_REJECTED

TOO_LATE = "too_late"
"""The contract's code for a cancel of a call that already completed (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class ActivityFailure:
    """Why one activity failed, as the workflow reads it."""

    message: str
    type: str | None = None
    """The ``ApplicationError`` type name (the retry contract's), if there was one."""
    code: str | None = None
    """The agency's machine code from the failure's details, if it sent one."""
    attempts: int = 0
    """Attempts the activity made, when the activity said so (0 otherwise)."""

    @property
    def reason(self) -> str:
        """What the request's outcome shows: the message, with the agency's code if any."""
        return self.message if not self.code else f"{self.message} [{self.code}]"

    @property
    def too_late(self) -> bool:
        """The agency refused a withdrawal because the work is already done."""
        return self.type == AGENCY_REJECTED and self.code == TOO_LATE


def read_failure(err: ActivityError) -> ActivityFailure:
    """The structured reason of an activity's failure."""
    cause = err.cause
    if isinstance(cause, ApplicationError):
        first = cause.details[0] if cause.details else None
        details = first if isinstance(first, dict) else {}
        code = details.get("code")
        return ActivityFailure(
            message=cause.message,
            type=cause.type,
            code=str(code) if code else None,
            attempts=int(details.get("attempt", 0) or 0),
        )
    return ActivityFailure(message=str(cause) if cause is not None else str(err))
