"""Citizen submissions checked against a service's input schema; personal data masked."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from definitions.catalog import Catalog
from definitions.models import DataSchema
from definitions.submission import (
    REDACTED,
    SubmissionInvalid,
    personal_paths,
    redact,
    validate_submission,
)

ADDRESS = {"line1": "1 High Street", "city": "Leeds", "postcode": "LS1 1AA", "country": "GB"}
VALID: dict[str, Any] = {
    "full_name": "Ana Souza",
    "date_of_birth": "1985-02-11",
    "new_address": ADDRESS,
    "previous_address": {**ADDRESS, "line1": "9 Low Road", "line2": "Flat 3"},
    "moved_on": "2026-03-01",
    "has_driving_licence": True,
    "licence_number": "SOUZA851021AB9",
    "registered_to_vote": False,
    "tax_id": "AB123456C",
    "benefits": [{"programme": "jobseeker", "case_number": "J-2231"}],
    "email": "ana@example.org",
    "preferred_language": "es",
}


@pytest.fixture
def schema(catalog: Catalog) -> DataSchema:
    """The change-of-address input schema."""
    return catalog.services["change-of-address"].input


def _errors(schema: DataSchema, data: Any) -> dict[tuple[str | int, ...], str]:
    with pytest.raises(SubmissionInvalid) as caught:
        validate_submission(schema, data)
    return {error.loc: error.message for error in caught.value.errors}


def _with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return data


class TestValidSubmissions:
    def test_valid_submission_is_returned_normalised(self, schema: DataSchema) -> None:
        """A valid submission comes back equal, dates as ISO strings."""
        assert validate_submission(schema, VALID) == VALID

    def test_optional_fields_may_be_absent_or_null(self, schema: DataSchema) -> None:
        """Optional fields left out or null are accepted; nulls are dropped."""
        data = _with(benefits=None)
        data["licence_number"] = None
        result = validate_submission(schema, data)
        assert "benefits" not in result and "licence_number" not in result

    def test_integral_float_becomes_integer(self, catalog: Catalog) -> None:
        """2.0 for an integer field is accepted as 2 (JSON numbers carry no int/float mark)."""
        schema = catalog.services["register-a-business"].input
        data = {
            "business_name": "Souza Bakes", "business_type": "sole-trader",
            "business_address": ADDRESS, "owner_name": "Ana", "owner_email": "a@b.org",
            "starts_trading_on": "2026-04-01", "will_employ_staff": True,
            "expected_employees": 2.0, "preferred_language": "en",
        }
        assert validate_submission(schema, data)["expected_employees"] == 2


class TestInvalidSubmissions:
    def test_missing_required_field(self, schema: DataSchema) -> None:
        """A required field left out is reported at its name."""
        assert _errors(schema, _with(tax_id=None)) == {("tax_id",): "is required"}

    def test_unknown_field_is_rejected(self, schema: DataSchema) -> None:
        """Data the schema does not declare is refused (data minimisation)."""
        errors = _errors(schema, _with(mothers_maiden_name="Silva"))
        assert list(errors) == [("mothers_maiden_name",)]
        assert "not a field of this form" in errors[("mothers_maiden_name",)]

    @pytest.mark.parametrize(("field", "value", "message"), [
        ("has_driving_licence", "yes", "must be true or false"),
        ("full_name", 42, "must be text"),
        ("full_name", "", "at least 1 characters"),
        ("preferred_language", "fr", "must be one of: en, es"),
        ("tax_id", "ab-12", "expected format"),
        ("moved_on", "01/03/2026", "YYYY-MM-DD"),
        ("moved_on", "2026-02-30", "not a real date"),
        ("email", "ana-at-example", "email address"),
        ("benefits", "jobseeker", "must be a list"),
        ("benefits", [{"programme": "jobseeker", "case_number": "J-1"}] * 11, "at most 10"),
        ("new_address", "1 High Street, Leeds", "must be an object"),
    ])
    def test_each_failure_kind(
        self, schema: DataSchema, field: str, value: Any, message: str
    ) -> None:
        """Each rule breaks with a message at the field's path."""
        errors = _errors(schema, _with(**{field: value}))
        assert list(errors) == [(field,)]
        assert message in errors[(field,)]

    def test_nested_paths(self, schema: DataSchema) -> None:
        """Errors inside lists and addresses carry the full path, all at once."""
        data = _with(
            benefits=[
                {"programme": "jobseeker", "case_number": "J-2231"},
                {"programme": "lottery", "case_number": "X"},
            ],
            new_address={"line1": "1 High Street", "city": "Leeds", "country": "gb",
                         "flat": "3"},
        )
        errors = _errors(schema, data)
        assert set(errors) == {
            ("benefits", 1, "programme"),
            ("benefits", 1, "case_number"),
            ("new_address", "postcode"),
            ("new_address", "country"),
            ("new_address", "flat"),
        }

    def test_numbers_and_min_items(self, catalog: Catalog) -> None:
        """minimum/maximum, whole numbers and min_items are enforced."""
        schema = catalog.services["register-a-business"].input
        errors = _errors(schema, {
            "business_name": "S", "business_type": "sole-trader", "business_address": ADDRESS,
            "owner_name": "Ana", "owner_email": "a@b.org", "starts_trading_on": "2026-04-01",
            "will_employ_staff": True, "expected_employees": 0, "preferred_language": "en",
        })
        assert errors == {
            ("business_name",): "must be at least 2 characters long",
            ("expected_employees",): "must be at least 1",
        }
        death = catalog.services["report-a-death"].input
        assert ("council_services",) in _errors(death, {"council_services": []})

    def test_not_an_object(self, schema: DataSchema) -> None:
        """A submission that is not an object is one error at the root."""
        assert _errors(schema, ["a"]) == {(): "must be an object with named fields"}


class TestPersonalData:
    def test_personal_paths(self, schema: DataSchema) -> None:
        """Personal fields are listed by path; list items as name[]."""
        paths = personal_paths(schema)
        assert {"full_name", "new_address", "tax_id", "benefits[].case_number"} <= paths
        assert "moved_on" not in paths and "benefits[].programme" not in paths

    def test_nested_object_paths(self, catalog: Catalog) -> None:
        """Fields inside objects are listed with dots."""
        paths = personal_paths(catalog.services["report-a-death"].input)
        assert {"deceased.full_name", "informant.address"} <= paths
        assert "deceased.date_of_death" not in paths

    def test_redact_masks_personal_values_only(self, schema: DataSchema) -> None:
        """redact() replaces personal values with *** and keeps the rest."""
        masked = redact(schema, VALID)
        assert masked["full_name"] == REDACTED and masked["new_address"] == REDACTED
        assert masked["moved_on"] == "2026-03-01"
        assert masked["benefits"] == [{"programme": "jobseeker", "case_number": REDACTED}]
        assert VALID["full_name"] == "Ana Souza"  # the input is not modified

    def test_redact_masks_undeclared_fields(self, schema: DataSchema) -> None:
        """A field the schema does not know is masked: it is not trusted to be harmless."""
        assert redact(schema, {"note": "secret"}) == {"note": REDACTED}

    def test_redact_masks_undeclared_keys_inside_an_address(self, catalog: Catalog) -> None:
        """An address walks its declared parts like an object: a stray key inside is masked."""
        schema = catalog.services["register-a-business"].input
        assert not schema.fields["business_address"].personal
        masked = redact(schema, {"business_address": {**ADDRESS, "note": "secret"}})
        assert masked["business_address"] == {**ADDRESS, "note": REDACTED}
