"""The engine's one settings model: every ``NWD_*`` variable, read once at a composition root.

Each composition root (``worker.py``, ``python -m intake``, the ``nwd`` command line, the
benchmark worker) calls :meth:`Settings.from_environment` once and hands the values down
through constructors; nothing below them reads the environment. A wrong value stops the
process at start-up with one line per variable, naming it and the rule it breaks::

    NWD_TEMPORAL_PORT='abc' is not a TCP port (1-65535)

(:class:`InvalidSettings`; the roots print it as ``<prog>: error: <line>`` and exit 2.)

``Settings(...)`` built in code reads **no** environment: only what is passed and the
defaults, so a test's settings never pick up the developer's shell. The list of variables is
:meth:`Settings.variables`; docs/cli.md documents each (a test keeps the two equal, and one
that every ``NWD_*`` name in the code and docs is a field here).

The variables an agency registry names (``http.base_url_env``, ``keys.jwks_url_env``) are not
fields: their names are data, chosen by whoever writes ``agencies.yaml``, and resolved at run time
from :attr:`Settings.agency_env`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agency_kit.keys import jwks, load_private_key, parse_jwks
from agency_kit.signing import Signer
from runtime.codec import MissingKeyError, load_key, load_secret

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = PROJECT_ROOT / ".state"
DEFAULT_CATALOG_DIR = PROJECT_ROOT / "definitions"
TASK_QUEUE = "citizen-requests"
"""The engine's one task queue (workflows and agency-call activities)."""

_OFF = "off"
"""The value that switches an optional endpoint off (``NWD_WORKER_METRICS_ADDRESS=off``)."""


class InvalidSettings(Exception):  # noqa: N818 (named after the state, like the SDK's errors)
    """One or more variables hold values the engine cannot run with.

    ``problems`` holds one line per variable: its name, the value (hidden for secrets) and
    the rule, e.g. ``NWD_TEMPORAL_PORT='abc' is not a TCP port (1-65535)``.
    """

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------------- value rules
# Each rule raises a PydanticCustomError whose message is the rule itself, so the one line
# shown at start-up reads "<NAME>=<value> <rule>".


def _tcp_port(value: Any) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise PydanticCustomError("tcp_port", "is not a TCP port (1-65535)")
    return int(text)


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PydanticCustomError("host_port", "is not HOST:PORT (port 1-65535)")
    return value


def _optional_host_port(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() == _OFF:
        return None
    try:
        return _host_port(text)
    except PydanticCustomError:
        raise PydanticCustomError(
            "host_port_or_off", "is not HOST:PORT (port 1-65535) or 'off'"
        ) from None


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or port == 0:
        raise PydanticCustomError("http_url", "is not an http(s)://HOST[:PORT] URL")
    return value.rstrip("/")


def _postgres_url(value: str) -> str:
    if urlsplit(value).scheme not in ("postgresql", "postgres"):
        raise PydanticCustomError("postgres_url", "is not a postgresql:// URL")
    return value


def _switch(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise PydanticCustomError("switch", "is not a switch (1/0, true/false, yes/no, on/off)")


def _process_id(value: Any) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise PydanticCustomError("process_id", "is not a process id (a positive integer)")
    return int(text)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("not_blank", "must not be blank")
    return value


def _aes_key(value: SecretStr) -> SecretStr:
    try:
        key = base64.b64decode(value.get_secret_value(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise PydanticCustomError("aes_key", "is not base64 of 32 bytes (an AES-256 key)")
    return value


def _issuer(value: str) -> str:
    # Unlike the other URLs, kept exactly: tokens' ``iss`` must equal it character for
    # character, and some issuers end in a slash (``https://secure.login.gov/``).
    _http_url(value)
    return value


def _leeway(value: Any) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) > 300:
        raise PydanticCustomError("leeway", "is not a number of seconds from 0 to 300")
    return int(text)


def _reference_key(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < 32:
        raise PydanticCustomError("reference_key", "is shorter than 32 characters")
    return value


Port = Annotated[int, BeforeValidator(_tcp_port)]
Leeway = Annotated[int, BeforeValidator(_leeway)]
Issuer = Annotated[str, AfterValidator(_issuer)]
ReferenceKey = Annotated[SecretStr, AfterValidator(_reference_key)]
ProcessId = Annotated[int, BeforeValidator(_process_id)]
HostPort = Annotated[str, AfterValidator(_host_port)]
OptionalHostPort = Annotated[str | None, BeforeValidator(_optional_host_port)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
PostgresUrl = Annotated[str, AfterValidator(_postgres_url)]
Switch = Annotated[bool, BeforeValidator(_switch)]
Name = Annotated[str, AfterValidator(_not_blank)]
AesKey = Annotated[SecretStr, AfterValidator(_aes_key)]

ENGINE_SECRETS = ("NWD_ENCRYPTION_KEY", "NWD_CODEC_TOKEN", "NWD_METRICS_TOKEN", "NWD_SIGNING_KEY",
                  "NWD_SIGNING_KEY_ID", "NWD_OIDC_CLIENT_SECRET", "NWD_REFERENCE_KEY",
                  "NWD_SMTP_PASSWORD")
"""The engine's secrets (and the signing key's id): no agency's process is given any."""
_SECRET = {"NWD_ENCRYPTION_KEY", "NWD_CODEC_TOKEN", "NWD_METRICS_TOKEN", "NWD_SIGNING_KEY",
           "NWD_OIDC_CLIENT_SECRET", "NWD_REFERENCE_KEY", "NWD_SMTP_PASSWORD"}
"""Variables whose values never appear in an error line."""


def _var(alias: str, default: Any = None, **kwargs: Any) -> Any:
    """A field read from the variable ``alias`` (its name in the environment and the docs)."""
    return Field(default, validation_alias=alias, **kwargs)


class Settings(BaseSettings):
    """Every setting of the engine's processes, with the embedded stack's defaults."""

    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=True,
        env_ignore_empty=True,  # NAME= (empty) means: not set, use the default
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    # ---- the embedded stack's ports (declared first: the addresses below default to them)
    temporal_port: Port = _var("NWD_TEMPORAL_PORT", 7233)
    """gRPC port of the embedded Temporal dev server."""
    temporal_ui_port: Port = _var("NWD_TEMPORAL_UI_PORT", 8233)
    """Port of the embedded dev server's web UI."""
    temporal_metrics_port: Port = _var("NWD_TEMPORAL_METRICS_PORT", 9233)
    """Port of the embedded dev server's Prometheus ``/metrics``."""
    postgres_port: Port = _var("NWD_POSTGRES_PORT", 5433)
    """Port of the embedded PostgreSQL (used when ``DATABASE_URL`` is not set)."""

    # ---- Temporal
    temporal_address: HostPort = _var("TEMPORAL_ADDRESS", "", validate_default=True)
    """``host:port`` of the Temporal frontend; set, it also means: do not start the embedded
    dev server (default: the embedded one, ``127.0.0.1:NWD_TEMPORAL_PORT``)."""
    temporal_namespace: Name = _var("TEMPORAL_NAMESPACE", "default")
    """The namespace every process works in."""
    temporal_ui_url: HttpUrl = _var("TEMPORAL_UI_URL", "", validate_default=True)
    """Base URL of the Temporal UI, for links (default ``http://127.0.0.1:NWD_TEMPORAL_UI_PORT``)."""
    task_queue: Name = _var("NWD_TASK_QUEUE", TASK_QUEUE)
    """The task queue of the engine's workflow and activities."""

    # ---- PostgreSQL
    database_url: PostgresUrl | None = _var("DATABASE_URL")
    """The read model's PostgreSQL DSN; unset: the embedded PostgreSQL under ``NWD_STATE_DIR``
    (which the stack hands to its processes explicitly)."""
    agencies_database_url: PostgresUrl | None = _var("NWD_AGENCIES_DATABASE_URL")
    """The reference agencies' database; unset: ``agencies`` on the embedded server, or
    ``DATABASE_URL`` when that is set."""

    # ---- the engine's own endpoints
    intake_url: HttpUrl = _var("NWD_INTAKE_URL", "http://127.0.0.1:8000")
    """Where the intake listens; also the public base URL of agencies' callbacks
    (``{intake_url}/callbacks/...``)."""
    agencies_url: HttpUrl = _var("NWD_AGENCIES_URL", "http://127.0.0.1:8090")
    """Where the reference agencies listen (the demo's default agency endpoints)."""
    worker_metrics_address: OptionalHostPort = _var("NWD_WORKER_METRICS_ADDRESS",
                                                    "127.0.0.1:9464")
    """``host:port`` of the worker's Prometheus ``/metrics`` (SDK and engine metrics);
    ``off``: none."""
    intake_metrics_address: HostPort | None = _var("NWD_INTAKE_METRICS_ADDRESS")
    """``host:port`` of the intake's private SDK metrics exporter, whose text the intake serves
    at ``{intake_url}/metrics``; unset: any free loopback port."""

    # ---- files and secrets
    state_dir: Path = _var("NWD_STATE_DIR", DEFAULT_STATE_DIR)
    """The embedded stack's state: databases, logs, pid files, generated secrets."""
    stack_owner_pid: ProcessId | None = _var("NWD_STACK_OWNER_PID")
    """A process whose end stops what ``nwd up`` starts (a CI job's shell, a test harness):
    a watchdog stops the stack's processes once it has ended, even by SIGKILL; unset: they
    run until ``nwd down``."""
    catalog_dir: Path = _var("NWD_CATALOG_DIR", DEFAULT_CATALOG_DIR)
    """The catalog: ``agencies.yaml`` and ``services/``."""
    encryption_key: AesKey | None = _var("NWD_ENCRYPTION_KEY")
    """Base64 AES-256 key of the payload codec; unset: the key in ``NWD_STATE_DIR``'s
    ``secrets.json`` (generated by the embedded stack)."""
    codec_token: SecretStr | None = _var("NWD_CODEC_TOKEN")
    """Bearer token the intake's codec server (``/codec``) accepts; unset: no codec server."""

    # ---- behaviour switches
    log_format: Literal["auto", "json", "console"] = _var("NWD_LOG_FORMAT", "auto")
    """``json`` lines, a ``console`` for people, or ``auto``: JSON unless on a terminal."""
    workflow_sandbox: Switch = _var("NWD_WORKFLOW_SANDBOX", False)
    """Run workflow code inside the SDK's sandbox (a development guard; see worker.py)."""
    otel: Switch = _var("NWD_OTEL", False)
    """Trace with OpenTelemetry (needs the ``opentelemetry-sdk`` package)."""

    # ---- trust: exchanges
    signing_key: SecretStr | None = _var("NWD_SIGNING_KEY")
    """The engine's Ed25519 private key (a private JWK, or PEM with ``NWD_SIGNING_KEY_ID``)
    that signs every call to an agency (RFC 9421); only the worker needs it. Unset: the key in
    ``NWD_STATE_DIR``'s ``secrets.json`` (generated by the embedded stack)."""
    signing_key_id: str | None = _var("NWD_SIGNING_KEY_ID")
    """The key id (``keyid``/``kid``) of ``NWD_SIGNING_KEY``; a JWK's own ``kid`` otherwise."""
    engine_public_keys: str | None = _var("NWD_ENGINE_PUBLIC_KEYS")
    """A JWKS (JSON) of the engine's public keys the intake publishes at
    ``/.well-known/jwks.json`` beside the public half of ``NWD_SIGNING_KEY``: the next or the
    previous key during a rotation, or the only key for an intake not given the private one."""
    signature_expires_s: int = _var("NWD_SIGNATURE_EXPIRES_S", 60, ge=1, le=300)
    """How long a signature stays valid after it is made (seconds, 1-300)."""
    callback_token_ttl_s: int = _var("NWD_CALLBACK_TOKEN_TTL_S", 30 * 86400, ge=60)
    """How long the callback URL of a step without a deadline is valid, counted from the call's
    first attempt (seconds)."""
    callback_grace_s: int = _var("NWD_CALLBACK_GRACE_S", 7 * 86400, ge=0)
    """How long after its step's deadline a callback URL stays valid (seconds): an escalated
    step keeps waiting, and its agency may still answer within this grace."""
    # ---- trust: identity (OpenID Connect, access codes, keyed references)
    oidc_port: Port = _var("NWD_OIDC_PORT", 9400)
    """Port of the embedded OIDC provider (development and tests)."""
    oidc_issuer: Issuer = _var("NWD_OIDC_ISSUER", "", validate_default=True)
    """The OpenID Connect issuer whose access tokens the engine trusts, exactly as its tokens'
    ``iss`` spell it; set, it also means: do not start the embedded provider (default: the
    embedded one, ``http://127.0.0.1:NWD_OIDC_PORT``)."""
    oidc_audience: Name = _var("NWD_OIDC_AUDIENCE", "nwd")
    """The ``aud`` every access token must carry: the engine's API at that issuer."""
    oidc_roles_claim: Name = _var("NWD_OIDC_ROLES_CLAIM", "roles")
    """The claim holding a caller's roles; a dotted path reads a nested one
    (``realm_access.roles``)."""
    oidc_leeway_s: Leeway = _var("NWD_OIDC_LEEWAY_S", 30)
    """Clock skew tolerated on a token's ``exp``/``nbf``/``iat``, in seconds (0-300)."""
    oidc_client_id: Name = _var("NWD_OIDC_CLIENT_ID", "nwd-cli")
    """The confidential client ``nwd decide`` signs in as (client-credentials grant)."""
    oidc_client_secret: SecretStr | None = _var("NWD_OIDC_CLIENT_SECRET")
    """That client's secret; unset: the one in ``secrets.json`` (generated by the stack)."""
    reference_key: ReferenceKey | None = _var("NWD_REFERENCE_KEY")
    """The server secret request references are keyed with (HMAC; at least 32 characters);
    unset: the one in ``secrets.json`` (generated by the stack)."""

    # ---- not a variable: the registry's own names
    agency_env: Mapping[str, str] = Field(default_factory=dict, repr=False, exclude=True)
    """The environment, for the variables the agency registry names: each agency's
    ``http.base_url_env`` (its base URL) and ``keys.jwks_url_env`` (its public keys). The registry
    chooses those names, so they are looked up by name at run time
    (``activities.agency_directory``, the intake's callback verifier), never fields here.
    Kept out of ``repr`` and dumps: it holds secrets."""

    # ---- trust: operators
    deployment: Literal["development", "production"] = _var("NWD_DEPLOYMENT", "development")
    """``production`` switches off what only a developer's machine may expose: ``/docs`` and
    ``/openapi.json``, the reference agencies' admin API, the codec endpoint with the token in
    its path; and ``/metrics`` then needs ``NWD_METRICS_TOKEN``."""
    metrics_token: SecretStr | None = _var("NWD_METRICS_TOKEN")
    """Bearer token ``GET /metrics`` needs in production (unset there: nobody may scrape);
    in development, given, it is required too."""
    operator_role: Name = _var("NWD_OPERATOR_ROLE", "operator")
    """The role (in the OIDC roles claim) an operator's token must hold to decrypt payloads
    through the codec server."""

    # ---- the pages: signing in (OpenID Connect authorization code, PKCE)
    pages_client_id: Name = _var("NWD_PAGES_CLIENT_ID", "nwd-pages")
    """The public OAuth client (no secret; PKCE S256) the pages sign people in as, at
    ``NWD_OIDC_ISSUER``; its redirect URI is ``{NWD_INTAKE_URL}/sign-in/callback``. Its access
    tokens must carry ``NWD_OIDC_AUDIENCE``, like every token the engine trusts."""
    # ---- emails to citizens (the worker's send_citizen_email)
    smtp_host: str | None = _var("NWD_SMTP_HOST")
    """The SMTP server the worker sends citizens' emails through. Unset: the embedded stack
    runs its own sink and points its worker at it (``nwd mail``); a worker started on its own
    without it sends no email (and logs that it did not)."""
    smtp_port: Port = _var("NWD_SMTP_PORT", 8025)
    """Its port; the embedded stack's sink listens here."""
    smtp_username: str | None = _var("NWD_SMTP_USERNAME")
    """User to authenticate as (unset: no authentication)."""
    smtp_password: SecretStr | None = _var("NWD_SMTP_PASSWORD")
    """Password for ``NWD_SMTP_USERNAME`` (a worker secret)."""
    smtp_starttls: Switch = _var("NWD_SMTP_STARTTLS", False)
    """Upgrade the connection with STARTTLS before sending (production servers)."""
    mail_from: Name = _var("NWD_MAIL_FROM", "No Wrong Door <no-reply@nwd.example>")
    """The From of every email to citizens."""

    @field_validator("temporal_address", mode="before")
    @classmethod
    def _embedded_temporal(cls, value: Any, info: ValidationInfo) -> Any:
        return value or f"127.0.0.1:{info.data.get('temporal_port', 7233)}"

    @field_validator("oidc_issuer", mode="before")
    @classmethod
    def _embedded_issuer(cls, value: Any, info: ValidationInfo) -> Any:
        return value or f"http://127.0.0.1:{info.data.get('oidc_port', 9400)}"

    @field_validator("temporal_ui_url", mode="before")
    @classmethod
    def _embedded_ui(cls, value: Any, info: ValidationInfo) -> Any:
        return value or f"http://127.0.0.1:{info.data.get('temporal_ui_port', 8233)}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values passed in: the environment is read by :meth:`from_environment`."""
        return (init_settings,)

    @classmethod
    def from_environment(cls) -> Settings:
        """The settings in this process's environment (pydantic-settings' environment source).

        Raises:
            InvalidSettings: a variable holds a value that breaks its rule (one line each).
        """
        names = cls.variables()
        given = {k: v for k, v in EnvSettingsSource(cls)().items() if k in names}
        return cls.build(**given, agency_env=dict(os.environ))

    @classmethod
    def build(cls, **values: Any) -> Settings:
        """``Settings(**values)``, a bad value reported as :class:`InvalidSettings`."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise InvalidSettings(_problems(exc)) from None

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Every variable of the model: its name in the environment -> the field name."""
        return {
            str(info.validation_alias): name
            for name, info in cls.model_fields.items()
            if isinstance(info.validation_alias, str)
        }

    # ---- derived values --------------------------------------------------------------------

    @property
    def production(self) -> bool:
        """``NWD_DEPLOYMENT=production``: nothing meant for a developer is served."""
        return self.deployment == "production"

    @property
    def temporal_external(self) -> bool:
        """``TEMPORAL_ADDRESS`` was given: a server of its own, not the embedded dev server."""
        return "temporal_address" in self.model_fields_set

    @property
    def oidc_external(self) -> bool:
        """``NWD_OIDC_ISSUER`` was given: an issuer of its own, not the embedded provider."""
        return "oidc_issuer" in self.model_fields_set

    def payload_key(self) -> bytes:
        """The payload codec's AES-256 key (``NWD_ENCRYPTION_KEY`` or the stack's secrets)."""
        return load_key(self.state_dir, reveal(self.encryption_key))

    def engine_signer(self) -> Signer | None:
        """The engine's signer from ``NWD_SIGNING_KEY``; None when no key is given.

        Raises:
            InvalidSettings: the key cannot be read.
        """
        text = reveal(self.signing_key)
        if not text:
            return None
        try:
            kid, key = load_private_key(text, kid=self.signing_key_id)
        except ValueError as exc:
            raise InvalidSettings((f"NWD_SIGNING_KEY (value hidden) is invalid: {exc}",)) from None
        return Signer(key, kid, expires_s=self.signature_expires_s)

    def engine_jwks(self) -> dict[str, Any]:
        """The engine's public keys as a JWKS: ``NWD_SIGNING_KEY``'s public half, then those of
        ``NWD_ENGINE_PUBLIC_KEYS``.

        Raises:
            InvalidSettings: a key cannot be read.
        """
        published: dict[str, Ed25519PublicKey] = {}
        try:
            if self.engine_public_keys:
                published.update(parse_jwks(json.loads(self.engine_public_keys)))
        except ValueError as exc:
            raise InvalidSettings((f"NWD_ENGINE_PUBLIC_KEYS is not a JWKS: {exc}",)) from None
        signer = self.engine_signer()
        if signer is not None:
            published[signer.key_id] = signer.public_key
        return jwks(published)

    def reference_secret(self) -> bytes:
        """The key references and access hashes are keyed with (``NWD_REFERENCE_KEY`` or the
        stack's secrets).

        Raises:
            MissingKeyError: neither is there.
        """
        return load_secret(self.state_dir, reveal(self.reference_key), "reference_key",
                           "NWD_REFERENCE_KEY").encode()

    def oidc_secret(self) -> str | None:
        """The engine client's secret at the issuer (``NWD_OIDC_CLIENT_SECRET`` or the stack's
        secrets); None when neither is there."""
        try:
            return load_secret(self.state_dir, reveal(self.oidc_client_secret),
                               "oidc_client_secret", "NWD_OIDC_CLIENT_SECRET")
        except MissingKeyError:
            return None

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes``, validated; addresses left to their defaults follow the
        ports again (``replace(temporal_port=...)`` moves the default ``temporal_address``)."""
        given = {name: getattr(self, name) for name in self.model_fields_set}
        return self.build(**{**given, "agency_env": self.agency_env, **changes})

    def environment(self) -> dict[str, str]:
        """These settings as the variables of a child process (secrets included).

        An optional value that is unset is left out; ``worker_metrics_address`` None is
        ``off``. ``Settings.from_environment()`` in the child gives these settings back.
        """
        env: dict[str, str] = {}
        for alias, name in self.variables().items():
            value = getattr(self, name)
            if value is None:
                if name == "worker_metrics_address":
                    env[alias] = _OFF
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "1" if value else "0"
            env[alias] = str(value)
        return env


def print_problems(prog: str, exc: InvalidSettings) -> None:
    """Report bad settings as a composition root does: ``<prog>: error: <line>`` each."""
    for line in exc.problems:
        print(f"{prog}: error: {line}", file=sys.stderr)


def reveal(secret: SecretStr | None) -> str | None:
    """The plain value of an optional secret setting."""
    return secret.get_secret_value() if secret is not None else None


def _problems(exc: ValidationError) -> tuple[str, ...]:
    """One line per error: ``NAME=<value> <rule>`` (secret values hidden)."""
    lines: list[str] = []
    aliases = {name: alias for alias, name in Settings.variables().items()}
    for error in exc.errors(include_url=False):
        where = str(error["loc"][0]) if error["loc"] else "settings"
        name = aliases.get(where, where)
        value = error.get("input")
        if error["type"] == "missing" or isinstance(value, dict):
            shown = name
        elif name in _SECRET or isinstance(value, SecretStr):
            shown = f"{name} (value hidden)"
        else:
            shown = f"{name}={_redacted(value)!r}"
        if error["type"] in _RULES:
            rule = error["msg"]
        elif error["type"] == "literal_error":
            rule = f"is not one of {error.get('ctx', {}).get('expected', '')}"
        else:  # pydantic's own wording, not phrased as a rule
            rule = f"is invalid: {error['msg']}"
        lines.append(f"{shown} {rule}")
    return tuple(lines)


_RULES = {
    "tcp_port", "host_port", "host_port_or_off", "http_url", "postgres_url", "switch",
    "not_blank", "aes_key", "process_id", "leeway", "reference_key",
}
"""The error types of the rules above, whose message is the rule itself."""


def _redacted(value: Any) -> Any:
    """A DSN's password replaced by ``***``; anything else as it is."""
    if isinstance(value, str) and "://" in value:
        parts = urlsplit(value)
        if parts.password:
            return value.replace(f":{parts.password}@", ":***@")
    return value
