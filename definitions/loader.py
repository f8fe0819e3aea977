"""Load a catalog directory (``agencies.yaml`` + ``services/*.yaml``) and validate all of it.

Nothing is half-loaded: :func:`load_catalog` either returns a :class:`Catalog` in which every
rule holds, or raises :class:`DefinitionErrors` listing every problem in every file, each
with its line, column, key path, code and fix. Pydantic's error locations are mapped back to
the YAML nodes they came from, so a typo is reported where it was typed.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from definitions.catalog import Catalog
from definitions.errors import DefinitionErrors, DefinitionProblem, Issue, Loc
from definitions.models import Agency, AgencyRegistry, CallStep, DataSchema, ServiceDefinition
from definitions.translations import (
    Text,
    TranslationFile,
    check,
    is_language_tag,
    registry_texts,
    service_texts,
    translated_file,
    translation_tag,
    with_translations,
)
from definitions.validation import iter_expressions, validate_registry, validate_service
from definitions.yaml_source import YamlDocument, YamlSyntaxError

REGISTRY_FILE = "agencies.yaml"
SERVICES_DIR = "services"

MAX_EXPRESSION_TEXT = 20_000
"""Most characters of CEL in one service, all expressions together (shipped: at most 889)."""

MAX_CHECK_WORK = 400_000
"""Most expressions x values in scope checked in one service (shipped: at most 676); about a
second of evaluation on a shared 2-core machine."""

M = TypeVar("M", bound=BaseModel)


def load_catalog(path: Path) -> Catalog:
    """Load and validate the catalog in directory ``path``.

    Raises:
        DefinitionErrors: anything is wrong, in any file (all problems at once).
    """
    problems: list[DefinitionProblem] = []
    registry, broken = _load_registry(path / REGISTRY_FILE, problems)
    if broken == frozenset():
        registry = _translated(registry, registry_texts(registry), path / REGISTRY_FILE,
                               _yaml_files(path, f"{Path(REGISTRY_FILE).stem}.*"), problems)
    agencies = _by_id(registry)

    services: dict[str, ServiceDefinition] = {}
    sources: dict[str, Path] = {}
    service_dir = path / SERVICES_DIR
    every = _yaml_files(service_dir, "*")
    files = [file for file in every if translation_tag(file) is None]
    stems = {file.stem for file in files}
    for file in every:
        if translation_tag(file) is not None and translated_file(file).stem not in stems:
            problems.append(DefinitionProblem(
                file, 1, 1, "", "missing-file",
                f"{file.name} translates {translated_file(file).name}, which is not in "
                f"{service_dir.name}/; name a translation after the service file it translates "
                "(<service file>.<tag>.yaml)",
            ))
    for file in files:
        found = _load_service(file, agencies, broken, problems)
        if found is None:
            continue
        service, document = found
        service = _translated(service, service_texts(service), file,
                              _translations_beside(file, every), problems)
        if service.service in services:
            problems.append(document.locate(Issue(
                ("service",), "duplicate-id",
                f"service id {service.service!r} is already defined in "
                f"{sources[service.service].name}; give each service its own id",
            )))
            continue
        services[service.service] = service
        sources[service.service] = file
    if problems:
        raise DefinitionErrors(problems)
    return Catalog(
        registry=registry, services=services, sources=sources,
        registry_source=path / REGISTRY_FILE,
    )


def load_registry_file(path: Path) -> AgencyRegistry:
    """Load and validate one agency registry file on its own."""
    problems: list[DefinitionProblem] = []
    registry, _ = _load_registry(path, problems)
    if problems:
        raise DefinitionErrors(problems)
    return registry


def load_service_file(path: Path, registry: AgencyRegistry) -> ServiceDefinition:
    """Load and validate one service file against a registry."""
    problems: list[DefinitionProblem] = []
    found = _load_service(path, _by_id(registry), frozenset(), problems)
    if problems or found is None:
        raise DefinitionErrors(problems)
    service = _translated(found[0], service_texts(found[0]), path,
                          _translations_beside(path, _yaml_files(path.parent, "*")), problems)
    if problems:
        raise DefinitionErrors(problems)
    return service


def _by_id(registry: AgencyRegistry) -> dict[str, Agency]:
    """Agencies by id; of a duplicated id the first wins (the second is reported)."""
    agencies: dict[str, Agency] = {}
    for agency in registry.agencies:
        agencies.setdefault(agency.id, agency)
    return agencies


# --------------------------------------------------------------------------- files


def _yaml_files(folder: Path, pattern: str) -> list[Path]:
    return sorted([*folder.glob(f"{pattern}.yaml"), *folder.glob(f"{pattern}.yml")])


def _translations_beside(file: Path, every: list[Path]) -> list[Path]:
    """The translation files of definition ``file`` among ``every`` file of its folder
    (``x.ar.yaml`` and ``x.ar.yml`` both translate ``x.yaml``)."""
    return [f for f in every if translation_tag(f) is not None
            and translated_file(f).stem == file.stem]


def _valid_texts(data: object) -> TranslationFile | None:
    """A translation file's valid part (its texts that are text), when the whole is not."""
    if not isinstance(data, dict) or not isinstance(data.get("texts"), dict):
        return None
    texts = {k: v for k, v in data["texts"].items() if isinstance(v, str)}
    try:
        return TranslationFile.model_validate({**data, "texts": texts})
    except ValidationError:
        return None


def _translated(model: M, texts: dict[str, Text], target: Path, files: list[Path],
                problems: list[DefinitionProblem]) -> M:
    """``model`` with the texts of its translation ``files`` merged in (see
    :mod:`definitions.translations`); each file's problems are added to ``problems``."""
    merged: dict[str, dict[str, str]] = {}
    for file in files:
        document = _read(file, problems)
        if document is None:
            continue
        translation = _validate(TranslationFile, document, problems)
        file_tag = translation_tag(file)
        if file_tag is not None and not is_language_tag(file_tag):
            problems.append(DefinitionProblem(
                file, 1, 1, "", "invalid-value",
                f"{file.name} names {file_tag!r}, not a BCP 47 language tag; a translation "
                "file is named <file>.<tag>.yaml with a tag in its canonical case, such as "
                "es, ar, pt-BR or zh-Hans",
            ))
            file_tag = None
        if translation is None:
            # Still check the paths of the texts that are text, so one run shows everything.
            partial = _valid_texts(document.data)
            if partial is not None:
                problems.extend(document.locate(issue)
                                for issue in check(partial, file_tag, texts, target.name))
            continue
        issues = check(translation, file_tag, texts, target.name)
        problems.extend(document.locate(issue) for issue in issues)
        if not issues:
            merged.setdefault(translation.language, {}).update(translation.texts)
    if not merged:
        return model
    result: M = with_translations(model, texts, merged)
    return result


def _read(path: Path, problems: list[DefinitionProblem]) -> YamlDocument | None:
    """The file's document, or None with the reason added to ``problems``.

    Only regular files are opened: a FIFO or a device named ``x.yaml`` would block or never
    end, so it is reported, not read.
    """
    if not path.is_file():
        if path.exists():
            problems.append(DefinitionProblem(
                path, 1, 1, "", "unreadable-file",
                f"{path.name} is not a regular file (a directory, a device or a pipe); "
                "a catalog holds agencies.yaml and services/*.yaml files",
            ))
            return None
        problems.append(DefinitionProblem(
            path, 1, 1, "", "missing-file",
            f"{path.name} is missing; a catalog holds agencies.yaml and services/*.yaml",
        ))
        return None
    try:
        return YamlDocument.read(path)
    except YamlSyntaxError as exc:
        problems.append(exc.problem)
    except OSError as exc:
        problems.append(DefinitionProblem(
            path, 1, 1, "", "unreadable-file",
            f"{path.name} cannot be read ({exc.strerror or exc}); check its permissions",
        ))
    return None


def _load_registry(
    path: Path, problems: list[DefinitionProblem]
) -> tuple[AgencyRegistry, frozenset[str] | None]:
    """The registry (only its valid agencies if some are broken) and the broken agencies' ids.

    The ids are None when there is no registry to speak of (missing, unreadable, not a list
    of agencies): services are then checked without their agencies, rather than reported
    once per step for calling agencies that may well exist.
    """
    document = _read(path, problems)
    empty = AgencyRegistry(agencies=())
    if document is None:
        return empty, None
    registry = _validate(AgencyRegistry, document, problems)
    if registry is not None:
        problems.extend(document.locate(issue) for issue in validate_registry(registry))
        return registry, frozenset()
    # Keep the agencies that are valid, so services are still checked against them.
    good: list[Agency] = []
    broken: set[str] = set()
    items = document.data.get("agencies") if isinstance(document.data, dict) else None
    if not isinstance(items, list):
        return empty, None
    for item in items:
        try:
            good.append(Agency.model_validate(item))
        except ValidationError:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                broken.add(item["id"])
    unique = {agency.id: agency for agency in reversed(good)}
    return AgencyRegistry(agencies=tuple(unique.values())), frozenset(broken)


def _load_service(
    path: Path,
    agencies: Mapping[str, Agency],
    broken: frozenset[str] | None,
    problems: list[DefinitionProblem],
) -> tuple[ServiceDefinition, YamlDocument] | None:
    document = _read(path, problems)
    if document is None:
        return None
    errors: list[ErrorDetails] = []
    service = _validate(ServiceDefinition, document, problems, errors)
    if service is None:
        _check_valid_steps(document, errors, agencies, broken, problems)
        return None
    too_much = _over_budget(service, agencies)
    if too_much is not None:
        problems.append(document.locate(too_much))
        return None
    issues = validate_service(service, agencies, unchecked_agencies=_unchecked(service, broken))
    problems.extend(document.locate(issue) for issue in issues)
    return service, document


def _over_budget(service: ServiceDefinition, agencies: Mapping[str, Agency]) -> Issue | None:
    """Refuse a service whose expressions would take unbounded time to check.

    Every expression is parsed (~0.1 ms a token) and evaluated over a sample holding the
    submission and every upstream step's output, so the work grows with the expressions' text
    and with their count times the values in scope. Both are bounded here, far above what a
    real service needs (the largest shipped one: 26 expressions, 889 characters, 676 units).
    """
    expressions = [text for _, text in iter_expressions(service)]
    text = sum(len(expression) for expression in expressions)
    if text > MAX_EXPRESSION_TEXT:
        return Issue(
            ("steps",), "file-too-large",
            f"the expressions of this service hold {text:,} characters in all; at most "
            f"{MAX_EXPRESSION_TEXT:,} are checked: split the service or shorten them",
            at_key=True,
        )
    values = _schema_size(service.input)
    for step in service.steps:
        operation = None
        if isinstance(step, CallStep) and step.agency in agencies:
            operation = agencies[step.agency].operation(step.operation)
        # A decision step's output is {decision, reason, decided_by}.
        values += _schema_size(operation.output) if operation is not None else 3
    work = len(expressions) * values
    if work > MAX_CHECK_WORK:
        return Issue(
            ("steps",), "file-too-large",
            f"this service has {len(expressions):,} expressions over {values:,} values in "
            f"scope ({work:,} units; at most {MAX_CHECK_WORK:,} are checked): split the service "
            "or its operations' outputs",
            at_key=True,
        )
    return None


def _schema_size(schema: DataSchema) -> int:
    """How many fields a schema holds, nested ones included (counted without recursion)."""
    count, pending = 0, list(schema.fields.values())
    while pending:
        spec = pending.pop()
        count += 1
        pending.extend((spec.fields or {}).values())
        if spec.items is not None:
            pending.append(spec.items)
    return count


def _unchecked(service: ServiceDefinition, broken: frozenset[str] | None) -> frozenset[str]:
    """The agencies a service is not checked against: the broken ones, or all without a
    registry."""
    if broken is not None:
        return broken
    return frozenset(step.agency for step in service.steps if isinstance(step, CallStep))


def _check_valid_steps(
    document: YamlDocument,
    errors: list[ErrorDetails],
    agencies: Mapping[str, Agency],
    broken: frozenset[str] | None,
    problems: list[DefinitionProblem],
) -> None:
    """Run the cross-file rules on the steps that are valid, when only some steps are not.

    So a file with a misspelt key in one step still gets its expressions and agencies checked
    in one run, instead of one problem per run.
    """
    data = document.data
    if not errors or not isinstance(data, dict) or not isinstance(data.get("steps"), list):
        return
    bad_steps: set[int] = set()
    for error in errors:
        loc = error["loc"]
        if len(loc) < 2 or loc[0] != "steps" or not isinstance(loc[1], int):
            return  # the service itself is broken: its steps cannot be judged
        bad_steps.add(loc[1])
    kept = [i for i in range(len(data["steps"])) if i not in bad_steps]
    if not kept:
        return
    skipped = frozenset(
        str(step["id"]) for i, step in enumerate(data["steps"])
        if i in bad_steps and isinstance(step, dict) and "id" in step
    )
    try:
        partial = ServiceDefinition.model_validate(
            {**data, "steps": [data["steps"][i] for i in kept]}
        )
    except ValidationError:
        return
    too_much = _over_budget(partial, agencies)
    if too_much is not None:
        problems.append(document.locate(too_much))
        return
    for issue in validate_service(
        partial, agencies, unchecked_agencies=_unchecked(partial, broken), unchecked_steps=skipped
    ):
        loc = issue.loc
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            loc = ("steps", kept[loc[1]], *loc[2:])
        problems.append(document.locate(Issue(loc, issue.code, issue.message, issue.at_key)))


def _validate(
    model: type[M],
    document: YamlDocument,
    problems: list[DefinitionProblem],
    errors_out: list[ErrorDetails] | None = None,
) -> M | None:
    if not isinstance(document.data, dict):
        found = "an empty file" if document.data is None else type(document.data).__name__
        problems.append(document.locate(Issue(
            (), "invalid-value",
            f"the file must hold a mapping of keys ({', '.join(model.model_fields)}), "
            f"not {found}",
        )))
        return None
    try:
        return model.model_validate(document.data)
    except ValidationError as exc:
        errors = exc.errors()
        if errors_out is not None:
            errors_out.extend(e for e in errors if not _echo(e, errors))
        problems.extend(
            document.locate(_issue_from_pydantic(model, error))
            for error in errors
            if not _echo(error, errors)
        )
        return None


def _echo(error: ErrorDetails, errors: list[ErrorDetails]) -> bool:
    """Whether an error only repeats others: a list "too short" because its items failed."""
    if error["type"] != "too_short":
        return False
    loc = error["loc"]
    return any(len(other["loc"]) > len(loc) and other["loc"][: len(loc)] == loc for other in errors)


# --------------------------------------------------------------------------- pydantic errors


def _issue_from_pydantic(model: type[BaseModel], error: ErrorDetails) -> Issue:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden" and loc[-1] == "auth_secret" and model is AgencyRegistry:
        return Issue(_data_loc(model, loc), "retired-key", (
            "auth_secret (a secret shared with the engine) is no longer supported: each agency "
            "signs with its own Ed25519 key and the registry names only its public keys. "
            "Replace it with keys: {jwks_url_env: NWD_AGENCY_<ID>_JWKS_URL} or "
            "keys: {public: [{kid: ..., x: ...}]} (docs/agency-contract.md)"), at_key=True)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(model, loc[:-1])
        hint = ""
        if allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            hint += f"allowed keys here: {', '.join(allowed)}"
        return Issue(_data_loc(model, loc), "unknown-key",
                     f"unknown key {_shown(key)}; {hint or 'remove it'}", at_key=True)
    if kind == "missing":
        return Issue(_data_loc(model, loc), "missing-key",
                     f"missing required key {str(loc[-1])!r}; add it here")
    if model is TranslationFile and kind == "string_type" and loc[:1] == ("texts",):
        return Issue(loc, "invalid-value", (
            f"a translation is text, not {_shown(error['input'])}; write it as a string "
            "(quote it if YAML reads it as a number, a date, a boolean or null)"))
    if model is TranslationFile and loc == ("language",) and kind == "string_pattern_mismatch":
        return Issue(loc, "invalid-value", (
            f"{_shown(error['input'])} is not a BCP 47 language tag; write one in its "
            "canonical case, such as 'es', 'ar', 'pt-BR' or 'zh-Hans'"))
    if kind == "string_pattern_mismatch" and "a-z][a-z0-9_-]" in message:
        message = (f"{_shown(error['input'])} is not a valid id: use lowercase letters, digits, "
                   "'-' and '_', starting with a letter")
    elif (
        "input" in error
        and not isinstance(error["input"], dict | list)
        and repr(error["input"]) not in message
    ):
        message = f"{message} (got {_shown(error['input'])})"
    return Issue(_data_loc(model, loc), "invalid-value", message)


def _shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut short: a message quotes a wrong value, never a whole megabyte."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _data_loc(model: type[BaseModel], loc: Loc) -> Loc:
    """Drop the parts pydantic adds that are not keys in the data (union tags)."""
    kept: list[str | int] = []
    current: Any = model
    for part in loc:
        current, is_tag = _step_into(current, part)
        if not is_tag:
            kept.append(part)
    return tuple(kept)


def _allowed_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    current: Any = model
    for part in loc:
        current, _ = _step_into(current, part)
    current = _unwrap(current, None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any, part: str | int | None) -> Any:
    """Strip Annotated and Optional; pick the union member a tag names."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
            return annotation
        else:
            return annotation


def _step_into(annotation: Any, part: str | int) -> tuple[Any, bool]:
    """The type found one step down ``part``, and whether ``part`` was a union tag."""
    annotation = _unwrap(annotation, part)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            tags = [m.tag for m in getattr(member, "__metadata__", ()) if hasattr(m, "tag")]
            if part in tags:
                return _unwrap(member, None), True
        return None, False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        info = annotation.model_fields.get(str(part))
        return (info.annotation if info else None), False
    args = typing.get_args(annotation)
    if origin in (tuple, list) and args:
        return args[0], False
    if origin is dict and len(args) == 2:
        return args[1], False
    return None, False
