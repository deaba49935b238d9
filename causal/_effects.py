"""Effects of a (sensitive) treatment on a model's score through a fitted SCM.

* **Total effect** E[s(X) | do(T=a)] − E[s(X) | do(T=c)]: set T, let its modelled descendants
  follow from their fitted mechanisms, re-score with the model, average over the sampled individuals
  (whose exogenous parents keep their observed values).
* **Natural direct / indirect effects** through named mediators M by Pearl's mediation formula
  with the fitted conditional distributions (categorical mediators too): NDE = E[s(X_{a, M_c})] −
  E[s(X_c)] and NIE = E[s(X_a)] − E[s(X_{a, M_c})], where X_{a, M_c} has T set to a and the mediators
  as under c. NDE + NIE is the total effect, exactly. The decomposition is identified under the
  usual assumptions: no unobserved confounding of T, M and the score's inputs given the graph, and
  no mediator-outcome confounder affected by T.
* **One noise per individual, shared by every world.** Each individual's noise is recovered from
  their data (abduction: the residual of an additive-noise node, a posterior draw for a categorical
  one, as for counterfactual fairness below) and every world — do(T=c), do(T=a), the nested
  X_{a, M_c} and the counterfactuals — is computed from it. Under their own level the individual's
  world is their factual one, so E[s | do(T=v)] averages the factual scores of the individuals at v
  and the counterfactual scores of the others: averaged over the data, the noise posterior is the
  noise's prior, so this is the interventional mean, with no Monte-Carlo noise in the factual arm.
  The total effect is then the average individual counterfactual effect of the fairness check. Where
  the additive-noise model is only approximate (a residual spread that differs between groups, a
  spike such as 40 hours a week) the factual arm still holds each individual's real values, where
  resampling pooled residuals would redistribute them.
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
replacement, the SCM refitted, the quantities recomputed (``n_bootstrap`` replicates). A replicate
is computed as the original rows weighted by how often they were drawn (the same fits and means as
on the resampled rows, each distinct row computed once); an individual's Gumbel draws for a
categorical node are fixed and resampled with the individual, so a replicate's posterior noise is a
function of its refitted probabilities. The worlds of every replicate are scored together, in a few
large calls to the model. Effects and mean |Δscore| get estimate ± t_{B−1} × the replicates'
standard deviation (audit.stats' normal_interval with B − 1 degrees of freedom: with tens of
replicates these ends are far steadier than percentile ends, and the Student quantile covers the
Monte-Carlo error of the SE itself). The flip rate gets a Wilson interval at the effective sample
size n·p(1−p)/(n·se²) capped at n, so it includes the uncertainty of the fitted mechanisms and keeps
Wilson's behaviour near 0. The old interval of mean |Δscore| over individuals given the fitted SCM
ignored the mechanisms' uncertainty and covered 37.5 % of the time. DoWhy's ``fit_and_compute`` is
not used because it refits on 75 % subsamples drawn without replacement, whose spread understates
the sampling variance of the full-sample estimate by about a factor of three.
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
    GumbelVariates,
    SCMPlan,
    blas_single_thread,
    fit_linear_arrays,
    fit_scm,
    input_column,
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
        "Pearl's mediation formula with the fitted conditional distributions (each individual's noise recovered "
        "from their data and shared by every world, mediators as under the control value)"
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


#: rows per call to the model when the worlds of every replicate are scored (bounds one call's memory)
PREDICT_CHUNK = 65_536


class _Scorer:
    """The model inputs of every world of every replicate, scored together with a few large calls to
    the model: a pipeline's per-call overhead (column checks, encoders, a Python loop over trees)
    dominated 50 calls of a few thousand rows.

    A queued row is a position into the analysed rows and the values of the inputs an intervention
    changes; every other input keeps the row's factual value. Rows whose changed inputs are the
    factual ones except the treatment (a mediator held at its observed value) are the same input in
    every replicate: each is scored once; when the model does not read the treatment they are the
    factual rows and keep the factual score."""

    def __init__(self, X: pd.DataFrame, changed: Sequence[str], treatment: str,
                 observed: Mapping[str, np.ndarray]) -> None:
        self.X = X
        self.changed = list(changed)
        self.treatment = treatment
        self.observed = observed
        self.parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self.size = 0

    def add(self, rows: np.ndarray, values: Mapping[str, np.ndarray]) -> slice:
        """Queue ``rows`` with the changed inputs ``values`` (one entry per row); returns where their
        scores will be in ``run``'s output."""
        start = self.size
        self.parts.append((np.asarray(rows, dtype=np.int64), {c: np.asarray(values[c]) for c in self.changed}))
        self.size += len(rows)
        return slice(start, self.size)

    def run(self, predict: PredictFn, factual: tuple[np.ndarray, np.ndarray | None]
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores (and decisions, or None) of every queued row, in queue order."""
        s0, d0 = factual
        scores = np.empty(self.size)
        decisions = None if d0 is None else np.empty(self.size, dtype=np.asarray(d0).dtype)
        if not self.size:
            return scores, decisions
        rows = np.concatenate([r for r, _ in self.parts])
        values = {c: _concat([v[c] for _, v in self.parts]) for c in self.changed}
        fixed = np.ones(len(rows), dtype=bool)  # every changed input but the treatment is factual
        for c in self.changed:
            if c != self.treatment:
                fixed &= _equal(values[c], self.observed[c][rows])
        free = np.flatnonzero(~fixed)
        fixed_pos = np.flatnonzero(fixed)
        reads_treatment = self.treatment in values
        if reads_treatment:
            t_codes, t_uniq = pd.factorize(values[self.treatment][fixed_pos], use_na_sentinel=False)
            key = rows[fixed_pos] * max(len(t_uniq), 1) + t_codes
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
            todo = np.concatenate([free, fixed_pos[first]])
        else:
            todo = free
            scores[fixed_pos] = s0[rows[fixed_pos]]
            if decisions is not None:
                decisions[fixed_pos] = np.asarray(d0)[rows[fixed_pos]]
        s_todo = np.empty(len(todo))
        d_todo = None if decisions is None else np.empty(len(todo), dtype=decisions.dtype)
        for start in range(0, len(todo), PREDICT_CHUNK):
            part = todo[start:start + PREDICT_CHUNK]
            frame = self.X.take(rows[part]).reset_index(drop=True)
            for c in self.changed:
                frame[c] = input_column(values[c][part], self.X[c].dtype)
            s, d = predict(frame)
            s_todo[start:start + len(part)] = np.asarray(s, dtype=float)
            if d_todo is not None:
                d_todo[start:start + len(part)] = np.asarray(d)
        scores[free] = s_todo[:len(free)]
        if decisions is not None and d_todo is not None:
            decisions[free] = d_todo[:len(free)]
        if reads_treatment and len(fixed_pos):
            scores[fixed_pos] = s_todo[len(free):][inverse]
            if decisions is not None and d_todo is not None:
                decisions[fixed_pos] = d_todo[len(free):][inverse]
        return scores, decisions


def _concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    if all(a.dtype.kind in "iufb" for a in arrays):
        return np.concatenate(arrays)
    return np.concatenate([a.astype(object) for a in arrays])


def _equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise equality of two columns (numbers by value, anything else as objects)."""
    if a.dtype.kind in "iufb" and b.dtype.kind in "iufb":
        return np.asarray(a == b)
    return np.asarray(a.astype(object) == b.astype(object), dtype=bool)


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

    def setting(self, t: np.ndarray, v: Any) -> Any:
        """The treatment's value(s) under level ``v`` for rows whose observed treatment is ``t``."""
        if not self.shift:
            return v
        t = np.asarray(t, dtype=float)
        return t + 1.0 if v == SHIFT else t

    def factual_level(self) -> np.ndarray:
        """Each row's observed level as text (``observed`` for a shift contrast)."""
        if self.shift:
            return np.full(len(self.rows), OBSERVED, dtype=object)
        return self.rows[self.plan.treatment].astype(str).to_numpy(dtype=object)


def _setup(rows: pd.DataFrame, X: pd.DataFrame, graph: CausalGraph, treatment: str, treatment_value: Any,
           control_value: Any) -> _Setup:
    rows = plain_objects(rows.reset_index(drop=True))
    X = plain_objects(X.reset_index(drop=True))
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


@dataclass
class _Queued:
    """One replicate's worlds, queued on the scorer: the rows it covers (positions into the analysed
    rows), their weights and factual levels, and where each world's scores will be."""

    rows: np.ndarray
    weights: np.ndarray
    factual: np.ndarray
    cf: dict[str, tuple[np.ndarray, slice]]  # level -> (mask of rows whose level differs, scores)
    nested: dict[str, slice]  # treated level -> scores of T := level with the mediators as under control
    self_check: dict[str, tuple[np.ndarray, slice]]  # level -> (mask of rows at that level, scores)


def _queue_replicate(st: _Setup, fitted: FittedSCM, scorer: _Scorer, observed: Mapping[str, np.ndarray],
                     factual_level: np.ndarray, variates: Mapping[str, GumbelVariates], rows: np.ndarray,
                     weights: np.ndarray, mediators: Sequence[str], *, effects: bool, self_check: bool) -> _Queued:
    """Abduct every covered individual's noise on ``fitted``, build the worlds each quantity needs,
    and queue their model inputs (nothing is scored here).

    Every world shares the individual's abducted noise, so under the individual's own level the
    world is the factual one: it keeps the factual score and is not queued (``self_check`` queues it
    once, to show that it reproduces the factual scores). E[s | do(T=v)] averages the factual score
    of the rows at v and the counterfactual score of the others (the marginal of the noise posterior
    over the data is the noise's prior, so this is the interventional mean)."""
    plan = fitted.plan
    tr = plan.treatment
    changed = plan.inputs_changed
    vals = {n: observed[n][rows] for n in plan.nodes}
    drawn = {node: gv.take(rows, fitted.models[node].classes) for node, gv in variates.items()}
    noise = fitted.abduct_arrays(vals, variates=drawn)
    fact = factual_level[rows]
    worlds: dict[str, dict[str, np.ndarray]] = {}
    cf: dict[str, tuple[np.ndarray, slice]] = {}
    checks: dict[str, tuple[np.ndarray, slice]] = {}
    for v in st.levels:
        world = fitted.propagate_arrays(noise, {tr: st.setting(vals[tr], v)})
        same = fact == str(v)
        if same.any():
            if self_check:
                checks[str(v)] = (same, scorer.add(rows[same], {c: world[c][same] for c in changed}))
            for n in plan.nodes:  # the factual world exactly (no rounding of recovered noise)
                world[n] = np.where(same, vals[n], world[n]) if world[n].dtype.kind in "iufb" else (
                    _where_object(same, vals[n], world[n]))
        worlds[str(v)] = world
        other = ~same
        cf[str(v)] = (other, scorer.add(rows[other], {c: world[c][other] for c in changed}))
    nested: dict[str, slice] = {}
    if effects and mediators:
        base = worlds[str(st.control)]
        for v in st.treated:
            world = fitted.propagate_arrays(noise, {tr: st.setting(vals[tr], v), **{m: base[m] for m in mediators}})
            nested[str(v)] = scorer.add(rows, {c: world[c] for c in changed})
    return _Queued(rows, weights, fact, cf, nested, checks)


def _where_object(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.asarray(b).astype(object, copy=True)
    out[mask] = np.asarray(a)[mask]
    return out


def _summarise(st: _Setup, q: _Queued, scores: np.ndarray, decisions: np.ndarray | None,
               factual: tuple[np.ndarray, np.ndarray | None], mediators: Sequence[str], *, effects: bool,
               detail: bool) -> dict[str, Any]:
    """Every quantity of one replicate from its scored worlds: weighted means over its rows (a row
    drawn k times weighs k). ``detail`` keeps the per-row counterfactual arrays (full sample)."""
    s0_all, d0_all = factual
    s0 = s0_all[q.rows]
    d0 = None if d0_all is None else np.asarray(d0_all)[q.rows]
    w = q.weights
    wsum = float(w.sum())
    levels = [str(v) for v in st.levels]
    by_level: dict[str, np.ndarray] = {}
    dec_level: dict[str, np.ndarray] = {}
    for v in levels:
        other, sl = q.cf[v]
        s = s0.copy()
        s[other] = scores[sl]
        by_level[v] = s
        if d0 is not None and decisions is not None:
            d = d0.copy()
            d[other] = decisions[sl]
            dec_level[v] = d
    out: dict[str, Any] = {}
    if effects:
        mean = {v: float(w @ by_level[v]) / wsum for v in levels}
        c = str(st.control)
        for v in levels:
            out[f"do:{v}"] = mean[v]
        for v in (str(t) for t in st.treated):
            out[f"total:{v}"] = mean[v] - mean[c]
            if mediators:
                nested = float(w @ scores[q.nested[v]]) / wsum
                out[f"nde:{v}"] = nested - mean[c]
                out[f"nie:{v}"] = mean[v] - nested
    if d0 is not None and decisions is not None:
        n, k = len(q.rows), len(levels)
        deltas = np.full((n, k), np.nan)
        flips = np.zeros((n, k), dtype=bool)
        for j, v in enumerate(levels):
            other = q.cf[v][0]
            deltas[other, j] = by_level[v][other] - s0[other]
            flips[other, j] = dec_level[v][other] != d0[other]
        fact = q.factual
        use = np.isin(fact, levels) & ~np.all(np.isnan(deltas), axis=1)
        max_abs = np.where(np.isnan(deltas), -np.inf, np.abs(deltas)).max(axis=1)
        flipped = np.asarray(flips.any(axis=1))

        def wmean(x: np.ndarray, mask: np.ndarray) -> float:
            ws = float(w[mask].sum())
            return float(w[mask] @ x[mask]) / ws if ws > 0 else math.nan

        out["flip_rate"] = wmean(flipped.astype(float), use)
        out["mean_abs_delta"] = wmean(max_abs, use)
        for gname in sorted(set(fact[use].tolist())):
            g = use & (fact == gname)
            out[f"flip_rate|{gname}"] = wmean(flipped.astype(float), g)
            out[f"mean_abs_delta|{gname}"] = wmean(max_abs, g)
        if detail:
            self_delta = 0.0
            for mask, sl in q.self_check.values():
                if mask.any():
                    self_delta = max(self_delta, float(np.max(np.abs(scores[sl] - s0[mask]))))
            out.update({"cf.deltas": deltas, "cf.max_abs": max_abs, "cf.flipped": flipped, "cf.use": use,
                        "cf.factual": fact, "cf.self": self_delta})
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
    n = len(rows)
    fitted = fit_scm(plan, rows, kind=mechanisms, seed=seed)
    s0, d0 = predict(X)
    factual = (np.asarray(s0, dtype=float), None if d0 is None or not counterfactuals else np.asarray(d0))
    observed = {c: rows[c].to_numpy() for c in plan.nodes}
    fact = st.factual_level()
    draws = np.random.default_rng(seed + 7919)
    variates = {}
    for node in plan.affected:
        if node in plan.categorical:
            classes = fitted.models[node].classes
            variates[node] = GumbelVariates(draws.gumbel(size=n), draws.gumbel(size=(n, len(classes))),
                                            tuple(classes.tolist()))
    scorer = _Scorer(X, plan.inputs_changed, plan.treatment, observed)
    queued = [_queue_replicate(st, fitted, scorer, observed, fact, variates, np.arange(n), np.ones(n), on_path,
                               effects=effects, self_check=factual[1] is not None)]
    rng = np.random.default_rng(seed)
    failed = 0
    for b in range(n_bootstrap):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        drawn = np.flatnonzero(counts)
        try:
            fb = (fit_linear_arrays(plan, observed, counts, fitted) if mechanisms == "linear" else
                  fit_scm(plan, rows, kind=mechanisms, seed=seed + 1 + b, weights=counts, warm=fitted))
            queued.append(_queue_replicate(st, fb, scorer, observed, fact, variates, drawn,
                                           counts[drawn].astype(float), on_path, effects=effects, self_check=False))
        except (ValueError, np.linalg.LinAlgError):  # e.g. a resample holding one class only
            failed += 1
    if n_bootstrap and failed > 0.1 * n_bootstrap:
        raise RuntimeError(f"{failed} of {n_bootstrap} bootstrap refits of the SCM failed")
    scores, decisions = scorer.run(predict, factual)
    point = _summarise(st, queued[0], scores, decisions, factual, on_path, effects=effects, detail=True)
    boots = [_summarise(st, q, scores, decisions, factual, on_path, effects=effects, detail=False)
             for q in queued[1:]]
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
    if factual[1] is not None:
        cf = _counterfactual_result(st, fitted, point, boots, (factual[0], factual[1]), n_bootstrap, failed, level)
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
