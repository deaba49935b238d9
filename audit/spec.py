"""The audit spec: what to audit and against which limits; and, apart, where the inputs come from.

Two models, because a notebook has objects where a CI job has files:

* :class:`AuditSpec` — *what* to audit and against which limits: the checks, the seed, the roles of
  the data's columns (target, positive label, sensitive features), the policy thresholds, the causal
  graph and the privacy claim. Every door takes one: ``audit.run_audit(model, test_df, target=...,
  ...)`` builds it from its arguments, the CLI from flags and a file.
* :class:`Sources` — *where* the inputs come from when they are files: the model file (and how to
  load it) and the data files (and how to read them). Only the file doors need it.

A spec file (``trustaudit audit --spec audit.toml``) holds both, in one TOML document;
:func:`load_spec_file` reads it into a :class:`SpecFile` (``.spec`` and ``.sources``). Everything is
validated once, here, with pydantic; every error names the field, what is allowed and what came,
in one line (``SpecError``). Paths in a spec file are relative to the spec file's folder.

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
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from audit.exceptions import SpecError

__all__ = [
    "MAX_SPEC_BYTES",
    "AuditSpec",
    "DPClaim",
    "DataSources",
    "DataSpec",
    "ModelSource",
    "Policy",
    "PolicyModel",
    "PrivacySpec",
    "Sources",
    "SpecFile",
    "load_spec",
    "load_spec_file",
    "parse_spec_file",
    "spec_from_mapping",
    "spec_model",
]

#: Largest spec file read (a spec is a few kilobytes; an edge list of a large graph stays far below).
MAX_SPEC_BYTES = 4 * 1024**2


Scalar = str | int | float | bool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


Fraction = float  # documented as 0..1 via Field(ge=0, le=1)


class PolicyModel(BaseModel):
    """Base of every family's policy (``[policy.<family>]``) and spec section (``[<family>]``):
    unknown keys refused, values frozen, defaults validated. A plugin's policy subclasses it."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Policy(_Strict):
    """``max_groups`` (the most groups — distinct values, missing counted as one — a sensitive
    feature may have; a column over it is refused at the boundary with a hint to bin it
    (``data.bin_sensitive``) or to raise the limit (``--max-groups``): per-group statistics over
    thousands of tiny groups are all noise and cost minutes), and one field per registered family
    that declares a policy model (``policy.fairness``, ``policy.explain``...; see
    ``audit.registry.register_family``)."""

    max_groups: int = Field(50, ge=2, le=100_000)

    if TYPE_CHECKING:  # the families' policies are fields of the model built from the registry

        def __getattr__(self, name: str) -> Any: ...


class ModelSource(_Strict):
    """Where the model comes from when it is a file, and how to load it safely."""

    path: Path
    format: Literal["auto", "skops", "onnx", "torchscript", "pickle"] = "auto"
    trusted_types: tuple[str, ...] = ()


class DataSources(_Strict):
    """Where the data come from when they are files: the audited rows (``test``, alias ``data``),
    optional training and holdout rows, and the strings read as missing values."""

    test: Path | None = Field(None, description="the audited rows")
    train: Path | None = None
    holdout: Path | None = None
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


class Sources(_Strict):
    """Where an audit's inputs come from when they are files (``[model]`` and the paths of ``[data]``
    in a spec file). ``None`` where the caller hands the object itself."""

    model: ModelSource | None = None
    data: DataSources = DataSources()


class DataSpec(_Strict):
    """The roles of the data's columns.

    ``multiclass``: a target (or a model) with 3 or more classes is refused unless this is
    ``"one-vs-rest"``, which audits ``positive_label`` against all the other classes together
    (the report's ``inputs.target`` says so). ``bin_sensitive`` maps a numeric sensitive column to a
    number of quantile bins (cut points from the audited rows, applied to train and holdout too),
    e.g. ``bin_sensitive = {age = 4}`` for quartiles.
    """

    target: str = Field(..., min_length=1)
    positive_label: Scalar
    multiclass: Literal["refuse", "one-vs-rest"] = "refuse"
    sensitive: tuple[str, ...] = ()
    bin_sensitive: dict[str, int] = Field(default_factory=dict)
    features: tuple[str, ...] = ()

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


class AuditSpec(_Strict):
    """What to audit and against which limits (no paths: see :class:`Sources`).

    The model validated is built from the registry (:func:`spec_model`): ``policy`` gets one field
    per family that declares a policy, and the spec one table per family that declares a section
    (``causal`` for the causal graph). ``privacy`` (a DP claim) belongs to the spine, because a
    model file may carry a claim whatever checks run.
    """

    data: DataSpec
    checks: tuple[str, ...] = Field(default_factory=lambda: _family_names())
    seed: int = Field(0, ge=0, le=2**32 - 1)
    policy: Policy = Policy()
    privacy: PrivacySpec = PrivacySpec()

    if TYPE_CHECKING:  # families' sections are fields of the model built from the registry

        def __getattr__(self, name: str) -> Any: ...

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        names = _family_names()
        if not v:
            raise ValueError(f"must name at least one of {', '.join(names)}")
        from audit.registry import unknown_selection  # registering the checks imports audit.checks

        problem = unknown_selection(v, families=names)
        if problem:
            raise ValueError(problem)
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _family_names() -> tuple[str, ...]:
    from audit.registry import family_names

    return family_names()


def spec_model() -> type[AuditSpec]:
    """The AuditSpec model of the registered families (built once per set of families).

    ``policy`` holds ``max_groups`` and each family's policy model; each family's section model is a
    top-level field. Instances are AuditSpec instances."""
    from audit.registry import _SPEC_MODEL_CACHE, families

    fams = families()
    key = ",".join(f.name for f in fams)
    cached = _SPEC_MODEL_CACHE.get(key)
    if cached is not None:
        return cast("type[AuditSpec]", cached)
    policy_fields: dict[str, Any] = {f.name: (f.policy, f.policy()) for f in fams if f.policy is not None}
    section_fields: dict[str, Any] = {f.name: (f.section, f.section()) for f in fams if f.section is not None}
    policy_model = create_model("Policy", __base__=Policy, **policy_fields)
    model = create_model("AuditSpec", __base__=AuditSpec, policy=(policy_model, policy_model()), **section_fields)
    _SPEC_MODEL_CACHE.clear()
    _SPEC_MODEL_CACHE[key] = model
    return model


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


#: keys of a spec file's [data] table that say where the data come from (the rest are roles)
_DATA_SOURCE_KEYS = ("test", "data", "train", "holdout", "na_values")


class SpecFile(_Strict):
    """A spec file's two parts: what to audit (``spec``) and where its inputs come from (``sources``)."""

    spec: AuditSpec
    sources: Sources = Sources()


def _split_document(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A spec document (the TOML shape) -> (the AuditSpec's fields, the Sources' fields)."""
    spec = dict(raw)
    sources: dict[str, Any] = {}
    if "model" in spec:
        sources["model"] = spec.pop("model")
    data = spec.get("data")
    if isinstance(data, Mapping):
        data = dict(data)
        moved = {k: data.pop(k) for k in _DATA_SOURCE_KEYS if k in data}
        if moved:
            sources["data"] = moved
        spec["data"] = data
    return spec, sources


def parse_spec_file(
    raw: Mapping[str, Any], *, base_dir: Path | None = None, source: str = "spec"
) -> SpecFile:
    """Validate a spec document (parsed TOML, or the same shape from flags) into its two parts;
    relative paths resolved against ``base_dir``."""
    spec_raw, sources_raw = _split_document(raw)
    try:
        spec = spec_model().model_validate(spec_raw)
        sources = Sources.model_validate(sources_raw)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(exc, source)) from None
    if base_dir is not None:
        sources = _resolve_paths(sources, base_dir)
        spec = _resolve_section_paths(spec, base_dir)
    return SpecFile(spec=spec, sources=sources)


def spec_from_mapping(
    raw: Mapping[str, Any], *, base_dir: Path | None = None, source: str = "spec"
) -> AuditSpec:
    """Validate a mapping of the AuditSpec's fields into an AuditSpec. A whole spec document is
    accepted too: its sources (model file, data paths) are validated and left aside (see
    :func:`parse_spec_file` to keep them)."""
    return parse_spec_file(raw, base_dir=base_dir, source=source).spec


def _resolve_paths(sources: Sources, base: Path) -> Sources:
    def r(p: Path | None) -> Path | None:
        if p is None:
            return None
        return p if p.is_absolute() else (base / p)

    d = sources.data
    data = d.model_copy(update={"test": r(d.test), "train": r(d.train), "holdout": r(d.holdout)})
    model = sources.model.model_copy(update={"path": r(sources.model.path)}) if sources.model else None
    return sources.model_copy(update={"data": data, "model": model})


def _resolve_section_paths(spec: AuditSpec, base: Path) -> AuditSpec:
    """A family's section may name files (a causal graph file): each section with a
    ``resolve_paths(base)`` method resolves its own relative paths against the spec file's folder."""
    update = {}
    for name in type(spec).model_fields:
        value = getattr(spec, name)
        resolve = getattr(value, "resolve_paths", None)
        if callable(resolve):
            update[name] = resolve(base)
    return spec.model_copy(update=update) if update else spec


def load_spec_file(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SpecFile:
    """Read a TOML spec file (both parts); ``overrides`` (nested, e.g. from CLI flags) win over it."""
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
    return parse_spec_file(raw, base_dir=p.resolve().parent, source=f"spec {p.name}")


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> AuditSpec:
    """What a TOML spec file says to audit (:func:`load_spec_file` for its sources too)."""
    return load_spec_file(path, overrides).spec


def _deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out
