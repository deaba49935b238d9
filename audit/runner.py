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

import dataclasses
import datetime as _dt
import importlib.metadata
import itertools
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
from audit.exceptions import CheckNotApplicable, DataError, ModelOutputError, NothingAuditedError, SpecError
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
    "nothing_audited_message",
    "run_audit",
    "run_audit_isolated",
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
    _refuse_multiclass("the model", list(adapter.classes_), spec)
    pos_idx = _positive_class_index(adapter, spec.data.positive_label)
    splits: dict[str, DataSplit | None] = {"test": None, "train": None, "holdout": None}
    files: dict[str, Any] = {}
    bins: dict[str, np.ndarray] = {}  # cut points of binned sensitive columns, from the test split
    classes: dict[str, list[str]] = {}
    for role in ("test", "train", "holdout"):
        if frames is not None and role in frames and frames[role] is not None:
            frame = frames[role]
            splits[role] = _make_split(role, frame, adapter, spec, pos_idx, bins=bins)
            files[role] = {"path": "<in memory>", "sha256": None, "rows": len(frame), "columns": frame.shape[1]}
        else:
            path = getattr(spec.data, role)
            if path is None or (frames is not None and role == "test" and "test" in frames):
                continue
            frame = load_table(path, na_values=spec.data.na_values)
            sha = sha256_file(path)
            splits[role] = _make_split(role, frame, adapter, spec, pos_idx, source=str(path), sha=sha, bins=bins)
            files[role] = {"path": str(path), "sha256": sha, "rows": len(frame), "columns": frame.shape[1]}
        classes[role] = sorted(map(str, frame[spec.data.target].astype(str).unique()))
    if splits["test"] is None:
        raise SpecError("no audited data: give it with --data or data.test")
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
    _validate_causal_graph(spec, test)
    # the positive class is resolved here, once: checks read it from the context
    ctx = AuditContext(
        spec=spec,
        model=adapter,
        test=test,
        train=splits["train"],
        holdout=splits["holdout"],
        seed=spec.seed,
        positive_index=pos_idx,
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
        spec, model=model, frames={"test": test, "train": train, "holdout": holdout}
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
        spec, model=model, frames=frames, allow_unsafe_pickle=allow_unsafe_pickle
    )
    results = run_checks(ctx, progress=progress)
    model_info = dict(inputs.pop("model"))
    report = AuditReport(
        audit_id=uuid.uuid4().hex,
        created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        results=tuple(results),
        spec=spec.to_dict(),
        inputs=inputs,
        model=model_info,
        environment={"versions": library_versions(), "platform": platform.platform()},
        seconds=time.perf_counter() - t0,
    )
    if results and all(r.verdict is Verdict.SKIPPED for r in results):
        raise NothingAuditedError(nothing_audited_message(results), report=report)
    return report


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
    spec: AuditSpec | Mapping[str, Any] | str | Path,
    *,
    model: Any = None,
    frames: Mapping[str, pd.DataFrame | None] | None = None,
    allow_unsafe_pickle: bool = False,
    progress: ProgressCallback | None = None,
    timeout: float | None = None,
    memory_bytes: int | str | None = "default",
) -> AuditReport:
    """:func:`run_audit` in a forked child process (``audit._isolate``): a model that crashes,
    hangs or exhausts memory ends the child and raises a one-line ModelError here, so a server
    (the dashboard) survives it. ``memory_bytes`` is what the child may add ("default": 60 % of
    physical memory; None: no limit). Progress events cross the pipe; the report comes back as
    JSON (nothing is unpickled)."""
    from audit._isolate import default_memory_limit, fork_safe_native_threads, run_isolated

    limit = default_memory_limit() if memory_bytes == "default" else memory_bytes
    data = run_isolated(
        _audit_dict, spec, model, frames, allow_unsafe_pickle, what="audit", timeout=timeout,
        memory_bytes=limit if not isinstance(limit, str) else None, native_threads=fork_safe_native_threads(),
        on_message=(lambda m: progress(*m)) if progress is not None else None,
    )
    return AuditReport.from_dict(data)


def _audit_dict(spec: Any, model: Any, frames: Any, allow_unsafe_pickle: bool) -> dict[str, Any]:
    from audit._isolate import send_message

    report = run_audit(spec, model=model, frames=frames, allow_unsafe_pickle=allow_unsafe_pickle,
                       progress=lambda *event: send_message(list(event)))
    return report.to_dict()
