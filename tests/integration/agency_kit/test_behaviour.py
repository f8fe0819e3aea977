"""Injected behaviour: errors, outages, callback mode, needs-information, cancel, reject, undo."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from agency_kit.outbox import RetryPolicy
from runtime.process import free_port
from tests.integration.agency_kit.conftest import (
    Agencies,
    Receiver,
    StartAgencies,
    request_body,
    verify_callback,
)
from tests.polling import eventually


async def next_callback(receiver: Receiver, wait_s: float = 5.0) -> tuple[dict[str, str], bytes]:
    return await asyncio.wait_for(receiver.received.get(), wait_s)


async def first_records(agencies: Agencies) -> list[dict[str, Any]]:
    """The dmv records of a stopped app, read straight from its database."""
    conn = await asyncpg.connect(agencies.database_url)
    try:
        rows = await conn.fetch("SELECT status, due_at FROM agency_dmv.records ORDER BY id")
    finally:
        await conn.close()
    return [dict(row) for row in rows]


class TestFailures:
    async def test_every_second_call_fails_before_writing(self, agencies: Agencies) -> None:
        """error_every=2: the 2nd call is a 503 with nothing written; its retry succeeds."""
        await agencies.behave("dmv", {"error_every": 2})
        first = await agencies.call("dmv", "update-address", request_body())
        body = request_body()
        failed = await agencies.call("dmv", "update-address", body)
        assert first.status_code == 200
        assert failed.status_code == 503
        assert failed.headers["Retry-After"] == "1"
        assert await agencies.count("dmv", "records") == 1
        assert await agencies.count("dmv", "idempotency") == 1
        retried = await agencies.call("dmv", "update-address", body)
        assert retried.status_code == 200
        assert await agencies.count("dmv", "records") == 2

    async def test_seeded_error_rate_is_reproducible(self, agencies: Agencies) -> None:
        """The same seed gives the same pattern of failures after the behaviour is set again."""

        async def pattern() -> list[int]:
            await agencies.behave("dmv", {"error_rate": 0.5, "seed": 7})
            codes = []
            for _ in range(6):
                response = await agencies.call("dmv", "update-address", request_body())
                codes.append(response.status_code)
            return codes

        first, second = await pattern(), await pattern()
        assert first == second
        assert {200, 503} == set(first)

    async def test_outage_window(self, agencies: Agencies) -> None:
        """During an outage every call is a 503 with Retry-After; afterwards calls succeed."""
        await agencies.behave("dmv", {"outage": {"duration_s": 60}})
        down = await agencies.call("dmv", "update-address", request_body())
        assert down.status_code == 503
        assert 55 <= int(down.headers["Retry-After"]) <= 60
        await agencies.behave("dmv", {})
        assert (await agencies.call("dmv", "update-address", request_body())).status_code == 200

    async def test_operation_level_behaviour_overrides_agency_level(
        self, start_agencies: StartAgencies
    ) -> None:
        """Start-up behaviour from JSON: the operation entry wins over the agency's."""
        agencies = await start_agencies(
            {"dmv": {"outage": {}, "operations": {"revert-address": {"outage": None}}}}
        )
        assert (await agencies.call("dmv", "update-address", request_body())).status_code == 503
        undo = request_body(input={"reference": "DMV-000999"})
        # A null does not clear an inherited key: the outage applies to every operation.
        assert (await agencies.call("dmv", "revert-address", undo)).status_code == 503
        await agencies.behave(
            "dmv", {"operations": {"update-address": {"outage": {"duration_s": 60}}}}
        )
        assert (await agencies.call("dmv", "revert-address", undo)).status_code == 200

    async def test_reject(self, agencies: Agencies) -> None:
        """reject: every call is refused with the given code, and nothing is recorded."""
        await agencies.behave(
            "dmv", {"reject": {"code": "licence_not_found", "reason": "No such licence"}}
        )
        response = await agencies.call("dmv", "update-address", request_body())
        assert response.status_code == 409
        assert response.json() == {
            "status": "rejected",
            "code": "licence_not_found",
            "reason": "No such licence",
        }
        assert await agencies.count("dmv", "records") == 0

    async def test_invalid_behaviour_is_refused(self, agencies: Agencies) -> None:
        """The admin API checks behaviour JSON and names the bad key."""
        response = await agencies.http.put(
            f"{agencies.url}/_admin/agencies/dmv/behaviour", json={"error_rate": 2}
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["path"] == "error_rate"

    async def test_latency(self, agencies: Agencies) -> None:
        """latency_ms delays the answer without blocking other agencies."""
        await agencies.behave("dmv", {"latency_ms": 400})
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = asyncio.create_task(agencies.call("dmv", "update-address", request_body()))
        fast = await agencies.call(
            "companies", "register-company", request_body(input={"business_name": "Acme"})
        )
        fast_done = loop.time() - started
        assert (await slow).status_code == 200
        assert fast.status_code == 200
        assert fast_done < 0.4
        assert loop.time() - started >= 0.4


class TestCallbackMode:
    async def test_accepted_then_signed_callback(
        self, agencies: Agencies, receiver: Receiver
    ) -> None:
        """202 now; later a callback signed with the agency's own key carries the output."""
        await agencies.behave("dmv", {"mode": "callback", "callback_delay_s": 0.1})
        body = request_body(callback_url=receiver.url)
        response = await agencies.call("dmv", "update-address", body)
        assert response.status_code == 202
        assert response.json() == {"status": "accepted", "agency_reference": "DMV-000001"}
        [record] = await agencies.records("dmv")
        assert record["status"] == "accepted"

        headers, raw = await next_callback(receiver)
        verify_callback(agencies.credentials, "dmv", receiver.url, raw, headers)
        assert headers["x-nwd-reference"] == body["reference"]
        assert headers["idempotency-key"] == f"{body['reference']}:dmv:-:callback"
        callback = json.loads(raw)
        assert callback["status"] == "completed"
        assert callback["agency_reference"] == "DMV-000001"
        assert callback["output"]["reference"] == "DMV-000001"
        assert set(callback) == {
            "status", "agency_reference", "output", "reason", "code", "fields", "message"
        }

        async def sent() -> None:
            [row] = await agencies.records("dmv")
            assert (row["status"], row["due_at"]) == ("completed", None), row
            [owed] = await agencies.outbox("dmv")
            assert (owed["state"], owed["attempts"], owed["last_status"]) == (
                "delivered", 1, 200
            ), owed
            assert owed["subject"] == "DMV-000001"
            assert owed["key"] == f"{body['reference']}:dmv:-:callback"

        await eventually(sent, within_s=5, every_s=0.05)
        again = await agencies.call("dmv", "update-address", body)
        assert again.status_code == 202
        assert again.json() == response.json()

    async def test_callback_retries_server_errors(
        self, start_agencies: StartAgencies, receiver: Receiver
    ) -> None:
        """The callback is retried with backoff after 503s until it is taken."""
        agencies = await start_agencies(
            {"dmv": {"mode": "callback", "callback_delay_s": 0}},
            callback_retry=RetryPolicy(initial_interval_s=0.05),
        )
        receiver.fail_first = 2
        await agencies.call("dmv", "update-address", request_body(callback_url=receiver.url))
        headers, raw = await next_callback(receiver)
        verify_callback(agencies.credentials, "dmv", receiver.url, raw, headers)
        assert receiver.attempts == 3

    async def test_callback_refused_with_4xx_is_not_retried(
        self, agencies: Agencies, receiver: Receiver
    ) -> None:
        """A 4xx from the engine stops the retries; the record says the callback was refused."""
        await agencies.behave("dmv", {"mode": "callback", "callback_delay_s": 0})
        receiver.status_after = 401
        await agencies.call("dmv", "update-address", request_body(callback_url=receiver.url))
        await next_callback(receiver)

        async def refused() -> None:
            [row] = await agencies.outbox("dmv")
            assert (row["state"], row["last_status"]) == ("refused", 401), row

        await eventually(refused, within_s=5, every_s=0.05)
        assert receiver.attempts == 1

    async def test_rejection_by_callback(self, agencies: Agencies, receiver: Receiver) -> None:
        """reject in callback mode: 202 first, then a rejected callback."""
        await agencies.behave(
            "dmv",
            {"mode": "callback", "callback_delay_s": 0, "reject": {"code": "x", "reason": "no"}},
        )
        response = await agencies.call(
            "dmv", "update-address", request_body(callback_url=receiver.url)
        )
        assert response.status_code == 202
        _, raw = await next_callback(receiver)
        callback = json.loads(raw)
        assert (callback["status"], callback["code"], callback["reason"]) == ("rejected", "x", "no")
        assert callback["output"] == {}

    async def test_without_callback_url_answers_synchronously(self, agencies: Agencies) -> None:
        """Callback mode needs a callback_url; without one the call completes at once."""
        await agencies.behave("dmv", {"mode": "callback"})
        response = await agencies.call("dmv", "update-address", request_body())
        assert response.status_code == 200
        assert response.json()["status"] == "completed"

    async def test_pending_callbacks_resume_after_restart(
        self, start_agencies: StartAgencies, receiver: Receiver
    ) -> None:
        """An outcome still due when the app stops is finished and sent by the next start."""
        first = await start_agencies({"dmv": {"mode": "callback", "callback_delay_s": 1.0}})
        await first.call("dmv", "update-address", request_body(callback_url=receiver.url))
        await first.stop()
        [record] = await first_records(first)
        assert (record["status"], record["due_at"] is not None) == ("accepted", True)
        await start_agencies()  # a new process on the same database: nothing in its memory
        _, raw = await next_callback(receiver)
        assert json.loads(raw)["status"] == "completed"

    async def test_callbacks_owed_in_a_table_from_before_the_outbox_are_adopted(
        self, start_agencies: StartAgencies, receiver: Receiver
    ) -> None:
        """A records table of the old shape (callback_state = 'pending', no due time): on
        start-up the finished record's callback moves into the outbox, the accepted one
        falls due; both are sent once and the old column goes."""
        first = await start_agencies({"dmv": {"mode": "callback", "callback_delay_s": 60}})
        finished, accepted = (request_body(callback_url=receiver.url) for _ in range(2))
        for body in (finished, accepted):
            assert (await first.call("dmv", "update-address", body)).status_code == 202
        await first.stop()
        conn = await asyncpg.connect(first.database_url)
        try:
            await conn.execute(
                "ALTER TABLE agency_dmv.records ADD COLUMN callback_state text;"
                " UPDATE agency_dmv.records SET callback_state = 'pending', due_at = NULL;"
                " UPDATE agency_dmv.records SET status = 'completed', output = '{\"n\": 1}'"
                f" WHERE reference = '{finished['reference']}'"
            )
        finally:
            await conn.close()
        await start_agencies({"dmv": {"mode": "callback", "callback_delay_s": 60}})
        got: dict[str, dict[str, Any]] = {}
        for _ in range(2):
            headers, raw = await next_callback(receiver)
            got[headers["x-nwd-reference"]] = json.loads(raw)
        assert got[finished["reference"]]["output"] == {"n": 1}
        assert got[accepted["reference"]]["status"] == "completed"

        async def delivered_once_each() -> None:
            rows = await _outbox_rows(first)
            assert sorted(rows) == [("delivered", 1), ("delivered", 1)], rows

        await eventually(delivered_once_each, within_s=5, every_s=0.05)
        assert receiver.received.empty(), "each callback once"
        conn = await asyncpg.connect(first.database_url)
        try:
            assert not await conn.fetchval(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema ="
                " 'agency_dmv' AND table_name = 'records' AND column_name = 'callback_state'"
            )
        finally:
            await conn.close()

    async def test_information_in_callback_mode_is_told_by_callback(
        self, agencies: Agencies, receiver: Receiver
    ) -> None:
        """Answers to needs_information in callback mode: 202, then the completion by callback."""
        await agencies.behave("dmv", {
            "mode": "callback", "callback_delay_s": 0,
            "needs_information": {"fields": {"proof": {"type": "text"}}},
        })
        body = request_body(callback_url=receiver.url)
        asked = await agencies.call("dmv", "update-address", body)
        assert asked.json()["status"] == "needs_information"
        assert receiver.received.empty()
        info = {"reference": body["reference"], "step": "dmv", "item": None,
                "agency_reference": asked.json()["agency_reference"],
                "answers": {"proof": "a bill"}}
        answered = await agencies.post(
            "dmv", "/operations/update-address/information", info,
            key=f"{body['reference']}:dmv:-:info:1",
        )
        assert answered.status_code == 202, answered.text
        _, raw = await next_callback(receiver)
        assert json.loads(raw)["status"] == "completed"
        [record] = await agencies.records("dmv")
        assert (record["status"], record["answers"]) == ("completed", {"proof": "a bill"})


class TestIdle:
    async def test_idle_agencies_leave_their_database_alone(
        self, start_agencies: StartAgencies, receiver: Receiver
    ) -> None:
        """After a callback, with nothing due: neither the due-work loop nor the outbox
        sender touches the database until the next poll (no busy loop)."""
        agencies = await start_agencies(
            {"dmv": {"mode": "callback", "callback_delay_s": 0}}, poll_interval_s=60
        )
        await agencies.call("dmv", "update-address", request_body(callback_url=receiver.url))
        await next_callback(receiver)

        async def settled() -> None:
            [row] = await agencies.outbox("dmv")
            assert row["state"] == "delivered", row

        await eventually(settled, within_s=5, every_s=0.05)
        conn = await asyncpg.connect(agencies.database_url)
        try:
            before = await _commits(conn)
            await asyncio.sleep(3)  # the window the database is watched over
            after = await _commits(conn)
        finally:
            await conn.close()
        assert after - before < 30, f"{after - before} transactions in 3 s of idling"


async def _outbox_rows(agencies: Agencies) -> list[tuple[str, int]]:
    """(state, attempts) of the dmv outbox, read straight from the database."""
    conn = await asyncpg.connect(agencies.database_url)
    try:
        rows = await conn.fetch("SELECT state, attempts FROM agency_dmv.outbox")
    finally:
        await conn.close()
    return [(row["state"], row["attempts"]) for row in rows]


async def _commits(conn: asyncpg.Connection) -> int:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return int(await conn.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    ))


class TestNeedsInformation:
    FIELDS = {"proof_of_address": {"type": "text", "label": {"en": "Proof", "es": "Prueba"}}}
    MESSAGE = {"en": "Please send proof of address", "es": "Envíe un justificante"}

    async def test_answer_completes(self, agencies: Agencies) -> None:
        """needs_information first; answering through /information completes the operation."""
        await agencies.behave(
            "dmv", {"needs_information": {"fields": self.FIELDS, "message": self.MESSAGE}}
        )
        body = request_body()
        asked = await agencies.call("dmv", "update-address", body)
        assert asked.status_code == 200
        assert asked.json() == {
            "status": "needs_information",
            "agency_reference": "DMV-000001",
            "fields": {
                "proof_of_address": {
                    "type": "text",
                    "required": True,
                    "personal": False,
                    "label": {"en": "Proof", "es": "Prueba"},
                }
            },
            "message": self.MESSAGE,
        }
        info = {
            "reference": body["reference"],
            "step": "dmv",
            "item": None,
            "agency_reference": "DMV-000001",
            "answers": {"proof_of_address": "utility bill"},
        }
        key = f"{body['reference']}:dmv:-:info:1"
        wrong = await agencies.post(
            "dmv", "/operations/update-address/information",
            {**info, "answers": {"proof": 1}}, key=key,
        )
        assert wrong.status_code == 422
        assert {e["path"] for e in wrong.json()["errors"]} == {
            "answers.proof", "answers.proof_of_address"
        }
        done = await agencies.post(
            "dmv", "/operations/update-address/information", info, key=key
        )
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "completed"
        assert done.json()["agency_reference"] == "DMV-000001"
        again = await agencies.post(
            "dmv", "/operations/update-address/information", info, key=key
        )
        assert again.text == done.text
        [record] = await agencies.records("dmv")
        assert record["status"] == "completed"
        assert record["answers"] == {"proof_of_address": "utility bill"}

    async def test_unknown_agency_reference_is_404(self, agencies: Agencies) -> None:
        """Answers for a record the agency does not have are a 404 and are not remembered."""
        info = {
            "reference": "R", "step": "dmv", "agency_reference": "DMV-424242", "answers": {}
        }
        response = await agencies.post(
            "dmv", "/operations/update-address/information", info, key="R:dmv:-:info:1"
        )
        assert response.status_code == 404
        assert response.json()["code"] == "unknown_agency_reference"
        assert await agencies.count("dmv", "idempotency") == 0


class TestCancel:
    async def test_cancel_before_completion(self, agencies: Agencies, receiver: Receiver) -> None:
        """An accepted call is withdrawn: cancelled, and its callback never comes."""
        await agencies.behave("dmv", {"mode": "callback", "callback_delay_s": 0.2})
        body = request_body(callback_url=receiver.url)
        accepted = await agencies.call("dmv", "update-address", body)
        cancel = {
            "reference": body["reference"], "step": "dmv", "item": None,
            "agency_reference": accepted.json()["agency_reference"],
        }
        response = await agencies.post("dmv", "/operations/update-address/cancel", cancel)
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        again = await agencies.post("dmv", "/operations/update-address/cancel", cancel)
        assert again.json()["status"] == "cancelled"
        await asyncio.sleep(0.4)  # past the due time the cancel withdrew
        assert receiver.received.empty()
        [record] = await agencies.records("dmv")
        assert (record["status"], record["due_at"]) == ("cancelled", None)
        assert await agencies.outbox("dmv") == []

    async def test_cancel_after_completion_is_too_late(self, agencies: Agencies) -> None:
        """A completed call cannot be cancelled: 409 too_late."""
        body = request_body()
        done = await agencies.call("dmv", "update-address", body)
        cancel = {
            "reference": body["reference"], "step": "dmv",
            "agency_reference": done.json()["agency_reference"],
        }
        response = await agencies.post("dmv", "/operations/update-address/cancel", cancel)
        assert response.status_code == 409
        assert response.json()["code"] == "too_late"

    async def test_not_cancellable_operation(self, agencies: Agencies, receiver: Receiver) -> None:
        """An operation not declared cancellable cannot be withdrawn once accepted."""
        await agencies.behave("dmv", {"mode": "callback", "callback_delay_s": 5})
        body = request_body(callback_url=receiver.url, input={"licence_number": "X1"})
        accepted = await agencies.call("dmv", "renew-licence", body)
        cancel = {
            "reference": body["reference"], "step": "dmv",
            "agency_reference": accepted.json()["agency_reference"],
        }
        response = await agencies.post("dmv", "/operations/renew-licence/cancel", cancel)
        assert response.status_code == 409
        assert response.json()["code"] == "not_cancellable"


class TestUndo:
    async def test_revert_by_reference(self, agencies: Agencies) -> None:
        """revert-* with the original's reference marks that record reverted."""
        body = request_body()
        done = await agencies.call("dmv", "update-address", body)
        ref = done.json()["agency_reference"]
        undo = request_body(body["reference"], input={"reference": ref})
        undone = await agencies.call(
            "dmv", "revert-address", undo, key=f"{body['reference']}:dmv:-:undo"
        )
        assert undone.status_code == 200
        assert undone.json()["status"] == "completed"
        rows = {row["agency_reference"]: row for row in await agencies.records("dmv")}
        assert rows[ref]["reverted_at"] is not None
        assert rows[ref]["reverted_by"] == undone.json()["agency_reference"]
        assert rows[undone.json()["agency_reference"]]["is_undo"] is True

    async def test_withdraw_by_output_field(self, agencies: Agencies) -> None:
        """withdraw-* naming an output value (registration_number) finds the record."""
        made = await agencies.call(
            "companies", "register-company",
            request_body(step="company", input={"business_name": "Acme"}), signed=False,
        )
        other = await agencies.call(
            "companies", "register-company",
            request_body(step="company", input={"business_name": "Other"}), signed=False,
        )
        number = made.json()["output"]["registration_number"]
        undo = request_body("REQ-elsewhere", step="company", input={"registration_number": number})
        assert (
            await agencies.call("companies", "withdraw-registration", undo, signed=False)
        ).status_code == 200
        rows = {row["agency_reference"]: row for row in await agencies.records("companies")}
        assert rows[made.json()["agency_reference"]]["reverted_at"] is not None
        assert rows[other.json()["agency_reference"]]["reverted_at"] is None

    async def test_fallback_same_step_and_nothing_to_revert(self, agencies: Agencies) -> None:
        """Without a matching value the latest record of the same request step is reverted;
        with nothing to revert the undo still completes."""
        body = request_body(item="a")
        done = await agencies.call("dmv", "update-address", body)
        undo = request_body(body["reference"], item="a", input={"reference": "DMV-999999"})
        first = await agencies.call("dmv", "revert-address", undo, key="u1")
        again = await agencies.call("dmv", "revert-address", undo, key="u2")
        assert first.status_code == again.status_code == 200
        rows = {row["agency_reference"]: row for row in await agencies.records("dmv")}
        assert rows[done.json()["agency_reference"]]["reverted_by"] == (
            first.json()["agency_reference"]
        )


class TestAdmin:
    async def test_reset_empties_tables_and_restores_behaviour(
        self, start_agencies: StartAgencies
    ) -> None:
        """POST /_admin/reset: no rows (records, owed callbacks), numbering restarts,
        start-up behaviour is back."""
        agencies = await start_agencies({"dmv": {"latency_ms": 1}})
        await agencies.behave("dmv", {"reject": {}})
        await agencies.behave("companies", {"mode": "callback", "callback_delay_s": 0})
        nobody = f"http://127.0.0.1:{free_port()}/callbacks/t"  # refused: stays owed
        await agencies.call("companies", "register-company",
                            request_body(input={"business_name": "Acme"}, callback_url=nobody),
                            signed=False)

        async def owed() -> None:
            rows = await agencies.outbox("companies")
            assert len(rows) == 1, rows  # the outcome falls due at once, then the row exists
            [row] = rows
            assert (row["state"], row["attempts"] >= 1) == ("pending", True), row

        await eventually(owed, within_s=5, every_s=0.05)
        response = await agencies.http.post(f"{agencies.url}/_admin/reset")
        assert response.status_code == 200
        assert await agencies.records("companies") == []
        assert await agencies.count("companies", "outbox") == 0
        behaviour = await agencies.http.get(f"{agencies.url}/_admin/agencies/dmv/behaviour")
        assert behaviour.json() == {"latency_ms": 1.0, "operations": {}}
        again = await agencies.call("dmv", "update-address", request_body())
        assert again.json()["agency_reference"] == "DMV-000001"

    async def test_records_filter_by_reference(self, agencies: Agencies) -> None:
        """Records can be listed for one engine reference."""
        await agencies.call("dmv", "update-address", request_body("REQ-a"))
        await agencies.call("dmv", "update-address", request_body("REQ-b"))
        rows = await agencies.records("dmv", reference="REQ-b")
        assert [row["reference"] for row in rows] == ["REQ-b"]

    async def test_outbox_rows_filter_by_state_and_a_bad_state_is_refused(
        self, agencies: Agencies, receiver: Receiver
    ) -> None:
        """The outbox listing shows state, attempts, last status and next attempt, and filters
        by state; an unknown state is a 422 naming the states (and no rows)."""
        await agencies.behave("dmv", {"mode": "callback", "callback_delay_s": 0})
        body = request_body(callback_url=receiver.url)
        await agencies.call("dmv", "update-address", body)
        await next_callback(receiver)

        async def delivered() -> None:
            rows = await agencies.outbox("dmv", state="delivered")
            assert len(rows) == 1, rows
            [row] = rows
            assert (row["attempts"], row["last_status"]) == (1, 200), row
            assert {"next_attempt_at", "last_error", "reference"} <= set(row)
            assert "body" not in row and "url" not in row

        await eventually(delivered, within_s=5, every_s=0.05)
        assert await agencies.outbox("dmv", state="pending") == []
        bad = await agencies.http.get(
            f"{agencies.url}/_admin/agencies/dmv/outbox", params={"state": "sent"}
        )
        assert bad.status_code == 422, bad.text
        assert bad.json()["code"] == "invalid_state"
        assert "pending" in bad.json()["reason"]
