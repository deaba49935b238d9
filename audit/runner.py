"""The runner: validate inputs once, build the AuditContext, run the applicable checks.

A check that raises becomes an ERROR result (the exception summarised and kept); the audit goes
on. A check that does not apply is SKIPPED with the sentence its predicate returned.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import json
import platform
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.context import AuditContext, DataSplit
from audit.exceptions import CheckNotApplicable, DataError, ModelOutputError, SpecError
from audit.io import LoadedModel, load_model, load_table, sha256_file
from audit.model import ModelAdapter, SklearnAdapter, check_proba
from audit.registry import CheckInfo, iter_checks, unknown_selection
from audit.results import AuditReport, CheckResult, ErrorInfo, Provenance, Verdict
from audit.spec import FAMILIES, AuditSpec, spec_from_mapping

__all__ = [
    "MISSING_GROUP",
    "ProgressCallback",
    "build_context",
    "context_from_frames",
    "library_versions",
    "run_audit",
    "run_checks",
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


def _validate_frame(
    frame: pd.DataFrame,
    role: str,
    source: str,
    spec: AuditSpec,
    *,
    need_two_classes: bool,
) -> tuple[np.ndarray, pd.DataFrame]:
    target = spec.data.target
    where = f"data file '{source}'" if source else f"{role} data"
    if target not in frame.columns:
        cols = ", ".join(map(str, frame.columns[:20]))
        raise DataError(f"target column '{target}' not found in {where} (columns: {cols})")
    for s in spec.data.sensitive:
        if s not in frame.columns:
            cols = ", ".join(map(str, frame.columns[:20]))
            raise DataError(f"sensitive column '{s}' not found in {where} (columns: {cols})")
        if s == target:
            raise DataError(f"sensitive column '{s}' is the target column")
    yraw = frame[target]
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
    sens = pd.DataFrame(index=frame.index)
    for s in spec.data.sensitive:
        col = frame[s]
        sens[s] = col.astype(str).where(col.notna(), MISSING_GROUP)
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
        missing = [c for c in names if c not in X.columns]
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
) -> DataSplit:
    where = f"data file '{source}'" if source else f"{role} data"
    y, sens = _validate_frame(frame, role, source, spec, need_two_classes=(role == "test"))
    X = _feature_frame(frame, adapter, spec, where)
    try:
        proba = adapter.predict_proba(X)
    except (ModelOutputError, DataError):
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


def _validate_model_metadata(adapter: ModelAdapter) -> None:
    """A DP claim shipped in a model's metadata, and the conditions it was trained under, are
    validated like a claim given in the spec: malformed metadata is bad input (exit 2)."""
    meta = adapter.metadata or {}
    claim = meta.get("dp_claim")
    if claim is None:
        return
    from pydantic import ValidationError

    from audit.exceptions import ConfigError
    from audit.privacy.accounting import ClaimConditions
    from audit.spec import DPClaim, _format_validation_error

    try:
        DPClaim.model_validate(json.loads(claim) if isinstance(claim, str) else claim)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, "model metadata dp_claim")) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"model metadata dp_claim: not valid JSON ({exc.msg})") from None
    conditions = meta.get("dp_conditions")
    try:
        ClaimConditions.from_mapping(json.loads(conditions) if isinstance(conditions, str) else conditions)
    except ValueError as exc:  # JSONDecodeError is a ValueError too
        raise ConfigError(f"model metadata dp_conditions: {exc}") from None


def _as_adapter(model: Any, spec: AuditSpec | None = None) -> ModelAdapter:
    if isinstance(model, LoadedModel):
        return model.adapter
    if hasattr(model, "predict_proba") and hasattr(model, "kind") and hasattr(model, "select"):
        return model  # already an adapter
    feats = tuple(spec.data.features) if spec is not None and spec.data.features else None
    return SklearnAdapter(model, feats)


def build_context(
    spec: AuditSpec,
    *,
    model: Any = None,
    frames: Mapping[str, pd.DataFrame] | None = None,
    allow_unsafe_pickle: bool = False,
    extras: Mapping[str, Any] | None = None,
) -> tuple[AuditContext, dict[str, Any]]:
    """Load (unless given) and validate model and data; returns the context and input provenance."""
    inputs: dict[str, Any] = {}
    if model is None:
        loaded = load_model(
            spec.model.path,
            format=spec.model.format,
            trusted_types=spec.model.trusted_types,
            allow_unsafe_pickle=allow_unsafe_pickle,
            feature_names=tuple(spec.data.features) or None,
        )
        inputs["model"] = loaded.info()
        adapter = loaded.adapter
    else:
        adapter = _as_adapter(model, spec)
        if isinstance(model, LoadedModel):
            inputs["model"] = model.info()
        else:
            inputs["model"] = {"path": "<in memory>", "kind": adapter.kind, "sha256": None}
    _validate_model_metadata(adapter)
    pos_idx = _positive_class_index(adapter, spec.data.positive_label)
    splits: dict[str, DataSplit | None] = {"test": None, "train": None, "holdout": None}
    files: dict[str, Any] = {}
    for role in ("test", "train", "holdout"):
        if frames is not None and role in frames and frames[role] is not None:
            frame = frames[role]
            splits[role] = _make_split(role, frame, adapter, spec, pos_idx)
            files[role] = {"path": "<in memory>", "sha256": None, "rows": len(frame), "columns": frame.shape[1]}
            continue
        path = getattr(spec.data, role)
        if path is None or (frames is not None and role == "test" and "test" in frames):
            continue
        frame = load_table(path, na_values=spec.data.na_values)
        sha = sha256_file(path)
        splits[role] = _make_split(role, frame, adapter, spec, pos_idx, source=str(path), sha=sha)
        files[role] = {"path": str(path), "sha256": sha, "rows": len(frame), "columns": frame.shape[1]}
    if splits["test"] is None:
        raise SpecError("no audited data: give it with --data or data.test")
    inputs["data"] = files
    test = splits["test"]
    assert test is not None
    _validate_causal_graph(spec, test)
    # the positive class is resolved here, once: checks read it from the context
    ctx = AuditContext(
        spec=spec,
        model=adapter,
        test=test,
        train=splits["train"],
        holdout=splits["holdout"],
        seed=spec.seed,
        extras=dict(extras or {}),
        positive_index=pos_idx,
    )
    return ctx, inputs


def _validate_causal_graph(spec: AuditSpec, test: DataSplit) -> None:
    """A causal graph in the spec is validated at the boundary: a bad graph is bad input (exit 2)."""
    if spec.causal.graph is None and not spec.causal.edges:
        return
    if not any(name.split(".", 1)[0] == "causal" for name in spec.checks):
        return
    import importlib.util

    if importlib.util.find_spec("causal") is None:
        return
    from causal import validate_causal_spec

    validate_causal_spec(spec.causal, test.frame.columns, sensitive=spec.data.sensitive, frame=test.frame)


def context_from_frames(
    model: Any,
    test: pd.DataFrame,
    *,
    target: str,
    positive_label: Any,
    sensitive: Sequence[str] = (),
    train: pd.DataFrame | None = None,
    holdout: pd.DataFrame | None = None,
    seed: int = 0,
    checks: Sequence[str] | None = None,
    policy: Mapping[str, Any] | None = None,
    causal: Mapping[str, Any] | None = None,
    privacy: Mapping[str, Any] | None = None,
    features: Sequence[str] = (),
    extras: Mapping[str, Any] | None = None,
) -> AuditContext:
    """An AuditContext from in-memory objects (the Python API and tests use this)."""
    raw: dict[str, Any] = {
        "model": {"path": "<in memory>"},
        "data": {
            "test": "<in memory>",
            "target": target,
            "positive_label": positive_label,
            "sensitive": list(sensitive),
            "features": list(features),
        },
        "seed": seed,
    }
    if checks is not None:
        raw["checks"] = list(checks)
    if policy:
        raw["policy"] = dict(policy)
    if causal:
        raw["causal"] = dict(causal)
    if privacy:
        raw["privacy"] = dict(privacy)
    spec = spec_from_mapping(raw)
    ctx, _ = build_context(
        spec, model=model, frames={"test": test, "train": train, "holdout": holdout}, extras=extras
    )
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


def run_check(info: CheckInfo, ctx: AuditContext) -> CheckResult:
    reason = info.skip_reason(ctx)
    if reason:
        return _skipped(info, ctx, reason)
    t0 = time.perf_counter()
    try:
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
) -> list[CheckResult]:
    if selection is not None:  # a selection beside the (validated) spec is validated here
        problem = unknown_selection(selection, families=FAMILIES)
        if problem:
            raise SpecError(f"selection: {problem} (got {list(selection)!r})")
    checks = iter_checks(selection if selection is not None else ctx.spec.checks)
    results = []
    for i, info in enumerate(checks):
        if progress:
            progress("start", info.check_id, i, len(checks))
        results.append(run_check(info, ctx))
        if progress:
            progress("done", info.check_id, i + 1, len(checks))
    return results


def run_audit(
    spec: AuditSpec | Mapping[str, Any] | str | Path,
    *,
    model: Any = None,
    frames: Mapping[str, pd.DataFrame] | None = None,
    allow_unsafe_pickle: bool = False,
    progress: ProgressCallback | None = None,
    extras: Mapping[str, Any] | None = None,
) -> AuditReport:
    """Run an audit: the same engine as ``trustaudit audit``.

    ``spec`` is an AuditSpec, a mapping of the same fields, or the path of a TOML spec file.
    """
    if isinstance(spec, (str, Path)):
        from audit.spec import load_spec

        spec = load_spec(spec)
    elif not isinstance(spec, AuditSpec):
        spec = spec_from_mapping(spec)
    t0 = time.perf_counter()
    ctx, inputs = build_context(
        spec, model=model, frames=frames, allow_unsafe_pickle=allow_unsafe_pickle, extras=extras
    )
    results = run_checks(ctx, progress=progress)
    model_info = dict(inputs.pop("model"))
    return AuditReport(
        audit_id=uuid.uuid4().hex,
        created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        results=tuple(results),
        spec=spec.to_dict(),
        inputs=inputs,
        model=model_info,
        environment={"versions": library_versions(), "platform": platform.platform()},
        seconds=time.perf_counter() - t0,
    )
