"""The shipped catalog, whole-catalog reporting, snapshots and content hashes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from definitions.catalog import Catalog, content_hash_of
from definitions.errors import DefinitionErrors, UnknownService
from definitions.loader import load_catalog, load_service_file
from definitions.models import CallStep, ServiceSnapshot
from definitions.translations import registry_texts, service_texts
from i18n.languages import tags
from nwd.cli import main
from runtime.settings import DEFAULT_CATALOG_DIR


def _reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(v) for v in value]
    return value


class TestShippedCatalog:
    def test_loads_three_services(self, catalog: Catalog) -> None:
        """The catalog holds the three documented services and every agency they call."""
        assert set(catalog.services) == {
            "change-of-address", "report-a-death", "register-a-business"
        }
        for service in catalog.services.values():
            for step in service.steps:
                if isinstance(step, CallStep):
                    assert catalog.agencies[step.agency].operation(step.operation) is not None

    def test_check_command_passes(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`nwd definitions check` exits 0, counts services and agencies, and finds every text
        translated into every language the interface speaks (even with --strict-translations)."""
        assert main(["definitions", "check", "--strict-translations",
                     str(DEFAULT_CATALOG_DIR)]) == 0
        assert capsys.readouterr().out.strip().splitlines() == [
            "3 services, 8 agencies OK",
            f"every text is translated into {', '.join(t for t in tags() if t != 'en')}",
        ]

    def test_every_text_is_in_every_language(self, catalog: Catalog) -> None:
        """Every text of every service and agency has each language the interface speaks
        (merged from the translation files), none empty."""
        languages = set(tags())
        assert {"en", "es", "ar", "zh-Hans"} <= languages
        owners = [registry_texts(catalog.registry),
                  *(service_texts(s) for s in catalog.services.values())]
        texts = [text for owner in owners for text in owner.values()]
        assert len(texts) > 80
        for text in texts:
            assert languages <= set(text.languages), text.path
            assert all(value.strip() for value in text.languages.values()), text.path
        for service in catalog.services.values():
            for step in service.steps:
                assert step.title is not None and languages <= set(step.title)

    def test_agencies_follow_the_naming_convention(self, catalog: Catalog) -> None:
        """Each agency's URL variable, JWKS variable and default URLs are derived from its id."""
        for agency in catalog.agencies.values():
            env = agency.id.upper().replace("-", "_")
            assert agency.http is not None
            assert agency.http.base_url_env == f"NWD_AGENCY_{env}_URL"
            assert agency.http.default_base_url == f"http://127.0.0.1:8090/agencies/{agency.id}"
            assert agency.keys is not None and not agency.keys.public
            assert agency.keys.jwks_url_env == f"NWD_AGENCY_{env}_JWKS_URL"
            assert agency.keys.default_jwks_url == (
                f"http://127.0.0.1:8090/agencies/{agency.id}/.well-known/jwks.json")

    def test_source_and_unknown_service(self, catalog: Catalog) -> None:
        """source() names the file; an unknown id raises UnknownService listing known ones."""
        assert catalog.source("report-a-death").name == "report-a-death.yaml"
        with pytest.raises(UnknownService) as caught:
            catalog.snapshot("report-a-birth")
        assert isinstance(caught.value, KeyError)
        assert "change-of-address, register-a-business, report-a-death" in str(caught.value)

    def test_snapshot_holds_only_the_agencies_used(self, catalog: Catalog) -> None:
        """A snapshot pins the service, the agencies it calls and the content hash."""
        snapshot = catalog.snapshot("register-a-business")
        assert [a.id for a in snapshot.agencies] == ["business-registry", "tax-authority"]
        assert snapshot.content_hash == catalog.content_hash("register-a-business")
        assert len(snapshot.content_hash) == 64

    @pytest.mark.parametrize("service_id", ["change-of-address", "report-a-death"])
    def test_snapshot_survives_json(self, catalog: Catalog, service_id: str) -> None:
        """A snapshot read back from JSON (as a workflow input is) keeps its meaning and hash."""
        snapshot = catalog.snapshot(service_id)
        again = ServiceSnapshot.model_validate_json(snapshot.model_dump_json())
        assert again == snapshot
        assert content_hash_of(again.service, again.agencies) == snapshot.content_hash

    def test_load_service_file_alone(self, catalog: Catalog) -> None:
        """One service file can be loaded against a registry."""
        service = load_service_file(catalog.source("change-of-address"), catalog.registry)
        assert service == catalog.services["change-of-address"]


class TestEveryProblemAtOnce:
    def test_three_errors_in_one_file_give_three_problems(self, catalog_copy: Path) -> None:
        """An unknown agency, a bad value in another step and a bad expression come together."""
        file = catalog_copy / "services" / "register-a-business.yaml"
        text = file.read_text()
        text = text.replace("agency: business-registry", "agency: business-registy")
        text = text.replace("operation: register-business\n",
                            "operation: register-business\n    mode: callbak\n")
        text = text.replace("business_name: submission.business_name\n      first_payday",
                            "business_name: submission.business_name +\n      first_payday")
        file.write_text(text)
        with pytest.raises(DefinitionErrors) as caught:
            load_catalog(catalog_copy)
        problems = caught.value.problems
        assert [(p.code, p.key_path) for p in problems] == [
            ("unknown-agency", "steps[0].agency"),
            ("invalid-value", "steps[1].mode"),
            ("bad-expression", "steps[2].input.business_name"),
        ]
        assert all(p.file == file for p in problems)
        lines = text.splitlines()
        for problem in problems:
            assert problem.key_path.rsplit(".", 1)[-1] in lines[problem.line - 1]

    def test_problems_in_several_files_are_all_listed(self, catalog_copy: Path) -> None:
        """Problems in the registry and in two services come in one exception, sorted."""
        registry = catalog_copy / "agencies.yaml"
        registry.write_text(registry.read_text().replace("id: revert-registration", "id: Revert"))
        for name in ("change-of-address.yaml", "report-a-death.yaml"):
            file = catalog_copy / "services" / name
            file.write_text(file.read_text().replace("version: 1", "version: 0"))
        with pytest.raises(DefinitionErrors) as caught:
            load_catalog(catalog_copy)
        files = [p.file.name for p in caught.value.problems]
        assert files == sorted(files)
        assert {"agencies.yaml", "change-of-address.yaml", "report-a-death.yaml"} <= set(files)

    def test_duplicate_service_ids_across_files(self, catalog_copy: Path) -> None:
        """Two files defining the same service id are a duplicate-id problem."""
        source = catalog_copy / "services" / "register-a-business.yaml"
        (catalog_copy / "services" / "zz-copy.yaml").write_text(source.read_text())
        with pytest.raises(DefinitionErrors) as caught:
            load_catalog(catalog_copy)
        [problem] = caught.value.problems
        assert (problem.code, problem.file.name, problem.line) == (
            "duplicate-id", "zz-copy.yaml", 3
        )
        assert "register-a-business.yaml" in problem.message


class TestContentHash:
    def test_stable_under_reformatting_and_key_order(
        self, catalog: Catalog, catalog_copy: Path
    ) -> None:
        """Comments, whitespace, flow style and key order do not change the hash."""
        for service_id in catalog.services:
            file = catalog_copy / "services" / f"{service_id}.yaml"
            data = YAML(typ="safe").load(file.read_text())
            file.write_text(json.dumps(_reversed_keys(data), indent=3))  # JSON is YAML
        registry = catalog_copy / "agencies.yaml"
        registry.write_text(json.dumps(_reversed_keys(YAML(typ="safe").load(registry.read_text()))))
        reformatted = load_catalog(catalog_copy)
        for service_id in catalog.services:
            assert reformatted.content_hash(service_id) == catalog.content_hash(service_id)

    def test_explicit_defaults_do_not_change_the_hash(
        self, catalog: Catalog, catalog_copy: Path
    ) -> None:
        """Writing a default value out (timeout: 30s) keeps the meaning and the hash."""
        file = catalog_copy / "services" / "register-a-business.yaml"
        file.write_text(file.read_text().replace(
            "operation: register-business\n", "operation: register-business\n    timeout: 30s\n"))
        changed = load_catalog(catalog_copy)
        assert changed.content_hash("register-a-business") == catalog.content_hash(
            "register-a-business")

    def test_changes_when_meaning_changes(self, catalog: Catalog, catalog_copy: Path) -> None:
        """A changed value in the service or in an agency it uses changes the hash."""
        file = catalog_copy / "services" / "register-a-business.yaml"
        file.write_text(file.read_text().replace("max_length: 160", "max_length: 150", 1))
        registry = catalog_copy / "agencies.yaml"
        registry.write_text(registry.read_text().replace(
            "Passport Office", "HM Passport Office"))
        changed = load_catalog(catalog_copy)
        before = catalog.content_hash
        assert changed.content_hash("register-a-business") != before("register-a-business")
        # report-a-death calls the passport office; the other services do not.
        assert changed.content_hash("report-a-death") != before("report-a-death")
        assert changed.content_hash("change-of-address") == before("change-of-address")


class TestCommands:
    def test_graph_prints_mermaid(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`nwd definitions graph SERVICE` prints the flowchart."""
        assert main(["definitions", "graph", "register-a-business"]) == 0
        assert capsys.readouterr().out.startswith("flowchart TD\n")

    def test_graph_of_unknown_service(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown service is one error line listing the known ones, exit 2."""
        assert main(["definitions", "graph", "tax-return"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            "nwd: error: unknown service 'tax-return'; the catalog has: "
            "change-of-address, register-a-business, report-a-death"
        ]

    def test_hash(self, catalog: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
        """`nwd definitions hash SERVICE` prints the content hash."""
        assert main(["definitions", "hash", "change-of-address"]) == 0
        assert capsys.readouterr().out.strip() == catalog.content_hash("change-of-address")

    def test_check_of_a_missing_directory(self, tmp_path: Path) -> None:
        """Checking a path that is not a directory is a user error (exit 2)."""
        assert main(["definitions", "check", str(tmp_path / "nowhere")]) == 2
