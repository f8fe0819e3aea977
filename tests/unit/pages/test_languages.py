"""Languages: discovered from the catalogs, negotiated from Accept-Language, BCP 47 tags."""

from __future__ import annotations

import pytest

from i18n import catalogs, languages

SUPPORTED = ("en", "ar", "es", "zh-Hans")


class TestAvailable:
    def test_every_catalog_is_a_language_english_first(self) -> None:
        """Each folder of i18n/locales is a language; English leads."""
        found = languages.tags()
        assert found[0] == "en"
        assert set(SUPPORTED) <= set(found)

    def test_direction_and_names_come_from_cldr(self) -> None:
        """Arabic is right-to-left, the others left-to-right, each named in itself."""
        arabic = languages.by_tag("ar")
        chinese = languages.by_tag("zh-Hans")
        assert arabic is not None and arabic.direction == "rtl" and arabic.name == "العربية"
        assert chinese is not None and chinese.direction == "ltr"
        assert chinese.identifier == "zh_Hans" and chinese.english_name == "Chinese (Simplified)"

    def test_an_unknown_tag_is_refused_with_the_form_expected(self) -> None:
        with pytest.raises(ValueError, match="BCP 47"):
            languages.describe("xx-Nope-Nope")


class TestNegotiation:
    @pytest.mark.parametrize(("header", "expected"), [
        ("es", "es"),
        ("es-MX,en;q=0.5", "es"),
        ("fr, es;q=0.3", "es"),
        ("en;q=0.2, ar;q=0.9", "ar"),
        ("zh-CN,zh;q=0.9", "zh-Hans"),
        ("zh-Hans-SG", "zh-Hans"),
        ("zh", "zh-Hans"),
        ("zh-TW", "en"),  # Traditional script: not the Simplified catalog
        ("zh-Hant", "en"),
        ("fr", "en"),
        ("", "en"),
        ("*", "en"),
        ("es;q=0, fr", "en"),
        ("es;q=nonsense", "en"),
    ])
    def test_accept_language(self, header: str, expected: str) -> None:
        assert languages.choose(asked=None, remembered=None, accept_language=header,
                                supported=SUPPORTED) == expected

    def test_asked_beats_remembered_beats_the_browser(self) -> None:
        assert languages.choose(asked="ar", remembered="es", accept_language="zh",
                                supported=SUPPORTED) == "ar"
        assert languages.choose(asked="nope", remembered="es", accept_language="zh",
                                supported=SUPPORTED) == "es"
        assert languages.choose(asked=None, remembered="xx", accept_language="zh",
                                supported=SUPPORTED) == "zh-Hans"

    def test_a_long_header_is_read_only_so_far(self) -> None:
        header = ",".join(["fr"] * languages.MAX_ACCEPT_LANGUAGE + ["es"])
        assert languages.parse_accept_language(header) == ["fr"] * languages.MAX_ACCEPT_LANGUAGE


class TestCatalogs:
    def test_a_missing_message_falls_back_to_english(self) -> None:
        with catalogs.use("es"):
            assert catalogs.gettext("a sentence no catalog holds") == "a sentence no catalog holds"

    def test_the_language_is_per_task(self) -> None:
        with catalogs.use("ar"):
            assert catalogs.current() == "ar"
            with catalogs.use("es"):
                assert catalogs.current() == "es"
            assert catalogs.current() == "ar"
        assert catalogs.current() == "en"
