"""Coverage of every interval the causal family prints, over simulated datasets with known truth.

``run(n_datasets, seed)`` draws ``n_datasets`` independent datasets from the lending generator
(audit.datasets) and runs the SAME library calls the causal checks make (``causal.scm_analysis``
for the sensitive-attribute checks, ``causal.estimate_effect`` for ``causal.treatment_effect``),
with small samples and few refits to keep a run of 200 datasets within minutes on one core.

Truths:

* treatment effect (the ATE interval ``causal.treatment_effect`` prints: the primary estimator's,
  back-door linear regression with its OLS interval) of sex on the label: the generator's closed
  form (``ground_truth(...).total_effect``, exact);
* total, natural direct and natural indirect effect of sex on a fixed model's score, and the
  model's counterfactual flip rate and mean |Δscore|: ``audit.datasets.model_causal_truth`` on
  400,000 fresh draws with exact counterfactuals (Monte-Carlo error about 1e-4, far below the
  intervals' widths).

A second generator (``JobSCM``) has a categorical mediator, as Adult's occupation: sex and
education choose one of four jobs by a Gumbel-max multinomial logit, and weekly hours follow sex,
job and education with Gaussian noise. Its truths (same five quantities, a fixed model reading sex,
job, hours and education) come from 400,000 draws with every individual's Gumbel and hours noise
reused in every world: the exact counterfactuals of the generator, whose categorical mechanism is
the Gumbel-max one the SCM checks assume.

Run:  python bench/_coverage_causal.py [--datasets 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from typing import Any, ClassVar

import numpy as np
import pandas as pd

#: sizes of one simulated audit (small, so 200 datasets run in minutes)
SCM_ROWS = 400
SCM_REFITS = 50  # the policy's default n_bootstrap
EFFECT_ROWS = 1000
LEVEL = 0.95
TRUTH_ROWS = 400_000


class FixedModel:
    """A fixed logistic score over the generator's columns that does not see sex (it sees the proxy
    and the mediators): its causal effects flow through marketing_segment, income and debt_ratio."""

    features = ("region", "education", "marketing_segment", "income", "debt_ratio")
    shift: ClassVar[dict[str, float]] = {"north": 0.0, "south": -0.2, "east": 0.15}

    def score(self, X: pd.DataFrame) -> np.ndarray:
        z = (-0.2 + 0.35 * X["marketing_segment"].to_numpy(float) + 0.06 * (X["income"].to_numpy(float) - 40)
             - 2.0 * (X["debt_ratio"].to_numpy(float) - 0.4) + 0.1 * (X["education"].to_numpy(float) - 13)
             + X["region"].map(self.shift).to_numpy(float))
        return 1.0 / (1.0 + np.exp(-z))

    def predict(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        s = self.score(X)
        return s, (s > 0.5).astype(np.int8)


class JobSCM:
    """sex -> job (4 levels, Gumbel-max multinomial logit) -> hours, education -> job and hours."""

    jobs = ("clerk", "craft", "sales", "tech")
    # logits of the jobs: intercept, male, (education - 13) / 2.5
    logit = np.array([[0.0, 0.0, 0.0], [-0.3, 1.2, -0.3], [-0.6, 0.2, 0.2], [-1.2, 0.6, 0.9]])
    hours_job: ClassVar[dict[str, float]] = {"clerk": 0.0, "craft": 4.0, "sales": 2.0, "tech": 3.0}

    def structural(self, male: np.ndarray, edu: np.ndarray, gumbel: np.ndarray, u: np.ndarray,
                   male_for_job: np.ndarray | None = None) -> pd.DataFrame:
        mj = male if male_for_job is None else male_for_job
        z = (edu - 13) / 2.5
        eta = self.logit[:, 0][None, :] + np.outer(mj, self.logit[:, 1]) + np.outer(z, self.logit[:, 2])
        job = np.asarray(self.jobs, dtype=object)[np.argmax(eta + gumbel, axis=1)]
        shift = np.array([self.hours_job[j] for j in job])
        hours = 36 + 5 * mj + shift + 0.8 * (edu - 13) + 6 * u
        return pd.DataFrame({"sex": np.where(male == 1, "male", "female").astype(object), "job": job,
                             "hours": hours, "education": edu})

    def draw(self, n: int, seed: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        noise = {"male": (rng.random(n) < 0.5).astype(float), "edu": 13 + 2.5 * rng.standard_normal(n),
                 "gumbel": rng.gumbel(size=(n, len(self.jobs))), "u": rng.standard_normal(n)}
        return self.structural(noise["male"], noise["edu"], noise["gumbel"], noise["u"]), noise


JOB_EDGES = [["sex", "job"], ["education", "job"], ["sex", "hours"], ["job", "hours"], ["education", "hours"]]


class JobModel:
    """A fixed logistic score reading sex (a direct effect), job, hours and education."""

    job: ClassVar[dict[str, float]] = {"clerk": -0.4, "craft": 0.2, "sales": 0.1, "tech": 0.8}

    def score(self, X: pd.DataFrame) -> np.ndarray:
        z = (-1.2 + 0.25 * (X["sex"] == "male").to_numpy(float) + X["job"].map(self.job).to_numpy(float)
             + 0.05 * (X["hours"].to_numpy(float) - 40) + 0.15 * (X["education"].to_numpy(float) - 13))
        return 1.0 / (1.0 + np.exp(-z))

    def predict(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        s = self.score(X)
        return s, (s > 0.5).astype(np.int8)


def job_truth(scm: JobSCM, model: JobModel, n: int, seed: int) -> dict[str, float]:
    """The five truths of ``model`` under ``scm``: every world from the same noise (exact counterfactuals)."""
    _, nz = scm.draw(n, seed)
    zeros, ones = np.zeros(n), np.ones(n)
    s_f = model.score(scm.structural(zeros, nz["edu"], nz["gumbel"], nz["u"]))
    s_m = model.score(scm.structural(ones, nz["edu"], nz["gumbel"], nz["u"]))
    s_m_mf = model.score(scm.structural(ones, nz["edu"], nz["gumbel"], nz["u"], male_for_job=zeros))
    male = nz["male"] == 1
    s_fact, s_other = np.where(male, s_m, s_f), np.where(male, s_f, s_m)
    return {
        "total_effect": float(np.mean(s_m) - np.mean(s_f)),
        "natural_direct_effect": float(np.mean(s_m_mf) - np.mean(s_f)),
        "natural_indirect_effect": float(np.mean(s_m) - np.mean(s_m_mf)),
        "counterfactual_flip_rate": float(np.mean((s_fact > 0.5) != (s_other > 0.5))),
        "counterfactual_mean_abs_delta": float(np.mean(np.abs(s_other - s_fact))),
    }


def _row(name: str, method: str, truth: str, covered: int, n: int, seconds: float,
         conservative: bool = False) -> dict[str, Any]:
    return {"interval": name, "family": "causal", "method": method, "truth": truth, "datasets": n,
            "covered": int(covered), "coverage": covered / n if n else float("nan"), "level": LEVEL,
            "conservative": conservative, "seconds": round(seconds, 2)}


def run(n_datasets: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    from audit.datasets import EDGES, LendingSCM, ground_truth, model_causal_truth, sample
    from causal import estimate_effect, parse_graph, scm_analysis
    from causal._scm import single_threaded_blas

    scm = LendingSCM()
    model = FixedModel()
    truth = model_causal_truth(scm, model.score, TRUTH_ROWS, 10_000 + seed)
    ate_truth = ground_truth(scm).total_effect
    graph = parse_graph(edges=[list(e) for e in EDGES])
    cols = list(model.features)
    hits = {k: 0 for k in ("ate", "total", "direct", "indirect", "flip", "mad")}
    secs = {"scm": 0.0, "ate": 0.0}
    with single_threaded_blas():
        for i in range(n_datasets):
            rows = sample(scm, SCM_ROWS + EFFECT_ROWS, 1_000_003 * (seed + 1) + i)
            scm_rows, eff_rows = rows.iloc[:SCM_ROWS].reset_index(drop=True), rows.iloc[SCM_ROWS:].reset_index(drop=True)
            t = time.perf_counter()
            eff, cf = scm_analysis(scm_rows, scm_rows[cols], model.predict, graph, "sex",
                                   mediators=("income", "debt_ratio"), n_bootstrap=SCM_REFITS, confidence_level=LEVEL,
                                   seed=seed * 7919 + i)
            secs["scm"] += time.perf_counter() - t
            assert eff is not None and cf is not None
            for key, iv, tv in (("total", eff.total["male"], truth["total_effect"]),
                                ("direct", eff.direct["male"], truth["natural_direct_effect"]),
                                ("indirect", eff.indirect["male"], truth["natural_indirect_effect"])):
                hits[key] += iv.ci_low <= tv <= iv.ci_high
            o = cf.overall
            hits["flip"] += o["flip_rate.ci_low"] <= truth["counterfactual_flip_rate"] <= o["flip_rate.ci_high"]
            hits["mad"] += o["mean_abs_delta.ci_low"] <= truth["counterfactual_mean_abs_delta"] <= o["mean_abs_delta.ci_high"]
            t = time.perf_counter()
            a = estimate_effect(eff_rows, graph, "sex", "approved", n_bootstrap=0, refuter_simulations=1,
                                confidence_level=LEVEL, seed=seed * 7919 + i)
            secs["ate"] += time.perf_counter() - t
            p = a.primary_row()
            hits["ate"] += p.ci_low <= ate_truth <= p.ci_high
    # the categorical mediator: sex -> job -> hours (hours is a mediator too, as in Adult)
    job_scm, job_model = JobSCM(), JobModel()
    jtruth = job_truth(job_scm, job_model, TRUTH_ROWS, 20_000 + seed)
    jgraph = parse_graph(edges=JOB_EDGES)
    jhits = {k: 0 for k in ("total", "direct", "indirect", "flip", "mad")}
    jsecs = 0.0
    with single_threaded_blas():
        for i in range(n_datasets):
            rows, _ = job_scm.draw(SCM_ROWS, 2_000_003 * (seed + 1) + i)
            t = time.perf_counter()
            eff, cf = scm_analysis(rows, rows, job_model.predict, jgraph, "sex", mediators=("job", "hours"),
                                   n_bootstrap=SCM_REFITS, confidence_level=LEVEL, seed=seed * 7919 + i)
            jsecs += time.perf_counter() - t
            assert eff is not None and cf is not None
            for key, iv, tv in (("total", eff.total["male"], jtruth["total_effect"]),
                                ("direct", eff.direct["male"], jtruth["natural_direct_effect"]),
                                ("indirect", eff.indirect["male"], jtruth["natural_indirect_effect"])):
                jhits[key] += iv.ci_low <= tv <= iv.ci_high
            o = cf.overall
            jhits["flip"] += o["flip_rate.ci_low"] <= jtruth["counterfactual_flip_rate"] <= o["flip_rate.ci_high"]
            jhits["mad"] += o["mean_abs_delta.ci_low"] <= jtruth["counterfactual_mean_abs_delta"] <= o["mean_abs_delta.ci_high"]
    n = n_datasets
    boot = (f"bootstrap over {SCM_REFITS} refits of the SCM (rows resampled with replacement, mechanisms refitted, "
            f"quantity recomputed), {SCM_ROWS} rows")
    jboot = f"{boot}; categorical mediator (job, 4 levels) abducted under the generator's Gumbel-max mechanism"
    jtruth_doc = f"exact counterfactuals of JobSCM on {TRUTH_ROWS:,} fresh draws"
    jshare = jsecs / 5
    truth_scm = f"model_causal_truth: exact counterfactuals of the generator on {TRUTH_ROWS:,} fresh draws"
    share = secs["scm"] / 5  # one scm_analysis call serves the five SCM intervals: its time split evenly
    return [
        _row("causal.treatment_effect ATE (sex -> label)",
             f"DoWhy back-door linear regression, OLS interval with HC3 robust SE, {EFFECT_ROWS} rows",
             "closed form of the generator (probit algebra)", hits["ate"], n, secs["ate"]),
        _row("causal.sensitive_effect total effect on the score", f"estimate ± t(B-1)·SE, {boot}", truth_scm,
             hits["total"], n, share),
        _row("causal.path_decomposition natural direct effect", f"estimate ± t(B-1)·SE, {boot}", truth_scm,
             hits["direct"], n, share),
        _row("causal.path_decomposition natural indirect effect", f"estimate ± t(B-1)·SE, {boot}", truth_scm,
             hits["indirect"], n, share),
        _row("causal.counterfactual_fairness flip rate",
             f"Wilson at the effective sample size from the {boot}", truth_scm, hits["flip"], n, share),
        _row("causal.counterfactual_fairness mean |Δscore|", f"estimate ± t(B-1)·SE, {boot}", truth_scm,
             hits["mad"], n, share),
        _row("causal.sensitive_effect total effect (categorical mediator)", f"estimate ± t(B-1)·SE, {jboot}",
             jtruth_doc, jhits["total"], n, jshare),
        _row("causal.path_decomposition natural direct effect (categorical mediator)",
             f"estimate ± t(B-1)·SE, {jboot}", jtruth_doc, jhits["direct"], n, jshare),
        _row("causal.path_decomposition natural indirect effect (categorical mediator)",
             f"estimate ± t(B-1)·SE, {jboot}", jtruth_doc, jhits["indirect"], n, jshare),
        _row("causal.counterfactual_fairness flip rate (categorical mediator)",
             f"Wilson at the effective sample size from the {jboot}", jtruth_doc, jhits["flip"], n, jshare),
        _row("causal.counterfactual_fairness mean |Δscore| (categorical mediator)",
             f"estimate ± t(B-1)·SE, {jboot}", jtruth_doc, jhits["mad"], n, jshare),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t = time.perf_counter()
    for r in run(args.datasets, args.seed):
        print(f"{r['interval']:75s} {r['covered']:4d}/{r['datasets']:<4d} = {r['coverage']:.3f}  ({r['seconds']:.0f} s)")
    print(f"total {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
