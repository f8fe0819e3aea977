"""Telemetry of the engine's processes: one Prometheus ``/metrics`` endpoint each, optional tracing.

Metrics go through the Temporal SDK's own runtime: the SDK's metrics (workflow and activity
task latencies, polls, schedule-to-start, ...) and the engine's metrics (below, recorded through
the SDK's meters by the activities, the workflow and the intake, named in
:mod:`runtime.metric_names`) come out of the same endpoint. No
extra dependency: the SDK's core exports Prometheus text itself.

The engine's metrics carry only service ids, agency ids, operation names, statuses and outcomes
as labels — never a reference, a name or anything else a citizen typed.

Where each endpoint listens and whether to trace are settings (``NWD_WORKER_METRICS_ADDRESS``,
``NWD_INTAKE_METRICS_ADDRESS``, ``NWD_OTEL``: :mod:`runtime.settings`). Tracing
(OpenTelemetry) is off by default; ``NWD_OTEL=1`` turns it on for a process when the
``opentelemetry-sdk`` package is installed (see :func:`tracing_interceptors`).
"""

from __future__ import annotations

import structlog
from temporalio.client import Interceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from runtime.metric_names import SECONDS_BUCKETS

log = structlog.get_logger(__name__)


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
