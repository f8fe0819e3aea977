"""The only way workflow code starts an activity — so it knows how many are in flight.

A request has five side effects, each an activity referred to by name (this room never
imports ``activities``): ``call_agency``, ``notify_operator``, ``send_citizen_email`` and the
local activities ``record_request`` and ``record_progress``. Continue-as-new waits for a
*quiet moment* — no activity and no update handler in flight — because the new run cannot
take over an activity the old one started: an escalation whose ``notify_operator`` was cut
off that way never applied its ``on_miss: fail``. Counting here, around every activity, keeps
that check whole: a new kind of activity is counted by being started through this class.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from temporalio import workflow
from temporalio.exceptions import ActivityError

from runtime.messages import (
    AgencyCallInput,
    AgencyCallResult,
    CitizenEmailInput,
    CitizenEmailResult,
    OperatorNotice,
    RecordProgressInput,
    RecordRequestInput,
)
from workflows import activity_options


class Effects:
    """Starts a request's activities and counts those in flight."""

    def __init__(self) -> None:
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Activities started and not yet ended (local ones included)."""
        return self._in_flight

    async def call_agency(
        self, call: AgencyCallInput, options: workflow.ActivityConfig
    ) -> AgencyCallResult:
        """One agency call, retried under ``options``.

        Raises:
            ActivityError: the call failed for good (read it with ``failures.read_failure``).
        """
        with self._counted():
            result: AgencyCallResult = await workflow.execute_activity(
                "call_agency", call, result_type=AgencyCallResult, **options
            )
        return result

    async def notify_operator(self, notice: OperatorNotice) -> None:
        """Tell an operator role about an escalation (retried until it is delivered)."""
        with self._counted():
            await workflow.execute_activity(
                "notify_operator", notice,
                **activity_options.notify_operator(notice.step_id, notice.role),
            )

    async def send_citizen_email(self, email: CitizenEmailInput) -> CitizenEmailResult:
        """One email to the citizen, retried while the SMTP server is unavailable.

        Raises:
            ActivityError: it could not be sent (refused for good, or retries spent).
        """
        with self._counted():
            result: CitizenEmailResult = await workflow.execute_activity(
                "send_citizen_email", email, result_type=CitizenEmailResult,
                **activity_options.send_citizen_email(email.kind),
            )
        return result

    async def record_request(self, record: RecordRequestInput) -> None:
        """Write the request's row in the read model; a failure is logged, never raised."""
        with self._counted():
            try:
                await workflow.execute_local_activity(
                    "record_request", record,
                    **activity_options.record_request(finished=record.finished),
                )
            except ActivityError:
                # The read model is a view of this history; the request itself goes on.
                workflow.logger.warning("read model not updated for %s", record.reference)

    async def record_progress(self, record: RecordProgressInput) -> None:
        """Write what a message changed to the read model; a failure is logged, never raised
        (the request's end record brings the read model up to date anyway)."""
        with self._counted():
            try:
                await workflow.execute_local_activity(
                    "record_progress", record,
                    **activity_options.record_progress(record.step.step_id, record.event),
                )
            except ActivityError:
                workflow.logger.warning("read model not updated for %s after %s",
                                        record.reference, record.event)

    @contextmanager
    def _counted(self) -> Iterator[None]:
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
