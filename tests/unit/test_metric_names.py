"""The workflow's own metric feeds the same series as the activities'."""

from __future__ import annotations

from runtime import telemetry
from workflows.call_steps import AGENCY_WAIT_METRIC


def test_workflow_wait_metric_is_the_shared_series() -> None:
    """Waits measured in the workflow land in nwd_agency_wait_seconds, like the activities'."""
    assert AGENCY_WAIT_METRIC == telemetry.AGENCY_WAIT
