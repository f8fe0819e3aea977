"""Draw a service as a Mermaid flowchart, for docs and for reviewing a definition.

One node per step, labelled with its agency and operation; edges follow ``needs`` (steps
without ``needs`` start from the submission). Conditions (``when``) label the edges into their
step (``if ...``); fan-out (``for_each``, drawn as a subroutine node), callbacks, deadlines
and compensations are written in the node text, so the picture says what the engine will do.
"""

from __future__ import annotations

import re

from definitions.models import CallStep, DecisionStep, ServiceDefinition
from definitions.models import format_duration as _duration

START = "submission"


def _node_id(step_id: str) -> str:
    return "step_" + re.sub(r"[^A-Za-z0-9_]", "_", step_id)


def _escape(text: str) -> str:
    """Make text safe inside a quoted Mermaid label (entity codes, as Mermaid documents)."""
    return (
        text.replace("&", "#amp;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("|", "#124;")
    )


def _label(step: CallStep | DecisionStep) -> str:
    lines = [f"<b>{_escape(step.id)}</b>"]
    if isinstance(step, CallStep):
        lines.append(_escape(f"{step.agency} / {step.operation}"))
        if step.for_each:
            lines.append(_escape(f"for each: {step.for_each}"))
        if step.mode == "callback":
            lines.append("waits for callback")
    else:
        lines.append(_escape(f"decision by {step.role}"))
    if not step.required:
        lines.append("optional")
    if step.deadline:
        deadline = step.deadline
        lines.append(_escape(f"deadline: {_duration(deadline.after)}, {deadline.on_miss}"))
    if isinstance(step, CallStep) and step.compensation:
        lines.append(_escape(f"undo: {step.compensation.operation}"))
    return "<br/>".join(lines)


def mermaid(service: ServiceDefinition) -> str:
    """The service as ``flowchart TD`` Mermaid text (no trailing newline)."""
    out = ["flowchart TD", f'    {START}(["{_escape(service.service)} submission"])']
    for step in service.steps:
        label = _label(step)
        node = _node_id(step.id)
        if isinstance(step, DecisionStep):
            out.append(f'    {node}{{"{label}"}}')
        elif step.for_each:
            out.append(f'    {node}[["{label}"]]')
        else:
            out.append(f'    {node}["{label}"]')
    for step in service.steps:
        node = _node_id(step.id)
        edge = f'-- "{_escape("if " + step.when)}" -->' if step.when else "-->"
        for source in step.needs or (None,):
            origin = START if source is None else _node_id(source)
            out.append(f"    {origin} {edge} {node}")
    return "\n".join(out)
