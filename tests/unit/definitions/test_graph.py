"""Mermaid flowcharts of the catalog's services, and the docs that embed them."""

from __future__ import annotations

import re

import pytest

from definitions.catalog import Catalog
from definitions.graph import mermaid
from definitions.models import CallStep, ServiceDefinition
from runtime.settings import PROJECT_ROOT

SERVICES = ["change-of-address", "report-a-death", "register-a-business"]


@pytest.mark.parametrize("service_id", SERVICES)
def test_every_step_is_drawn(catalog: Catalog, service_id: str) -> None:
    """Each step is a node naming its agency and operation; edges follow needs."""
    service = catalog.services[service_id]
    text = mermaid(service)
    assert text.startswith("flowchart TD\n")
    for step in service.steps:
        assert f"<b>{step.id}</b>" in text
        if isinstance(step, CallStep):
            assert f"{step.agency} / {step.operation}" in text
        for need in step.needs:
            assert re.search(rf"step_{need} .*--> step_{step.id}$", text, re.MULTILINE)


@pytest.mark.parametrize("service_id", SERVICES)
def test_conditions_fan_out_and_undo_are_visible(catalog: Catalog, service_id: str) -> None:
    """when labels the incoming edge; for_each and compensation appear in the node."""
    service = catalog.services[service_id]
    text = mermaid(service)
    for step in service.steps:
        if step.when:
            assert re.search(rf'-- "if [^"]+" --> step_{step.id}$', text, re.MULTILINE)
        if isinstance(step, CallStep) and step.for_each:
            assert f'step_{step.id}[["' in text and f"for each: {step.for_each}" in text
        if isinstance(step, CallStep) and step.compensation:
            assert f"undo: {step.compensation.operation}" in text


def test_labels_escape_quotes_and_operators(catalog: Catalog) -> None:
    """Quotes and < > & in expressions become Mermaid entity codes, keeping labels valid."""
    service = catalog.services["change-of-address"]
    step = service.steps[0]
    tricky = service.model_copy(update={
        "steps": (step.model_copy(update={"when": 'submission.full_name != "O\'Neil" && 1 < 2'}),)
    })
    assert isinstance(tricky, ServiceDefinition)
    text = mermaid(tricky)
    assert "#quot;O'Neil#quot; #amp;#amp; 1 #lt; 2" in text
    for line in text.splitlines()[1:]:
        assert line.count('"') % 2 == 0


@pytest.mark.parametrize("service_id", SERVICES)
def test_service_docs_embed_the_current_graph(catalog: Catalog, service_id: str) -> None:
    """docs/services/<id>.md holds exactly mermaid(service) in its mermaid block."""
    page = (PROJECT_ROOT / "docs" / "services" / f"{service_id}.md").read_text()
    match = re.search(r"```mermaid\n(.*?)\n```", page, re.DOTALL)
    assert match is not None
    assert match.group(1) == mermaid(catalog.services[service_id])
