"""Causal analysis over DoWhy: graphs, effect estimation with refuters, SCM counterfactuals, mediation.

A library that knows nothing of the audit runner: ``causal.checks`` adapts it into registered
checks (``causal.treatment_effect``, ``causal.sensitive_effect``,
``causal.counterfactual_fairness``, ``causal.path_decomposition``) and ``causal.cli_commands``
adds ``trustaudit causal discover`` and ``trustaudit causal validate-graph``.

DoWhy and causal-learn are imported inside the functions that use them, so importing this package
stays cheap.
"""

from __future__ import annotations

from causal._discover import DiscoveredGraph, discover_graph
from causal._effects import (
    CounterfactualResult,
    EffectInterval,
    SCMEffects,
    counterfactual_fairness,
    scm_effects,
    wilson_interval,
)
from causal._estimation import REFUTER_MEANINGS, EffectAnalysis, EstimateRow, RefutationRow, estimate_effect
from causal._graph import CausalGraph, GraphRoles, load_graph, parse_graph, resolve_roles
from causal._scm import FittedSCM, NotIdentifiedError, SCMPlan, fit_scm, plan_scm, treatment_levels
from causal._validate import validate_causal_spec

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
    "scm_effects",
    "treatment_levels",
    "validate_causal_spec",
    "wilson_interval",
]
