"""docs/openapi/agency-contract.yaml is well-formed OpenAPI 3.1 and agrees with the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel
from ruamel.yaml import YAML

from agency_kit import contract, signing
from agency_kit.reference import create_app
from agency_kit.reference.credentials import AgencyCredentials
from definitions.models import AgencyRegistry

ROOT = Path(__file__).resolve().parents[3]
SPEC_PATH = ROOT / "docs" / "openapi" / "agency-contract.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(SPEC_PATH.read_text())
    return data


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(spec: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"only local references are used: {ref}"
    node: Any = spec
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


class TestStructure:
    def test_is_openapi_3_1_with_paths_and_components(self, spec: dict[str, Any]) -> None:
        """The document declares 3.1 and has info, paths and components."""
        assert str(spec["openapi"]).startswith("3.1.")
        assert spec["info"]["title"] and spec["info"]["version"]
        assert spec["paths"]
        assert {"schemas", "parameters", "responses"} <= set(spec["components"])

    def test_every_reference_resolves(self, spec: dict[str, Any]) -> None:
        """Every $ref points at something that exists."""
        refs = _refs(spec)
        assert refs
        for ref in refs:
            _resolve(spec, ref)

    def test_every_operation_has_responses(self, spec: dict[str, Any]) -> None:
        """Each operation lists its responses, each with a description (inline or referenced)."""
        for path, item in spec["paths"].items():
            for method, operation in item.items():
                assert method in HTTP_METHODS, f"{path}: {method} is not an HTTP method"
                assert operation["responses"], f"{method} {path} has no responses"
                for status, response in operation["responses"].items():
                    if "$ref" in response:
                        response = _resolve(spec, response["$ref"])
                    assert response.get("description"), f"{method} {path} {status}"


class TestAgreesWithCode:
    def test_reference_app_serves_every_documented_path(self, spec: dict[str, Any]) -> None:
        """Each documented path and method exists in the reference app under /agencies/{id}."""
        app = create_app(AgencyRegistry(agencies=()), "postgresql://unused",
                         AgencyCredentials())
        routes = {
            (route.path, method.lower())
            for route in app.routes
            if isinstance(route, APIRoute)
            for method in route.methods
        }
        for path, item in spec["paths"].items():
            for method in item:
                assert (f"/agencies/{{agency_id}}{path}", method) in routes, f"{method} {path}"

    def test_operation_statuses(self, spec: dict[str, Any]) -> None:
        """The statuses the reference app answers are all documented."""
        documented = set(spec["paths"]["/operations/{operation_id}"]["post"]["responses"])
        assert {"200", "202", "400", "401", "404", "409", "413", "422", "503"} <= documented

    @pytest.mark.parametrize(
        ("model", "name"),
        [
            (contract.OperationRequest, "OperationRequest"),
            (contract.InformationRequest, "InformationRequest"),
            (contract.CancelRequest, "CancelRequest"),
            (contract.Completed, "Completed"),
            (contract.Accepted, "Accepted"),
            (contract.NeedsInformation, "NeedsInformation"),
            (contract.Rejected, "Rejected"),
            (contract.FieldError, "FieldError"),
            (contract.Cancelled, "Cancelled"),
            (contract.Callback, "Callback"),
        ],
    )
    def test_schemas_match_models(
        self, spec: dict[str, Any], model: type[BaseModel], name: str
    ) -> None:
        """Each body schema has exactly the model's fields, and the same required ones."""
        schema = spec["components"]["schemas"][name]
        assert set(schema["properties"]) == set(model.model_fields), name
        json_required = set(model.model_json_schema(mode="serialization").get("required", []))
        if name.endswith("Request"):
            json_required = set(model.model_json_schema().get("required", []))
        assert set(schema.get("required", [])) >= json_required, name

    def test_headers_match_code(self, spec: dict[str, Any]) -> None:
        """Header names in the document are those the code uses."""
        params = spec["components"]["parameters"]
        assert params["IdempotencyKey"]["name"] == contract.IDEMPOTENCY_HEADER
        assert params["Reference"]["name"] == contract.REFERENCE_HEADER
        assert params["ContentDigest"]["name"] == signing.DIGEST_HEADER
        assert params["SignatureInput"]["name"] == signing.SIGNATURE_INPUT_HEADER
        assert params["Signature"]["name"] == signing.SIGNATURE_HEADER
        assert spec["components"]["securitySchemes"]["nwdSignature"]["name"] == (
            signing.SIGNATURE_HEADER)
