"""The identity settings' rules and the stack's generated identity secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nwd.stack.secrets import ensure_secrets, read_secrets
from runtime.codec import MissingKeyError
from runtime.settings import InvalidSettings, Settings


class TestRules:
    def test_the_issuer_is_kept_exactly_and_follows_the_port_by_default(self) -> None:
        """A trailing slash is part of an issuer identifier (Login.gov's): it is not cut; the
        embedded issuer follows NWD_OIDC_PORT."""
        assert Settings(oidc_issuer="https://secure.login.gov/").oidc_issuer \
            == "https://secure.login.gov/"
        assert Settings(oidc_port=9555).oidc_issuer == "http://127.0.0.1:9555"
        assert Settings(oidc_issuer="https://id.example.gov").oidc_external
        assert not Settings().oidc_external

    def test_bad_values_are_one_line_each_and_secrets_stay_hidden(self) -> None:
        with pytest.raises(InvalidSettings) as refused:
            Settings.build(oidc_issuer="ftp://id", oidc_leeway_s="301",
                           reference_key="short-key", oidc_roles_claim=" ")
        problems = "\n".join(refused.value.problems)
        assert "NWD_OIDC_ISSUER='ftp://id' is not an http(s)" in problems
        assert "NWD_OIDC_LEEWAY_S='301' is not a number of seconds from 0 to 300" in problems
        assert "NWD_REFERENCE_KEY (value hidden) is shorter than 32 characters" in problems
        assert "short-key" not in problems
        assert "NWD_OIDC_ROLES_CLAIM" in problems

    def test_the_reference_key_is_configured_or_the_stacks(self, tmp_path: Path) -> None:
        """NWD_REFERENCE_KEY wins; else the stack's secrets file; else a clear error."""
        with pytest.raises(MissingKeyError, match="NWD_REFERENCE_KEY"):
            Settings(state_dir=tmp_path).reference_secret()
        generated = ensure_secrets(tmp_path, [])
        assert Settings(state_dir=tmp_path).reference_secret() \
            == generated.reference_key.encode()
        assert Settings(state_dir=tmp_path, reference_key="k" * 32).reference_secret() \
            == b"k" * 32
        assert Settings(state_dir=tmp_path).oidc_secret() == generated.oidc_client_secret


class TestGeneratedSecrets:
    def test_a_stack_from_before_gets_the_identity_secrets_and_keeps_the_rest(
            self, tmp_path: Path) -> None:
        """A secrets file without the reference key and client secret gets both on the next
        start; the payload key and codec token stay as they were."""
        (tmp_path / "secrets.json").write_text(json.dumps({
            "encryption_key": "A" * 43 + "=", "codec_token": "old-token",
            "agency_secrets": {}}))
        upgraded = ensure_secrets(tmp_path, [])
        assert upgraded.encryption_key == "A" * 43 + "="
        assert upgraded.codec_token == "old-token"
        assert len(upgraded.reference_key) >= 32 and len(upgraded.oidc_client_secret) >= 32
        assert read_secrets(tmp_path) == upgraded
        assert ensure_secrets(tmp_path, []) == upgraded  # stable from then on
