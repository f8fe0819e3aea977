"""An agency the registry names no keys for: taken unsigned on a developer's machine, refused in
production (``NWD_DEPLOYMENT=production``) — by the worker before it calls the agency, and by
the intake before it takes a callback. Likewise a callback URL without an expiry."""

from __future__ import annotations

import pytest

from activities.agency_directory import AgencyDirectory, AgencyMisconfigured
from agency_kit.signing import SignatureError
from definitions.catalog import Catalog
from definitions.models import Agency, AgencyRegistry
from intake.interactions import CallbackVerifier
from runtime import callback_tokens as tokens
from runtime.messages import AgencyEndpoint

KEYLESS = AgencyEndpoint(agency_id="keyless", default_base_url="http://agency.test")


def keyless_catalog() -> Catalog:
    agency = Agency.model_validate({
        "id": "keyless", "name": {"en": "Keyless"},
        "http": {"base_url_env": "NWD_AGENCY_KEYLESS_URL",
                 "default_base_url": "http://agency.test"},
        "operations": [],
    })
    return Catalog(registry=AgencyRegistry(agencies=(agency,)), services={})


class TestWorker:
    def test_development_takes_its_answers_unsigned(self) -> None:
        assert AgencyDirectory({}).public_keys(KEYLESS) is None

    def test_production_refuses_to_call_it(self) -> None:
        with pytest.raises(AgencyMisconfigured, match="'keyless' has no keys"):
            AgencyDirectory({}, require_keys=True).public_keys(KEYLESS)


class TestIntake:
    async def test_development_takes_its_callbacks_unsigned(self) -> None:
        verifier = CallbackVerifier(b"k" * 32, keyless_catalog(), {})
        await verifier.check_signature("keyless", "http://intake.test/callbacks/t", b"{}", {})

    async def test_production_refuses_its_unsigned_callbacks(self) -> None:
        verifier = CallbackVerifier(b"k" * 32, keyless_catalog(), {}, production=True)
        with pytest.raises(SignatureError, match="no unsigned callback"):
            await verifier.check_signature("keyless", "http://intake.test/callbacks/t", b"{}",
                                           {})


class TestCallbackUrlsWithoutExpiry:
    KEY = b"k" * 32
    TARGET = tokens.CallbackTarget("R-1", "step", None, "keyless")

    def test_development_takes_them(self) -> None:
        verifier = CallbackVerifier(self.KEY, keyless_catalog(), {})
        assert verifier.target(tokens.issue(self.KEY, self.TARGET)) == self.TARGET

    def test_production_refuses_them_and_takes_expiring_ones(self) -> None:
        verifier = CallbackVerifier(self.KEY, keyless_catalog(), {}, production=True)
        with pytest.raises(tokens.InvalidCallbackToken, match="no expiry"):
            verifier.target(tokens.issue(self.KEY, self.TARGET))
        expiring = tokens.CallbackTarget("R-1", "step", None, "keyless", 4_102_444_800)
        assert verifier.target(tokens.issue(self.KEY, expiring)) == expiring
