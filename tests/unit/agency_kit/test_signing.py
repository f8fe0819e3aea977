"""Signing: the RFC 9421 profile, rotation by key id, malformed headers, the worked example."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.datastructures import Headers

from agency_kit.keys import (
    InvalidKeyError,
    Keyring,
    StaticKeys,
    jwks,
    load_private_key,
    new_key,
    parse_jwks,
    private_jwk,
    public_key_from_x,
)
from agency_kit.signing import (
    ANSWER_TAG,
    CALL_TAG,
    CALLBACK_TAG,
    MAX_EXPIRES_S,
    SignatureError,
    Signer,
    Verifier,
)

DOC = Path(__file__).resolve().parents[3] / "docs" / "agency-contract.md"
NOW = 1_767_225_600
URL = "http://127.0.0.1:8090/agencies/dmv/operations/update-address"
BODY = b'{"reference":"R-1","step":"dmv","item":null,"input":{}}'
HEADERS = {"Content-Type": "application/json", "Idempotency-Key": "R-1:dmv:-"}


def ring(kid: str) -> Keyring:
    return Keyring((load_private_key(json.dumps(new_key(kid))),))


ENGINE = ring("engine-1")


def signer(keys: Keyring = ENGINE, *, at: float = NOW, expires_s: int = 60) -> Signer:
    kid, key = keys.signing
    return Signer(key, kid, expires_s=expires_s, clock=lambda: at)


def verifier(keys: dict[str, object] | StaticKeys, *, at: float = NOW) -> Verifier:
    lookup = keys if isinstance(keys, StaticKeys) else StaticKeys(keys)  # type: ignore[arg-type]
    return Verifier(lookup.get, clock=lambda: at)


class TestRequests:
    def test_a_signed_call_verifies_and_says_who_signed_it(self) -> None:
        """The signature covers the profile's components and parameters, and verifies."""
        headers = signer().request_headers("POST", URL, BODY, HEADERS)
        assert headers["Content-Digest"] == (
            "sha-256=:" + base64.b64encode(hashlib.sha256(BODY).digest()).decode() + ":")
        params = headers["Signature-Input"]
        assert params.startswith('nwd=("@method" "@target-uri" "content-type" '
                                 '"content-digest" "idempotency-key");')
        for part in (f"created={NOW}", 'keyid="engine-1"', 'alg="ed25519"',
                     f"expires={NOW + 60}", "nonce=", f'tag="{CALL_TAG}"'):
            assert part in params
        verified = verifier(ENGINE.public()).verify_request("POST", URL, BODY, headers)
        assert (verified.key_id, verified.created, verified.expires) == (
            "engine-1", NOW, NOW + 60)
        assert verified.nonce

    def test_each_signature_has_a_fresh_nonce(self) -> None:
        """Two signatures of the same message differ by their nonce (replay detection)."""
        first = signer().request_headers("POST", URL, BODY, HEADERS)
        second = signer().request_headers("POST", URL, BODY, HEADERS)
        assert first["Signature-Input"] != second["Signature-Input"]

    @pytest.mark.parametrize(("change", "fragment"), [
        ({"url": URL.replace("update-address", "renew-licence")}, "does not match"),
        ({"method": "PUT"}, "does not match"),
        ({"body": BODY.replace(b"R-1", b"R-2")}, "Content-Digest does not match"),
        ({"headers": {"Idempotency-Key": "R-1:dmv:-:again"}}, "does not match"),
        ({"headers": {"Content-Type": "text/plain"}}, "does not match"),
    ])
    def test_a_captured_call_sent_with_anything_changed_is_refused(
        self, change: dict[str, object], fragment: str
    ) -> None:
        """Another URL, method, body, idempotency key or content type: SignatureError."""
        headers = signer().request_headers("POST", URL, BODY, HEADERS)
        sent = {**headers, **change.get("headers", {})}  # type: ignore[dict-item]
        with pytest.raises(SignatureError, match=fragment):
            verifier(ENGINE.public()).verify_request(
                str(change.get("method", "POST")), str(change.get("url", URL)),
                change.get("body", BODY), sent)  # type: ignore[arg-type]

    def test_an_idempotency_key_added_to_an_unkeyed_signature_is_refused(self) -> None:
        """A key the signature does not cover is refused, not ignored."""
        headers = signer().request_headers("POST", URL, BODY, {"Content-Type": "application/json"})
        with pytest.raises(SignatureError, match="idempotency-key"):
            verifier(ENGINE.public()).verify_request(
                "POST", URL, BODY, {**headers, "Idempotency-Key": "R-1:dmv:-"})

    def test_late_early_and_long_lived_signatures_are_refused(self) -> None:
        """Past ``expires`` (beyond the skew), created in the future, or valid too long."""
        headers = signer(at=NOW).request_headers("POST", URL, BODY, HEADERS)
        with pytest.raises(SignatureError, match="expired"):
            verifier(ENGINE.public(), at=NOW + 66).verify_request("POST", URL, BODY, headers)
        verifier(ENGINE.public(), at=NOW + 64).verify_request("POST", URL, BODY, headers)
        with pytest.raises(SignatureError, match="future"):
            verifier(ENGINE.public(), at=NOW - 10).verify_request("POST", URL, BODY, headers)
        with pytest.raises(ValueError, match="expires_s"):
            signer(expires_s=MAX_EXPIRES_S + 1)

    def test_a_signature_of_another_kind_of_message_is_refused(self) -> None:
        """A call's signature is no callback's: the tag is checked."""
        headers = signer().request_headers("POST", URL, BODY, HEADERS, tag=CALL_TAG)
        with pytest.raises(SignatureError, match="tag"):
            verifier(ENGINE.public()).verify_request("POST", URL, BODY, headers,
                                                     tag=CALLBACK_TAG)

    def test_another_partys_key_is_refused_and_named(self) -> None:
        """A signature by a key the receiver does not know says which kid it was."""
        other = ring("impostor")
        headers = signer(other).request_headers("POST", URL, BODY, HEADERS)
        with pytest.raises(SignatureError) as refused:
            verifier(ENGINE.public()).verify_request("POST", URL, BODY, headers)
        assert refused.value.unknown_key_id == "impostor"
        forged = {**headers, "Signature-Input": headers["Signature-Input"].replace(
            'keyid="impostor"', 'keyid="engine-1"')}
        with pytest.raises(SignatureError, match="does not match"):
            verifier(ENGINE.public()).verify_request("POST", URL, BODY, forged)


class TestMalformedHeaders:
    @pytest.mark.parametrize("change", [
        {"Signature": None},
        {"Signature-Input": None},
        {"Signature": "(((garbage"},
        {"Signature": ""},
        {"Signature-Input": 'nwd="@method"'},
        {"Signature-Input": "nwd=(\"@method\");created=\u00e9"},
        {"Signature": "nwd=:\u00ff\u00fe:"},
        {"Signature": "nwd=:AAAA:, nwd=:BBBB:"},
        {"Signature": "other=:AAAA:"},
        {"Content-Digest": "sha-256=:\u00e9:"},
        {"Content-Digest": "md5=:AAAA:"},
        {"Content-Digest": None},
        {"Signature-Input": 'nwd=("@method");created=1;keyid="engine-1";expires=2;x=1'},
        {"Idempotency-Key": "R-1:dmv:\u00e9"},
        {"Content-Type": "application/json\u00ff"},
    ])
    def test_malformed_non_ascii_or_absent_headers_are_a_signature_error(
        self, change: dict[str, str | None]
    ) -> None:
        """Every one of them is a SignatureError (a 401), never another exception (a 500)."""
        headers: dict[str, str] = signer().request_headers("POST", URL, BODY, HEADERS)
        for name, value in change.items():
            if value is None:
                headers.pop(name)
            else:
                headers[name] = value
        with pytest.raises(SignatureError):
            verifier(ENGINE.public()).verify_request("POST", URL, BODY, headers)


    @pytest.mark.parametrize("name", ["Idempotency-Key", "Signature", "Signature-Input",
                                      "Content-Digest", "content-type"])
    def test_a_second_copy_of_a_covered_header_is_refused(self, name: str) -> None:
        """Starlette's and aiohttp's headers keep every copy: the check and the application
        could read different ones, so a second copy is a SignatureError (401)."""
        signed = signer().request_headers("POST", URL, BODY, HEADERS)
        value = next(v for k, v in signed.items() if k.lower() == name.lower())
        headers = Headers(raw=[(name.lower().encode(), b"R-1:dmv:-:again" if
                                name == "Idempotency-Key" else value.encode())]
                          + [(k.lower().encode(), v.encode()) for k, v in signed.items()])
        with pytest.raises(SignatureError, match="more than once"):
            verifier(ENGINE.public()).verify_request("POST", URL, BODY, headers)


class TestAnswers:
    def test_an_answer_is_bound_to_the_request_it_answers(self) -> None:
        """Covering the request's URL, digest and key (;req): no other request's answer."""
        agency = ring("dmv-1")
        sent = signer().request_headers("POST", URL, BODY, HEADERS)
        body = b'{"status":"completed"}'
        answer = signer(agency).answer_headers(
            200, body, {"Content-Type": "application/json"}, request_method="POST",
            request_url=URL, request_headers=sent)
        assert f'tag="{ANSWER_TAG}"' in answer["Signature-Input"]
        assert '"idempotency-key";req' in answer["Signature-Input"]
        check = verifier(agency.public())
        check.verify_answer(200, body, answer, request_method="POST", request_url=URL,
                            request_headers=sent)
        for status, request_url, request_headers in (
            (201, URL, sent),
            (200, URL + "/cancel", sent),
            (200, URL, {**sent, "Idempotency-Key": "R-9:dmv:-"}),
        ):
            with pytest.raises(SignatureError):
                check.verify_answer(status, body, answer, request_method="POST",
                                    request_url=request_url, request_headers=request_headers)
        with pytest.raises(SignatureError, match="Content-Digest"):
            check.verify_answer(200, b'{"status":"rejected"}', answer, request_method="POST",
                                request_url=URL, request_headers=sent)


class TestRotation:
    def test_two_keys_valid_at_once_then_the_old_one_is_refused(self) -> None:
        """While both keys are published both verify; the newest signs; once the old one is
        no longer published its signatures are refused."""
        old_kid, old_key = ENGINE.signing
        new_kid, new_key_ = load_private_key(json.dumps(new_key("engine-2")))
        rotating = Keyring(((old_kid, old_key), (new_kid, new_key_)))
        assert rotating.signing[0] == "engine-2"
        by_old = signer(ENGINE).request_headers("POST", URL, BODY, HEADERS)
        by_new = signer(rotating).request_headers("POST", URL, BODY, HEADERS)
        published = StaticKeys(dict(rotating.public()))
        assert verifier(published).verify_request("POST", URL, BODY, by_old).key_id == old_kid
        assert verifier(published).verify_request("POST", URL, BODY, by_new).key_id == new_kid
        published = StaticKeys({new_kid: new_key_.public_key()})  # the old key withdrawn
        assert verifier(published).verify_request("POST", URL, BODY, by_new).key_id == new_kid
        with pytest.raises(SignatureError) as refused:
            verifier(published).verify_request("POST", URL, BODY, by_old)
        assert refused.value.unknown_key_id == old_kid


class TestKeys:
    def test_pem_and_jwk_load_the_same_key_and_jwks_round_trips(self) -> None:
        """A PKCS#8 PEM (with its kid given) and a private JWK give one key; a JWKS of its
        public half parses back to it."""
        from cryptography.hazmat.primitives import serialization

        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        kid, from_pem = load_private_key(pem, kid="k1")
        _, from_jwk = load_private_key(json.dumps(private_jwk("k1", key)))
        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        assert from_pem.public_key().public_bytes(*raw) == from_jwk.public_key().public_bytes(*raw)
        published = parse_jwks(jwks({kid: key.public_key()}))
        assert published["k1"].public_bytes(*raw) == key.public_key().public_bytes(*raw)

    @pytest.mark.parametrize(("text", "fragment"), [
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "kid"),
        ('{"kty": "RSA"}', "not a PEM or a private Ed25519 JWK"),
        ("not a key", "not a PEM or a private Ed25519 JWK"),
    ])
    def test_unusable_keys_say_why(self, text: str, fragment: str) -> None:
        with pytest.raises(InvalidKeyError, match=fragment):
            load_private_key(text)

    def test_a_jwk_whose_halves_disagree_is_refused(self) -> None:
        jwk = {**new_key("a"), "x": new_key("b")["x"]}
        with pytest.raises(InvalidKeyError, match="not the public half"):
            load_private_key(json.dumps(jwk))

    def test_a_jwks_of_other_key_types_is_refused(self) -> None:
        with pytest.raises(InvalidKeyError, match="not an Ed25519 JWKS"):
            parse_jwks({"keys": [{"kty": "RSA", "kid": "r", "n": "x", "e": "AQAB"}]})


def _block_after(text: str, marker: str) -> str:
    """The first fenced block after ``marker`` in the page."""
    found = re.search(re.escape(marker) + r".*?```text\n(.*?)\n```", text, re.S)
    assert found, f"no ```text block after {marker!r} in {DOC.name}"
    return found.group(1)


class TestWorkedExample:
    """docs/agency-contract.md's worked example, recomputed from the page itself."""

    def test_the_documented_signature_base_and_headers_are_what_the_kit_makes(self) -> None:
        page = DOC.read_text()
        jwk_line = _block_after(page, "RFC 8032's first test key")
        kid, key = load_private_key(jwk_line.removeprefix("private JWK: "))
        request = _block_after(page, "The request, signed at")
        head, _, body_text = request.partition("\n\n")
        request_line, *header_lines = head.splitlines()
        method, url = request_line.split(" ", 1)
        headers = dict(line.split(": ", 1) for line in header_lines)
        body = body_text.encode()
        created = int(re.search(r"created=(\d+)` with", page).group(1))  # type: ignore[union-attr]
        nonce = re.search(r'`nonce="([^"]+)"`', page).group(1)  # type: ignore[union-attr]
        base = _block_after(page, "Its signature base")
        documented = dict(line.split(": ", 1)
                          for line in _block_after(page, "and the headers sent with it")
                          .splitlines())

        # the kit makes exactly the documented headers
        made = Signer(key, kid, clock=lambda: created).request_headers(
            method, url, body, headers, nonce=nonce)
        for name, value in documented.items():
            assert made[name] == value, name

        # and the base, built by hand as another language would, is what was signed
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        lines = base.split("\n")
        assert lines[0] == f'"@method": {method}'
        assert lines[1] == f'"@target-uri": {url}'
        assert lines[2] == f'"content-type": {headers["Content-Type"]}'
        assert lines[3] == f'"content-digest": sha-256=:{digest}:'
        assert lines[4] == f'"idempotency-key": {headers["Idempotency-Key"]}'
        params = documented["Signature-Input"].removeprefix("nwd=")
        assert lines[5] == f'"@signature-params": {params}'
        signature = base64.b64decode(documented["Signature"].removeprefix("nwd=:").rstrip(":"))
        public = public_key_from_x(json.loads(jwk_line.removeprefix("private JWK: "))["x"])
        public.verify(signature, base.encode())  # raises InvalidSignature if the page is wrong
        with pytest.raises(InvalidSignature):
            public.verify(signature, base.encode() + b"\n")
