"""`make demo`: one real "change of address" request through several reference agencies.

The stack is already up (see `nwd demo` in nwd/commands/stack.py). This submits the example
request through the intake as a citizen without an account would, follows each agency's
progress live with the access code the answer carries (the intake's status, the workflow's
`progress` query), then prints the outcome, where to look in the Temporal UI, and how to sign
in at the stack's OIDC provider.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from nwd.commands.requests import render_progress
from runtime.messages import RequestProgress
from runtime.settings import PROJECT_ROOT, Settings
from runtime.temporal import connect
from workflows.request_workflow import CitizenRequestWorkflow

SERVICE = "change-of-address"
EXAMPLE = PROJECT_ROOT / "examples" / f"{SERVICE}.json"

DEMO_BEHAVIOUR: dict[str, dict[str, Any]] = {
    # Slow enough to watch, fast enough not to bore: real agencies take minutes or weeks.
    "driver-licensing": {"latency_ms": 700},
    "electoral-registration": {"latency_ms": 400},
    "tax-authority": {"latency_ms": 1200, "error_every": 2},
    "benefits-agency": {"latency_ms": 900},
}


async def configure_agencies(agencies_url: str) -> None:
    async with httpx.AsyncClient(base_url=agencies_url, timeout=5) as admin:
        for agency, behaviour in DEMO_BEHAVIOUR.items():
            response = await admin.put(f"/_admin/agencies/{agency}/behaviour", json=behaviour)
            response.raise_for_status()


async def run_demo(settings: Settings, *, example: Path = EXAMPLE, timeout_s: float = 120) -> int:
    client = await connect(settings)
    await configure_agencies(settings.agencies_url)
    data = json.loads(example.read_text())  # noqa: ASYNC240 - one small file, before any work
    print(f"\nSubmitting one '{SERVICE}' request for a citizen who moved house "
          f"({example.relative_to(PROJECT_ROOT)}), through the intake, without an account.")
    print("One submission; the engine tells every agency concerned, exactly once.\n")
    async with httpx.AsyncClient(base_url=settings.intake_url, timeout=30) as intake:
        answer = await intake.post("/requests", json={"service": SERVICE, "submission": data},
                                   headers={"Idempotency-Key": str(uuid.uuid4())})
        answer.raise_for_status()
        reference = str(answer.json()["reference"])
        access_code = str(answer.json()["access_code"])
        print(f"Reference {reference}; its one-time access code (shown once, only its hash is "
              f"kept):\n  {access_code}\n")
        live = LiveView(sys.stdout.isatty())
        started = time.monotonic()
        progress: RequestProgress | None = None
        while time.monotonic() - started < timeout_s:
            view = await intake.get(f"/requests/{reference}",
                                    headers={"X-Access-Code": access_code})
            view.raise_for_status()
            if "live" in view.json():
                progress = RequestProgress.model_validate(view.json()["live"])
                live.show(render_progress(progress))
                if progress.status != "running":
                    break
            await asyncio.sleep(0.3)
    handle = client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
    result = await asyncio.wait_for(handle.result(), timeout=max(1.0, timeout_s))
    elapsed = time.monotonic() - started
    namespace = settings.temporal_namespace
    ui = f"{settings.temporal_ui_url}/namespaces/{namespace}/workflows/{reference}"
    print(f"\nOutcome: {result.status} in {elapsed:.1f} s — {result.agencies_contacted} agencies "
          f"told from one submission (the citizen was spared "
          f"{max(result.agencies_contacted - 1, 0)} separate contacts).")
    print(f"Definition pinned: {SERVICE} v{result.version}, "
          f"content hash {result.content_hash[:12]}")
    print(f"\nSee this run in the Temporal UI:\n  {ui}")
    print("  - the summary at the top names the service; 'Event History' shows each agency call")
    print("    with its summary; inputs are encrypted — the UI decrypts them through the intake's")
    print("    codec server (/codec), which the embedded stack configures for you.")
    print("  - filter all runs: CitizenService=\"change-of-address\" in the list's query box.")
    front_door = str(settings.intake_url).rstrip("/")
    print(f"\nThe front door (any browser, phone or desktop; en, es, ar, zh-Hans):\n"
          f"  {front_door}/   — choose a service, apply, get a reference\n"
          f"  {front_door}/track   — follow this request with its reference and access code\n")
    print("Follow it from the command line:\n"
          f"  .venv/bin/nwd status {reference} --access-code {access_code}\n")
    print(sign_in_help(settings))
    return 0 if result.status == "completed" else 1


def sign_in_help(settings: Settings) -> str:
    """How to sign in at the stack's OIDC issuer (printed at the end of the demo)."""
    issuer = settings.oidc_issuer
    lines = [f"Sign in: the engine trusts the OpenID Connect issuer {issuer}"]
    if not settings.oidc_external:
        lines += [
            "  (the embedded development provider: discovery at "
            f"{issuer}/.well-known/openid-configuration).",
            "  Dev users, chosen on its sign-in form: citizen (no role), caseworker (the "
            "roles of the catalog's decision steps), operator (role operator); any other "
            "name signs in as a citizen.",
            "  A citizen signed in owns the requests they submit (Authorization: Bearer "
            "<access token>, no access code needed).",
        ]
    lines += [
        "  Caseworkers decide with a token holding the step's role; `nwd decide` gets the "
        f"engine client's ({settings.oidc_client_id}) by client credentials:",
        "    .venv/bin/nwd decide <reference> <step> approve --reason '...'",
        "  See docs/identity.md.",
    ]
    return "\n".join(lines)


class LiveView:
    """Redraws the progress table in place on a terminal; prints only changes elsewhere."""

    def __init__(self, tty: bool) -> None:
        self._tty = tty
        self._last = ""
        self._lines = 0

    def show(self, text: str) -> None:
        if text == self._last:
            return
        if self._tty and self._lines:
            sys.stdout.write(f"\x1b[{self._lines}F\x1b[J")
        sys.stdout.write(text + "\n")
        if not self._tty:
            sys.stdout.write("\n")
        sys.stdout.flush()
        self._last = text
        self._lines = text.count("\n") + 1
