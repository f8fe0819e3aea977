"""The soak's definitions on known inputs: recovery after a fault, the workload's oracle, the
end checks' bookkeeping (docs/reliability.md, "Soak")."""

from __future__ import annotations

import pytest

from benchmarks.soak.chaos import Fault
from benchmarks.soak.checks import Checks
from benchmarks.soak.figures import recovery, summarise
from benchmarks.soak.workload import SERVICES, agency_behaviour, catalog_services, plan_requests


def steady(start: float, end: float, per_s: float) -> list[float]:
    step = 1 / per_s
    return [start + i * step for i in range(int((end - start) * per_s))]


class TestRecovery:
    def test_a_gap_then_the_old_rate(self) -> None:
        """2 per second before the fault at t=100, nothing for 4 s, then 2 per second again:
        the first completion and the rate are both back 4 s after the fault."""
        closes = steady(80, 100, 2) + steady(104, 130, 2)
        figures = recovery(Fault("worker_kill", 100.0), closes, end=closes[-1])
        assert figures["first_completion_s"] == pytest.approx(4.0)
        assert figures["rate_recovered_s"] == pytest.approx(4.0)
        assert figures["pre_fault_rate_per_s"] == pytest.approx(2.0)
        assert "outage_s" not in figures

    def test_a_trickle_is_not_the_rate(self) -> None:
        """One completion 1 s after the fault, the old rate only from t=110: the first
        completion is at 1 s, the rate recovered at 10 s."""
        closes = [*steady(80, 100, 2), 101.0, *steady(110, 130, 2)]
        figures = recovery(Fault("temporal_restart", 100.0, back_at=106.5), closes,
                           end=closes[-1])
        assert figures["first_completion_s"] == pytest.approx(1.0)
        assert figures["rate_recovered_s"] == pytest.approx(10.0)
        assert figures["outage_s"] == pytest.approx(6.5)

    def test_nothing_before_or_nothing_after(self) -> None:
        assert recovery(Fault("worker_kill", 100.0), steady(105, 120, 1), end=120)[
            "rate_recovered_s"] is None  # no pre-fault rate to recover to
        after = recovery(Fault("worker_kill", 100.0), steady(80, 100, 1), end=100)
        assert after["first_completion_s"] is None
        assert after["rate_recovered_s"] is None

    def test_summary(self) -> None:
        submitted = {f"r{i}": float(i) for i in range(10)}
        closed = {f"r{i}": float(i) + 2.0 for i in range(10)}
        figures = summarise(submitted_at=submitted, closed_at=closed, faults=[])
        assert figures["closed"] == 10
        assert figures["end_to_end_s"]["p50"] == pytest.approx(2.0)
        assert figures["throughput_per_s"] == pytest.approx(10 / 11, abs=0.01)


class TestWorkload:
    def test_every_catalog_service_is_planned_and_varied(self) -> None:
        assert set(catalog_services()) == set(SERVICES)
        planned = plan_requests(200, seed=3)
        assert {p.service for p in planned} == set(SERVICES)
        assert len({p.idempotency_key for p in planned}) == 200
        assert len({str(p.submission) for p in planned}) == 200
        assert plan_requests(200, seed=3) == planned  # seeded
        counts = {len(p.effects) for p in planned if p.service == "change-of-address"}
        assert len(counts) > 3  # optional branches vary

    def test_expected_effects_follow_the_conditions(self) -> None:
        for p in plan_requests(100, seed=5):
            steps = [e.step for e in p.effects]
            assert len(steps) == len({(e.step, e.item) for e in p.effects})
            if p.service == "change-of-address":
                assert ("update_licence" in steps) == p.submission["has_driving_licence"]
                assert ("update_voter_registration" in steps) == p.submission[
                    "registered_to_vote"]
                assert steps.count("update_benefits") == len(p.submission.get("benefits", []))
            if p.service == "register-a-business":
                assert ("register_employer" in steps) == p.submission["will_employ_staff"]

    def test_the_experiment_has_three_callbacks_per_request(self) -> None:
        planned = plan_requests(50, seed=1, services=("change-of-address",),
                                all_callbacks=True)
        assert all(sum(e.callback for e in p.effects) == 3 for p in planned)

    def test_behaviour_fails_calls_and_calls_back(self) -> None:
        behaviour = agency_behaviour(0.05, 7)
        assert behaviour["benefits-agency"]["mode"] == "callback"
        assert {b["error_rate"] for b in behaviour.values()} == {0.05}
        seeds = [b["seed"] for k, b in behaviour.items() if k != "*"]
        assert len(set(seeds)) == len(seeds)  # not the same calls failing everywhere
        assert all(20 <= b["latency_ms"] <= 300 for k, b in behaviour.items() if k != "*")


def test_checks_pass_only_when_every_count_is_zero() -> None:
    checks = Checks()
    checks.zero("lost_effects", "stuck_running")
    assert checks.ok
    for i in range(7):
        checks.fail("lost_effects", f"r{i}")
    assert not checks.ok
    assert checks.counts["lost_effects"] == 7
    assert len(checks.examples["lost_effects"]) == 5
    assert checks.as_json()["ok"] is False
