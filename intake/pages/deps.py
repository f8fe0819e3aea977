"""What every page router is given: the engine's objects the JSON API already uses.

One :class:`PageDeps` is built by :func:`intake.app.build_app` and handed to each page family's
``router(deps)``, so a page reaches the same submissions, access rules, read model and
Temporal client as its API twin — never a copy of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client

from definitions.catalog import Catalog
from intake.access import RequestAccess
from intake.submissions import Submissions
from readmodel.store import ReadModel
from runtime.identity import TokenVerifier
from runtime.settings import Settings


@dataclass(frozen=True)
class PageDeps:
    """The collaborators of the pages; all owned by the composition root."""

    settings: Settings
    catalog: Catalog
    client: Client
    submissions: Submissions
    verifier: TokenVerifier
    access: RequestAccess | None
    """None without a read model: then no request can be followed (the API's rule)."""
    read_model: ReadModel | None

    @property
    def production(self) -> bool:
        return self.settings.production
