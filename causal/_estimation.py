"""General effect estimation with DoWhy: identify → estimate (several estimators) → refute.

* **Identify** with ``CausalModel.identify_effect`` on the given graph: back-door, front-door and
  instrumental-variable estimands, as the graph allows (latent nodes are honoured: DoWhy treats
  graph nodes without a data column as unobserved). When DoWhy's default back-door set is empty
  but it lists a non-empty valid set, the largest one is used: propensity-score estimators need
  covariates, and adjusting for causes of the outcome sharpens a randomised comparison.
* **Estimate** with every applicable estimator: back-door linear regression (parametric),
  propensity-score weighting (semi-parametric) and propensity-score matching (non-parametric;
  binary treatment); front-door two-stage regression; IV (Wald / 2SLS). Linear regression has an
  analytic interval with HC3 heteroskedasticity-robust standard errors (statsmodels, on DoWhy's
  fitted model); the others get DoWhy's bootstrap interval (the estimate minus the quantiles of
  the replicates' deviations). The propensity model is a logistic regression on standardised
  covariates, sorted by name (``propensity_model``), so estimates do not depend on column order;
  warnings that bear on the numbers (a model that did not converge) are kept in
  ``settings["warnings"]`` instead of silenced. The point estimates are DoWhy's; the two
  propensity estimators' bootstrap shares one set of resamples, each resample's propensity model
  fitted once (in NumPy, the same penalised fit) for both (``_PropensityBootstrap``).
* **Randomised experiments** (no back-door covariates): propensity estimators do not apply (said
  per row); the sensitivity analysis reports Cinelli & Hazlett's robustness value from the OLS
  t-statistic (no benchmark is possible), since DoWhy's partial-R2 refuter needs a covariate.
* **Continuous treatment** without a named contrast: the per-unit effect (one unit at the median). (Propensity-score stratification
  is left out: its bootstrap interval alone costs more than the rest of the check.)
* **Refute** the primary estimate (back-door linear regression when available, else front-door,
  else IV) with DoWhy's placebo-treatment, random-common-cause and data-subset refuters, and the
  unobserved-confounder sensitivity analysis (``add_unobserved_common_cause`` with
  ``simulation_method="linear-partial-R2"``, Cinelli & Hazlett 2020), benchmarked against the
  strongest observed common cause. Each refuter is reported with what passing means in plain
  words, DoWhy's p-value and whether it passed. For the back-door regression the simulations of
  the first three run on NumPy arrays (``_RegressionRefuter``: the same re-estimates, DoWhy's own
  significance test); front-door and IV estimates go through DoWhy's refuters.

What DoWhy's refutation p-value means: DoWhy draws the refuter's estimates (``num_simulations``
re-estimations on altered data) and asks how plausible a reference value is under their spread
(a normal approximation below 100 simulations). For the placebo refuter the reference is zero
(is "no effect" consistent with the placebo estimates?); for random common cause and data subset
it is the original estimate (is it consistent with the re-estimates?). A p-value at or below the
significance level means the reference is implausible, i.e. the refuter *failed*.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from causal._graph import CausalGraph
from causal._scm import (
    NotIdentifiedError,
    blas_single_thread,
    plain_objects,
    seeded_global_numpy,
    treatment_levels,
)

__all__ = [
    "REFUTER_MEANINGS",
    "EffectAnalysis",
    "EstimateRow",
    "RefutationRow",
    "estimate_effect",
]

REFUTER_MEANINGS: dict[str, str] = {
    "placebo_treatment": (
        "Replaces the treatment with a random permutation of itself, which cannot cause anything; "
        "passes when the estimated effect of this placebo is consistent with zero, i.e. the method "
        "does not find effects where none can exist."
    ),
    "random_common_cause": (
        "Adds an independent random variable as an extra common cause; passes when the estimate "
        "does not move, i.e. it is not an artefact of which covariates happen to be included."
    ),
    "data_subset": (
        "Re-estimates on random subsets of the rows; passes when the original estimate is "
        "consistent with the subset estimates, i.e. it does not hinge on a few rows."
    ),
    "unobserved_confounder_sensitivity": (
        "Asks how strong an unobserved common cause of treatment and outcome would have to be to "
        "explain the effect away (partial R2, Cinelli & Hazlett); passes when a confounder as "
        "strong as the strongest observed one would not bring the estimate's interval to zero."
    ),
}


@dataclass(frozen=True)
class EstimateRow:
    method: str  # DoWhy method name
    strategy: str  # backdoor / frontdoor / iv
    kind: str  # parametric / semi-parametric / non-parametric
    estimate: float
    ci_low: float
    ci_high: float
    ci_method: str
    status: str  # "ok" or "not applicable: ..." or "failed: ..."
    seconds: float


@dataclass(frozen=True)
class RefutationRow:
    refuter: str
    meaning: str
    passed: bool | None  # None: not run / not informative (see detail)
    p_value: float
    original_effect: float
    new_effect: float
    simulations: int
    detail: str
    seconds: float
    status: str = "ran"  # "ran", "not applicable" or "error" (DoWhy raised; message in detail)


@dataclass(frozen=True)
class EffectAnalysis:
    treatment: str
    outcome: str
    treatment_value: Any
    control_value: Any
    n_rows: int
    n_dropped_missing: int
    identified: dict[str, list[str] | None]  # strategy -> variables (None: not identified)
    adjustment_set: tuple[str, ...]
    primary: str  # method name of the refuted estimate
    estimates: tuple[EstimateRow, ...]
    refutations: tuple[RefutationRow, ...]
    difference_in_means: float
    difference_in_means_se: float
    settings: dict[str, Any]

    def primary_row(self) -> EstimateRow:
        for r in self.estimates:
            if r.method == self.primary:
                return r
        raise KeyError(self.primary)


_BACKDOOR_METHODS = (
    ("backdoor.linear_regression", "parametric"),
    ("backdoor.propensity_score_weighting", "semi-parametric"),
    ("backdoor.propensity_score_matching", "non-parametric"),
)


def _surfaced(w: warnings.WarningMessage) -> bool:
    """Warnings that bear on the numbers (a model that did not converge, an overflow), kept for the
    result's provenance; DoWhy's and pandas' API deprecation notices are not."""
    name = w.category.__name__
    return "Convergence" in name or issubclass(w.category, RuntimeWarning)


@contextlib.contextmanager
def _quiet_dowhy(sink: list[str] | None = None, where: str = "") -> Iterator[None]:
    """DoWhy's logging held to errors; warnings caught, and those that bear on the numbers appended
    to ``sink`` (as "where: Category: message") instead of silenced."""
    loggers = [logging.getLogger(n) for n in ("dowhy", "dowhy.causal_model", "dowhy.causal_refuter")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
        if sink is not None:
            for w in caught:
                if _surfaced(w):
                    msg = " ".join(str(w.message).split())[:200]
                    sink.append(f"{where}: {w.category.__name__}: {msg}" if where else f"{w.category.__name__}: {msg}")
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


#: iterations of the propensity model's solver: with standardised covariates lbfgs converges in
#: tens of iterations; the cap only matters for separable data, where a warning is surfaced
PROPENSITY_MAX_ITER = 10_000


def propensity_model(seed: int = 0) -> Any:
    """The propensity-score model: logistic regression on standardised covariates. DoWhy's default
    (LogisticRegression() on raw columns) does not converge on unscaled earnings (Lalonde: 100
    lbfgs iterations exhausted), so its estimate depended on the order of the columns."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()),
                     ("logit", LogisticRegression(max_iter=PROPENSITY_MAX_ITER, random_state=seed))])


def _first(x: Any) -> float:
    arr = np.asarray(x, dtype=float).reshape(-1)
    return float(arr[0]) if arr.size else math.nan


def _ci(ci: Any) -> tuple[float, float]:
    arr = np.asarray(ci, dtype=float).reshape(-1)
    if arr.size < 2:
        return math.nan, math.nan
    return float(arr[0]), float(arr[1])


@blas_single_thread
def estimate_effect(
    data: pd.DataFrame,
    graph: CausalGraph,
    treatment: str,
    outcome: str,
    *,
    treatment_value: Any = None,
    control_value: Any = None,
    n_bootstrap: int = 50,
    refuter_simulations: int = 20,
    significance_level: float = 0.05,
    subset_fraction: float = 0.8,
    sensitivity_strength: float = 1.0,
    robustness_value_min: float = 0.05,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> EffectAnalysis:
    """Identify, estimate and refute the effect of ``treatment`` on ``outcome`` (see module doc).

    ``data`` must hold the graph's observed nodes; ``outcome`` must be numeric (0/1 for a label).
    """
    from dowhy import CausalModel

    observed = [n for n in graph.nodes if n not in graph.latent]
    missing_cols = [n for n in observed if n not in data.columns]
    if missing_cols:
        raise NotIdentifiedError(f"the data lack the graph's observed node(s): {', '.join(missing_cols)}")
    frame = data[observed]
    n_all = len(frame)
    frame = plain_objects(frame.dropna().reset_index(drop=True))
    if not pd.api.types.is_numeric_dtype(frame[outcome]) and not pd.api.types.is_bool_dtype(frame[outcome]):
        raise NotIdentifiedError(
            f"causal.outcome '{outcome}' holds text; it must be numeric (or the audit's target column)"
        )
    frame[outcome] = frame[outcome].astype(float)
    t_raw = frame[treatment]
    t_val: float
    c_val: float
    contrast: str
    caught: list[str] = []
    binary = not pd.api.types.is_numeric_dtype(t_raw) or t_raw.nunique() <= 2 or pd.api.types.is_bool_dtype(t_raw)
    if binary:
        control, treated_levels = treatment_levels(
            t_raw, treatment, treatment_value=treatment_value, control_value=control_value
        )
        treated = treated_levels[0]
        keep = t_raw.astype(str).isin([str(control), str(treated)]).to_numpy()
        frame = frame.loc[keep].reset_index(drop=True)
        frame[treatment] = (frame[treatment].astype(str) == str(treated)).astype(int)
        t_val, c_val = 1, 0
        contrast = f"1 = {treated!r}, 0 = {control!r}"
    else:
        if treatment_value is None and control_value is None:
            # per-unit effect by default (a one-unit contrast at the median; the linear estimator's
            # effect is the same at every level); a named contrast stays available
            control = float(np.round(np.median(t_raw.astype(float))))
            treated = control + 1.0
            contrast = f"per unit: {treatment} = {treated:g} vs {control:g} (one unit at the median)"
        elif treatment_value is None or control_value is None:
            raise NotIdentifiedError(
                f"the treatment '{treatment}' is continuous: name both causal.treatment_value and "
                "causal.control_value, or neither for the per-unit effect"
            )
        else:
            treated, control = float(treatment_value), float(control_value)
            contrast = f"{treatment} = {treated:g} vs {control:g} (named contrast)"
        frame[treatment] = frame[treatment].astype(float)
        t_val, c_val = treated, control
    n = len(frame)
    if frame[treatment].nunique() < 2:
        raise NotIdentifiedError(f"the treatment '{treatment}' has a single value in the rows used")
    y = frame[outcome].to_numpy()
    tt = frame[treatment].to_numpy()
    if binary:
        y1, y0 = y[tt == 1], y[tt == 0]
        dim = float(y1.mean() - y0.mean())
        dim_se = float(math.sqrt(y1.var(ddof=1) / len(y1) + y0.var(ddof=1) / len(y0)))
    else:
        dim, dim_se = math.nan, math.nan

    frame, nx_graph, origin = _dummy_code(frame, graph, skip={treatment, outcome})
    with _quiet_dowhy(), seeded_global_numpy(seed):
        model = CausalModel(frame, treatment, outcome, graph=nx_graph, effect_modifiers=[])
        estimand = model.identify_effect(proceed_when_unidentifiable=False)
    if estimand.no_directed_path:
        raise NotIdentifiedError(
            f"the causal graph has no directed path from '{treatment}' to '{outcome}': the effect is zero by "
            "assumption, nothing to estimate"
        )
    identified: dict[str, list[str] | None] = {}
    bd = estimand.estimands.get("backdoor")
    adjustment: list[str] = []
    if bd is not None:
        # sorted: DoWhy hands sets over in hash order, and the propensity model and the refuters
        # take the covariates in the order given (results depended on PYTHONHASHSEED)
        adjustment = sorted(estimand.get_backdoor_variables() or [])
        if not adjustment:
            sets: list[list[str]] = [sorted(v) for k, v in (estimand.backdoor_variables or {}).items()
                                     if k != "backdoor" and v]
            if sets:  # the largest valid set; ties broken by name, never by hash order
                longest = max(len(v) for v in sets)
                adjustment = list(min(tuple(v) for v in sets if len(v) == longest))
        estimand.set_backdoor_variables(adjustment, key="backdoor")
        identified["backdoor"] = adjustment
    else:
        identified["backdoor"] = None
        # DoWhy's refuters look the (non-existent) default back-door set up and fail with a KeyError
        # when invalid sets are listed without a default; with no back-door estimand, list none
        estimand.backdoor_variables = {}
    if estimand.estimands.get("frontdoor"):
        estimand.frontdoor_variables = sorted(estimand.get_frontdoor_variables())
        identified["frontdoor"] = list(estimand.frontdoor_variables)
    else:
        identified["frontdoor"] = None
    if estimand.estimands.get("iv"):
        estimand.instrumental_variables = sorted(estimand.get_instrumental_variables())
        identified["iv"] = list(estimand.instrumental_variables)
    else:
        identified["iv"] = None
    identified = {k: (None if v is None else _original_names(v, origin)) for k, v in identified.items()}

    plan: list[tuple[str, str, str]] = []
    if identified["backdoor"] is not None:
        for method, kind in _BACKDOOR_METHODS:
            plan.append((method, "backdoor", kind))
    if identified["frontdoor"] is not None:
        plan.append(("frontdoor.two_stage_regression", "frontdoor", "parametric"))
    if identified["iv"] is not None:
        plan.append(("iv.instrumental_variable", "iv", "parametric"))
    if not plan:
        raise NotIdentifiedError(
            f"the effect of '{treatment}' on '{outcome}' is not identifiable from this graph (no valid back-door "
            "set, front-door or instrument given its latent nodes)"
        )
    rows: list[EstimateRow] = []
    estimates: dict[str, Any] = {}
    boot: _PropensityBootstrap | None = None
    for i, (method, strategy, kind) in enumerate(plan):
        t0 = time.perf_counter()
        if method.startswith("backdoor.propensity") and not binary:
            rows.append(EstimateRow(method, strategy, kind, math.nan, math.nan, math.nan, "",
                                    "not applicable: needs a binary treatment", 0.0))
            continue
        if method.startswith("backdoor.propensity") and not adjustment:
            rows.append(EstimateRow(method, strategy, kind, math.nan, math.nan, math.nan, "",
                                    "not applicable: no adjustment variables (nothing to balance)", 0.0))
            continue
        try:
            params = ({"init_params": {"propensity_score_model": propensity_model(seed)}}
                      if method.startswith("backdoor.propensity") else None)
            with _quiet_dowhy(caught, method), seeded_global_numpy(seed + 17 * (i + 1)):
                est = model.estimate_effect(
                    estimand, method_name=method, control_value=c_val, treatment_value=t_val,
                    effect_modifiers=[], confidence_intervals=False, method_params=params,
                )
                if est.value is None:
                    raise RuntimeError("DoWhy returned no estimate")
                if method == "backdoor.linear_regression":
                    lo, hi, ci_method = _robust_ols_interval(est, confidence_level, t_val, c_val)
                elif n_bootstrap >= 2 and method in _PROPENSITY_METHODS:
                    if boot is None:  # one set of resamples and propensity refits for both estimators
                        boot = _propensity_bootstrap(frame, treatment, outcome, adjustment, n_bootstrap, seed)
                    lo, hi = boot.interval(method, _first(est.value), confidence_level)
                    ci_method = f"bootstrap ({n_bootstrap} resamples)"
                elif n_bootstrap >= 2:
                    lo, hi = _ci(est.get_confidence_intervals(
                        confidence_level=confidence_level, method="bootstrap",
                        num_simulations=n_bootstrap, sample_size_fraction=1,
                    ))
                    ci_method = f"bootstrap ({n_bootstrap} resamples)"
                else:
                    lo, hi, ci_method = math.nan, math.nan, "none (n_bootstrap < 2)"
            estimates[method] = est
            rows.append(EstimateRow(method, strategy, kind, _first(est.value), lo, hi, ci_method, "ok",
                                    time.perf_counter() - t0))
        except Exception as exc:  # noqa: BLE001 - one estimator failing is reported, not fatal
            msg = " ".join(str(exc).split())[:200] or type(exc).__name__
            rows.append(EstimateRow(method, strategy, kind, math.nan, math.nan, math.nan, "", f"failed: {msg}",
                                    time.perf_counter() - t0))
    primary = next((m for m in ("backdoor.linear_regression", "frontdoor.two_stage_regression",
                                "iv.instrumental_variable") if m in estimates), None)
    if primary is None:
        reasons = "; ".join(f"{r.method}: {r.status}" for r in rows)
        raise RuntimeError(f"no estimator produced an estimate ({reasons})")
    refutations = _refute(
        model, estimand, estimates[primary], primary,
        simulations=refuter_simulations, significance_level=significance_level,
        subset_fraction=subset_fraction, strength=sensitivity_strength,
        robustness_value_min=robustness_value_min, seed=seed, sink=caught,
        regression=(frame, treatment, outcome, adjustment, float(t_val) - float(c_val)),
    )
    return EffectAnalysis(
        treatment=treatment,
        outcome=outcome,
        treatment_value=treated,
        control_value=control,
        n_rows=n,
        n_dropped_missing=n_all - len(data[observed].dropna()),
        identified=identified,
        adjustment_set=tuple(_original_names(adjustment, origin)),
        primary=primary,
        estimates=tuple(rows),
        refutations=tuple(refutations),
        difference_in_means=dim,
        difference_in_means_se=dim_se,
        settings={
            "n_bootstrap": n_bootstrap,
            "refuter_simulations": refuter_simulations,
            "refuter_significance_level": significance_level,
            "refuter_subset_fraction": subset_fraction,
            "sensitivity_strength": sensitivity_strength,
            "robustness_value_min": robustness_value_min,
            "confidence_level": confidence_level,
            "treatment_encoding": contrast if binary else "continuous",
            "contrast": contrast,
            "propensity_model": "StandardScaler + LogisticRegression(lbfgs, max_iter="
                                f"{PROPENSITY_MAX_ITER}) on the sorted adjustment set",
            "warnings": sorted(set(caught)),
        },
    )


_PROPENSITY_METHODS = ("backdoor.propensity_score_weighting", "backdoor.propensity_score_matching")
#: DoWhy's propensity-score weighting clips scores to [0.05, 0.95] (its defaults)
_PS_CLIP = (0.05, 0.95)


def _design(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Covariates as DoWhy's estimators code them: numeric columns as they are, text columns one-hot
    with the first (sorted) level dropped."""
    parts: list[np.ndarray] = []
    for c in columns:
        s = frame[c]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            parts.append(s.to_numpy(dtype=float).reshape(-1, 1))
        else:
            levels = sorted(pd.unique(s.astype(str)))
            text = s.astype(str).to_numpy()
            parts.append(np.column_stack([(text == lv).astype(float) for lv in levels[1:]]) if len(levels) > 1
                         else np.zeros((len(s), 0)))
    return np.hstack(parts) if parts else np.zeros((len(frame), 0))


def _ols_slope(y: np.ndarray, t: np.ndarray, C: np.ndarray) -> float:
    """The coefficient of ``t`` in the least-squares fit of ``y`` on [1, t, C] (DoWhy's back-door
    linear regression without effect modifiers: statsmodels OLS with a constant)."""
    X = np.column_stack([np.ones(len(y)), t, C])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return float(coef[1])


class _RegressionRefuter:
    """DoWhy's placebo-treatment (permute), random-common-cause and data-subset refuters of the
    back-door linear-regression estimate, on NumPy arrays: each simulation is the same least-squares
    re-estimate DoWhy's refuter makes (treatment permuted; a standard-normal column added to the
    adjustment set; a ``subset_fraction`` share of the rows drawn without replacement), the new effect
    is the simulations' mean and the p-value is DoWhy's own ``test_significance`` of the reference
    (zero for the placebo, the original estimate otherwise). DoWhy rebuilds its estimator object,
    data frame and statsmodels summary for every simulation, most of the check's time."""

    def __init__(self, frame: pd.DataFrame, treatment: str, outcome: str, adjustment: Sequence[str],
                 contrast: float) -> None:
        self.y = frame[outcome].to_numpy(dtype=float)
        self.t = frame[treatment].to_numpy(dtype=float)
        self.C = _design(frame, adjustment)
        self.contrast = contrast

    def effect(self, rows: np.ndarray | None = None, t: np.ndarray | None = None,
               extra: np.ndarray | None = None) -> float:
        y, tt, C = self.y, self.t if t is None else t, self.C
        if extra is not None:
            C = np.column_stack([C, extra])
        if rows is not None:
            y, tt, C = y[rows], tt[rows], C[rows]
        return _ols_slope(y, tt, C) * self.contrast

    def simulations(self, name: str, count: int, subset_fraction: float, seed: int) -> np.ndarray:
        rng = np.random.default_rng(int(seed) % 2**32)
        n = len(self.y)
        if name == "placebo_treatment":
            return np.array([self.effect(t=self.t[rng.permutation(n)]) for _ in range(count)])
        if name == "random_common_cause":
            return np.array([self.effect(extra=rng.standard_normal(n)) for _ in range(count)])
        m = round(subset_fraction * n)  # pandas' DataFrame.sample(frac=...)
        return np.array([self.effect(rows=np.sort(rng.choice(n, size=m, replace=False))) for _ in range(count)])

    def refute(self, name: str, original: float, count: int, significance_level: float, subset_fraction: float,
               seed: int) -> tuple[float, float]:
        """(p-value, new effect) of one refuter."""
        from types import SimpleNamespace

        from dowhy.causal_refuter import test_significance

        sims = self.simulations(name, count, subset_fraction, seed)
        reference = SimpleNamespace(value=0.0 if name == "placebo_treatment" else original)
        res = test_significance(reference, sims, significance_level=significance_level)
        return float(res["p_value"]), float(np.mean(sims))


def _nearest(reference: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index into ``reference`` of the value nearest each ``query`` value (1-nearest neighbour on a
    line, as DoWhy's ball tree on the propensity score). Ties: equally near values below and above
    go to the lower one; among equal reference values (units with the same score), the first row."""
    order = np.argsort(reference, kind="stable")
    r = reference[order]
    pos = np.searchsorted(r, query)
    left = np.clip(pos - 1, 0, len(r) - 1)
    right = np.clip(pos, 0, len(r) - 1)
    take_right = np.abs(r[right] - query) < np.abs(query - r[left])
    chosen = np.where(take_right, right, left)
    return order[np.searchsorted(r, r[chosen], side="left")]


def _psw_effect(t: np.ndarray, y: np.ndarray, ps: np.ndarray, w: np.ndarray) -> float:
    """DoWhy's propensity-score weighting (``ips_weight``, ATE), rows weighted by ``w`` (draw counts)."""
    ps = np.clip(ps, *_PS_CLIP)
    a = w * (t / ps + (1 - t) / (1 - ps))
    return float((a * t) @ y / (a @ t) - (a * (1 - t)) @ y / (a @ (1 - t)))


def _psm_effect(t: np.ndarray, y: np.ndarray, ps: np.ndarray, w: np.ndarray) -> float:
    """DoWhy's propensity-score matching (ATE): each treated unit matched to the control nearest in
    score and each control to the nearest treated unit, one neighbour, with replacement; the ATT and
    ATC weighted by the numbers of treated and control units. Rows weighted by ``w`` (draw counts)."""
    tr, co = t == 1, t == 0
    wt, wc = w[tr], w[co]
    att = float(wt @ (y[tr] - y[co][_nearest(ps[co], ps[tr])])) / wt.sum()
    atc = float(wc @ (y[tr][_nearest(ps[tr], ps[co])] - y[co])) / wc.sum()
    return (att * wt.sum() + atc * wc.sum()) / (wt.sum() + wc.sum())


@dataclass(frozen=True)
class _PropensityBootstrap:
    """The bootstrap of both propensity-score estimators on one set of resamples: each resample's
    propensity model (StandardScaler + L2 logistic regression, ``propensity_model``) is fitted once
    and serves both (DoWhy's ``get_confidence_intervals`` refits it per estimator and resample)."""

    full: dict[str, float]  # each estimator on the full sample, through the same code as the replicates
    replicates: dict[str, np.ndarray]

    def interval(self, method: str, estimate: float, level: float) -> tuple[float, float]:
        """DoWhy's bootstrap interval (``_estimate_confidence_intervals_with_bootstrap``): the
        estimate minus the upper and lower quantiles of the replicates' deviations, the quantiles at
        positions int(q * B) of the sorted deviations."""
        b = self.replicates[method]
        b = b[np.isfinite(b)]
        if b.size < 2:
            return math.nan, math.nan
        dev = np.sort(b - self.full[method])
        left = (1 - level) / 2
        lo = estimate - dev[int((1 - left) * len(dev))]
        hi = estimate - dev[int(left * len(dev))]
        return float(lo), float(hi)


def _propensity_bootstrap(frame: pd.DataFrame, treatment: str, outcome: str, adjustment: Sequence[str],
                          n_bootstrap: int, seed: int) -> _PropensityBootstrap:
    from causal._scm import _Logit

    t = frame[treatment].to_numpy(dtype=float)
    y = frame[outcome].to_numpy(dtype=float)
    C = _design(frame, adjustment)
    names = [f"x{j}" for j in range(C.shape[1])]
    n = len(t)

    def scores(w: np.ndarray, warm: Any) -> tuple[np.ndarray, Any]:
        use = w > 0
        Cu, wu = C[use], w[use]
        mean = (wu @ Cu) / wu.sum()
        sd = np.sqrt((wu @ (Cu - mean) ** 2) / wu.sum())
        sd[sd == 0] = 1.0  # StandardScaler leaves constant columns unscaled
        Z = (Cu - mean) / sd
        cols = [Z[:, j] for j in range(Z.shape[1])]
        m = _Logit.fit(names, cols, t[use].astype(np.int64), wu, warm)
        return m.proba(cols)[:, 1], m

    ones = np.ones(n)
    ps, point = scores(ones, None)
    full = {"backdoor.propensity_score_weighting": _psw_effect(t, y, ps, ones),
            "backdoor.propensity_score_matching": _psm_effect(t, y, ps, ones)}
    reps: dict[str, list[float]] = {k: [] for k in full}
    rng = np.random.default_rng(int(seed + 7) % 2**32)
    for _ in range(n_bootstrap):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        use = w > 0
        try:
            ps_b, _ = scores(w, point)
        except (ValueError, np.linalg.LinAlgError):  # a resample holding one treatment value
            for k in reps:
                reps[k].append(math.nan)
            continue
        tb, yb, wb = t[use], y[use], w[use]
        reps["backdoor.propensity_score_weighting"].append(_psw_effect(tb, yb, ps_b, wb))
        reps["backdoor.propensity_score_matching"].append(_psm_effect(tb, yb, ps_b, wb))
    return _PropensityBootstrap(full, {k: np.asarray(v) for k, v in reps.items()})


def _dummy_code(
    frame: pd.DataFrame, graph: CausalGraph, skip: set[str], max_levels: int = 10
) -> tuple[pd.DataFrame, Any, dict[str, str]]:
    """One-hot code text columns once, before DoWhy: each level after the first becomes a 0/1 node
    with the column's parents and children. DoWhy would otherwise re-encode them with scikit-learn
    on each of the few hundred refits of the bootstrap and the refuters (half the check's time on
    10,000 rows). Columns with more than ``max_levels`` levels are left to DoWhy's own encoding."""
    g = graph.to_networkx()
    origin: dict[str, str] = {}
    new_cols: dict[str, np.ndarray] = {}
    drop: list[str] = []
    for col in list(frame.columns):
        s = frame[col]
        if col in skip or (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)):
            continue
        if pd.api.types.is_bool_dtype(s):
            new_cols[col] = s.astype(int).to_numpy()
            continue
        levels = sorted(pd.unique(s.astype(str)))
        if len(levels) > max_levels:
            continue
        parents, children = list(g.predecessors(col)), list(g.successors(col))
        g.remove_node(col)
        drop.append(col)
        for level in levels[1:]:
            name = f"{col}={level}"
            origin[name] = col
            new_cols[name] = (s.astype(str) == level).astype(int).to_numpy()
            g.add_node(name)
            g.add_edges_from((p, name) for p in parents)
            g.add_edges_from((name, c) for c in children)
    out = frame.drop(columns=drop)
    for name, values in new_cols.items():
        out[name] = values
    return out, g, origin


def _original_names(names: Sequence[str], origin: dict[str, str]) -> list[str]:
    return sorted(dict.fromkeys(origin.get(n, n) for n in names))


def _refute(
    model: Any,
    estimand: Any,
    estimate: Any,
    primary: str,
    *,
    simulations: int,
    significance_level: float,
    subset_fraction: float,
    strength: float,
    robustness_value_min: float,
    seed: int,
    sink: list[str],
    regression: tuple[pd.DataFrame, str, str, Sequence[str], float] | None = None,
) -> list[RefutationRow]:
    original = _first(estimate.value)
    out: list[RefutationRow] = []
    specs: list[tuple[str, str, dict[str, Any]]] = [
        ("placebo_treatment", "placebo_treatment_refuter", {"placebo_type": "permute"}),
        ("random_common_cause", "random_common_cause", {}),
        ("data_subset", "data_subset_refuter", {"subset_fraction": subset_fraction}),
    ]
    replica = _RegressionRefuter(*regression) if (
        regression is not None and primary == "backdoor.linear_regression") else None
    for i, (name, method, kw) in enumerate(specs):
        t0 = time.perf_counter()
        try:
            if replica is not None:  # the same procedure as DoWhy's refuter, on NumPy arrays
                with _quiet_dowhy(sink, name):
                    p, new = replica.refute(name, original, simulations, significance_level, subset_fraction,
                                            seed + 101 + i)
            else:
                with _quiet_dowhy(sink, name), seeded_global_numpy(seed + 101 + i):
                    res = model.refute_estimate(
                        estimand, estimate, method_name=method, num_simulations=simulations,
                        random_seed=int((seed + 101 + i) % 2**32), **kw,
                    )
                p = float(res.refutation_result["p_value"]) if res.refutation_result else math.nan
                new = _first(res.new_effect)
        except Exception as exc:  # noqa: BLE001 - reported as an error row; the check then WARNs
            msg = " ".join(str(exc).split())[:200] or type(exc).__name__
            out.append(RefutationRow(name, REFUTER_MEANINGS[name], None, math.nan, original, math.nan, simulations,
                                     f"error: DoWhy's refuter failed on the {primary} estimate: "
                                     f"{type(exc).__name__}: {msg}", time.perf_counter() - t0, "error"))
            continue
        passed: bool | None = bool(p > significance_level)
        detail = f"p = {p:.3g} (fails at p <= {significance_level})"
        if name == "placebo_treatment" and math.isclose(new, original, rel_tol=1e-9, abs_tol=1e-12):
            passed = None
            detail = (f"not informative: DoWhy's placebo refuter does not re-wire the {primary} estimator "
                      "(the placebo estimates equal the original)")
        out.append(RefutationRow(name, REFUTER_MEANINGS[name], passed, p, original, new, simulations, detail,
                                 time.perf_counter() - t0, "ran" if passed is not None else "not applicable"))
    out.append(_sensitivity(model, estimand, estimate, primary, original, significance_level, strength,
                            robustness_value_min))
    return out


def _sensitivity(
    model: Any,
    estimand: Any,
    estimate: Any,
    primary: str,
    original: float,
    significance_level: float,
    strength: float,
    robustness_value_min: float,
) -> RefutationRow:
    name = "unobserved_confounder_sensitivity"
    t0 = time.perf_counter()
    if primary != "backdoor.linear_regression":
        return RefutationRow(name, REFUTER_MEANINGS[name], None, math.nan, original, math.nan, 0,
                             "not run: the partial-R2 sensitivity analysis applies to a back-door "
                             "linear-regression estimate", 0.0, "not applicable")
    covariates = sorted(estimate.estimator._observed_common_causes.columns) if (
        estimate.estimator._observed_common_causes is not None) else []

    def run(bench: list[str]) -> Any:
        with _quiet_dowhy():
            return model.refute_estimate(
                estimand, estimate, method_name="add_unobserved_common_cause",
                simulation_method="linear-partial-R2", benchmark_common_causes=bench,
                effect_fraction_on_treatment=[strength], effect_fraction_on_outcome=[strength],
                significance_level=significance_level, plot_estimate=False,
            )

    if not covariates:
        # DoWhy's partial-R2 refuter needs at least one observed common cause (it reads their columns);
        # the robustness values need none: Cinelli & Hazlett's closed forms from the OLS t-statistic
        rv, rva = robustness_values(estimate, significance_level)
        passed = rva >= robustness_value_min
        detail = (f"no observed common cause (e.g. a randomised experiment): no benchmark is possible, so the "
                  f"robustness value comes from the OLS t-statistic (Cinelli & Hazlett 2020, eq. 18-19): "
                  f"{rv:.3f} (a confounder "
                  f"explaining {rv:.1%} of the residual variance of both treatment and outcome would remove the "
                  f"effect; {rva:.1%} would make it insignificant); fragile below {robustness_value_min:.1%}")
        return RefutationRow(name, REFUTER_MEANINGS[name], passed, math.nan, original, math.nan, 0, detail,
                             time.perf_counter() - t0)
    # the benchmark that pushes the estimate furthest towards (or past) zero is the worst case
    worst: tuple[float, str, Any] | None = None
    sign = 1.0 if original >= 0 else -1.0
    for cov in covariates[:25]:
        try:
            an = run([cov])
        except ValueError:  # benchmark too strong for DoWhy's bound (r2 >= 1): skip it
            continue
        adj = float(np.asarray(an.benchmarking_results["bias_adjusted_estimate"])[0])
        if worst is None or sign * adj < sign * worst[0]:
            worst = (adj, cov, an)
    if worst is None:
        return RefutationRow(name, REFUTER_MEANINGS[name], None, math.nan, original, math.nan, 0,
                             "not run: no observed common cause could serve as a benchmark", 0.0,
                             "not applicable")
    adj, cov, an = worst
    br = an.benchmarking_results
    lo = float(np.asarray(br["bias_adjusted_lower_CI"])[0])
    hi = float(np.asarray(br["bias_adjusted_upper_CI"])[0])
    lo, hi = min(lo, hi), max(lo, hi)
    rv = float(an.stats["robustness_value"])
    r2t = float(np.asarray(br["r2tu_w"])[0])
    r2y = float(np.asarray(br["r2yu_tw"])[0])
    sign_flip = bool(np.sign(adj) != np.sign(original) and original != 0)
    covers_zero = lo <= 0 <= hi
    passed = not (covers_zero or sign_flip)
    verdict = ("the interval includes zero: fragile" if covers_zero else
               "the sign flips: fragile" if sign_flip else "the interval excludes zero: robust")
    detail = (
        f"a confounder {strength:g}x as strong as '{cov}' (partial R2 {r2t:.3f} with the treatment, {r2y:.3f} "
        f"with the outcome) would move the estimate to {adj:.4g} with interval [{lo:.4g}, {hi:.4g}]; "
        f"{verdict}; robustness value {rv:.3f}"
    )
    return RefutationRow(name, REFUTER_MEANINGS[name], passed, math.nan, original, adj, 0, detail,
                         time.perf_counter() - t0)


def robustness_values(estimate: Any, significance_level: float) -> tuple[float, float]:
    """Cinelli & Hazlett's robustness values (RV, and RV at ``significance_level``) of a back-door
    linear-regression estimate, by DoWhy's own ``LinearSensitivityAnalyzer.robustness_value_func``
    on the fitted OLS model. DoWhy's refuter cannot be called without an observed common cause; the
    robustness value needs only the treatment's t-statistic and the residual degrees of freedom."""
    from dowhy.causal_refuters.linear_sensitivity_analyzer import LinearSensitivityAnalyzer

    an = LinearSensitivityAnalyzer(
        estimator=estimate.estimator, data=None, treatment_name=list(estimate.estimator._target_estimand.treatment_variable),
        significance_level=significance_level, benchmark_common_causes=[], common_causes_order=[],
    )
    an.degree_of_freedom = int(an.estimator_model.df_resid)
    an.t_stats = float(np.asarray(an.estimator_model.tvalues[an.treatment_name])[0])
    return float(an.robustness_value_func()), float(an.robustness_value_func(alpha=significance_level))


def _robust_ols_interval(est: Any, level: float, t_val: float, c_val: float) -> tuple[float, float, str]:
    """The back-door regression's interval with HC3 (heteroskedasticity-robust) standard errors,
    from statsmodels on DoWhy's fitted OLS model. DoWhy's own interval assumes homoskedastic errors,
    which a 0/1 outcome never has; with covariates in a randomised comparison the robust
    (sandwich) variance is the one that holds without a correct model (Lin 2013). Falls back to
    DoWhy's interval when the fitted model is not the expected one."""
    model = getattr(est.estimator, "model", None)
    d = float(t_val) - float(c_val)
    try:
        coef = float(np.asarray(model.params)[1])
        if not math.isclose(coef * d, _first(est.value), rel_tol=1e-6, abs_tol=1e-9):
            raise ValueError("the treatment is not the model's second parameter")
        robust = model.get_robustcov_results(cov_type="HC3")
        lo, hi = (float(v) * d for v in np.asarray(robust.conf_int(alpha=1 - level))[1])
        return min(lo, hi), max(lo, hi), "analytic (OLS, HC3 robust standard errors)"
    except (AttributeError, IndexError, TypeError, ValueError):
        lo, hi = _ci(est.get_confidence_intervals(confidence_level=level))
        return lo, hi, "analytic (OLS, DoWhy's homoskedastic standard errors)"
