"""`nwd submit`, `status`, `answer`, `decide`, `cancel`, `worker`: requests through the intake.

Every command goes through the intake's HTTP API (``NWD_INTAKE_URL``), as a citizen's browser
or a caseworker's task list does, so the same checks apply: a citizen's commands need the
request's access code (printed once by ``submit``) or its owner's token; ``decide`` needs a
token with the step's role, by default the engine client's from the configured issuer
(client credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import httpx
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from definitions.errors import DefinitionErrors, UnknownService, key_path
from definitions.loader import load_catalog
from definitions.submission import SubmissionInvalid, validate_submission
from nwd.cli import UserError
from runtime.messages import RequestProgress, StepOutcome
from runtime.settings import Settings

UNSUCCESSFUL = ("failed", "cancelled")
"""Outcomes `nwd submit --wait` reports with exit status 1."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = subparsers.add_parser(
        "submit", help="submit a request from a JSON or YAML file; prints its reference "
                       "(and, without --token, its one-time access code)"
    )
    submit.add_argument("service", help="service id, e.g. change-of-address")
    submit.add_argument("file", type=Path, help="the submission (JSON or YAML)")
    submit.add_argument(
        "--idempotency-key",
        help="the same key twice gives the same request (default: a hash of the file's content)",
    )
    submit.add_argument("--language", default="en", help="the citizen's language (en, es)")
    submit.add_argument("--wait", action="store_true", help="wait for the outcome and show it")
    _credentials(submit, access_code=False)
    submit.set_defaults(handler=lambda a: asyncio.run(_submit(a)))

    status = subparsers.add_parser("status", help="show a request's progress per step")
    status.add_argument("reference")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _credentials(status)
    status.set_defaults(handler=lambda a: asyncio.run(_status(a)))

    answer = subparsers.add_parser(
        "answer", help="answer an agency's request for information (as the citizen)"
    )
    answer.add_argument("reference")
    answer.add_argument("step", help="the step waiting for information")
    answer.add_argument("file", type=Path, help="the answers (JSON or YAML object)")
    answer.add_argument("--item", help="the for_each item key, when the step has several")
    _credentials(answer)
    answer.set_defaults(handler=lambda a: asyncio.run(_answer(a)))

    decide = subparsers.add_parser(
        "decide", help="record a caseworker's decision on a step (signed in at the issuer)")
    decide.add_argument("reference")
    decide.add_argument("step")
    decide.add_argument("decision", choices=["approve", "reject"])
    decide.add_argument("--reason", help="why (required to reject)")
    decide.add_argument("--token", help=(
        "a caseworker's access token from the issuer (default: the engine client's, by the "
        "client-credentials grant with NWD_OIDC_CLIENT_ID and NWD_OIDC_CLIENT_SECRET)"))
    decide.set_defaults(handler=lambda a: asyncio.run(_decide(a)))

    cancel = subparsers.add_parser("cancel", help="withdraw a request; completed steps are undone")
    cancel.add_argument("reference")
    cancel.add_argument("--reason", default="cancelled by the citizen")
    _credentials(cancel)
    cancel.set_defaults(handler=lambda a: asyncio.run(_cancel(a)))

    worker = subparsers.add_parser("worker", help="run an engine worker (same as python worker.py)")
    worker.set_defaults(handler=_worker)


def _credentials(parser: argparse.ArgumentParser, *, access_code: bool = True) -> None:
    if access_code:
        parser.add_argument("--access-code", help="the request's access code (from submit)")
    parser.add_argument("--token", help="the citizen's access token from the issuer (the "
                                        "request's owner)")


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


def _headers(args: argparse.Namespace) -> dict[str, str]:
    headers: dict[str, str] = {}
    if getattr(args, "token", None):
        headers["Authorization"] = f"Bearer {args.token}"
    if getattr(args, "access_code", None):
        headers["X-Access-Code"] = args.access_code
    return headers


async def _call(settings: Settings, method: str, path: str, *, headers: dict[str, str],
                body: Any = None) -> httpx.Response:
    """One call to the intake (``NWD_INTAKE_URL``); an unreachable intake is a user error."""
    try:
        async with httpx.AsyncClient(base_url=settings.intake_url, timeout=30) as http:
            return await http.request(method, path, json=body, headers=headers)
    except httpx.TransportError as exc:
        raise UserError(f"cannot reach the intake at {settings.intake_url} ({exc}); start the "
                        "stack with `nwd up` or set NWD_INTAKE_URL") from exc


def _refusal(response: httpx.Response, reference: str | None = None) -> UserError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = str(body.get("message") or f"the intake answered {response.status_code}")
    if response.status_code == 404 and reference is not None:
        message += (" (check the reference, and pass the request's --access-code or its "
                    "owner's --token)")
    if response.status_code == 429:
        message += f" (Retry-After: {response.headers.get('retry-after', '?')} s)"
    details = "".join(f"\n  {key_path(tuple(e.get('loc', ())))}: {e.get('msg')}"
                      for e in body.get("errors", []) if isinstance(e, dict))
    return UserError(f"{message}{details}")


async def _submit(args: argparse.Namespace) -> int:
    settings = client_settings()
    data = read_submission(args.file)
    try:
        catalog = load_catalog(settings.catalog_dir)
    except DefinitionErrors as exc:
        raise UserError(f"the catalog has problems; run `nwd definitions check`:\n{exc}") from exc
    if args.service not in catalog.services:
        raise UserError(str(UnknownService(args.service, catalog.services)))
    try:  # the same check the intake makes, with the file's name in the message
        validate_submission(catalog.service(args.service).input, data)
    except SubmissionInvalid as exc:
        lines = [f"{args.file}: the submission does not match {args.service}'s form:"]
        lines += [f"  {key_path(e.loc)}: {e.message}" for e in exc.errors]
        raise UserError("\n".join(lines)) from exc
    key = args.idempotency_key or hashlib.sha256(
        args.service.encode() + b"\0" + json.dumps(data, sort_keys=True).encode()
    ).hexdigest()
    headers = {"Idempotency-Key": key, **_headers(args)}
    response = await _call(settings, "POST", "/requests", headers=headers, body={
        "service": args.service, "submission": data, "language": args.language})
    if response.status_code not in (200, 202):
        raise _refusal(response)
    submitted = response.json()
    reference = str(submitted["reference"])
    print(reference)
    code = submitted.get("access_code")
    if code:
        print(f"access code: {code}")
        print("keep the access code: it is shown once, and following, answering or "
              "cancelling the request needs it (--access-code)", file=sys.stderr)
    if not submitted["created"]:
        print("(this idempotency key was submitted before: same request, not started again)",
              file=sys.stderr)
    if args.wait:
        follow = {**_headers(args), **({"X-Access-Code": code} if code else {})}
        progress = await _wait(settings, reference, follow)
        print(render_progress(progress))
        if progress.status in UNSUCCESSFUL:
            print(f"request {reference} ended {progress.status}", file=sys.stderr)
            return 1
    return 0


async def _view(settings: Settings, reference: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await _call(settings, "GET", f"/requests/{reference}", headers=headers)
    if response.status_code != 200:
        raise _refusal(response, reference)
    view: dict[str, Any] = response.json()
    return view


async def _wait(settings: Settings, reference: str, headers: dict[str, str],
                every_s: float = 0.3) -> RequestProgress:
    """Follow the request through the intake until it has finished; its last live view."""
    while True:
        view = await _view(settings, reference, headers)
        if "live" in view:
            progress = RequestProgress.model_validate(view["live"])
            if progress.status != "running":
                return progress
        await asyncio.sleep(every_s)


async def _status(args: argparse.Namespace) -> int:
    view = await _view(client_settings(), args.reference, _headers(args))
    if "live" not in view:
        record = view.get("record") or {}
        print(f"{args.reference}  status: {record.get('status', 'unknown')} (the live view is "
              "unavailable just now)")
        return 0
    progress = RequestProgress.model_validate(view["live"])
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


async def _deliver(settings: Settings, reference: str, path: str, body: dict[str, Any],
                   headers: dict[str, str]) -> int:
    response = await _call(settings, "POST", f"/requests/{reference}/{path}", headers=headers,
                           body=body)
    if response.status_code != 200:
        raise _refusal(response, reference)
    print(response.json().get("message", "done"))
    return 0


async def _answer(args: argparse.Namespace) -> int:
    answers = read_submission(args.file)
    if not isinstance(answers, dict):
        raise UserError(f"{args.file} must hold an object of answers by field name")
    body: dict[str, Any] = {"step_id": args.step, "answers": answers}
    if args.item is not None:
        body["item_key"] = args.item
    return await _deliver(client_settings(), args.reference, "information", body,
                          _headers(args))


async def _decide(args: argparse.Namespace) -> int:
    settings = client_settings()
    token = args.token or await client_credentials_token(settings)
    body: dict[str, Any] = {"step_id": args.step, "approve": args.decision == "approve"}
    if args.reason is not None:
        body["reason"] = args.reason
    return await _deliver(settings, args.reference, "decisions", body,
                          {"Authorization": f"Bearer {token}"})


async def client_credentials_token(settings: Settings) -> str:
    """An access token of the engine's client from the configured issuer (OAuth 2.0 client
    credentials, RFC 6749 4.4), the token endpoint found by discovery."""
    secret = settings.oidc_secret()
    if not secret:
        raise UserError("no client secret: set NWD_OIDC_CLIENT_SECRET (or start the embedded "
                        "stack, which generates one), or pass --token")
    issuer = settings.oidc_issuer
    try:
        async with httpx.AsyncClient(timeout=15) as http:
            discovery = await http.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration")
            discovery.raise_for_status()
            endpoint = str(discovery.json()["token_endpoint"])
            response = await http.post(endpoint, data={"grant_type": "client_credentials"},
                                       auth=(settings.oidc_client_id, secret))
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise UserError(f"cannot reach the identity provider {issuer} ({exc}); start the stack "
                        "with `nwd up` or set NWD_OIDC_ISSUER") from exc
    if response.status_code != 200:
        try:
            error = response.json().get("error_description") or response.json().get("error")
        except ValueError:
            error = f"status {response.status_code}"
        raise UserError(f"the identity provider {issuer} refused the client "
                        f"{settings.oidc_client_id!r}: {error}")
    return str(response.json()["access_token"])


async def _cancel(args: argparse.Namespace) -> int:
    return await _deliver(client_settings(), args.reference, "cancel",
                          {"reason": args.reason}, _headers(args))


def _worker(args: argparse.Namespace) -> int:
    import worker

    worker.main()
    return 0
