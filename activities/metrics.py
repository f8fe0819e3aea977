"""The engine's own metrics, recorded from inside activities.

The activities know most of what an operator wants counted: ``record_request`` knows the
service, the status at start and finish and the submission time (so the end-to-end duration);
``call_agency`` knows the agency, operation, outcome, latency and attempt (attempt > 1 is a
retry); ``notify_operator`` knows each escalation. They record through
``activity.metric_meter()``, so the figures leave the process by the same Prometheus endpoint as
the SDK's (see :mod:`runtime.telemetry` for names and buckets).

Two figures are recorded elsewhere, by whoever knows them: the time a request waited for an
agency's callback or a citizen's answer by the workflow's own ``workflow.metric_meter()``
(into the same ``nwd_agency_wait_seconds``), and the start of a request the front door wrote
itself by the intake (the workflow then has no start record to count it).

Labels are ids only: service, agency, operation, action, step id, status, outcome. Never a
reference or anything a citizen typed. Recording a metric never fails an activity.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from temporalio import activity
from temporalio.common import MetricMeter

from runtime import metric_names as names

log = structlog.get_logger(__name__)

OUTCOMES = {
    "AgencyRejected": "rejected",
    "AgencyUnavailable": "unavailable",
    "AgencyProtocolError": "protocol_error",
    "AgencyMisconfigured": "misconfigured",
}
"""Exception type names of the retry contract, as outcome label values."""


def _meter() -> MetricMeter | None:
    try:
        return activity.metric_meter()
    except RuntimeError:  # not in an activity, or no runtime meter: nothing to record to
        return None


def outcome_label(status_or_error_type: str) -> str:
    """``completed``/``accepted``/... unchanged; exception type names to short snake_case."""
    return OUTCOMES.get(status_or_error_type, status_or_error_type)


def request_started(service: str) -> None:
    """Count a request whose workflow recorded its own start (it was not started by the front
    door with a read model: ``nwd submit``, the demo, the benchmark)."""
    meter = _meter()
    if meter is None:
        return
    meter.create_counter(names.REQUESTS_STARTED, "Requests started", "1").add(
        1, {"service": service})


def request_finished(service: str, status: str, submitted_at: datetime,
                     now: datetime | None = None) -> None:
    """Count a finished request by final status and observe its end-to-end duration."""
    meter = _meter()
    if meter is None:
        return
    labels = {"service": service}
    if status == "completed":
        meter.create_counter(names.REQUESTS_COMPLETED, "Requests completed", "1").add(1, labels)
    elif status == "failed":
        meter.create_counter(names.REQUESTS_FAILED, "Requests failed", "1").add(1, labels)
    meter.create_counter(names.REQUESTS_FINISHED, "Requests finished, by status", "1").add(
        1, {**labels, "status": status})
    end = now or datetime.now(UTC)
    seconds = max((end - submitted_at).total_seconds(), 0.0)
    meter.create_histogram_float(
        names.REQUEST_DURATION, "Submission to final record", "s"
    ).record(seconds, {**labels, "status": status})


def agency_call(*, agency: str, operation: str, action: str, outcome: str, attempt: int,
                latency_s: float, final: bool, first_scheduled: datetime | None) -> None:
    """One agency call attempt: outcome count, latency, a retry if attempt > 1, and — when it
    is the final answer — the whole wait on the agency since the call was first scheduled."""
    meter = _meter()
    if meter is None:
        return
    label = outcome_label(outcome)
    meter.create_counter(names.AGENCY_CALLS, "Agency call attempts, by outcome", "1").add(
        1, {"agency": agency, "operation": operation, "action": action, "outcome": label})
    meter.create_histogram_float(
        names.AGENCY_CALL_LATENCY, "One agency call attempt", "s"
    ).record(max(latency_s, 0.0), {"agency": agency, "operation": operation, "outcome": label})
    if attempt > 1:
        meter.create_counter(names.AGENCY_CALL_RETRIES, "Agency call retries", "1").add(
            1, {"agency": agency, "operation": operation})
    if final and first_scheduled is not None:
        waited = (datetime.now(UTC) - first_scheduled).total_seconds()
        meter.create_histogram_float(
            names.AGENCY_WAIT, "Time a request waited on an agency", "s"
        ).record(max(waited, 0.0), {"agency": agency, "operation": operation, "outcome": label})


def escalation(*, service: str, agency: str | None, step: str) -> None:
    """Count a step escalated to a caseworker or operator (``notify_operator`` calls it)."""
    meter = _meter()
    if meter is None:
        return
    meter.create_counter(names.ESCALATIONS, "Steps escalated to a caseworker", "1").add(
        1, {"service": service, "agency": agency or "", "step": step})

