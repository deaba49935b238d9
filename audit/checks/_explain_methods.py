"""The explanation methods, each computed once per audit and shared between checks.

``shared(ctx)`` holds what every method needs (the seeded row sample, the background rows, the
codec over the submitted columns, the SHAP view of the model). ``outcome(ctx, method)`` runs one
method once (the ``METHOD`` intermediate, keyed by method) and keeps its exception if it raised, so that the method's own check
reports ERROR while the checks that compare methods go on with those that ran.

Every method returns an ``Attribution``: per-feature global importances over the submitted
columns with bootstrap intervals, the per-row attributions when the method has them, and the
"units" whose mean is the global importance (rows for local methods, repeats for permutation
importance) so that agreement intervals can be bootstrapped the same way.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from audit._compat import shap as compat_shap
from audit.checks._explain_space import (
    FRAME_CHUNK,
    ModelView,
    RowMixer,
    TabularCodec,
    bit_ids,
    model_view,
    positive_index,
    unique_rows,
)
from audit.checks._explain_stats import spearman_rows, stratified_sample
from audit.context import Intermediate
from audit.stats import bootstrap_means, bootstrap_weights, percentile_interval

__all__ = [
    "METHODS",
    "METHOD_LABELS",
    "Attribution",
    "Outcome",
    "Shared",
    "compute_gradients",
    "compute_lime",
    "compute_permutation",
    "compute_shap",
    "outcome",
    "shared",
    "single_threaded",
]

METHOD_LABELS = {
    "shap": "SHAP",
    "lime": "LIME",
    "permutation": "permutation importance",
    "integrated_gradients": "Integrated Gradients",
    "gradient_shap": "GradientSHAP",
}
#: Methods in the order they are compared; gradient methods exist for torch models only.
METHODS = ("shap", "lime", "permutation", "gradients")


@dataclass(frozen=True)
class Attribution:
    """One method's attributions over the submitted columns (see the module docstring)."""

    method: str
    features: tuple[str, ...]
    importance: np.ndarray  # global importance per feature
    lo: np.ndarray
    hi: np.ndarray
    units: np.ndarray  # (units x features): importance = units.mean(0)
    boot: np.ndarray  # (n_boot x features) bootstrap draws of the importance
    local: np.ndarray | None = None  # (rows x features) signed attributions
    rows: np.ndarray | None = None  # positions in the audited data of the local rows
    base_values: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return METHOD_LABELS.get(self.method, self.method)


@dataclass(frozen=True)
class Outcome:
    """A method's result, or the exception it raised (kept, re-raised by its own check)."""

    value: Any = None
    error: BaseException | None = None

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


@dataclass
class Shared:
    columns: tuple[str, ...]
    pos: int
    rows: np.ndarray  # positions in ctx.test of the explained sample (seeded)
    X: pd.DataFrame  # those rows, model columns
    background: pd.DataFrame  # background sample (train when given, else test)
    background_role: str
    background_full: pd.DataFrame  # up to 20,000 rows of the background split
    view: ModelView
    predict_frame: Callable[[pd.DataFrame], np.ndarray]
    codec_frames: tuple[pd.DataFrame, ...] = ()
    categorical: list[str] | None = None
    _codec: TabularCodec | None = None

    @property
    def codec(self) -> TabularCodec:
        """Built on first use: exact TreeSHAP / linear SHAP never need it."""
        if self._codec is None:
            self._codec = TabularCodec.fit(list(self.codec_frames), self.categorical)
        return self._codec

    def predict_encoded(self, A: np.ndarray) -> np.ndarray:
        """Positive-class probability of encoded rows (decoded back into real rows first); rows
        repeated bit for bit (a masker's output repeats itself) are scored once, in large calls."""
        A = np.asarray(A, dtype=np.float64)
        if A.ndim == 1:
            A = A[None, :]
        first, inverse = unique_rows(bit_ids(A))
        return _in_chunks(lambda B: self.predict_frame(self.codec.decode(B)), A[first])[inverse]

    def mixer(self, sources: pd.DataFrame) -> RowMixer:
        """Scores rows assembled column by column from ``sources`` (see ``RowMixer``)."""
        return RowMixer(sources, self.predict_frame, self.view)


def _in_chunks(fn: Callable[[np.ndarray], np.ndarray], A: np.ndarray, chunk: int = FRAME_CHUNK) -> np.ndarray:
    """``fn`` over the rows of ``A`` in calls of at most ``chunk`` rows, the results stacked."""
    if len(A) <= chunk:
        return np.asarray(fn(A))
    return np.concatenate([np.asarray(fn(A[s : s + chunk])) for s in range(0, len(A), chunk)])


def shared(ctx: Any) -> Shared:
    return ctx.get(SHARED)


def _build_shared(ctx: Any) -> Shared:
    pol = ctx.policy.explain
    test = ctx.test
    columns = tuple(str(c) for c in test.X.columns)
    pos = positive_index(ctx)
    rows = stratified_sample(test.y, pol.sample_size, ctx.rng("explain.rows"))
    rng = ctx.rng("explain.rows.order")
    rows = rows[rng.permutation(len(rows))]  # random order: nested prefixes are random samples too
    X = test.X.iloc[rows].reset_index(drop=True)
    bsplit = ctx.train if ctx.train is not None else test
    brng = ctx.rng("explain.background")
    full_idx = np.sort(brng.choice(bsplit.n, size=min(bsplit.n, 20_000), replace=False))
    background_full = bsplit.X.iloc[full_idx].reset_index(drop=True)
    n_bg = min(len(background_full), pol.background_size)
    bidx = brng.choice(len(background_full), size=n_bg, replace=False)
    background = background_full.iloc[np.sort(bidx)].reset_index(drop=True)
    encoder = getattr(ctx.model, "encoder", None)
    categorical = (
        [c.name for c in encoder.columns if c.kind == "categorical"] if encoder is not None else None
    )
    probe = pd.concat([background.head(32), X.head(32)], ignore_index=True)
    view = model_view(ctx.model, columns, pos, probe, ctx.rng("explain.probe"))
    adapter = ctx.model

    def predict_frame(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(adapter.predict_proba(frame), dtype=np.float64)[:, pos]

    return Shared(
        columns, pos, rows, X, background, bsplit.role, background_full, view, predict_frame,
        codec_frames=(background_full, X, test.X), categorical=categorical,
    )


_CONTROLLER: tuple[int, Any] | None = None


def _threadpool_controller() -> Any:
    """threadpoolctl's view of the loaded native thread pools, rebuilt only when modules were imported.

    Building it walks every loaded shared library, which ``threadpool_limits`` would do on every
    call; new native pools arrive with new Python modules, so the number of imported modules keys
    the cache.
    """
    global _CONTROLLER
    from threadpoolctl import ThreadpoolController

    key = len(sys.modules)
    if _CONTROLLER is None or _CONTROLLER[0] != key:
        _CONTROLLER = (key, ThreadpoolController())
    return _CONTROLLER[1]


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Explanations call the model many times on small batches: one native thread per call is
    faster than OpenMP/BLAS start-up, and stays fast on a busy machine (no oversubscription)."""
    with _threadpool_controller().limit(limits=1):
        yield


def outcome(ctx: Any, method: str) -> Outcome:
    """Run ``method`` once per audit; keep its exception instead of raising it."""
    return ctx.get(METHOD, method)  # type: ignore[no-any-return]


def _compute_outcome(ctx: Any, method: str) -> Outcome:
    funcs = {
        "shap": compute_shap,
        "lime": compute_lime,
        "permutation": compute_permutation,
        "gradients": compute_gradients,
    }

    def run() -> Outcome:
        try:
            with single_threaded():
                return Outcome(value=funcs[method](ctx))
        except Exception as exc:  # noqa: BLE001 - kept and re-raised by the method's own check
            return Outcome(error=exc)

    return run()


#: the explained rows, background and model view every explanation method shares
SHARED: Intermediate[Shared] = Intermediate("explain.shared", _build_shared)
#: one attribution method's outcome (value or kept exception); key: the method's name
METHOD: Intermediate[Outcome] = Intermediate("explain.method", _compute_outcome, (SHARED,))


def _summarise(
    ctx: Any, units: np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Global importance = mean of units; percentile bootstrap over units."""
    pol = ctx.policy.explain
    imp = units.mean(0)
    boot = bootstrap_means(units, pol.n_bootstrap, ctx.rng(f"explain.boot.{name}"))
    lo, hi = percentile_interval(boot, pol.confidence_level)
    return imp, lo, hi, boot


@contextlib.contextmanager
def _numpy_global_seed(seed: int) -> Iterator[None]:
    """Some library code draws from numpy's global RNG: seed it, then restore the caller's state."""
    state = np.random.get_state()
    np.random.seed(seed % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)


# --- SHAP ---------------------------------------------------------------------------------


def _pick_class(values: Any, base: Any, pos: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """SHAP output for the positive class: (rows x columns) values and per-row base values.

    Per-class output (rows, columns, classes) -> the positive column; a single binary margin
    explains ``classes_[1]``, so it is negated when the positive label is ``classes_[0]``.
    """
    values = np.asarray(values, dtype=np.float64)
    base = np.asarray(base, dtype=np.float64).reshape(-1)
    if values.ndim == 3:
        values = values[:, :, pos]
        b = float(base[pos] if base.size > 1 else base[0])
    else:
        b = float(base[0])
        if pos == 0:
            values, b = -values, -b
    return values, np.full(n_rows, b)


def _free_cores(wanted: int) -> int:
    """Processes worth running: at most ``wanted``, and only on cores that are idle now (on a busy
    machine extra processes only add start-up cost). This process is itself part of the load
    average, so one unit of it is not counted as someone else's. The values do not depend on it."""
    cores = os.cpu_count() or 1
    try:
        busy = max(0.0, os.getloadavg()[0] - 1.0)
    except (AttributeError, OSError):  # pragma: no cover - platforms without a load average
        busy = 0.0
    return max(1, min(wanted, cores, int(cores - busy + 0.5)))


def _exact_shap(
    ctx: Any, sh: Shared, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, str]:
    """TreeSHAP / linear SHAP on the final estimator's input, summed back to input columns."""
    import shap

    pol = ctx.policy.explain
    view = sh.view
    p = len(sh.columns)
    assert view.transform is not None and view.raw_output is not None
    Z = view.transform(sh.X)
    if view.kind == "tree":
        fp = pol.tree_feature_perturbation
        bg = view.transform(sh.background) if fp == "interventional" else None
        # at most the cores this check's lane has (ctx.cores), and only idle ones
        n_jobs = _free_cores(min(pol.n_jobs, int(getattr(ctx, "cores", 1) or 1))) if len(Z) >= pol.parallel_min_rows else 1
        raw_values, expected, backend = compat_shap.tree_shap_values(view.final, fp, bg, Z, n_jobs)
        if backend == "serial":
            n_jobs = 1
        name = "TreeExplainer"
        why = (
            "exact TreeSHAP with tree_path_dependent perturbation: no background sample is needed "
            "(the trees' training cover stands in for it), the result has no sampling noise and it "
            "is the fastest exact algorithm"
            if fp == "tree_path_dependent"
            else "exact interventional TreeSHAP against the background sample: features are "
            "replaced by background values independently of each other, true to the model"
        )
        params.update({"feature_perturbation": fp, "n_jobs": n_jobs, "parallel_backend": backend,
                       "background_rows": len(bg) if bg is not None else 0})
    else:
        Zfull = view.transform(sh.background_full)
        mean = Zfull.mean(axis=0)
        explainer = shap.LinearExplainer(view.final, masker=(mean, None))
        raw_values = explainer.shap_values(Z)
        expected = explainer.expected_value
        name = "LinearExplainer"
        why = (
            "exact linear SHAP: coef * (x - E[x]) with E[x] the mean of "
            f"{len(Zfull)} {sh.background_role} rows (features treated as independent, interventional)"
        )
        params.update({"feature_perturbation": "interventional", "background_rows": len(Zfull)})
    values_z, base = _pick_class(raw_values, expected, sh.pos, len(Z))
    output = view.raw_output(Z)
    local = values_z @ view.group_matrix(p)
    params["output"] = view.output_space
    params["transformed_columns"] = int(Z.shape[1])
    params["mapping"] = (
        f"{Z.shape[1]} transformed columns summed back into {p} input columns"
        if Z.shape[1] != p
        else f"one transformed column per input column ({p})"
    )
    return local, base, output, name, why


def _blackbox_shap(
    ctx: Any, sh: Shared, reason: str, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, str]:
    """shap's PermutationExplainer over the input columns, on the positive-class probability."""
    import shap

    pol = ctx.policy.explain
    p = len(sh.columns)
    n = min(len(sh.X), pol.blackbox_sample_size)
    A = sh.codec.encode(sh.X.iloc[:n])
    B = sh.codec.encode(sh.background)
    seed = ctx.seed_for("explain.shap.permutation")
    masker = shap.maskers.Independent(B, max_samples=len(B))
    max_evals = pol.blackbox_permutations * (2 * p + 1)
    with _numpy_global_seed(seed):
        explainer = shap.PermutationExplainer(sh.predict_encoded, masker, seed=seed % (2**32))
        ex = explainer(A, max_evals=max_evals, silent=True)
    local = np.asarray(ex.values, dtype=np.float64)
    base = np.asarray(ex.base_values, dtype=np.float64).reshape(-1)
    output = sh.predict_encoded(A)
    why = (
        f"model-agnostic: {reason}; {pol.blackbox_permutations} antithetic feature orderings per row "
        f"against {len(B)} background rows (exactly additive by construction)"
    )
    params.update({"max_evals": max_evals, "permutations": pol.blackbox_permutations,
                   "background_rows": len(B), "output": "probability of the positive class"})
    return local, base, output, "PermutationExplainer", why


def compute_shap(ctx: Any) -> Attribution:
    """SHAP values per input column: the exact explainer the model allows, else the permutation
    explainer (also when the exact one raises: its error is kept in the reason)."""
    t0 = time.perf_counter()
    sh = shared(ctx)
    pol = ctx.policy.explain
    params: dict[str, Any] = {
        "background_split": sh.background_role,
        "n_bootstrap": pol.n_bootstrap,
        "confidence_level": pol.confidence_level,
    }
    if sh.view.kind in ("tree", "linear"):
        try:
            local, base, output, name, why = _exact_shap(ctx, sh, params)
        except Exception as exc:  # noqa: BLE001 - e.g. a tree type shap cannot parse
            msg = " ".join(str(exc).split())[:200]
            reason = f"the exact explainer failed on {sh.view.estimator_name} ({type(exc).__name__}: {msg})"
            params = {k: v for k, v in params.items() if k in ("background_split", "n_bootstrap",
                                                                  "confidence_level")}
            local, base, output, name, why = _blackbox_shap(ctx, sh, reason, params)
    else:
        local, base, output, name, why = _blackbox_shap(ctx, sh, sh.view.reason, params)
    additivity = np.abs(local.sum(1) + base - output)
    units = np.abs(local)
    imp, lo, hi, boot = _summarise(ctx, units, "shap")
    params.update({"explainer": name, "why": why, "rows": len(local)})
    return Attribution(
        method="shap",
        features=sh.columns,
        importance=imp,
        lo=lo,
        hi=hi,
        units=units,
        boot=boot,
        local=local,
        rows=sh.rows[: len(local)],
        base_values=base,
        params=params,
        metrics={
            "additivity_max_abs_error": float(additivity.max()),
            "additivity_mean_abs_error": float(additivity.mean()),
            "base_value": float(np.mean(base)),
        },
        extra={"output": output},
        seconds=time.perf_counter() - t0,
    )


# --- LIME ---------------------------------------------------------------------------------


def _lime_predict_fn(ctx: Any, sh: Shared) -> Callable[[np.ndarray], np.ndarray]:
    """What LIME calls: the model's class probabilities; for a scikit-learn model without
    ``predict_proba``, its decision function (LIME then refuses, as it should: it explains
    probabilities, and a squashed margin is not one)."""
    adapter = ctx.model
    est = getattr(adapter, "estimator", None)
    native = getattr(adapter, "has_native_proba", True)
    if est is not None and not native:
        def margin(A: np.ndarray) -> np.ndarray:
            return np.asarray(est.decision_function(adapter.select(sh.codec.decode(A))), dtype=np.float64)

        return lambda A: _in_chunks(margin, A)

    def proba(A: np.ndarray) -> np.ndarray:
        return np.asarray(adapter.predict_proba(sh.codec.decode(A)), dtype=np.float64)

    return lambda A: _in_chunks(proba, A)


#: LIME rows whose perturbations the model scores in one call: about this many perturbations
_LIME_WAVE_SAMPLES = 10_000


class _Abandoned(Exception):  # noqa: N818 - internal signal
    """A row's perturbations were never scored: another row of its wave failed first."""


def _lime_explain_rows(
    explainer: Any, A: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], label: int, num_samples: int
) -> list[Any]:
    """``explainer.explain_instance`` for every row of ``A``, the model called once per wave of
    rows (about ``_LIME_WAVE_SAMPLES`` perturbations) instead of once per row."""
    n = len(A)
    if n == 0:
        return []
    waves = -(-n * num_samples // _LIME_WAVE_SAMPLES)
    size = -(-n // max(1, min(n, waves)))
    out: list[Any] = []
    for start in range(0, n, size):
        out.extend(_lime_wave(explainer, A[start : start + size], fn, label, num_samples))
    return out


def _lime_wave(
    explainer: Any, rows: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], label: int, num_samples: int
) -> list[Any]:
    """One wave: every row's ``explain_instance`` runs in a thread of its own, started only once the
    previous row has drawn all its perturbations from the explainer's random state and handed them
    to the model function. The draws therefore come in the order of a plain loop over the rows (the
    explanations are the loop's, bit for bit). The model then scores the whole wave in one call and
    the rows fit their local models. A row that fails ends the wave: its error is raised here."""
    k = len(rows)
    p = rows.shape[1]
    asked: list[np.ndarray | None] = [None] * k
    answers: list[np.ndarray | None] = [None] * k
    results: list[Any] = [None] * k
    errors: list[BaseException | None] = [None] * k
    handed = [threading.Event() for _ in range(k)]
    answered = threading.Event()

    def model_for(i: int) -> Callable[[np.ndarray], np.ndarray]:
        def model(Z: np.ndarray) -> np.ndarray:
            if asked[i] is not None:  # one call per row is what a wave can answer
                raise RuntimeError("LIME called the model twice for one row")
            asked[i] = np.array(Z, dtype=np.float64, copy=True)
            handed[i].set()
            answered.wait()
            answer = answers[i]
            if answer is None:
                raise _Abandoned
            return answer

        return model

    def explain(i: int) -> None:
        try:
            results[i] = explainer.explain_instance(
                rows[i], model_for(i), labels=(label,), num_features=p, num_samples=num_samples
            )
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread
            errors[i] = exc
        finally:
            handed[i].set()

    threads: list[threading.Thread] = []
    try:
        for i in range(k):
            thread = threading.Thread(target=explain, args=(i,), name=f"lime-row-{i}", daemon=True)
            threads.append(thread)
            thread.start()
            handed[i].wait()
            if asked[i] is None:  # the row ended before calling the model: it failed
                break
        else:
            given = [a for a in asked if a is not None]
            scores = np.asarray(fn(np.concatenate(given)))
            for i, part in enumerate(np.split(scores, np.cumsum([len(a) for a in given])[:-1])):
                answers[i] = part
    finally:
        answered.set()
        for thread in threads:
            thread.join()
    for err in errors:
        if err is not None and not isinstance(err, _Abandoned):
            raise err
    return results


def _lime_run(ctx: Any, sh: Shared, A: np.ndarray, train: np.ndarray, seed: int) -> np.ndarray:
    from lime.lime_tabular import LimeTabularExplainer

    pol = ctx.policy.explain
    p = len(sh.columns)
    cat_idx = [j for j in range(p) if sh.codec.categorical[j]]
    cat_names = {j: [str(v) for v in sh.codec.categories[j]] + ["<missing>"] for j in cat_idx}
    explainer = LimeTabularExplainer(
        train,
        mode="classification",
        feature_names=list(sh.columns),
        categorical_features=cat_idx,
        categorical_names=cat_names,
        discretize_continuous=True,
        feature_selection="none",
        random_state=seed % (2**32),
    )
    fn = _lime_predict_fn(ctx, sh)
    try:
        explanations = _lime_explain_rows(explainer, A, fn, sh.pos, pol.lime_num_samples)
    except NotImplementedError as exc:  # LIME's refusal of a model without probabilities
        from audit.exceptions import ModelOutputError

        est: Any = getattr(ctx.model, "estimator", None)
        steps = getattr(est, "steps", None)
        name = type(steps[-1][1] if steps else est).__name__
        raise ModelOutputError(
            f"LIME explains class probabilities and this model has none: {name} has no "
            "predict_proba, only decision_function; calibrate it (e.g. CalibratedClassifierCV) "
            "to explain it with LIME"
        ) from exc
    W = np.zeros((len(A), p))
    for i, exp in enumerate(explanations):
        for j, w in exp.as_map()[sh.pos]:
            W[i, j] = w
    return W


def compute_lime(ctx: Any) -> Attribution:
    t0 = time.perf_counter()
    sh = shared(ctx)
    pol = ctx.policy.explain
    n = min(len(sh.X), pol.lime_sample_size)
    A = sh.codec.fill_numeric_missing(sh.codec.encode(sh.X.iloc[:n]))
    train_rows = sh.background_full.iloc[: min(len(sh.background_full), 1000)]
    train = sh.codec.fill_numeric_missing(sh.codec.encode(train_rows))
    W1 = _lime_run(ctx, sh, A, train, ctx.seed_for("explain.lime"))
    W2 = _lime_run(ctx, sh, A, train, ctx.seed_for("explain.lime.rerun"))
    units = np.abs(W1)
    imp, lo, hi, boot = _summarise(ctx, units, "lime")
    # stability: paired bootstrap over rows of the two runs' global rankings
    U2 = np.abs(W2)
    Wb = bootstrap_weights(n, pol.n_bootstrap, ctx.rng("explain.boot.lime.stability"))
    global_rho = float(spearman_rows(units.mean(0), U2.mean(0))[0])
    if np.isfinite(global_rho):
        s_lo, s_hi = percentile_interval(spearman_rows(Wb @ units / n, Wb @ U2 / n), pol.confidence_level)
    else:  # undefined (one feature, or a ranking that is all ties): no interval either
        s_lo = s_hi = np.nan
    per_row = spearman_rows(units, U2)
    defined_rows = np.isfinite(per_row)
    if np.isfinite(global_rho):
        undefined_why = ""
    elif len(sh.columns) < 2:
        undefined_why = f"the model has one input column ({sh.columns[0]}): there is no ranking to change"
    else:
        undefined_why = ("every feature has the same mean |LIME weight| in a run (all ties): there is "
                         "no ranking to compare")
    return Attribution(
        method="lime",
        features=sh.columns,
        importance=imp,
        lo=lo,
        hi=hi,
        units=units,
        boot=boot,
        local=W1,
        rows=sh.rows[:n],
        params={
            "rows": n,
            "num_samples": pol.lime_num_samples,
            "training_rows": len(train_rows),
            "training_split": sh.background_role,
            "discretize_continuous": True,
            "kernel_width": "default (0.75 * sqrt(features))",
            "seeds": "audit seed derived, run 1 and run 2",
            "output": "probability of the positive class (local linear surrogate weights)",
        },
        metrics={
            "stability_spearman": global_rho,
            "stability_spearman_lo": float(s_lo),
            "stability_spearman_hi": float(s_hi),
            "stability_row_spearman_mean": (float(np.mean(per_row[defined_rows]))
                                            if defined_rows.any() else float("nan")),
        },
        extra={"rerun_importance": U2.mean(0), "rerun_local": W2, "stability_undefined": undefined_why},
        seconds=time.perf_counter() - t0,
    )


# --- permutation importance ---------------------------------------------------------------


class _RowNumbers:
    """A fitted scikit-learn-style estimator for ``permutation_importance`` whose data are row
    numbers: the scorer only records which row each permuted value came from."""

    def fit(self, X: Any, y: Any = None) -> _RowNumbers:  # never called
        return self


def _sklearn_permutations(
    n: int, p: int, repeats: int, seed: int, each: Callable[[int, int, np.ndarray], None]
) -> None:
    """``each(feature, repeat, rows)`` for every permutation scikit-learn's ``permutation_importance``
    draws with this seed, in its order: ``rows[i]`` is the row whose value row i takes. It is given
    the row numbers as data and a scorer that hands them over (one process, nothing scored)."""
    from sklearn.inspection import permutation_importance

    rows = np.arange(n, dtype=np.int64)
    calls = [0]

    def record(est: Any, Xs: Any, ys: Any) -> float:
        call = calls[0]  # the baseline, then each feature's repeats in turn
        calls[0] += 1
        if call == 0:
            if not np.array_equal(np.asarray(Xs)[:, 0], rows):
                raise RuntimeError("permutation_importance changed the rows of its baseline")
            return 0.0
        j, r = divmod(call - 1, repeats)
        perm = np.array(np.asarray(Xs)[:, j], dtype=np.int64)
        if len(perm) != n or perm.min() < 0 or perm.max() >= n or np.bincount(perm, minlength=n).max() != 1:
            raise RuntimeError("permutation_importance did not permute the rows")
        each(j, r, perm)
        return 0.0

    permutation_importance(_RowNumbers(), np.tile(rows[:, None], (1, p)), np.zeros(n), scoring=record,
                           n_repeats=repeats, random_state=seed, n_jobs=1)
    if calls[0] != 1 + p * repeats:
        raise RuntimeError("unexpected scorer calls from permutation_importance")


def _delong_components(y: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of the AUC of each score vector (last axis: rows):
    V10 per positive row (share of negatives it outranks, ties one half) and V01 per negative row.
    AUC = mean(V10) = mean(V01)."""
    from scipy.stats import rankdata

    pos = np.asarray(y) == 1
    m, k = int(pos.sum()), int((~pos).sum())
    Sp, Sn = S[..., pos], S[..., ~pos]
    tz = rankdata(np.concatenate([Sp, Sn], axis=-1), axis=-1)
    v10 = (tz[..., :m] - rankdata(Sp, axis=-1)) / k
    v01 = 1.0 - (tz[..., m:] - rankdata(Sn, axis=-1)) / m
    return v10, v01


def _permutation_interval(
    ctx: Any, y: np.ndarray, base: np.ndarray, permuted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Importance (drop in AUC, mean over repeats) with a row bootstrap interval.

    The drop AUC(s) - mean_r AUC(s_jr) is a difference of correlated AUCs on the same rows; its
    DeLong components (V10 per positive row, V01 per negative row, baseline minus the repeats'
    mean) are means whose row bootstrap (``audit.stats.bootstrap_means``, positives and negatives
    resampled separately) gives the linearised draws ``drop + dV10* + dV01*``; the interval is their
    percentile interval. ``permuted`` is (features, repeats, rows).
    """
    pol = ctx.policy.explain
    b10, b01 = _delong_components(y, base)
    p10, p01 = _delong_components(y, permuted)
    c10 = b10[:, None] - p10.mean(1).T  # (positives, features)
    c01 = b01[:, None] - p01.mean(1).T  # (negatives, features)
    imp = c10.mean(0)
    d10 = bootstrap_means(c10, pol.n_bootstrap, ctx.rng("explain.boot.permutation.pos")) - c10.mean(0)
    d01 = bootstrap_means(c01, pol.n_bootstrap, ctx.rng("explain.boot.permutation.neg")) - c01.mean(0)
    boot = imp + d10 + d01
    lo, hi = percentile_interval(boot, pol.confidence_level)
    return imp, lo, hi, boot


#: permuted rows scored together (bounds the memory of large samples and many repeats)
_PERMUTATION_BLOCK_ROWS = 200_000


def compute_permutation(ctx: Any) -> Attribution:
    """Permutation importance (drop in ROC AUC) with scikit-learn's permutations, every permuted
    copy of the rows scored in a few large model calls (``RowMixer``: a permuted value equal to
    the original leaves the row as it was, and such rows are scored once)."""
    from audit.checks._explain_stats import auc_mann_whitney

    t0 = time.perf_counter()
    sh = shared(ctx)
    pol = ctx.policy.explain
    test = ctx.test
    idx = stratified_sample(test.y, pol.permutation_sample_size, ctx.rng("explain.permutation.rows"))
    X = test.X.iloc[idx].reset_index(drop=True)
    y = np.asarray(test.y[idx])
    n, p, reps = len(X), len(sh.columns), pol.permutation_repeats
    mixer = sh.mixer(X)
    rows = np.arange(n, dtype=np.int64)
    base = mixer(np.broadcast_to(rows[:, None], (n, p)))
    # a permuted row whose new value is the model input it had is the row itself (its score is
    # known); the others are scored in blocks of a bounded size, each distinct row once
    permuted = np.broadcast_to(base, (p, reps, n)).copy()
    pending: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # feature, repeat, rows, donors
    waiting = [0]

    def score_pending() -> None:
        S = np.concatenate([np.broadcast_to(moved[:, None], (len(moved), p)) for _, _, moved, _ in pending])
        start = 0
        for j, _, moved, donors in pending:
            S[start : start + len(moved), j] = donors
            start += len(moved)
        scored = mixer(S)
        start = 0
        for j, r, moved, _ in pending:
            permuted[j, r, moved] = scored[start : start + len(moved)]
            start += len(moved)
        pending.clear()
        waiting[0] = 0

    def add(j: int, r: int, perm: np.ndarray) -> None:
        moved = np.flatnonzero(mixer.ids[perm, j] != mixer.ids[:, j])
        pending.append((j, r, moved, perm[moved]))
        waiting[0] += len(moved)
        if waiting[0] >= _PERMUTATION_BLOCK_ROWS:
            score_pending()

    _sklearn_permutations(n, p, reps, ctx.seed_for("explain.permutation") % (2**32), add)
    if pending:
        score_pending()
    positive = y == 1
    baseline = float(auc_mann_whitney(positive, base))
    # the figures scikit-learn reports: baseline score minus each repeat's score
    units = np.array([[baseline - auc_mann_whitney(positive, permuted[j, r]) for j in range(p)]
                      for r in range(reps)], dtype=np.float64)  # (repeats x features)
    imp, lo, hi, boot = _permutation_interval(ctx, y, base, permuted)
    np.testing.assert_allclose(imp, units.mean(0), atol=1e-9)  # DeLong means = the mean AUC drops
    return Attribution(
        method="permutation",
        features=sh.columns,
        importance=imp,
        lo=lo,
        hi=hi,
        units=units,
        boot=boot,
        params={
            "rows": len(X),
            "repeats": pol.permutation_repeats,
            "scoring": "ROC AUC of the positive-class probability",
            "interval": "percentile bootstrap over rows (positives and negatives resampled separately) "
            "of the AUC drop's DeLong structural components, averaged over repeats: the rows' sampling "
            "error, which an interval over the few repeats leaves out",
        },
        metrics={"baseline_auc": float(baseline)},
        extra={"std": units.std(0, ddof=1)},
        seconds=time.perf_counter() - t0,
    )


# --- gradients (torch) --------------------------------------------------------------------


def compute_gradients(ctx: Any) -> dict[str, Attribution]:
    """Integrated Gradients (with its convergence delta) and GradientSHAP over the encoded
    matrix, summed back to input columns with the encoder's groups; plus Captum's infidelity and
    sensitivity_max of the IG explanation."""
    import torch
    from captum.attr import GradientShap, IntegratedGradients
    from captum.metrics import infidelity, sensitivity_max

    from audit.exceptions import CheckNotApplicable

    t0 = time.perf_counter()
    adapter = ctx.model
    module = getattr(adapter, "torch_module", None)
    encoder = getattr(adapter, "encoder", None)
    if module is None or encoder is None:
        raise CheckNotApplicable("needs a torch model (TorchScript); this model is not one")
    sh = shared(ctx)
    pol = ctx.policy.explain
    p = len(sh.columns)
    n = min(len(sh.X), pol.gradient_sample_size)
    Xg = sh.X.iloc[:n]
    Z = torch.as_tensor(encoder.transform(adapter.select(Xg)), dtype=torch.float32)
    Zbg = torch.as_tensor(encoder.transform(adapter.select(sh.background)), dtype=torch.float32)
    baseline = Zbg.mean(0, keepdim=True)
    pos = sh.pos
    output = getattr(adapter, "output", "logits")

    def forward(z: torch.Tensor) -> torch.Tensor:
        out = module(z)
        if out.ndim == 1:
            out = out[:, None]
        if out.shape[1] == 1:
            col = out[:, 0]
            if output == "probabilities":
                return col if pos == 1 else 1 - col
            return col if pos == 1 else -col
        return out[:, pos]

    space = (
        "logit of the positive class" if output == "logits" else "probability of the positive class"
    )
    col_index = {c: j for j, c in enumerate(sh.columns)}
    G = np.zeros((encoder.width, p))  # encoded column -> input column (the encoder's groups)
    for name, sl in encoder.groups():
        G[sl, col_index[name]] = 1.0

    ig = IntegratedGradients(forward)
    steps = pol.ig_n_steps
    tries = []
    for _ in range(3):
        attr, delta = ig.attribute(
            Z, baselines=baseline, n_steps=steps, method="gausslegendre", return_convergence_delta=True
        )
        max_delta = float(delta.abs().max())
        tries.append({"n_steps": steps, "max_abs_delta": max_delta})
        if max_delta <= pol.ig_max_convergence_delta:
            break
        steps *= 4
    with torch.no_grad():
        diff = (forward(Z) - forward(baseline)).abs()
    ig_local = attr.detach().numpy().astype(np.float64) @ G
    gs = GradientShap(forward)
    with torch.random.fork_rng():
        torch.manual_seed(ctx.seed_for("explain.gradient_shap"))
        gattr = gs.attribute(Z, baselines=Zbg, n_samples=pol.gradient_shap_samples, stdevs=0.0)
        noise_sd = 0.1

        def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            noise = torch.randn_like(inputs) * noise_sd
            return noise, inputs - noise

        infid = infidelity(
            forward, perturb, Z, attr.detach(), n_perturb_samples=pol.infidelity_perturbations,
            normalize=True,
        )
        sens = sensitivity_max(
            ig.attribute, Z, perturb_radius=pol.sensitivity_radius,
            n_perturb_samples=pol.sensitivity_perturbations, baselines=baseline, n_steps=steps,
            method="gausslegendre",
        )
    gs_local = gattr.detach().numpy().astype(np.float64) @ G
    seconds = time.perf_counter() - t0
    common = {
        "rows": n,
        "output": space,
        "baseline": "encoded mean of the background rows",
        "encoded_columns": int(encoder.width),
    }
    out: dict[str, Attribution] = {}
    for method, local, params, metrics in (
        (
            "integrated_gradients",
            ig_local,
            {**common, "n_steps": steps, "integration": "gausslegendre", "attempts": tries},
            {
                "convergence_delta_max_abs": tries[-1]["max_abs_delta"],
                "convergence_delta_mean_abs": float(delta.abs().mean()),
                "convergence_delta_relative": float(delta.abs().max() / max(float(diff.mean()), 1e-12)),
                "infidelity_mean": float(infid.mean()),
                "sensitivity_max_mean": float(sens.mean()),
                "n_steps": float(steps),
            },
        ),
        (
            "gradient_shap",
            gs_local,
            {**common, "n_samples": pol.gradient_shap_samples, "baselines": "background rows",
             "stdevs": 0.0},
            {},
        ),
    ):
        units = np.abs(local)
        imp, lo, hi, boot = _summarise(ctx, units, method)
        out[method] = Attribution(
            method=method, features=sh.columns, importance=imp, lo=lo, hi=hi, units=units, boot=boot,
            local=local, rows=sh.rows[:n], params=params, metrics=metrics,
            extra={"infidelity_noise_sd": noise_sd}, seconds=seconds,
        )
    return out
