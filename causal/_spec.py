"""The causal family's part of the audit spec: its policy (``[policy.causal]``) and its section
(``[causal]``: the graph and the roles of its nodes). Declared here, beside the checks, and
registered with the family in ``causal.checks``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from audit.spec import PolicyModel, Scalar

__all__ = ["CausalPolicy", "CausalSpec"]


class CausalPolicy(PolicyModel):
    """Thresholds and budgets for the causal family (issue: causal checks).

    Effects are on the probability scale of the model's score (sensitive-attribute checks) or on
    the outcome's scale (``causal.treatment_effect``). Sample sizes and simulation counts bound the
    cost; every check reports the values it used.
    """

    total_effect_max: float = Field(0.10, ge=0, le=1)
    counterfactual_flip_rate_max: float = Field(0.05, ge=0, le=1)
    counterfactual_mean_abs_delta_max: float = Field(0.05, ge=0, le=1)
    direct_effect_max: float = Field(0.05, ge=0, le=1)
    #: rows (drawn without replacement from the audited data) used to fit the structural causal
    #: model and as the individuals of the counterfactual and path analyses
    sample_size: int = Field(2000, ge=50, le=1_000_000)
    #: rows used by ``causal.treatment_effect`` (DoWhy estimation and refutation)
    effect_sample_size: int = Field(10_000, ge=50, le=1_000_000)
    #: bootstrap replicates: SCM refits shared by the sensitive effect, path decomposition and
    #: counterfactual fairness intervals, and DoWhy's bootstrap intervals for estimators without an
    #: analytic one
    n_bootstrap: int = Field(50, ge=0, le=10_000)
    refuter_simulations: int = Field(20, ge=1, le=10_000)
    refuter_significance_level: float = Field(0.05, gt=0, lt=0.5)
    refuter_subset_fraction: float = Field(0.8, gt=0, lt=1)
    #: strength of the hypothetical unobserved confounder in the sensitivity analysis, as a
    #: multiple of the strongest observed common cause (Cinelli & Hazlett benchmarking)
    sensitivity_strength: float = Field(1.0, gt=0, le=10)
    #: without an observed common cause to benchmark against, the estimate is fragile when its
    #: robustness value (partial R2 a confounder needs to make it insignificant) is below this
    robustness_value_min: float = Field(0.05, ge=0, le=1)
    #: structural mechanisms of the SCM: "linear" (additive-noise linear regression and logistic
    #: classifiers, seconds), "boosted" (additive-noise gradient boosting), "auto" (DoWhy's
    #: cross-validated model selection: slow)
    mechanisms: Literal["linear", "boosted", "auto"] = "linear"
    confidence_level: float = Field(0.95, gt=0.5, lt=1)


class CausalSpec(PolicyModel):
    """The causal graph and the roles of its nodes (issue: causal checks).

    The graph is DOT or GML text, a path to a .dot/.gv/.gml file, or an edge list
    (``edges = [["region", "income"], ...]``). Nodes that are not data columns must be declared
    ``latent``. The treatment of the sensitive-attribute checks is ``treatment`` or, when absent,
    the first sensitive feature; ``outcome`` (a data column) is the outcome of
    ``causal.treatment_effect``. ``treatment_value`` / ``control_value`` fix the contrast
    (default: the two values of a binary treatment in sorted order, control first).
    """

    graph: str | None = None  # DOT or GML text, or a path to a .dot/.gv/.gml file
    edges: tuple[tuple[str, str], ...] = ()
    latent: tuple[str, ...] = ()
    treatment: str | None = None
    outcome: str | None = None
    mediators: tuple[str, ...] = ()
    treatment_value: Scalar | None = None
    control_value: Scalar | None = None

    def resolve_paths(self, base: Path) -> CausalSpec:
        """A graph given as a file path is relative to the spec file's folder."""
        if self.graph and _looks_like_path(self.graph) and not Path(self.graph).is_absolute():
            return self.model_copy(update={"graph": str(base / self.graph)})
        return self

    @model_validator(mode="after")
    def _one_graph(self) -> CausalSpec:
        if self.graph is not None and self.edges:
            raise ValueError("give the graph as 'graph' (DOT or GML) or as 'edges', not both")
        for name, values in (("latent", self.latent), ("mediators", self.mediators)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must be unique, got {list(values)}")
        return self


def _looks_like_path(text: str) -> bool:
    return "\n" not in text and "{" not in text and "[" not in text and Path(text).suffix in {
        ".dot",
        ".gv",
        ".gml",
        ".txt",
    }
