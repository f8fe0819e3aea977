"""A service's texts in other languages, in files beside its definition.

A definition is written in English; each other language is one more file next to it, so a
translator adds a language without touching (or being able to break) the definition::

    services/change-of-address.yaml        the definition (English texts)
    services/change-of-address.ar.yaml     its Arabic texts
    agencies.yaml, agencies.zh-Hans.yaml   the registry and its Chinese texts

A translation file names its language and maps each text's *path* to the text::

    language: ar
    texts:
      title: إبلاغ الحكومة بتغيير عنوانك
      input.fields.full_name.label: الاسم الكامل
      input.fields.benefits.items.fields.programme.options.child-benefit: إعانة الأطفال
      steps.update_licence.title: رخصة القيادة

The paths are the definition's own keys, dotted, with steps and agencies named by their id
(``steps.<id>``, ``<agency>.operations.<id>.title``) so reordering steps moves no text:
:func:`service_texts` and :func:`registry_texts` list every one, and the loader merges each
file into the texts' by-language dicts before the catalog (and its content hashes) exist, so
a request is pinned to the texts it was shown. Everything after ``options.`` is the enum
value, dots and all.

What a file may not do, each a problem with the file's line: name a path the definition has
no English text at (``unknown-text``), hold something other than text (``invalid-value``),
carry a tag that is not BCP 47 or is English (``invalid-value``), disagree with the tag in its
own name (``language-mismatch``), or give a text the definition already gives inline in the
same language (``duplicate-translation``: one place per text).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from definitions.catalog import Catalog
from definitions.errors import Issue
from definitions.models import (
    LANGUAGE_TAG,
    AgencyRegistry,
    FieldSpec,
    Model,
    ServiceDefinition,
)

ENGLISH = "en"
"""The language of the definitions themselves."""

TextLoc = tuple[str | int, ...]
"""Where a text's by-language dict sits in the models: attributes, dict keys, list positions."""


class TranslationFile(Model):
    """A service's or the agency registry's texts in one language (``<name>.<tag>.yaml``)."""

    language: str = Field(
        pattern=LANGUAGE_TAG,
        description="The BCP 47 tag of these texts, the same as in the file name "
                    "(`change-of-address.ar.yaml` holds `language: ar`). Not `en`: English "
                    "is the definition's own.",
    )
    texts: dict[str, str] = Field(
        default_factory=dict,
        description="Text by path in the definition: `title`, `description`, "
                    "`input.fields.<name>.label` / `.hint` / `.options.<value>` (nested: "
                    "`.fields.<name>`, list items: `.items`), `steps.<id>.title`; in the "
                    "registry's file `<agency>.name` and `<agency>.operations.<id>.title`. "
                    "`nwd definitions check` lists the paths still untranslated.",
    )


@dataclass(frozen=True)
class Text:
    """One translatable text of a definition."""

    path: str
    """Its path as translation files and ``nwd definitions check`` write it."""
    loc: TextLoc
    """Where its dict is in the models (for :func:`with_translations`)."""
    languages: Mapping[str, str]
    """The text by language, as the definition has it."""


def translation_tag(path: Path) -> str | None:
    """The tag a file's name gives (``x.ar.yaml`` → ``ar``), or None for a definition file."""
    stem = path.name.rsplit(".", 1)[0]
    return stem.split(".", 1)[1] if "." in stem else None


def translated_file(path: Path) -> Path:
    """The definition a translation file belongs to (``x.ar.yaml`` → ``x.yaml``)."""
    stem, suffix = path.name.rsplit(".", 1)
    return path.with_name(f"{stem.split('.', 1)[0]}.{suffix}")


# --------------------------------------------------------------------------- what is translatable


def service_texts(service: ServiceDefinition) -> dict[str, Text]:
    """Every text of a service, by path."""
    found = [
        Text("title", ("title",), service.title),
        Text("description", ("description",), service.description),
        *_field_texts("input.fields", ("input", "fields"), service.input.fields),
    ]
    for index, step in enumerate(service.steps):
        if step.title is not None:
            found.append(Text(f"steps.{step.id}.title", ("steps", index, "title"), step.title))
        consent = getattr(step, "consent", None)
        if consent is not None:
            found.append(Text(f"steps.{step.id}.consent", ("steps", index, "consent"), consent))
    return {text.path: text for text in found}


def _field_texts(path: str, loc: TextLoc, fields: Mapping[str, FieldSpec]) -> Iterator[Text]:
    for name, spec in fields.items():
        yield from _spec_texts(f"{path}.{name}", (*loc, name), spec)


def _spec_texts(path: str, loc: TextLoc, spec: FieldSpec) -> Iterator[Text]:
    for key in ("label", "hint"):
        value: dict[str, str] | None = getattr(spec, key)
        if value is not None:
            yield Text(f"{path}.{key}", (*loc, key), value)
    for option, value in (spec.options or {}).items():
        yield Text(f"{path}.options.{option}", (*loc, "options", option), value)
    if spec.fields:
        yield from _field_texts(f"{path}.fields", (*loc, "fields"), spec.fields)
    if spec.items is not None:
        yield from _spec_texts(f"{path}.items", (*loc, "items"), spec.items)


def registry_texts(registry: AgencyRegistry) -> dict[str, Text]:
    """Every text of the agency registry, by path (``<agency>.name``, ``…operations…``)."""
    found: dict[str, Text] = {}
    for index, agency in enumerate(registry.agencies):
        found.setdefault(f"{agency.id}.name", Text(
            f"{agency.id}.name", ("agencies", index, "name"), agency.name))
        for position, operation in enumerate(agency.operations):
            path = f"{agency.id}.operations.{operation.id}.title"
            found.setdefault(path, Text(
                path, ("agencies", index, "operations", position, "title"), operation.title))
    return found


# --------------------------------------------------------------------------- checking a file


def check(
    translation: TranslationFile, file_tag: str | None, texts: Mapping[str, Text], target: str,
) -> list[Issue]:
    """What is wrong with one translation file of the definition whose texts are ``texts``.

    ``target`` is the definition file's name, for messages.
    """
    issues: list[Issue] = []
    tag = translation.language
    if tag == ENGLISH:
        issues.append(Issue(("language",), "invalid-value", (
            f"English is {target}'s own language: write English texts there, and other "
            "languages in files such as " + _named(target, "es"))))
        return issues
    if file_tag is not None and file_tag != tag:
        issues.append(Issue(("language",), "language-mismatch", (
            f"the file is named for {file_tag!r} but says language: {tag!r}; rename it "
            f"{_named(target, tag)} or write language: {file_tag}")))
    for path in translation.texts:
        text = texts.get(path)
        if text is None:
            issues.append(Issue(("texts", path), "unknown-text", (
                f"{target} has no English text at {path!r}{_nearest(path, texts)}; a path "
                "names a text the definition already has in English (add the English "
                "there first)"), at_key=True))
        elif tag in text.languages:
            issues.append(Issue(("texts", path), "duplicate-translation", (
                f"{target} already gives the {tag!r} text of {path!r} inline; keep one: "
                "remove it there or here"), at_key=True))
        elif not translation.texts[path].strip():
            issues.append(Issue(("texts", path), "invalid-value", (
                f"the {tag!r} text of {path!r} is empty; translate it or remove the line "
                "(an untranslated text is shown in English)")))
    return issues


def _named(target: str, tag: str) -> str:
    stem, _, suffix = target.rpartition(".")
    return f"{stem}.{tag}.{suffix}"


def _nearest(path: str, texts: Mapping[str, Text]) -> str:
    close = difflib.get_close_matches(path, list(texts), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_language_tag(tag: str) -> bool:
    return re.fullmatch(LANGUAGE_TAG, tag) is not None


# --------------------------------------------------------------------------- merging


def with_translations(model: Any, texts: Mapping[str, Text],
                      translations: Mapping[str, Mapping[str, str]]) -> Any:
    """``model`` (a service or the registry) with each language's texts merged in.

    ``translations`` is texts by path, by language; paths must be among ``texts`` (checked
    first by :func:`check`). The models are frozen: changed parts are copied, the rest shared.
    """
    merged = model
    for tag in sorted(translations):
        for path, value in sorted(translations[tag].items()):
            text = texts[path]
            merged = _replaced(merged, text.loc, {**_at(merged, text.loc), tag: value})
    return merged


def _at(node: Any, loc: TextLoc) -> Any:
    for part in loc:
        node = getattr(node, str(part)) if isinstance(node, BaseModel) else node[part]
    return node


def _replaced(node: Any, loc: TextLoc, value: Any) -> Any:
    if not loc:
        return value
    head, rest = loc[0], loc[1:]
    if isinstance(node, BaseModel):
        assert isinstance(head, str)
        return node.model_copy(update={head: _replaced(getattr(node, head), rest, value)})
    if isinstance(node, dict):
        return {**node, head: _replaced(node[head], rest, value)}
    if isinstance(node, tuple | list):
        assert isinstance(head, int)
        items = list(node)
        items[head] = _replaced(items[head], rest, value)
        return type(node)(items)
    raise TypeError(f"no text at {loc!r}")


# --------------------------------------------------------------------------- what is missing


@dataclass(frozen=True)
class Untranslated:
    """A text with no translation in a language the interface speaks."""

    language: str
    owner: str
    """The service id, or ``agencies`` for the registry."""
    path: str
    file: Path | None
    """The translation file the text belongs in (which may not exist yet)."""


def missing_translations(catalog: Catalog, languages: Iterable[str]) -> list[Untranslated]:
    """Every text of ``catalog`` without a translation in each of ``languages`` (English,
    the definitions' own, is skipped), by language, then registry, then service."""
    owners: list[tuple[str, dict[str, Text], Path | None]] = [
        ("agencies", registry_texts(catalog.registry), catalog.registry_source),
        *((service_id, service_texts(service), catalog.sources.get(service_id))
          for service_id, service in sorted(catalog.services.items())),
    ]
    return [
        Untranslated(tag, owner, path, _named_path(source, tag) if source else None)
        for tag in languages if tag != ENGLISH
        for owner, texts, source in owners
        for path, text in texts.items() if tag not in text.languages
    ]


def _named_path(source: Path, tag: str) -> Path:
    return source.with_name(_named(source.name, tag))
