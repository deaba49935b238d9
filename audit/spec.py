"""The audit spec: what to audit, on which data, against which policy.

A spec is a TOML file (``trustaudit audit --spec audit.toml``) or the same fields given as CLI
flags or Python arguments. It is validated once, here, with pydantic; every error names the
field, what is allowed and what came, in one line (``SpecError``). Paths in a spec file are
relative to the spec file's folder.

Example::

    seed = 7
    checks = ["fairness", "explain"]

    [model]
    path = "model.skops"

    [data]
    test = "test.csv"          # the audited rows (``data`` is an alias)
    train = "train.csv"        # optional: needed by refit mitigation, membership inference
    holdout = "holdout.csv"    # optional: needed by membership inference, threshold fitting
    target = "approved"
    positive_label = 1
    sensitive = ["sex", "age_group"]

    [policy.fairness]
    demographic_parity_difference_max = 0.10
    disparate_impact_ratio_min = 0.80
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from audit.exceptions import SpecError

__all__ = [
    "FAMILIES",
    "MAX_SPEC_BYTES",
    "AuditSpec",
    "CausalPolicy",
    "CausalSpec",
    "DPClaim",
    "DataSpec",
    "ExplainPolicy",
    "FairnessPolicy",
    "ModelSpec",
    "Policy",
    "PrivacyPolicy",
    "PrivacySpec",
    "load_spec",
    "spec_from_mapping",
]

#: Largest spec file read (a spec is a few kilobytes; an edge list of a large graph stays far below).
MAX_SPEC_BYTES = 4 * 1024**2

#: Check families a spec may select.
FAMILIES: tuple[str, ...] = ("fairness", "explain", "causal", "privacy")

Scalar = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


Fraction = float  # documented as 0..1 via Field(ge=0, le=1)


class FairnessPolicy(_Strict):
    """Thresholds for the fairness family. Differences are absolute (max - min over groups)."""

    demographic_parity_difference_max: float = Field(0.10, ge=0, le=1)
    equalized_odds_difference_max: float = Field(0.10, ge=0, le=1)
    equal_opportunity_difference_max: float = Field(0.10, ge=0, le=1)
    disparate_impact_ratio_min: float = Field(0.80, ge=0, le=1)
    calibration_gap_max: float = Field(0.10, ge=0, le=1)
    min_group_size: int = Field(30, ge=1, le=1_000_000)
    n_bootstrap: int = Field(1000, ge=0, le=100_000)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)
    intersections: bool = True
    mitigation: bool = True
    mitigation_max_accuracy_cost: float = Field(0.05, ge=0, le=1)
    mitigation_refit_rows: int = Field(2000, ge=100, le=1_000_000)
    mitigation_max_iter: int = Field(5, ge=1, le=200)


class ExplainPolicy(_Strict):
    """Thresholds and sample sizes for the explanation family (issue: explanation checks).

    Sizes bound the work: attributions are computed on a seeded sample of the audited rows, and
    every global figure carries a bootstrap interval over that sample.
    """

    # -- samples ------------------------------------------------------------------------------
    sample_size: int = Field(1000, ge=10, le=1_000_000)  # rows explained by SHAP
    background_size: int = Field(100, ge=10, le=10_000)  # background rows (masking, baselines)
    blackbox_sample_size: int = Field(100, ge=5, le=100_000)  # rows for the permutation explainer
    blackbox_permutations: int = Field(6, ge=1, le=1000)  # feature orderings per row (model-agnostic SHAP)
    tree_feature_perturbation: Literal["tree_path_dependent", "interventional"] = "tree_path_dependent"
    n_jobs: int = Field(2, ge=1, le=64)  # processes for large TreeSHAP runs (idle cores only)
    parallel_min_rows: int = Field(400, ge=100, le=10_000_000)  # split TreeSHAP over n_jobs from here
    n_bootstrap: int = Field(200, ge=20, le=10_000)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)
    # -- LIME ---------------------------------------------------------------------------------
    lime_sample_size: int = Field(25, ge=5, le=10_000)  # rows explained by LIME (twice: stability)
    lime_num_samples: int = Field(800, ge=100, le=100_000)  # perturbations per row
    lime_stability_min_spearman: float = Field(0.6, ge=-1, le=1)
    # -- permutation importance ---------------------------------------------------------------
    permutation_sample_size: int = Field(1000, ge=50, le=1_000_000)
    permutation_repeats: int = Field(5, ge=2, le=1000)
    # -- gradients (torch models) -------------------------------------------------------------
    gradient_sample_size: int = Field(200, ge=5, le=100_000)
    ig_n_steps: int = Field(50, ge=4, le=10_000)
    ig_max_convergence_delta: float = Field(0.05, ge=0, le=100)  # max |sum attributions - (f(x)-f(b))|
    gradient_shap_samples: int = Field(20, ge=1, le=10_000)
    infidelity_perturbations: int = Field(10, ge=1, le=1000)
    sensitivity_perturbations: int = Field(5, ge=1, le=1000)
    sensitivity_radius: float = Field(0.02, gt=0, le=10)
    # -- trust: additivity, agreement, faithfulness ---------------------------------------
    additivity_max_error: float = Field(1e-4, ge=0, le=1)
    agreement_min_spearman: float = Field(0.5, ge=-1, le=1)
    top_k: int = Field(5, ge=1, le=100)
    faithfulness_sample_size: int = Field(200, ge=5, le=100_000)
    faithfulness_random_orders: int = Field(4, ge=1, le=100)
    faithfulness_min_auc_gap: float = Field(0.0, ge=-1, le=1)
    # -- reliance on sensitive features and proxies -------------------------------------------
    sensitive_reliance_max_share: float = Field(0.10, ge=0, le=1)
    proxy_auc_min: float = Field(0.70, ge=0.5, le=1)
    proxy_sample_size: int = Field(5000, ge=100, le=1_000_000)
    proxy_allowed: tuple[str, ...] = Field((), max_length=1000)  # listed as proxies, not counted


class CausalPolicy(_Strict):
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


class PrivacyPolicy(_Strict):
    """Thresholds for the privacy family (issue: privacy checks).

    ``epsilon_tolerance`` is relative: a DP claim fails when an accountant's ε exceeds the claimed
    ε by more than this fraction. ``attack_auc_max`` bounds the best membership-inference attack's
    ROC AUC (its CI decides FAIL vs WARN). ``empirical_epsilon_max`` (optional) bounds the
    empirical ε lower bound even when no DP claim is made; ``empirical_delta`` is the δ used in
    that bound when there is no claim (a claim's own δ is used otherwise). ``max_rows`` caps the
    audited members + non-members (balanced). ``n_reference_models`` reference models feed the
    calibrated attack (0 switches it off).
    """

    epsilon_tolerance: float = Field(0.05, ge=0, le=10)
    attack_auc_max: float = Field(0.60, ge=0.5, le=1)
    empirical_epsilon_max: float | None = Field(None, ge=0)
    empirical_delta: float = Field(1e-5, gt=0, lt=1)
    max_rows: int = Field(20_000, ge=100, le=10_000_000)
    n_reference_models: int = Field(4, ge=0, le=64)
    min_group_size: int = Field(30, ge=1, le=1_000_000)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)


class Policy(_Strict):
    """Thresholds of every family, and ``max_groups``: the most groups (distinct values, missing
    counted as one) a sensitive feature may have. A column over it is refused at the boundary with
    a hint to bin it (``data.bin_sensitive``) or to raise the limit (``--max-groups``): per-group
    statistics over thousands of tiny groups are all noise and cost minutes."""

    max_groups: int = Field(50, ge=2, le=100_000)
    fairness: FairnessPolicy = FairnessPolicy()
    explain: ExplainPolicy = ExplainPolicy()
    causal: CausalPolicy = CausalPolicy()
    privacy: PrivacyPolicy = PrivacyPolicy()


class ModelSpec(_Strict):
    path: Path
    format: Literal["auto", "skops", "onnx", "torchscript", "pickle"] = "auto"
    trusted_types: tuple[str, ...] = ()


class DataSpec(_Strict):
    """The data of an audit and the roles of its columns.

    ``multiclass``: a target (or a model) with 3 or more classes is refused unless this is
    ``"one-vs-rest"``, which audits ``positive_label`` against all the other classes together
    (the report's ``inputs.target`` says so). ``bin_sensitive`` maps a numeric sensitive column to a
    number of quantile bins (cut points from the audited rows, applied to train and holdout too),
    e.g. ``bin_sensitive = {age = 4}`` for quartiles.
    """

    test: Path = Field(..., description="the audited rows")
    train: Path | None = None
    holdout: Path | None = None
    target: str = Field(..., min_length=1)
    positive_label: Scalar
    multiclass: Literal["refuse", "one-vs-rest"] = "refuse"
    sensitive: tuple[str, ...] = ()
    bin_sensitive: dict[str, int] = Field(default_factory=dict)
    features: tuple[str, ...] = ()
    na_values: tuple[str, ...] = ("?",)

    @model_validator(mode="before")
    @classmethod
    def _alias_data(cls, values: Any) -> Any:
        if isinstance(values, Mapping) and "data" in values:
            values = dict(values)
            if "test" in values:
                raise ValueError("give the audited rows as 'test' or 'data', not both")
            values["test"] = values.pop("data")
        return values

    @field_validator("sensitive", "features")
    @classmethod
    def _unique(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        _refuse_repeats(v)
        target = info.data.get("target")
        if target is not None and target in v:
            raise ValueError(f"names the target column {target!r}")
        return v

    @field_validator("bin_sensitive")
    @classmethod
    def _bins(cls, v: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        sensitive = info.data.get("sensitive", ())
        for col, bins in v.items():
            if col not in sensitive:
                shown = ", ".join(sensitive) or "none"
                raise ValueError(f"names {col!r}, which is not a sensitive column (sensitive: {shown})")
            if isinstance(bins, bool) or not 2 <= bins <= 100:
                raise ValueError(f"gives {col!r} {bins} bins; allowed: 2 to 100")
        return v


def _refuse_repeats(v: tuple[str, ...]) -> None:
    """O(n): the first name given twice."""
    seen: set[str] = set()
    for name in v:
        if name in seen:
            raise ValueError(f"names {name!r} twice")
        seen.add(name)


class DPClaim(_Strict):
    """A differential-privacy training claim shipped with a model or stated in the spec.

    DP-SGD with Poisson sampling: ``noise_multiplier`` σ, sampling rate q and a number of steps as
    Opacus runs them — ``sample_rate`` (steps = ``steps`` or ``ceil(epochs / q)``), or
    ``batch_size`` B and ``dataset_size`` N, where Opacus' ``DPDataLoader`` samples at
    q = 1 / ceil(N / B) and E ``epochs`` are ceil(E · ceil(N / B)) steps — and the claimed (ε, δ)
    under ``accountant``. Impossible values
    (q > 1, σ ≤ 0, δ outside (0, 1), a batch larger than the data set) are refused here.
    In a spec file::

        [privacy.dp_claim]
        epsilon = 3.0
        delta = 1e-5
        noise_multiplier = 1.1
        batch_size = 256          # or sample_rate = 0.0075
        dataset_size = 34189
        epochs = 5                # or steps = 670
        accountant = "prv"        # rdp (default), prv or gdp
    """

    epsilon: float = Field(..., gt=0, allow_inf_nan=False)
    delta: float = Field(..., gt=0, lt=1)
    noise_multiplier: float = Field(..., gt=0, allow_inf_nan=False)
    sample_rate: float | None = Field(None, gt=0, le=1)
    batch_size: int | None = Field(None, ge=1)
    dataset_size: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0, allow_inf_nan=False)
    accountant: Literal["rdp", "prv", "gdp"] = "rdp"
    max_grad_norm: float | None = Field(None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _complete(self) -> DPClaim:
        if self.sample_rate is None and (self.batch_size is None or self.dataset_size is None):
            raise ValueError("needs 'sample_rate', or both 'batch_size' and 'dataset_size'")
        if (
            self.batch_size is not None
            and self.dataset_size is not None
            and self.batch_size > self.dataset_size
        ):
            raise ValueError(
                f"'batch_size' ({self.batch_size}) cannot exceed 'dataset_size' ({self.dataset_size})"
            )
        if self.steps is None and self.epochs is None:
            raise ValueError("needs 'steps' or 'epochs'")
        return self

    @property
    def _batches_per_epoch(self) -> int:
        assert self.batch_size is not None and self.dataset_size is not None
        return -(-int(self.dataset_size) // int(self.batch_size))  # ceil(N / B), exact

    @property
    def effective_sample_rate(self) -> float:
        """q: ``sample_rate`` when given, else Opacus' ``1 / ceil(dataset_size / batch_size)``
        (not B / N: with N = 100 and B = 30 that is 0.3 where Opacus samples at 0.25)."""
        if self.sample_rate is not None:
            return float(self.sample_rate)
        return 1.0 / self._batches_per_epoch

    @property
    def effective_steps(self) -> int:
        """Steps: ``steps`` when given, else ``ceil(epochs / q)`` with a stated ``sample_rate`` and
        Opacus' ``ceil(epochs · ceil(N / B))`` with a batch size."""
        if self.steps is not None:
            return int(self.steps)
        assert self.epochs is not None
        if self.sample_rate is not None:
            return max(1, math.ceil(self.epochs / float(self.sample_rate) - 1e-9))
        return max(1, math.ceil(self.epochs * self._batches_per_epoch - 1e-9))


class PrivacySpec(_Strict):
    """Privacy inputs of an audit: an optional DP claim (wins over one in the model's metadata)."""

    dp_claim: DPClaim | None = None


class CausalSpec(_Strict):
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

    @model_validator(mode="after")
    def _one_graph(self) -> CausalSpec:
        if self.graph is not None and self.edges:
            raise ValueError("give the graph as 'graph' (DOT or GML) or as 'edges', not both")
        for name, values in (("latent", self.latent), ("mediators", self.mediators)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must be unique, got {list(values)}")
        return self


class AuditSpec(_Strict):
    model: ModelSpec
    data: DataSpec
    checks: tuple[str, ...] = FAMILIES
    seed: int = Field(0, ge=0, le=2**32 - 1)
    policy: Policy = Policy()
    causal: CausalSpec = CausalSpec()
    privacy: PrivacySpec = PrivacySpec()

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(f"must name at least one of {', '.join(FAMILIES)}")
        from audit.registry import unknown_selection  # registering the checks imports audit.checks

        problem = unknown_selection(v, families=FAMILIES)
        if problem:
            raise ValueError(problem)
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


#: Fields whose value is itself a mapping (shown after "got" in an error, unlike a whole section).
_MAPPING_FIELDS = frozenset({"bin_sensitive"})


def _format_validation_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    etype = err["type"]
    got = err.get("input")
    if etype == "extra_forbidden":
        return f"{source}: unknown key '{loc}'"
    if etype == "missing":
        return f"{source}: missing required field '{loc}'"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    allowed = msg[0].lower() + msg[1:] if msg else msg
    if not loc:
        return f"{source}: {allowed}"
    if isinstance(got, Mapping) and loc.rsplit(".", 1)[-1] not in _MAPPING_FIELDS:
        return f"{source}: field '{loc}' {allowed}"  # a whole section: the line names what is wrong
    return f"{source}: field '{loc}' {allowed} (got {got!r})"


def spec_from_mapping(
    raw: Mapping[str, Any], *, base_dir: Path | None = None, source: str = "spec"
) -> AuditSpec:
    """Validate a mapping (parsed TOML or CLI flags) into an AuditSpec; paths resolved."""
    try:
        spec = AuditSpec.model_validate(dict(raw))
    except ValidationError as exc:
        raise SpecError(_format_validation_error(exc, source)) from None
    if base_dir is not None:
        spec = _resolve_paths(spec, base_dir)
    return spec


def _resolve_paths(spec: AuditSpec, base: Path) -> AuditSpec:
    def r(p: Path | None) -> Path | None:
        if p is None:
            return None
        return p if p.is_absolute() else (base / p)

    data = spec.data.model_copy(
        update={"test": r(spec.data.test), "train": r(spec.data.train), "holdout": r(spec.data.holdout)}
    )
    model = spec.model.model_copy(update={"path": r(spec.model.path)})
    causal = spec.causal
    if causal.graph and _looks_like_path(causal.graph):
        causal = causal.model_copy(update={"graph": str(r(Path(causal.graph)))})
    return spec.model_copy(update={"data": data, "model": model, "causal": causal})


def _looks_like_path(text: str) -> bool:
    return "\n" not in text and "{" not in text and "[" not in text and Path(text).suffix in {
        ".dot",
        ".gv",
        ".gml",
        ".txt",
    }


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> AuditSpec:
    """Read a TOML spec file; ``overrides`` (nested, e.g. from CLI flags) win over the file."""
    from audit.io import _read_file  # the one reader of files: kinds, links and OS errors named

    p = Path(path)
    data = _read_file(p, "spec file", SpecError, MAX_SPEC_BYTES, "an audit spec is a short TOML file")
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"spec file {p} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"spec file {p} is not valid TOML: {exc}") from None
    if overrides:
        raw = _deep_merge(raw, overrides)
    return spec_from_mapping(raw, base_dir=p.resolve().parent, source=f"spec {p.name}")


def _deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out
