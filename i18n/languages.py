"""The languages the engine speaks: discovered from the catalogs, chosen by negotiation.

A :class:`Language` is one catalog folder under ``locales/``; its name (in itself, for the
language drop-down) and its script direction come from the Unicode CLDR data Babel ships, so
a new language needs no code: ``ar`` is right-to-left because CLDR says so.

:func:`negotiate` picks one for a visitor from ``Accept-Language`` (RFC 9110 §12.5.4): by
quality, an exact tag first, then the same language and script once both sides are expanded
with CLDR's likely subtags (``zh-CN`` → ``zh-Hans-CN`` matches ``zh-Hans``; ``zh-TW`` →
``zh-Hant-TW`` does not), then the same language alone. English when nothing matches.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.core import get_global

LOCALES_DIR = Path(__file__).parent / "locales"
"""Where the catalogs are: ``<identifier>/LC_MESSAGES/messages.po``."""
DEFAULT = "en"
"""The language every text exists in (definitions require English)."""
MAX_ACCEPT_LANGUAGE = 64
"""Most ranges read from one ``Accept-Language`` header (a header is not a work list)."""


def to_bcp47(identifier: str) -> str:
    """Babel's identifier (``zh_Hans``) as a BCP 47 tag (``zh-Hans``)."""
    return identifier.replace("_", "-")


def to_identifier(tag: str) -> str:
    """A BCP 47 tag (``zh-Hans``) as Babel's identifier (``zh_Hans``)."""
    return tag.replace("-", "_")


@dataclass(frozen=True)
class Language:
    """One language the interface is translated into."""

    tag: str
    """BCP 47, e.g. ``es``, ``ar``, ``zh-Hans``."""
    name: str
    """Its own name for itself (``español``, ``العربية``, ``中文 (简体)``)."""
    english_name: str
    direction: str
    """``ltr`` or ``rtl``: what HTML's ``dir`` says."""

    @property
    def identifier(self) -> str:
        return to_identifier(self.tag)


def describe(tag: str) -> Language:
    """What CLDR knows of ``tag``; raises ValueError for a tag that names no language."""
    try:
        locale = Locale.parse(to_identifier(tag))
    except (UnknownLocaleError, ValueError) as exc:
        raise ValueError(f"{tag!r} is not a language tag CLDR knows (BCP 47, e.g. 'es', "
                         "'pt-BR', 'zh-Hans')") from exc
    name = locale.get_display_name(locale) or tag
    return Language(tag=tag, name=name[:1].upper() + name[1:],
                    english_name=locale.get_display_name("en") or tag,
                    direction="rtl" if locale.text_direction == "rtl" else "ltr")


@functools.cache
def available(locales_dir: Path = LOCALES_DIR) -> tuple[Language, ...]:
    """Every language with a catalog, English first, then by tag."""
    tags = sorted(to_bcp47(p.parent.parent.name)
                  for p in locales_dir.glob("*/LC_MESSAGES/messages.po"))
    ordered = [DEFAULT, *(t for t in tags if t != DEFAULT)]
    return tuple(describe(t) for t in ordered)


def tags(locales_dir: Path = LOCALES_DIR) -> tuple[str, ...]:
    return tuple(lang.tag for lang in available(locales_dir))


def by_tag(tag: str, locales_dir: Path = LOCALES_DIR) -> Language | None:
    return next((lang for lang in available(locales_dir) if lang.tag == tag), None)


def parse_accept_language(header: str) -> list[str]:
    """The ranges of an ``Accept-Language`` header, best first (q=0 and ``*`` dropped)."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:MAX_ACCEPT_LANGUAGE]):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*":
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(ranked)]


@functools.lru_cache(maxsize=1024)
def _expanded(tag: str) -> tuple[str, str | None]:
    """(language, script) of ``tag`` with CLDR's likely subtags filled in."""
    parts = to_identifier(tag).split("_")
    language = parts[0].lower()
    script = next((p.title() for p in parts[1:] if len(p) == 4 and p.isalpha()), None)
    region = next((p.upper() for p in parts[1:] if len(p) in (2, 3) and p != script), None)
    if script is None:
        likely: Mapping[str, str] = get_global("likely_subtags")
        for key in (f"{language}_{region}" if region else None, language):
            if key and key in likely:
                found = likely[key].split("_")
                script = next((p for p in found[1:] if len(p) == 4), None)
                break
    return language, script


def negotiate(preferred: list[str], supported: tuple[str, ...]) -> str | None:
    """The best of ``supported`` for ``preferred`` (best first), or None (see the module)."""
    lowered = {t.lower(): t for t in supported}
    for wanted in preferred:
        if wanted.lower() in lowered:
            return lowered[wanted.lower()]
        language, script = _expanded(wanted)
        same = [t for t in supported if _expanded(t) == (language, script)]
        if same:
            return same[0]
        if script is None or all(_expanded(t)[1] is None for t in supported
                                 if _expanded(t)[0] == language):
            loose = [t for t in supported if _expanded(t)[0] == language]
            if loose:
                return loose[0]
    return None


def choose(*, asked: str | None, remembered: str | None, accept_language: str,
           supported: tuple[str, ...] | None = None) -> str:
    """The page's language: asked for (``?lang=``), then remembered (a cookie), then the
    browser's ``Accept-Language``, then English. Unknown tags are passed over."""
    supported = supported or tags()
    for tag in (asked, remembered):
        if tag and tag in supported:
            return tag
    return negotiate(parse_accept_language(accept_language), supported) or DEFAULT
