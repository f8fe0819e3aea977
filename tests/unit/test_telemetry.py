"""The telemetry switches of a process, read from its environment: no server involved."""

from __future__ import annotations

import importlib.util

from structlog.testing import capture_logs

from runtime import telemetry


def test_tracing_switch_is_off_by_default_and_says_when_it_cannot_trace() -> None:
    """NWD_OTEL turns tracing on; without opentelemetry-sdk it logs why it cannot trace."""
    assert telemetry.TelemetrySettings.from_env({}, default_address=None).otel is False
    assert telemetry.TelemetrySettings.from_env({"NWD_OTEL": "1"}, default_address=None).otel
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


def test_metrics_address_setting() -> None:
    """NWD_METRICS_ADDRESS sets the worker's endpoint, `off` disables it; the intake has none
    by default."""
    settings = telemetry.TelemetrySettings.from_env
    default = telemetry.DEFAULT_WORKER_METRICS_ADDRESS
    assert settings({}, default_address=default).metrics_address == "127.0.0.1:9464"
    assert settings({"NWD_METRICS_ADDRESS": "0.0.0.0:9000"},
                    default_address=default).metrics_address == "0.0.0.0:9000"
    assert settings({"NWD_METRICS_ADDRESS": "off"}, default_address=default).metrics_address is None
    assert settings({}, default_address=None).metrics_address is None
