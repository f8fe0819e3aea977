"""The form generator: raw trees, coercion, actions, widgets and translated errors."""

from __future__ import annotations

import time
from typing import Any

import pytest

from definitions.models import DataSchema
from definitions.submission import FieldError, SubmissionInvalid, validate_submission
from i18n import catalogs
from intake.pages import form_fields as ff
from intake.pages.drafts import Draft, DraftRefused, Drafts

SCHEMA = DataSchema.model_validate({"fields": {
    "name": {"type": "text", "min_length": 2, "label": {"en": "Name", "es": "Nombre"}},
    "email": {"type": "email", "required": False},
    "phone": {"type": "phone", "required": False},
    "age": {"type": "integer", "required": False, "minimum": 0},
    "height": {"type": "number", "required": False},
    "married": {"type": "boolean"},
    "born": {"type": "date"},
    "colour": {"type": "enum", "values": ["red", "blue"],
               "options": {"red": {"en": "Red", "es": "Rojo"}}},
    "month": {"type": "enum", "values": [f"m{i}" for i in range(12)], "required": False},
    "home": {"type": "address"},
    "work": {"type": "object", "required": False, "fields": {
        "employer": {"type": "text"}, "since": {"type": "date", "required": False}}},
    "kids": {"type": "list", "required": False, "max_items": 3, "items": {
        "type": "object", "fields": {"name": {"type": "text"},
                                     "born": {"type": "date", "required": False}}}},
    "tags": {"type": "list", "required": False, "items": {"type": "text"}},
    "services": {"type": "list", "min_items": 1, "items": {
        "type": "enum", "values": ["tax", "library"]}},
}})
HOME = {"home.line1": ["1 High St"], "home.city": ["Town"], "home.postcode": ["AB1"],
        "home.country": ["GB"]}
GOOD: dict[str, list[str]] = {
    "name": ["Ann"], "email": [" a@example.org "], "age": ["42"], "height": ["1.5"],
    "married": ["true"], "born.day": ["3"], "born.month": ["4"], "born.year": ["1980"],
    "colour": ["red"], **HOME, "kids.count": ["3"], "kids[0].name": [""],
    "kids[1].name": ["Bo"], "kids[2].name": ["Cy"], "kids[2].born.day": ["1"],
    "kids[2].born.month": ["1"], "kids[2].born.year": ["2010"],
    "tags.count": ["1"], "tags[0]": ["x"], "services": ["library", "tax", "nope", "tax"],
}


def parse(form: dict[str, list[str]]) -> tuple[dict[str, Any], ff.Parsed]:
    raw = ff.raw_from_form(SCHEMA.fields, form)
    return raw, ff.to_submission(SCHEMA.fields, raw)


class TestParsing:
    def test_every_kind_is_coerced_and_blanks_are_left_out(self) -> None:
        _, parsed = parse(GOOD)
        assert validate_submission(SCHEMA, parsed.data) == {
            "name": "Ann", "email": "a@example.org", "age": 42, "height": 1.5, "married": True,
            "born": "1980-04-03", "colour": "red",
            "home": {"line1": "1 High St", "city": "Town", "postcode": "AB1", "country": "GB"},
            "kids": [{"name": "Bo"}, {"name": "Cy", "born": "2010-01-01"}],
            "tags": ["x"], "services": ["library", "tax"],
        }

    def test_a_dropped_blank_item_shifts_errors_back_to_the_form_positions(self) -> None:
        form = {**GOOD, "kids[2].name": [""]}  # item 2 now has a date but no name
        _, parsed = parse(form)
        with pytest.raises(SubmissionInvalid) as caught:
            validate_submission(SCHEMA, parsed.data)
        [error] = caught.value.errors
        assert error.loc == ("kids", 1, "name") and error.code == "required"
        assert parsed.form_loc(error.loc) == ("kids", 2, "name")

    @pytest.mark.parametrize(("changes", "loc", "code"), [
        ({"name": ["A"]}, ("name",), "too_short"),
        ({"email": ["nope"]}, ("email",), "not_an_email"),
        ({"phone": ["call me"]}, ("phone",), "not_a_phone"),
        ({"age": ["forty"]}, ("age",), "not_whole"),
        ({"age": ["-1"]}, ("age",), "too_small"),
        ({"height": ["tall"]}, ("height",), "not_a_number"),
        ({"married": ["maybe"]}, ("married",), "not_boolean"),
        ({"married": [""]}, ("married",), "required"),
        ({"born.day": ["31"], "born.month": ["2"]}, ("born",), "not_a_real_date"),
        ({"born.day": ["x"]}, ("born",), "not_a_date"),
        ({"born.year": ["80"]}, ("born",), "not_a_date"),
        ({"colour": ["green"]}, ("colour",), "not_one_of"),
        ({"home.country": ["gb"]}, ("home", "country"), "pattern"),
        ({"home.line1": [""], "home.city": [""], "home.postcode": [""], "home.country": [""]},
         ("home",), "required"),
        ({"services": []}, ("services",), "required"),
        ({"work.since.day": ["1"], "work.since.month": ["1"], "work.since.year": ["2020"]},
         ("work", "employer"), "required"),
    ])
    def test_bad_input_gets_a_coded_error_at_its_field(
            self, changes: dict[str, list[str]], loc: tuple[str, ...], code: str) -> None:
        _, parsed = parse({**GOOD, **changes})
        with pytest.raises(SubmissionInvalid) as caught:
            validate_submission(SCHEMA, parsed.data)
        found = {parsed.form_loc(e.loc): e.code for e in caught.value.errors}
        assert found == {loc: code}

    def test_list_counts_are_bounded(self) -> None:
        raw, _ = parse({**GOOD, "kids.count": ["999999"]})
        assert len(raw["kids"]) == 3  # max_items
        raw, _ = parse({**GOOD, "kids.count": ["lots"]})
        assert raw["kids"] == []

    def test_a_submission_round_trips_through_the_raw_tree(self) -> None:
        _, parsed = parse(GOOD)
        data = validate_submission(SCHEMA, parsed.data)
        raw = ff.raw_from_submission(SCHEMA.fields, data)
        assert raw["born"] == {"day": "3", "month": "4", "year": "1980"}
        assert raw["married"] == "true"
        assert validate_submission(SCHEMA, ff.to_submission(SCHEMA.fields, raw).data) == data


class TestActions:
    def test_add_and_remove_items(self) -> None:
        raw, _ = parse({**GOOD, "kids.count": ["1"], "kids[0].name": ["Al"]})
        assert ff.apply_action(SCHEMA.fields, raw, "add:kids")
        assert [k["name"] for k in raw["kids"]] == ["Al", ""]
        assert ff.apply_action(SCHEMA.fields, raw, "remove:kids[0]")
        assert [k["name"] for k in raw["kids"]] == [""]

    def test_add_stops_at_max_items_and_bad_actions_do_nothing(self) -> None:
        raw, _ = parse(GOOD)
        assert len(raw["kids"]) == 3
        assert not ff.apply_action(SCHEMA.fields, raw, "add:kids")
        for action in ("add:name", "remove:kids[7]", "remove:kids", "explode:kids",
                       "add:services", "add:../x", "add:"):
            assert not ff.apply_action(SCHEMA.fields, raw, action), action
        assert len(raw["kids"]) == 3

    def test_adding_to_an_empty_list_shows_a_second_item(self) -> None:
        raw, _ = parse({})
        assert ff.apply_action(SCHEMA.fields, raw, "add:kids")
        assert len(raw["kids"]) == 2  # one was shown already


class TestWidgets:
    def test_kinds_names_and_ids(self) -> None:
        raw, _ = parse(GOOD)
        shown = {w.loc[0]: w for w in ff.widgets(SCHEMA.fields, raw)}
        assert shown["colour"].kind == "radios"
        assert shown["colour"].options == [("red", {"en": "Red", "es": "Rojo"}), ("blue", "Blue")]
        assert shown["month"].kind == "select"
        assert shown["married"].kind == "boolean"
        assert shown["services"].kind == "checkboxes"
        assert [c.name for c in shown["home"].children][:2] == ["home.line1", "home.line2"]
        kid = shown["kids"].items[2].children[1]
        assert kid.name == "kids[2].born" and kid.id == "f-kids-2-born"
        assert kid.context == ("Kids", 3)
        assert not shown["kids"].can_add  # at max_items
        assert shown["tags"].items[0].children[0].name == "tags[0]"

    def test_errors_are_placed_and_targeted(self) -> None:
        raw, parsed = parse({**GOOD, "colour": [""], "home.city": [""]})
        with pytest.raises(SubmissionInvalid) as caught:
            validate_submission(SCHEMA, parsed.data)
        shown = ff.widgets(SCHEMA.fields, raw, ff.errors_by_loc(caught.value.errors, parsed))
        problems = [w for one in shown for w in one.errors()]
        assert [w.target for w in problems] == ["f-colour-0", "f-home-city"]
        assert problems[1].described_by() == "f-home-city-error"

    def test_loc_and_name_are_inverse(self) -> None:
        for loc in [("a",), ("a", 0, "b"), ("a", "b", 12)]:
            assert ff.loc_of(ff.name_of(loc)) == loc
        assert ff.loc_of("a..b[") is None or ff.loc_of("a..b[") != ("a", "b")
        assert ff.loc_of("A") is None


class TestMessages:
    def test_codes_become_sentences_naming_the_field(self) -> None:
        error = FieldError(("name",), "must be at least 2 characters long", "too_short",
                           {"min": 2})
        assert ff.error_message(error, "Name") == "“Name” must be at least 2 characters long."
        required = FieldError(("c",), "is required", "required")
        assert ff.error_message(required, "Colour", "radios") == \
            "Choose an answer for “Colour”."
        assert ff.error_message(required, "Name") == "Enter “Name”."

    def test_spanish(self) -> None:
        with catalogs.use("es"):
            text = ff.error_message(FieldError(("n",), "is required", "required"), "Nombre")
        assert "Nombre" in text and text != "Enter “Nombre”."

    def test_the_api_messages_are_unchanged(self) -> None:
        with pytest.raises(SubmissionInvalid) as caught:
            validate_submission(SCHEMA, {"name": "A", "married": "yes", "zzz": 1})
        messages = {e.loc: (e.code, e.message) for e in caught.value.errors}
        assert messages[("name",)] == ("too_short", "must be at least 2 characters long")
        assert messages[("married",)] == ("not_boolean", "must be true or false")
        assert messages[("zzz",)][0] == "unknown_field"
        assert messages[("born",)] == ("required", "is required")


class TestDrafts:
    def test_a_sealed_draft_opens_only_for_its_service(self) -> None:
        drafts = Drafts(b"k" * 32)
        draft = drafts.new("svc", {"name": "Ann"})
        token = drafts.seal(draft)
        assert "Ann" not in token
        assert drafts.open(token, "svc") == draft
        with pytest.raises(DraftRefused):
            drafts.open(token, "other")

    def test_forged_damaged_or_foreign_drafts_are_refused(self) -> None:
        drafts = Drafts(b"k" * 32)
        token = drafts.seal(Draft("svc", {}, "key"))
        for bad in ("", "x", token[:-2] + "AA", Drafts(b"j" * 32).seal(Draft("svc", {}, "k"))):
            with pytest.raises(DraftRefused):
                drafts.open(bad, "svc")

    def test_an_expired_draft_is_refused(self) -> None:
        token = Drafts(b"k" * 32).seal(Draft("svc", {}, "key"))
        time.sleep(1.1)  # the test is about time passing: a TTL of 0 s expires it
        with pytest.raises(DraftRefused):
            Drafts(b"k" * 32, ttl_s=0).open(token, "svc")
        assert Drafts(b"k" * 32).new("s", {}).idempotency_key != \
            Drafts(b"k" * 32).new("s", {}).idempotency_key
