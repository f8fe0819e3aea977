"""`nwd definitions`: check the catalog, print its JSON Schema, draw a service, show its hash."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from definitions.catalog import Catalog
from definitions.errors import DefinitionErrors, UnknownService
from definitions.graph import mermaid
from definitions.loader import load_catalog
from definitions.schema import render
from definitions.translations import ENGLISH, missing_translations
from i18n.languages import tags as language_tags
from nwd.cli import UserError
from runtime.settings import DEFAULT_CATALOG_DIR


def register(subparsers: Any) -> None:
    """Add the `definitions` command group to the `nwd` parser."""
    parser = subparsers.add_parser(
        "definitions", help="check and inspect the catalog of services and agencies"
    )
    commands = parser.add_subparsers(dest="definitions_command", metavar="SUBCOMMAND")
    commands.required = True

    check = commands.add_parser("check", help="validate every catalog file; list every problem")
    check.add_argument("path", nargs="?", type=Path, default=DEFAULT_CATALOG_DIR,
                       help="catalog directory (default: the built-in catalog)")
    check.add_argument("--strict-translations", action="store_true",
                       help="a text without a translation in a language the interface speaks "
                            "is an error, not a warning")
    check.set_defaults(handler=run_check)

    schema = commands.add_parser("schema", help="print the JSON Schema of catalog files")
    schema.set_defaults(handler=run_schema)

    graph = commands.add_parser("graph", help="print a service as a Mermaid flowchart")
    graph.add_argument("service", help="service id, e.g. change-of-address")
    graph.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG_DIR,
                       help="catalog directory")
    graph.set_defaults(handler=run_graph)

    digest = commands.add_parser("hash", help="print a service's content hash")
    digest.add_argument("service", help="service id")
    digest.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG_DIR,
                        help="catalog directory")
    digest.set_defaults(handler=run_hash)


def run_check(args: argparse.Namespace) -> int:
    """Print every problem as `path:line:column: message [code]`; exit 1 if there are any."""
    path: Path = args.path
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; give a catalog directory")
    try:
        catalog = load_catalog(path)
    except DefinitionErrors as exc:
        for problem in exc.problems:
            print(problem.relative_to(Path.cwd()))
        count = len(exc.problems)
        files = len({p.file for p in exc.problems})
        print(f"{count} problem{'s' if count != 1 else ''} in {files} "
              f"file{'s' if files != 1 else ''}")
        return 1
    print(f"{len(catalog.services)} services, {len(catalog.agencies)} agencies OK")
    return _report_untranslated(catalog, strict=args.strict_translations)


def _report_untranslated(catalog: Catalog, *, strict: bool) -> int:
    """List the texts with no translation in a language the interface speaks, one a line
    (the file it goes in, the language, the path to write there); 1 if ``strict`` and any."""
    languages = language_tags()
    missing = missing_translations(catalog, languages)
    label = "error" if strict else "warning"
    for text in missing:
        file = text.file.relative_to(Path.cwd()) if text.file and text.file.is_relative_to(
            Path.cwd()) else text.file
        print(f"{label}: {file}: no {text.language!r} text for {text.path} "
              f"({text.owner}) [untranslated]")
    others = [tag for tag in languages if tag != ENGLISH]
    if not missing:
        print(f"every text is translated into {', '.join(others) or 'no other language'}")
        return 0
    counts = Counter(text.language for text in missing)
    by_language = ", ".join(f"{tag} {counts[tag]}" for tag in others if counts[tag])
    print(f"{len(missing)} untranslated text{'s' if len(missing) != 1 else ''} ({by_language})"
          + ("" if strict else "; --strict-translations makes them errors"))
    return 1 if strict else 0


def run_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema."""
    print(render(), end="")
    return 0


def run_graph(args: argparse.Namespace) -> int:
    """Print the Mermaid flowchart of one service."""
    catalog = _catalog(args.catalog)
    print(mermaid(_service(catalog, args.service)))
    return 0


def run_hash(args: argparse.Namespace) -> int:
    """Print the content hash a new request of the service would be pinned to."""
    catalog = _catalog(args.catalog)
    _service(catalog, args.service)
    print(catalog.content_hash(args.service))
    return 0


def _catalog(path: Path) -> Catalog:
    try:
        return load_catalog(path)
    except DefinitionErrors as exc:
        raise UserError(
            f"the catalog in {path} has {len(exc.problems)} problem(s); "
            f"run `nwd definitions check {path}`"
        ) from exc


def _service(catalog: Catalog, service_id: str) -> Any:
    try:
        return catalog.service(service_id)
    except UnknownService as exc:
        raise UserError(str(exc)) from exc
