"""What the benchmark runs: the modes it compares and the scenarios each one runs.

A scenario is a shape (a fan-out of N parallel calls, a for_each over N items, a chain of N
calls one after another), R requests and an agency latency. Every scenario runs on the two
Temporal modes; DBOS runs the fan-outs and the chain only (the shapes a DBOS user would write
by hand).
Pure data: no I/O, so the command line can check its options against it before anything
starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["baseline", "engine", "dbos"]
Shape = Literal["fanout", "foreach", "chain"]


@dataclass(frozen=True)
class ModeFacts:
    """What a mode is, as the figures and the table need it (its driver says how it runs)."""

    note: str
    """What the mode gives the user, printed under the table and stored in the JSON."""
    shapes: frozenset[Shape]
    """The scenario shapes this mode runs."""
    server: Literal["temporal", "postgres"]
    """The process the ``srv cpu`` column measures. DBOS has no server of its own: its server
    *is* PostgreSQL, so its CPU is counted once in the total."""


ALL_SHAPES: frozenset[Shape] = frozenset(("fanout", "foreach", "chain"))
DBOS_SHAPES: frozenset[Shape] = frozenset(("fanout", "chain"))
"""The scenarios DBOS runs: the fan-outs and the sequential chain (its for_each would be the
same fan-out again)."""

MODE_FACTS: dict[Mode, ModeFacts] = {
    "baseline": ModeFacts(
        note="hand-written Temporal workflow (not a product). Temporal gives: a UI with "
             "history, search and payloads decrypted through a codec server; durable timers "
             "kept by the server; workers scaling out across hosts, and a server scaling "
             "separately. srv cpu = Temporal server.",
        shapes=ALL_SHAPES, server="temporal",
    ),
    "engine": ModeFacts(
        note="No Wrong Door on Temporal: all of the baseline's, plus YAML services, intake "
             "validation, the PostgreSQL read model, search attributes and activity "
             "summaries. srv cpu = Temporal server.",
        shapes=ALL_SHAPES, server="temporal",
    ),
    "dbos": ModeFacts(
        note="DBOS (library, dbos on PyPI) on the same PostgreSQL: no server to run; no UI "
             "like Temporal's (DBOS Conductor is a separate, licensed product); scaling by "
             "more app processes on the same PostgreSQL; payloads stored unencrypted. "
             "srv cpu = PostgreSQL; events = step rows.",
        shapes=DBOS_SHAPES, server="postgres",
    ),
}
"""Every mode, in the order of a first repetition (see :func:`rotated`)."""
MODES: tuple[Mode, ...] = tuple(MODE_FACTS)
TEMPORAL_MODES: tuple[Mode, ...] = tuple(m for m, f in MODE_FACTS.items() if f.server == "temporal")
"""The modes on the Temporal server: every scenario runs them, and ``ratio`` is theirs."""
MODE_NOTES: dict[str, str] = {mode: facts.note for mode, facts in MODE_FACTS.items()}
"""What each mode gives the user, printed and stored next to the figures."""

AGENCY_COUNT = 5
"""The benchmark registry's agencies, ``bench-1`` .. ``bench-5``."""
SERVICE: dict[Shape, str] = {
    "fanout": "bench-fanout", "foreach": "bench-foreach", "chain": "bench-chain",
}
"""The engine's service (``benchmarks/definitions/services/``) for each shape."""


@dataclass(frozen=True)
class Scenario:
    name: str
    shape: Shape
    requests: int
    calls: int
    """Agency calls per request (N)."""
    latency_ms: float
    sequential_requests: bool = False
    """Submit one request at a time (the chain scenario: pure per-request overhead)."""

    @property
    def modes(self) -> tuple[Mode, ...]:
        """The modes this scenario runs: DBOS too for fan-outs and the chain."""
        return tuple(m for m in MODES if self.shape in MODE_FACTS[m].shapes)

    @property
    def depth(self) -> int:
        """Agency calls on the critical path of one request."""
        return self.calls if self.shape == "chain" else 1

    @property
    def critical_path_s(self) -> float:
        return self.depth * self.latency_ms / 1000

    @property
    def service(self) -> str:
        return SERVICE[self.shape]

    def submission(self, index: int) -> dict[str, Any]:
        """The engine's submission of request ``index`` (the baseline's calls derive from it)."""
        data: dict[str, Any] = {"label": f"bench-{index}"}
        if self.shape == "foreach":
            data["items"] = [{"n": n} for n in range(self.calls)]
        return data

    def baseline_calls(
        self, agencies_url: str, data: dict[str, Any]
    ) -> list[tuple[str, str, str | None, dict[str, Any]]]:
        """The calls the engine makes for ``data``, as ``(url, step, item, input)``: what the
        hand-written workflows (baseline, DBOS) are given to make."""

        def url(agency: int) -> str:
            return f"{agencies_url}/agencies/bench-{agency}/operations/record"

        label = data["label"]
        if self.shape == "fanout":
            return [(url(i), f"call_{i}", None, {"label": label})
                    for i in range(1, self.calls + 1)]
        if self.shape == "foreach":
            return [(url(1), "each", str(n), {"label": label, "n": n}) for n in range(self.calls)]
        return [(url((k - 1) % AGENCY_COUNT + 1), f"step_{k:02d}", None, {"label": label})
                for k in range(1, self.calls + 1)]


def scenarios(profile: str, latency_ms: float) -> list[Scenario]:
    """The issue's scenarios; ``quick`` shrinks R (and N=500 keeps N) for a run of minutes."""
    if profile == "full":
        return [
            Scenario("200x5", "fanout", 200, 5, latency_ms),
            Scenario("50x50", "foreach", 50, 50, latency_ms),
            Scenario("10x500", "foreach", 10, 500, latency_ms),
            Scenario("1x20-seq", "chain", 10, 20, latency_ms, sequential_requests=True),
            Scenario("200x5-0ms", "fanout", 200, 5, 0.0),
            # Memory with 1,000 requests open at once: slow agencies (4 s), one call each; the
            # worker's 200 connections serve them in 5 waves, inside the calls' 30 s timeout.
            Scenario("1000-inflight", "foreach", 1000, 1, 4000.0),
        ]
    if profile == "smoke":
        return [Scenario("3x2", "foreach", 3, 2, latency_ms),
                Scenario("3x2-fanout", "fanout", 3, 2, latency_ms)]
    return [
        Scenario("200x5", "fanout", 60, 5, latency_ms),
        Scenario("50x50", "foreach", 10, 50, latency_ms),
        Scenario("10x500", "foreach", 2, 500, latency_ms),
        Scenario("1x20-seq", "chain", 3, 20, latency_ms, sequential_requests=True),
        Scenario("200x5-0ms", "fanout", 60, 5, 0.0),
    ]


def rotated(modes: Sequence[Mode], repetition: int) -> list[Mode]:
    """The modes in the order of one repetition: each repetition starts one mode later, so
    every mode runs first, second, ... equally often (two modes: A B, then B A)."""
    if not modes:
        return []
    shift = repetition % len(modes)
    return [*modes[shift:], *modes[:shift]]
