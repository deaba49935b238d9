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

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audit.exceptions import SpecError

__all__ = [
    "FAMILIES",
    "AuditSpec",
    "CausalPolicy",
    "CausalSpec",
    "DataSpec",
    "DPClaim",
    "ExplainPolicy",
    "FairnessPolicy",
    "ModelSpec",
    "Policy",
    "PrivacyPolicy",
    "PrivacySpec",
    "load_spec",
    "spec_from_mapping",
]

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


class ExplainPolicy(_Strict):
    """Thresholds for the explanation family (issue: explanation checks)."""

    sample_size: int = Field(1000, ge=10, le=1_000_000)
    background_size: int = Field(100, ge=10, le=10_000)
    lime_sample_size: int = Field(50, ge=5, le=10_000)
    additivity_max_error: float = Field(1e-4, ge=0, le=1)
    agreement_min_spearman: float = Field(0.5, ge=-1, le=1)
    top_k: int = Field(5, ge=1, le=100)
    lime_stability_min_spearman: float = Field(0.6, ge=-1, le=1)
    sensitive_reliance_max_share: float = Field(0.10, ge=0, le=1)
    proxy_auc_min: float = Field(0.70, ge=0.5, le=1)
    ig_max_convergence_delta: float = Field(0.05, ge=0)


class CausalPolicy(_Strict):
    """Thresholds for the causal family (issue: causal checks)."""

    total_effect_max: float = Field(0.10, ge=0, le=1)
    counterfactual_flip_rate_max: float = Field(0.05, ge=0, le=1)
    counterfactual_mean_abs_delta_max: float = Field(0.05, ge=0, le=1)
    direct_effect_max: float = Field(0.05, ge=0, le=1)
    sample_size: int = Field(2000, ge=50, le=1_000_000)
    n_bootstrap: int = Field(50, ge=0, le=10_000)
    refuter_simulations: int = Field(20, ge=1, le=10_000)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)


class PrivacyPolicy(_Strict):
    """Thresholds for the privacy family (issue: privacy checks)."""

    epsilon_tolerance: float = Field(0.05, ge=0, le=10)  # relative tolerance on a DP claim
    attack_auc_max: float = Field(0.60, ge=0.5, le=1)
    empirical_epsilon_max: float = Field(1.0, ge=0)
    max_rows: int = Field(20_000, ge=100, le=10_000_000)
    n_reference_models: int = Field(4, ge=1, le=64)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)


class Policy(_Strict):
    fairness: FairnessPolicy = FairnessPolicy()
    explain: ExplainPolicy = ExplainPolicy()
    causal: CausalPolicy = CausalPolicy()
    privacy: PrivacyPolicy = PrivacyPolicy()


class ModelSpec(_Strict):
    path: Path
    format: Literal["auto", "skops", "onnx", "torchscript", "pickle"] = "auto"
    trusted_types: tuple[str, ...] = ()


class DataSpec(_Strict):
    test: Path = Field(..., description="the audited rows")
    train: Path | None = None
    holdout: Path | None = None
    target: str = Field(..., min_length=1)
    positive_label: Scalar
    sensitive: tuple[str, ...] = ()
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

    @field_validator("sensitive")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"sensitive features must be unique, got {list(v)}")
        return v


class DPClaim(_Strict):
    """A differential-privacy training claim shipped with a model or stated in the spec."""

    epsilon: float = Field(..., gt=0)
    delta: float = Field(..., ge=0, lt=1)
    noise_multiplier: float = Field(..., gt=0)
    sample_rate: float | None = Field(None, gt=0, le=1)
    batch_size: int | None = Field(None, ge=1)
    dataset_size: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    accountant: str = "rdp"


class PrivacySpec(_Strict):
    dp_claim: DPClaim | None = None


class CausalSpec(_Strict):
    """The causal graph and the roles of its nodes (issue: causal checks)."""

    graph: str | None = None  # DOT or GML text, or a path to a .dot/.gv/.gml file
    edges: tuple[tuple[str, str], ...] = ()
    latent: tuple[str, ...] = ()
    treatment: str | None = None
    outcome: str | None = None
    mediators: tuple[str, ...] = ()


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
    def _known_families(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(f"must name at least one of {', '.join(FAMILIES)}")
        for name in v:
            family = name.split(".", 1)[0]
            if family not in FAMILIES:
                raise ValueError(
                    f"unknown check family {name!r}; allowed: {', '.join(FAMILIES)}"
                )
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


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
    return f"{source}: field '{loc}' {allowed} (got {got!r})" if loc else f"{source}: {allowed}"


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
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file not found: {p}")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
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
