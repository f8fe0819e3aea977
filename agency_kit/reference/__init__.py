"""The reference agency systems used by the demo, the tests and the benchmarks.

:func:`create_app` builds one FastAPI app hosting every agency of a registry under
``/agencies/{agency_id}``; ``python -m agency_kit`` runs it (see :mod:`agency_kit.__main__`).

Modules, one seam each: :mod:`~agency_kit.reference.app` (the factory wiring the rest),
:mod:`~agency_kit.reference.plumbing` (body limit, refusals, canonical JSON, signature check,
the request prelude), :mod:`~agency_kit.reference.operations` (perform, complete, information,
cancel), :mod:`~agency_kit.reference.callbacks` (scheduling and delivery),
:mod:`~agency_kit.reference.admin` (behaviour, records, reset — not the contract),
:mod:`~agency_kit.reference.hosted` (the agencies, their stores and pool),
:mod:`~agency_kit.reference.store`, :mod:`~agency_kit.reference.behaviour`,
:mod:`~agency_kit.reference.outputs` and :mod:`~agency_kit.reference.config`.
"""

from agency_kit.reference.app import ReferenceAgencies, create_app
from agency_kit.reference.behaviour import AgencyBehaviour, BehaviourSpec, parse_behaviours
from agency_kit.reference.operations import UNDO_PREFIXES, is_undo

__all__ = [
    "UNDO_PREFIXES",
    "AgencyBehaviour",
    "BehaviourSpec",
    "ReferenceAgencies",
    "create_app",
    "is_undo",
    "parse_behaviours",
]
