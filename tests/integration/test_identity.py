"""The token verifier against a real OIDC provider over HTTP (:mod:`runtime.identity`).

Every token here is issued by the embedded provider's real endpoints (authorization code,
client credentials) or is a real token altered the way an attacker would: re-signed with a key
of their own, with another ``kid``, another issuer or audience, expired, not yet valid. The
verifier fetches the issuer's discovery document and JWKS over HTTP and caches the keys.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from runtime.identity import InvalidToken, IssuerUnavailable, TokenVerifier, roles_in
from runtime.process import free_port
from tests.identity import Issuer, running_issuer


@pytest.fixture(scope="module")
def short_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    """A provider whose tokens live 2 s (for expiry)."""
    with running_issuer(tmp_path_factory.mktemp("oidc-short"), token_lifetime_s=2,
                        client_roles=("licensing-officer",)) as issuer:
        yield issuer


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


@contextmanager
def serving_issuer(key: rsa.RSAPrivateKey, *, kid: str) -> Iterator[str]:
    """A minimal issuer of the test's own over real HTTP (stdlib server in a thread): its
    discovery document and its JWKS with ``key``'s public half."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    documents = {
        "/.well-known/openid-configuration": {"issuer": url, "jwks_uri": f"{url}/jwks"},
        "/jwks": {"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS256"}]},
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(documents.get(self.path, {})).encode()
            self.send_response(200 if self.path in documents else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def forged(claims: dict[str, Any], *, kid: str, key: Any = None, algorithm: str = "RS256") -> str:
    """A token signed with a key of the attacker's own (PyJWT)."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


class TestGenuineTokens:
    async def test_a_signed_in_citizen_is_its_subject_without_roles(
            self, oidc_issuer: Issuer) -> None:
        """The authorization-code flow's access token verifies: its subject, no role."""
        verifier = oidc_issuer.verifier()
        principal = await verifier.verify(await oidc_issuer.sign_in("citizen-ada"))
        assert principal.subject == "citizen-ada"
        assert principal.roles == frozenset()
        assert principal.client_id == "nwd-web"

    async def test_the_dev_caseworker_and_the_service_account_carry_their_roles(
            self, oidc_issuer: Issuer) -> None:
        """Roles come from the roles claim: the dev caseworker's, and the client-credentials
        service account's (subject = the client id)."""
        verifier = oidc_issuer.verifier()
        caseworker = await verifier.verify(await oidc_issuer.sign_in("caseworker"))
        assert caseworker.roles == {"licensing-officer"}
        service = await verifier.verify(await oidc_issuer.service_token())
        assert (service.subject, service.roles) == (oidc_issuer.client_id, {"licensing-officer"})

    async def test_client_credentials_need_the_engine_clients_secret(
            self, oidc_issuer: Issuer) -> None:
        """The provider issues no service token for a wrong secret or another client."""
        async with httpx.AsyncClient(timeout=10) as http:
            wrong = await http.post(f"{oidc_issuer.url}/oauth2/token",
                                    data={"grant_type": "client_credentials"},
                                    auth=(oidc_issuer.client_id, "not-the-secret"))
            other = await http.post(f"{oidc_issuer.url}/oauth2/token",
                                    data={"grant_type": "client_credentials"},
                                    auth=("someone-else", "anything"))
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        assert other.status_code in (400, 401) and "access_token" not in other.text

    def test_roles_at_a_dotted_path_or_space_separated(self) -> None:
        """``realm_access.roles`` reads a nested claim; a string is split on spaces; anything
        else is no role."""
        assert roles_in({"realm_access": {"roles": ["a", "b", 3]}}, "realm_access.roles") \
            == {"a", "b"}
        assert roles_in({"roles": "a b"}, "roles") == {"a", "b"}
        assert roles_in({"roles": 7}, "roles") == frozenset()
        assert roles_in({}, "realm_access.roles") == frozenset()


class TestRefusedTokens:
    async def test_another_issuer_is_refused(self, oidc_issuer: Issuer,
                                             short_issuer: Issuer) -> None:
        """A genuine token of another (real, running) issuer is not ours."""
        verifier = oidc_issuer.verifier()
        with pytest.raises(InvalidToken) as refused:
            await verifier.verify(await short_issuer.sign_in("citizen"))
        # its kid is not one of our issuer's keys: refused before any claim is trusted
        assert "signing key" in refused.value.reason

    async def test_a_wrong_audience_is_refused(self, oidc_issuer: Issuer) -> None:
        """A genuine token of our issuer for another API (audience) is refused."""
        verifier = TokenVerifier(oidc_issuer.url, audience="another-api", leeway_s=0)
        with pytest.raises(InvalidToken, match="audience"):
            await verifier.verify(await oidc_issuer.sign_in("citizen"))

    async def test_a_claimed_issuer_that_does_not_match_is_refused(
            self, oidc_issuer: Issuer) -> None:
        """Trusting a different issuer URL (a trailing slash) refuses our issuer's tokens:
        ``iss`` must match exactly, and so must the discovery document's ``issuer``."""
        verifier = TokenVerifier(oidc_issuer.url + "/", audience=oidc_issuer.audience)
        with pytest.raises(IssuerUnavailable):
            await verifier.verify(await oidc_issuer.sign_in("citizen"))

    async def test_an_expired_token_is_refused_and_leeway_is_bounded(
            self, short_issuer: Issuer) -> None:
        """A 2-s token verifies, then is refused once expired; a leeway over 300 s is refused
        at construction."""
        verifier = short_issuer.verifier()
        token = await short_issuer.sign_in("citizen")
        assert (await verifier.verify(token)).subject == "citizen"
        await asyncio.sleep(3.1)
        with pytest.raises(InvalidToken, match="expired"):
            await verifier.verify(token)
        assert (await short_issuer.verifier(leeway_s=30).verify(token)).subject == "citizen"
        with pytest.raises(ValueError, match="leeway"):
            TokenVerifier(short_issuer.url, audience="nwd", leeway_s=301)

    async def test_a_token_not_yet_valid_is_refused(self) -> None:
        """``nbf`` in the future is refused, within the leeway accepted. The provider issues
        no such token, so this issuer is one of the test's own: its discovery document and
        JWKS served over real HTTP, its tokens signed with its key (PyJWT)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with serving_issuer(key, kid="k1") as url:
            verifier = TokenVerifier(url, audience="nwd", leeway_s=5)
            now = int(time.time())
            claims = {"iss": url, "aud": "nwd", "sub": "s", "exp": now + 600, "iat": now}
            assert (await verifier.verify(forged(claims, kid="k1", key=key))).subject == "s"
            with pytest.raises(InvalidToken, match="not valid yet"):
                await verifier.verify(forged({**claims, "nbf": now + 60}, kid="k1", key=key))
            assert (await verifier.verify(forged({**claims, "nbf": now + 3}, kid="k1",
                                                 key=key))).subject == "s"
            with pytest.raises(InvalidToken, match="'exp'"):
                no_exp = {k: v for k, v in claims.items() if k != "exp"}
                await verifier.verify(forged(no_exp, kid="k1", key=key))
            await verifier.aclose()

    async def test_a_token_re_signed_with_another_key_is_refused(
            self, oidc_issuer: Issuer) -> None:
        """The issuer's genuine claims and kid, signed with the attacker's key."""
        genuine = await oidc_issuer.sign_in("citizen")
        kid = jwt.get_unverified_header(genuine)["kid"]
        with pytest.raises(InvalidToken, match="signature"):
            await oidc_issuer.verifier().verify(forged(claims_of(genuine), kid=kid))

    async def test_an_unknown_kid_is_refused(self, oidc_issuer: Issuer) -> None:
        """A kid the issuer's JWKS does not hold (after one refetch) is refused."""
        genuine = await oidc_issuer.sign_in("citizen")
        verifier = oidc_issuer.verifier(refetch_interval_s=0)
        with pytest.raises(InvalidToken, match="signing key"):
            await verifier.verify(forged(claims_of(genuine), kid="not-a-key-of-theirs"))

    async def test_none_and_hmac_algorithms_are_refused(self, oidc_issuer: Issuer) -> None:
        """``alg: none`` and ``HS256`` (keyed with the public key, the classic confusion) are
        refused whatever the claims say."""
        genuine = claims_of(await oidc_issuer.sign_in("citizen"))
        verifier = oidc_issuer.verifier()
        unsigned = jwt.encode(genuine, None, algorithm="none", headers={"kid": "x"})
        with pytest.raises(InvalidToken, match="algorithm"):
            await verifier.verify(unsigned)
        hmac_signed = jwt.encode(genuine, "a" * 32, algorithm="HS256", headers={"kid": "x"})
        with pytest.raises(InvalidToken, match="algorithm"):
            await verifier.verify(hmac_signed)
        with pytest.raises(InvalidToken, match="not a JWT"):
            await verifier.verify("not-a-token")


class TestKeys:
    async def test_the_jwks_is_fetched_once_and_cached(self, oidc_issuer: Issuer) -> None:
        """Many verifications, one fetch of the keys; an unknown kid refetches at most once per
        interval."""
        verifier = oidc_issuer.verifier(refetch_interval_s=60)
        tokens = [await oidc_issuer.sign_in(f"citizen-{i}") for i in range(3)]
        for token in tokens * 3:
            await verifier.verify(token)
        assert verifier.fetches == 1
        bogus = forged(claims_of(tokens[0]), kid="rotated-away")
        for _ in range(3):
            with pytest.raises(InvalidToken):
                await verifier.verify(bogus)
        assert verifier.fetches == 1  # within the interval: no fetch per bogus kid

    async def test_a_stale_cache_is_refetched_after_its_ttl(self, oidc_issuer: Issuer) -> None:
        """Keys older than the TTL are fetched again (a rotation is picked up)."""
        verifier = oidc_issuer.verifier(jwks_ttl_s=0.5)
        token = await oidc_issuer.sign_in("citizen")
        await verifier.verify(token)
        await asyncio.sleep(0.7)
        await verifier.verify(token)
        assert verifier.fetches == 2

    async def test_an_unreachable_issuer_is_unavailable_not_invalid(
            self, tmp_path: Path) -> None:
        """No provider listening: IssuerUnavailable (a 503 upstream), not a refusal."""
        url = f"http://127.0.0.1:{free_port()}"
        verifier = TokenVerifier(url, audience="nwd")
        now = int(time.time())
        token = forged({"iss": url, "aud": "nwd", "sub": "s", "exp": now + 60}, kid="k")
        with pytest.raises(IssuerUnavailable):
            await verifier.verify(token)
        await verifier.aclose()
