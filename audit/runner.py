"""The runner: validate inputs once, build the AuditContext, run the applicable checks.

A check that raises becomes an ERROR result (the exception summarised and kept); the audit goes
on. A check that does not apply is SKIPPED with the sentence its predicate returned.

Nothing audited is not a pass: when every selected check is SKIPPED, :func:`run_audit` raises
:class:`~audit.exceptions.NothingAuditedError` (a ``SpecError``, exit 2) naming the inputs that
would let them run; the all-SKIPPED report rides on the exception (``exc.report``). When some
checks ran, the skipped ones stay SKIPPED in the report and ``report.exit_code()`` is decided
by the ones that ran.

Validation at the boundary also refuses (exit 2, one line): a target or a model with 3 or more
classes unless ``data.multiclass = "one-vs-rest"`` (then ``inputs.target`` in the report says
which classes were counted negative); a sensitive column with more groups than
``policy.max_groups`` (checked on the distinct values before any per-group work; numeric columns
can be cut into quantile bins with ``data.bin_sensitive``, recorded in ``inputs.sensitive_bins``).
Nothing here is quadratic in the number of columns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib.metadata
import itertools
import json
import os
import platform
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from audit.context import AuditContext, DataSplit, ResolvedClaim
from audit.exceptions import CheckNotApplicable, DataError, ModelOutputError, NothingAuditedError, SpecError
from audit.io import LoadedModel, load_model, load_table, sha256_file
from audit.model import ModelAdapter, SklearnAdapter, check_proba
from audit.registry import CheckInfo, family_names, iter_checks, prepare_families, unknown_selection
from audit.results import AuditReport, CheckResult, ErrorInfo, Provenance, Verdict
from audit.spec import AuditSpec, SpecFile, spec_from_mapping

__all__ = [
    "MISSING_GROUP",
    "DataInput",
    "ProgressCallback",
    "build_context",
    "context_from_frames",
    "library_versions",
    "make_spec",
    "nothing_audited_message",
    "run_audit",
    "run_audit_isolated",
    "run_checks",
    "run_spec",
]

MISSING_GROUP = "<missing>"
ProgressCallback = Callable[[str, str, int, int], None]  # (event, check_id, index, total)

_LIBS = (
    "trustaudit",
    "numpy",
    "pandas",
    "scikit-learn",
    "fairlearn",
    "shap",
    "lime",
    "captum",
    "torch",
    "opacus",
    "dowhy",
    "flwr",
    "skops",
    "onnxruntime",
)
_VERSIONS: dict[str, str] | None = None


def library_versions() -> dict[str, str]:
    global _VERSIONS
    if _VERSIONS is None:
        out = {"python": platform.python_version()}
        for lib in _LIBS:
            try:
                out[lib] = importlib.metadata.version(lib)
            except importlib.metadata.PackageNotFoundError:
                pass
        _VERSIONS = out
    return dict(_VERSIONS)


# --- validation at the boundary -------------------------------------------------------------


def _label_matches(values: pd.Series, label: Any) -> np.ndarray:
    """Which values equal the positive label, tolerant of '1' vs 1 and 'True' vs True."""
    s = values.astype(str).str.strip()
    if isinstance(label, bool):
        return s.str.lower().isin([str(label).lower(), str(int(label))]).to_numpy()
    target = str(label).strip()
    hit = (s == target).to_numpy()
    if not hit.any():
        try:
            num = float(target)
        except ValueError:
            return hit
        as_num = pd.to_numeric(values, errors="coerce")
        hit = (as_num == num).to_numpy()
    return hit


def _positive_class_index(adapter: ModelAdapter, label: Any) -> int:
    classes = pd.Series(list(adapter.classes_))
    hits = np.flatnonzero(_label_matches(classes, label))
    if len(hits) != 1:
        shown = ", ".join(str(c) for c in adapter.classes_)
        raise DataError(
            f"positive label {label!r} is not among the model's classes ({shown})"
        )
    return int(hits[0])


def _shown(values: Sequence[Any], limit: int = 10) -> str:
    head = ", ".join(str(v) for v in values[:limit])
    return head + (f", ... ({len(values)} in all)" if len(values) > limit else "")


_MULTICLASS_HINT = (
    "the audit needs a binary outcome: pass --multiclass one-vs-rest "
    '(data.multiclass = "one-vs-rest") to audit positive label {label!r} against the other classes'
)


def _refuse_multiclass(what: str, classes: Sequence[Any], spec: AuditSpec) -> None:
    if len(classes) > 2 and spec.data.multiclass != "one-vs-rest":
        raise DataError(
            f"{what} has {len(classes)} classes ({_shown(classes)}); "
            + _MULTICLASS_HINT.format(label=spec.data.positive_label)
        )


def _bin_edges(col: pd.Series, bins: int, name: str, where: str) -> np.ndarray:
    """Inner cut points of ``bins`` quantile bins of a numeric column (ties merge bins)."""
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise DataError(
            f"data.bin_sensitive: sensitive column '{name}' in {where} is not numeric ({col.dtype}); "
            "only numeric columns can be cut into quantile bins"
        )
    values = col.to_numpy(dtype=float, na_value=np.nan)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise DataError(f"data.bin_sensitive: sensitive column '{name}' in {where} has no finite values")
    qs = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1], method="linear")
    return np.unique(qs)


def _bin_labels(edges: np.ndarray) -> list[str]:
    if edges.size == 0:
        return ["all values"]
    e = [f"{x:.6g}" for x in edges]
    return [f"< {e[0]}", *(f"[{a}, {b})" for a, b in itertools.pairwise(e)), f">= {e[-1]}"]


def _apply_bins(col: pd.Series, edges: np.ndarray) -> pd.Series:
    labels = np.asarray(_bin_labels(edges), dtype=object)
    values = col.to_numpy(dtype=float, na_value=np.nan)
    idx = np.searchsorted(edges, values, side="right")
    out = pd.Series(labels[np.minimum(idx, len(labels) - 1)], index=col.index, dtype=object)
    return out.where(~np.isnan(values), MISSING_GROUP)


def _group_limit_message(name: str, where: str, n: int, limit: int, numeric: bool) -> str:
    hint = (
        f"or cut it into quantile bins: --bin-sensitive {name}=4 (data.bin_sensitive = {{{name} = 4}})"
        if numeric
        else "or merge its values into fewer groups"
    )
    return (
        f"sensitive column '{name}' in {where} has {n} distinct values; the limit is {limit} groups per "
        f"sensitive feature: raise it with --max-groups (policy.max_groups) {hint}"
    )


def _validate_frame(
    frame: pd.DataFrame,
    role: str,
    source: str,
    spec: AuditSpec,
    *,
    need_two_classes: bool,
    bins: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """(0/1 target, sensitive groups as strings) of one split. ``bins``: cut points of binned
    sensitive columns, computed from the first (audited) split and filled in here."""
    target = spec.data.target
    where = f"data file '{source}'" if source else f"{role} data"
    columns = frame.columns
    if target not in columns:
        cols = ", ".join(map(str, columns[:20]))
        raise DataError(f"target column '{target}' not found in {where} (columns: {cols})")
    for s in spec.data.sensitive:
        if s not in columns:
            cols = ", ".join(map(str, columns[:20]))
            raise DataError(f"sensitive column '{s}' not found in {where} (columns: {cols})")
    yraw = frame[target]
    if isinstance(yraw, pd.DataFrame):  # a frame given in memory with the name twice
        raise DataError(f"target column '{target}' appears {yraw.shape[1]} times in {where}")
    n_nan = int(yraw.isna().sum())
    if n_nan:
        raise DataError(f"target column '{target}' in {where} has {n_nan} missing value(s)")
    hit = _label_matches(yraw, spec.data.positive_label)
    values = sorted(map(str, yraw.astype(str).unique()))
    if not hit.any():
        shown = ", ".join(values[:10])
        raise DataError(
            f"positive label {spec.data.positive_label!r} is not among the values of target "
            f"'{target}' in {where} (values: {shown})"
        )
    if need_two_classes and len(values) < 2:
        raise DataError(
            f"target column '{target}' in {where} has a single class ({values[0]}); "
            "an audit needs both outcomes"
        )
    _refuse_multiclass(f"target column '{target}' in {where}", values, spec)
    bins = {} if bins is None else bins
    limit = spec.policy.max_groups
    sens = pd.DataFrame(index=frame.index)
    for s in spec.data.sensitive:
        col = frame[s]
        if isinstance(col, pd.DataFrame):
            raise DataError(f"sensitive column '{s}' appears {col.shape[1]} times in {where}")
        if s in spec.data.bin_sensitive:
            if s not in bins:
                bins[s] = _bin_edges(col, spec.data.bin_sensitive[s], s, where)
            groups = _apply_bins(col, bins[s])
        else:
            # the limit is checked on the raw distinct values, before any per-group work
            n_groups = int(col.nunique(dropna=True)) + int(bool(col.isna().any()))
            if n_groups > limit:
                numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
                raise DataError(_group_limit_message(s, where, n_groups, limit, numeric))
            groups = col.astype(str).where(col.notna(), MISSING_GROUP)
        sens[s] = groups
        if need_two_classes and sens[s].nunique() < 2:
            raise DataError(
                f"sensitive column '{s}' in {where} has a single group ({sens[s].iloc[0]}); "
                "fairness needs at least two"
            )
    return hit.astype(np.int8), sens.reset_index(drop=True)


def _feature_frame(frame: pd.DataFrame, adapter: ModelAdapter, spec: AuditSpec, where: str) -> pd.DataFrame:
    X = frame.drop(columns=[spec.data.target])
    names = adapter.feature_names or (tuple(spec.data.features) or None)
    if names is not None:
        present = set(X.columns)  # O(columns): one hash set, not a scan per name
        missing = [c for c in names if c not in present]
        if missing:
            raise DataError(
                f"model expects columns the data lacks: {', '.join(missing)} (in {where})"
            )
        return X.loc[:, list(names)].reset_index(drop=True)
    return X.reset_index(drop=True)


def _make_split(
    role: str,
    frame: pd.DataFrame,
    adapter: ModelAdapter,
    spec: AuditSpec,
    pos_idx: int,
    source: str = "",
    sha: str = "",
    bins: dict[str, np.ndarray] | None = None,
) -> DataSplit:
    where = f"data file '{source}'" if source else f"{role} data"
    y, sens = _validate_frame(frame, role, source, spec, need_two_classes=(role == "test"), bins=bins)
    X = _feature_frame(frame, adapter, spec, where)
    try:
        proba = adapter.predict_proba(X)
    except (ModelOutputError, DataError, MemoryError):  # out of memory is reported as such
        raise
    except Exception as exc:  # noqa: BLE001 - a model may raise anything on bad input
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelOutputError(f"model failed to predict on the {role} data: {msg}") from None
    proba = check_proba(proba, len(X), len(adapter.classes_))
    scores = proba[:, pos_idx]
    y_pred = (np.argmax(proba, axis=1) == pos_idx).astype(np.int8)
    return DataSplit(
        role=role,
        frame=frame.reset_index(drop=True),
        X=X,
        y=y,
        sensitive=sens,
        scores=scores,
        y_pred=y_pred,
        source=source,
        sha256=sha,
    )


def _resolve_dp_claim(spec: AuditSpec, adapter: ModelAdapter) -> ResolvedClaim | None:
    """The DP claim to verify, validated at the boundary: the spec's wins over one shipped in the
    model's metadata (a mapping, or JSON text as ONNX stores it); the conditions the model's run
    recorded (``dp_conditions``, and condition keys inside its ``dp_claim``) apply to either.
    Malformed metadata is bad input (exit 2), like a malformed claim in the spec."""
    from pydantic import ValidationError

    from audit.exceptions import ConfigError
    from audit.privacy.accounting import CONDITION_KEYS, ClaimConditions
    from audit.spec import DPClaim, _format_validation_error

    meta = adapter.metadata or {}

    def parsed(key: str) -> Any:
        raw = meta.get(key)
        if isinstance(raw, str):
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"model metadata {key}: not valid JSON ({exc.msg})") from None
        return raw

    raw_claim = parsed("dp_claim")
    if raw_claim is not None and not isinstance(raw_claim, Mapping):
        raise ConfigError(f"model metadata dp_claim: must be a mapping, got {type(raw_claim).__name__}")
    meta_claim = None
    if raw_claim is not None:
        try:
            meta_claim = DPClaim.model_validate({k: v for k, v in raw_claim.items() if k not in CONDITION_KEYS})
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(exc, "model metadata dp_claim")) from None
    merged = {k: v for k, v in (raw_claim or {}).items() if k in CONDITION_KEYS}
    raw_conditions = parsed("dp_conditions")
    try:
        if raw_conditions is not None and not isinstance(raw_conditions, Mapping):
            raise ValueError(f"dp_conditions must be a mapping, got {type(raw_conditions).__name__}")
        merged.update(raw_conditions or {})
        conditions = ClaimConditions.from_mapping(merged)
    except ValueError as exc:
        raise ConfigError(f"model metadata dp_conditions: {exc}") from None
    if spec.privacy.dp_claim is not None:
        return ResolvedClaim(spec.privacy.dp_claim, "spec", conditions)
    if meta_claim is not None:
        return ResolvedClaim(meta_claim, "model metadata", conditions)
    return None


def _as_adapter(model: Any, spec: AuditSpec | None = None) -> ModelAdapter:
    if isinstance(model, LoadedModel):
        return model.adapter
    if hasattr(model, "predict_proba") and hasattr(model, "kind") and hasattr(model, "select"):
        return model  # already an adapter
    feats = tuple(spec.data.features) if spec is not None and spec.data.features else None
    return SklearnAdapter(model, feats)


#: what run_audit accepts for a split: a DataFrame, or the path of a CSV / Parquet file
DataInput: TypeAlias = pd.DataFrame | str | Path


def _load_split(value: DataInput, role: str, na_values: Sequence[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A split as given (a DataFrame) or read from its file (the path and its SHA-256 recorded)."""
    if isinstance(value, pd.DataFrame):
        return value, {"path": None, "source": "in memory", "sha256": None, "rows": len(value),
                       "columns": value.shape[1]}
    if isinstance(value, (str, Path)):
        frame = load_table(value, na_values=tuple(na_values))
        return frame, {"path": str(value), "source": "file", "sha256": sha256_file(value), "rows": len(frame),
                       "columns": frame.shape[1]}
    raise SpecError(f"{role} data: give a pandas DataFrame or the path of a CSV or Parquet file, "
                    f"got {type(value).__name__}")


def _model_input(model: Any, spec: AuditSpec, allow_unsafe_pickle: bool) -> tuple[ModelAdapter, dict[str, Any]]:
    """The model as given (a fitted estimator, an adapter, a loaded model file) or loaded from its
    path with the safe intake (``audit.io.load_model``); and what the report records about it."""
    if isinstance(model, (str, Path)):
        model = load_model(model, allow_unsafe_pickle=allow_unsafe_pickle,
                           feature_names=tuple(spec.data.features) or None)
    if model is None:
        raise SpecError("no model: give a fitted model, a loaded model or the path of a model file")
    adapter = _as_adapter(model, spec)
    if isinstance(model, LoadedModel):
        return adapter, model.info()
    return adapter, {"path": None, "source": "in memory", "kind": adapter.kind, "sha256": None,
                     "type": f"{type(model).__module__}.{type(model).__qualname__}"}


def build_context(
    spec: AuditSpec,
    model: Any,
    data: Mapping[str, DataInput | None],
    *,
    na_values: Sequence[str] = ("?",),
    allow_unsafe_pickle: bool = False,
) -> tuple[AuditContext, dict[str, Any]]:
    """Validate model and data against the spec (reading the files given as paths) and build the
    context every check receives; returns it with the input provenance the report records.

    ``data`` maps "test" (required), "train" and "holdout" to DataFrames or file paths.
    Everything learned here is put on the context, typed: the positive class's column, the checks
    that will run, the DP claim, and what each selected family's ``prepare`` hook validated.
    """
    adapter, model_info = _model_input(model, spec, allow_unsafe_pickle)
    inputs: dict[str, Any] = {"model": model_info}
    dp_claim = _resolve_dp_claim(spec, adapter)
    _refuse_multiclass("the model", list(adapter.classes_), spec)
    pos_idx = _positive_class_index(adapter, spec.data.positive_label)
    splits: dict[str, DataSplit | None] = {"test": None, "train": None, "holdout": None}
    files: dict[str, Any] = {}
    bins: dict[str, np.ndarray] = {}  # cut points of binned sensitive columns, from the test split
    classes: dict[str, list[str]] = {}
    if data.get("test") is None:
        raise SpecError("no audited data: give it with --data or data.test (Python: the test DataFrame)")
    for role in ("test", "train", "holdout"):
        value = data.get(role)
        if value is None:
            continue
        frame, info = _load_split(value, role, na_values)
        source = info["path"] or ""
        splits[role] = _make_split(role, frame, adapter, spec, pos_idx, source=source, sha=info["sha256"] or "",
                                   bins=bins)
        files[role] = info
        classes[role] = sorted(map(str, frame[spec.data.target].astype(str).unique()))
    inputs["data"] = files
    inputs["target"] = _target_provenance(spec, adapter, pos_idx, classes)
    if bins:
        inputs["sensitive_bins"] = {
            name: {"bins_asked": spec.data.bin_sensitive[name], "bins": len(edges) + 1,
                   "cut_points": [float(x) for x in edges], "groups": _bin_labels(edges),
                   "method": "quantiles of the audited rows; values outside them fall in the outer bins"}
            for name, edges in sorted(bins.items())
        }
    test = splits["test"]
    assert test is not None
    checks = iter_checks(spec.checks)
    prepared = prepare_families(spec, test, {c.family for c in checks})
    ctx = AuditContext(
        spec=spec,
        model=adapter,
        test=test,
        train=splits["train"],
        holdout=splits["holdout"],
        seed=spec.seed,
        positive_index=pos_idx,
        checks=tuple(c.check_id for c in checks),
        dp_claim=dp_claim,
        prepared=MappingProxyType(prepared),
        cores=os.cpu_count() or 1,
    )
    return ctx, inputs


def _target_provenance(
    spec: AuditSpec, adapter: ModelAdapter, pos_idx: int, classes: Mapping[str, list[str]]
) -> dict[str, Any]:
    """How the target became 0/1: binary as given, or one-vs-rest (which classes were negative)."""
    positive = str(adapter.classes_[pos_idx])
    every = sorted({c for values in classes.values() for c in values} | {str(c) for c in adapter.classes_})
    out: dict[str, Any] = {
        "column": spec.data.target,
        "positive_label": spec.data.positive_label,
        "model_classes": [str(c) for c in adapter.classes_],
        "data_classes": {role: list(values) for role, values in classes.items()},
        "binarisation": "binary",
    }
    if len(every) > 2 or len(adapter.classes_) > 2:
        negative = [c for c in every if c != positive and not _label_matches(pd.Series([c]), spec.data.positive_label)[0]]
        out["binarisation"] = "one-vs-rest"
        out["negative_classes"] = negative
        out["note"] = (f"positive label {spec.data.positive_label!r} audited against the other "
                       f"{len(negative)} classes together ({', '.join(negative)}), as asked by data.multiclass")
    return out


def make_spec(
    spec: AuditSpec | Mapping[str, Any] | str | Path | None = None,
    *,
    target: str | None = None,
    positive_label: Any = None,
    sensitive: Sequence[str] | None = None,
    features: Sequence[str] | None = None,
    multiclass: str | None = None,
    bin_sensitive: Mapping[str, int] | None = None,
    checks: Sequence[str] | str | None = None,
    seed: int | None = None,
    policy: Mapping[str, Any] | None = None,
    **sections: Mapping[str, Any] | None,
) -> AuditSpec:
    """One AuditSpec from a base (an AuditSpec, a mapping, a spec file's path, or nothing) and
    keyword arguments, which win over the base (``policy`` and the sections merge key by key).
    ``sections`` are the families' spec tables (``causal={...}``) and ``privacy``."""
    if isinstance(spec, (str, Path)):
        from audit.spec import load_spec

        spec = load_spec(spec)
    raw: dict[str, Any] = spec.to_dict() if isinstance(spec, AuditSpec) else dict(spec or {})
    data = dict(raw.get("data") or {})
    for key, value in (("target", target), ("positive_label", positive_label), ("multiclass", multiclass)):
        if value is not None:
            data[key] = value
    for key, seq in (("sensitive", sensitive), ("features", features)):
        if seq is not None:
            data[key] = [seq] if isinstance(seq, str) else list(seq)
    if bin_sensitive is not None:
        data["bin_sensitive"] = dict(bin_sensitive)
    raw["data"] = data
    if checks is not None:
        raw["checks"] = [checks] if isinstance(checks, str) else list(checks)
    if seed is not None:
        raw["seed"] = seed
    from audit.spec import _deep_merge

    if policy:
        raw["policy"] = _deep_merge(dict(raw.get("policy") or {}), policy)
    for name, section in sections.items():
        if section:
            raw[name] = _deep_merge(dict(raw.get(name) or {}), section)
    if "positive_label" not in data or "target" not in data:
        missing = [k for k in ("target", "positive_label") if k not in data]
        raise SpecError(f"missing {' and '.join(missing)}: name the target column and its favourable value "
                        "(target=..., positive_label=...)")
    return spec_from_mapping(raw, source="spec")


def context_from_frames(
    model: Any,
    test: DataInput,
    *,
    train: DataInput | None = None,
    holdout: DataInput | None = None,
    spec: AuditSpec | Mapping[str, Any] | str | Path | None = None,
    **kwargs: Any,
) -> AuditContext:
    """The AuditContext :func:`run_audit` would build (tests and notebooks that run single checks)."""
    ctx, _ = build_context(make_spec(spec, **kwargs), model, {"test": test, "train": train, "holdout": holdout})
    return ctx


# --- running checks -------------------------------------------------------------------------


def _finish(result: CheckResult, info: CheckInfo, ctx: AuditContext, seconds: float) -> CheckResult:
    if not isinstance(result, CheckResult):
        raise TypeError(f"check {info.check_id} returned {type(result).__name__}, not CheckResult")
    prov = result.provenance
    versions = dict(prov.versions) or library_versions()
    prov = Provenance(
        params=prov.params,
        seed=ctx.seed if prov.seed is None else prov.seed,
        versions=versions,
        seconds=seconds,
    )
    return dataclasses.replace(result, check_id=info.check_id, family=info.family, provenance=prov)


def _skipped(info: CheckInfo, ctx: AuditContext, reason: str) -> CheckResult:
    return CheckResult(
        check_id=info.check_id,
        family=info.family,
        verdict=Verdict.SKIPPED,
        summary=f"Skipped: {reason}",
        provenance=Provenance(seed=ctx.seed, versions=library_versions()),
    )


@contextlib.contextmanager
def _global_rngs_seeded(seed: int) -> Iterator[None]:
    """Library code that draws from numpy's or Python's global generator (DoWhy's refuters, LIME's
    sampling) gets a state derived from the audit seed and the check id, and the caller's states
    are restored after: a check's figures do not depend on which checks ran before it, or in which
    lane."""
    import random

    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed % (2**32))
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def run_check(info: CheckInfo, ctx: AuditContext) -> CheckResult:
    reason = info.skip_reason(ctx)
    if reason:
        return _skipped(info, ctx, reason)
    t0 = time.perf_counter()
    try:
        with _global_rngs_seeded(ctx.seed_for(f"global-rng:{info.check_id}")):
            result = info.func(ctx)
        return _finish(result, info, ctx, time.perf_counter() - t0)
    except CheckNotApplicable as exc:
        return _skipped(info, ctx, str(exc))
    except Exception as exc:  # noqa: BLE001 - a failing check must not sink the audit
        msg = " ".join(str(exc).split())[:500] or type(exc).__name__
        return CheckResult(
            check_id=info.check_id,
            family=info.family,
            verdict=Verdict.ERROR,
            summary=f"The check could not run: {type(exc).__name__}: {msg}",
            provenance=Provenance(
                seed=ctx.seed, versions=library_versions(), seconds=time.perf_counter() - t0
            ),
            error=ErrorInfo(type(exc).__name__, msg, traceback.format_exc(limit=20)),
        )


def run_checks(
    ctx: AuditContext,
    selection: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    *,
    lanes: int | None = None,
) -> list[CheckResult]:
    """Run the selected checks (default: the context's) and return their results in registry order.

    Checks that share no intermediate run in separate lanes (``audit._lanes``): up to ``lanes``
    at once (default: what the cores allow), each lane a forked process with its share of the
    cores; results are the same as one after another (every stochastic step has its own seed)."""
    if selection is not None:  # a selection beside the (validated) spec is validated here
        problem = unknown_selection(selection, families=family_names())
        if problem:
            raise SpecError(f"selection: {problem} (got {list(selection)!r})")
    checks = iter_checks(selection if selection is not None else ctx.spec.checks)
    from audit._lanes import run_in_lanes

    return run_in_lanes(checks, ctx, run_check, progress=progress, lanes=lanes)


def run_audit(
    model: Any,
    data: DataInput | None = None,
    *,
    target: str | None = None,
    positive_label: Any = None,
    sensitive: Sequence[str] | None = None,
    train: DataInput | None = None,
    holdout: DataInput | None = None,
    checks: Sequence[str] | str | None = None,
    policy: Mapping[str, Any] | None = None,
    seed: int | None = None,
    features: Sequence[str] | None = None,
    multiclass: str | None = None,
    bin_sensitive: Mapping[str, int] | None = None,
    spec: AuditSpec | Mapping[str, Any] | str | Path | None = None,
    na_values: Sequence[str] = ("?",),
    allow_unsafe_pickle: bool = False,
    progress: ProgressCallback | None = None,
    lanes: int | None = None,
    **sections: Mapping[str, Any] | None,
) -> AuditReport:
    """Audit a model: the one call every door goes through (CLI, dashboard, federated hand-off).

        report = run_audit(pipe, test_df, target="income", positive_label=">50K",
                           sensitive=["sex", "race"], train=train_df, holdout=holdout_df,
                           checks=["fairness"], policy={"fairness": {"n_bootstrap": 500}})
        report.verdict, report.to_frame(), report.to_html()

    ``model`` is any fitted estimator with ``predict_proba`` and ``classes_`` (a scikit-learn
    Pipeline...), a loaded model (``audit.io.load_model``: skops, ONNX, TorchScript), or the path of
    a model file (loaded with the safe intake). ``data``, ``train`` and ``holdout`` are DataFrames
    or paths of CSV / Parquet files. What to audit and against which limits comes from ``spec``
    (an AuditSpec, a mapping, or a spec file's path) and the keyword arguments, which win over it;
    ``sections`` are the families' spec tables, e.g. ``causal={"edges": [...]}``, and ``privacy``.
    Bad input raises a ``TrustAuditError`` (``SpecError``, ``DataError``, ``ModelError``...) with
    one line; nothing audited (every check skipped) raises ``NothingAuditedError``.
    """
    audit_spec = make_spec(spec, target=target, positive_label=positive_label, sensitive=sensitive,
                           features=features, multiclass=multiclass, bin_sensitive=bin_sensitive, checks=checks,
                           seed=seed, policy=policy, **sections)
    t0 = time.perf_counter()
    ctx, inputs = build_context(audit_spec, model, {"test": data, "train": train, "holdout": holdout},
                                na_values=na_values, allow_unsafe_pickle=allow_unsafe_pickle)
    results = run_checks(ctx, progress=progress, lanes=lanes)
    model_info = dict(inputs.pop("model"))
    report = AuditReport(
        audit_id=uuid.uuid4().hex,
        created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        results=tuple(results),
        spec=audit_spec.to_dict(),
        inputs=inputs,
        model=model_info,
        environment={"versions": library_versions(), "platform": platform.platform()},
        seconds=time.perf_counter() - t0,
    )
    if results and all(r.verdict is Verdict.SKIPPED for r in results):
        raise NothingAuditedError(nothing_audited_message(results), report=report)
    return report


def run_spec(
    spec_file: SpecFile | str | Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    allow_unsafe_pickle: bool = False,
    progress: ProgressCallback | None = None,
    lanes: int | None = None,
) -> AuditReport:
    """The file door: a spec file (or a parsed :class:`~audit.spec.SpecFile`) names the model and
    data files; they are loaded with the safe intake and audited with :func:`run_audit`."""
    from audit.spec import load_spec_file

    sf = spec_file if isinstance(spec_file, SpecFile) else load_spec_file(spec_file, overrides)
    src = sf.sources
    if src.model is None:
        raise SpecError("no model: give it with --model or model.path")
    if src.data.test is None:
        raise SpecError("no audited data: give it with --data or data.test")
    loaded = load_model(src.model.path, format=src.model.format, trusted_types=src.model.trusted_types,
                        allow_unsafe_pickle=allow_unsafe_pickle,
                        feature_names=tuple(sf.spec.data.features) or None)
    return run_audit(loaded, src.data.test, train=src.data.train, holdout=src.data.holdout, spec=sf.spec,
                     na_values=src.data.na_values, allow_unsafe_pickle=allow_unsafe_pickle, progress=progress,
                     lanes=lanes)


def nothing_audited_message(results: Sequence[CheckResult]) -> str:
    """One line: every selected check was skipped, and what each group of them needs to run."""
    by_reason: dict[str, list[str]] = {}
    for r in results:
        reason = r.summary.removeprefix("Skipped: ").strip().rstrip(".")
        by_reason.setdefault(reason, []).append(r.check_id)
    parts = [f"{reason} ({', '.join(ids)})" for reason, ids in by_reason.items()]
    n = len(results)
    what = "the selected check was" if n == 1 else f"all {n} selected checks were"
    return f"nothing audited: {what} skipped; to run {'it' if n == 1 else 'them'}: " + "; ".join(parts)


def run_audit_isolated(
    model: Any,
    data: DataInput | None = None,
    *,
    progress: ProgressCallback | None = None,
    timeout: float | None = None,
    memory_bytes: int | str | None = "default",
    **kwargs: Any,
) -> AuditReport:
    """:func:`run_audit` in a forked child process (``audit._isolate``): a model that crashes,
    hangs or exhausts memory ends the child and raises a one-line ModelError here, so a server
    (the dashboard) survives it. ``memory_bytes`` is what the child may add ("default": 60 % of
    physical memory; None: no limit). Progress events cross the pipe; the report comes back as
    JSON (nothing is unpickled). Other arguments are :func:`run_audit`'s."""
    from audit._isolate import default_memory_limit, fork_safe_native_threads, run_isolated

    limit = default_memory_limit() if memory_bytes == "default" else memory_bytes
    out = run_isolated(
        _audit_dict, model, data, kwargs, what="audit", timeout=timeout,
        memory_bytes=limit if not isinstance(limit, str) else None, native_threads=fork_safe_native_threads(),
        on_message=(lambda m: progress(*m)) if progress is not None else None,
    )
    return AuditReport.from_dict(out)


def _audit_dict(model: Any, data: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    from audit._isolate import send_message

    report = run_audit(model, data, progress=lambda *event: send_message(list(event)), **kwargs)
    return report.to_dict()
