"""What each agency receives, derived from the steps' CEL expressions, on every shipped service."""

from __future__ import annotations

from definitions.catalog import Catalog
from definitions.disclosure import Disclosure, asked_fields, disclosures, humanise, resolve
from definitions.models import DataSchema, FieldSpec, ServiceDefinition


def _by_step(catalog: Catalog, service: str) -> dict[str, Disclosure]:
    return {d.step_id: d for d in disclosures(catalog.service(service), catalog.agencies)}


def _labels(fields: tuple[object, ...]) -> list[str]:
    return [f.label["en"] for f in fields]  # type: ignore[attr-defined]


class TestShippedServices:
    def test_change_of_address_lists_each_agency_and_its_fields(self, catalog: Catalog) -> None:
        steps = _by_step(catalog, "change-of-address")
        licence = steps["update_licence"]
        assert licence.agency_name["en"] == "Driver and Vehicle Licensing Agency"
        assert licence.agency_name["es"] == "Agencia de Permisos de Conducir y Vehículos"
        assert licence.conditional
        # the compensation's input (licence number again) is named once
        assert _labels(licence.fields) == ["Driving licence number", "Full name",
                                           "Date of birth", "New address"]
        tax = steps["update_tax_address"]
        assert not tax.conditional
        assert _labels(tax.fields) == ["Tax identification number", "New address",
                                       "Date you moved"]
        assert tax.extra == ()

    def test_a_for_each_step_names_its_list_and_the_item_fields(self, catalog: Catalog) -> None:
        benefits = _by_step(catalog, "change-of-address")["update_benefits"]
        assert benefits.for_each is not None
        assert benefits.for_each.list_path == ("benefits",)
        assert benefits.for_each.list_label["en"] == "Benefits you receive"
        assert _labels(benefits.for_each.item_fields) == ["Programme", "Case number"]
        # the list itself is not listed as a field: the for_each says it
        assert _labels(benefits.fields) == ["New address"]

    def test_nested_objects_resolve_to_their_inner_fields(self, catalog: Catalog) -> None:
        steps = _by_step(catalog, "report-a-death")
        pensions = steps["notify_pensions"]
        assert [f.path for f in pensions.fields] == [
            ("deceased", "full_name"), ("deceased", "date_of_birth"),
            ("deceased", "national_insurance_number"), ("deceased", "date_of_death"),
            ("informant", "full_name"), ("informant", "address")]
        assert all(f.personal for f in pensions.fields if f.path != ("deceased", "date_of_death"))
        assert steps["notify_vehicle_licensing"].conditional
        council = steps["notify_council"]
        assert _labels(council.fields)[-1] == "Council services they used"

    def test_earlier_steps_outputs_are_named_as_steps(self, catalog: Catalog) -> None:
        steps = _by_step(catalog, "register-a-business")
        assert steps["register_company"].from_steps == ()
        employer = steps["register_employer"]
        assert employer.from_steps == ("register_company",)
        # both sides of a conditional expression are read
        assert _labels(employer.fields) == ["Business name", "First payday",
                                            "Date you start trading", "How many employees?"]

    def test_every_step_of_every_service_is_described(self, catalog: Catalog) -> None:
        for service in catalog.services.values():
            found = disclosures(service, catalog.agencies)
            assert [d.step_id for d in found] == [s.id for s in service.steps]
            for disclosure in found:
                assert disclosure.extra == ()
                assert disclosure.kind == "decision" or disclosure.agency_name is not None


def _service(**step: object) -> ServiceDefinition:
    return ServiceDefinition.model_validate({
        "service": "s", "version": 1, "title": "S", "description": "S",
        "input": {"fields": {
            "first_name": {"type": "text"},
            "home": {"type": "address", "label": {"en": "Home", "es": "Casa"}},
            "kids": {"type": "list", "required": False, "items": {"type": "object", "fields": {
                "name": {"type": "text"}, "born": {"type": "date"}}}},
        }},
        "steps": [step],
    })


class TestExpressions:
    def test_an_address_part_is_the_address(self) -> None:
        found = disclosures(_service(id="a", agency="x", operation="o",
                                     input={"city": "submission.home.city"}))
        assert [f.path for f in found[0].fields] == [("home",)]
        assert found[0].agency_name is None  # no registry given

    def test_a_label_less_field_is_named_in_plain_words(self) -> None:
        found = disclosures(_service(id="a", agency="x", operation="o",
                                     input={"n": "submission.first_name + ' x'"}))
        assert found[0].fields[0].label == {"en": "First name"}

    def test_a_decision_step_lists_what_the_caseworker_is_shown(self) -> None:
        found = disclosures(_service(id="review", kind="decision", role="r",
                                     show={"who": "submission.first_name"}))
        assert found[0].kind == "decision"
        assert found[0].role == "r"
        assert _labels(found[0].fields) == ["First name"]

    def test_items_of_a_list_inside_a_map_macro_are_not_fields(self) -> None:
        found = disclosures(_service(id="a", agency="x", operation="o", input={
            "names": "has(submission.kids) ? submission.kids.map(k, k.name) : []"}))
        assert [f.path for f in found[0].fields] == [("kids",)]

    def test_for_each_item_fields(self) -> None:
        found = disclosures(_service(id="a", agency="x", operation="o",
                                     for_each="submission.kids", input={
                                         "n": "item.name", "b": "item.born",
                                         "h": "submission.home"}))
        assert found[0].for_each is not None
        assert [f.path for f in found[0].for_each.item_fields] == [("name",), ("born",)]
        assert [f.path for f in found[0].fields] == [("home",)]


def test_resolve_and_humanise() -> None:
    schema = DataSchema(fields={"a": FieldSpec(type="object", fields={
        "b": FieldSpec(type="text")})})
    assert resolve(schema.fields, ["a", "b"]) is not None
    assert resolve(schema.fields, ["nope"]) is None
    assert humanise("moved_on") == "Moved on"
    assert humanise("child-benefit") == "Child benefit"
    assert [f.label["en"] for f in asked_fields(schema)] == ["A"]
