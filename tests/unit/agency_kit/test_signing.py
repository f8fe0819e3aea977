"""Signing: the v1 HMAC scheme, its replay window and its error messages."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from agency_kit.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    sign,
    signed_headers,
    verify,
    verify_headers,
)

SECRET = "s3cret"
BODY = b'{"reference":"R-1","step":"dmv","item":null,"input":{}}'
NOW = 1_767_225_600


class TestSign:
    def test_matches_hmac_over_timestamp_dot_body(self) -> None:
        """The signature is hex HMAC-SHA256(secret, b"{ts}." + body) prefixed by v1=."""
        expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256)
        assert sign(SECRET, NOW, BODY) == f"v1={expected.hexdigest()}"

    def test_known_vector(self) -> None:
        """A fixed vector, the same as the one in docs/agency-contract.md."""
        assert sign("s3cret", 1767225600, b'{"hello":"world"}') == (
            "v1=e851f24d7569b538c676bd515f4c16eea33881349b8793290ffcf2c5cd538dde"
        )

    def test_signed_headers_without_secret_only_timestamp(self) -> None:
        """With no secret only the timestamp header is sent."""
        assert signed_headers(None, BODY, timestamp=NOW) == {TIMESTAMP_HEADER: str(NOW)}

    def test_signed_headers_with_secret(self) -> None:
        """With a secret both headers are sent and verify."""
        headers = signed_headers(SECRET, BODY, timestamp=NOW)
        assert headers[SIGNATURE_HEADER] == sign(SECRET, NOW, BODY)
        verify_headers(SECRET, BODY, headers, now=NOW)


class TestVerify:
    def test_good_signature_passes(self) -> None:
        """A fresh, correct signature raises nothing."""
        verify(SECRET, BODY, timestamp=str(NOW), signature=sign(SECRET, NOW, BODY), now=NOW + 10)

    def test_several_candidates_one_good(self) -> None:
        """A comma-separated list passes when one candidate is right (secret rotation)."""
        good = sign(SECRET, NOW, BODY)
        verify(SECRET, BODY, timestamp=str(NOW), signature=f"v1=00, {good}", now=NOW)

    @pytest.mark.parametrize(
        ("timestamp", "signature", "fragment"),
        [
            (None, "v1=00", "X-NWD-Timestamp header is missing"),
            (str(NOW), None, "X-NWD-Signature header is missing"),
            ("yesterday", "v1=00", "unix seconds"),
            (str(NOW), "sha256=00", "must look like"),
            (str(NOW), "v1=" + "0" * 64, "does not match"),
        ],
    )
    def test_bad_headers_raise(
        self, timestamp: str | None, signature: str | None, fragment: str
    ) -> None:
        """Missing, malformed or wrong headers raise SignatureError saying which."""
        with pytest.raises(SignatureError, match=fragment):
            verify(SECRET, BODY, timestamp=timestamp, signature=signature, now=NOW)

    def test_other_body_fails(self) -> None:
        """A signature over other bytes (even re-serialised JSON) does not verify."""
        with pytest.raises(SignatureError, match="does not match"):
            verify(
                SECRET, BODY + b" ", timestamp=str(NOW), signature=sign(SECRET, NOW, BODY), now=NOW
            )

    def test_other_secret_fails(self) -> None:
        """A signature made with another secret does not verify."""
        with pytest.raises(SignatureError):
            verify(SECRET, BODY, timestamp=str(NOW), signature=sign("other", NOW, BODY), now=NOW)

    @pytest.mark.parametrize("skew", [301, -301, 10_000])
    def test_stale_or_future_timestamp_fails(self, skew: int) -> None:
        """Timestamps outside the 300 s window are refused, even with a correct HMAC."""
        with pytest.raises(SignatureError, match="away from the receiver's clock"):
            good = sign(SECRET, NOW, BODY)
            verify(SECRET, BODY, timestamp=str(NOW), signature=good, now=NOW + skew)

    def test_edge_of_window_passes(self) -> None:
        """Exactly 300 s is still inside the window."""
        verify(SECRET, BODY, timestamp=str(NOW), signature=sign(SECRET, NOW, BODY), now=NOW + 300)
