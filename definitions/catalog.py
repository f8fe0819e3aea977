"""The loaded catalog: the agency registry and every service, validated, with content hashes.

A request is pinned to a :class:`~definitions.models.ServiceSnapshot`: the service and the
agencies it calls, plus a sha256 over their canonical JSON. The hash is computed from the
validated models (defaults filled in, keys sorted), not from the YAML text, so comments,
key order and whitespace never change it; any change of meaning does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from definitions.errors import UnknownService
from definitions.models import Agency, AgencyRegistry, CallStep, ServiceDefinition, ServiceSnapshot


def agencies_used(service: ServiceDefinition, agencies: Mapping[str, Agency]) -> tuple[Agency, ...]:
    """The agencies a service's steps call, sorted by id."""
    ids = {step.agency for step in service.steps if isinstance(step, CallStep)}
    return tuple(agencies[agency_id] for agency_id in sorted(ids) if agency_id in agencies)


def content_hash_of(service: ServiceDefinition, agencies: tuple[Agency, ...]) -> str:
    """sha256 (hex) of the canonical JSON of a service and the agencies it uses."""
    document = {
        "service": service.model_dump(mode="json"),
        "agencies": [agency.model_dump(mode="json") for agency in agencies],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Catalog:
    """Every agency and service of a catalog directory, all validated together."""

    registry: AgencyRegistry
    services: Mapping[str, ServiceDefinition]
    sources: Mapping[str, Path] = field(default_factory=dict)
    registry_source: Path | None = None

    def __post_init__(self) -> None:
        # Read-only views: a catalog is shared by requests and must not change under them.
        object.__setattr__(self, "services", MappingProxyType(dict(self.services)))
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))
        # A catalog never changes, so each service's snapshot (a canonical dump and a sha256
        # of the service and its agencies) is computed once, not on every submission.
        object.__setattr__(self, "_snapshots", {})

    @property
    def agencies(self) -> dict[str, Agency]:
        """Agencies by id."""
        agencies: dict[str, Agency] = {}
        for agency in self.registry.agencies:
            agencies.setdefault(agency.id, agency)  # a duplicate id is a reported problem
        return agencies

    def service(self, service_id: str) -> ServiceDefinition:
        """The service with this id, or :class:`UnknownService` listing the known ones."""
        try:
            return self.services[service_id]
        except KeyError:
            raise UnknownService(service_id, self.services) from None

    def source(self, service_id: str) -> Path:
        """The YAML file the service was loaded from."""
        self.service(service_id)
        return self.sources[service_id]

    def content_hash(self, service_id: str) -> str:
        """The service's content hash (see the module docstring)."""
        return self.snapshot(service_id).content_hash

    def snapshot(self, service_id: str) -> ServiceSnapshot:
        """What a new request of this service is pinned to."""
        snapshots: dict[str, ServiceSnapshot] = self._snapshots  # type: ignore[attr-defined]
        if service_id not in snapshots:
            service = self.service(service_id)
            agencies = agencies_used(service, self.agencies)
            snapshots[service_id] = ServiceSnapshot(
                content_hash=content_hash_of(service, agencies), service=service,
                agencies=agencies,
            )
        return snapshots[service_id]
