"""What the soak sends and what it expects: varied submissions across the catalog, and the
agencies' behaviour (latencies, callbacks, injected 503s).

Each request is one of the catalog's services (``definitions/services/*.yaml``) with its
example submission (``examples/<service>.json``) varied by a seeded generator: names, dates,
identifiers, which optional branches apply (a driving licence or not, 0 to 4 benefits, a
vehicle, a passport, staff). For every request the soak also writes down, independently of
the engine, **the effects the agencies must end up holding**: one record per step (per item
for a ``for_each`` step) whose condition holds, in the agency and operation the step names.
The end checks compare the agencies' own tables with that list — an oracle that does not ask
the engine what it did.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.settings import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "examples"
SERVICES = ("change-of-address", "report-a-death", "register-a-business")
"""Every service of the shipped catalog; requests cycle through them in a seeded order."""

PROGRAMMES = ("child-benefit", "housing-support", "jobseeker", "disability")
COUNCIL_SERVICES = ("council-tax", "electoral-roll", "blue-badge", "library", "housing")
FIRST = ("Alex", "Sam", "Jo", "Robin", "Kim", "Ana", "Luis", "Mei", "Ola", "Priya", "Tomás")
LAST = ("Example", "Sample", "García", "Okafor", "Nguyen", "Smith", "Novak", "Ahmed")


@dataclass(frozen=True)
class Effect:
    """One effect an agency must hold exactly once at the end: its step's call, completed."""

    agency: str
    operation: str
    step: str
    item: str | None
    callback: bool
    """The step is in callback mode: the agency answers 202 and owes the engine a callback."""


@dataclass(frozen=True)
class PlannedRequest:
    """One request of the soak: its service, its submission, its key, what it must cause."""

    index: int
    service: str
    submission: dict[str, Any]
    idempotency_key: str
    effects: tuple[Effect, ...]


def _examples() -> dict[str, dict[str, Any]]:
    return {name: json.loads((EXAMPLES / f"{name}.json").read_text()) for name in SERVICES}


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _date(rng: random.Random, start_year: int, end_year: int) -> str:
    return f"{rng.randint(start_year, end_year)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def change_of_address(rng: random.Random, base: dict[str, Any]) -> tuple[dict[str, Any],
                                                                          list[Effect]]:
    data = copy.deepcopy(base)
    data["full_name"] = _name(rng)
    data["date_of_birth"] = _date(rng, 1940, 2005)
    data["moved_on"] = _date(rng, 2026, 2026)
    data["new_address"]["line1"] = f"{rng.randint(1, 200)} Orchard Lane"
    data["tax_id"] = "TX" + _digits(rng, 8)
    data["has_driving_licence"] = rng.random() < 0.7
    if data["has_driving_licence"]:
        data["licence_number"] = "LIC" + _digits(rng, 10)
    else:
        data.pop("licence_number", None)
    data["registered_to_vote"] = rng.random() < 0.8
    programmes = rng.sample(PROGRAMMES, rng.randint(0, len(PROGRAMMES)))
    if programmes:
        data["benefits"] = [{"programme": p, "case_number": f"CN-{_digits(rng, 5)}"}
                            for p in programmes]
    else:
        data.pop("benefits", None)
    data["preferred_language"] = rng.choice(("en", "es"))
    effects = [Effect("tax-authority", "update-address", "update_tax_address", None, False)]
    if data["has_driving_licence"]:
        effects.append(Effect("driver-licensing", "update-address", "update_licence", None,
                              False))
    if data["registered_to_vote"]:
        effects.append(Effect("electoral-registration", "update-registration",
                              "update_voter_registration", None, True))
    effects += [Effect("benefits-agency", "update-address", "update_benefits", p, True)
                for p in programmes]
    return data, effects


def report_a_death(rng: random.Random, base: dict[str, Any]) -> tuple[dict[str, Any],
                                                                       list[Effect]]:
    data = copy.deepcopy(base)
    deceased, informant = data["deceased"], data["informant"]
    deceased["full_name"] = _name(rng)
    deceased["date_of_birth"] = _date(rng, 1925, 1970)
    deceased["date_of_death"] = _date(rng, 2026, 2026)
    deceased["tax_id"] = "TX" + _digits(rng, 8)
    deceased["national_insurance_number"] = "QQ" + _digits(rng, 6) + "C"
    informant["full_name"] = _name(rng)
    data["had_vehicle"] = rng.random() < 0.6
    data["held_passport"] = rng.random() < 0.7
    data["council_services"] = rng.sample(COUNCIL_SERVICES, rng.randint(1, 3))
    data["preferred_language"] = rng.choice(("en", "es"))
    effects = [
        Effect("pensions-service", "notify-death", "notify_pensions", None, True),
        Effect("tax-authority", "notify-death", "notify_tax", None, False),
        Effect("local-council", "notify-death", "notify_council", None, False),
    ]
    if data["had_vehicle"]:
        effects.append(Effect("driver-licensing", "notify-vehicle-keeper-death",
                              "notify_vehicle_licensing", None, False))
    if data["held_passport"]:
        effects.append(Effect("passport-office", "cancel-passport", "cancel_passport", None,
                              False))
    return data, effects


def register_a_business(rng: random.Random, base: dict[str, Any]) -> tuple[dict[str, Any],
                                                                            list[Effect]]:
    data = copy.deepcopy(base)
    data["business_name"] = f"{rng.choice(LAST)} {rng.choice(('Bakery', 'Tools', 'Studio'))}"
    data["business_type"] = rng.choice(("sole-trader", "partnership", "limited-company"))
    data["owner_name"] = _name(rng)
    data["starts_trading_on"] = _date(rng, 2027, 2027)
    data["will_employ_staff"] = rng.random() < 0.5
    if data["will_employ_staff"]:
        data["expected_employees"] = rng.randint(1, 40)
    else:
        data.pop("expected_employees", None)
        data.pop("first_payday", None)
    data["preferred_language"] = rng.choice(("en", "es"))
    effects = [
        Effect("business-registry", "register-company", "register_company", None, False),
        Effect("tax-authority", "register-business", "register_for_tax", None, False),
    ]
    if data["will_employ_staff"]:
        effects.append(Effect("tax-authority", "register-employer", "register_employer", None,
                              False))
    return data, effects


_BUILDERS = {"change-of-address": change_of_address, "report-a-death": report_a_death,
             "register-a-business": register_a_business}


def plan_requests(count: int, seed: int, *, services: tuple[str, ...] = SERVICES,
                  all_callbacks: bool = False) -> list[PlannedRequest]:
    """``count`` requests over ``services``, varied by ``seed`` (the same seed, the same run).

    ``all_callbacks`` (the issue's experiment) makes every change of address registered to
    vote with two benefits, so each request holds three callback-mode calls.
    """
    rng = random.Random(seed)
    bases = _examples()
    planned: list[PlannedRequest] = []
    for index in range(count):
        service = services[index % len(services)] if all_callbacks else rng.choice(services)
        submission, effects = _BUILDERS[service](rng, bases[service])
        if all_callbacks and service == "change-of-address":
            submission["registered_to_vote"] = True
            submission["benefits"] = bases[service]["benefits"]
            effects = [e for e in effects if e.agency != "benefits-agency"
                       and e.agency != "electoral-registration"]
            effects.append(Effect("electoral-registration", "update-registration",
                                  "update_voter_registration", None, True))
            effects += [Effect("benefits-agency", "update-address", "update_benefits",
                               b["programme"], True) for b in submission["benefits"]]
        planned.append(PlannedRequest(
            index=index, service=service, submission=submission,
            idempotency_key=f"soak-{seed}-{index}-{rng.getrandbits(32):08x}",
            effects=tuple(effects)))
    return planned


LATENCY_MS = {
    "driver-licensing": 120, "electoral-registration": 60, "tax-authority": 250,
    "benefits-agency": 80, "business-registry": 300, "pensions-service": 40,
    "passport-office": 150, "local-council": 20,
}
"""Each agency's answer time (20-300 ms): an office's API is neither instant nor uniform."""

CALLBACK_DELAY_S = {"electoral-registration": 1.5, "benefits-agency": 3.0,
                    "pensions-service": 2.0}
"""How long each callback-mode agency takes to finish the work and call back."""


def agency_behaviour(failure_rate: float, seed: int, *,
                     callback_delay_s: float | None = None) -> dict[str, Any]:
    """The reference agencies' start-up behaviour (``NWD_AGENCY_BEHAVIOUR``).

    Every agency answers after its latency and fails ``failure_rate`` of its calls with a 503
    (seeded, decided before anything is written, so the engine's retry is the only way on);
    callback-mode agencies call back after their delay (``callback_delay_s``: the same delay
    for all of them). Given at start-up, it survives a restart of the agencies.
    """
    behaviour: dict[str, Any] = {"*": {"error_rate": failure_rate, "seed": seed}}
    for i, (agency, latency) in enumerate(LATENCY_MS.items()):
        # a seed of its own per agency: the same seed everywhere would fail the same calls
        spec: dict[str, Any] = {"latency_ms": latency, "error_rate": failure_rate,
                                "seed": seed * 100 + i}
        if agency in CALLBACK_DELAY_S:
            spec["mode"] = "callback"
            spec["callback_delay_s"] = (CALLBACK_DELAY_S[agency] if callback_delay_s is None
                                        else callback_delay_s)
        behaviour[agency] = spec
    return behaviour


def catalog_services() -> list[str]:
    """The service files of the shipped catalog (checked against :data:`SERVICES`); their
    translation files (``<service>.<tag>.yaml``) are no services."""
    return sorted(p.stem for p in (PROJECT_ROOT / "definitions" / "services").glob("*.yaml")
                  if "." not in p.stem)


def examples_dir() -> Path:
    return EXAMPLES
