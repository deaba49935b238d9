"""Effects of a (sensitive) treatment on a model's score through a fitted SCM.

* **Total effect** E[s(X) | do(T=a)] − E[s(X) | do(T=c)]: intervene on T, draw its modelled
  descendants from their fitted mechanisms with fresh noise, re-score with the model, average over
  the sampled individuals (whose exogenous parents keep their observed values). Both arms share
  their noise draws (common random numbers).
* **Natural direct / indirect effects** through named mediators M by Pearl's mediation formula,
  evaluated with the fitted conditional distributions (interventional; no abduction, so it works
  for categorical mediators): with the same fresh noise in every world,
  NDE = E[s(X_{a, M_c})] − E[s(X_c)] and NIE = E[s(X_a)] − E[s(X_{a, M_c})], where X_{a, M_c} has
  T set to a and the mediators drawn as under c. NDE + NIE is the total effect, exactly. The
  decomposition is identified under the usual assumptions: no unobserved confounding of T, M and
  the score's inputs given the graph, and no mediator-outcome confounder affected by T.
* **Counterfactual fairness** (Kusner et al. 2017): for each individual, the inputs had T been
  each other value, re-scored; a decision flip rate and mean |Δscore|, overall and by factual
  group. Abduction is exact for additive-noise nodes (the residual). For a categorical descendant
  the noise cannot be recovered from one observation: it is drawn from its posterior given the
  observed category under a Gumbel-max mechanism (``causal._scm.gumbel_posterior``); this coupling
  of the factual and counterfactual category is an assumption (counterfactual stability: a category
  only changes to one whose probability rose relatively more), stated in every result.
* **Continuous treatment** with no named contrast: the per-unit effect, a shift intervention
  T := T + 1 for every individual against T as observed (``treated`` is ``"+1"``).

Intervals: every printed interval comes from the same bootstrap over refits: rows resampled with
replacement, the SCM refitted, the quantities recomputed (``n_bootstrap`` replicates). Effects
and mean |Δscore| get estimate ± t_{B−1} × the replicates' standard deviation (audit.stats'
normal_interval with B − 1 degrees of freedom: with tens of replicates these ends are far steadier than
percentile ends, and the Student quantile covers the Monte-Carlo error of the SE itself). The flip
rate gets a Wilson interval at the effective sample size n·p(1−p)/(n·se²) capped at n, so it
includes the uncertainty of the fitted mechanisms and keeps Wilson's behaviour near 0. The old
interval of mean |Δscore| over individuals given the fitted SCM ignored the mechanisms'
uncertainty and covered 37.5 % of the time. DoWhy's ``fit_and_compute`` is not used because it
refits on 75 % subsamples drawn without replacement, whose spread understates the sampling
variance of the full-sample estimate by about a factor of three.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from audit import stats
from causal._graph import CausalGraph
from causal._scm import (
    FittedSCM,
    SCMPlan,
    apply_to_inputs,
    blas_single_thread,
    fit_scm,
    is_categorical,
    plain_objects,
    plan_scm,
    treatment_levels,
)

__all__ = [
    "CounterfactualResult",
    "EffectInterval",
    "SCMEffects",
    "counterfactual_fairness",
    "scm_analysis",
    "scm_effects",
    "wilson_interval",
]

ScoreFn = Callable[[pd.DataFrame], np.ndarray]
PredictFn = Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray | None]]  # (score, decision or None)

#: the assumption under which counterfactuals through categorical descendants are computed
CATEGORICAL_ABDUCTION = (
    "categorical descendants ({nodes}) follow a Gumbel-max mechanism on their fitted class probabilities; "
    "their noise is not identified from one observation, so each individual's is drawn from its posterior "
    "given the observed category (counterfactual stability, Oberst & Sontag 2019): another category replaces "
    "the observed one only when its probability rose relatively more"
)
EXACT_ABDUCTION = "noise recovered exactly from each individual's data (invertible additive-noise mechanisms)"
SHIFT = "+1"  # the treated level of a continuous treatment without a named contrast
OBSERVED = "observed"


@dataclass(frozen=True)
class EffectInterval:
    """A point estimate with its bootstrap interval and standard error."""

    estimate: float
    ci_low: float
    ci_high: float
    std_error: float

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "std_error": self.std_error}


@dataclass(frozen=True)
class SCMEffects:
    """SCM-based effects of ``treatment`` on the score, one entry per treated level."""

    treatment: str
    control: Any
    treated: tuple[Any, ...]
    total: dict[str, EffectInterval]  # key: str(treated level)
    mean_score_do: dict[str, float]  # E[score | do(T=v)] for control and treated levels
    mediators: tuple[str, ...]  # mediators on a path to the model's inputs
    mediators_off_path: tuple[str, ...]  # named, but no path to the model's inputs
    direct: dict[str, EffectInterval]
    indirect: dict[str, EffectInterval]
    total_counterfactual: dict[str, EffectInterval]  # NDE + NIE (equal to ``total``)
    mediation_error: str  # why NDE/NIE could not be computed ("" when they were)
    plan: SCMPlan
    mechanisms: dict[str, str]
    n_rows: int
    n_bootstrap: int
    n_bootstrap_failed: int
    confidence_level: float
    boot_total: dict[str, tuple[float, ...]] = field(default_factory=dict)
    contrast: str = "levels"  # "levels" or "per-unit shift (T := T + 1)"
    mediation_method: str = (
        "Pearl's mediation formula with the fitted conditional distributions (interventional: fresh noise "
        "shared by every world, mediators drawn as under the control value)"
    )


def _interval(point: float, boots: Sequence[float], level: float) -> EffectInterval:
    """estimate ± t × the bootstrap standard error (audit.stats.normal_interval with B − 1 degrees
    of freedom): the SE is itself estimated from B replicates (its square ~ σ²·χ²_{B−1}/(B−1)), so
    the Student quantile with B − 1 degrees of freedom accounts for the replicates' Monte-Carlo error
    (2.01 instead of 1.96 with 50 replicates)."""
    b = np.asarray([x for x in boots if np.isfinite(x)], dtype=float)
    if b.size < 2 or not math.isfinite(point):
        return EffectInterval(float(point), math.nan, math.nan, math.nan)
    se = float(b.std(ddof=1))
    lo, hi = stats.normal_interval(point, se, level, df=b.size - 1)
    return EffectInterval(float(point), float(lo), float(hi), se)


def _flip_interval(p: float, n: int, boots: Sequence[float], level: float) -> tuple[float, float, float]:
    """Wilson interval at the effective sample size implied by the refit bootstrap (module doc);
    plain Wilson over individuals without replicates. Returns (lo, hi, effective n)."""
    if n == 0 or not math.isfinite(p):
        return math.nan, math.nan, math.nan
    b = np.asarray([x for x in boots if np.isfinite(x)], dtype=float)
    n_eff = float(n)
    if b.size >= 2:
        var = float(b.var(ddof=1))
        if var > 0 and 0 < p < 1:
            n_eff = min(float(n), p * (1 - p) / var)
    lo, hi = stats.wilson(p * n_eff, n_eff, level)
    return float(lo), float(hi), n_eff


def _batched_predict(predict: PredictFn, frames: Mapping[str, pd.DataFrame]) -> dict[str, tuple[np.ndarray, Any]]:
    """Scores (and decisions) of each frame with ONE call to the model on their concatenation: a
    pipeline's per-call overhead (column checks, encoders, a Python loop over trees) dominates."""
    keys = list(frames)
    if not keys:
        return {}
    sizes = [len(frames[k]) for k in keys]
    s, d = predict(pd.concat([frames[k] for k in keys], ignore_index=True))
    s = np.asarray(s, dtype=float)
    out, start = {}, 0
    for k, n in zip(keys, sizes, strict=True):
        out[k] = (s[start:start + n], None if d is None else np.asarray(d)[start:start + n])
        start += n
    return out


@dataclass(frozen=True)
class _Setup:
    plan: SCMPlan
    rows: pd.DataFrame
    X: pd.DataFrame
    control: Any
    treated: tuple[Any, ...]
    shift: bool

    @property
    def levels(self) -> tuple[Any, ...]:
        return (self.control, *self.treated)

    def setting(self, rows: pd.DataFrame, v: Any) -> Any:
        """The treatment's value(s) under level ``v`` for ``rows``."""
        if not self.shift:
            return v
        t = rows[self.plan.treatment].to_numpy(dtype=float)
        return t + 1.0 if v == SHIFT else t


def _setup(rows: pd.DataFrame, X: pd.DataFrame, graph: CausalGraph, treatment: str, treatment_value: Any,
           control_value: Any) -> _Setup:
    rows = plain_objects(rows.reset_index(drop=True))
    X = X.reset_index(drop=True)
    plan = plan_scm(graph, treatment, list(X.columns), rows)
    keep = rows[list(plan.nodes)].notna().all(axis=1).to_numpy()
    rows, X = rows.loc[keep].reset_index(drop=True), X.loc[keep].reset_index(drop=True)
    t = rows[treatment]
    continuous = not is_categorical(t) and t.nunique() > 10
    if continuous and treatment_value is None and control_value is None:
        rows[treatment] = t.astype(float)
        return _Setup(plan, rows, X, OBSERVED, (SHIFT,), True)
    control, treated = treatment_levels(t, treatment, treatment_value=treatment_value, control_value=control_value)
    return _Setup(plan, rows, X, control, tuple(treated), False)


def _replicate(
    setup: _Setup,
    fitted: FittedSCM,
    rows: pd.DataFrame,
    X: pd.DataFrame,
    predict: PredictFn,
    mediators: Sequence[str],
    seed: int,
    *,
    effects: bool,
    factual: tuple[np.ndarray, np.ndarray] | None,
    self_check: bool = False,
) -> dict[str, Any]:
    """Every quantity on one (re)fitted SCM: effects by the mediation formula, counterfactual
    changes when ``factual`` (score, decision of ``X``) is given. One call to the model."""
    plan = fitted.plan
    tr = plan.treatment
    changed = plan.inputs_changed
    c = setup.control
    frames: dict[str, pd.DataFrame] = {}
    if effects:
        noise = fitted.draw_noise(rows, seed)
        world_c = fitted.propagate_arrays(noise, {tr: setup.setting(rows, c)})
        frames[f"do:{c}"] = apply_to_inputs(X, world_c, changed)
        for v in setup.treated:
            frames[f"do:{v}"] = apply_to_inputs(X, fitted.propagate_arrays(noise, {tr: setup.setting(rows, v)}), changed)
            if mediators:
                fixed = {tr: setup.setting(rows, v), **{m: world_c[m] for m in mediators}}
                frames[f"nested:{v}"] = apply_to_inputs(X, fitted.propagate_arrays(noise, fixed), changed)
    if factual is not None:
        fact = np.full(len(rows), OBSERVED, dtype=object) if setup.shift else rows[tr].astype(str).to_numpy()
        post = fitted.abduct(rows, seed + 7919)
        for v in setup.levels:
            world = fitted.propagate_arrays(post, {tr: setup.setting(rows, v)})
            if self_check:  # every row, the factual level included (it must reproduce the factual world)
                frames[f"cf:{v}"] = apply_to_inputs(X, world, changed)
            else:  # only the rows whose factual level differs: the others are not used
                other = np.flatnonzero(fact != str(v))
                frames[f"cf:{v}"] = apply_to_inputs(X.iloc[other].reset_index(drop=True),
                                                    {c: world[c][other] for c in changed}, changed)
    pred = _batched_predict(predict, frames)
    out: dict[str, Any] = {}
    if effects:
        mean = {k: float(np.mean(s)) for k, (s, _) in pred.items() if not k.startswith("cf:")}
        for v in setup.levels:
            out[f"do:{v}"] = mean[f"do:{v}"]
        for v in setup.treated:
            out[f"total:{v}"] = mean[f"do:{v}"] - mean[f"do:{c}"]
            if mediators:
                out[f"nde:{v}"] = mean[f"nested:{v}"] - mean[f"do:{c}"]
                out[f"nie:{v}"] = mean[f"do:{v}"] - mean[f"nested:{v}"]
    if factual is not None:
        s0, d0 = factual
        n, k = len(rows), len(setup.levels)
        deltas = np.full((n, k), np.nan)
        flips = np.zeros((n, k), dtype=bool)
        self_delta = 0.0
        for j, v in enumerate(setup.levels):
            s1, d1 = pred[f"cf:{v}"]
            same = fact == str(v)
            if self_check:
                if same.any():
                    self_delta = max(self_delta, float(np.max(np.abs(s1[same] - s0[same]))))
                s1, d1 = s1[~same], d1[~same]
            deltas[~same, j] = s1 - s0[~same]
            flips[~same, j] = d1 != d0[~same]
        use = np.isin(fact, [str(v) for v in setup.levels]) & ~np.all(np.isnan(deltas), axis=1)
        max_abs = np.where(np.isnan(deltas), -np.inf, np.abs(deltas)).max(axis=1)
        flipped: np.ndarray = np.asarray(flips.any(axis=1))
        out.update({"cf.deltas": deltas, "cf.max_abs": max_abs, "cf.flipped": flipped, "cf.use": use,
                    "cf.factual": fact, "cf.self": self_delta,
                    "flip_rate": float(flipped[use].mean()) if use.any() else math.nan,
                    "mean_abs_delta": float(max_abs[use].mean()) if use.any() else math.nan})
        for gname in sorted(set(fact[use].tolist())):
            g = use & (fact == gname)
            out[f"flip_rate|{gname}"] = float(flipped[g].mean())
            out[f"mean_abs_delta|{gname}"] = float(max_abs[g].mean())
    return out


@dataclass(frozen=True)
class CounterfactualResult:
    """Per-individual counterfactual changes and their summaries."""

    treatment: str
    levels: tuple[Any, ...]
    units: pd.DataFrame  # group, score, max_abs_delta, flipped, one delta column per level
    overall: dict[str, float]
    by_group: pd.DataFrame
    plan: SCMPlan
    mechanisms: dict[str, str]
    n_rows: int
    confidence_level: float
    self_check_max_abs_delta: float  # |Δscore| when the "counterfactual" value is the factual one
    n_bootstrap: int = 0
    n_bootstrap_failed: int = 0
    interval_method: str = ""
    abduction: str = EXACT_ABDUCTION


def _interval_method(n_boot: int) -> str:
    if n_boot >= 2:
        return (f"bootstrap over {n_boot} refits of the mechanisms (rows resampled with replacement, SCM refitted, "
                "counterfactuals recomputed): mean |Δscore| estimate ± t(B−1)·SE of the replicates; flip rate Wilson at "
                "the effective sample size implied by the replicates' variance (at most n)")
    return ("no refits (n_bootstrap < 2): flip rate Wilson over individuals given the fitted SCM; no interval for "
            "mean |Δscore| (it would ignore the mechanisms' uncertainty)")


@blas_single_thread
def scm_analysis(
    rows: pd.DataFrame,
    X: pd.DataFrame,
    predict: PredictFn,
    graph: CausalGraph,
    treatment: str,
    *,
    mediators: Sequence[str] = (),
    treatment_value: Any = None,
    control_value: Any = None,
    mechanisms: str = "linear",
    n_bootstrap: int = 50,
    confidence_level: float = 0.95,
    seed: int = 0,
    effects: bool = True,
    counterfactuals: bool = True,
) -> tuple[SCMEffects | None, CounterfactualResult | None]:
    """Effects (total, and with mediators natural direct / indirect) and counterfactual fairness
    of ``treatment`` on the model behind ``predict`` (score, decision), sharing one fitted SCM and
    one bootstrap over refits; ``X`` holds the model inputs of ``rows``."""
    st = _setup(rows, X, graph, treatment, treatment_value, control_value)
    plan, rows, X = st.plan, st.rows, st.X
    on_path = tuple(m for m in mediators if m in plan.affected)
    off_path = tuple(m for m in mediators if m not in plan.affected)
    mediation_error = ""
    if mediators and not on_path:
        mediation_error = (
            f"none of the mediators ({', '.join(mediators)}) lies on a causal path from '{treatment}' to the "
            "model's inputs"
        )
    fitted = fit_scm(plan, rows, kind=mechanisms, seed=seed)
    factual = predict(X) if counterfactuals else None
    if factual is not None:
        factual = (np.asarray(factual[0], dtype=float), np.asarray(factual[1]))
    point = _replicate(st, fitted, rows, X, predict, on_path, seed, effects=effects, factual=factual, self_check=True)
    rng = np.random.default_rng(seed)
    boots: list[dict[str, Any]] = []
    failed = 0
    n = len(rows)
    for b in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        rb, xb = rows.iloc[idx].reset_index(drop=True), X.iloc[idx].reset_index(drop=True)
        fb_factual = None if factual is None else (factual[0][idx], factual[1][idx])
        try:
            fb = fit_scm(plan, rb, kind=mechanisms, seed=seed + 1 + b)
            boots.append(_replicate(st, fb, rb, xb, predict, on_path, seed + 1 + b, effects=effects,
                                    factual=fb_factual))
        except (ValueError, np.linalg.LinAlgError):  # e.g. a resample holding one class only
            failed += 1
    if n_bootstrap and failed > 0.1 * n_bootstrap:
        raise RuntimeError(f"{failed} of {n_bootstrap} bootstrap refits of the SCM failed")
    level = confidence_level

    def iv(key: str) -> EffectInterval:
        return _interval(point[key], [bb.get(key, math.nan) for bb in boots], level)

    keys = [str(v) for v in st.treated]
    eff = None
    if effects:
        eff = SCMEffects(
            treatment=treatment,
            control=st.control,
            treated=st.treated,
            total={k: iv(f"total:{k}") for k in keys},
            mean_score_do={str(v): point[f"do:{v}"] for v in st.levels},
            mediators=on_path,
            mediators_off_path=off_path,
            direct={k: iv(f"nde:{k}") for k in keys} if on_path else {},
            indirect={k: iv(f"nie:{k}") for k in keys} if on_path else {},
            total_counterfactual={k: iv(f"total:{k}") for k in keys} if on_path else {},
            mediation_error=mediation_error,
            plan=plan,
            mechanisms=dict(fitted.mechanisms),
            n_rows=n,
            n_bootstrap=n_bootstrap,
            n_bootstrap_failed=failed,
            confidence_level=level,
            boot_total={k: tuple(bb[f"total:{k}"] for bb in boots) for k in keys},
            contrast="per-unit shift (T := T + 1 against T as observed)" if st.shift else "levels",
        )
    cf = None
    if factual is not None:
        cf = _counterfactual_result(st, fitted, point, boots, factual, n_bootstrap, failed, level)
    return eff, cf


def _counterfactual_result(st: _Setup, fitted: FittedSCM, point: dict[str, Any], boots: list[dict[str, Any]],
                           factual: tuple[np.ndarray, np.ndarray], n_boot: int, failed: int,
                           level: float) -> CounterfactualResult:
    use = point["cf.use"]
    units = pd.DataFrame({"group": point["cf.factual"], "score": factual[0], "max_abs_delta": point["cf.max_abs"],
                          "flipped": point["cf.flipped"]})
    for j, v in enumerate(st.levels):
        units[f"delta_if_{v}"] = point["cf.deltas"][:, j]
    units = units.loc[use].reset_index(drop=True)
    m = len(units)
    with_boot = n_boot >= 2 and len(boots) >= 2

    def summary(suffix: str, count: int) -> tuple[float, float, float, float, float, float]:
        p = point[f"flip_rate{suffix}"]
        mad = point[f"mean_abs_delta{suffix}"]
        if with_boot:
            lo, hi, _ = _flip_interval(p, count, [b.get(f"flip_rate{suffix}", math.nan) for b in boots], level)
            mi = _interval(mad, [b.get(f"mean_abs_delta{suffix}", math.nan) for b in boots], level)
            return p, lo, hi, mad, mi.ci_low, mi.ci_high
        lo, hi, _ = _flip_interval(p, count, [], level)
        return p, lo, hi, mad, math.nan, math.nan

    fr, fr_lo, fr_hi, mad, mad_lo, mad_hi = summary("", m)
    overall = {
        "n": float(m),
        "flip_rate": fr, "flip_rate.ci_low": fr_lo, "flip_rate.ci_high": fr_hi,
        "mean_abs_delta": mad, "mean_abs_delta.ci_low": mad_lo, "mean_abs_delta.ci_high": mad_hi,
    }
    groups = []
    for gname, sub in units.groupby("group", sort=True):
        g_fr, g_lo, g_hi, g_mad, g_mlo, g_mhi = summary(f"|{gname}", len(sub))
        signed = sub[[c for c in sub.columns if c.startswith("delta_if_")]].mean(axis=1, skipna=True)
        groups.append({
            "group": str(gname), "n": len(sub), "flip_rate": g_fr, "flip_rate_ci_low": g_lo,
            "flip_rate_ci_high": g_hi, "mean_abs_delta": g_mad, "mean_abs_delta_ci_low": g_mlo,
            "mean_abs_delta_ci_high": g_mhi, "mean_delta": float(signed.mean()),
        })
    cats = [n for n in st.plan.affected if n in st.plan.categorical]
    return CounterfactualResult(
        treatment=st.plan.treatment,
        levels=st.levels,
        units=units,
        overall=overall,
        by_group=pd.DataFrame(groups),
        plan=st.plan,
        mechanisms=dict(fitted.mechanisms),
        n_rows=len(st.rows),
        confidence_level=level,
        self_check_max_abs_delta=float(point["cf.self"]),
        n_bootstrap=n_boot,
        n_bootstrap_failed=failed,
        interval_method=_interval_method(n_boot if with_boot else 0),
        abduction=CATEGORICAL_ABDUCTION.format(nodes=", ".join(cats)) if cats else EXACT_ABDUCTION,
    )


def scm_effects(
    rows: pd.DataFrame,
    X: pd.DataFrame,
    score: ScoreFn,
    graph: CausalGraph,
    treatment: str,
    *,
    mediators: Sequence[str] = (),
    treatment_value: Any = None,
    control_value: Any = None,
    mechanisms: str = "linear",
    n_bootstrap: int = 50,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> SCMEffects:
    """Total (and, with mediators, natural direct and indirect) effects of ``treatment`` on
    ``score`` through an SCM fitted on ``rows``; ``X`` holds the model inputs of the same rows."""
    eff, _ = scm_analysis(
        rows, X, lambda Z: (score(Z), None), graph, treatment, mediators=mediators,
        treatment_value=treatment_value, control_value=control_value, mechanisms=mechanisms,
        n_bootstrap=n_bootstrap, confidence_level=confidence_level, seed=seed, counterfactuals=False,
    )
    assert eff is not None
    return eff


def counterfactual_fairness(
    rows: pd.DataFrame,
    X: pd.DataFrame,
    predict: PredictFn,
    graph: CausalGraph,
    treatment: str,
    *,
    treatment_value: Any = None,
    control_value: Any = None,
    mechanisms: str = "linear",
    n_bootstrap: int = 50,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> CounterfactualResult:
    """Flip rate and |Δscore| when each individual's ``treatment`` is set to each other value."""
    _, cf = scm_analysis(
        rows, X, predict, graph, treatment, treatment_value=treatment_value, control_value=control_value,
        mechanisms=mechanisms, n_bootstrap=n_bootstrap, confidence_level=confidence_level, seed=seed,
        effects=False,
    )
    assert cf is not None
    return cf


def wilson_interval(k: int, n: int, level: float) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (audit.stats.wilson)."""
    lo, hi = stats.wilson(k, n, level)
    return float(lo), float(hi)
