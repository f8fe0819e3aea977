"""The committed JSON Schema: in sync with the models, and accepted by a third-party validator."""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from definitions.schema import SCHEMA_FILE, json_schema
from nwd.cli import main
from runtime.settings import DEFAULT_CATALOG_DIR

CATALOG_FILES = [
    DEFAULT_CATALOG_DIR / "agencies.yaml",
    *sorted((DEFAULT_CATALOG_DIR / "services").glob("*.yaml")),
]


def _check_jsonschema(*files: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("check-jsonschema", path=sysconfig.get_path("scripts"))
    assert tool is not None, "check-jsonschema is a dev dependency of the project"
    return subprocess.run(
        [tool, "--no-cache", "--schemafile", str(SCHEMA_FILE), *map(str, files)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_committed_schema_is_in_sync() -> None:
    """definitions/schema.json equals json_schema(); regenerate with `nwd definitions schema`."""
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()


def test_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """`nwd definitions schema` prints exactly the committed file."""
    assert main(["definitions", "schema"]) == 0
    assert capsys.readouterr().out == SCHEMA_FILE.read_text()


def test_catalog_files_validate_with_check_jsonschema() -> None:
    """Every catalog file passes the third-party check-jsonschema tool."""
    result = _check_jsonschema(*CATALOG_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_catalog_files_point_editors_at_the_schema() -> None:
    """Each catalog file starts with a yaml-language-server comment naming schema.json."""
    for file in CATALOG_FILES:
        first = file.read_text().splitlines()[0]
        relative = "./schema.json" if file.parent == DEFAULT_CATALOG_DIR else "../schema.json"
        assert first == f"# yaml-language-server: $schema={relative}", file


def test_schema_rejects_an_unknown_key(tmp_path: Path) -> None:
    """The schema is strict like the models: a misspelt key fails in the editor too."""
    source = (DEFAULT_CATALOG_DIR / "services" / "register-a-business.yaml").read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(source.replace("    needs: [register_company]\n    when",
                                     "    neds: [register_company]\n    when"))
    assert _check_jsonschema(broken).returncode == 1


def test_localized_text_accepts_a_plain_string() -> None:
    """A title may be a plain string (English) or texts by language, as the models accept."""
    texts = json_schema()["$defs"]["ServiceDefinition"]["properties"]["title"]["anyOf"]
    assert {"type": "string", "minLength": 1} in texts
