"""The telemetry switches of a process: no server involved (the metrics addresses are settings:
tests/unit/test_settings.py)."""

from __future__ import annotations

import importlib.util

from structlog.testing import capture_logs

from runtime import telemetry
from runtime.settings import Settings


def test_tracing_switch_is_off_by_default_and_says_when_it_cannot_trace() -> None:
    """NWD_OTEL turns tracing on; without opentelemetry-sdk it logs why it cannot trace."""
    assert Settings().otel is False
    assert Settings(otel="1").otel
    assert telemetry.tracing_interceptors(False) == []
    with capture_logs() as logs:
        interceptors = telemetry.tracing_interceptors(True)
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        assert interceptors == []
        assert [entry["event"] for entry in logs] == ["tracing_unavailable"]
        assert "not installed" in logs[0]["reason"]
    else:
        from temporalio.contrib.opentelemetry import TracingInterceptor

        assert [type(i) for i in interceptors] == [TracingInterceptor]
