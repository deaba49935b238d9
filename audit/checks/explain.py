"""The explanation family: why does the model decide this way, and can the explanation be trusted?

Checks (one result each):

* ``explain.shap`` — SHAP attributions per submitted column (exact TreeSHAP / linear SHAP when the
  model allows, the permutation explainer otherwise); FAIL when additivity (values + base value =
  model output) is off by more than the policy allows.
* ``explain.lime`` — LIME on a seeded row sample, aggregated to a global ranking, re-run with a
  second seed; its verdict is the stability of that ranking (not applicable, PASS with the reason,
  where rank correlation is undefined: one feature, or all ties).
* ``explain.gradients`` — torch models only: Integrated Gradients (convergence delta, infidelity,
  sensitivity_max) and GradientSHAP, per submitted column.
* ``explain.permutation`` — scikit-learn permutation importance (drop in ROC AUC), the
  model-agnostic reference.
* ``explain.agreement`` — Spearman / Kendall / top-k agreement of global rankings between every
  pair of methods that ran (the "disagreement problem"); a pair whose rank correlation is undefined
  (one feature, or a ranking that is all ties) is not applicable, never "disagreement".
* ``explain.faithfulness`` — deletion and insertion curves in attribution order against random
  orders; SKIPPED for one input column or a model whose output never moves, WARN for a method
  whose attributions give no order.

Every verdict against a policy limit is ``audit.stats.judge`` (an exactly computed quantity, such
as the additivity error, with a zero-width interval); intervals are ``audit.stats`` bootstraps.
* ``explain.sensitive_reliance`` — share of attribution carried by the sensitive features and by
  features that predict them (proxies), each proxy listed with its evidence.

Expensive intermediates are computed once per audit (declared ``Intermediate``s, ``ctx.get``) in
``audit.checks._explain_methods``; a method that raises makes its own check ERROR and the
comparing checks go on with the methods that ran, naming the missing ones.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from audit.checks._explain_methods import (
    METHOD,
    METHOD_LABELS,
    METHODS,
    Attribution,
    Outcome,
    outcome,
    shared,
    single_threaded,
)
from audit.checks._explain_stats import (
    all_tied,
    faithfulness,
    proxy_scan,
    rank_agreement,
    ranks_desc,
)
from audit.context import Intermediate
from audit.exceptions import CheckNotApplicable
from audit.registry import needs_sensitive_features, needs_torch_model, register_check, register_family
from audit.results import CheckResult, EvidenceTable, PlotSpec, Provenance, Verdict
from audit.spec import PolicyModel
from audit.stats import bootstrap_means, judge, percentile_interval
from audit.stats import worst as _worst

__all__ = [
    "agreement_check",
    "faithfulness_check",
    "gradients_check",
    "lime_check",
    "permutation_check",
    "sensitive_reliance_check",
    "shap_check",
]

FAMILY = "explain"


class ExplainPolicy(PolicyModel):
    """Thresholds and sample sizes for the explanation family (issue: explanation checks).

    Sizes bound the work: attributions are computed on a seeded sample of the audited rows, and
    every global figure carries a bootstrap interval over that sample.
    """

    # -- samples ------------------------------------------------------------------------------
    sample_size: int = Field(1000, ge=10, le=1_000_000)  # rows explained by SHAP
    background_size: int = Field(100, ge=10, le=10_000)  # background rows (masking, baselines)
    blackbox_sample_size: int = Field(100, ge=5, le=100_000)  # rows for the permutation explainer
    blackbox_permutations: int = Field(6, ge=1, le=1000)  # feature orderings per row (model-agnostic SHAP)
    tree_feature_perturbation: Literal["tree_path_dependent", "interventional"] = "tree_path_dependent"
    n_jobs: int = Field(2, ge=1, le=64)  # processes for large TreeSHAP runs (idle cores only)
    parallel_min_rows: int = Field(400, ge=100, le=10_000_000)  # split TreeSHAP over n_jobs from here
    n_bootstrap: int = Field(200, ge=20, le=10_000)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)
    # -- LIME ---------------------------------------------------------------------------------
    lime_sample_size: int = Field(25, ge=5, le=10_000)  # rows explained by LIME (twice: stability)
    lime_num_samples: int = Field(800, ge=100, le=100_000)  # perturbations per row
    lime_stability_min_spearman: float = Field(0.6, ge=-1, le=1)
    # -- permutation importance ---------------------------------------------------------------
    permutation_sample_size: int = Field(1000, ge=50, le=1_000_000)
    permutation_repeats: int = Field(5, ge=2, le=1000)
    # -- gradients (torch models) -------------------------------------------------------------
    gradient_sample_size: int = Field(200, ge=5, le=100_000)
    ig_n_steps: int = Field(50, ge=4, le=10_000)
    ig_max_convergence_delta: float = Field(0.05, ge=0, le=100)  # max |sum attributions - (f(x)-f(b))|
    gradient_shap_samples: int = Field(20, ge=1, le=10_000)
    infidelity_perturbations: int = Field(10, ge=1, le=1000)
    sensitivity_perturbations: int = Field(5, ge=1, le=1000)
    sensitivity_radius: float = Field(0.02, gt=0, le=10)
    # -- trust: additivity, agreement, faithfulness ---------------------------------------
    additivity_max_error: float = Field(1e-4, ge=0, le=1)
    agreement_min_spearman: float = Field(0.5, ge=-1, le=1)
    top_k: int = Field(5, ge=1, le=100)
    faithfulness_sample_size: int = Field(200, ge=5, le=100_000)
    faithfulness_random_orders: int = Field(4, ge=1, le=100)
    faithfulness_min_auc_gap: float = Field(0.0, ge=-1, le=1)
    # -- reliance on sensitive features and proxies -------------------------------------------
    sensitive_reliance_max_share: float = Field(0.10, ge=0, le=1)
    proxy_auc_min: float = Field(0.70, ge=0.5, le=1)
    proxy_sample_size: int = Field(5000, ge=100, le=1_000_000)
    proxy_allowed: tuple[str, ...] = Field((), max_length=1000)  # listed as proxies, not counted


register_family(
    FAMILY, title="Explanations", policy=ExplainPolicy,
    help="SHAP, LIME, permutation importance and their agreement, faithfulness, reliance on sensitive features",
)
_BEESWARM_FEATURES = 10
_BEESWARM_ROWS = 300
_LOCAL_ROWS = 20
_RANK_RULE = (
    "audit.stats.judge on {measure} (bootstrap interval) against the minimum: FAIL when the whole "
    "interval lies below it, PASS when the whole interval lies at or above it, WARN when it straddles; "
    "not applicable (no verdict of its own) where rank correlation is undefined: fewer than two "
    "features, or a ranking that is all ties"
)


def _pct(level: float) -> str:
    return f"{round(level * 100):d}%"


def _exact(value: float, limit: float) -> Verdict:
    """Verdict of an exactly computed quantity (no sampling error) that must stay at or below
    ``limit``: the one rule of ``audit.stats.judge`` with a zero-width interval."""
    return judge(value, value, value, limit, "max")


def _top(a: Attribution, k: int = 3) -> str:
    order = np.argsort(-a.importance, kind="stable")[:k]
    return ", ".join(a.features[i] for i in order)


def _importance_table(a: Attribution, name: str, title: str, ylabel: str) -> EvidenceTable:
    ranks = ranks_desc(a.importance)
    total = float(np.sum(np.clip(a.importance, 0, None))) or 1.0
    frame = pd.DataFrame(
        {
            "feature": list(a.features),
            "importance": a.importance,
            "lo": a.lo,
            "hi": a.hi,
            "share": np.clip(a.importance, 0, None) / total,
            "rank": ranks,
        }
    ).sort_values("rank", kind="stable")
    return EvidenceTable.from_frame(
        name,
        frame,
        PlotSpec("bar", x="feature", y="importance", lo="lo", hi="hi", title=title, ylabel=ylabel),
        description=f"global importance per input column, {a.label} ({a.params.get('output', '')}); "
        "lo/hi: bootstrap interval",
    )


# --- explain.shap ---------------------------------------------------------------------------


def _normalised_values(values: pd.Series, shap_col: np.ndarray, categorical: bool) -> np.ndarray:
    """Colour for the beeswarm: numbers scaled to [0, 1] between the 1st and 99th percentiles;
    categories ordered by their mean SHAP value, scaled to [0, 1]; missing -> NaN."""
    if not categorical:
        v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        fin = v[np.isfinite(v)]
        if fin.size == 0:
            return np.full(len(v), np.nan)
        lo, hi = np.quantile(fin, [0.01, 0.99])
        if hi <= lo:
            return np.where(np.isfinite(v), 0.5, np.nan)
        return np.clip((v - lo) / (hi - lo), 0, 1)
    labels = pd.Series(values, dtype=object).astype(str).where(pd.Series(values).notna(), None)
    frame = pd.DataFrame({"label": labels, "shap": shap_col}).dropna()
    means = frame.groupby("label")["shap"].mean().sort_values()
    if len(means) <= 1:
        return np.where(labels.notna(), 0.5, np.nan)
    pos = {lab: i / (len(means) - 1) for i, lab in enumerate(means.index)}
    return np.array([pos.get(lab, np.nan) if lab is not None else np.nan for lab in labels])


def _shown_values(X: pd.DataFrame, k: int) -> dict[str, list[str | None]]:
    """The first ``k`` values of every column as the evidence shows them: text, None if missing."""
    out = {}
    for col in X.columns:
        values = X[col].iloc[:k].to_numpy(dtype=object)
        missing = pd.isna(values)
        out[col] = [None if miss else str(v) for v, miss in zip(values, missing, strict=True)]
    return out


@register_check("explain.shap", family=FAMILY, needs=(METHOD,), cost=20)
def shap_check(ctx: Any) -> CheckResult:
    """SHAP attributions per input column, with an additivity test."""
    a: Attribution = outcome(ctx, "shap").get()
    sh = shared(ctx)
    pol = ctx.policy.explain
    err = a.metrics["additivity_max_abs_error"]
    verdict = _exact(err, pol.additivity_max_error)
    ok = verdict is Verdict.PASS
    n = len(a.local) if a.local is not None else 0
    summary = (
        f"SHAP ({a.params['explainer']}) on {n} sampled rows ranks {_top(a)} first; additivity "
        f"error {err:.1e} is {'within' if ok else 'over'} the {pol.additivity_max_error:g} limit"
        f" ({a.params['output']})."
    )
    assert a.local is not None and a.base_values is not None
    X = sh.X.iloc[: len(a.local)]
    order = np.argsort(-a.importance, kind="stable")[:_BEESWARM_FEATURES]
    m = min(len(X), _BEESWARM_ROWS)
    n_local = min(len(X), _LOCAL_ROWS)
    shown = _shown_values(X, max(m, n_local))
    rows = [int(a.rows[i]) if a.rows is not None else i for i in range(max(m, n_local))]
    swarm = []
    for j in order:
        col = a.features[j]
        norm = _normalised_values(X[col].iloc[:m].reset_index(drop=True), a.local[:m, j],
                                  sh.codec.categorical[j])
        for i in range(m):
            swarm.append(
                {
                    "feature": col,
                    "shap": float(a.local[i, j]),
                    "feature_value": None if not np.isfinite(norm[i]) else float(norm[i]),
                    "value": shown[col][i],
                    "row": rows[i],
                }
            )
    local, outputs = [], []
    output = a.extra["output"]
    for i in range(n_local):
        row = rows[i]
        for j, col in enumerate(a.features):
            local.append({"row": row, "feature": col, "value": shown[col][i],
                          "attribution": float(a.local[i, j])})
        total = float(a.local[i].sum())
        outputs.append({"row": row, "base_value": float(a.base_values[i]), "attribution_sum": total,
                        "model_output": float(output[i]),
                        "additivity_error": abs(total + float(a.base_values[i]) - float(output[i]))})
    evidence = (
        _importance_table(a, "global_importance", "SHAP global importance", "mean |SHAP|"),
        EvidenceTable(
            "beeswarm",
            tuple(swarm),
            PlotSpec("scatter", x="shap", y="feature", value="feature_value",
                     title="SHAP summary of the top features", xlabel="SHAP value",
                     ylabel="feature"),
            description="one point per sampled row and top feature; feature_value: the value "
            "scaled to [0, 1] (categories ordered by their mean SHAP value)",
        ),
        EvidenceTable("local_attributions", tuple(local),
                      description=f"per-row SHAP values of the first {len(outputs)} sampled rows"),
        EvidenceTable("local_additivity", tuple(outputs),
                      description="base value + sum of attributions against the model output"),
    )
    metrics = {
        **a.metrics,
        "rows": float(n),
        **{f"importance.{f}": float(v) for f, v in zip(a.features, a.importance, strict=True)},
    }
    return CheckResult(
        check_id="explain.shap",
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        policy={"additivity_max_error": pol.additivity_max_error, "sample_size": pol.sample_size,
                "background_size": pol.background_size},
        evidence=evidence,
        provenance=Provenance(params=dict(a.params), seed=ctx.seed),
    )


# --- explain.lime ---------------------------------------------------------------------------


@register_check("explain.lime", family=FAMILY, needs=(METHOD,))
def lime_check(ctx: Any) -> CheckResult:
    """LIME on a seeded row sample, aggregated; stability across two seeds."""
    a: Attribution = outcome(ctx, "lime").get()
    pol = ctx.policy.explain
    rho, lo, hi = (a.metrics["stability_spearman"], a.metrics["stability_spearman_lo"],
                   a.metrics["stability_spearman_hi"])
    limit = pol.lime_stability_min_spearman
    undefined = a.extra.get("stability_undefined", "")
    if undefined:
        # undefined is not unstable: a ranking that cannot change cannot be unstable either
        verdict = Verdict.PASS
        summary = (
            f"LIME on {a.params['rows']} rows ranks {_top(a)} first; the stability of its ranking is "
            f"not applicable: {undefined} (Spearman undefined; minimum {limit:g})."
        )
    else:
        verdict = judge(rho, lo, hi, limit, "min")
        state = {
            Verdict.PASS: "stable",
            Verdict.WARN: "not clearly stable",
            Verdict.FAIL: "unstable",
        }[verdict]
        summary = (
            f"LIME on {a.params['rows']} rows ranks {_top(a)} first; re-run with another seed its "
            f"ranking is {state} (Spearman {rho:.2f}, {_pct(pol.confidence_level)} CI {lo:.2f} to "
            f"{hi:.2f}; minimum {limit:g})."
        )
    rerun = a.extra["rerun_importance"]
    stab = []
    r1, r2 = ranks_desc(a.importance), ranks_desc(rerun)
    for j, f in enumerate(a.features):
        stab.append({"feature": f, "run": "seed 1", "importance": float(a.importance[j]), "rank": int(r1[j])})
        stab.append({"feature": f, "run": "seed 2", "importance": float(rerun[j]), "rank": int(r2[j])})
    evidence = (
        _importance_table(a, "global_importance", "LIME global importance (mean |weight|)",
                          "mean |LIME weight|"),
        EvidenceTable(
            "stability",
            tuple(stab),
            PlotSpec("bar", x="feature", y="importance", group="run",
                     title="LIME importance, two seeds", ylabel="mean |LIME weight|"),
            description="global LIME importance from two runs with different seeds on the same rows",
        ),
    )
    metrics = {**a.metrics, "rows": float(a.params["rows"]),
               **{f"importance.{f}": float(v) for f, v in zip(a.features, a.importance, strict=True)}}
    return CheckResult(
        check_id="explain.lime",
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        policy={"lime_stability_min_spearman": limit, "lime_sample_size": pol.lime_sample_size,
                "lime_num_samples": pol.lime_num_samples, "confidence_level": pol.confidence_level},
        evidence=evidence,
        provenance=Provenance(
            params={**a.params, "stability_rule": _RANK_RULE.format(measure="the two runs' Spearman"),
                    **({"stability_undefined": undefined} if undefined else {})},
            seed=ctx.seed,
        ),
    )


# --- explain.gradients ----------------------------------------------------------------------


@register_check("explain.gradients", family=FAMILY, applies=needs_torch_model, needs=(METHOD,))
def gradients_check(ctx: Any) -> CheckResult:
    """Captum Integrated Gradients (convergence delta) and GradientSHAP for torch models."""
    res: dict[str, Attribution] = outcome(ctx, "gradients").get()
    pol = ctx.policy.explain
    ig, gs = res["integrated_gradients"], res["gradient_shap"]
    delta = ig.metrics["convergence_delta_max_abs"]
    verdict = _exact(delta, pol.ig_max_convergence_delta)
    ok = verdict is Verdict.PASS
    summary = (
        f"Integrated Gradients on {ig.params['rows']} rows ranks {_top(ig)} first (GradientSHAP: "
        f"{_top(gs)}); max convergence delta {delta:.1e} is {'within' if ok else 'over'} the "
        f"{pol.ig_max_convergence_delta:g} tolerance ({ig.params['output']}, {ig.params['n_steps']} steps)."
    )
    records = []
    for a in (ig, gs):
        for j, f in enumerate(a.features):
            records.append({"feature": f, "method": a.label, "importance": float(a.importance[j]),
                            "lo": float(a.lo[j]), "hi": float(a.hi[j])})
    evidence = (
        EvidenceTable(
            "global_importance",
            tuple(records),
            PlotSpec("bar", x="feature", y="importance", lo="lo", hi="hi", group="method",
                     title="Gradient attributions per input column", ylabel="mean |attribution|"),
            description="mean |attribution| per input column (encoded columns summed back)",
        ),
        EvidenceTable("convergence", tuple(ig.params["attempts"]),
                      description="Integrated Gradients attempts: steps and max |convergence delta|"),
    )
    metrics = {**ig.metrics,
               **{f"importance.ig.{f}": float(v) for f, v in zip(ig.features, ig.importance, strict=True)},
               **{f"importance.gradient_shap.{f}": float(v)
                  for f, v in zip(gs.features, gs.importance, strict=True)}}
    params = {"integrated_gradients": ig.params, "gradient_shap": gs.params,
              "infidelity": f"normalised, Gaussian perturbations sd {ig.extra['infidelity_noise_sd']} "
              f"(encoded space), {pol.infidelity_perturbations} per row",
              "sensitivity_max": f"radius {pol.sensitivity_radius}, "
              f"{pol.sensitivity_perturbations} perturbations"}
    return CheckResult(
        check_id="explain.gradients",
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        policy={"ig_max_convergence_delta": pol.ig_max_convergence_delta, "ig_n_steps": pol.ig_n_steps,
                "gradient_sample_size": pol.gradient_sample_size},
        evidence=evidence,
        provenance=Provenance(params=params, seed=ctx.seed),
    )


# --- explain.permutation --------------------------------------------------------------------


@register_check("explain.permutation", family=FAMILY, needs=(METHOD,))
def permutation_check(ctx: Any) -> CheckResult:
    """scikit-learn permutation importance (drop in ROC AUC): the model-agnostic reference."""
    a: Attribution = outcome(ctx, "permutation").get()
    pol = ctx.policy.explain
    significant = [a.features[j] for j in np.argsort(-a.importance, kind="stable") if a.lo[j] > 0]
    verdict = Verdict.PASS if significant else Verdict.WARN
    if significant:
        summary = (
            f"Permuting {', '.join(significant[:3])} lowers the ROC AUC (from "
            f"{a.metrics['baseline_auc']:.3f}) beyond noise; {len(significant)} of {len(a.features)} "
            f"features matter to performance on {a.params['rows']} rows."
        )
    else:
        summary = (
            f"No feature's permutation importance is distinguishable from zero on {a.params['rows']} "
            f"rows (ROC AUC {a.metrics['baseline_auc']:.3f}): the model's performance rests on no "
            "single feature, or the sample is too small."
        )
    table = _importance_table(a, "global_importance", "Permutation importance (drop in ROC AUC)",
                              "drop in ROC AUC")
    table = EvidenceTable(table.name, table.records,
                          PlotSpec("bar", x="feature", y="importance", lo="lo", hi="hi",
                                   title="Permutation importance (drop in ROC AUC)",
                                   ylabel="drop in ROC AUC", reference=0.0),
                          table.description)
    metrics = {**a.metrics, "rows": float(a.params["rows"]), "significant_features": float(len(significant)),
               **{f"importance.{f}": float(v) for f, v in zip(a.features, a.importance, strict=True)}}
    return CheckResult(
        check_id="explain.permutation",
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        policy={"permutation_sample_size": pol.permutation_sample_size,
                "permutation_repeats": pol.permutation_repeats, "confidence_level": pol.confidence_level},
        evidence=(table,),
        provenance=Provenance(params=dict(a.params), seed=ctx.seed),
    )


# --- methods that ran -------------------------------------------------------------------------


def _methods_that_ran(ctx: Any) -> tuple[dict[str, Attribution], dict[str, str]]:
    """Every attribution method that produced a result, and the error text of those that failed."""
    ran: dict[str, Attribution] = {}
    failed: dict[str, str] = {}
    is_torch = getattr(ctx.model, "torch_module", None) is not None
    for m in METHODS:
        if m == "gradients" and not is_torch:
            continue
        out: Outcome = outcome(ctx, m)
        if out.error is not None:
            if isinstance(out.error, CheckNotApplicable):
                continue
            failed[m] = f"{type(out.error).__name__}: {' '.join(str(out.error).split())[:200]}"
        elif isinstance(out.value, dict):
            ran.update(out.value)
        else:
            ran[m] = out.value
    return ran, failed


def _missing_text(failed: dict[str, str]) -> str:
    return "; ".join(f"{METHOD_LABELS.get(m, m)} failed ({e})" for m, e in failed.items())


# --- explain.agreement ----------------------------------------------------------------------


@register_check("explain.agreement", family=FAMILY, needs=(METHOD,))
def agreement_check(ctx: Any) -> CheckResult:
    """Rank agreement of global importances between every pair of methods that ran."""
    pol = ctx.policy.explain
    ran, failed = _methods_that_ran(ctx)
    if len(ran) < 2:
        names = ", ".join(METHOD_LABELS[m] for m in ran) or "none"
        raise CheckNotApplicable(
            f"needs at least two explanation methods that ran (ran: {names}"
            + (f"; {_missing_text(failed)}" if failed else "") + ")"
        )
    features = next(iter(ran.values())).features
    k = min(pol.top_k, len(features))
    pairs = rank_agreement(
        {m: a.importance for m, a in ran.items()}, {m: a.boot for m, a in ran.items()}, k,
        pol.confidence_level,
    )
    limit = pol.agreement_min_spearman
    lab = METHOD_LABELS
    per_pair = [
        judge(p.spearman, p.spearman_lo, p.spearman_hi, limit, "min").value if p.defined else "N/A"
        for p in pairs
    ]
    defined = [p for p in pairs if p.defined]
    tied = [m for m, a in ran.items() if len(features) >= 2 and bool(all_tied(a.importance))]
    if len(features) < 2:
        why = (f"the model has one input column ({features[0]}): every method ranks it first and there is "
               "no ranking to compare")
    else:
        why = ("all ties in the global importance of " + ", ".join(lab[m] for m in tied)
               + ": no ranking to compare")
    missing = f"; missing: {', '.join(lab.get(m, m) for m in failed)}" if failed else ""
    if not defined:
        # undefined is not disagreement: no pair can be judged, nothing speaks against the methods
        verdict = Verdict.PASS
        summary = f"Rank agreement is not applicable: {why} (Spearman undefined for every pair){missing}."
        worst = None
    else:
        verdict = _worst(Verdict(v) for v in per_pair if v != "N/A")
        worst = min(defined, key=lambda p: p.spearman)
        if verdict is Verdict.PASS:
            head = f"All {len(defined)} comparable pairs of {len(ran)} methods agree on the feature ranking"
        elif verdict is Verdict.WARN:
            head = "The methods' rankings may disagree (an interval reaches below the minimum)"
        else:
            head = "The methods disagree on which features matter: do not trust any single explanation"
        undefined_pairs = [f"{lab[p.a]} ~ {lab[p.b]}" for p in pairs if not p.defined]
        summary = (
            f"{head}; lowest Spearman {worst.spearman:.2f} ({_pct(pol.confidence_level)} CI "
            f"{worst.spearman_lo:.2f} to {worst.spearman_hi:.2f}) between {lab[worst.a]} and "
            f"{lab[worst.b]}, minimum {limit:g}"
            + (f"; not applicable for {', '.join(undefined_pairs)} ({why})" if undefined_pairs else "")
            + missing + "."
        )
    by_method = []
    for m, a in ran.items():
        pos_imp = np.clip(a.importance, 0, None)
        total = float(pos_imp.sum()) or 1.0
        r = ranks_desc(a.importance)
        for j, f in enumerate(features):
            by_method.append({"feature": f, "method": lab[m], "share": float(pos_imp[j] / total),
                              "importance": float(a.importance[j]), "rank": int(r[j])})
    matrix = []
    rho: dict[tuple[str, str], float] = {(p.a, p.b): p.spearman for p in pairs}
    rho.update({(p.b, p.a): p.spearman for p in pairs})
    for a_ in ran:
        for b_ in ran:
            matrix.append({"method_a": lab[a_], "method_b": lab[b_],
                           "spearman": 1.0 if a_ == b_ else float(rho[(a_, b_)])})
    pair_rows = [
        {"pair": f"{lab[p.a]} ~ {lab[p.b]}", "method_a": lab[p.a], "method_b": lab[p.b],
         "spearman": p.spearman, "lo": p.spearman_lo, "hi": p.spearman_hi, "kendall": p.kendall,
         "top_k_overlap": p.top_k_overlap, "k": p.k, "verdict": v}
        for p, v in zip(pairs, per_pair, strict=True)
    ]
    evidence = (
        EvidenceTable(
            "importance_by_method",
            tuple(by_method),
            PlotSpec("bar", x="feature", y="share", group="method",
                     title="Global importance per method (share of each method's total)",
                     ylabel="share of total importance"),
            description="each method's global importance, normalised to shares so methods compare",
        ),
        EvidenceTable(
            "agreement_matrix",
            tuple(matrix),
            PlotSpec("heatmap", x="method_a", y="method_b", value="spearman",
                     title="Rank agreement (Spearman) between methods"),
            description="Spearman correlation of the global rankings of every pair of methods",
        ),
        EvidenceTable(
            "agreement_pairs",
            tuple(pair_rows),
            PlotSpec("bar", x="pair", y="spearman", lo="lo", hi="hi", reference=limit,
                     title="Spearman per pair with bootstrap interval", ylabel="Spearman"),
            description=f"Spearman (bootstrap interval), Kendall tau and top-{k} overlap per pair",
        ),
    )
    nan = float("nan")
    metrics: dict[str, float] = {
        "min_spearman": worst.spearman if worst else nan,
        "min_spearman_lo": worst.spearman_lo if worst else nan,
        "min_spearman_hi": worst.spearman_hi if worst else nan,
        "mean_spearman": float(np.mean([p.spearman for p in defined])) if defined else nan,
        "min_kendall": float(min(p.kendall for p in defined)) if defined else nan,
        "min_top_k_overlap": (float(min(p.top_k_overlap for p in defined if np.isfinite(p.top_k_overlap)))
                              if any(np.isfinite(p.top_k_overlap) for p in defined) else nan),
        "methods_compared": float(len(ran)),
        "methods_missing": float(len(failed)),
        "pairs_not_applicable": float(len(pairs) - len(defined)),
    }
    for p in pairs:
        metrics[f"spearman.{p.a}~{p.b}"] = p.spearman
        metrics[f"kendall.{p.a}~{p.b}"] = p.kendall
        metrics[f"top_k_overlap.{p.a}~{p.b}"] = p.top_k_overlap
    return CheckResult(
        check_id="explain.agreement",
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        policy={"agreement_min_spearman": limit, "top_k": k, "confidence_level": pol.confidence_level},
        evidence=evidence,
        provenance=Provenance(
            params={
                "methods": [lab[m] for m in ran],
                "missing": {lab.get(m, m): e for m, e in failed.items()},
                "n_bootstrap": pol.n_bootstrap,
                "rule": _RANK_RULE.format(measure="each pair's Spearman"),
                **({"not_applicable": why} if len(defined) < len(pairs) else {}),
                "rows": {lab[m]: int(a.units.shape[0]) for m, a in ran.items()},
            },
            seed=ctx.seed,
        ),
    )


# --- explain.faithfulness -------------------------------------------------------------------


@register_check("explain.faithfulness", family=FAMILY, needs=(METHOD,))
def faithfulness_check(ctx: Any) -> CheckResult:
    """Deletion / insertion curves in attribution order against random orders."""
    pol = ctx.policy.explain
    sh = shared(ctx)
    ran, failed = _methods_that_ran(ctx)
    local = {m: a for m, a in ran.items() if a.local is not None}
    if not local:
        raise CheckNotApplicable(
            "needs a method with per-row attributions that ran"
            + (f" ({_missing_text(failed)})" if failed else "")
        )
    if len(sh.columns) < 2:
        raise CheckNotApplicable(
            f"the model has one input column ({sh.columns[0]}): every removal order is the same, so "
            "attribution order cannot be compared with random orders"
        )
    reference = sh.codec.reference_row(sh.background_full)
    lab = METHOD_LABELS
    curves, gaps, per_method = [], [], []
    undefined: dict[str, str] = {}
    any_moves = False
    metrics: dict[str, float] = {}
    limit = pol.faithfulness_min_auc_gap
    for m, a in local.items():
        assert a.local is not None and a.rows is not None
        n = min(len(a.local), pol.faithfulness_sample_size)
        A = sh.codec.encode(sh.X.iloc[:n])
        pred_pos = np.asarray(ctx.test.y_pred)[a.rows[:n]]
        with single_threaded():
            # the curves' rows are the explained rows with some columns from the reference row
            mixer = sh.mixer(sh.codec.decode(np.vstack([A, reference[None, :]])))
            res = faithfulness(sh.predict_encoded, A, a.local[:n], pred_pos, reference,
                               pol.faithfulness_random_orders, ctx.rng(f"explain.faithfulness.{m}"),
                               predict_mixed=mixer)
        any_moves = any_moves or bool(res.moves.any())
        if not res.defined:
            undefined[m] = (
                "the model's output does not change when features are removed or inserted"
                if not res.moves.any()
                else "its attributions are all equal on every row: they give no order to test"
            )
        for kind, gap_rows in (("deletion", res.deletion_gap_rows), ("insertion", res.insertion_gap_rows)):
            rng = ctx.rng(f"explain.boot.faith.{m}.{kind}")
            boot = bootstrap_means(gap_rows, pol.n_bootstrap, rng)
            lo, hi = percentile_interval(boot[:, 0], pol.confidence_level)
            point = float(gap_rows.mean())
            gaps.append({"method": lab[m], "curve": kind, "gap": point, "lo": float(lo), "hi": float(hi),
                         "rows": n})
            metrics[f"{m}.{kind}_gap"] = point
            metrics[f"{m}.{kind}_gap_lo"] = float(lo)
            metrics[f"{m}.{kind}_gap_hi"] = float(hi)
            if kind == "deletion" and res.defined:
                v = judge(point, float(lo), float(hi), limit, "min")
                per_method.append((m, v, point, float(lo), float(hi)))
        metrics[f"{m}.rows_with_order"] = float(res.ordered.sum())
        metrics[f"{m}.rows_where_output_moves"] = float(res.moves.sum())
        metrics[f"{m}.deletion_auc"] = res.deletion_auc
        metrics[f"{m}.deletion_auc_random"] = res.deletion_auc_random
        metrics[f"{m}.insertion_auc"] = res.insertion_auc
        metrics[f"{m}.insertion_auc_random"] = res.insertion_auc_random
        for name, ys in (("deletion", res.deletion), ("deletion, random order", res.deletion_random),
                         ("insertion", res.insertion), ("insertion, random order", res.insertion_random)):
            for x, y in zip(res.fractions, ys, strict=True):
                curves.append({"fraction": float(x), "probability": float(y), "curve": f"{lab[m]} {name}"})
    if not any_moves:
        # a constant model (on these rows): every curve is flat, every gap is 0; "as faithful as
        # random" would be as wrong as "more faithful than random"
        raise CheckNotApplicable(
            "the model's predicted-class probability does not change when features of the explained "
            "rows are removed or inserted (a constant model on these rows): faithfulness cannot be "
            "measured"
        )
    # a method whose attributions give no order while the model's output moves explains nothing:
    # WARN, never PASS
    verdict = _worst([v for _, v, *_ in per_method] + [Verdict.WARN] * len(undefined))
    no_order = (f"; no order to test for {', '.join(f'{lab[m]} ({why})' for m, why in undefined.items())}"
                if undefined else "")
    if not per_method:
        summary = f"Faithfulness cannot be judged{no_order}"
    else:
        worst = min(per_method, key=lambda t: t[2])
        ci = (f"deletion AUC gap {worst[2]:.3f}, {_pct(pol.confidence_level)} CI {worst[3]:.3f} to "
              f"{worst[4]:.3f}, minimum {limit:g}")
        if verdict is Verdict.PASS:
            summary = (
                "Attributions are more faithful than random orders: removing features in attribution "
                "order lowers the predicted-class probability faster than at random (weakest: "
                f"{lab[worst[0]]}, {ci})"
            )
        elif verdict is Verdict.FAIL:
            summary = (
                f"Attributions are no more faithful than random orders: removing features in "
                f"{lab[worst[0]]}'s order does not lower the predicted-class probability faster ({ci})"
            )
        elif _worst([v for _, v, *_ in per_method]) is Verdict.WARN:
            summary = (
                f"Attributions are not clearly more faithful than random orders ({lab[worst[0]]}: {ci}; "
                "the interval reaches the minimum)"
            )
        else:
            summary = f"Attributions with an order are more faithful than random orders ({lab[worst[0]]}: {ci})"
        summary += no_order
    summary += (f"; missing: {', '.join(lab.get(m, m) for m in failed)}" if failed else "") + "."
    evidence = (
        EvidenceTable(
            "curves",
            tuple(curves),
            PlotSpec("line", x="fraction", y="probability", group="curve",
                     title="Deletion and insertion curves", xlabel="share of features removed / inserted",
                     ylabel="predicted-class probability"),
            description="mean predicted-class probability as features are removed (deletion) or "
            "inserted into the reference row (insertion), attribution order vs random orders",
        ),
        EvidenceTable(
            "auc_gaps",
            tuple(gaps),
            PlotSpec("bar", x="method", y="gap", lo="lo", hi="hi", group="curve",
                     reference=pol.faithfulness_min_auc_gap,
                     title="AUC gap over random order (higher = more faithful)", ylabel="AUC gap"),
            description="deletion: AUC(random) - AUC(attribution order); insertion: the reverse",
        ),
    )
    ref_values = sh.codec.decode(reference[None, :]).iloc[0]
    return CheckResult(
        check_id="explain.faithfulness",
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        policy={"faithfulness_min_auc_gap": pol.faithfulness_min_auc_gap,
                "faithfulness_sample_size": pol.faithfulness_sample_size,
                "faithfulness_random_orders": pol.faithfulness_random_orders,
                "confidence_level": pol.confidence_level},
        evidence=evidence,
        provenance=Provenance(
            params={
                "methods": [lab[m] for m in local],
                "missing": {lab.get(m, m): e for m, e in failed.items()},
                "reference_row": {c: (None if pd.isna(v) else str(v)) for c, v in ref_values.items()},
                "reference": "median (numbers) / most frequent value (categories) of the background split",
                "random_orders": pol.faithfulness_random_orders,
                "verdict_on": "deletion AUC gap; insertion reported alongside",
                "rule": "audit.stats.judge on the deletion AUC gap (bootstrap interval over rows) against "
                "the minimum; a method whose attributions are all equal on every row gives no order: WARN; "
                "a model whose output never moves: not applicable (SKIPPED)",
                **({"no_order": {lab[m]: why for m, why in undefined.items()}} if undefined else {}),
            },
            seed=ctx.seed,
        ),
    )


# --- explain.sensitive_reliance -----------------------------------------------------------


def _proxy_table(ctx: Any) -> tuple[pd.DataFrame, str, int]:
    pol = ctx.policy.explain
    split = ctx.train if ctx.train is not None else ctx.test
    rng = ctx.rng("explain.proxies.rows")
    idx = np.sort(rng.choice(split.n, size=min(split.n, pol.proxy_sample_size), replace=False))
    X = split.X.iloc[idx].reset_index(drop=True)
    S = split.sensitive.iloc[idx].reset_index(drop=True)
    table = proxy_scan(X, S, ctx.rng("explain.proxies.folds"), level=pol.confidence_level)
    return table, split.role, len(idx)


#: the proxy table of the sensitive features (how well other columns predict each), its split and rows
PROXIES: Intermediate[tuple[pd.DataFrame, str, int]] = Intermediate("explain.proxies", _proxy_table)


@register_check("explain.sensitive_reliance", family=FAMILY, applies=needs_sensitive_features,
                needs=(METHOD, PROXIES))
def sensitive_reliance_check(ctx: Any) -> CheckResult:
    """Share of SHAP attribution on the sensitive features and on their proxies."""
    pol = ctx.policy.explain
    shap_out: Outcome = outcome(ctx, "shap")
    if shap_out.error is not None:
        raise RuntimeError(
            f"SHAP attributions are needed and failed: {type(shap_out.error).__name__}: {shap_out.error}"
        ) from shap_out.error
    a: Attribution = shap_out.value
    table, role, n_rows = ctx.get(PROXIES)
    features = list(a.features)
    sensitive = list(ctx.sensitive_features)
    sens_inputs = [f for f in features if f in sensitive]
    flagged = table[table["auc"] > pol.proxy_auc_min] if len(table) else table
    allowed = set(pol.proxy_allowed)
    proxy_of: dict[str, list[str]] = {}
    for _, r in flagged.iterrows():
        if r["feature"] not in sensitive:
            proxy_of.setdefault(r["feature"], []).append(r["sensitive"])
    counted = [f for f in features if f in sens_inputs or (f in proxy_of and f not in allowed)]
    U = a.units
    total = U.sum(1).mean()
    share_f = U.mean(0) / total if total > 0 else np.zeros(len(features))
    cidx = [features.index(f) for f in counted]
    boot = bootstrap_means(U, pol.n_bootstrap, ctx.rng("explain.boot.reliance"))
    boot_tot = boot.sum(1)
    boot_share = np.where(boot_tot > 0, boot[:, cidx].sum(1) / np.where(boot_tot > 0, boot_tot, 1), 0.0)
    share = float(share_f[cidx].sum()) if cidx else 0.0
    lo, hi = (percentile_interval(boot_share, pol.confidence_level) if cidx else (0.0, 0.0))
    lo, hi = float(lo), float(hi)
    limit = pol.sensitive_reliance_max_share
    verdict = judge(share, lo, hi, limit, "max")
    boot_f = boot / np.where(boot_tot > 0, boot_tot, 1)[:, None]
    f_lo, f_hi = percentile_interval(boot_f, pol.confidence_level)
    share_rows = []
    for j, f in enumerate(features):
        if f in sens_inputs:
            role_ = "sensitive input"
        elif f in proxy_of:
            role_ = "proxy (allowed by policy)" if f in allowed else "proxy"
        else:
            role_ = "other"
        share_rows.append({"feature": f, "role": role_, "share": float(share_f[j]), "lo": float(f_lo[j]),
                           "hi": float(f_hi[j]), "counted": f in counted})
    proxy_rows = []
    for _, r in table.iterrows():
        is_flag = bool(r["auc"] > pol.proxy_auc_min) and r["feature"] not in sensitive
        proxy_rows.append({
            "feature": r["feature"], "sensitive": r["sensitive"], "auc": float(r["auc"]),
            "lo": float(r["lo"]), "hi": float(r["hi"]), "flagged": is_flag,
            "counted": is_flag and r["feature"] not in allowed,
            "evidence": (
                f"{r['feature']} alone predicts {r['sensitive']} with out-of-fold AUC {r['auc']:.2f} "
                f"({_pct(pol.confidence_level)} CI {r['lo']:.2f} to {r['hi']:.2f}, n={int(r['n'])}, "
                f"{int(r['groups'])} groups)"
            ),
        })
    proxy_rows.sort(key=lambda d: -d["auc"])
    named = []
    for f in counted:
        if f in sens_inputs:
            named.append(f"{f} (sensitive input, {share_f[features.index(f)]:.0%})")
        else:
            aucs = flagged[flagged["feature"] == f]
            best = aucs.loc[aucs["auc"].idxmax()]
            named.append(f"{f} (proxy of {best['sensitive']}, AUC {best['auc']:.2f}, "
                         f"{share_f[features.index(f)]:.0%})")
    where = "over" if share > limit else "within"
    if counted:
        summary = (
            f"Sensitive features and proxies carry {share:.1%} of the SHAP attribution "
            f"({_pct(pol.confidence_level)} CI {lo:.1%} to {hi:.1%}), {where} the {limit:.0%} limit: "
            f"{'; '.join(named)}."
        )
    else:
        summary = (
            f"The model does not take {', '.join(sensitive)} as input and no feature predicts "
            f"{'it' if len(sensitive) == 1 else 'them'} above AUC {pol.proxy_auc_min:g}: 0% of the "
            f"attribution rests on sensitive features or proxies (limit {limit:.0%})."
        )
    evidence = (
        EvidenceTable(
            "proxies",
            tuple(proxy_rows),
            PlotSpec("bar", x="feature", y="auc", lo="lo", hi="hi", group="sensitive",
                     reference=pol.proxy_auc_min,
                     title="How well each feature predicts a sensitive attribute",
                     ylabel="out-of-fold AUC"),
            description="AUC of a seeded, cross-fitted one-feature classifier for each sensitive attribute",
        ),
        EvidenceTable(
            "attribution_share",
            tuple(share_rows),
            PlotSpec("bar", x="feature", y="share", lo="lo", hi="hi", group="role",
                     title="Share of SHAP attribution per feature", ylabel="share of mean |SHAP|"),
            description="share of total mean |SHAP| per input column, by role",
        ),
    )
    max_auc = float(table["auc"].max()) if len(table) else 0.5
    metrics = {
        "reliance_share": share,
        "reliance_share_lo": lo,
        "reliance_share_hi": hi,
        "sensitive_input_share": float(sum(share_f[features.index(f)] for f in sens_inputs)),
        "proxy_share": float(sum(share_f[features.index(f)] for f in counted if f not in sens_inputs)),
        "proxies_flagged": float(len(proxy_of)),
        "max_proxy_auc": max_auc,
    }
    return CheckResult(
        check_id="explain.sensitive_reliance",
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        policy={"sensitive_reliance_max_share": limit, "proxy_auc_min": pol.proxy_auc_min,
                "proxy_allowed": list(pol.proxy_allowed), "confidence_level": pol.confidence_level},
        evidence=evidence,
        provenance=Provenance(
            params={
                "attributions": f"SHAP ({a.params['explainer']}) on {len(U)} rows",
                "proxy_classifier": "histogram Bayes rule on one feature (20 quantile bins or its "
                "categories), 2-fold cross-fitted, seeded; AUC one-vs-rest macro for multi-valued "
                "attributes; Hanley-McNeil intervals",
                "proxy_rows": n_rows,
                "proxy_split": role,
                "sensitive": sensitive,
                "proxy_rule": f"a feature is a proxy when its own AUC for a sensitive attribute exceeds "
                f"{pol.proxy_auc_min:g} (a mediator that only partly reflects the attribute stays below)",
                "verdict_rule": "audit.stats.judge on the share (bootstrap interval over rows) against the "
                "limit: FAIL when the whole interval lies above it, PASS when the whole interval lies at "
                "or below it, WARN when it straddles",
            },
            seed=ctx.seed,
        ),
    )
