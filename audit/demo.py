"""``trustaudit demo``: generate the default data, train a model, save it as skops, audit it.

The data come from the ground-truth generator (audit.datasets), so the demo can say how close
the audit's estimates are to the truth. On 400,000 fresh draws from the same structural causal model
(each individual's noise reused in every world, so counterfactuals are exact) the demo computes the
model's true demographic-parity difference and its causal truths — total, natural direct and
natural indirect effect of sex on the model's score, counterfactual decision flip rate and mean
|Δscore| — and writes each next to the audit's estimate and interval (``truth.json``, and printed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audit.datasets import LendingData, make_lending_data, model_causal_truth
from audit.io import save_skops, write_text_atomic

__all__ = ["CAUSAL_TRUTH_METRICS", "DEMO_FEATURES", "causal_comparison", "population_causal_truth",
           "population_dp_difference", "run_demo", "train_demo_model"]

#: The demo model is "unaware": it does not see sex, but sees its proxy and the mediators.
DEMO_FEATURES = ("age_group", "region", "education", "years_experience", "marketing_segment", "income", "debt_ratio")
POPULATION_ROWS = 400_000


def train_demo_model(data: LendingData, seed: int = 0) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cat = ["age_group", "region"]
    num = [c for c in DEMO_FEATURES if c not in cat]
    pre = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore"), cat), ("num", StandardScaler(), num)]
    )
    model = Pipeline([
        ("prep", pre),
        ("clf", HistGradientBoostingClassifier(max_iter=150, learning_rate=0.08, max_leaf_nodes=15,
                                               random_state=seed)),
    ])
    model.fit(data.train[list(DEMO_FEATURES)], data.train[data.target])
    return model


def population_dp_difference(model: Any, data: LendingData, n: int = POPULATION_ROWS, seed: int = 10_007) -> dict[str, float]:
    """The model's selection rates by sex on ``n`` fresh draws of the generator (the estimand)."""
    pop = data.sample(n, seed)
    pred = model.predict(pop[list(DEMO_FEATURES)])
    rates = {s: float(np.mean(pred[pop["sex"].to_numpy() == s] == 1)) for s in ("female", "male")}
    return {"female": rates["female"], "male": rates["male"],
            "demographic_parity_difference": abs(rates["male"] - rates["female"])}


#: truth name -> (check id, metric holding the audit's estimate; ".ci_low"/".ci_high" its interval)
CAUSAL_TRUTH_METRICS: dict[str, tuple[str, str]] = {
    "total_effect": ("causal.sensitive_effect", "total_effect.male"),
    "natural_direct_effect": ("causal.path_decomposition", "natural_direct_effect.male"),
    "natural_indirect_effect": ("causal.path_decomposition", "natural_indirect_effect.male"),
    "counterfactual_flip_rate": ("causal.counterfactual_fairness", "flip_rate"),
    "counterfactual_mean_abs_delta": ("causal.counterfactual_fairness", "mean_abs_delta"),
}


def population_causal_truth(model: Any, data: LendingData, n: int = POPULATION_ROWS,
                            seed: int = 10_009) -> dict[str, float]:
    """The model's causal truths (effects of sex on its score, counterfactual flips and |Δscore|),
    computed from the generator on ``n`` fresh draws (``audit.datasets.model_causal_truth``)."""
    pos = list(model.classes_).index(data.positive_label)

    def score(frame: Any) -> np.ndarray:
        return np.asarray(model.predict_proba(frame[list(DEMO_FEATURES)]), dtype=float)[:, pos]

    return model_causal_truth(data.scm, score, n, seed)


def causal_comparison(report: Any, truth: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each causal truth next to the audit's estimate and interval (None where the check did not run)."""
    out: dict[str, dict[str, Any]] = {}
    for name, (check, metric) in CAUSAL_TRUTH_METRICS.items():
        try:
            m = dict(report.result(check).metrics)
        except KeyError:
            m = {}
        est, lo, hi = m.get(metric), m.get(f"{metric}.ci_low"), m.get(f"{metric}.ci_high")
        covered = None if est is None or lo is None or hi is None else bool(lo <= truth[name] <= hi)
        out[name] = {"truth": truth[name], "audit_check": check, "audit_metric": metric, "audit_estimate": est,
                     "ci_low": lo, "ci_high": hi, "ci_contains_truth": covered}
    return out


def _spec_toml(data: LendingData, seed: int, checks: Sequence[str]) -> str:
    edges = ",\n  ".join(f'["{a}", "{b}"]' for a, b in data.edges)
    check_list = ", ".join(f'"{c}"' for c in checks)
    return f"""# trustaudit spec written by `trustaudit demo` (re-run: trustaudit audit --spec audit.toml)
seed = {seed}
checks = [{check_list}]

[model]
path = "model.skops"

[data]
test = "data/test.csv"
train = "data/train.csv"
holdout = "data/holdout.csv"
target = "{data.target}"
positive_label = {data.positive_label}
sensitive = ["sex", "age_group"]

[causal]
treatment = "sex"
outcome = "{data.target}"
mediators = ["income", "debt_ratio"]
edges = [
  {edges}
]
"""


def run_demo(
    out: Path,
    *,
    seed: int = 0,
    checks: Sequence[str] | None = None,
    store: Any = None,
    quiet: bool = False,
) -> int:
    from rich.console import Console

    from audit.cli import _print_summary, _progress_runner
    from audit.registry import family_names
    from audit.report import write_reports
    from audit.runner import run_spec

    console = Console(stderr=True, quiet=quiet)
    out = Path(out)
    checks = tuple(checks) if checks else family_names()
    console.print(f"[bold]trustaudit demo[/bold]: generating the lending dataset (seed {seed}) ...")
    data = make_lending_data(seed=seed)
    for role in ("train", "holdout", "test"):
        write_text_atomic(out / "data" / f"{role}.csv", getattr(data, role).to_csv(index=False))
    console.print(f"training a HistGradientBoosting pipeline on {len(data.train)} rows (sex not among its inputs) ...")
    model = train_demo_model(data, seed)
    save_skops(model, out / "model.skops")
    spec_path = write_text_atomic(out / "audit.toml", _spec_toml(data, seed, checks))
    with _progress_runner(quiet) as cb:
        report = run_spec(spec_path, progress=cb)
    reports = out / "reports"
    written = write_reports(report, {
        "json": reports / "report.json", "html": reports / "report.html",
        "markdown": reports / "report.md", "junit": reports / "report.xml", "sarif": reports / "report.sarif",
    })
    if store is not None:
        store.record(report, label="demo")
    truth = data.truth.to_dict()
    pop = population_dp_difference(model, data)
    try:
        dp_metrics = dict(report.result("fairness.demographic_parity").metrics)
    except KeyError:  # the fairness family was not selected
        dp_metrics = {}
    nan = float("nan")
    est = dp_metrics.get("sex.demographic_parity_difference", nan)
    lo = dp_metrics.get("sex.demographic_parity_difference.ci_low", nan)
    hi = dp_metrics.get("sex.demographic_parity_difference.ci_high", nan)
    covered = bool(lo <= pop["demographic_parity_difference"] <= hi)
    causal = causal_comparison(report, population_causal_truth(model, data))
    truth_doc = {
        "generator": truth,
        "generator_params": data.params(),
        "model_population": {**pop, "rows": POPULATION_ROWS},
        "audit_estimate": {"demographic_parity_difference": est, "ci_low": lo, "ci_high": hi},
        "ci_contains_truth": covered if dp_metrics else None,
        "causal": {"rows": POPULATION_ROWS, "method": "exact counterfactuals of the generator on fresh draws "
                   "(each individual's noise reused in every world)", "quantities": causal},
    }
    write_text_atomic(out / "truth.json", json.dumps(truth_doc, indent=2))
    if not quiet:
        _print_summary(report, written)
        if dp_metrics:
            print(
                f"demographic parity difference (sex): audit {est:.4f}, 95% CI [{lo:.4f}, {hi:.4f}]; "
                f"true value for this model {pop['demographic_parity_difference']:.4f} "
                f"({POPULATION_ROWS:,} fresh draws) -> {'inside' if covered else 'OUTSIDE'} the interval"
            )
        for name, c in causal.items():
            if c["audit_estimate"] is None:
                continue
            where = ("inside" if c["ci_contains_truth"] else "OUTSIDE") if c["ci_contains_truth"] is not None else (
                "no interval")
            print(f"{name.replace('_', ' ')} (sex): audit {c['audit_estimate']:.4f}, 95% CI [{c['ci_low']:.4f}, "
                  f"{c['ci_high']:.4f}]; true value {c['truth']:.4f} -> {where}")
        print(f"audit verdict {report.verdict.value} (`trustaudit audit` would exit {report.exit_code()}); "
              f"truth: {out / 'truth.json'}; spec to re-run: {spec_path}")
        sys.stdout.flush()
    return 0
