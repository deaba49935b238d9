"""Validate the ``[causal]`` part of an audit spec against the audited data, at the boundary."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from audit.exceptions import SpecError
from causal._graph import CausalGraph, GraphRoles, load_graph, resolve_roles

__all__ = ["validate_causal_spec"]


def _check_value(frame: pd.DataFrame | None, column: str | None, value: Any, param: str) -> None:
    if frame is None or column is None or value is None or column not in frame.columns:
        return
    values = {str(v) for v in pd.unique(frame[column].dropna())}
    if str(value) not in values and len(values) <= 50:
        shown = ", ".join(sorted(values)[:10])
        raise SpecError(f"causal.{param} {value!r} is not a value of '{column}' (values: {shown})")


def validate_causal_spec(
    causal: Any,
    columns: Iterable[str],
    *,
    sensitive: Sequence[str] = (),
    frame: pd.DataFrame | None = None,
) -> tuple[CausalGraph, GraphRoles] | None:
    """Parse and validate the graph and roles of a ``CausalSpec`` (``None`` when no graph is given).

    Raises ``GraphError`` (a cycle, an unknown node, a treatment / outcome / mediator that is not
    an observed node) or ``SpecError`` (a treatment or control value absent from the data).
    """
    if causal.graph is None and not causal.edges:
        return None
    graph = load_graph(causal.graph, causal.edges, causal.latent, columns)
    roles = resolve_roles(
        graph,
        treatment=causal.treatment,
        outcome=causal.outcome,
        mediators=causal.mediators,
        sensitive=sensitive,
    )
    _check_value(frame, roles.treatment, causal.treatment_value, "treatment_value")
    _check_value(frame, roles.treatment, causal.control_value, "control_value")
    return graph, roles
