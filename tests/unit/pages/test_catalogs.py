"""The interface's catalogs: complete, current, and rendered in the visitor's language.

- the committed ``i18n/messages.pot`` is what extracting the code and templates gives now, so
  a new string cannot be forgotten (the failure says to run ``make messages``);
- every language translates every message: no empty or fuzzy entry, every plural form the
  language has (Arabic six, Chinese one), the same ``%(name)s`` placeholders as the English;
- a page in Arabic is right-to-left and in Arabic; one in Chinese says ``lang="zh-Hans"``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.pofile import read_po
from fastapi import FastAPI

from i18n import catalogs, languages
from intake.pages import router as pages
from intake.pages import session
from runtime.settings import DEFAULT_CATALOG_DIR

ROOT = Path(__file__).resolve().parents[3]
POT = ROOT / "i18n" / "messages.pot"
EXTRACT = ["extract", "-F", "babel.cfg", "-k", "_", "-k", "gettext", "-k", "ngettext:1,2",
           "-k", "pgettext:1c,2", "--no-location", "--sort-output", "--omit-header"]
"""`make messages`'s extraction (the Makefile's line; a test below keeps the two equal)."""
PLACEHOLDER = re.compile(r"%\(\w+\)[sdif]|%[sdif]")
COUNT = "%(num)d"
"""The count of a plural message (the name Jinja's ``ngettext`` gives it)."""
OTHERS = [tag for tag in languages.tags() if tag != languages.DEFAULT]


def _template() -> Catalog:
    with POT.open("rb") as handle:
        return read_po(handle)


def _catalog(tag: str) -> Catalog:
    with catalogs.po_path(tag).open("rb") as handle:
        return read_po(handle, locale=languages.to_identifier(tag))


def _ids(message: Message) -> tuple[str, ...]:
    return message.id if isinstance(message.id, tuple) else (message.id,)


def _messages(catalog: Catalog) -> Iterator[Message]:
    return (message for message in catalog if message.id)


class TestTemplate:
    def test_the_template_is_a_fresh_extraction(self, tmp_path: Path) -> None:
        """i18n/messages.pot holds exactly the strings the code and templates use now."""
        fresh = tmp_path / "messages.pot"
        subprocess.run([sys.executable, "-m", "babel.messages.frontend", *EXTRACT,
                        "-o", str(fresh), "."], cwd=ROOT, check=True, capture_output=True)
        assert fresh.read_text(encoding="utf-8") == POT.read_text(encoding="utf-8"), (
            "i18n/messages.pot is out of date: run `make messages`, then translate the new "
            "entries in i18n/locales/*/LC_MESSAGES/messages.po (docs/languages.md)")

    def test_the_makefile_extracts_the_same_way(self) -> None:
        makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
        line = makefile.split("pybabel extract", 1)[1].split("-o i18n/messages.pot", 1)[0]
        assert line.replace("\\\n", " ").split() == EXTRACT[1:]


class TestEveryLanguage:
    def test_there_are_catalogs_beyond_english(self) -> None:
        assert {"ar", "es", "zh-Hans"} <= set(OTHERS)

    @pytest.mark.parametrize("tag", OTHERS)
    def test_every_message_is_translated(self, tag: str) -> None:
        """Each message of the template is in the catalog, not fuzzy, with every plural form
        the language has filled in, and no message the template no longer has."""
        template, catalog = _template(), _catalog(tag)
        forms = catalog.num_plurals
        missing, fuzzy, empty = [], [], []
        for source in _messages(template):
            message = catalog.get(source.id, source.context)
            if message is None:
                missing.append(source.id)
                continue
            if message.fuzzy:
                fuzzy.append(source.id)
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            expected = forms if source.pluralizable else 1
            if len(strings) != expected or not all(s.strip() for s in strings):
                empty.append(source.id)
        extra = [m.id for m in _messages(catalog) if m.id not in template]
        assert (missing, fuzzy, empty, extra) == ([], [], [], []), (
            f"{catalogs.po_path(tag)}: run `make messages` and translate every entry")

    def test_plural_forms_are_the_languages_own(self) -> None:
        """CLDR's plural rules: Arabic has six forms (zero, one, two, few, many, other),
        Chinese one."""
        assert _catalog("ar").num_plurals == 6
        assert _catalog("zh-Hans").num_plurals == 1

    @pytest.mark.parametrize("tag", OTHERS)
    def test_placeholders_are_kept(self, tag: str) -> None:
        """Each translation has the same %(name)s placeholders as its English, so formatting
        can neither fail nor drop a value. In a plural, a form may say its count in words
        instead of ``%(num)d`` (Arabic: خدمة واحدة, خدمتان); every other placeholder stays."""
        wrong = []
        for message in _messages(_catalog(tag)):
            english = {frozenset(PLACEHOLDER.findall(text)) for text in _ids(message)}
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            for text in strings:
                found = frozenset(PLACEHOLDER.findall(text))
                if message.pluralizable:
                    ok = any(found in (want, want - {COUNT}) for want in english)
                else:
                    ok = found in english
                if text and not ok:
                    wrong.append((message.id, text))
        assert wrong == []

    @pytest.mark.parametrize("tag", OTHERS)
    def test_plurals_render_for_every_count(self, tag: str) -> None:
        """Every plural message formats for the counts that pick each form (0, 1, 2, 3, 11,
        100) without a KeyError, and shows the count."""
        for message in _messages(_template()):
            if not message.pluralizable:
                continue
            singular, plural = _ids(message)
            names = {name: "x" for name in re.findall(r"%\((\w+)\)s", plural)}
            with catalogs.use(tag):
                for count in (0, 1, 2, 3, 11, 100):
                    text = catalogs.ngettext(singular, plural, count) % {"num": count, **names}
                    assert text.strip()
                    if "%(num)d" in plural and count > 2:
                        assert str(count) in text, (tag, text)


def _app() -> FastAPI:
    from definitions.loader import load_catalog

    app = FastAPI()
    session.install(app, b"k" * 32, https_only=False)
    app.include_router(pages.router(load_catalog(DEFAULT_CATALOG_DIR)))
    return app


class TestRenderedPages:
    async def _get(self, url: str, **headers: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(url, headers=headers)

    async def test_arabic_is_right_to_left_and_arabic(self) -> None:
        """?lang=ar: the page says lang="ar" dir="rtl", its interface text and its services'
        titles (from the translation files) are Arabic."""
        page = await self._get("/?lang=ar")
        assert page.status_code == 200
        assert '<html lang="ar" dir="rtl"' in page.text
        with catalogs.use("ar"):
            heading = catalogs.gettext("Tell government once")
        assert heading != "Tell government once" and f"<h1>{heading}</h1>" in page.text
        assert "أبلِغ الجهات الحكومية بتغيير عنوانك" in page.text  # change-of-address.ar.yaml
        assert "Tell government you have moved" not in page.text
        assert re.search("[\u0600-\u06ff]{4,}", page.text)

    async def test_chinese_says_zh_hans(self) -> None:
        page = await self._get("/", **{"accept-language": "zh-CN,zh;q=0.9"})
        assert '<html lang="zh-Hans" dir="ltr"' in page.text
        assert "告知政府您已搬家" in page.text
        assert "Tell government you have moved" not in page.text

    async def test_spanish_and_the_search_plural(self) -> None:
        """A search in Spanish counts its matches in Spanish."""
        page = await self._get("/?lang=es&q=empresa")
        assert '<html lang="es" dir="ltr"' in page.text
        with catalogs.use("es"):
            expected = catalogs.ngettext("%(num)d service matches “%(query)s”.",
                                         "%(num)d services match “%(query)s”.", 1)
        assert expected % {"num": 1, "query": "empresa"} in page.text
