"""Waiting in tests for what happens elsewhere: poll, never sleep a guessed time.

A workflow, an agency or the visibility store moves on its own; a test that sleeps and then
looks is slow when the guess is long and flaky when it is short. These two helpers poll
instead, in the spirit of sdk-python's ``assert_eventually`` (tests/helpers): a *probe* is an
async callable that raises :class:`AssertionError` while its condition does not hold yet and
returns once it does. When the wait budget runs out the probe's last assertion is raised, so
the failure shows what was last seen, not just that time ran out.

- :func:`eventually` polls any probe (a read model row, a describe, a list of workflows);
- :func:`progress_until` polls the request workflow's typed ``progress`` query.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio.client import WorkflowHandle

from runtime.messages import RequestProgress
from workflows.request_workflow import CitizenRequestWorkflow

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], *, within_s: float, every_s: float = 0.1
) -> T:
    """Call ``probe`` until it returns instead of raising :class:`AssertionError`; its value.

    Args:
        probe: asserts its condition; any other exception is not retried and propagates.
        within_s: the wait budget, in seconds of wall-clock time; when it has passed, the
            probe's last :class:`AssertionError` is raised.
        every_s: the pause between two calls.
    """
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await probe()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(every_s)


async def progress_until(
    handle: WorkflowHandle[Any, Any],
    check: Callable[[RequestProgress], bool],
    *,
    within_s: float,
    every_s: float = 0.1,
) -> RequestProgress:
    """Query ``handle``'s progress (typed: ``CitizenRequestWorkflow.progress``) until ``check``
    holds; that progress. The failure after ``within_s`` shows the last progress seen.

    A handle not pinned to a run follows the request through continue-as-new.
    """
    async def probe() -> RequestProgress:
        progress = await handle.query(CitizenRequestWorkflow.progress)
        assert check(progress), f"not reached within {within_s} s; last progress: {progress}"
        return progress

    return await eventually(probe, within_s=within_s, every_s=every_s)
