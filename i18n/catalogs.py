"""The interface's text in each language: gettext catalogs read with Babel.

Catalogs are read from their ``.po`` files when first used and compiled in memory, so a
translator's edit needs no build step and no ``.mo`` file is committed. A message missing
from a catalog (or left empty, or marked fuzzy) falls back to the English source text.

:func:`use` sets the language of the current task (a contextvar, so concurrent requests do
not see each other's); :func:`gettext` and :func:`ngettext` translate into it. Templates get
the same two functions (``{{ _("...") }}``, ``{% trans %}``).
"""

from __future__ import annotations

import contextvars
import functools
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from i18n.languages import DEFAULT, LOCALES_DIR, to_identifier

_current: contextvars.ContextVar[str] = contextvars.ContextVar("nwd_language", default=DEFAULT)


def po_path(tag: str, locales_dir: Path = LOCALES_DIR) -> Path:
    return locales_dir / to_identifier(tag) / "LC_MESSAGES" / "messages.po"


@functools.cache
def translations(tag: str, locales_dir: Path = LOCALES_DIR) -> NullTranslations:
    """The compiled catalog of ``tag`` (English and unknown tags: the source text)."""
    path = po_path(tag, locales_dir)
    if tag == DEFAULT or not path.exists():
        return NullTranslations()
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=to_identifier(tag))
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled)


def current() -> str:
    """The language of the current task."""
    return _current.get()


@contextmanager
def use(tag: str) -> Iterator[None]:
    """Translate into ``tag`` inside the block."""
    token = _current.set(tag)
    try:
        yield
    finally:
        _current.reset(token)


def gettext(message: str) -> str:
    return translations(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(_current.get()).ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    return str(translations(_current.get()).pgettext(context, message))
