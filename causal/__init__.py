"""Causal analysis over DoWhy: graphs, effect estimation with refuters, SCM counterfactuals, mediation.

A library that knows nothing of the audit runner: ``causal.checks`` adapts it into registered
checks (``causal.treatment_effect``, ``causal.sensitive_effect``,
``causal.counterfactual_fairness``, ``causal.path_decomposition``) and ``causal.cli_commands``
adds ``trustaudit causal discover`` and ``trustaudit causal validate-graph``.

Public names load lazily and DoWhy / causal-learn are imported inside the functions that use
them, so importing this package (as the CLI does to add its commands) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below load lazily (PEP 562), keeping `trustaudit --help` fast
    from causal._discover import DiscoveredGraph, discover_graph
    from causal._effects import (
        CounterfactualResult,
        EffectInterval,
        SCMEffects,
        counterfactual_fairness,
        scm_analysis,
        scm_effects,
        wilson_interval,
    )
    from causal._estimation import (
        REFUTER_MEANINGS,
        EffectAnalysis,
        EstimateRow,
        RefutationRow,
        estimate_effect,
    )
    from causal._graph import CausalGraph, GraphRoles, load_graph, parse_graph, resolve_roles
    from causal._scm import FittedSCM, NotIdentifiedError, SCMPlan, fit_scm, plan_scm, treatment_levels
    from causal._validate import validate_causal_spec

_EXPORTS: dict[str, str] = {
    "REFUTER_MEANINGS": "causal._estimation",
    "CausalGraph": "causal._graph",
    "CounterfactualResult": "causal._effects",
    "DiscoveredGraph": "causal._discover",
    "EffectAnalysis": "causal._estimation",
    "EffectInterval": "causal._effects",
    "EstimateRow": "causal._estimation",
    "FittedSCM": "causal._scm",
    "GraphRoles": "causal._graph",
    "NotIdentifiedError": "causal._scm",
    "RefutationRow": "causal._estimation",
    "SCMEffects": "causal._effects",
    "SCMPlan": "causal._scm",
    "counterfactual_fairness": "causal._effects",
    "discover_graph": "causal._discover",
    "estimate_effect": "causal._estimation",
    "fit_scm": "causal._scm",
    "load_graph": "causal._graph",
    "parse_graph": "causal._graph",
    "plan_scm": "causal._scm",
    "resolve_roles": "causal._graph",
    "scm_analysis": "causal._effects",
    "scm_effects": "causal._effects",
    "treatment_levels": "causal._scm",
    "validate_causal_spec": "causal._validate",
    "wilson_interval": "causal._effects",
}

__all__ = [
    "REFUTER_MEANINGS",
    "CausalGraph",
    "CounterfactualResult",
    "DiscoveredGraph",
    "EffectAnalysis",
    "EffectInterval",
    "EstimateRow",
    "FittedSCM",
    "GraphRoles",
    "NotIdentifiedError",
    "RefutationRow",
    "SCMEffects",
    "SCMPlan",
    "counterfactual_fairness",
    "discover_graph",
    "estimate_effect",
    "fit_scm",
    "load_graph",
    "parse_graph",
    "plan_scm",
    "resolve_roles",
    "scm_analysis",
    "scm_effects",
    "treatment_levels",
    "validate_causal_spec",
    "wilson_interval",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'causal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
