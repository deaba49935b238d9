"""The privacy family: verify a differential-privacy claim and audit membership leakage.

- ``privacy.dp_claim`` recomputes a DP-SGD claim's ε with Opacus' accountants (RDP, PRV, GDP
  where valid) and compares it with the claimed ε. It also reads how the run sampled and drew its
  noise (``dp_conditions`` in the model's metadata): a claim whose assumptions the run broke
  (amplification by subsampling without secret Poisson sampling, or seeded noise) FAILs whatever
  its arithmetic, and what the ε does not cover (``not_covered``) is listed in the result.
- ``privacy.membership_inference`` attacks the model with training rows as members and holdout
  rows as non-members (loss, entropy and a calibrated attack with reference models), reports
  ROC AUC, balanced accuracy, TPR at low FPR, the ROC curve and an empirical ε lower bound,
  overall and per sensitive group.

Heavy libraries (opacus, torch, scikit-learn's clone) load inside the checks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import Field

from audit.exceptions import CheckNotApplicable
from audit.registry import register_check, register_family
from audit.results import CheckResult, EvidenceTable, PlotSpec, Provenance, Verdict
from audit.spec import DPClaim, PolicyModel

if TYPE_CHECKING:
    from audit.context import AuditContext, DataSplit

__all__ = [
    "NOT_RECORDED_ASSUMPTION",
    "NO_CLAIM_REASON",
    "NO_MEMBERSHIP_DATA_REASON",
    "dp_claim",
    "membership_inference",
    "resolve_claim",
    "resolve_conditions",
]


class PrivacyPolicy(PolicyModel):
    """Thresholds for the privacy family (issue: privacy checks).

    ``epsilon_tolerance`` is relative: a DP claim fails when an accountant's ε exceeds the claimed
    ε by more than this fraction. ``attack_auc_max`` bounds the best membership-inference attack's
    ROC AUC (its CI decides FAIL vs WARN). ``empirical_epsilon_max`` (optional) bounds the
    empirical ε lower bound even when no DP claim is made; ``empirical_delta`` is the δ used in
    that bound when there is no claim (a claim's own δ is used otherwise). ``max_rows`` caps the
    audited members + non-members (balanced). ``n_reference_models`` reference models feed the
    calibrated attack (0 switches it off).
    """

    epsilon_tolerance: float = Field(0.05, ge=0, le=10)
    attack_auc_max: float = Field(0.60, ge=0.5, le=1)
    empirical_epsilon_max: float | None = Field(None, ge=0)
    empirical_delta: float = Field(1e-5, gt=0, lt=1)
    max_rows: int = Field(20_000, ge=100, le=10_000_000)
    n_reference_models: int = Field(4, ge=0, le=64)
    min_group_size: int = Field(30, ge=1, le=1_000_000)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)


register_family(
    "privacy", title="Privacy", policy=PrivacyPolicy,
    help="membership-inference attacks with an empirical ε bound; recomputes a stated DP claim",
)

NO_CLAIM_REASON = (
    "no DP claim to verify: state one in privacy.dp_claim (epsilon, delta, noise_multiplier, "
    "sample_rate or batch_size and dataset_size, steps or epochs, accountant) or ship it as "
    "'dp_claim' in the model's metadata"
)
NO_MEMBERSHIP_DATA_REASON = (
    "membership inference needs both training rows (members) and holdout rows (non-members): "
    "give them with --train and --holdout (data.train, data.holdout)"
)
MIN_ROWS_PER_SIDE = 20
NOT_RECORDED_ASSUMPTION = (
    "how the run sampled and drew its noise is not recorded: this ε assumes secret Poisson "
    "sampling at the claimed rate and noise nobody can reproduce"
)


def _g(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def resolve_claim(ctx: AuditContext) -> tuple[DPClaim | None, str]:
    """The DP claim to use and where it came from (resolved and validated at the boundary: the
    spec's wins over the model's metadata)."""
    rc = ctx.dp_claim
    return (rc.claim, rc.source) if rc is not None else (None, "")


def resolve_conditions(ctx: AuditContext) -> Any:
    """How the audited model's DP run sampled and drew its noise (``ClaimConditions``), as recorded
    in the model's metadata (``dp_conditions`` and condition keys inside its ``dp_claim``): facts
    about how the model was trained, so they apply to a claim stated in the spec as well. Empty
    (nothing recorded) when the model carries none. Read at the boundary."""
    from audit.privacy.accounting import ClaimConditions

    rc = ctx.dp_claim
    if rc is not None:
        return rc.conditions
    return ClaimConditions()


def _has_claim(ctx: AuditContext) -> str | None:
    return None if resolve_claim(ctx)[0] is not None else NO_CLAIM_REASON


def _has_members_and_nonmembers(ctx: AuditContext) -> str | None:
    return None if ctx.train is not None and ctx.holdout is not None else NO_MEMBERSHIP_DATA_REASON


# --- privacy.dp_claim -------------------------------------------------------------------------


@register_check("privacy.dp_claim", family="privacy", applies=_has_claim)
def dp_claim(ctx: AuditContext) -> CheckResult:
    """Recompute a DP-SGD claim's ε with Opacus' RDP, PRV and GDP accountants and compare."""
    from audit.privacy.accounting import (
        ACCOUNTANTS,
        assess_claim,
        broken_assumptions,
        opacus_schedule,
        recompute_claim,
    )

    claim, source = resolve_claim(ctx)
    assert claim is not None  # the predicate guarantees it
    cond = resolve_conditions(ctx)
    pol = ctx.policy.privacy
    with np.errstate(divide="ignore", invalid="ignore"):
        est = recompute_claim(claim)
    a = assess_claim(claim, est, pol.epsilon_tolerance)
    q, steps = opacus_schedule(claim)
    broken = broken_assumptions(q, cond)
    params = f"σ = {_g(claim.noise_multiplier)}, q = {q:.4g}, {steps} steps, δ = {claim.delta:g}"
    values = ", ".join(f"{k.upper()} {_g(est[k].epsilon)}" for k in ACCOUNTANTS if math.isfinite(est[k].epsilon))
    weak_delta = claim.dataset_size is not None and claim.delta >= 1.0 / claim.dataset_size
    stated = claim.accountant.upper()
    if broken:
        verdict = Verdict.FAIL
        summary = (
            f"The claimed ε = {_g(claim.epsilon)} does not hold for this run, whatever the "
            f"accountants give ({values} for {params}): {'; '.join(broken)}."
        )
    elif not a.supported_by_stated and not a.supported_by_rigorous:
        verdict = Verdict.FAIL
        summary = (
            f"The claimed ε = {_g(claim.epsilon)} understates the privacy loss beyond the "
            f"{pol.epsilon_tolerance:.0%} tolerance: the accountants give {values} for {params}."
        )
    elif not a.supported_by_rigorous:
        verdict = Verdict.WARN
        summary = (
            f"The claimed ε = {_g(claim.epsilon)} matches its {stated} accountant, which is an "
            f"approximation; rigorous accountants give {_g(a.rigorous)} ({values}) for {params}."
        )
    elif not a.supported_by_stated:
        verdict = Verdict.WARN
        summary = (
            f"The claimed ε = {_g(claim.epsilon)} is not what its stated {stated} accountant gives "
            f"({_g(a.stated)}) but is covered by a rigorous one ({values}) for {params}."
        )
    elif weak_delta:
        verdict = Verdict.WARN
        summary = (
            f"The claimed ε = {_g(claim.epsilon)} holds ({values}) but δ = {claim.delta:g} is not "
            f"below 1/n = {1.0 / claim.dataset_size:.3g}, a weak guarantee, for {params}."  # type: ignore[operator]
        )
    else:
        verdict = Verdict.PASS
        summary = f"The claimed ε = {_g(claim.epsilon)} holds: the accountants give {values} for {params}."
    if cond.not_covered:
        summary += f" Not covered by this ε: {'; '.join(cond.not_covered)}."
    if not cond.recorded:
        summary += f" Note: {NOT_RECORDED_ASSUMPTION}."
    records = [
        {
            "accountant": k,
            "epsilon": est[k].epsilon,
            "rigorous": est[k].rigorous,
            "stated_by_claim": k == claim.accountant,
            "claimed_epsilon": claim.epsilon,
            "note": est[k].note,
        }
        for k in ACCOUNTANTS
    ]
    claim_rows = [
        {"parameter": "epsilon", "value": claim.epsilon, "derived": False},
        {"parameter": "delta", "value": claim.delta, "derived": False},
        {"parameter": "noise_multiplier", "value": claim.noise_multiplier, "derived": False},
        {"parameter": "sample_rate", "value": q, "derived": claim.sample_rate is None},
        {"parameter": "steps", "value": steps, "derived": claim.steps is None},
    ]
    for name in ("batch_size", "dataset_size", "epochs", "max_grad_norm"):
        v = getattr(claim, name)
        if v is not None:
            claim_rows.append({"parameter": name, "value": v, "derived": False})
    metrics = {
        "claimed_epsilon": claim.epsilon,
        "delta": claim.delta,
        "noise_multiplier": claim.noise_multiplier,
        "sample_rate": q,
        "steps": float(steps),
        "epsilon_rdp": est["rdp"].epsilon,
        "rdp_order": est["rdp"].rdp_order,
        "epsilon_prv": est["prv"].epsilon,
        "epsilon_gdp": est["gdp"].epsilon,
        "epsilon_stated_accountant": a.stated,
        "epsilon_rigorous": a.rigorous,
        "epsilon_excess": a.excess,
        "assumptions_broken": float(len(broken)),
        "not_covered_items": float(len(cond.not_covered)),
    }
    cond_rows = [
        {"condition": "sampling", "recorded": cond.sampling,
         "claim_assumes": "poisson" if q < 1 else "any (no amplification)"},
        {"condition": "sampling_secret", "recorded": cond.sampling_secret,
         "claim_assumes": True if q < 1 else "any (no amplification)"},
        {"condition": "noise_secret", "recorded": cond.noise_secret, "claim_assumes": True},
        {"condition": "noise_source", "recorded": cond.noise_source, "claim_assumes": "unpredictable"},
        {"condition": "unit", "recorded": cond.unit, "claim_assumes": None},
        {"condition": "neighbouring", "recorded": cond.neighbouring, "claim_assumes": None},
    ]
    return CheckResult(
        check_id="privacy.dp_claim",
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        policy={"epsilon_tolerance": pol.epsilon_tolerance},
        evidence=(
            EvidenceTable(
                "accountants",
                tuple(records),
                PlotSpec("bar", x="accountant", y="epsilon", reference=claim.epsilon,
                         title="ε recomputed by each accountant (line: claimed ε)", ylabel="ε"),
                "ε for the claim's parameters under Opacus' accountants; NaN where not valid.",
            ),
            EvidenceTable("claim", tuple(claim_rows), None,
                          "The claim's parameters; 'derived' ones were computed from the others "
                          "(q = 1 / ceil(N / B) and steps = epochs · ceil(N / B), as Opacus runs them)."),
            EvidenceTable("conditions", tuple(cond_rows), None,
                          "How the run sampled and drew its noise (from the model's dp_conditions; "
                          "None: not recorded) against what the claim's accountant assumes."),
            EvidenceTable("not_covered", tuple({"item": x} for x in cond.not_covered), None,
                          "What the run released that this ε does not cover."),
        ),
        provenance=Provenance(
            params={
                "claim_source": source,
                "accountant_stated": claim.accountant,
                "sample_rate_from": "sample_rate" if claim.sample_rate is not None else "1/ceil(dataset_size/batch_size)",
                "steps_from": "steps" if claim.steps is not None else (
                    "ceil(epochs/sample_rate)" if claim.sample_rate is not None else "epochs*ceil(N/B)"),
                "prv_eps_error": 0.01,
                "conditions": cond.to_dict() if cond.recorded else NOT_RECORDED_ASSUMPTION,
                "assumptions_broken": broken,
                "not_covered": list(cond.not_covered),
            }
        ),
    )


# --- privacy.membership_inference -------------------------------------------------------------


def _reference_phi(
    ctx: AuditContext,
    mem_idx: np.ndarray,
    nm_idx: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Cross-fitted reference models on the holdout rows; φ_ref for the audited rows.

    The holdout rows are split in two folds; reference models trained on random subsamples of
    one fold (80 % of it, at most as many rows as the training set and ``max_rows``) score the
    audited non-members of the other fold, and a random half of the members each. No reference
    model ever scores a row it trained on (nor does the preprocessing a fold's clones share see
    one). Clones are cheaper members of the model's family (``audit.privacy.reference``:
    boosting shortened, preprocessing fitted once per fold). Returns (φ members, φ non-members,
    provenance) with φ arrays of shape (rows, models per fold), or Nones when not possible.
    """
    from audit._refit import describe
    from audit.privacy import reference
    from audit.privacy.attacks import logit_confidence
    from audit.privacy.reference import PROXY_HIDDEN, CloneReferences, fit_proxy_predict

    train, hold = ctx.train, ctx.holdout
    assert train is not None and hold is not None
    k_total = ctx.policy.privacy.n_reference_models
    info: dict[str, Any] = {"n_reference_models": 0}
    if k_total == 0:
        info["reference"] = "off (policy n_reference_models = 0)"
        return None, None, info
    per_fold = max(1, math.ceil(k_total / 2))
    fold_of_holdout = rng.permutation(hold.n) % 2
    scorer_nm = 1 - fold_of_holdout[nm_idx]
    scorer_m = rng.permutation(len(mem_idx)) % 2
    for f in (0, 1):
        y_f = hold.y[fold_of_holdout == f]
        if len(y_f) < 10 or len(np.unique(y_f)) < 2:
            info["reference"] = "off: a holdout fold has fewer than 10 rows or a single class"
            return None, None, info
    est = getattr(ctx.model, "estimator", None)
    kind = "clone" if est is not None else "proxy"
    encoder = getattr(ctx.model, "encoder", None)
    note = ""
    clones: list[CloneReferences] = []
    phi_m = np.full((len(mem_idx), per_fold), np.nan)
    phi_nm = np.full((len(nm_idx), per_fold), np.nan)
    for f in (0, 1):
        fold_rows = np.flatnonzero(fold_of_holdout == f)
        pm, pnm = mem_idx[scorer_m == f], nm_idx[scorer_nm == f]
        X_pred = pd.concat([train.X.iloc[pm], hold.X.iloc[pnm]], ignore_index=True)
        y_pred = np.concatenate([train.y[pm], hold.y[pnm]])
        fold_clones: CloneReferences | None = None
        for j in range(per_fold):
            size = max(10, min(int(0.8 * len(fold_rows)), train.n, ctx.policy.privacy.max_rows))
            sub = np.sort(rng.choice(fold_rows, size=size, replace=False))
            if len(np.unique(hold.y[sub])) < 2:
                sub = fold_rows
            seed = int(rng.integers(2**31 - 1))
            p = None
            if kind == "clone":
                try:
                    if fold_clones is None:  # the fold's preprocessing, fitted once on all its rows
                        fold_clones = CloneReferences(est, hold.X.iloc[fold_rows], hold.y[fold_rows], X_pred, seed,
                                                      max_iter=reference.REFERENCE_MAX_ITER)
                        clones.append(fold_clones)
                    p = fold_clones.fit_predict(np.searchsorted(fold_rows, sub), seed)
                except Exception as exc:  # noqa: BLE001 - any estimator may refuse a refit
                    kind = "proxy"
                    note = (f"clone refit failed ({type(exc).__name__}: {str(exc)[:120]}); "
                            f"the proxy was used from then on ({info['n_reference_models']} clones before)")
            if p is None:
                if encoder is None:
                    from audit.model import TabularEncoder

                    encoder = TabularEncoder.fit(hold.X)
                p = fit_proxy_predict(encoder.transform(hold.X.iloc[sub]), hold.y[sub],
                                      encoder.transform(X_pred), seed)
            phi = logit_confidence(p, y_pred)
            phi_m[scorer_m == f, j] = phi[: len(pm)]
            phi_nm[scorer_nm == f, j] = phi[len(pm):]
            info["n_reference_models"] += 1
    info["reference"] = (
        f"clone of {type(est).__name__} refit on holdout folds" if kind == "clone"
        else f"proxy torch MLP {PROXY_HIDDEN} on the model's input encoding, trained on holdout folds"
    )
    if note:
        info["reference_note"] = note
    if kind == "clone" and clones:
        info["reference_boosting"] = describe(clones[0].boosting)
        left_out = [k for c in clones for k in c.left_out]
        if any(left_out):
            info["reference_unsplittable_columns"] = (
                "columns no split can use (fewer than min_samples_leaf rows off their most frequent value) "
                f"left out of each refit: {', '.join(map(str, left_out))}")
        if clones[0].shared_preprocessing:
            info["reference_preprocessing"] = (
                "the Pipeline's steps before the last fitted once per holdout fold, on all of the fold's "
                "rows (never scored by that fold's models); each reference model refits the last step")
    info["reference_models_per_fold"] = per_fold
    return phi_m, phi_nm, info


def _judge_bound(lb: float, limit: float) -> Verdict:
    """A one-sided lower confidence bound against a maximum, by :func:`audit.stats.judge` on the
    degenerate interval [lb, lb]: FAIL when the bound exceeds the limit (an infinite bound does),
    PASS otherwise; no bound (NaN) is no evidence either way (PASS)."""
    from audit.stats import judge

    if math.isnan(lb):
        return Verdict.PASS
    if math.isinf(lb):
        return Verdict.FAIL if lb > limit else Verdict.PASS
    return judge(lb, lb, lb, limit, "max")


def _sample(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    return np.sort(rng.choice(n, size=k, replace=False))


@register_check("privacy.membership_inference", family="privacy", applies=_has_members_and_nonmembers, cost=7)
def membership_inference(ctx: AuditContext) -> CheckResult:
    """Membership-inference attacks (training rows vs holdout rows) and an empirical ε bound."""
    from audit.privacy.attacks import (
        calibrated_scores,
        entropy_scores,
        logit_confidence,
        loss_scores,
        membership_audit,
    )

    train, hold = ctx.train, ctx.holdout
    assert train is not None and hold is not None
    pol = ctx.policy.privacy
    n_side = min(train.n, hold.n, pol.max_rows // 2)
    if n_side < MIN_ROWS_PER_SIDE:
        raise CheckNotApplicable(
            f"membership inference needs at least {MIN_ROWS_PER_SIDE} training and "
            f"{MIN_ROWS_PER_SIDE} holdout rows (got {train.n} and {hold.n})"
        )
    rng = ctx.rng("privacy.membership_inference")
    mem_idx = _sample(rng, train.n, n_side)
    nm_idx = _sample(rng, hold.n, n_side)
    claim, claim_source = resolve_claim(ctx)
    delta = claim.delta if claim is not None else pol.empirical_delta

    def target(split: DataSplit, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return split.scores[idx], split.y[idx]

    pm, ym = target(train, mem_idx)
    pn, yn = target(hold, nm_idx)
    member = {"loss": loss_scores(pm, ym), "entropy": entropy_scores(pm)}
    nonmember = {"loss": loss_scores(pn, yn), "entropy": entropy_scores(pn)}
    phi_m, phi_nm, ref_info = _reference_phi(ctx, mem_idx, nm_idx, ctx.rng("privacy.membership_inference.reference"))
    if phi_m is not None and phi_nm is not None:
        member["calibrated"] = calibrated_scores(logit_confidence(pm, ym), phi_m)
        nonmember["calibrated"] = calibrated_scores(logit_confidence(pn, yn), phi_nm)
    groups_m = {f: train.sensitive[f].to_numpy()[mem_idx] for f in ctx.sensitive_features}
    groups_nm = {f: hold.sensitive[f].to_numpy()[nm_idx] for f in ctx.sensitive_features}
    audit = membership_audit(
        member, nonmember, delta=delta, rng=ctx.rng("privacy.membership_inference.split"),
        confidence=pol.confidence_level, member_groups=groups_m, nonmember_groups=groups_nm,
    )
    bound = audit.bound
    best = next(r for r in audit.attacks if r["attack"] == audit.best_attack)
    for rec in audit.groups:
        rec["reliable"] = bool(rec["n_members"] >= pol.min_group_size and rec["n_nonmembers"] >= pol.min_group_size)

    # verdicts against limits: audit.stats.judge. The ε lower bound is itself a one-sided
    # confidence bound, so it is judged as the degenerate interval [lb, lb] (FAIL iff lb > limit).
    from audit.stats import judge, worst

    lb = bound.epsilon_lower_bound
    fails, warns = [], []
    parts: list[Verdict] = []
    if claim is not None:
        v = _judge_bound(lb, claim.epsilon)
        parts.append(v)
        if v is Verdict.FAIL:
            fails.append(f"the empirical ε ≥ {_g(lb)} contradicts the claimed ε = {_g(claim.epsilon)}")
    if pol.empirical_epsilon_max is not None:
        v = _judge_bound(lb, pol.empirical_epsilon_max)
        parts.append(v)
        if v is Verdict.FAIL:
            fails.append(f"the empirical ε ≥ {_g(lb)} exceeds the policy maximum {_g(pol.empirical_epsilon_max)}")
    v = judge(best["auc"], best["auc_lo"], best["auc_hi"], pol.attack_auc_max, "max")
    parts.append(v)
    if v is Verdict.FAIL:
        fails.append(f"the {best['attack']} attack's AUC CI lies above {_g(pol.attack_auc_max)}")
    elif v is Verdict.WARN:
        warns.append(f"the {best['attack']} attack's AUC CI straddles {_g(pol.attack_auc_max)}")
    verdict = worst(parts)

    reliable = [r for r in audit.groups if r["reliable"] and r["attack"] == audit.best_attack
                and math.isfinite(r["auc"])]
    group_bound = {r["label"]: r["epsilon_lower_bound"] for r in audit.groups if r["attack"] == bound.attack}
    leakiest = max(reliable, key=lambda r: r["auc"]) if reliable else None
    summary = (
        f"Best attack ({best['attack']}) AUC {_g(best['auc'])} [{_g(best['auc_lo'])}, {_g(best['auc_hi'])}], "
        f"TPR {best['tpr_at_0.1pct_fpr']:.1%} at 0.1% FPR; empirical ε ≥ {_g(lb)} "
        f"({pol.confidence_level:.0%})"
        + (f" vs claimed ε = {_g(claim.epsilon)}" if claim is not None else "")
        + (f"; most exposed group {leakiest['label']} (AUC {_g(leakiest['auc'])})" if leakiest else "")
        + (f": {'; '.join(fails)}." if fails else (f": {'; '.join(warns)}." if warns else "."))
    )

    metrics: dict[str, float] = {
        "n_members": float(n_side),
        "n_nonmembers": float(n_side),
        "epsilon_lower_bound": lb,
        "epsilon_estimate": bound.epsilon_estimate,
        "epsilon_selection_bound": bound.selection_bound,
        "delta": delta,
        "best.auc": best["auc"],
        "best.auc_lo": best["auc_lo"],
        "best.auc_hi": best["auc_hi"],
    }
    if claim is not None:
        metrics["claimed_epsilon"] = claim.epsilon
    keys = ("auc", "auc_lo", "auc_hi", "tpr_at_0.1pct_fpr", "tpr_at_0.1pct_fpr_lo", "tpr_at_0.1pct_fpr_hi",
            "tpr_at_1pct_fpr", "tpr_at_1pct_fpr_lo", "tpr_at_1pct_fpr_hi", "balanced_accuracy",
            "balanced_accuracy_lo", "balanced_accuracy_hi")
    for rec in audit.attacks:
        for k in keys:
            metrics[f"{rec['attack']}.{k}"] = rec[k]
    for rec in reliable:
        for k in ("auc", "auc_lo", "auc_hi", "tpr_at_1pct_fpr"):
            metrics[f"group.{rec['label']}.{k}"] = rec[k]
        metrics[f"group.{rec['label']}.epsilon_lower_bound"] = group_bound[rec["label"]]

    bound_rec = {
        "attack": bound.attack,
        "threshold": bound.threshold,
        "epsilon_lower_bound": lb,
        "epsilon_estimate": bound.epsilon_estimate,
        "selection_bound": bound.selection_bound,
        "fpr": bound.fpr,
        "fnr": bound.fnr,
        "fpr_upper": bound.fpr_hi,
        "fnr_upper": bound.fnr_hi,
        "n_members": bound.n_members,
        "n_nonmembers": bound.n_nonmembers,
        "delta": delta,
        "claimed_epsilon": claim.epsilon if claim is not None else None,
    }
    evidence = (
        EvidenceTable(
            "attacks", tuple(audit.attacks),
            PlotSpec("bar", x="attack", y="auc", lo="auc_lo", hi="auc_hi", reference=pol.attack_auc_max,
                     title="Membership-inference ROC AUC (line: policy maximum)", ylabel="ROC AUC"),
            "Per attack: AUC (DeLong CI), TPR at 0.1 % / 1 % FPR (Clopper–Pearson on members), balanced "
            "accuracy (threshold chosen on the selection half, measured on the evaluation half).",
        ),
        EvidenceTable(
            "roc_curve", tuple(audit.roc),
            PlotSpec("line", x="fpr", y="tpr", group="attack", title="Membership-inference ROC curve",
                     xlabel="false-positive rate", ylabel="true-positive rate"),
            "Best TPR reachable at each FPR (log-spaced at low FPR), per attack.",
        ),
        EvidenceTable(
            "epsilon_bound", (bound_rec,), None,
            "Empirical ε lower bound (Jagielski et al. 2020) of the (attack, threshold) chosen on the "
            "selection half, with Clopper–Pearson upper ends of FPR and FNR on the evaluation half.",
        ),
    )
    if audit.groups:
        evidence += (
            EvidenceTable(
                "groups", tuple(audit.groups),
                PlotSpec("bar", x="label", y="auc", lo="auc_lo", hi="auc_hi", group="attack",
                         reference=pol.attack_auc_max, title="Attack AUC per sensitive group",
                         xlabel="ROC AUC"),
                "The same attack scores on each group's rows; TPR/FPR at the overall thresholds; "
                "'reliable' when both sides have at least min_group_size rows.",
            ),
        )
    return CheckResult(
        check_id="privacy.membership_inference",
        verdict=verdict,
        summary=summary,
        metrics=metrics,
        policy={
            "attack_auc_max": pol.attack_auc_max,
            "empirical_epsilon_max": pol.empirical_epsilon_max,
            "claimed_epsilon": claim.epsilon if claim is not None else None,
            "confidence_level": pol.confidence_level,
            "min_group_size": pol.min_group_size,
        },
        evidence=evidence,
        provenance=Provenance(
            params={
                "n_members": n_side,
                "n_nonmembers": n_side,
                "max_rows": pol.max_rows,
                "attacks": list(member),
                "best_attack": audit.best_attack,
                "bound_attack": bound.attack,
                "delta": delta,
                "delta_source": "claim" if claim is not None else "policy empirical_delta",
                "claim_source": claim_source or None,
                "selection_split": "half of the rows choose thresholds, the other half measure",
                "auc_interval": "DeLong (audit.stats.delong_auc)",
                "rate_interval": "Clopper-Pearson (audit.stats.clopper_pearson)",
                "verdict_rule": "audit.stats.judge: AUC interval vs attack_auc_max; the ε lower bound "
                                "(a one-sided bound) vs the claimed ε and empirical_epsilon_max",
                **ref_info,
            }
        ),
    )
