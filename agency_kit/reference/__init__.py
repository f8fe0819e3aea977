"""The reference agency systems used by the demo, the tests and the benchmarks.

:func:`create_app` builds one FastAPI app hosting every agency of a registry under
``/agencies/{agency_id}``; ``python -m agency_kit`` runs it (see :mod:`agency_kit.__main__`).
"""

from agency_kit.reference.app import UNDO_PREFIXES, ReferenceAgencies, create_app, is_undo
from agency_kit.reference.behaviour import AgencyBehaviour, BehaviourSpec, parse_behaviours

__all__ = [
    "UNDO_PREFIXES",
    "AgencyBehaviour",
    "BehaviourSpec",
    "ReferenceAgencies",
    "create_app",
    "is_undo",
    "parse_behaviours",
]
