"""Operators read encrypted payloads through the codec server: only with the operator role,
every decrypt audited, for the UI's real origin, and a payload cannot be moved.

The stack is real: the Temporal dev server, a worker, PostgreSQL, the reference agencies, the
intake's codec server on uvicorn, and the embedded OIDC provider over HTTP (:mod:`tests.identity`,
dev users ``operator`` with the operator role and ``citizen`` without), whose access tokens the
engine's own :class:`runtime.identity.TokenVerifier` checks.
The UI is configured on port 8399, not the dev server's default 8233.

Every refusal is checked for what it must not do: answer plaintext, write an audit row, or
change the request (its history length).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads, WorkflowType
from temporalio.api.enums.v1 import EventType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import StartWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from definitions.catalog import Catalog
from intake.codec_server import PATH_TOKEN_SUBJECT, CodecServer, ui_origins
from readmodel.codec_audit import CodecAuditLog
from readmodel.store import ReadModel
from runtime.codec import WORKFLOW_ID_KEY
from runtime.identity import Principal, TokenVerifier
from runtime.process import free_port
from runtime.temporal import data_converter
from tests.e2e.conftest import Agencies, Engine, engine_client, example, running_engine
from tests.identity import Issuer, running_issuer
from tests.polling import eventually

SERVICE = "change-of-address"
UI_URL = "http://127.0.0.1:8399"
"""The Temporal UI on a port of its own: its origin, not a hard-coded :8233, must decode."""
UI = {"Origin": UI_URL, "X-Namespace": "default"}
PATH_TOKEN = "dev-path-token-" + uuid.uuid4().hex
CITIZEN_NAME = b"Alex Example"


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    """A second issuer whose tokens expire after one second."""
    with running_issuer(tmp_path_factory.mktemp("short-lived-oidc"),
                        token_lifetime_s=1) as issuer:
        yield issuer


class TrustedIssuer:
    """The codec server's verifier: the session issuer's, switched by a test to another
    :class:`TokenVerifier` (another issuer, an unreachable one)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.current = verifier
        self._used = [verifier]

    def switch(self, verifier: TokenVerifier) -> None:
        self.current = verifier
        self._used.append(verifier)

    async def verify(self, token: str) -> Principal:
        return await self.current.verify(token)

    async def aclose(self) -> None:
        for verifier in self._used:
            await verifier.aclose()


class Audited:
    def __init__(self, engine: Engine, verifier: TrustedIssuer, raw: Client) -> None:
        self.engine = engine
        self.verifier = verifier
        self.raw = raw
        self.audit = CodecAuditLog(engine.read_model.pool)

    async def completed_request(self) -> str:
        reference = await self.engine.submit(SERVICE, example(SERVICE))
        await self.engine.result(reference)
        return reference

    async def sealed_input(self, reference: str) -> dict[str, Any]:
        """The request's start input as the server holds it (proto3 JSON), never opened."""
        history = await self.raw.get_workflow_handle(reference).fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        assert CITIZEN_NAME not in started.input.SerializeToString()
        return json_format.MessageToDict(started.input)

    async def history_length(self, reference: str) -> int:
        return (await self.raw.get_workflow_handle(reference).describe()).raw_description \
            .workflow_execution_info.history_length

    async def decode(self, body: dict[str, Any], headers: dict[str, str],
                     path: str = "/codec/decode") -> Any:
        return await self.engine.intake.post(path, json=body, headers={**UI, **headers})


@pytest_asyncio.fixture
async def audited(
    temporal_env: WorkflowEnvironment, postgres_server: str, agencies: Agencies,
    catalog: Catalog, encryption_key: bytes, task_queue: str, oidc_issuer: Issuer,
) -> AsyncIterator[Audited]:
    verifier = TrustedIssuer(oidc_issuer.verifier())

    def codec_server(read_model: ReadModel) -> CodecServer:
        codec = data_converter(encryption_key).payload_codec
        assert codec is not None
        return CodecServer(codec, audit=CodecAuditLog(read_model.pool),
                           origins=ui_origins(UI_URL), operator_tokens=verifier,
                           operator_role="operator", path_token=PATH_TOKEN)

    async with running_engine(
        engine_client(temporal_env, encryption_key), postgres_server=postgres_server,
        agencies=agencies, catalog=catalog, encryption_key=encryption_key,
        task_queue=task_queue, codec_server=codec_server,
    ) as engine:
        try:
            yield Audited(engine, verifier, temporal_env.client)
        finally:
            await verifier.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class TestDecrypt:
    async def test_an_operator_decrypts_and_the_decrypt_is_audited(
        self, audited: Audited, oidc_issuer: Issuer
    ) -> None:
        """The operator's token opens the payloads for the UI's origin; one audit row names
        the operator, the workflow and how many payloads."""
        reference = await audited.completed_request()
        sealed = await audited.sealed_input(reference)
        [payload] = sealed["payloads"]
        assert payload["metadata"][WORKFLOW_ID_KEY] == base64.b64encode(reference.encode()).decode()

        opened = await audited.decode(sealed, bearer(await oidc_issuer.sign_in("operator")))
        assert opened.status_code == 200, opened.text
        assert opened.headers["access-control-allow-origin"] == UI_URL
        plain = json_format.ParseDict(opened.json(), Payloads())
        assert plain.payloads[0].metadata["encoding"] == b"json/plain"
        assert CITIZEN_NAME in plain.payloads[0].data

        [row] = await audited.audit.rows(workflow_id=reference)
        assert (row.subject, row.via, row.namespace, row.payloads, row.origin) == (
            "operator", "operator_token", "default", 1, UI_URL)
        assert row.at is not None

    async def test_a_whole_history_is_one_row_per_workflow(
        self, audited: Audited, oidc_issuer: Issuer
    ) -> None:
        """Every sealed payload of a history page counts, under its own workflow."""
        reference = await audited.completed_request()
        history = await audited.raw.get_workflow_handle(reference).fetch_history()
        sealed = [p for event in history.events
                  for p in (event.activity_task_scheduled_event_attributes.input.payloads
                            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                            else [])]
        assert len(sealed) >= 2
        body = json_format.MessageToDict(Payloads(payloads=sealed))
        opened = await audited.decode(body, bearer(await oidc_issuer.sign_in("operator")))
        assert opened.status_code == 200, opened.text
        [row] = await audited.audit.rows(workflow_id=reference)
        assert row.payloads == len(sealed)

    async def test_the_dev_path_token_opens_and_is_audited(self, audited: Audited) -> None:
        """The dev UI's token-in-path endpoint decrypts too, audited under its own name."""
        reference = await audited.completed_request()
        sealed = await audited.sealed_input(reference)
        opened = await audited.decode(sealed, {}, path=f"/codec/{PATH_TOKEN}/decode")
        assert opened.status_code == 200, opened.text
        [row] = await audited.audit.rows(workflow_id=reference)
        assert (row.subject, row.via) == (PATH_TOKEN_SUBJECT, "path_token")

        wrong = await audited.decode(sealed, {}, path="/codec/not-the-token/decode")
        assert wrong.status_code == 401
        assert len(await audited.audit.rows(workflow_id=reference)) == 1

    async def test_encode_then_decode_gives_the_payload_back(
        self, audited: Audited, oidc_issuer: Issuer
    ) -> None:
        token = bearer(await oidc_issuer.sign_in("operator"))
        plain = json_format.MessageToDict(Payloads(payloads=[
            Payload(metadata={"encoding": b"json/plain"}, data=b'"hello"')]))
        encoded = await audited.decode(plain, token, path="/codec/encode")
        assert encoded.status_code == 200, encoded.text
        sealed = json_format.ParseDict(encoded.json(), Payloads())
        assert sealed.payloads[0].metadata["encoding"] == b"binary/encrypted"
        decoded = await audited.decode(encoded.json(), token)
        assert decoded.json() == plain


class TestRefusals:
    @pytest.mark.parametrize("case", ["no_token", "not_bearer", "garbage", "citizen",
                                      "expired", "other_issuer"])
    async def test_refused_callers_get_no_plaintext_and_change_nothing(
        self, audited: Audited, oidc_issuer: Issuer, short_lived: Issuer, case: str
    ) -> None:
        """No token, a forged or expired one, another issuer's: 401; a citizen's: 403.
        None answers plaintext, writes an audit row or changes the request."""
        reference = await audited.completed_request()
        sealed = await audited.sealed_input(reference)
        length = await audited.history_length(reference)
        if case == "no_token":
            headers: dict[str, str] = {}
        elif case == "not_bearer":
            headers = {"Authorization": f"Basic {await oidc_issuer.sign_in('operator')}"}
        elif case == "garbage":
            headers = bearer("not-a-jwt")
        elif case == "citizen":
            headers = bearer(await oidc_issuer.sign_in("citizen"))
        elif case == "expired":
            token = await short_lived.sign_in("operator")
            audited.verifier.switch(short_lived.verifier())  # the right issuer, an old token
            await asyncio.sleep(2.5)
            headers = bearer(token)
        else:  # a valid operator token of an issuer the engine does not trust
            headers = bearer(await short_lived.sign_in("operator"))

        refused = await audited.decode(sealed, headers)
        assert refused.status_code == (403 if case == "citizen" else 401), refused.text
        assert refused.json()["code"] == ("forbidden" if case == "citizen" else "unauthorized")
        assert "payloads" not in refused.json()
        assert CITIZEN_NAME not in refused.content
        if refused.status_code == 401:
            assert refused.headers["www-authenticate"].startswith("Bearer")
        assert await audited.audit.rows() == []
        assert await audited.history_length(reference) == length

    async def test_an_unreachable_issuer_is_503_and_decrypts_nothing(
        self, audited: Audited, oidc_issuer: Issuer
    ) -> None:
        reference = await audited.completed_request()
        sealed = await audited.sealed_input(reference)
        token = await oidc_issuer.sign_in("operator")
        audited.verifier.switch(TokenVerifier(  # nobody listens there
            f"http://127.0.0.1:{free_port()}", audience=oidc_issuer.audience))
        refused = await audited.decode(sealed, bearer(token))
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"]
        assert CITIZEN_NAME not in refused.content
        assert await audited.audit.rows() == []


class TestCors:
    async def test_the_configured_ui_origin_is_allowed_others_are_not(
        self, audited: Audited, oidc_issuer: Issuer
    ) -> None:
        """A preflight from the UI's configured origin (port 8399, either loopback spelling)
        is allowed; the old hard-coded :8233 and any other origin are not."""
        for origin in (UI_URL, "http://localhost:8399"):
            preflight = await audited.engine.intake.options("/codec/decode", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-namespace"})
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == origin
            assert "Authorization" in preflight.headers["access-control-allow-headers"]
        for origin in ("http://127.0.0.1:8233", "http://localhost:8233", "http://evil.example"):
            refused = await audited.engine.intake.options("/codec/decode", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST"})
            assert refused.status_code == 403
            assert "access-control-allow-origin" not in refused.headers

        # A call from another origin gets no CORS header: a browser hides the answer.
        reference = await audited.completed_request()
        token = await oidc_issuer.sign_in("operator")
        answered = await audited.engine.intake.post(
            "/codec/decode", json=await audited.sealed_input(reference),
            headers={"Origin": "http://evil.example", **bearer(token)})
        assert "access-control-allow-origin" not in answered.headers


class TestMovedPayloads:
    async def test_a_payload_moved_to_another_workflow_does_not_open(
        self, audited: Audited, oidc_issuer: Issuer, catalog: Catalog
    ) -> None:
        """Request A's sealed input, started as the input of workflow B on the engine's
        queue: the worker refuses it (B's workflow task fails, B calls no agency and writes
        no row). Its metadata rewritten to name B, it opens nowhere (the tag breaks)."""
        engine = audited.engine
        reference = await audited.completed_request()
        sealed = await audited.sealed_input(reference)
        calls_before = await all_records(engine.agencies, catalog, reference)
        moved = f"{reference}-moved"
        payloads = json_format.ParseDict(sealed, Payloads())
        await audited.raw.workflow_service.start_workflow_execution(
            StartWorkflowExecutionRequest(
                namespace="default", workflow_id=moved,
                workflow_type=WorkflowType(name="CitizenRequest"),
                task_queue=TaskQueue(name=engine.task_queue), input=payloads,
                request_id=str(uuid.uuid4())))
        engine.started.append(moved)

        async def refused_by_the_worker() -> None:
            history = await audited.raw.get_workflow_handle(moved).fetch_history()
            failed = [e for e in history.events
                      if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
            assert failed, "the worker has not refused the moved payload yet"
            assert not any(e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                           for e in history.events)

        await eventually(refused_by_the_worker, within_s=20, every_s=0.2)
        assert await all_records(engine.agencies, catalog, reference) == calls_before
        assert await engine.read_model.get_request(moved) is None

        # Relabelled to B, the payload's associated data no longer matches: 400, no row.
        relabelled = json_format.ParseDict(sealed, Payloads())
        relabelled.payloads[0].metadata[WORKFLOW_ID_KEY] = moved.encode()
        refused = await audited.decode(json_format.MessageToDict(relabelled),
                                       bearer(await oidc_issuer.sign_in("operator")))
        assert refused.status_code == 400 and refused.json()["code"] == "codec_failed"
        assert CITIZEN_NAME not in refused.content
        assert await audited.audit.rows() == []


async def all_records(agencies: Agencies, catalog: Catalog,
                      reference: str) -> list[dict[str, Any]]:
    """Every agency's records of ``reference``."""
    rows: list[dict[str, Any]] = []
    for agency in sorted(catalog.agencies):
        rows += await agencies.records(agency, reference=reference)
    return rows
