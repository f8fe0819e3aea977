"""Telemetry of the engine's processes: one Prometheus ``/metrics`` endpoint each, optional tracing.

Metrics go through the Temporal SDK's own runtime: the SDK's metrics (workflow and activity
task latencies, polls, schedule-to-start, ...) and the engine's metrics (below, recorded through
the SDK's meters by the activities, the workflow and the intake) come out of the same endpoint. No
extra dependency: the SDK's core exports Prometheus text itself.

The engine's metrics carry only service ids, agency ids, operation names, statuses and outcomes
as labels — never a reference, a name or anything else a citizen typed.

Where each endpoint listens and whether to trace are settings (``NWD_WORKER_METRICS_ADDRESS``,
``NWD_INTAKE_METRICS_ADDRESS``, ``NWD_OTEL``: :mod:`runtime.settings`). Tracing
(OpenTelemetry) is off by default; ``NWD_OTEL=1`` turns it on for a process when the
``opentelemetry-sdk`` package is installed (see :func:`tracing_interceptors`).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence

import structlog
from temporalio.client import Interceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

log = structlog.get_logger(__name__)

# ------------------------------------------------------------------ the engine's metric names
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


def prometheus_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime exporting every metric (SDK and engine) at ``http://{bind}/metrics``."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=bind_address,
                histogram_bucket_overrides=dict(SECONDS_BUCKETS),
            )
        )
    )


def free_local_address() -> str:
    """``127.0.0.1:<port>`` of a port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def tracing_interceptors(enabled: bool) -> list[Interceptor]:
    """The OpenTelemetry tracing interceptor when ``enabled`` and installed, else nothing.

    Spans go to whatever global tracer provider the process configured (the standard
    ``OTEL_*`` environment variables of ``opentelemetry-sdk``/exporters). A missing package is
    said once, loudly, at start-up — the engine runs on without tracing.
    """
    if not enabled:
        return []
    try:
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError as exc:
        log.error(
            "tracing_unavailable",
            reason="NWD_OTEL=1 but OpenTelemetry is not installed "
                   f"({exc.name or exc}); install opentelemetry-sdk to trace. "
                   "Running without tracing.",
        )
        return []
    log.info("tracing_enabled", interceptor="temporalio.contrib.opentelemetry.TracingInterceptor")
    return [TracingInterceptor()]
