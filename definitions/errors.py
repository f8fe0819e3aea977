"""What goes wrong with definitions, and how it is reported.

Exception tree::

    DefinitionErrors            one or more problems in the catalog's YAML (all of them at once)
    UnknownService (KeyError)   a service id the catalog does not hold
    SubmissionInvalid           (in :mod:`definitions.submission`) citizen data that breaks a schema

Each :class:`DefinitionProblem` points into a file (line and column, 1-based), names the key
path (``steps[2].input.licence_number``), carries a stable ``code`` that tests and docs refer
to, and a message that says what is wrong and how to fix it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

Loc = tuple[str | int, ...]
"""A location inside a document: keys and list positions, e.g. ``("steps", 2, "input")``."""


def key_path(loc: Loc) -> str:
    """Render a location as a dotted key path: ``("steps", 2, "input")`` -> ``steps[2].input``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def printable(text: str) -> str:
    """``text`` with every character :meth:`str.isprintable` refuses written as an escape
    (``\\x80``, ``\\u202e``); printable text is returned unchanged."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


@dataclass(frozen=True)
class Issue:
    """A problem found by a rule, before it is placed in a file (rules know no YAML)."""

    loc: Loc
    code: str
    message: str
    at_key: bool = False
    """Point at the key itself rather than its value (unknown keys, duplicate ids)."""


@dataclass(frozen=True)
class DefinitionProblem:
    """One thing wrong with a definition file, with where it is and how to fix it."""

    file: Path
    line: int
    column: int
    key_path: str
    code: str
    message: str

    def __post_init__(self) -> None:
        # The message and key path quote what the file holds (a key, a wrong value, a step
        # kind); a hostile file may hold characters a terminal acts on or hides (C1 controls,
        # bidirectional overrides, zero-width marks). Escaped here, once, so every problem
        # prints as one visible line whatever rule made it.
        object.__setattr__(self, "message", printable(self.message))
        object.__setattr__(self, "key_path", printable(self.key_path))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message} [{self.code}]"

    def relative_to(self, base: Path) -> DefinitionProblem:
        """The same problem with its file shown relative to ``base`` when it lies below it."""
        try:
            file = self.file.resolve().relative_to(base.resolve())
        except ValueError:
            return self
        return DefinitionProblem(
            file, self.line, self.column, self.key_path, self.code, self.message
        )


class DefinitionErrors(Exception):  # noqa: N818 (plural: it carries every problem)
    """The catalog has problems; ``problems`` lists every one, in file and line order."""

    def __init__(self, problems: Iterable[DefinitionProblem]) -> None:
        self._problems = sorted(problems, key=lambda p: (str(p.file), p.line, p.column, p.code))
        count = len(self._problems)
        lines = "\n".join(str(p) for p in self._problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in definitions:\n{lines}")

    @property
    def problems(self) -> list[DefinitionProblem]:
        """Every problem found, sorted by file, line and column."""
        return list(self._problems)


class UnknownService(KeyError):  # noqa: N818 (a KeyError: reads as the missing thing)
    """A service id that is not in the catalog; the message lists the known ones."""

    def __init__(self, service_id: str, known: Iterable[str]) -> None:
        self.service_id = service_id
        self.known = tuple(sorted(known))
        super().__init__(service_id)

    def __str__(self) -> str:
        known = ", ".join(self.known) or "none"
        return f"unknown service {self.service_id!r}; the catalog has: {known}"
