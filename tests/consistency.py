"""The read model equals Temporal: one assertion for every test that says a request came
through whole (a fault, a race, a restart). The comparison itself is
:mod:`nwd.consistency` (the soak uses it too); this polls until it finds no difference.

Usage (any tier with a read model and a client)::

    await engine.result(reference)
    await assert_read_model_equals_temporal(engine.read_model, engine.client, reference)
"""

from __future__ import annotations

from temporalio.client import Client

from nwd.consistency import differences, temporal_view
from readmodel.store import ReadModel, RequestRow
from tests.polling import eventually


async def assert_read_model_equals_temporal(
    read_model: ReadModel, client: Client, reference: str, *, within_s: float = 10.0
) -> RequestRow:
    """Wait until the read model's row of ``reference`` equals Temporal's view; that row.

    Args:
        read_model: the engine's read model (``Engine.read_model`` in the e2e tests).
        client: a client of the Temporal server running the request, with the engine's data
            converter (results and queries are encrypted).
        reference: the request reference (its workflow id).
        within_s: how long the two may take to agree (the read model's writers are local
            activities and agency-call activities: they land a moment after the state).

    Raises:
        AssertionError: they still differed after ``within_s``; the message lists each
            difference last seen.
    """
    async def agree() -> RequestRow:
        view = await temporal_view(client, reference)
        row = await read_model.get_request(reference)
        assert row is not None, f"the read model has no row for request {reference}"
        problems = differences(row, view)
        assert not problems, (f"read model and Temporal differ for {reference}:\n  "
                              + "\n  ".join(problems))
        return row

    return await eventually(agree, within_s=within_s, every_s=0.1)
