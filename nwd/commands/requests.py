"""`nwd submit`, `nwd status`, `nwd worker`: submit requests and follow them."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from definitions.errors import DefinitionErrors, UnknownService, key_path
from definitions.loader import load_catalog
from definitions.submission import SubmissionInvalid
from nwd.cli import UserError
from runtime.messages import RequestProgress, StepOutcome
from runtime.settings import Settings

if TYPE_CHECKING:
    from temporalio.workflow import UpdateMethodMultiParam

    from workflows.request_workflow import CitizenRequestWorkflow

M = TypeVar("M", bound=BaseModel)
UNSUCCESSFUL = ("failed", "cancelled")
"""Outcomes `nwd submit --wait` reports with exit status 1."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = subparsers.add_parser(
        "submit", help="submit a request from a JSON or YAML file; prints its reference"
    )
    submit.add_argument("service", help="service id, e.g. change-of-address")
    submit.add_argument("file", type=Path, help="the submission (JSON or YAML)")
    submit.add_argument(
        "--idempotency-key",
        help="the same key twice gives the same request (default: a hash of the file's content)",
    )
    submit.add_argument("--language", default="en", help="the citizen's language (en, es)")
    submit.add_argument("--wait", action="store_true", help="wait for the outcome and show it")
    submit.set_defaults(handler=lambda a: asyncio.run(_submit(a)))

    status = subparsers.add_parser("status", help="show a request's progress per step")
    status.add_argument("reference")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=lambda a: asyncio.run(_status(a)))

    answer = subparsers.add_parser(
        "answer", help="answer an agency's request for information (as the citizen)"
    )
    answer.add_argument("reference")
    answer.add_argument("step", help="the step waiting for information")
    answer.add_argument("file", type=Path, help="the answers (JSON or YAML object)")
    answer.add_argument("--item", help="the for_each item key, when the step has several")
    answer.set_defaults(handler=lambda a: asyncio.run(_answer(a)))

    decide = subparsers.add_parser("decide", help="record a caseworker's decision on a step")
    decide.add_argument("reference")
    decide.add_argument("step")
    decide.add_argument("decision", choices=["approve", "reject"])
    decide.add_argument("--by", required=True, help="who decides (recorded in the history)")
    decide.add_argument("--role", required=True, help="the role they decide as")
    decide.add_argument("--reason", help="why (required to reject)")
    decide.set_defaults(handler=lambda a: asyncio.run(_decide(a)))

    cancel = subparsers.add_parser("cancel", help="withdraw a request; completed steps are undone")
    cancel.add_argument("reference")
    cancel.add_argument("--reason", default="cancelled by the citizen")
    cancel.set_defaults(handler=lambda a: asyncio.run(_cancel(a)))

    worker = subparsers.add_parser("worker", help="run an engine worker (same as python worker.py)")
    worker.set_defaults(handler=_worker)


def read_submission(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return YAML(typ="safe").load(text)
    except (ValueError, YAMLError) as exc:
        raise UserError(f"{path} is not valid {path.suffix.lstrip('.').upper() or 'YAML'}: "
                        f"{str(exc).splitlines()[0]}") from exc


def client_settings() -> Settings:
    """Settings of the stack this command talks to: the embedded one unless the env says else."""
    from nwd.stack import Stack

    return Stack.from_env().client_settings()


async def connect_or_explain(settings: Settings) -> Client:
    from runtime.codec import MissingKeyError
    from runtime.temporal import connect

    try:
        return await connect(settings)
    except MissingKeyError as exc:
        raise UserError(str(exc)) from exc
    except RuntimeError as exc:
        raise UserError(
            f"cannot reach Temporal at {settings.temporal_address} ({exc}); "
            "start the stack with `nwd up` or set TEMPORAL_ADDRESS"
        ) from exc


async def _submit(args: argparse.Namespace) -> int:
    from intake.submissions import build_submissions

    settings = client_settings()
    data = read_submission(args.file)
    try:
        catalog = load_catalog(settings.catalog_dir)
    except DefinitionErrors as exc:
        raise UserError(f"the catalog has problems; run `nwd definitions check`:\n{exc}") from exc
    if args.service not in catalog.services:
        raise UserError(str(UnknownService(args.service, catalog.services)))
    key = args.idempotency_key or hashlib.sha256(
        args.service.encode() + b"\0" + json.dumps(data, sort_keys=True).encode()
    ).hexdigest()
    client = await connect_or_explain(settings)
    submissions = build_submissions(settings, client, catalog)
    try:
        submitted = await submissions.submit(args.service, data, idempotency_key=key,
                                             language=args.language)
    except SubmissionInvalid as exc:
        lines = [f"{args.file}: the submission does not match {args.service}'s form:"]
        lines += [f"  {key_path(e.loc)}: {e.message}" for e in exc.errors]
        raise UserError("\n".join(lines)) from exc
    print(submitted.reference)
    if not submitted.created:
        print("(this idempotency key was submitted before: same request, not started again)",
              file=sys.stderr)
    if args.wait:
        result = await submissions.handle(submitted.reference).result()
        progress = await _progress(client, submitted.reference)
        if progress is not None:
            print(render_progress(progress))
        if result.status in UNSUCCESSFUL:
            print(f"request {submitted.reference} ended {result.status}", file=sys.stderr)
            return 1
    return 0


async def _progress(client: Client, reference: str) -> RequestProgress | None:
    from workflows.request_workflow import CitizenRequestWorkflow

    handle = client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
    try:
        progress = await handle.query(CitizenRequestWorkflow.progress)
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            return None
        raise
    return progress


async def _status(args: argparse.Namespace) -> int:
    settings = client_settings()
    client = await connect_or_explain(settings)
    progress = await _progress(client, args.reference)
    if progress is None:
        raise UserError(f"no request {args.reference!r} (check the reference)")
    if args.json:
        print(progress.model_dump_json(indent=2, exclude={"steps": {"__all__": {"items": {
            "__all__": {"output"}}}}}))
    else:
        print(render_progress(progress))
    return 0


STATUS_MARKS = {
    "pending": "·", "running": "…", "waiting": "⧗", "completed": "✓", "failed": "✗",
    "skipped": "-", "cancelled": "⊘", "compensated": "↺",
}


def render_step(step: StepOutcome) -> list[str]:
    mark = STATUS_MARKS.get(step.status, "?")
    who = step.agency or "caseworker"
    line = f"  {mark} {step.step_id:<28} {who:<24} {step.status:<10}"
    refs = [i.agency_reference for i in step.items if i.agency_reference]
    if refs and len(step.items) == 1:
        line += f" {refs[0]}"
    elif step.items and len(step.items) > 1:
        done = sum(1 for i in step.items if i.status == "completed")
        line += f" {done}/{len(step.items)} items"
    if step.reason:
        line += f"  ({step.reason})"
    lines = [line]
    if len(step.items) > 1:
        for item in step.items:
            lines.append(
                f"      {STATUS_MARKS.get(item.status, '?')} {item.key or '':<22} "
                f"{item.status:<10} {item.agency_reference or ''}"
            )
    return lines


def render_progress(progress: RequestProgress) -> str:
    lines = [f"{progress.reference}  {progress.service}  status: {progress.status}"]
    for step in progress.steps:
        lines += render_step(step)
    return "\n".join(lines)


async def _deliver(
    reference: str, update: UpdateMethodMultiParam[[CitizenRequestWorkflow, M], str], message: M
) -> int:
    from intake.interactions import send

    client = await connect_or_explain(client_settings())
    outcome = await send(client, reference, update, message)
    if not outcome.ok:
        details = "".join(
            f"\n  {key_path(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in outcome.errors
        )
        raise UserError(f"{outcome.message}{details}")
    print(outcome.message)
    return 0


async def _answer(args: argparse.Namespace) -> int:
    from runtime.messages import InformationAnswer
    from workflows.request_workflow import CitizenRequestWorkflow

    answers = read_submission(args.file)
    if not isinstance(answers, dict):
        raise UserError(f"{args.file} must hold an object of answers by field name")
    return await _deliver(args.reference, CitizenRequestWorkflow.answer_information,
                          InformationAnswer(step_id=args.step, item_key=args.item,
                                            answers=answers))


async def _decide(args: argparse.Namespace) -> int:
    from runtime.messages import CaseworkerDecision
    from workflows.request_workflow import CitizenRequestWorkflow

    return await _deliver(args.reference, CitizenRequestWorkflow.decide, CaseworkerDecision(
        step_id=args.step, approve=args.decision == "approve", reason=args.reason,
        decided_by=args.by, role=args.role))


async def _cancel(args: argparse.Namespace) -> int:
    from runtime.messages import CancelRequest
    from workflows.request_workflow import CitizenRequestWorkflow

    return await _deliver(args.reference, CitizenRequestWorkflow.cancel,
                          CancelRequest(reason=args.reason))


def _worker(args: argparse.Namespace) -> int:
    import worker

    worker.main()
    return 0
