"""The ``quality`` family: is the model's probability accurate enough to act on?

``quality.brier_score``: the mean squared error of the positive-class probability (the Brier score)
on the audited rows, with a percentile bootstrap interval, judged against ``policy.quality.brier_max``
by trustaudit's one verdict rule. Everything a check needs comes from the context; nothing in
trustaudit names this module (the entry point in pyproject.toml does).
"""

from __future__ import annotations

from pydantic import Field

from audit.context import AuditContext
from audit.registry import register_check, register_family
from audit.results import CheckResult, EvidenceTable, PlotSpec, Provenance
from audit.spec import PolicyModel
from audit.stats import bootstrap_means, judge, percentile_interval


class QualityPolicy(PolicyModel):
    """``[policy.quality]`` in a spec."""

    brier_max: float = Field(0.20, ge=0, le=1)
    n_bootstrap: int = Field(500, ge=20, le=100_000)
    confidence_level: float = Field(0.95, gt=0.5, lt=1)


register_family("quality", title="Model quality", policy=QualityPolicy,
                help="Brier score of the model's probability, with a bootstrap interval")


@register_check("quality.brier_score", family="quality")
def brier_score(ctx: AuditContext) -> CheckResult:
    """Brier score of the positive-class probability against policy.quality.brier_max."""
    pol = ctx.policy.quality
    errors = (ctx.test.scores - ctx.test.y) ** 2
    est = float(errors.mean())
    boot = bootstrap_means(errors[:, None], pol.n_bootstrap, ctx.rng("quality.brier"))
    lo, hi = (float(v[0]) for v in percentile_interval(boot, pol.confidence_level))
    verdict = judge(est, lo, hi, pol.brier_max, bound="max")
    return CheckResult(
        check_id="quality.brier_score",
        verdict=verdict,
        summary=f"Brier score {est:.3f} ({pol.confidence_level:.0%} CI {lo:.3f} to {hi:.3f}); limit {pol.brier_max:g}.",
        metrics={"brier_score": est, "brier_score.ci_low": lo, "brier_score.ci_high": hi},
        policy={"brier_max": pol.brier_max},
        evidence=(EvidenceTable("brier", ({"measure": "Brier score", "value": est, "ci_low": lo, "ci_high": hi},),
                                PlotSpec(kind="bar", x="measure", y="value", lo="ci_low", hi="ci_high",
                                         title="Brier score", reference=pol.brier_max)),),
        provenance=Provenance(params={"rows": int(ctx.test.n), "n_bootstrap": pol.n_bootstrap}),
    )
