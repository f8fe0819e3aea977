"""The engine's metric names and histogram buckets: constants only, safe in workflow code.

The activities, the intake and the workflow's own meter (``workflow.metric_meter()``) record
under these names; :mod:`runtime.telemetry` exports them through the SDK's Prometheus runtime.
Labels are ids only — service, agency, operation, action, step, status, outcome — never a
reference or anything a citizen typed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

REQUESTS_STARTED = "nwd_requests_started"
"""Counter {service}: new requests, once each — by the intake when it wrote the request's first
row (``POST /requests``), else by the worker at the workflow's start record."""
REQUESTS_COMPLETED = "nwd_requests_completed"
"""Counter {service}: requests that finished with status ``completed``."""
REQUESTS_FAILED = "nwd_requests_failed"
"""Counter {service}: requests that finished with status ``failed``."""
REQUESTS_FINISHED = "nwd_requests_finished"
"""Counter {service, status}: every finished request, by final status (incl. partial/cancelled)."""
REQUEST_DURATION = "nwd_request_duration_seconds"
"""Histogram {service, status}: submission to final record, seconds."""
AGENCY_CALLS = "nwd_agency_calls"
"""Counter {agency, operation, action, outcome}: every agency call attempt and its outcome."""
AGENCY_CALL_LATENCY = "nwd_agency_call_latency_seconds"
"""Histogram {agency, operation, outcome}: one HTTP call attempt, seconds."""
AGENCY_CALL_RETRIES = "nwd_agency_call_retries"
"""Counter {agency, operation}: attempts after the first (attempt > 1)."""
AGENCY_WAIT = "nwd_agency_wait_seconds"
"""Histogram {agency, operation, outcome}: first schedule of a call to its final answer
(attempts, back-off and ``Retry-After`` included), seconds, by ``call_agency``; the workflow's
own metric meter adds the wait for a callback or a citizen's answer (outcome ``callback`` or
``information``)."""
ESCALATIONS = "nwd_escalations"
"""Counter {service, agency, step}: steps escalated because a deadline or a decision's due date
passed (``notify_operator``; ``agency`` is empty: the notice names the step, not its agency)."""
SUBMISSIONS = "nwd_intake_submissions"
"""Counter {service, outcome}: submissions the intake accepted, found again or refused."""

ENGINE_METRICS: tuple[str, ...] = (
    REQUESTS_STARTED, REQUESTS_COMPLETED, REQUESTS_FAILED, REQUESTS_FINISHED, REQUEST_DURATION,
    AGENCY_CALLS, AGENCY_CALL_LATENCY, AGENCY_CALL_RETRIES, AGENCY_WAIT, ESCALATIONS, SUBMISSIONS,
)

SECONDS_BUCKETS: Mapping[str, Sequence[float]] = {
    AGENCY_CALL_LATENCY: (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    AGENCY_WAIT: (0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600, 86400, 7 * 86400),
    REQUEST_DURATION: (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400,
                       5 * 86400, 30 * 86400),
}
"""Histogram buckets in seconds: a call lasts milliseconds, a request can last weeks."""
