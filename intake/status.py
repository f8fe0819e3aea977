"""Where a request is: the read model's record and the workflow's live view, together.

``GET /requests/{reference}`` (JSON) and the status page (``/track/{reference}``) show the
same two sources, read by :func:`request_status`: the read model's row (statuses, agency
references, times — never personal data) and the workflow's ``progress`` query (what it waits
for, deadlines, for_each items), each possibly missing when its server cannot be reached. The
caller has already checked who may see it (:mod:`intake.access`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

from intake import errors
from intake.schemas import ErrorBody
from intake.submissions import Submissions
from readmodel.store import ReadModel, RequestRow
from runtime.messages import RequestProgress
from workflows.request_workflow import CitizenRequestWorkflow

LIVE_QUERY_TIMEOUT = timedelta(seconds=3)
"""How long a status waits for the workflow's live view: a worker answers a query in
milliseconds; without one (all stopped) the record is answered instead."""
NO_OUTPUTS = {"steps": {"__all__": {"items": {"__all__": {"output"}}}}}
"""The live view leaves agency outputs out (they may hold personal data)."""


@dataclass(frozen=True)
class RequestStatus:
    """A request's record and live view, and why either is missing."""

    reference: str
    record: RequestRow | None
    live: RequestProgress | None
    record_problem: ErrorBody | None = None
    live_problem: ErrorBody | None = None

    @property
    def found(self) -> bool:
        return self.record is not None or self.live is not None

    @property
    def unavailable(self) -> str | None:
        """What could not be asked when nothing was found (then the request may exist)."""
        if self.found or (self.record_problem is None and self.live_problem is None):
            return None
        return "Temporal" if self.live_problem else "the read model"

    @property
    def status(self) -> str | None:
        """The request's status: the live one while the workflow answers, else the record's."""
        if self.live is not None:
            return self.live.status
        return self.record.status if self.record is not None else None

    @property
    def finished(self) -> bool:
        status = self.status
        return status is not None and status != "running"


async def request_status(submissions: Submissions, read_model: ReadModel | None,
                         reference: str) -> RequestStatus:
    """Both views of ``reference`` (see the module docstring); never raises for an outage."""
    row: RequestRow | None = None
    record_problem: ErrorBody | None = None
    if read_model is not None:
        try:
            row = await read_model.get_request(reference)
        except Exception as exc:
            if errors.unavailable_cause(exc) is None:
                raise
            record_problem = errors.unavailable_body("the read model")
    live, live_problem = await live_view(submissions, reference)
    return RequestStatus(reference, row, live, record_problem, live_problem)


async def live_view(submissions: Submissions,
                    reference: str) -> tuple[RequestProgress | None, ErrorBody | None]:
    """The workflow's live view, or why there is none: (None, None) when it does not exist."""
    try:
        return await submissions.handle(reference).query(
            CitizenRequestWorkflow.progress, rpc_timeout=LIVE_QUERY_TIMEOUT), None
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            return None, None  # no such workflow (or an id no workflow can have)
        if errors.unavailable_cause(exc) is not None:
            message = ("Temporal cannot be reached, or no worker answered in time; the record "
                       "may be behind the request")
        else:
            message = f"Temporal refused the live view ({exc.status.name})"
        return None, ErrorBody(code=errors.UNAVAILABLE, message=message)
    except (WorkflowQueryFailedError, WorkflowQueryRejectedError):
        return None, ErrorBody(code=errors.UNAVAILABLE,
                               message="the workflow could not answer its live view")
