"""Escalations: a missed deadline or overdue answer is recorded and sent to an operator role.

The audit log row is the durable record; the structured log line is what an operator's
alerting (or a ticketing integration) picks up. Neither holds personal data.
"""

from __future__ import annotations

import structlog
from temporalio import activity

from activities import metrics
from readmodel.store import ReadModel
from runtime.messages import OperatorNotice

log = structlog.get_logger(__name__)


class OperatorNotifications:
    def __init__(self, read_model: ReadModel) -> None:
        self._read_model = read_model

    @activity.defn(name="notify_operator")
    async def notify_operator(self, notice: OperatorNotice) -> None:
        await self._read_model.record_event(
            notice.reference,
            "escalated",
            {"kind": notice.kind, "role": notice.role, "detail": notice.detail},
            step_id=notice.step_id,
        )
        await self._read_model.mark_escalated(notice.reference, notice.step_id)
        metrics.escalation(service=notice.service, agency=None, step=notice.step_id)
        log.warning(
            "operator_notified",
            reference=notice.reference,
            service=notice.service,
            step=notice.step_id,
            role=notice.role,
            kind=notice.kind,
        )
