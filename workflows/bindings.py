"""What a definition's CEL expressions see, and how a step's input is mapped from it.

Every expression of a definition (``when``, ``for_each``, ``item_key``, ``input``,
``compensation.input``) is evaluated over one *activation*::

    submission   the citizen's validated submission
    steps        {step_id: {"output": ...}} of every step that completed so far
    request      {"reference": ..., "language": ...}
    item         the current item of a for_each step (only there)
    output       the step's own output (only in compensation.input)

Rules:

- a ``when`` that cannot be evaluated (it reads an optional field the citizen left out) is
  false: the step does not apply, and the reason is logged, not raised;
- in an input mapping, a path to an absent value (``MissingValue``) leaves that field out of
  the payload, so the agency receives only what exists; any other failure (a type error,
  reading a member of a non-object) is the caller's to turn into a failed item or a failed
  compensation — never an exception that fails the workflow task;
- ``for_each`` must give a list; ``item_key`` gives each item's key (its position
  otherwise), the key that goes into idempotency keys.

Deterministic: evaluation is pure over the activation; the outputs are read live from the
request state, so a step sees every output recorded before it started.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from temporalio import workflow

from definitions import expressions
from definitions.models import CallStep
from runtime.messages import RequestInput
from workflows.planner import PlanStep
from workflows.state import RequestState


class Bindings:
    """Evaluates one request's expressions.

    Args:
        request: The request (submission, reference, language).
        state: The request's state, whose ``outputs`` are read at each evaluation.
    """

    def __init__(self, request: RequestInput, state: RequestState) -> None:
        self._request = request
        self._state = state

    def activation(self) -> dict[str, Any]:
        """The activation without ``item`` (a fresh dict: callers may add to it)."""
        return {
            "submission": self._request.submission,
            "steps": {sid: {"output": out} for sid, out in self._state.outputs.items()},
            "request": {
                "reference": self._request.reference,
                "language": self._request.language,
            },
        }

    def with_item(self, item: Any) -> dict[str, Any]:
        activation = self.activation()
        activation["item"] = item
        return activation

    def condition(self, step: PlanStep) -> bool:
        """The step's ``when`` (the planner calls this once, when its needs completed)."""
        assert step.when is not None
        try:
            value = expressions.evaluate(step.when, self.activation())
        except expressions.ExpressionError as exc:
            # A value the condition reads is absent (an optional field): the step does not apply.
            workflow.logger.info("condition of %s not evaluable: %s", step.id, exc.reason)
            return False
        return value is True

    def items_of(self, step: CallStep) -> tuple[list[Any], list[str | None]]:
        """The values a step calls for and their keys: ``[None], [None]`` without for_each.

        Raises:
            ExpressionError: ``for_each`` or ``item_key`` failed, or gave no list.
        """
        if step.for_each is None:
            return [None], [None]
        value = expressions.evaluate(step.for_each, self.activation())
        if not isinstance(value, list):
            raise expressions.ExpressionError(step.for_each, "for_each did not give a list")
        keys: list[str | None] = []
        for index, item in enumerate(value):
            if step.item_key is None:
                keys.append(str(index))
            else:
                keys.append(str(expressions.evaluate(step.item_key, self.with_item(item))))
        return value, keys

    @staticmethod
    def payload(mapping: Mapping[str, str], activation: Mapping[str, Any]) -> dict[str, Any]:
        """The fields of an input mapping, without those whose value is absent.

        Raises:
            ExpressionError: an expression failed for another reason than an absent value.
        """
        payload: dict[str, Any] = {}
        for name, expression in mapping.items():
            try:
                payload[name] = expressions.evaluate(expression, activation)
            except expressions.MissingValue:
                continue  # an optional value the citizen left out is simply not sent
        return payload
