"""The payload codec binds each payload to its workflow (AES-GCM associated data)."""

from __future__ import annotations

import os

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ActivitySerializationContext,
    NexusSerializationContext,
    WorkflowSerializationContext,
)

from intake.codec_server import ui_origins
from runtime.codec import WORKFLOW_ID_KEY, EncryptionCodec, PayloadDecryptionError

PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"full_name": "Alex Example"}')


def in_workflow(workflow_id: str) -> WorkflowSerializationContext:
    return WorkflowSerializationContext(namespace="default", workflow_id=workflow_id)


def in_activity(workflow_id: str) -> ActivitySerializationContext:
    return ActivitySerializationContext(
        namespace="default", activity_id="1", activity_type="call_agency",
        activity_task_queue="q", workflow_id=workflow_id, workflow_type="CitizenRequest",
        is_local=False)


@pytest.fixture
def codec() -> EncryptionCodec:
    return EncryptionCodec(os.urandom(32))


class TestBinding:
    async def test_a_payload_sealed_in_a_workflow_names_it(self, codec: EncryptionCodec) -> None:
        [sealed] = await codec.with_context(in_workflow("R-1")).encode([PLAIN])
        assert sealed.metadata[WORKFLOW_ID_KEY] == b"R-1"
        assert b"Alex" not in sealed.data

    async def test_it_opens_in_its_workflow_its_activities_and_without_context(
        self, codec: EncryptionCodec
    ) -> None:
        """The worker (workflow or activity context) and the codec server (none) open it."""
        [sealed] = await codec.with_context(in_workflow("R-1")).encode([PLAIN])
        for opener in (codec, codec.with_context(in_workflow("R-1")),
                       codec.with_context(in_activity("R-1"))):
            assert await opener.decode([sealed]) == [PLAIN]

    async def test_it_does_not_open_in_another_workflow(self, codec: EncryptionCodec) -> None:
        [sealed] = await codec.with_context(in_activity("R-1")).encode([PLAIN])
        with pytest.raises(PayloadDecryptionError, match="another workflow"):
            await codec.with_context(in_workflow("R-2")).decode([sealed])

    async def test_relabelling_it_breaks_the_tag(self, codec: EncryptionCodec) -> None:
        [sealed] = await codec.with_context(in_workflow("R-1")).encode([PLAIN])
        sealed.metadata[WORKFLOW_ID_KEY] = b"R-2"
        for opener in (codec, codec.with_context(in_workflow("R-2"))):
            with pytest.raises(PayloadDecryptionError, match="could not be decrypted"):
                await opener.decode([sealed])

    async def test_stripping_the_label_breaks_the_tag(self, codec: EncryptionCodec) -> None:
        [sealed] = await codec.with_context(in_workflow("R-1")).encode([PLAIN])
        del sealed.metadata[WORKFLOW_ID_KEY]
        with pytest.raises(PayloadDecryptionError):
            await codec.with_context(in_workflow("R-2")).decode([sealed])

    async def test_unbound_payloads_of_old_histories_open_anywhere(
        self, codec: EncryptionCodec
    ) -> None:
        """Sealed without a context (as before binding): no label, opens in any workflow."""
        [sealed] = await codec.encode([PLAIN])
        assert WORKFLOW_ID_KEY not in sealed.metadata
        assert await codec.with_context(in_workflow("R-9")).decode([sealed]) == [PLAIN]

    def test_a_nexus_context_binds_nothing(self, codec: EncryptionCodec) -> None:
        nexus = NexusSerializationContext(endpoint="e", service="s", operation="o")
        assert codec.with_context(nexus).workflow_id is None

    async def test_another_key_is_refused(self, codec: EncryptionCodec) -> None:
        [sealed] = await codec.encode([PLAIN])
        with pytest.raises(PayloadDecryptionError, match="different key"):
            await EncryptionCodec(os.urandom(32)).decode([sealed])


class TestUiOrigins:
    def test_a_loopback_ui_has_both_spellings_on_its_own_port(self) -> None:
        assert ui_origins("http://127.0.0.1:8399") == {"http://127.0.0.1:8399",
                                                         "http://localhost:8399"}

    def test_a_public_ui_has_its_own_origin_only(self) -> None:
        assert ui_origins("https://temporal.gov.example/ui") == {"https://temporal.gov.example"}
