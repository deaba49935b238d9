"""Registered checks of the causal family: a thin adapter from the audit context to ``causal``.

* ``causal.treatment_effect`` — DoWhy identify → estimate (≥ 3 estimators when a back-door set
  exists and the treatment is binary) → refute, on ``causal.treatment`` → ``causal.outcome``.
* ``causal.sensitive_effect`` — total effect of the sensitive attribute on the model's score
  through an SCM fitted on the audited rows (``linear`` mechanisms: least squares and penalised
  logistic regressions fitted with NumPy, the models dowhy.gcm would fit; ``boosted``/``auto``:
  dowhy.gcm), bootstrap interval over refits.
* ``causal.counterfactual_fairness`` — per-individual counterfactuals (exact abduction for
  additive-noise nodes, a posterior draw under a Gumbel-max mechanism for categorical ones, stated
  in the result), decision flip rate and mean |Δscore|, overall and by group, with intervals from
  the same bootstrap over refits of the mechanisms.
* ``causal.path_decomposition`` — natural direct and indirect effects via ``causal.mediators``
  (Pearl's mediation formula with the fitted conditional distributions; categorical mediators too).

The three SCM checks share one fitted SCM and one bootstrap (``causal.scm_analysis``, memoised).
Every verdict against a limit is ``audit.stats.judge``: effects with ``bound="abs"``, the flip
rate and mean |Δscore| (non-negative) with ``bound="max"``; an interval straddling the limit is
WARN. A continuous treatment without a named contrast gets the per-unit effect (T := T + 1).

The treatment of the three sensitive-attribute checks is ``causal.treatment`` or else the first
sensitive feature; their outcome is the MODEL's score (P(positive label)), not a data column.
Without a graph every check is SKIPPED with a sentence saying what to provide. The graph itself
is validated at the boundary (``causal.validate_causal_spec``), so a bad graph stops the audit
with exit code 2 before any check runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from audit.context import AuditContext, Intermediate
from audit.exceptions import CheckNotApplicable
from audit.registry import all_of, register_check, register_family
from audit.results import CheckResult, EvidenceTable, PlotSpec, Provenance, Verdict
from audit.stats import judge, worst
from causal._effects import CounterfactualResult, SCMEffects, scm_analysis
from causal._estimation import EffectAnalysis, estimate_effect
from causal._graph import CausalGraph, GraphRoles
from causal._scm import NotIdentifiedError
from causal._spec import CausalPolicy, CausalSpec
from causal._validate import validate_causal_spec

__all__ = [
    "MECHANISM_RATIONALE",
    "counterfactual_fairness_check",
    "path_decomposition_check",
    "sensitive_effect_check",
    "treatment_effect_check",
]

MECHANISM_RATIONALE = {
    "linear": (
        "additive-noise linear regressions for numeric nodes and logistic-regression classifiers for "
        "categorical ones, chosen by dtype (invertible, fitted in milliseconds) instead of DoWhy's "
        "cross-validated automatic assignment (many times slower: bench/bench_causal.py); roots "
        "resample their observed values"
    ),
    "boosted": (
        "additive-noise histogram gradient boosting for numeric nodes and gradient-boosting classifiers "
        "for categorical ones (non-linear, still invertible for numeric nodes, seconds)"
    ),
    "auto": "DoWhy's assign_causal_mechanisms with AssignmentQuality.GOOD (cross-validated; slow)",
}


# --- applicability ------------------------------------------------------------------------------


def _needs_graph(ctx: AuditContext) -> str | None:
    c = ctx.spec.causal
    if c.graph is None and not c.edges:
        return (
            "no causal graph given: set causal.graph (DOT or GML text, or a .dot/.gml file) or causal.edges "
            "(a list of [cause, effect] pairs) in the spec; `trustaudit causal discover --data FILE` can "
            "propose one for you to review"
        )
    return None


def _needs_treatment(ctx: AuditContext) -> str | None:
    if ctx.spec.causal.treatment is None and not ctx.sensitive_features:
        return "no treatment: name it with causal.treatment, or give sensitive features (the first is the treatment)"
    return None


def _needs_outcome(ctx: AuditContext) -> str | None:
    if ctx.spec.causal.outcome is None:
        return "no outcome: name the outcome column of the effect to estimate with causal.outcome"
    return None


def _needs_mediators(ctx: AuditContext) -> str | None:
    if not ctx.spec.causal.mediators:
        return (
            "no mediators: name the nodes through which the sensitive attribute may act (e.g. income) "
            "with causal.mediators"
        )
    return None


# --- shared pieces ------------------------------------------------------------------------------


def _prepare(spec: Any, test: Any) -> tuple[CausalGraph, GraphRoles] | None:
    """At the boundary, when a causal check is selected: the graph parsed and validated against the
    audited columns, and the roles of its nodes (a bad graph is bad input, exit 2). None: no graph."""
    return validate_causal_spec(spec.causal, test.frame.columns, sensitive=spec.data.sensitive, frame=test.frame)


register_family(
    "causal", title="Causal", policy=CausalPolicy, section=CausalSpec, prepare=_prepare,
    help="needs a causal graph: effects of a sensitive attribute, its paths, counterfactual flips, treatment effects",
)


def _graph(ctx: AuditContext) -> tuple[CausalGraph, GraphRoles]:
    """The graph and roles validated at the boundary (the applicability predicate guarantees one)."""
    out = ctx.prepared.get("causal")
    assert out is not None
    return out  # type: ignore[no-any-return]


def _positive_index(ctx: AuditContext) -> int:
    return ctx.positive_index  # resolved once, at the boundary


def _score_fn(ctx: AuditContext) -> Callable[[pd.DataFrame], np.ndarray]:
    pos = _positive_index(ctx)

    def score(X: pd.DataFrame) -> np.ndarray:
        return np.asarray(ctx.model.predict_proba(X), dtype=float)[:, pos]

    return score


def _predict_fn(ctx: AuditContext) -> Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]]:
    pos = _positive_index(ctx)

    def predict(X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        proba = np.asarray(ctx.model.predict_proba(X), dtype=float)
        return proba[:, pos], (np.argmax(proba, axis=1) == pos).astype(np.int8)

    return predict


def _sample_index(ctx: AuditContext, n: int, name: str) -> np.ndarray:
    """Up to ``n`` audited row positions (seeded, without replacement, sorted)."""
    total = ctx.test.n
    if total <= n:
        return np.arange(total)
    return np.sort(ctx.rng(name).choice(total, size=n, replace=False))


def _sample(ctx: AuditContext, n: int, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Up to ``n`` audited rows: the full frame and the model inputs of the same rows."""
    idx = _sample_index(ctx, n, name)
    return ctx.test.frame.iloc[idx].reset_index(drop=True), ctx.test.X.iloc[idx].reset_index(drop=True)


def _graph_table(g: CausalGraph, **roles: Any) -> EvidenceTable:
    marked = [roles.get("treatment"), roles.get("outcome"), *roles.get("mediators", ())]
    return EvidenceTable(
        "causal_graph",
        ({"dot": g.to_dot(**roles), "highlight": ",".join(str(n) for n in marked if n)},),
        PlotSpec(kind="graph", title="Causal graph"),
        "The causal graph the analysis assumes (dashed: latent nodes).",
    )


def _where(verdict: Verdict, limit: float, lo: float = 0.0, hi: float = 0.0) -> str:
    """Words for a verdict of audit.stats.judge against ±limit."""
    if verdict is Verdict.WARN and not (math.isfinite(lo) and math.isfinite(hi)):
        return f"beyond the ±{limit:g} limit, with no interval to decide"
    return {Verdict.FAIL: f"wholly beyond the ±{limit:g} limit",
            Verdict.WARN: f"its interval straddling the ±{limit:g} limit",
            Verdict.PASS: f"within the ±{limit:g} limit"}[verdict]


def _pct(level: float) -> str:
    return f"{level * 100:g}%"


def _compute_analysis(ctx: AuditContext) -> tuple[SCMEffects, CounterfactualResult]:
    """The SCM effects and counterfactuals of the sensitive attribute, sharing one fitted SCM and one
    bootstrap over refits (the three SCM checks read the same analysis)."""
    g, roles = _graph(ctx)
    pol = ctx.policy.causal
    c = ctx.spec.causal
    rows, X = _sample(ctx, pol.sample_size, "causal.sample")
    try:
        eff, cf = scm_analysis(
            rows, X, _predict_fn(ctx), g, str(roles.treatment),
            mediators=roles.mediators, treatment_value=c.treatment_value, control_value=c.control_value,
            mechanisms=pol.mechanisms, n_bootstrap=pol.n_bootstrap, confidence_level=pol.confidence_level,
            seed=ctx.seed_for("causal.scm"),
        )
    except NotIdentifiedError as exc:
        raise CheckNotApplicable(str(exc)) from None
    assert eff is not None and cf is not None
    return eff, cf


#: the SCM analysis shared by the sensitive effect, path decomposition and counterfactual checks
ANALYSIS: Intermediate[tuple[SCMEffects, CounterfactualResult]] = Intermediate(
    "causal.scm_analysis", _compute_analysis)


def _analysis(ctx: AuditContext) -> tuple[SCMEffects, CounterfactualResult]:
    return ctx.get(ANALYSIS)


def _scm_effects(ctx: AuditContext) -> SCMEffects:
    return _analysis(ctx)[0]


def _scm_params(eff: SCMEffects, ctx: AuditContext, **extra: Any) -> dict[str, Any]:
    pol = ctx.policy.causal
    return {
        "treatment": eff.treatment,
        "control_value": str(eff.control),
        "treated_values": [str(v) for v in eff.treated],
        "outcome": "model score P(positive label)",
        "sample_size": eff.n_rows,
        "sample_size_policy": pol.sample_size,
        "n_bootstrap": eff.n_bootstrap,
        "n_bootstrap_failed": eff.n_bootstrap_failed,
        "bootstrap": "rows resampled with replacement, SCM refitted each time; estimate ± t(B−1) × the bootstrap SE",
        "contrast": eff.contrast,
        "mediation_method": eff.mediation_method,
        "mechanisms": pol.mechanisms,
        "mechanisms_rationale": MECHANISM_RATIONALE[pol.mechanisms],
        "interventional_noise": ("each individual's noise recovered from their data (abduction) and shared by every "
                                 "world; under their own treatment value an individual keeps their factual score"),
        **eff.plan.describe(),
        **extra,
    }


def _mechanism_table(mechanisms: Mapping[str, str], plan: Any) -> EvidenceTable:
    recs = []
    for n in plan.nodes:
        role = "treatment" if n == plan.treatment else ("affected" if n in plan.affected else "exogenous")
        parents = [a for a, b in plan.edges if b == n]
        recs.append({"node": n, "role": role, "parents": ", ".join(parents), "mechanism": mechanisms.get(n, "")})
    return EvidenceTable(
        "scm_mechanisms", tuple(recs), None,
        "Nodes of the fitted structural causal model: 'affected' nodes change under an intervention on the "
        "treatment; 'exogenous' ones keep each individual's observed value.",
    )


# --- causal.sensitive_effect -----------------------------------------------------------------


@register_check(
    "causal.sensitive_effect", family="causal", needs=(ANALYSIS,), cost=19, applies=all_of(_needs_graph, _needs_treatment),
    description="Total causal effect of the sensitive attribute on the model's score (SCM intervention).",
)
def sensitive_effect_check(ctx: AuditContext) -> CheckResult:
    """Total causal effect of the sensitive attribute on the model's score (SCM intervention)."""
    eff = _scm_effects(ctx)
    g, roles = _graph(ctx)
    pol = ctx.policy.causal
    limit = pol.total_effect_max
    lvl = _pct(eff.confidence_level)
    metrics: dict[str, float] = {}
    recs = []
    verdicts = []
    worst_key = max(eff.total, key=lambda k: abs(eff.total[k].estimate))
    for k, iv in eff.total.items():
        metrics[f"total_effect.{k}"] = iv.estimate
        metrics[f"total_effect.{k}.ci_low"] = iv.ci_low
        metrics[f"total_effect.{k}.ci_high"] = iv.ci_high
        metrics[f"total_effect.{k}.std_error"] = iv.std_error
        verdicts.append(judge(iv.estimate, iv.ci_low, iv.ci_high, limit, bound="abs"))
        recs.append({"contrast": f"{k} vs {eff.control}", "effect": iv.estimate, "ci_low": iv.ci_low,
                     "ci_high": iv.ci_high, "std_error": iv.std_error})
    w = eff.total[worst_key]
    metrics.update({"total_effect": w.estimate, "total_effect.ci_low": w.ci_low, "total_effect.ci_high": w.ci_high})
    for v, m in eff.mean_score_do.items():
        metrics[f"mean_score.do_{v}"] = m
    verdict = worst(verdicts)
    where = _where(verdict, limit, w.ci_low, w.ci_high)
    ci = f"{lvl} CI {w.ci_low:+.3f} to {w.ci_high:+.3f}" if math.isfinite(w.ci_low) else "no interval"
    change = (f"Raising {eff.treatment} by one unit for everyone" if eff.contrast != "levels" else
              f"Setting {eff.treatment} from {eff.control} to {worst_key}")
    summary = f"{change} changes the model's mean score by {w.estimate:+.3f} ({ci}), {where}."
    evidence = (
        EvidenceTable.from_frame(
            "total_effect", pd.DataFrame(recs),
            PlotSpec(kind="bar", x="contrast", y="effect", lo="ci_low", hi="ci_high", reference=limit,
                     title=f"Total effect of {eff.treatment} on the model's score", ylabel="Δ mean score"),
            f"E[score | do({eff.treatment}=value)] − E[score | do({eff.treatment}={eff.control})], {lvl} bootstrap "
            "interval; the reference line is the policy limit.",
        ),
        EvidenceTable.from_frame(
            "mean_score_under_intervention",
            pd.DataFrame([{"value": v, "mean_score": m} for v, m in eff.mean_score_do.items()]),
            PlotSpec(kind="bar", x="value", y="mean_score", title=f"Mean score under do({eff.treatment}=value)"),
        ),
        _graph_table(g, treatment=eff.treatment, mediators=eff.mediators),
        _mechanism_table(eff.mechanisms, eff.plan),
    )
    return CheckResult(
        check_id="causal.sensitive_effect", verdict=verdict, summary=summary, metrics=metrics,
        policy={"total_effect_max": limit, "confidence_level": pol.confidence_level},
        evidence=evidence,
        provenance=Provenance(params=_scm_params(eff, ctx, treatment_from=roles.treatment_from),
                              seed=ctx.seed_for("causal.scm")),
    )


# --- causal.path_decomposition ------------------------------------------------------------------


@register_check(
    "causal.path_decomposition", family="causal", needs=(ANALYSIS,),
    applies=all_of(_needs_graph, _needs_treatment, _needs_mediators),
    description="Natural direct vs indirect (mediated) effect of the sensitive attribute on the score.",
)
def path_decomposition_check(ctx: AuditContext) -> CheckResult:
    """Natural direct vs indirect (mediated) effect of the sensitive attribute on the score."""
    eff = _scm_effects(ctx)
    if eff.mediation_error:
        raise CheckNotApplicable(eff.mediation_error)
    g, _roles = _graph(ctx)
    pol = ctx.policy.causal
    limit = pol.direct_effect_max
    lvl = _pct(eff.confidence_level)
    metrics: dict[str, float] = {}
    recs = []
    verdicts = []
    for k in eff.direct:
        d, i, t = eff.direct[k], eff.indirect[k], eff.total_counterfactual[k]
        for name, iv in (("natural_direct_effect", d), ("natural_indirect_effect", i), ("total_effect", t)):
            metrics[f"{name}.{k}"] = iv.estimate
            metrics[f"{name}.{k}.ci_low"] = iv.ci_low
            metrics[f"{name}.{k}.ci_high"] = iv.ci_high
            recs.append({"contrast": f"{k} vs {eff.control}", "component": name.replace("_", " "),
                         "effect": iv.estimate, "ci_low": iv.ci_low, "ci_high": iv.ci_high})
        metrics[f"proportion_mediated.{k}"] = i.estimate / t.estimate if t.estimate else math.nan
        verdicts.append(judge(d.estimate, d.ci_low, d.ci_high, limit, bound="abs"))
    worst_key = max(eff.direct, key=lambda k: abs(eff.direct[k].estimate))
    d, i = eff.direct[worst_key], eff.indirect[worst_key]
    metrics.update({"natural_direct_effect": d.estimate, "natural_direct_effect.ci_low": d.ci_low,
                    "natural_direct_effect.ci_high": d.ci_high, "natural_indirect_effect": i.estimate,
                    "natural_indirect_effect.ci_low": i.ci_low, "natural_indirect_effect.ci_high": i.ci_high})
    verdict = worst(verdicts)
    where = _where(verdict, limit, d.ci_low, d.ci_high)
    meds = ", ".join(eff.mediators)
    summary = (
        f"Of the effect of {eff.treatment} ({worst_key} vs {eff.control}) on the score, {d.estimate:+.3f} is direct "
        f"({lvl} CI {d.ci_low:+.3f} to {d.ci_high:+.3f}, {where}) and {i.estimate:+.3f} flows through {meds}."
    )
    evidence = [
        EvidenceTable.from_frame(
            "path_decomposition", pd.DataFrame(recs),
            PlotSpec(kind="bar", x="component", y="effect", lo="ci_low", hi="ci_high", group="contrast",
                     reference=limit, title=f"Direct and mediated effect of {eff.treatment}", ylabel="Δ mean score"),
            "Natural direct effect E[s(X_{a,M_c})] − E[s(X_c)], natural indirect effect E[s(X_a)] − E[s(X_{a,M_c})] "
            f"and their sum, the total effect; {lvl} bootstrap intervals. Mediators: {meds}.",
        ),
        _graph_table(g, treatment=eff.treatment, mediators=eff.mediators),
        _mechanism_table(eff.mechanisms, eff.plan),
    ]
    if eff.mediators_off_path:
        evidence.append(EvidenceTable(
            "mediators_off_path", tuple({"mediator": m} for m in eff.mediators_off_path), None,
            "Named mediators with no causal path to the model's inputs: no effect flows through them.",
        ))
    return CheckResult(
        check_id="causal.path_decomposition", verdict=verdict, summary=summary, metrics=metrics,
        policy={"direct_effect_max": limit, "confidence_level": pol.confidence_level},
        evidence=tuple(evidence),
        provenance=Provenance(params=_scm_params(eff, ctx, mediators=list(eff.mediators),
                                                 mediators_off_path=list(eff.mediators_off_path)),
                              seed=ctx.seed_for("causal.scm")),
    )


# --- causal.counterfactual_fairness -------------------------------------------------------------


@register_check(
    "causal.counterfactual_fairness", family="causal", needs=(ANALYSIS,), applies=all_of(_needs_graph, _needs_treatment),
    description="Decision flip rate and |Δscore| when each individual's sensitive attribute is changed.",
)
def counterfactual_fairness_check(ctx: AuditContext) -> CheckResult:
    """Decision flip rate and |Δscore| when each individual's sensitive attribute is changed."""
    g, _roles = _graph(ctx)
    pol = ctx.policy.causal
    res = _analysis(ctx)[1]
    o = res.overall
    fr_lim, mad_lim = pol.counterfactual_flip_rate_max, pol.counterfactual_mean_abs_delta_max
    # both quantities are non-negative: judged with bound="max" (the same as "abs" on them)
    v_fr = judge(o["flip_rate"], o["flip_rate.ci_low"], o["flip_rate.ci_high"], fr_lim, bound="max")
    v_mad = judge(o["mean_abs_delta"], o["mean_abs_delta.ci_low"], o["mean_abs_delta.ci_high"], mad_lim, bound="max")
    verdict = worst([v_fr, v_mad])
    lvl = _pct(res.confidence_level)
    metrics = dict(o)
    metrics["self_check_max_abs_delta"] = res.self_check_max_abs_delta
    for r in res.by_group.to_dict(orient="records"):
        metrics[f"flip_rate.{r['group']}"] = r["flip_rate"]
        metrics[f"mean_abs_delta.{r['group']}"] = r["mean_abs_delta"]
        metrics[f"mean_delta.{r['group']}"] = r["mean_delta"]
    alt = "each other value" if len(res.levels) > 2 else "the other value"
    if res.levels == ("observed", "+1"):
        alt = "been one unit higher"
    words = {Verdict.FAIL: "beyond policy (interval wholly above a limit)",
             Verdict.WARN: "undecided (an interval straddles a limit, or a figure above a limit has no interval)",
             Verdict.PASS: "within policy"}[verdict]
    mad_ci = (f"{lvl} CI {o['mean_abs_delta.ci_low']:.3f} to {o['mean_abs_delta.ci_high']:.3f}; "
              if math.isfinite(o["mean_abs_delta.ci_low"]) else "no interval; ")
    summary = (
        f"Had {res.treatment} taken {alt}, {o['flip_rate']:.1%} of {int(o['n'])} individuals would have received "
        f"another decision ({lvl} CI {o['flip_rate.ci_low']:.1%} to {o['flip_rate.ci_high']:.1%}; limit "
        f"{fr_lim:.0%}) and scores would move by {o['mean_abs_delta']:.3f} on average ({mad_ci}limit {mad_lim:g}): "
        f"{words}."
    )
    cats = [n for n in res.plan.affected if n in res.plan.categorical]
    if cats:
        summary = summary[:-1] + (f"; assumes a Gumbel-max mechanism for categorical {', '.join(cats)} "
                                  "(its noise drawn from the posterior given each observed category).")
    units = res.units
    top = units.reindex(units["max_abs_delta"].sort_values(ascending=False).index).head(20)
    q = np.linspace(0, 1, 21)
    quant = pd.DataFrame({"quantile": q, "abs_delta": np.quantile(units["max_abs_delta"], q)}) if len(units) else (
        pd.DataFrame(columns=["quantile", "abs_delta"]))
    evidence = (
        EvidenceTable.from_frame(
            "flip_rate_by_group", res.by_group[["group", "n", "flip_rate", "flip_rate_ci_low", "flip_rate_ci_high"]],
            PlotSpec(kind="bar", x="group", y="flip_rate", lo="flip_rate_ci_low", hi="flip_rate_ci_high",
                     reference=fr_lim, title="Counterfactual decision flip rate by factual group",
                     ylabel="flip rate"),
            f"Share of individuals of each factual group whose decision changes when only {res.treatment} (and "
            f"what it causes) changes; {lvl} intervals: {res.interval_method}.",
        ),
        EvidenceTable.from_frame(
            "abs_delta_by_group",
            res.by_group[["group", "n", "mean_abs_delta", "mean_abs_delta_ci_low", "mean_abs_delta_ci_high",
                          "mean_delta"]],
            PlotSpec(kind="bar", x="group", y="mean_abs_delta", lo="mean_abs_delta_ci_low",
                     hi="mean_abs_delta_ci_high", reference=mad_lim, title="Mean |Δscore| by factual group"),
            f"mean_delta is the signed mean change (counterfactual − factual score); {lvl} intervals: "
            f"{res.interval_method}.",
        ),
        EvidenceTable.from_frame(
            "abs_delta_quantiles", quant,
            PlotSpec(kind="line", x="quantile", y="abs_delta", title="Distribution of |Δscore| over individuals"),
        ),
        EvidenceTable.from_frame(
            "largest_changes", top.reset_index(drop=True),
            None, "The 20 individuals (of the sample) whose score changes most.",
        ),
        _graph_table(g, treatment=res.treatment),
        _mechanism_table(res.mechanisms, res.plan),
    )
    params = {
        "treatment": res.treatment,
        "levels": [str(v) for v in res.levels],
        "sample_size": res.n_rows,
        "decision": "argmax of the model's probabilities (the audit's decision rule)",
        "abduction": res.abduction,
        "interval_method": res.interval_method,
        "n_bootstrap": res.n_bootstrap,
        "n_bootstrap_failed": res.n_bootstrap_failed,
        "multi_valued": "per individual: flipped under any other value; |Δ| is the largest over other values",
        "mechanisms": pol.mechanisms,
        "mechanisms_rationale": MECHANISM_RATIONALE[pol.mechanisms],
        **res.plan.describe(),
    }
    return CheckResult(
        check_id="causal.counterfactual_fairness", verdict=verdict, summary=summary, metrics=metrics,
        policy={"counterfactual_flip_rate_max": fr_lim, "counterfactual_mean_abs_delta_max": mad_lim,
                "confidence_level": pol.confidence_level},
        evidence=evidence,
        provenance=Provenance(params=params, seed=ctx.seed_for("causal.scm")),
    )


# --- causal.treatment_effect --------------------------------------------------------------------


def _passed_word(passed: bool | None, status: str) -> str:
    if passed is None:
        return "error" if status == "error" else "not run"
    return "passed" if passed else "FAILED"


def _estimators_disagree(a: EffectAnalysis) -> list[str]:
    ok = [r for r in a.estimates if r.status == "ok" and math.isfinite(r.ci_low) and math.isfinite(r.ci_high)]
    bad = []
    for i, r in enumerate(ok):
        for s in ok[i + 1:]:
            if r.ci_high < s.ci_low or s.ci_high < r.ci_low:
                bad.append(f"{r.method.split('.')[-1]} vs {s.method.split('.')[-1]}")
    return bad


@register_check(
    "causal.treatment_effect", family="causal", cost=15, applies=all_of(_needs_graph, _needs_treatment, _needs_outcome),
    description="Effect of causal.treatment on causal.outcome: DoWhy identification, estimators, refuters.",
)
def treatment_effect_check(ctx: AuditContext) -> CheckResult:
    """Effect of causal.treatment on causal.outcome: DoWhy identification, estimators, refuters."""
    g, roles = _graph(ctx)
    pol = ctx.policy.causal
    c = ctx.spec.causal
    outcome = str(roles.outcome)
    idx = _sample_index(ctx, pol.effect_sample_size, "causal.effect_sample")
    frame = ctx.test.frame.iloc[idx].reset_index(drop=True)
    if outcome == ctx.target:  # the label as 0/1 (1 = the positive label)
        frame[outcome] = ctx.test.y[idx].astype(float)
    seed = ctx.seed_for("causal.treatment_effect")
    try:
        a = estimate_effect(
            frame, g, str(roles.treatment), outcome,
            treatment_value=c.treatment_value, control_value=c.control_value,
            n_bootstrap=pol.n_bootstrap, refuter_simulations=pol.refuter_simulations,
            significance_level=pol.refuter_significance_level, subset_fraction=pol.refuter_subset_fraction,
            sensitivity_strength=pol.sensitivity_strength, robustness_value_min=pol.robustness_value_min,
            confidence_level=pol.confidence_level, seed=seed,
        )
    except NotIdentifiedError as exc:
        raise CheckNotApplicable(str(exc)) from None
    p = a.primary_row()
    refs = {r.refuter: r for r in a.refutations}
    hard = [r for k, r in refs.items() if k != "unobserved_confounder_sensitivity" and r.passed is False]
    fragile = refs["unobserved_confounder_sensitivity"].passed is False
    errored = [r for r in a.refutations if r.status == "error"]
    disagree = _estimators_disagree(a)
    if hard:
        verdict = Verdict.FAIL
    elif fragile or disagree or errored:
        verdict = Verdict.WARN
    else:
        verdict = Verdict.PASS
    lvl = _pct(pol.confidence_level)
    n_ok = sum(r.status == "ok" for r in a.estimates)
    n_ran = sum(r.passed is not None for r in a.refutations)
    n_pass = sum(r.passed is True for r in a.refutations)
    if hard:
        tail = "refuted: " + ", ".join(r.refuter.replace("_", " ") for r in hard) + " failed"
    elif fragile:
        tail = "the sensitivity analysis finds it fragile to unobserved confounding"
    elif disagree:
        tail = "estimators disagree (" + "; ".join(disagree) + ")"
    elif errored:
        tail = "refuter(s) could not run: " + ", ".join(r.refuter.replace("_", " ") for r in errored)
    else:
        tail = f"{n_pass} of {n_ran} refuters passed"
    summary = (
        f"Effect of {a.treatment} ({a.treatment_value} vs {a.control_value}) on {a.outcome}: {p.estimate:+.4g} "
        f"({lvl} CI {p.ci_low:+.4g} to {p.ci_high:+.4g}, {p.method.split('.', 1)[1].replace('_', ' ')}, "
        f"{n_ok} estimator(s)); {tail}."
    )
    metrics: dict[str, float] = {
        "effect": p.estimate, "effect.ci_low": p.ci_low, "effect.ci_high": p.ci_high,
        "difference_in_means": a.difference_in_means, "difference_in_means.std_error": a.difference_in_means_se,
        "n_rows": float(a.n_rows), "n_estimators": float(n_ok),
        "refuters_passed": float(n_pass), "refuters_run": float(n_ran),
    }
    for r in a.estimates:
        short = r.method.split(".", 1)[1]
        metrics[f"estimate.{short}"] = r.estimate
        metrics[f"estimate.{short}.ci_low"] = r.ci_low
        metrics[f"estimate.{short}.ci_high"] = r.ci_high
    for ref in a.refutations:
        metrics[f"refuter.{ref.refuter}.passed"] = math.nan if ref.passed is None else float(ref.passed)
        metrics[f"refuter.{ref.refuter}.p_value"] = ref.p_value
        metrics[f"refuter.{ref.refuter}.new_effect"] = ref.new_effect
    est_tab = pd.DataFrame([{
        "method": r.method, "strategy": r.strategy, "kind": r.kind, "estimate": r.estimate, "ci_low": r.ci_low,
        "ci_high": r.ci_high, "interval": r.ci_method, "status": r.status, "seconds": r.seconds,
    } for r in a.estimates])
    ref_tab = pd.DataFrame([{
        "refuter": ref.refuter, "passed": _passed_word(ref.passed, ref.status),
        "what_passing_means": ref.meaning, "p_value": ref.p_value, "original_effect": ref.original_effect,
        "new_effect": ref.new_effect, "simulations": ref.simulations, "detail": ref.detail, "seconds": ref.seconds,
    } for ref in a.refutations])
    ident = pd.DataFrame([{
        "strategy": k, "identified": v is not None, "variables": ", ".join(v) if v else "",
    } for k, v in a.identified.items()])
    evidence = (
        EvidenceTable.from_frame(
            "estimates", est_tab,
            PlotSpec(kind="bar", x="method", y="estimate", lo="ci_low", hi="ci_high",
                     title=f"Effect of {a.treatment} on {a.outcome} by estimator", ylabel="effect"),
            f"Every estimator DoWhy could apply to the identified estimand(s), {lvl} intervals.",
        ),
        EvidenceTable.from_frame(
            "refutations", ref_tab, None,
            f"Refuters of the {a.primary} estimate. DoWhy's p-value asks how plausible a reference value is "
            "under the refuter's re-estimates (zero for the placebo, the original estimate otherwise); at or "
            "below the significance level the refuter fails.",
        ),
        EvidenceTable.from_frame("identification", ident, None,
                                 "Identification strategies the graph allows (DoWhy identify_effect)."),
        _graph_table(g, treatment=a.treatment, outcome=a.outcome),
    )
    params = {
        "treatment": a.treatment, "outcome": a.outcome, "treatment_value": str(a.treatment_value),
        "control_value": str(a.control_value), "rows_used": a.n_rows, "effect_sample_size": pol.effect_sample_size,
        "rows_dropped_missing": a.n_dropped_missing, "adjustment_set": list(a.adjustment_set),
        "primary_estimator": a.primary, "estimators": [r.method for r in a.estimates],
        "sensitivity_method": "add_unobserved_common_cause, simulation_method=linear-partial-R2, benchmarked",
        **a.settings,
    }
    return CheckResult(
        check_id="causal.treatment_effect", verdict=verdict, summary=summary, metrics=metrics,
        policy={"refuter_significance_level": pol.refuter_significance_level,
                "sensitivity_strength": pol.sensitivity_strength, "robustness_value_min": pol.robustness_value_min,
                "confidence_level": pol.confidence_level},
        evidence=evidence,
        provenance=Provenance(params=params, seed=seed),
    )
