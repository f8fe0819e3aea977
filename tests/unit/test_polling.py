"""The tests' one polling helper keeps its promises: retry assertions, stop at the budget."""

from __future__ import annotations

import time

import pytest

from tests.polling import eventually


class Probe:
    """Fails its assertion until its ``passes_on``-th call, counting the calls."""

    def __init__(self, passes_on: int) -> None:
        self.passes_on = passes_on
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls < self.passes_on:
            raise AssertionError(f"call {self.calls}: not yet")
        return self.calls


class TestEventually:
    async def test_returns_the_probe_value_once_its_assertion_holds(self) -> None:
        """A probe that fails twice is called a third time, and its value is returned."""
        probe = Probe(passes_on=3)
        assert await eventually(probe, within_s=5, every_s=0.001) == 3
        assert probe.calls == 3

    async def test_raises_the_last_assertion_when_the_budget_is_spent(self) -> None:
        """Past ``within_s`` the probe's own last message is raised, not a bare timeout."""
        probe = Probe(passes_on=10**9)
        started = time.monotonic()
        with pytest.raises(AssertionError) as failed:
            await eventually(probe, within_s=0.2, every_s=0.01)
        assert time.monotonic() - started >= 0.2
        assert probe.calls > 1
        assert str(failed.value) == f"call {probe.calls}: not yet"

    async def test_other_errors_are_not_retried(self) -> None:
        """Only AssertionError means "not yet": any other error propagates at once."""
        calls = 0

        async def broken() -> None:
            nonlocal calls
            calls += 1
            raise ValueError("the probe itself is wrong")

        with pytest.raises(ValueError, match="the probe itself is wrong"):
            await eventually(broken, within_s=5, every_s=0.001)
        assert calls == 1
