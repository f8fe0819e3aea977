"""Translation files beside a definition: merged into its texts, checked, and reported missing.

The refusals (a path naming nothing, a text that is not a string, a bad or mismatched tag)
are cases of the error table (cases/); these tests cover what a table cannot: what a good file
changes, what it does not, and what `nwd definitions check` says about untranslated texts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from definitions.errors import DefinitionErrors
from definitions.loader import load_catalog, load_registry_file, load_service_file
from definitions.translations import (
    missing_translations,
    registry_texts,
    service_texts,
    translated_file,
    translation_tag,
)
from definitions.yaml_source import YamlDocument
from i18n.languages import tags
from nwd.cli import main

CASES = Path(__file__).parent / "cases"

SERVICE = """\
service: x
version: 1
title: Tell the tax office
description: Update your address with the tax office.
input:
  fields:
    tax_id: {type: text, label: Tax number, hint: Ten letters and digits}
    kind:
      type: enum
      values: [home, work.v2]
      label: Which address
      options: {home: Home, work.v2: Work}
    children:
      type: list
      required: false
      label: Children
      items:
        type: object
        fields:
          name: {type: text, label: {en: Name, es: Nombre}}
    address: {type: address, label: New address}
steps:
  - id: first
    title: Tax office
    agency: tax
    operation: update-address
    input:
      tax_id: submission.tax_id
      address: submission.address
"""

ARABIC = """\
language: ar
texts:
  title: أبلغ مكتب الضرائب
  input.fields.kind.options.work.v2: العمل
  input.fields.children.items.fields.name.label: الاسم
  steps.first.title: مكتب الضرائب
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A small valid catalog: one agency, one service ``x`` with nested and listed fields."""
    (tmp_path / "services").mkdir()
    shutil.copy(CASES / "unknown-key" / "agencies.yaml", tmp_path / "agencies.yaml")
    (tmp_path / "services" / "x.yaml").write_text(SERVICE)
    return tmp_path


class TestMerge:
    def test_texts_are_merged_by_path(self, root: Path) -> None:
        """Each path's text joins the definition's by-language dict; the rest is untouched."""
        (root / "services" / "x.ar.yaml").write_text(ARABIC)
        service = load_catalog(root).service("x")
        assert service.title == {"en": "Tell the tax office", "ar": "أبلغ مكتب الضرائب"}
        kind = service.input.fields["kind"]
        assert kind.options == {"home": {"en": "Home"}, "work.v2": {"en": "Work", "ar": "العمل"}}
        child = service.input.fields["children"].items
        assert child is not None and child.fields is not None
        assert child.fields["name"].label == {"en": "Name", "es": "Nombre", "ar": "الاسم"}
        assert service.steps[0].title == {"en": "Tax office", "ar": "مكتب الضرائب"}
        assert service.description == {"en": "Update your address with the tax office."}
        assert service.input.fields["tax_id"].hint == {"en": "Ten letters and digits"}

    def test_the_definition_file_is_not_touched(self, root: Path) -> None:
        """Loading reads translation files; the definition's bytes stay as written."""
        (root / "services" / "x.ar.yaml").write_text(ARABIC)
        load_catalog(root)
        assert (root / "services" / "x.yaml").read_text() == SERVICE

    def test_translations_are_in_the_snapshot_and_its_hash(self, root: Path) -> None:
        """A request is pinned to the texts it was shown: a translation is in the snapshot,
        and adding or changing one changes the content hash."""
        plain = load_catalog(root).content_hash("x")
        (root / "services" / "x.ar.yaml").write_text(ARABIC)
        translated = load_catalog(root)
        assert translated.snapshot("x").service.title["ar"] == "أبلغ مكتب الضرائب"
        assert translated.content_hash("x") != plain
        (root / "services" / "x.ar.yaml").write_text(ARABIC.replace("مكتب الضرائب\n", "الضرائب\n"))
        assert load_catalog(root).content_hash("x") not in (plain, translated.content_hash("x"))

    def test_registry_translations(self, root: Path) -> None:
        """agencies.<tag>.yaml translates agency names and operation titles by id."""
        (root / "agencies.zh-Hans.yaml").write_text(
            "language: zh-Hans\ntexts:\n  tax.name: 税务局\n"
            "  tax.operations.revert-address.title: 撤销地址变更\n")
        catalog = load_catalog(root)
        assert catalog.agencies["tax"].name == {"en": "Tax office", "es": "Hacienda",
                                                "zh-Hans": "税务局"}
        revert = catalog.agencies["tax"].operation("revert-address")
        assert revert is not None and revert.title["zh-Hans"] == "撤销地址变更"
        assert catalog.snapshot("x").agencies[0].name["zh-Hans"] == "税务局"

    def test_a_file_for_every_language(self, root: Path) -> None:
        """Two languages' files merge side by side; the tag can have a script or a region."""
        (root / "services" / "x.ar.yaml").write_text(ARABIC)
        (root / "services" / "x.pt-BR.yml").write_text(
            "language: pt-BR\ntexts:\n  title: Avise a Receita\n")
        assert load_catalog(root).service("x").title == {
            "en": "Tell the tax office", "ar": "أبلغ مكتب الضرائب", "pt-BR": "Avise a Receita"}

    def test_every_listed_path_is_accepted(self, root: Path) -> None:
        """What service_texts lists (and check reports missing) can be written back as is."""
        texts = service_texts(load_catalog(root).service("x"))
        body = "".join(f'  {path}: "fr {path}"\n' for path in texts)
        (root / "services" / "x.fr.yaml").write_text(f"language: fr\ntexts:\n{body}")
        merged = service_texts(load_catalog(root).service("x"))
        assert {path: text.languages["fr"] for path, text in merged.items()} == {
            path: f"fr {path}" for path in texts}

    def test_load_service_file_reads_its_translations(self, root: Path) -> None:
        """Loading one service file on its own merges the translation files beside it too."""
        (root / "services" / "x.ar.yaml").write_text(ARABIC)
        registry = load_registry_file(root / "agencies.yaml")
        service = load_service_file(root / "services" / "x.yaml", registry)
        assert service.title["ar"] == "أبلغ مكتب الضرائب"

    def test_a_broken_file_loads_nothing(self, root: Path) -> None:
        """One wrong path refuses the whole catalog, with the file and line, and every other
        problem of the same file in the same run."""
        (root / "services" / "x.ar.yaml").write_text(
            ARABIC + "  steps.second.title: الثانية\n  description: 5\n")
        with pytest.raises(DefinitionErrors) as caught:
            load_catalog(root)
        found = sorted((p.file.name, p.line, p.code) for p in caught.value.problems)
        assert found == [("x.ar.yaml", 7, "unknown-text"), ("x.ar.yaml", 8, "invalid-value")]

    def test_an_empty_text_is_refused(self, root: Path) -> None:
        """A blank translation would hide the English: it is refused, not merged."""
        (root / "services" / "x.es.yaml").write_text('language: es\ntexts:\n  title: "  "\n')
        with pytest.raises(DefinitionErrors) as caught:
            load_catalog(root)
        [problem] = caught.value.problems
        assert (problem.line, problem.code) == (3, "invalid-value")
        assert "the 'es' text of 'title' is empty" in problem.message

    def test_file_names(self) -> None:
        """A name's middle part is the tag; the file it translates drops it."""
        assert translation_tag(Path("a/x.zh-Hans.yaml")) == "zh-Hans"
        assert translation_tag(Path("a/x.yaml")) is None
        assert translated_file(Path("a/x.zh-Hans.yml")) == Path("a/x.yml")
        assert translated_file(Path("agencies.ar.yaml")) == Path("agencies.yaml")


class TestUntranslated:
    def test_missing_texts_are_listed_by_language_with_their_file(self, root: Path) -> None:
        """Every text without a translation in each language, with the file it belongs in."""
        (root / "services" / "x.ar.yaml").write_text(ARABIC)
        catalog = load_catalog(root)
        missing = missing_translations(catalog, ("en", "ar", "es"))
        ar = {(m.owner, m.path) for m in missing if m.language == "ar"}
        assert ("x", "title") not in ar
        assert ("x", "description") in ar and ("x", "input.fields.kind.options.home") in ar
        assert ("agencies", "tax.name") in ar
        es = {(m.owner, m.path) for m in missing if m.language == "es"}
        assert ("agencies", "tax.name") not in es  # the registry has it inline
        assert ("x", "input.fields.children.items.fields.name.label") not in es
        total = len(service_texts(catalog.service("x"))) + len(registry_texts(catalog.registry))
        assert len(ar) == total - 4
        files = {m.file for m in missing if m.owner == "x" and m.language == "es"}
        assert files == {root / "services" / "x.es.yaml"}
        assert not [m for m in missing if m.language == "en"]

    def test_check_warns_and_counts(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`nwd definitions check` passes, printing one warning per untranslated text (file,
        language, path) and a count by language."""
        assert main(["definitions", "check", str(root)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == "1 services, 1 agencies OK"
        expected = len(missing_translations(load_catalog(root), tags()))
        warnings = [line for line in out if line.startswith("warning: ")]
        assert len(warnings) == expected > 0
        assert any(line.endswith("services/x.ar.yaml: no 'ar' text for steps.first.title (x) "
                                 "[untranslated]") for line in warnings), out
        assert any("agencies.zh-Hans.yaml: no 'zh-Hans' text for tax.name (agencies)" in line
                   for line in warnings), out
        catalog = load_catalog(root)
        ar = len(missing_translations(catalog, ("ar",)))
        es = len(missing_translations(catalog, ("es",)))
        assert es < ar  # the registry and one label have Spanish inline
        assert out[-1].startswith(f"{expected} untranslated texts (ar {ar}, es {es}, ")
        assert out[-1].endswith("; --strict-translations makes them errors")

    def test_strict_translations_fails(self, root: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
        """With --strict-translations the same texts are errors and the command exits 1."""
        assert main(["definitions", "check", "--strict-translations", str(root)]) == 1
        out = capsys.readouterr().out.splitlines()
        assert [line for line in out if line.startswith("error: ")]
        assert not [line for line in out if line.startswith("warning: ")]
        assert out[-1].endswith(")")

    def test_fully_translated_is_quiet(self, root: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
        """Once every language has every text, check says so and --strict passes."""
        catalog = load_catalog(root)
        for tag in tags():
            if tag == "en":
                continue
            for owner, texts, folder in (
                ("x", service_texts(catalog.service("x")), root / "services"),
                ("agencies", registry_texts(catalog.registry), root),
            ):
                body = "".join(f'  {path}: "{tag} {path}"\n' for path, text in texts.items()
                               if tag not in text.languages)
                if body:
                    (folder / f"{owner}.{tag}.yaml").write_text(
                        f"language: {tag}\ntexts:\n{body}")
        assert main(["definitions", "check", "--strict-translations", str(root)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == ["1 services, 1 agencies OK", "every text is translated into "
                       + ", ".join(t for t in tags() if t != "en")]


class TestFoldedScalars:
    def test_a_folded_scalar_is_text(self) -> None:
        """`>` folds lines into one (ruamel's fold marks are not the text's characters)."""
        document = YamlDocument.parse(Path("x.ar.yaml"),
                                      "a: >-\n  سطر أول\n  وسطر ثانٍ\nb: |\n  x\n".encode())
        assert document.data == {"a": "سطر أول وسطر ثانٍ", "b": "x\n"}
