"""Pure parts of the kit: input validation paths, output generation, behaviour, configuration."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from agency_kit.contract import idempotency_key
from agency_kit.idempotency import quote_ident, request_hash
from agency_kit.keys import KeySource, private_jwk
from agency_kit.reference import is_undo
from agency_kit.reference.behaviour import AgencyBehaviour, BehaviourBook, parse_behaviours
from agency_kit.reference.config import AgenciesConfig, AgenciesSettings, ConfigError
from agency_kit.reference.credentials import write_keys_file
from agency_kit.reference.outputs import agency_reference, generate_output
from agency_kit.reference.store import schema_name
from agency_kit.validation import validate_input
from definitions.models import DataSchema, FieldSpec
from tests.keys import keyring

REGISTRY = Path(__file__).resolve().parents[2] / "integration" / "agency_kit" / "agencies.yaml"


class TestValidation:
    def test_paths_for_nested_and_list_errors(self) -> None:
        """Errors name the field by path: dots for objects, brackets for list positions."""
        schema = DataSchema(
            fields={
                "address": FieldSpec(type="address"),
                "tags": FieldSpec(type="list", items=FieldSpec(type="enum", values=("a",))),
                "count": FieldSpec(type="integer", minimum=1),
            }
        )
        errors = validate_input(
            schema, {"address": {"line1": "x"}, "tags": ["a", "b"], "count": 0, "extra": 1}
        )
        paths = {e.path for e in errors}
        assert paths == {
            "input.address.city",
            "input.address.postcode",
            "input.address.country",
            "input.tags[1]",
            "input.count",
            "input.extra",
        }

    def test_messages_never_contain_values(self) -> None:
        """Messages describe the rule, not the (possibly personal) value."""
        schema = DataSchema(fields={"email": FieldSpec(type="email")})
        [error] = validate_input(schema, {"email": "secret-person"})
        assert "secret-person" not in error.message


class TestOutputs:
    def test_generic_rules(self) -> None:
        """Reference, ids, echo, booleans, dates, enums, lists and objects follow the rules."""
        schema = DataSchema(
            fields={
                "reference": FieldSpec(type="text"),
                "registration_number": FieldSpec(type="text"),
                "employer_reference": FieldSpec(type="text"),
                "name": FieldSpec(type="text"),
                "note": FieldSpec(type="text", required=False),
                "ok": FieldSpec(type="boolean"),
                "on": FieldSpec(type="date"),
                "kind": FieldSpec(type="enum", values=("x", "y")),
                "count": FieldSpec(type="integer", maximum=10),
                "tags": FieldSpec(type="list", items=FieldSpec(type="text"), min_items=2),
                "where": FieldSpec(type="address"),
            }
        )
        out = generate_output(
            schema, agency_id="tax-office", number=42, input={"name": "Acme"},
            today=date(2026, 1, 2),
        )
        assert out["reference"] == "TAX-OFFICE-000042"
        assert out["registration_number"] == "TAX-OFFICE-RN-000042"
        assert out["employer_reference"] == "TAX-OFFICE-ER-000042"
        assert out["name"] == "Acme"
        assert out["note"] == "note 42"
        assert out["ok"] is True
        assert out["on"] == "2026-01-02"
        assert out["kind"] == "x"
        assert out["count"] == 10
        assert out["tags"] == ["tags 42", "tags 42"]
        assert validate_input({"where": FieldSpec(type="address")}, {"where": out["where"]}) == []

    def test_output_is_valid_against_its_schema(self) -> None:
        """Generated outputs pass the output schema (so the engine accepts them)."""
        schema = DataSchema(
            fields={
                "email": FieldSpec(type="email"),
                "phone": FieldSpec(type="phone"),
                "amount": FieldSpec(type="number", minimum=100),
                "nested": FieldSpec(type="object", fields={"id_number": FieldSpec(type="text")}),
            }
        )
        out = generate_output(schema, agency_id="dmv", number=7, input={})
        assert validate_input(schema, out, root="output") == []

    def test_agency_reference_format(self) -> None:
        """Agency references are the upper-cased id and a six-digit number."""
        assert agency_reference("dmv", 123) == "DMV-000123"
        assert schema_name("driver-licensing") == "agency_driver_licensing"


class TestBehaviour:
    def test_layers_merge_key_by_key(self) -> None:
        """'*', then the agency, then its operation entry."""
        book = BehaviourBook(
            parse_behaviours(
                {
                    "*": {"latency_ms": 5, "mode": "callback"},
                    "dmv": {"latency_ms": 50, "operations": {"op": {"error_every": 3}}},
                }
            )
        )
        effective = book.effective("dmv", "op")
        assert (effective.latency_ms, effective.mode, effective.error_every) == (50, "callback", 3)
        assert book.effective("other", "op").latency_ms == 5
        assert book.effective("dmv", "else").error_every is None

    def test_error_every_counts_per_operation(self) -> None:
        """Every Nth call of one operation fails; other operations count on their own."""
        book = BehaviourBook({"dmv": AgencyBehaviour(error_every=2)})
        effective = book.effective("dmv", "a")
        results = [book.unavailable("dmv", "a", effective) is not None for _ in range(4)]
        assert results == [False, True, False, True]
        assert book.unavailable("dmv", "b", book.effective("dmv", "b")) is None

    def test_outage_duration_is_anchored_when_set(self) -> None:
        """duration_s becomes an absolute window; Retry-After counts down to its end."""
        book = BehaviourBook()
        stored = book.set("dmv", AgencyBehaviour.model_validate({"outage": {"duration_s": 10}}))
        assert stored.outage is not None and stored.outage.end is not None
        reason = book.unavailable("dmv", "x", book.effective("dmv", "x"))
        assert reason is not None and reason[1] in (9, 10)

    def test_unknown_keys_are_refused(self) -> None:
        """A typo in behaviour JSON is an error, not ignored."""
        with pytest.raises(ValueError, match="latncy_ms"):
            parse_behaviours({"dmv": {"latncy_ms": 5}})


class TestNames:
    def test_undo_prefixes(self) -> None:
        """revert-, undo-, withdraw- and rollback- mark undo operations; cancel- does not."""
        assert all(is_undo(n) for n in ("revert-address", "undo-x", "withdraw-registration"))
        assert not is_undo("cancel-passport")

    def test_keys_and_hashes(self) -> None:
        """Idempotency keys and body hashes are stable."""
        assert idempotency_key("R", "s", None) == "R:s:-"
        assert idempotency_key("R", "s", "i", "info", "2") == "R:s:i:info:2"
        assert request_hash({"a": 1, "b": 2}) == request_hash({"b": 2, "a": 1})
        with pytest.raises(ValueError):
            quote_ident('x"; DROP TABLE y')


def config_from(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> AgenciesConfig:
    """The agencies' configuration in an environment holding exactly ``env`` of its names."""
    for name in AgenciesSettings.variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return AgenciesConfig.from_environment()


class TestConfig:
    def test_from_env(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """Registry, listen address, keys and behaviour come from the environment."""
        ring = keyring("dmv")
        keys_file = tmp_path / "agency-keys.json"
        write_keys_file(keys_file, {"dmv": [private_jwk(*ring.signing)]})
        config = config_from(
            monkeypatch,
            {
                "DATABASE_URL": "postgresql://x/y",
                "NWD_AGENCIES_URL": "http://0.0.0.0:9100",
                "NWD_CATALOG_DIR": str(REGISTRY.parent),
                "NWD_AGENCY_KEYS_FILE": str(keys_file),
                "NWD_ENGINE_JWKS_URL": "http://127.0.0.1:8000/.well-known/jwks.json",
                "NWD_SIGNATURE_EXPIRES_S": "30",
                "NWD_AGENCY_BEHAVIOUR": json.dumps({"dmv": {"latency_ms": 3}}),
            }
        )
        assert (config.host, config.port) == ("0.0.0.0", 9100)
        assert set(config.credentials.keyrings) == {"dmv"}
        assert config.credentials.keyrings["dmv"].signing[0] == ring.signing[0]
        assert isinstance(config.credentials.engine_keys, KeySource)
        assert config.credentials.engine_keys.url.endswith("/.well-known/jwks.json")
        assert config.credentials.expires_s == 30
        assert config.behaviour["dmv"].latency_ms == 3
        assert {a.id for a in config.registry.agencies} == {"dmv", "companies", "locked"}

    def test_a_keys_file_others_can_read_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Private keys in a file readable by group or others: the agencies do not start."""
        keys_file = tmp_path / "agency-keys.json"
        write_keys_file(keys_file, {"dmv": [private_jwk(*keyring("dmv").signing)]})
        keys_file.chmod(0o644)
        monkeypatch.setenv("DATABASE_URL", "postgresql://x/y")
        monkeypatch.setenv("NWD_CATALOG_DIR", str(REGISTRY.parent))
        monkeypatch.setenv("NWD_AGENCY_KEYS_FILE", str(keys_file))
        with pytest.raises(ConfigError, match="readable by other users; chmod 600"):
            AgenciesConfig.from_environment()

    def test_default_catalog_is_the_repository_registry(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without NWD_CATALOG_DIR the repository's definitions/agencies.yaml is served."""
        config = config_from(monkeypatch, {"DATABASE_URL": "postgresql://x/y"})
        assert config.registry.agencies
        assert (config.host, config.port) == ("127.0.0.1", 8090)

    @pytest.mark.parametrize(
        ("env", "fragment"),
        [
            ({}, "DATABASE_URL is required"),
            ({"DATABASE_URL": "x", "NWD_AGENCY_BEHAVIOUR": "{"}, "NWD_AGENCY_BEHAVIOUR"),
            ({"DATABASE_URL": "x", "NWD_CATALOG_DIR": "/nowhere"}, "no agency registry"),
            ({"DATABASE_URL": "x", "NWD_AGENCIES_URL": "localhost:1"},
             "NWD_AGENCIES_URL='localhost:1' must look like http://HOST:PORT"),
            ({"DATABASE_URL": "x", "NWD_LOG_FORMAT": "plain"}, "NWD_LOG_FORMAT='plain'"),
        ],
    )
    def test_errors(
        self, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragment: str
    ) -> None:
        """Bad configuration is reported in one line, naming the variable, with what to fix."""
        with pytest.raises(ConfigError, match=fragment) as caught:
            config_from(monkeypatch, env)
        assert "\n" not in str(caught.value)
