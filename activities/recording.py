"""Local activities that write the read model: the request row at the start and the end of a
request, and the step a message changed while it runs (workflows/recording.py says when).

Local activities run inside the worker's workflow task: a record costs no extra round trip
to the Temporal server, which keeps the engine's overhead close to a hand-written workflow's.
"""

from __future__ import annotations

import structlog
from temporalio import activity

from activities import metrics
from readmodel.store import ReadModel
from runtime.messages import RecordProgressInput, RecordRequestInput

log = structlog.get_logger(__name__)


class RequestRecording:
    def __init__(self, read_model: ReadModel) -> None:
        self._read_model = read_model

    @activity.defn(name="record_request")
    async def record_request(self, record: RecordRequestInput) -> None:
        await self._read_model.record_request(record)
        # Requests finished by service and their end-to-end duration; a start only where this
        # record is the start's only trace (the front door counts the starts it records).
        if record.finished:
            metrics.request_finished(record.service, record.status, record.submitted_at)
        else:
            metrics.request_started(record.service)
        log.info(
            "request_recorded",
            reference=record.reference,
            service=record.service,
            status=record.status,
            finished=record.finished,
        )

    @activity.defn(name="record_progress")
    async def record_progress(self, record: RecordProgressInput) -> None:
        await self._read_model.record_progress(record)
        log.info(
            "request_progress_recorded",
            reference=record.reference,
            step=record.step.step_id,
            kind=record.event,
        )
