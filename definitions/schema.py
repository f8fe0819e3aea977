"""The JSON Schema of catalog files, generated from the models (never written by hand).

One schema covers every kind of file: ``anyOf`` the agency registry, a service definition
and a translation file (``<file>.<tag>.yaml``), with every model under ``$defs``. Editors
pick it up through the first line of each catalog file (``# yaml-language-server:
$schema=...``) and explain each key as it is typed, from the models' field descriptions.
``definitions/schema.json`` is this function's output, committed; a test keeps the two in
sync.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from definitions.models import AgencyRegistry, ServiceDefinition
from definitions.translations import TranslationFile

SCHEMA_FILE = Path(__file__).with_name("schema.json")
SCHEMA_ID = "https://no-wrong-door.example/definitions/schema.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every catalog file validates against."""
    _, generated = models_json_schema(
        [(AgencyRegistry, "validation"), (ServiceDefinition, "validation"),
         (TranslationFile, "validation")],
        ref_template="#/$defs/{model}",
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "No Wrong Door catalog file",
        "description": (
            "The agency registry (agencies.yaml), one service definition "
            "(services/<id>.yaml) or the texts of either in one language "
            "(<file>.<tag>.yaml). Cross-file rules are checked by `nwd definitions check`."
        ),
        "anyOf": [
            {"$ref": "#/$defs/AgencyRegistry"},
            {"$ref": "#/$defs/ServiceDefinition"},
            {"$ref": "#/$defs/TranslationFile"},
        ],
        "$defs": generated["$defs"],
    }


def render() -> str:
    """The schema as the committed file holds it (stable key order, trailing newline)."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
