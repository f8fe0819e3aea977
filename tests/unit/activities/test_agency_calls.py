"""The engine's side of the agency contract: the bodies it sends and how it reads answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from temporalio.exceptions import ApplicationError

from activities.agency_calls import (
    MAX_RESPONSE_BYTES,
    AgencyResponse,
    callback_expiry,
    interpret,
    request_body,
)
from agency_kit.contract import MAX_BODY_BYTES
from runtime.messages import (
    AGENCY_PROTOCOL_ERROR,
    AGENCY_REJECTED,
    AGENCY_UNAVAILABLE,
    AgencyCallInput,
    AgencyEndpoint,
)

URL = "http://agency.test/operations/update-address"


def call(
    action: Literal["operation", "information", "cancel"] = "operation",
    payload: dict[str, Any] | None = None,
) -> AgencyCallInput:
    return AgencyCallInput(
        reference="NWD-1", step_id="licence", item_key=None,
        endpoint=AgencyEndpoint(agency_id="dmv"), operation="update-address", action=action,
        payload={"licence_number": "X1"} if payload is None else payload,
        idempotency_key="NWD-1:licence:-", language="es",
    )


def answer(status: int, body: Any, retry_after: str = "") -> AgencyResponse:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return AgencyResponse(status, content, retry_after)


def failure(status: int, body: Any, retry_after: str = "") -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        interpret(call(), URL, answer(status, body, retry_after), attempt=2)
    return caught.value


def details(exc: ApplicationError) -> dict[str, Any]:
    assert exc.details and isinstance(exc.details[0], dict)
    return exc.details[0]


class TestRequestBody:
    def test_operation_body_is_the_contract_envelope(self) -> None:
        """An operation sends reference, step, item, language, input and callback URL."""
        body = json.loads(request_body(call(), "https://nwd.test/callbacks/t"))
        assert body == {
            "reference": "NWD-1", "step": "licence", "item": None, "language": "es",
            "input": {"licence_number": "X1"}, "callback_url": "https://nwd.test/callbacks/t",
        }

    def test_information_and_cancel_bodies(self) -> None:
        """Answers and cancels send the envelope with the agency reference (and the answers)."""
        info = json.loads(request_body(
            call("information", {"agency_reference": "DMV-1", "answers": {"proof": "bill"}}), None
        ))
        cancel = json.loads(request_body(call("cancel", {"agency_reference": "DMV-1"}), None))
        envelope = {"reference": "NWD-1", "step": "licence", "item": None, "language": "es",
                    "agency_reference": "DMV-1"}
        assert info == {**envelope, "answers": {"proof": "bill"}}
        assert cancel == envelope

    def test_payload_the_envelope_cannot_hold_is_a_final_protocol_error(self) -> None:
        """A cancel without an agency reference is never sent, and never retried."""
        with pytest.raises(ApplicationError) as caught:
            request_body(call("cancel", {"agency_reference": None}), None)
        assert caught.value.type == AGENCY_PROTOCOL_ERROR
        assert caught.value.non_retryable
        assert "agency_reference" in caught.value.message

    def test_body_over_the_contract_limit_is_refused_without_sending(self) -> None:
        """Every agency answers such a body 413: the engine fails it the same way, at once."""
        with pytest.raises(ApplicationError) as caught:
            request_body(call(payload={"photo": "x" * MAX_BODY_BYTES}), None)
        assert caught.value.type == AGENCY_REJECTED
        assert caught.value.non_retryable
        assert details(caught.value)["status"] == 413
        assert details(caught.value)["code"] == "too_large"


class TestCallbackExpiry:
    SCHEDULED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def test_a_step_with_a_deadline_expires_the_grace_after_it(self) -> None:
        deadline = self.SCHEDULED + timedelta(days=3)
        expires = callback_expiry(deadline, self.SCHEDULED, grace_s=3600, ttl_s=86400)
        assert expires == int(deadline.timestamp()) + 3600

    def test_a_step_without_a_deadline_expires_the_ttl_after_the_first_schedule(self) -> None:
        expires = callback_expiry(None, self.SCHEDULED, grace_s=3600, ttl_s=86400)
        assert expires == int(self.SCHEDULED.timestamp()) + 86400


class TestTolerantReading:
    def test_completed_with_unknown_keys(self) -> None:
        """Keys beyond the contract's are ignored; the reply is read as usual."""
        result = interpret(call(), URL, answer(200, {
            "status": "completed", "agency_reference": "DMV-1", "output": {"ok": True},
            "processed_by": "batch-7",
        }), attempt=3)
        assert result.status == "completed"
        assert result.agency_reference == "DMV-1"
        assert result.output == {"ok": True}
        assert result.attempts == 3

    def test_needs_information_with_unknown_keys(self) -> None:
        """The fields and message asked for reach the workflow; extra keys do not matter."""
        result = interpret(call(), URL, answer(200, {
            "status": "needs_information", "agency_reference": "DMV-1",
            "fields": {"proof": {"type": "text"}}, "message": {"en": "Send proof"},
            "expires": "tomorrow",
        }), attempt=1)
        assert result.status == "needs_information"
        assert result.fields == {"proof": {"type": "text"}}
        assert result.message == {"en": "Send proof"}

    def test_202_is_accepted_whatever_the_status(self) -> None:
        """A 202 means accepted, with or without a status in the body."""
        for body in ({"agency_reference": "DMV-1"}, {"status": "queued", "agency_reference": "A"}):
            assert interpret(call(), URL, answer(202, body), attempt=1).status == "accepted"

    def test_cancelled_without_agency_reference(self) -> None:
        """The contract makes a cancel's agency reference optional, and so does the engine."""
        result = interpret(call(), URL, answer(200, {"status": "cancelled"}), attempt=1)
        assert result.status == "cancelled"
        assert result.agency_reference is None


class TestRejections:
    def test_contract_rejection_keeps_code_reason_and_field_errors(self) -> None:
        """A 4xx is final and carries the agency's code, reason and field errors."""
        exc = failure(422, {
            "status": "rejected", "code": "invalid_input", "reason": "bad postcode",
            "errors": [{"path": "input.postcode", "message": "too short", "hint": "AB1 2CD"}],
            "trace_id": "abc",
        })
        assert exc.type == AGENCY_REJECTED
        assert exc.non_retryable
        assert exc.message == "dmv rejected update-address: bad postcode"
        assert details(exc) == {
            "status": 422, "code": "invalid_input", "reason": "bad postcode",
            "errors": [{"path": "input.postcode", "message": "too short"}],
        }

    def test_non_contract_4xx_is_still_a_final_rejection(self) -> None:
        """A framework's 404 (``detail``) fails the call with what it says."""
        exc = failure(404, {"detail": "Not Found"})
        assert exc.type == AGENCY_REJECTED
        assert exc.non_retryable
        assert details(exc) == {"status": 404, "code": None, "reason": "Not Found",
                                "errors": None}


class TestRetryable:
    @pytest.mark.parametrize("status", [408, 429, 500, 503])
    def test_retried_statuses_honour_retry_after(self, status: int) -> None:
        """408, 429 and 5xx are retried, after Retry-After when the agency gives one."""
        exc = failure(status, {"status": "rejected", "code": "unavailable", "reason": "x"}, "3")
        assert exc.type == AGENCY_UNAVAILABLE
        assert not exc.non_retryable
        assert exc.next_retry_delay == timedelta(seconds=3)
        assert details(exc) == {"status": status}


class TestProtocolErrors:
    @pytest.mark.parametrize(
        ("status", "body", "fragment"),
        [
            (200, b"<html>ok</html>", "not JSON"),
            (200, ["completed"], "not an object"),
            (200, {"status": "done", "agency_reference": "A"}, "unknown status 'done'"),
            (200, {"status": "completed"}, "completed.agency_reference: Field required"),
            (200, {"status": "completed", "agency_reference": "A", "output": [1]},
             "completed.output"),
            (200, {"status": "needs_information", "agency_reference": "A", "fields": {}},
             "needs_information.message: Field required"),
            (200, b"x" * (MAX_RESPONSE_BYTES + 1), f"limit {MAX_RESPONSE_BYTES}"),
        ],
    )
    def test_malformed_answers_are_final(self, status: int, body: Any, fragment: str) -> None:
        """An answer that breaks the contract fails the call at once: a retry would not fix it."""
        exc = failure(status, body)
        assert exc.type == AGENCY_PROTOCOL_ERROR
        assert exc.non_retryable
        assert fragment in exc.message
