"""A real OIDC provider for tests, and signing in to it over HTTP as a browser or a CLI would.

The provider is the one the stack starts (:mod:`nwd.stack.oidc`, the PyPI package
``oidc-provider-mock``), run as a process of this session on a free port. Tokens come from its
real endpoints: the authorization-code flow (the sign-in form posted as a person would, the
code exchanged at the token endpoint) or the client-credentials grant; users' roles are set
through the provider's own user API (``PUT /users/{sub}``).
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from nwd.stack.oidc import DevUser, OidcProvider, ProviderConfig, dev_users
from runtime.identity import TokenVerifier
from runtime.process import free_port

AUDIENCE = "nwd"
CLIENT_ID = "nwd-cli"
REDIRECT_URI = "http://127.0.0.1/signed-in"
"""Where the browser would be sent back with the code (nothing listens: the code is read from
the redirect's ``Location``)."""


@dataclass(frozen=True)
class Issuer:
    """A running provider: its URL and the engine client's credentials."""

    url: str
    client_id: str
    client_secret: str
    audience: str = AUDIENCE
    roles_claim: str = "roles"

    def verifier(self, *, leeway_s: float = 0, **options: float) -> TokenVerifier:
        """A verifier trusting this issuer (no leeway unless asked: tests are about time)."""
        return TokenVerifier(self.url, audience=self.audience, roles_claim=self.roles_claim,
                             leeway_s=leeway_s, **options)

    async def set_roles(self, subject: str, roles: Sequence[str]) -> None:
        """Give ``subject`` these roles (the provider's user API)."""
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.put(f"{self.url}/users/{quote(subject, safe='')}",
                                      json={self.roles_claim: list(roles), "name": subject})
            response.raise_for_status()

    async def sign_in(self, subject: str, *, client_id: str = "nwd-web") -> str:
        """An access token of ``subject``, by the authorization-code flow over HTTP."""
        query = {"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
                 "scope": "openid", "state": secrets.token_urlsafe(8)}
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            form = await http.get("/oauth2/authorize", params=query)
            assert form.status_code == 200, form.text
            chosen = await http.post("/oauth2/authorize", params=query, data={"sub": subject})
            assert chosen.status_code == 302, chosen.text
            code = parse_qs(urlsplit(chosen.headers["location"]).query)["code"][0]
            token = await http.post("/oauth2/token", data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "client_id": client_id, "client_secret": "unused"})
            assert token.status_code == 200, token.text
            return str(token.json()["access_token"])

    async def service_token(self) -> str:
        """The engine client's token (client credentials): what ``nwd decide`` uses."""
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(f"{self.url}/oauth2/token",
                                       data={"grant_type": "client_credentials"},
                                       auth=(self.client_id, self.client_secret))
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])


@contextmanager
def running_issuer(state_dir: Path, *, token_lifetime_s: int = 600,
                   client_roles: Sequence[str] = (),
                   users: Sequence[DevUser] | None = None) -> Iterator[Issuer]:
    """The stack's provider on a free port, a child of this session (the session watchdog
    stops it if the session is killed), stopped at the end."""
    port = free_port()
    secret = secrets.token_urlsafe(24)
    config = ProviderConfig(
        host="127.0.0.1", port=port, audience=AUDIENCE, roles_claim="roles",
        client_id=CLIENT_ID, client_secret=secret, client_roles=tuple(client_roles),
        users=tuple(users if users is not None else dev_users(client_roles)),
        token_lifetime_s=token_lifetime_s)
    provider = OidcProvider(config=lambda: config, config_path=state_dir / "oidc.json",
                            issuer=config.issuer)
    launch = provider.launch()
    log = (state_dir / "oidc.log").open("ab")
    process = subprocess.Popen(list(launch.argv), env=dict(launch.env), stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not provider.ready():
            assert process.poll() is None, (state_dir / "oidc.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the OIDC provider did not start"
            time.sleep(0.05)
        yield Issuer(config.issuer, CLIENT_ID, secret)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()

