"""When the citizen is written to: an agency asks for information, a caseworker decides, the
request ends — each an email in the citizen's language, sent by the ``send_citizen_email``
activity (retried, once per key; activities/emails.py)::

    item waits for information ─▶ information_requested:<step>:<item>:<round>   (background)
    decision step decided       ─▶ decided:<step>                               (background)
    request finished, recorded  ─▶ finished  ─▶ every email still in flight awaited ─▶ result

Rules:

- only for a service whose definition has a ``contact`` block, and only when its ``email``
  expression gives an address (an optional field left out gives none: no email). The
  ``language`` expression, when it gives a tag, chooses the language; else the request's;
- the first email of a run is guarded by the ``citizen-emails`` patch: a request started
  before it (or whose snapshot has no ``contact``) schedules nothing new, so every recorded
  history replays;
- an email that cannot be sent (retries spent, or refused for good) is logged and the
  activity's ledger row says ``failed``; the request goes on and ends as it would have —
  an email never fails a request;
- the first two are sent in the background (the branch does not wait on the SMTP server);
  the end waits for all of them, so none is cut off when the workflow closes.

The address is personal: it is read from the submission when the email is sent, travels only
in the (encrypted) activity input, and is never logged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

from definitions import expressions
from definitions.models import CallStep, DecisionStep
from runtime.messages import (
    CaseworkerDecision,
    CitizenEmailInput,
    EmailKind,
    EmailOutcome,
    RequestInput,
)
from workflows.bindings import Bindings
from workflows.effects import Effects
from workflows.state import RequestState

CITIZEN_EMAILS = "citizen-emails"
"""Patch id: requests write to the citizen (never rename)."""


def field_labels(fields: dict[str, Any] | None) -> list[dict[str, str]]:
    """The label of each field an agency asked for (its name when it has none)."""
    labels: list[dict[str, str]] = []
    for name, spec in (fields or {}).items():
        label = spec.get("label") if isinstance(spec, dict) else None
        if isinstance(label, str) and label:
            labels.append({"en": label})
        elif isinstance(label, dict) and label:
            labels.append({str(k): str(v) for k, v in label.items()})
        else:
            labels.append({"en": name.replace("_", " ")})
    return labels


class CitizenEmails:
    """Writes to one request's citizen.

    Args:
        request: The request (snapshot with ``contact``, submission, language).
        state: The request's state (steps, items, final status).
        bindings: Evaluates the ``contact`` expressions.
        effects: Starts ``send_citizen_email``.
    """

    def __init__(self, request: RequestInput, state: RequestState, bindings: Bindings,
                 effects: Effects) -> None:
        self._request = request
        self._state = state
        self._bindings = bindings
        self._effects = effects
        self._pending: list[asyncio.Task[None]] = []

    def information_requested(self, step: CallStep, index: int) -> None:
        """The item ``index`` of ``step`` now waits for the citizen's answer."""
        item = self._state.steps[step.id].items[index]
        round_ = item.information_rounds + 1
        agency = self._request.snapshot.agency(step.agency)
        self._background("information_requested",
                         f"information_requested:{step.id}:{item.key or '-'}:{round_}",
                         step_title=step.title or agency.name, agency_name=agency.name,
                         information_message=item.information_message,
                         information_fields=field_labels(item.information_fields))

    def decided(self, step: DecisionStep, decision: CaseworkerDecision) -> None:
        """A caseworker approved or rejected ``step``."""
        self._background("decided", f"decided:{step.id}",
                         step_title=step.title or {"en": step.id.replace("_", " ")},
                         approved=decision.approve, reason=decision.reason)

    async def finished(self) -> None:
        """The request ended (its final status is fixed): what each step came to; then wait
        for every email still in flight."""
        email = self._email("finished", "finished", request_status=self._state.status,
                            outcomes=self._outcomes())
        if email is not None:
            await self._deliver(email)
        if self._pending:
            await asyncio.gather(*self._pending)

    # ------------------------------------------------------------------ inside

    def _outcomes(self) -> list[EmailOutcome]:
        outcomes: list[EmailOutcome] = []
        for step in self._request.snapshot.service.steps:
            outcome = self._state.steps.get(step.id)
            if outcome is None or outcome.status in ("skipped", "pending"):
                continue
            agency = (self._request.snapshot.agency(step.agency).name
                      if isinstance(step, CallStep) else None)
            reference = next((i.agency_reference for i in outcome.items if i.agency_reference),
                             None)
            outcomes.append(EmailOutcome(
                title=step.title or agency or {"en": step.id.replace("_", " ")},
                agency=agency, status=outcome.status, agency_reference=reference))
        return outcomes

    def _background(self, kind: EmailKind, key: str, **facts: Any) -> None:
        email = self._email(kind, key, **facts)
        if email is not None:
            self._pending.append(asyncio.create_task(self._deliver(email)))

    def _email(self, kind: EmailKind, key: str, **facts: Any) -> CitizenEmailInput | None:
        """The email, or None: no contact, no address, or a run from before the patch."""
        contact = self._request.snapshot.service.contact
        if contact is None:
            return None
        activation = self._bindings.activation()
        to = self._text(contact.email, activation)
        if to is None:
            return None
        language = (self._text(contact.language, activation) if contact.language else None)
        if not workflow.patched(CITIZEN_EMAILS):
            return None
        service = self._request.snapshot.service
        return CitizenEmailInput(
            reference=self._request.reference, service=service.service,
            service_title=service.title, kind=kind, key=key,
            language=language or self._request.language, to=to, **facts)

    @staticmethod
    def _text(expression: str, activation: dict[str, Any]) -> str | None:
        try:
            value = expressions.evaluate(expression, activation)
        except expressions.ExpressionError:
            return None  # an optional field the citizen left out
        return value if isinstance(value, str) and value else None

    async def _deliver(self, email: CitizenEmailInput) -> None:
        try:
            await self._effects.send_citizen_email(email)
        except ActivityError:
            # The activity's ledger row says failed; an email never fails the request.
            workflow.logger.warning("%s email of %s not sent", email.kind, email.reference)
