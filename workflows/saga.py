"""The compensation saga: when a request stops, undo what it completed, newest first.

A request stops when a required step fails or the citizen cancels. Once every branch has
ended (waiting ones withdraw), each completed call step that declares ``compensation`` is
undone in reverse order of completion, item by item::

    for step in reversed(completed):          a step with no compensation is left as it is
        for item in step's completed items:
            input  = compensation.input over {submission, steps, request, output, item}
            call (operation = compensation.operation, idempotency key ...:undo)
              ├─ done   ──▶ item compensated, CompensationOutcome "undone"
              └─ failed ──▶ CompensationOutcome "failed" with the agency's reason
        every item undone ──▶ step compensated

``output`` is the item's own output; ``item`` is the item's value for a ``for_each`` step —
the step's list is evaluated again, which gives the same values, since the submission and the
outputs it reads do not change once written (and a run after continue-as-new has no other
copy of them). An input that cannot be built (a type error, an item that is not an object)
fails that compensation with the reason and no call; it never fails the workflow task.
The calls are ordinary, idempotent agency calls with the step's own retry policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.exceptions import ActivityError

from definitions import expressions
from definitions.models import CallStep
from runtime.messages import ItemOutcome, RequestInput
from workflows.bindings import Bindings
from workflows.call_steps import CallSteps
from workflows.failures import read_failure
from workflows.state import RequestState


class Saga:
    """Undoes a stopping request's completed steps.

    Args:
        request: The request (its service's steps).
        state: Where compensations and compensated items are recorded.
        bindings: Builds each compensation's input.
        calls: Makes the undo calls (so they look like every other agency call).
    """

    def __init__(
        self, request: RequestInput, state: RequestState, bindings: Bindings, calls: CallSteps
    ) -> None:
        self._service = request.snapshot.service
        self._state = state
        self._bindings = bindings
        self._calls = calls

    async def compensate(self, completed_in_order: Sequence[str]) -> None:
        """Undo the steps in ``completed_in_order`` that declare how, newest first."""
        for step_id in reversed(completed_in_order):
            step = self._service.step(step_id)
            if not isinstance(step, CallStep) or step.compensation is None:
                continue
            values = self._item_values(step)
            undone = True
            for index, item in enumerate(self._state.steps[step_id].items):
                if item.status != "completed":
                    continue
                undone = await self._undo_item(step, index, item, values) and undone
            if undone:
                self._state.step_compensated(step_id)

    def _item_values(self, step: CallStep) -> dict[str | None, Any] | str:
        """The value of each item by key, or why the step's list cannot be had again."""
        if step.for_each is None:
            return {}
        try:
            values, keys = self._bindings.items_of(step)
        except expressions.ExpressionError as exc:
            return f"for_each: {exc.reason}"
        return dict(zip(keys, values, strict=True))

    async def _undo_item(
        self, step: CallStep, index: int, item: ItemOutcome, values: dict[str | None, Any] | str
    ) -> bool:
        assert step.compensation is not None
        operation = step.compensation.operation
        try:
            payload = self._payload(step, item, values)
        except expressions.ExpressionError as exc:
            self._state.compensation_failed(step.id, item.key, operation, f"input: {exc.reason}")
            return False
        call = self._calls.call_input(step, item.key, operation=operation, action="operation",
                                      payload=payload, suffix=("undo",))
        try:
            await self._calls.execute(step, call)
        except ActivityError as err:
            self._state.compensation_failed(step.id, item.key, operation,
                                            read_failure(err).reason)
            return False
        self._state.item_compensated(step.id, index)
        self._state.compensation_undone(step.id, item.key, operation)
        return True

    def _payload(
        self, step: CallStep, item: ItemOutcome, values: dict[str | None, Any] | str
    ) -> dict[str, Any]:
        """The compensation's input for one item.

        Raises:
            ExpressionError: the input cannot be built (including the item's value).
        """
        assert step.compensation is not None
        if step.for_each is None:
            activation = self._bindings.activation()
        elif isinstance(values, str):
            raise expressions.ExpressionError(step.for_each, values)
        elif item.key not in values:
            raise expressions.ExpressionError(
                step.for_each, f"for_each: no item {item.key!r} any more")
        else:
            activation = self._bindings.with_item(values[item.key])
        activation["output"] = item.output or {}
        return Bindings.payload(step.compensation.input, activation)
