"""Callbacks signed while an agency rotates its secret, through the real intake over HTTP.

The contract lets an agency send several comma-separated ``v1=`` signatures while a secret
rotates (old and new); one that matches is enough. These drive a real request to a real wait
for a callback, then POST to the intake's callback route (FastAPI served by uvicorn).
"""

from __future__ import annotations

import secrets
import time

from temporalio.api.enums.v1 import EventType

from agency_kit.contract import Callback
from agency_kit.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from runtime import callback_tokens as tokens
from runtime.messages import RequestProgress, StepOutcome
from tests.e2e.conftest import Engine, example
from tests.polling import progress_until
from workflows.request_workflow import CitizenRequestWorkflow

VOTER = "update_voter_registration"
AGENCY = "electoral-registration"


async def waiting_voter_step(engine: Engine) -> tuple[str, StepOutcome]:
    """A change of address whose voter-roll agency accepted (202) and has not called back."""
    await engine.agencies.set_behaviour(AGENCY, {"mode": "callback", "callback_delay_s": 36000})
    reference = await engine.submit("change-of-address", example("change-of-address"))
    progress = await progress_until(
        engine.submissions.handle(reference), voter_waits_for_callback, within_s=20)
    return reference, voter_step(progress)


def voter_step(progress: RequestProgress) -> StepOutcome:
    return next(s for s in progress.steps if s.step_id == VOTER)


def voter_waits_for_callback(progress: RequestProgress) -> bool:
    step = voter_step(progress)
    return step.status == "waiting" and step.items[0].waiting_for == "callback"


async def post_callback(
    engine: Engine, reference: str, body: bytes, stamp: int, signature: str
) -> int:
    token = tokens.issue(engine.callback_key, tokens.CallbackTarget(reference, VOTER, None, AGENCY))
    response = await engine.intake.post(f"/callbacks/{token}", content=body, headers={
        "Content-Type": "application/json", TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: signature,
    })
    return response.status_code


async def updates_in_history(engine: Engine, reference: str) -> int:
    history = await engine.client.get_workflow_handle(reference).fetch_history()
    return sum(
        1 for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    )


class TestSecretRotation:
    async def test_old_and_new_signatures_are_accepted_and_wrong_ones_change_nothing(
        self, engine: Engine
    ) -> None:
        """``v1=<old>, v1=<new>`` completes the wait; only wrong ones get 401 and no update."""
        reference, step = await waiting_voter_step(engine)
        agency_reference = step.items[0].agency_reference
        assert agency_reference
        current = engine.agencies.env["NWD_AGENCY_ELECTORAL_REGISTRATION_SECRET"]
        old, other = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        body = Callback(
            status="completed", agency_reference=agency_reference,
            output={"reference": agency_reference},
        ).model_dump_json().encode()

        stamp = int(time.time())
        wrong = f"{sign(old, stamp, body)}, {sign(other, stamp, body)}"
        assert await post_callback(engine, reference, body, stamp, wrong) == 401
        progress = await engine.submissions.handle(reference).query(
            CitizenRequestWorkflow.progress)
        assert voter_waits_for_callback(progress), progress
        assert await updates_in_history(engine, reference) == 0

        stamp = int(time.time())
        rotating = f"{sign(old, stamp, body)}, {sign(current, stamp, body)}"
        assert await post_callback(engine, reference, body, stamp, rotating) == 200
        result = await engine.result(reference)
        assert result.status == "completed"
        voter_done = next(s for s in result.steps if s.step_id == VOTER)
        assert voter_done.status == "completed"
        assert voter_done.items[0].agency_reference == agency_reference
        assert await updates_in_history(engine, reference) == 1
