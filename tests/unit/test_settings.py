"""The one settings model: rules with one-line errors, start-up failures, and no variable
read behind its back (every ``NWD_*`` name in the code and docs is a field, and the
documented list is the model's)."""

from __future__ import annotations

import base64
import fnmatch
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agency_kit.reference.config import AgenciesSettings
from definitions.loader import load_registry_file
from nwd.stack import Stack
from runtime.settings import PROJECT_ROOT, InvalidSettings, Settings

NWD = str(Path(sys.executable).parent / "nwd")
KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The environment without any of the model's variables (a developer's shell may set some)."""
    for name in Settings.variables():
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without the model's variables, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if k not in Settings.variables()}
    env.update(values)
    return env


class TestModel:
    def test_defaults_are_the_embedded_stack(self, environ: pytest.MonkeyPatch) -> None:
        """With nothing set, every process points at the embedded stack's default ports."""
        settings = Settings.from_environment()
        assert settings.temporal_address == "127.0.0.1:7233"
        assert settings.temporal_ui_url == "http://127.0.0.1:8233"
        assert settings.worker_metrics_address == "127.0.0.1:9464"
        assert settings.database_url is None
        assert not settings.temporal_external

    def test_addresses_follow_the_ports(self, environ: pytest.MonkeyPatch) -> None:
        """Moving the dev server's ports moves the default address and UI URL with them."""
        environ.setenv("NWD_TEMPORAL_PORT", "17233")
        environ.setenv("NWD_TEMPORAL_UI_PORT", "18233")
        settings = Settings.from_environment()
        assert settings.temporal_address == "127.0.0.1:17233"
        assert settings.temporal_ui_url == "http://127.0.0.1:18233"
        assert settings.replace(temporal_port=27233).temporal_address == "127.0.0.1:27233"

    def test_given_address_means_external(self, environ: pytest.MonkeyPatch) -> None:
        """TEMPORAL_ADDRESS set is a server of its own; an empty value counts as unset."""
        environ.setenv("TEMPORAL_ADDRESS", "temporal.example:7233")
        environ.setenv("DATABASE_URL", "")
        settings = Settings.from_environment()
        assert settings.temporal_external
        assert settings.temporal_address == "temporal.example:7233"
        assert settings.database_url is None

    def test_switches_and_off(self, environ: pytest.MonkeyPatch) -> None:
        """Switches accept the usual words; ``off`` turns the worker's metrics endpoint off."""
        environ.setenv("NWD_WORKFLOW_SANDBOX", "yes")
        environ.setenv("NWD_OTEL", "0")
        environ.setenv("NWD_WORKER_METRICS_ADDRESS", "off")
        settings = Settings.from_environment()
        assert settings.workflow_sandbox is True
        assert settings.otel is False
        assert settings.worker_metrics_address is None

    def test_environment_round_trip(self, environ: pytest.MonkeyPatch) -> None:
        """A child given ``environment()`` reads the same settings back (how `nwd up` passes
        them to its processes), secrets included."""
        settings = Settings(temporal_port=17233, encryption_key=KEY, codec_token="t",
                            worker_metrics_address=None, otel=True, state_dir=Path("/s"))
        for name, value in settings.environment().items():
            environ.setenv(name, value)
        again = Settings.from_environment()
        assert again.model_dump() == settings.model_dump()
        assert again.payload_key() == b"k" * 32

    def test_secrets_stay_out_of_repr(self) -> None:
        """Neither the payload key nor the registry's secrets appear when settings are shown."""
        settings = Settings(encryption_key=KEY, agency_env={"NWD_AGENCY_X_SECRET": "hush"})
        assert KEY not in repr(settings)
        assert "hush" not in repr(settings)

    def test_code_built_settings_read_no_environment(self, environ: pytest.MonkeyPatch) -> None:
        """``Settings(...)`` in code never picks up the caller's shell."""
        environ.setenv("DATABASE_URL", "postgresql://elsewhere/nwd")
        assert Settings().database_url is None


class TestErrors:
    @pytest.mark.parametrize(
        ("name", "value", "line"),
        [
            ("NWD_TEMPORAL_PORT", "abc", "NWD_TEMPORAL_PORT='abc' is not a TCP port (1-65535)"),
            ("NWD_POSTGRES_PORT", "70000",
             "NWD_POSTGRES_PORT='70000' is not a TCP port (1-65535)"),
            ("TEMPORAL_ADDRESS", "localhost",
             "TEMPORAL_ADDRESS='localhost' is not HOST:PORT (port 1-65535)"),
            ("NWD_INTAKE_URL", "localhost:8000",
             "NWD_INTAKE_URL='localhost:8000' is not an http(s)://HOST[:PORT] URL"),
            ("NWD_WORKER_METRICS_ADDRESS", "9464",
             "NWD_WORKER_METRICS_ADDRESS='9464' is not HOST:PORT (port 1-65535) or 'off'"),
            ("NWD_LOG_FORMAT", "plain",
             "NWD_LOG_FORMAT='plain' is not one of 'auto', 'json' or 'console'"),
            ("NWD_OTEL", "maybe",
             "NWD_OTEL='maybe' is not a switch (1/0, true/false, yes/no, on/off)"),
            ("DATABASE_URL", "mysql://u:pw@h/db",
             "DATABASE_URL='mysql://u:***@h/db' is not a postgresql:// URL"),
            ("NWD_ENCRYPTION_KEY", "c2hvcnQ=",
             "NWD_ENCRYPTION_KEY (value hidden) is not base64 of 32 bytes (an AES-256 key)"),
            ("NWD_TASK_QUEUE", " ", "NWD_TASK_QUEUE=' ' must not be blank"),
        ],
    )
    def test_one_line_naming_the_variable(
        self, environ: pytest.MonkeyPatch, name: str, value: str, line: str
    ) -> None:
        """A bad value is one line: the variable, its value (never a secret) and the rule."""
        environ.setenv(name, value)
        with pytest.raises(InvalidSettings) as caught:
            Settings.from_environment()
        assert caught.value.problems == (line,)

    def test_every_bad_variable_is_named(self, environ: pytest.MonkeyPatch) -> None:
        """Two bad values give two lines, in the model's order."""
        environ.setenv("NWD_OTEL", "x")
        environ.setenv("NWD_TEMPORAL_UI_PORT", "0")
        with pytest.raises(InvalidSettings) as caught:
            Settings.from_environment()
        assert [p.split("=")[0] for p in caught.value.problems] == [
            "NWD_TEMPORAL_UI_PORT", "NWD_OTEL",
        ]


class TestStartUp:
    """Each composition root refuses a bad setting with one line and exit code 2."""

    @pytest.mark.parametrize(
        ("argv", "prog"),
        [
            ([NWD, "up"], "nwd"),
            ([sys.executable, str(PROJECT_ROOT / "worker.py")], "worker"),
            ([sys.executable, "-m", "intake"], "intake"),
        ],
    )
    def test_bad_port(self, argv: list[str], prog: str, tmp_path: Path) -> None:
        """`nwd up`, `python worker.py`, `python -m intake`: one line, no traceback."""
        done = subprocess.run(
            argv, env=clean_env(NWD_TEMPORAL_PORT="abc", NWD_STATE_DIR=str(tmp_path)),
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [
            f"{prog}: error: NWD_TEMPORAL_PORT='abc' is not a TCP port (1-65535)"
        ]
        assert not (tmp_path / "pids").exists()  # nothing was started

    @pytest.mark.parametrize(
        ("argv", "prog", "variable"),
        [
            ([sys.executable, str(PROJECT_ROOT / "worker.py")], "worker",
             "NWD_WORKER_METRICS_ADDRESS"),
            ([sys.executable, "-m", "intake"], "intake", "NWD_INTAKE_METRICS_ADDRESS"),
        ],
    )
    def test_metrics_port_taken(
        self, argv: list[str], prog: str, variable: str, tmp_path: Path
    ) -> None:
        """A metrics address something else listens on: one line naming the variable."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            address = f"127.0.0.1:{taken.getsockname()[1]}"
            done = subprocess.run(
                argv, env=clean_env(**{variable: address}, NWD_ENCRYPTION_KEY=KEY,
                                    NWD_STATE_DIR=str(tmp_path), NWD_CATALOG_DIR=str(
                                        PROJECT_ROOT / "definitions")),
                cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
            )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"{prog}: error: {variable}='{address}' cannot be served")


# ------------------------------------------------------------------- no variable behind its back

SCANNED_SUFFIXES = {".py", ".md", ".yml", ".yaml", ".toml", ".cfg", ".sh"}
SCANNED_NAMES = {"Dockerfile", "Makefile"}
NOT_SCANNED = ("tests/", ".venv/", "CHANGELOG.md")
"""Tests may set variables of their own (``NWD_RECORD_HISTORIES``); the changelog records
names as they were."""
NAME = re.compile(r"\bNWD_[A-Z0-9_]*(?:[<{][^>}\s]*[>}][A-Z0-9_]*)*")


def scanned_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return [
        PROJECT_ROOT / name for name in listed
        if not name.startswith(NOT_SCANNED)
        and (Path(name).suffix in SCANNED_SUFFIXES or Path(name).name in SCANNED_NAMES)
        and (PROJECT_ROOT / name).is_file()
    ]


def mentioned_names() -> dict[str, Path]:
    """Every ``NWD_*`` name in the code and docs -> a file that mentions it."""
    found: dict[str, Path] = {}
    for path in scanned_files():
        for match in NAME.finditer(path.read_text(errors="replace")):
            found.setdefault(match.group(0), path)
    return found


def registry_names() -> set[str]:
    """The variables the repository's agency registries name (base URLs, JWKS URLs)."""
    names: set[str] = set()
    for path in (PROJECT_ROOT / "definitions" / "agencies.yaml",
                 PROJECT_ROOT / "benchmarks" / "definitions" / "agencies.yaml"):
        for agency in load_registry_file(path).agencies:
            if agency.http is not None:
                names.add(agency.http.base_url_env)
            if agency.keys is not None and agency.keys.jwks_url_env:
                names.add(agency.keys.jwks_url_env)
    return names


TEST_SUITE_ONLY = {"NWD_RECORD_HISTORIES": "tests/e2e/test_record_histories.py"}
"""Variables only the test suite reads (docs/testing.md documents them), never a process."""

REGISTRY_CONVENTION = ("NWD_AGENCY_*_URL", "NWD_AGENCY_*_JWKS_URL")
"""The names docs/definitions.md recommends for ``http.base_url_env`` and ``keys.jwks_url_env``
(its examples use them for agencies of no registry in the repository)."""


def is_registry_name(name: str, registry: set[str]) -> bool:
    """A registry-named variable, or a pattern of them (``NWD_AGENCY_<ID>_URL``)."""
    pattern = re.sub(r"[<{][^>}]*[>}]", "*", name)
    return any(fnmatch.fnmatchcase(r, pattern) for r in registry) or any(
        fnmatch.fnmatchcase(pattern, convention) for convention in REGISTRY_CONVENTION
    )


class TestEveryVariableIsASetting:
    def test_scan_finds_the_code_and_docs(self) -> None:
        """The scan reads the settings module, the stack and the docs (it cannot pass empty)."""
        mentioned = mentioned_names()
        assert {"NWD_TEMPORAL_PORT", "NWD_WORKER_METRICS_ADDRESS", "NWD_CODEC_TOKEN",
                "NWD_AGENCY_BEHAVIOUR"} <= set(mentioned)
        assert any(is_registry_name(n, registry_names()) for n in mentioned)

    def test_every_name_is_a_field(self) -> None:
        """Each ``NWD_*`` name the code and docs mention is a field of the engine's model or
        of the reference agencies' own, or a name an agency registry gives."""
        known = set(Settings.variables()) | AgenciesSettings.variables()
        registry = registry_names()
        stray = {
            name: str(path.relative_to(PROJECT_ROOT))
            for name, path in mentioned_names().items()
            if name != "NWD_" and name not in known and not is_registry_name(name, registry)
            and name not in TEST_SUITE_ONLY
        }
        assert not stray, f"variables read behind the settings model's back: {stray}"
        for name, reader in TEST_SUITE_ONLY.items():
            assert name in (PROJECT_ROOT / reader).read_text()


def documented(section: str) -> set[str]:
    """The variables of the table under ``### {section}`` in docs/cli.md."""
    text = (PROJECT_ROOT / "docs" / "cli.md").read_text()
    body = text.split(f"### {section}\n", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", body, flags=re.MULTILINE))


class TestDocumentedList:
    def test_engine_table_is_the_model(self) -> None:
        """docs/cli.md lists exactly the engine model's variables."""
        assert documented("The engine") == set(Settings.variables())

    def test_agencies_table_is_their_model(self) -> None:
        """docs/cli.md lists exactly the reference agencies' variables."""
        assert documented("The reference agencies") == AgenciesSettings.variables()

    def test_ports_table_names_every_port(self) -> None:
        """docs/operations-stack.md's ports table names every port setting the stack claims."""
        text = (PROJECT_ROOT / "docs" / "operations-stack.md").read_text()
        table = text.split("### Ports\n", 1)[1].split("\n#", 1)[0]
        listed = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", table, flags=re.MULTILINE))
        stack = Stack(Settings(intake_metrics_address="127.0.0.1:1"), env={})
        claimed = {claim.setting for c in stack.components.values() for claim in c.ports()}
        assert claimed == listed
