"""docker-compose.yml stays in step with the code: services, pinned images, env names, ports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from agency_kit.reference.config import AgenciesSettings
from definitions.loader import load_registry_file
from definitions.models import Agency
from runtime.settings import ENGINE_SECRETS, PROJECT_ROOT, Settings
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
ENGINE_SERVICES = ("worker", "intake", "agencies")

DEFAULT_IS_FINE: dict[str, str] = {
    "NWD_TASK_QUEUE": "one engine, one queue",
    "NWD_CATALOG_DIR": "the image holds the repository's definitions/",
    "NWD_WORKFLOW_SANDBOX": "a development guard; production runs without it",
    "NWD_OTEL": "tracing is opt-in",
    "NWD_TEMPORAL_PORT": "a port of the embedded stack, which compose does not use",
    "NWD_TEMPORAL_UI_PORT": "a port of the embedded stack, which compose does not use",
    "NWD_TEMPORAL_METRICS_PORT": "a port of the embedded stack, which compose does not use",
    "NWD_POSTGRES_PORT": "a port of the embedded stack, which compose does not use",
    "NWD_STACK_OWNER_PID": "ties the embedded stack to a process; compose does not use it",
    "NWD_AGENCIES_DATABASE_URL": "the agencies service sets its own DATABASE_URL",
    "NWD_WORKER_METRICS_ADDRESS": "the default port inside the worker's container",
    "NWD_INTAKE_METRICS_ADDRESS": "a private port inside the intake's container",
    "NWD_SIGNING_KEY_ID": "the engine's key is a JWK, which names its own kid",
    "NWD_SIGNATURE_EXPIRES_S": "the default validity (60 s) is the recommended one",
    "NWD_CALLBACK_TOKEN_TTL_S": "the default lifetime of callback URLs",
    "NWD_CALLBACK_GRACE_S": "the default grace after a step's deadline",
    "NWD_OPERATOR_ROLE": "the issuer's operator role is called operator unless set",
    "NWD_OIDC_PORT": "a port of the embedded stack's OIDC provider, which compose does not use",
    "NWD_OIDC_AUDIENCE": "the engine's API identifier at the issuer: `nwd` unless registered "
                         "otherwise",
    "NWD_OIDC_ROLES_CLAIM": "`roles`, as Entra ID and most issuers name it",
    "NWD_PAGES_CLIENT_ID": "the pages' public client is `nwd-pages` unless registered otherwise",
    "NWD_OIDC_LEEWAY_S": "30 s of clock skew",
    "NWD_OIDC_CLIENT_ID": "the CLI's client; no service in compose signs in",
    "NWD_OIDC_CLIENT_SECRET": "the CLI's secret; no service in compose signs in",
}
"""Settings whose defaults are right inside a container as well, and why."""
# What each engine service needs beyond the engine-wide names.
NEEDS: dict[str, set[str]] = {
    "intake": {"NWD_CODEC_TOKEN", "NWD_OIDC_ISSUER", "NWD_REFERENCE_KEY"},
    "worker": set(),
    "agencies": {"NWD_AGENCY_KEYS_FILE", "NWD_ENGINE_JWKS_URL"},
}
SMTP = {"NWD_SMTP_HOST", "NWD_SMTP_PORT", "NWD_SMTP_USERNAME", "NWD_SMTP_PASSWORD",
        "NWD_SMTP_STARTTLS", "NWD_MAIL_FROM"}
"""Only the worker sends email (its password is the worker's secret)."""
# Keys a service must NOT get: no process holds a key it does not need.
NOT_FOR: dict[str, set[str]] = {
    "worker": {"NWD_ENGINE_PUBLIC_KEYS", "NWD_AGENCY_KEYS_FILE", "NWD_REFERENCE_KEY",
               "NWD_OIDC_ISSUER"},
    "intake": {"NWD_SIGNING_KEY", "NWD_AGENCY_KEYS_FILE", *SMTP},
    # the agencies are other parties: none of the engine's secrets
    "agencies": {*ENGINE_SECRETS, "NWD_ENGINE_PUBLIC_KEYS", "NWD_OIDC_ISSUER", *SMTP},
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text())
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def settings_env_names() -> set[str]:
    """Every variable of the engine's settings model."""
    return set(Settings.variables())


def registry_agencies() -> tuple[Agency, ...]:
    return tuple(load_registry_file(PROJECT_ROOT / "definitions" / "agencies.yaml").agencies)


def agency_env_names() -> set[str]:
    """The variables the registry names: each agency's base URL and JWKS URL."""
    names: set[str] = set()
    for agency in registry_agencies():
        if agency.http is not None:
            names.add(agency.http.base_url_env)
        if agency.keys is not None and agency.keys.jwks_url_env:
            names.add(agency.keys.jwks_url_env)
    return names


class TestServices:
    def test_services_exist(self, compose: dict[str, Any]) -> None:
        """The stack has PostgreSQL, Temporal, its UI and admin job, and the engine's processes."""
        expected = {
            "postgresql", "temporal", "temporal-ui", "temporal-admin-tools", *ENGINE_SERVICES,
        }
        assert expected <= set(compose["services"])

    def test_images_pinned(self, compose: dict[str, Any]) -> None:
        """Every image names an explicit tag, never `latest`."""
        for name, service in compose["services"].items():
            image = service.get("image")
            assert image, f"{name}: no image"
            repository, _, tag = image.rpartition(":")
            assert repository and tag and "/" not in tag, f"{name}: image {image!r} has no tag"
            assert tag != "latest", f"{name}: image {image!r} uses latest"

    def test_engine_services_built_here(self, compose: dict[str, Any]) -> None:
        """worker, intake and agencies are built from this repository's Dockerfile."""
        commands = {}
        for name in ENGINE_SERVICES:
            build = compose["services"][name]["build"]
            context = (COMPOSE.parent / build["context"]).resolve()
            assert context.is_dir()
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()
            commands[name] = " ".join(compose["services"][name]["command"])
        assert commands == {
            "worker": "python worker.py",
            "intake": "python -m intake",
            "agencies": "python -m agency_kit",
        }

    def test_dependencies_wait_for_health(self, compose: dict[str, Any]) -> None:
        """Every depends_on has a condition; `service_healthy` targets have a healthcheck."""
        services = compose["services"]
        for name, service in services.items():
            for dependency, spec in (service.get("depends_on") or {}).items():
                assert dependency in services, f"{name} depends on unknown {dependency}"
                condition = spec["condition"]
                assert condition in ("service_healthy", "service_completed_successfully")
                if condition == "service_healthy":
                    assert "healthcheck" in services[dependency], f"{dependency}: no healthcheck"

    def test_host_ports_do_not_clash(self, compose: dict[str, Any]) -> None:
        """No two services publish the same host port."""
        seen: dict[str, str] = {}
        for name, service in compose["services"].items():
            for mapping in service.get("ports") or []:
                parts = str(mapping).split(":")
                host = ":".join(parts[:-1]) if len(parts) > 1 else parts[0]
                assert host not in seen, f"{name} and {seen.get(host)} both publish {host}"
                seen[host] = name


class TestEnvironment:
    def test_defaults_named_are_settings(self) -> None:
        """Every name said to be fine at its default is a variable of the settings model."""
        assert set(DEFAULT_IS_FINE) <= settings_env_names()

    @pytest.mark.parametrize("service", ENGINE_SERVICES)
    def test_engine_env_complete(self, compose: dict[str, Any], service: str) -> None:
        """Every name the code reads is set for each engine service (or its default is fine)."""
        env = _env(compose["services"][service])
        needed = (
            (settings_env_names() - set(DEFAULT_IS_FINE)) | agency_env_names() | NEEDS[service]
        ) - NOT_FOR[service]
        missing = sorted(needed - set(env))
        assert not missing, f"{service} lacks {missing}"

    @pytest.mark.parametrize("service", ENGINE_SERVICES)
    def test_each_service_gets_only_the_keys_it_needs(
        self, compose: dict[str, Any], service: str
    ) -> None:
        """The engine's private key only to the worker, its public keys only to the intake,
        the agencies' keys file only to the agencies (as a secret only they mount)."""
        env = _env(compose["services"][service])
        assert not NOT_FOR[service] & set(env), f"{service} gets {NOT_FOR[service] & set(env)}"
        mounted = {s["source"] if isinstance(s, dict) else s
                   for s in compose["services"][service].get("secrets") or []}
        assert mounted == ({"agency-keys"} if service == "agencies" else set())

    @pytest.mark.parametrize("service", ENGINE_SERVICES)
    def test_engine_env_is_read(self, compose: dict[str, Any], service: str) -> None:
        """Every variable set for an engine service is a setting (the engine's or the reference
        agencies' own) or a name the registry gives: none is set that nothing reads."""
        known = settings_env_names() | AgenciesSettings.variables() | agency_env_names()
        unread = sorted(set(_env(compose["services"][service])) - known)
        assert not unread, f"{service} sets {unread}, which no settings model reads"

    def test_agency_urls_point_at_reference_agencies(self, compose: dict[str, Any]) -> None:
        """Each agency's base URL env points at the agencies service, path /agencies/<id>."""
        env = _env(compose["services"]["worker"])
        for agency in registry_agencies():
            if agency.http is not None:
                assert env[agency.http.base_url_env] == (
                    f"http://agencies:8090/agencies/{agency.id}"
                )

    def test_secrets_never_defaulted(self, compose: dict[str, Any]) -> None:
        """Secrets come from the operator (`${NAME:?...}`), never from a value in the file."""
        services = compose["services"]
        for service, name in (("intake", "NWD_ENCRYPTION_KEY"), ("intake", "NWD_CODEC_TOKEN"),
                              ("worker", "NWD_SIGNING_KEY"),
                              ("intake", "NWD_ENGINE_PUBLIC_KEYS"),
                              ("intake", "NWD_REFERENCE_KEY")):
            env = _env(services[service])
            assert env[name].startswith(f"${{{name}:?"), f"{name} = {env[name]!r}"

    def test_agencies_use_their_own_database(self, compose: dict[str, Any]) -> None:
        """The reference agencies get the `agencies` database, the engine `nwd`."""
        services = compose["services"]
        assert _env(services["agencies"])["DATABASE_URL"].endswith("/agencies")
        assert _env(services["worker"])["DATABASE_URL"].endswith("/nwd")

    def test_codec_endpoint_is_the_intake(self, compose: dict[str, Any]) -> None:
        """The UI decrypts payloads through the intake's /codec, at a browser-visible URL."""
        ui = _env(compose["services"]["temporal-ui"])
        assert ui["TEMPORAL_CODEC_ENDPOINT"] == "http://localhost:8000/codec"
        # production has no token-in-path endpoint: the UI signs operators in and passes on
        # their access token, or it decodes nothing
        assert ui["TEMPORAL_CODEC_PASS_ACCESS_TOKEN"] == "true"
        assert ui["TEMPORAL_AUTH_ENABLED"] == "true"
        assert ui["TEMPORAL_AUTH_PROVIDER_URL"].startswith("${NWD_OIDC_ISSUER:?")


class TestTemporal:
    def test_search_attributes_registered(self, compose: dict[str, Any]) -> None:
        """The admin job creates exactly the engine's search attributes, with their types."""
        command = " ".join(compose["services"]["temporal-admin-tools"]["command"])
        created = dict(re.findall(r"create (\w+) (\w+)", command))
        expected = {
            key.name: {
                "KEYWORD": "Keyword", "KEYWORD_LIST": "KeywordList", "BOOL": "Bool",
                "DATETIME": "Datetime", "INT": "Int", "FLOAT": "Double", "TEXT": "Text",
            }[key.indexed_value_type.name]
            for key in SEARCH_ATTRIBUTES
        }
        assert created == expected

    def test_dynamic_config_mounted(self, compose: dict[str, Any]) -> None:
        """The Temporal server reads the dynamic config given inline in the compose file."""
        temporal = compose["services"]["temporal"]
        target = temporal["configs"][0]["target"]
        assert target.endswith(_env(temporal)["DYNAMIC_CONFIG_FILE_PATH"].split("config/", 1)[1])
        content = compose["configs"][temporal["configs"][0]["source"]]["content"]
        assert "history.transferProcessorMaxPollRPS" in YAML(typ="safe").load(content)


def test_dockerignore_keeps_state_out() -> None:
    """Local state, the venv and secrets never enter the image's build context."""
    ignored = set((Path(PROJECT_ROOT) / ".dockerignore").read_text().split())
    assert {".venv", ".state", ".env", ".git", "agency-keys.json"} <= ignored
