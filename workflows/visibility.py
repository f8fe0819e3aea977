"""How a request shows itself: search attributes, current details, and the query's words.

Operators find requests in the Temporal UI by search attributes (keys in
:mod:`workflows.search_attributes`; plaintext, so never personal) and read the *current
details* line of each; citizens and the CLI read the ``progress`` query's plain words. The
workflow sets them at these moments, and only when they change:

================  =======================================================================
moment            what changes
================  =======================================================================
steps change      current details ("Waiting on: ..."); ``AgenciesAwaited`` if its set changed
escalation        ``Escalated`` = true
stopping          current details ("Stopping (...); undoing completed steps.")
finished          ``RequestStatus``; ``AgenciesAwaited`` emptied if it was not yet empty
================  =======================================================================

Each search-attribute upsert is a command in history and a visibility write on the server,
so the set is compared before writing: writing ``[]`` again into a KeywordList cost a
full-text index update per request on the dev server. Current details are not commands.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from runtime.messages import RequestOptions, RequestStatus, StepOutcome
from workflows import search_attributes as sa

_WAITING_FOR = {
    "callback": "the agency's answer (callback)",
    "information": "the citizen's answer to a request for information",
    None: "the agency call",
}


class Visibility:
    """The search attributes and current details of one request (one run of it).

    Args:
        options: The request's options: whether search attributes are kept at all, and
            what ``AgenciesAwaited`` means for it.
    """

    def __init__(self, options: RequestOptions) -> None:
        self._options = options
        self._awaited: tuple[str, ...] = ()
        self._busy: tuple[str, ...] = ()

    def publish_awaited(self, steps: Iterable[StepOutcome]) -> None:
        """Say what the request waits on: in the current details always, in the
        AgenciesAwaited search attribute only for waits beyond a prompt call.

        An agency is *awaited* while a branch waits on it for a callback or on the citizen's
        answer to it (or a caseworker's decision): the long waits operators search for. Prompt
        calls are not listed: doing so cost a visibility write each time one returned, the
        engine's largest extra server cost in the benchmark (docs/benchmarks.md). Requests
        started before this change carry ``awaited="busy"`` and keep the old meaning, so
        their histories replay unchanged.
        """
        live = [s for s in steps if s.status in ("running", "waiting")]
        busy = tuple(sorted({s.agency or "caseworker" for s in live}))
        if busy != self._busy:
            self._busy = busy
            workflow.set_current_details(
                "Waiting on: " + ", ".join(busy) + "." if busy else "Deciding next steps."
            )
        if self._options.awaited == "long_waits":
            awaited = tuple(sorted({
                s.agency or "caseworker" for s in live if s.status == "waiting"
            }))
        else:
            awaited = busy
        if awaited != self._awaited:
            self._awaited = awaited
            self._upsert(sa.AGENCIES_AWAITED.value_set(list(awaited)))

    def escalated(self) -> None:
        self._upsert(sa.ESCALATED.value_set(True))

    def stopping(self, reason: str) -> None:
        workflow.set_current_details(f"Stopping ({reason}); undoing completed steps.")

    def finished(self, status: RequestStatus) -> None:
        # AgenciesAwaited is already empty here unless a wait was cut short.
        updates: list[SearchAttributeUpdate[Any]] = [sa.REQUEST_STATUS.value_set(status)]
        if self._awaited:
            updates.append(sa.AGENCIES_AWAITED.value_set([]))
        self._upsert(*updates)
        workflow.set_current_details(f"Finished: {status.replace('_', ' ')}.")

    def _upsert(self, *updates: SearchAttributeUpdate[Any]) -> None:
        if self._options.search_attributes:
            workflow.upsert_search_attributes(list(updates))


def waiting_descriptions(steps: Iterable[StepOutcome]) -> list[str]:
    """What the request waits for, in plain words, one line per live step or item."""
    described = []
    for s in steps:
        if s.status not in ("running", "waiting"):
            continue
        if s.kind == "decision":
            described.append(f"{s.step_id}: a caseworker's decision")
            continue
        for item in s.items:
            what = _WAITING_FOR.get(item.waiting_for, "the agency")
            label = s.step_id + (f"[{item.key}]" if item.key is not None else "")
            described.append(f"{label}: {s.agency}: {what}")
    return described
