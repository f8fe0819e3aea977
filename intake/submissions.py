"""Turning one citizen submission into one request: validate, derive the reference, start.

Shared by the HTTP front door, `nwd submit`, the demo, the benchmarks and the tests, all built
by :func:`build_submissions`. Bad input changes nothing: validation runs before anything is
written or started. Start is idempotent: the workflow id is the request reference derived from
the submission's idempotency key, and an existing request — running or closed — is returned as
it is, never started twice: the start refuses an existing id (``FAIL`` while it runs,
``REJECT_DUPLICATE`` once it closed), and that refusal, ``WorkflowAlreadyStartedError``, is how
the server says "this request exists".

**The same key, another body.** With the read model, the front door keeps a keyed digest of
the body each key was first used with (:func:`submission_digest`, table
``submission_digests``); the same key sent with a different body raises
:class:`IdempotencyConflict` (the HTTP answer is ``409 idempotency_conflict``) before anything
is written or started, instead of silently answering the first request. Without a read model
(``nwd submit``) there is nothing to compare with, and the key alone decides.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from definitions.catalog import Catalog
from definitions.models import ServiceSnapshot
from definitions.submission import validate_submission
from intake.access import Grant, RequestAccess
from intake.schemas import LANGUAGES
from readmodel.store import ReadModel
from readmodel.submission_digests import SubmissionDigests
from runtime.identity import Principal
from runtime.messages import (
    RecordRequestInput,
    RequestInput,
    RequestOptions,
    RequestResult,
    request_reference,
)
from runtime.settings import Settings
from workflows import search_attributes as sa
from workflows.request_workflow import CitizenRequestWorkflow


class IdempotencyConflict(Exception):  # noqa: N818 (reads as what the submission is in)
    """The idempotency key was first used with a different body; nothing was done."""

    def __init__(self, reference: str) -> None:
        super().__init__(
            "this Idempotency-Key was first used with a different submission; send that "
            "submission unchanged to get its request, or use a new key for a new request")
        self.reference = reference


def digest_key(encryption_key: bytes) -> bytes:
    """The digests' HMAC key, derived from the payload key (no extra secret to manage)."""
    return hmac.new(encryption_key, b"nwd-submission-digests-v1", hashlib.sha256).digest()


def submission_digest(key: bytes, service_id: str, data: Any, language: str) -> str:
    """HMAC-SHA256 of the canonical JSON of what was submitted (key order, spacing ignored)."""
    canonical = json.dumps({"service": service_id, "submission": data, "language": language},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Submitted:
    reference: str
    created: bool
    """False when the idempotency key named a request that already existed."""
    access_code: str | None = None
    """The one-time access code of a new request submitted without an account (shown once;
    only its HMAC is kept). None when signed in, for an existing request, or without
    :class:`~intake.access.RequestAccess`."""


class Submissions:
    """Starts requests for services of one catalog on one task queue."""

    def __init__(
        self,
        client: Client,
        catalog: Catalog,
        *,
        task_queue: str,
        callback_base_url: str | None = None,
        search_attributes: bool = True,
        read_model: ReadModel | None = None,
        digest_key: bytes | None = None,
        reference_key: bytes,
        access: RequestAccess | None = None,
    ) -> None:
        if read_model is not None and digest_key is None:
            raise ValueError("a front door with a read model needs digest_key (the same "
                             "Idempotency-Key with another body must be refused)")
        self._digest_key = digest_key
        self._digests = SubmissionDigests(read_model.pool) if read_model is not None else None
        self._client = client
        self._reference_key = reference_key
        self._access = access
        self._catalog = catalog
        self._task_queue = task_queue
        self._callback_base_url = callback_base_url
        self._search_attributes = search_attributes
        self._read_model = read_model

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    async def submit(
        self,
        service_id: str,
        data: Any,
        *,
        idempotency_key: str,
        language: str = "en",
        owner: Principal | None = None,
    ) -> Submitted:
        """Validate and start; raises UnknownService, SubmissionInvalid or
        IdempotencyConflict before any effect.

        With :class:`~intake.access.RequestAccess`, a new request is owned by ``owner`` (a
        verified token's principal) or, without one, gets an access code (in the answer).
        """
        snapshot = self._catalog.snapshot(service_id)
        submission = validate_submission(snapshot.service.input, data)
        if language not in LANGUAGES:  # the HTTP envelope refuses it (422); pages choose one
            language = "en"
        reference = self.reference(service_id, idempotency_key)
        digest = await self._claim_digest(reference, service_id, data, language)
        try:
            submitted = await self._start(reference, snapshot, submission, language, owner)
        except BaseException:
            await self._forget_digest(reference, digest)
            raise
        # An existing request (``created`` False) keeps the claim: it was started by a call with
        # this same body, or before digests were kept (then this body is the first one known).
        return submitted

    async def _forget_digest(self, reference: str, digest: str | None) -> None:
        if digest is not None and self._digests is not None:
            await self._digests.forget(reference, digest)

    async def _claim_digest(self, reference: str, service_id: str, data: Any,
                            language: str) -> str | None:
        """The digest this call recorded (to take back if nothing starts), None if it was
        recorded before (the same body); IdempotencyConflict for another body."""
        if self._digests is None or self._digest_key is None:
            return None
        digest = submission_digest(self._digest_key, service_id, data, language)
        claim = await self._digests.claim(reference, digest)
        if not claim.matches:
            raise IdempotencyConflict(reference)
        return digest if claim.new else None

    async def _start(self, reference: str, snapshot: ServiceSnapshot, submission: Any,
                     language: str, owner: Principal | None) -> Submitted:
        now = datetime.now(UTC)
        service = snapshot.service
        request = RequestInput(
            reference=reference,
            snapshot=snapshot,
            submission=submission,
            language=language,
            submitted_at=now,
            callback_base_url=self._callback_base_url,
            options=RequestOptions(
                search_attributes=self._search_attributes,
                awaited="long_waits",
                recorded_at_submit=self._read_model is not None,
            ),
        )
        # The front door writes the request's first row itself (saving the workflow a local
        # activity): before the start, so the agency calls' progress rows always have a
        # parent; taken back if the start does not happen or the request existed already.
        grant = await self._access.grant(reference, owner) if self._access else None
        try:
            recorded = await self._record_submitted(request) if self._read_model else False
        except BaseException:
            await self._revoke(reference, grant)
            raise
        try:
            handle = await self._client.start_workflow(
                CitizenRequestWorkflow.run,
                request,
                id=reference,
                task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=sa_pairs(service.service, service.version,
                                           snapshot.content_hash, snapshot, now)
                if self._search_attributes else None,
                static_summary=f"{service.title['en']} — request {reference}",
                static_details=(
                    f"Service {service.service} v{service.version} "
                    f"(definition {snapshot.content_hash[:12]}), "
                    f"{len(service.steps)} steps across "
                    f"{len({a.id for a in snapshot.agencies})} agencies."
                ),
            )
        except WorkflowAlreadyStartedError:
            # The request exists: its access (if any) stays as it was, never handed to this
            # caller — a second submission with the same key must not take it over.
            await self._forget_submitted(reference, recorded)
            await self._revoke(reference, grant)
            return Submitted(reference=reference, created=False)
        except BaseException:
            await self._forget_submitted(reference, recorded)
            await self._revoke(reference, grant)
            raise
        return Submitted(reference=handle.id, created=True,
                         access_code=grant.access_code if grant else None)

    def reference(self, service_id: str, idempotency_key: str) -> str:
        """The reference a submission with this key gets (keyed: see ``request_reference``)."""
        return request_reference(service_id, idempotency_key, self._reference_key)

    async def _revoke(self, reference: str, grant: Grant | None) -> None:
        if grant is not None and grant.granted and self._access is not None:
            await self._access.revoke(reference)

    async def _record_submitted(self, request: RequestInput) -> bool:
        assert self._read_model is not None
        snapshot = request.snapshot
        return await self._read_model.record_submitted(RecordRequestInput(
            reference=request.reference, service=snapshot.service.service,
            version=snapshot.service.version, content_hash=snapshot.content_hash,
            language=request.language, submitted_at=request.submitted_at, status="running",
            agencies=sorted({a.id for a in snapshot.agencies}),
        ))

    async def _forget_submitted(self, reference: str, recorded: bool) -> None:
        if recorded and self._read_model is not None:
            await self._read_model.forget_submitted(reference)

    def handle(self, reference: str) -> WorkflowHandle[CitizenRequestWorkflow, RequestResult]:
        return self._client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)


def build_submissions(
    settings: Settings,
    client: Client,
    catalog: Catalog,
    read_model: ReadModel | None = None,
    *,
    search_attributes: bool = True,
    access: RequestAccess | None = None,
    reference_key: bytes | None = None,
) -> Submissions:
    """The one wiring of :class:`Submissions`, for every process that starts requests.

    Args:
        settings: ``task_queue`` and ``intake_url`` (the agencies' callback base) are used.
        client: connected client; owned by the caller.
        catalog: the services requests may be started for.
        read_model: where the front door writes each request's first row before starting it
            (None: the workflow records its start itself, e.g. ``nwd submit``), and the
            digest of each key's first body (keyed with a key derived from the payload key).
        search_attributes: set the engine's search attributes at start (off only for a server
            that cannot register them, such as the time-skipping test server).
        access: who may follow the requests (the front door's; None: nobody through the
            intake — a request started so is followed by operators in Temporal).
        reference_key: the key references are made with (default:
            ``settings.reference_secret()``).
    """
    return Submissions(
        client,
        catalog,
        task_queue=settings.task_queue,
        callback_base_url=settings.intake_url,
        search_attributes=search_attributes,
        read_model=read_model,
        digest_key=digest_key(settings.payload_key()) if read_model is not None else None,
        reference_key=reference_key or settings.reference_secret(),
        access=access,
    )


def sa_pairs(
    service_id: str, version: int, content_hash: str, snapshot: ServiceSnapshot,
    submitted_at: datetime,
) -> TypedSearchAttributes:
    return TypedSearchAttributes([
        SearchAttributePair(sa.CITIZEN_SERVICE, service_id),
        SearchAttributePair(sa.DEFINITION_VERSION, f"{service_id}@{version}#{content_hash[:12]}"),
        SearchAttributePair(sa.REQUEST_STATUS, "running"),
        SearchAttributePair(sa.AGENCIES_INVOLVED, sorted({a.id for a in snapshot.agencies})),
        SearchAttributePair(sa.ESCALATED, False),
        SearchAttributePair(sa.SUBMITTED_AT, submitted_at),
    ])
