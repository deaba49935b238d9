"""Benchmark of the causal family (not a test): wall time on 10,000 audited rows, and the bare
library calls it bounds.

Prints, for the lending generator (10,000 audited rows, the demo's gradient-boosting model):

* seconds per causal check and for the whole family (first run, which pays DoWhy's import, and the
  median of the following runs); the budget is 30 s on a 2-core machine;
* one DoWhy random-common-cause refutation on 10,000 rows: DoWhy's default 100 simulations against
  the family's default 20, and with propensity-score matching as the estimator;
* fitting the SCM with dowhy.gcm's automatic mechanism assignment (``assign_causal_mechanisms``,
  default quality) against the deliberate linear mechanisms, on the same nodes and 2,000 rows;
* accuracy: the SCM estimates with the Bayes-score oracle (TrueScoreModel) against the generator's
  exact total, natural direct and natural indirect effects.

With ``--adult``: the causal family on the issue's anchor workload (UCI Adult from ../shared/data,
the workload ``bench/bench_audit.py`` builds: 14,653 audited rows, a gradient-boosting pipeline,
the graph with the categorical mediator occupation), default policy. Each repeat runs in a fresh
process, so DoWhy's import is paid as in the audit; printed are the wall and CPU seconds of each
check (median over the repeats), the load average and the figures of the last run.

Run:  python bench/bench_causal.py [--rows 10000] [--repeats 3] [--skip-bare] [--adult]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings

import numpy as np


def _family(data, model, seed: int) -> tuple[dict[str, tuple[float, float]], tuple[float, float], dict[str, str]]:
    """Run each causal check; (wall, CPU) seconds per check and in total. CPU time is what the wall time
    would be on an idle machine (the work is single-threaded: BLAS is held to one thread)."""
    from audit.registry import iter_checks
    from audit.runner import context_from_frames, run_check

    ctx = context_from_frames(
        model, data.test, target="approved", positive_label=1, sensitive=["sex", "age_group"], checks=["causal"],
        causal={"edges": [list(e) for e in data.edges], "treatment": "sex", "outcome": "approved",
                "mediators": ["income", "debt_ratio"]},
        seed=seed,
    )
    per: dict[str, tuple[float, float]] = {}
    summaries: dict[str, str] = {}
    for info in iter_checks(["causal"]):
        w0, c0 = time.perf_counter(), time.process_time()
        r = run_check(info, ctx)
        per[info.check_id] = (time.perf_counter() - w0, time.process_time() - c0)
        summaries[info.check_id] = f"{r.verdict.value}: {r.summary}"
    total = (sum(w for w, _ in per.values()), sum(c for _, c in per.values()))
    return per, total, summaries


def bench_family(rows: int, repeats: int) -> None:
    from audit.datasets import make_lending_data
    from audit.demo import train_demo_model

    data = make_lending_data(8000, 0, rows, seed=0)
    model = train_demo_model(data, seed=0)
    print(f"== causal family on {rows} audited rows (default policy: SCM sample 2000, 50 bootstrap refits, "
          f"effect sample {min(rows, 10000)}, 20 refuter simulations); seconds as wall / CPU ==")
    runs = []
    summaries: dict[str, str] = {}
    for i in range(repeats + 1):
        per, total, summaries = _family(data, model, seed=i)
        runs.append((per, total))
        tag = "first (cold: imports DoWhy)" if i == 0 else f"run {i}"
        print(f"  {tag}: total {total[0]:.1f} / {total[1]:.1f} s  "
              + "  ".join(f"{k.split('.')[1]} {w:.1f}/{c:.1f}" for k, (w, c) in per.items()))
    warm = runs[1:] or runs
    print(f"  median of warm runs: total {statistics.median(t[0] for _, t in warm):.1f} s wall, "
          f"{statistics.median(t[1] for _, t in warm):.1f} s CPU")
    for cid in warm[0][0]:
        print(f"    {cid:34s} {statistics.median(p[cid][0] for p, _ in warm):6.2f} s wall "
              f"{statistics.median(p[cid][1] for p, _ in warm):6.2f} s CPU")
    for cid, s in summaries.items():
        print(f"  {cid}: {s}")


def bench_refuter(rows: int) -> None:
    import networkx as nx
    from dowhy import CausalModel
    from threadpoolctl import threadpool_limits

    from audit.datasets import make_lending_data

    data = make_lending_data(0, 0, rows, seed=1)
    df = data.test.copy()
    df["sex"] = (df["sex"] == "male").astype(int)
    df = df.astype({c: object for c in ("age_group", "region")})
    print(f"== one random-common-cause refutation on {rows} rows (sex -> approved, back-door set of 4) ==")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = CausalModel(df, "sex", "approved", graph=nx.DiGraph(list(data.edges)), effect_modifiers=[])
        estimand = model.identify_effect()
        estimand.set_backdoor_variables(["years_experience", "education", "region", "age_group"], key="backdoor")
        plan = (("backdoor.linear_regression", 100, "DoWhy default"), ("backdoor.linear_regression", 20,
                 "trustaudit default"), ("backdoor.propensity_score_matching", 20, "trustaudit default"))
        for method, sims, label in plan:
            est = model.estimate_effect(estimand, method_name=method, effect_modifiers=[])
            times = []
            for single in (False, True):
                t0, c0 = time.perf_counter(), time.process_time()
                with threadpool_limits(1, user_api="blas") if single else contextlib.nullcontext():
                    model.refute_estimate(estimand, est, method_name="random_common_cause",
                                          num_simulations=sims, random_seed=1)
                times.append((time.perf_counter() - t0, time.process_time() - c0))
            print(f"  {method.split('.')[1]:28s} {sims:4d} simulations ({label}): "
                  f"{times[0][0]:6.2f} s wall / {times[0][1]:6.2f} s CPU with default BLAS threads, "
                  f"{times[1][0]:6.2f} s wall / {times[1][1]:6.2f} s CPU with 1 BLAS thread")
    # the same refutation inside causal.estimate_effect (text columns dummy-coded once, one thread)
    from causal import estimate_effect, parse_graph

    for sims in (100, 20):
        c0 = time.process_time()
        a = estimate_effect(data.test, parse_graph(edges=data.edges), "sex", "approved", n_bootstrap=2,
                            refuter_simulations=sims, seed=1)
        row = {r.refuter: r for r in a.refutations}["random_common_cause"]
        print(f"  trustaudit estimate_effect, linear_regression, {sims:3d} simulations: random common cause "
              f"{row.seconds:6.2f} s wall (whole analysis {time.process_time() - c0:6.2f} s CPU)")


def bench_mechanisms() -> None:
    import networkx as nx
    from dowhy import gcm

    from audit.datasets import make_lending_data
    from causal import parse_graph, plan_scm
    from causal._scm import fit_scm, plain_objects

    gcm.config.disable_progress_bars()
    data = make_lending_data(0, 0, 2000, seed=2)
    rows = plain_objects(data.test)
    plan = plan_scm(parse_graph(edges=data.edges), "sex", ["sex", "region", "education", "income", "debt_ratio"],
                    rows)
    print(f"== SCM fit on 2000 rows, {len(plan.nodes)} nodes ({len(plan.affected)} modelled descendants) ==")
    t0, c0 = time.perf_counter(), time.process_time()
    fit_scm(plan, rows, kind="linear", seed=0)
    lin, lin_cpu = time.perf_counter() - t0, time.process_time() - c0
    g = nx.DiGraph(list(plan.edges))
    g.add_nodes_from(plan.nodes)
    scm = gcm.InvertibleStructuralCausalModel(g)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gcm.auto.assign_causal_mechanisms(scm, rows[list(plan.nodes)])
        gcm.fit(scm, rows[list(plan.nodes)])
    auto, auto_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"  deliberate linear mechanisms: {lin:6.2f} s wall / {lin_cpu:6.2f} s CPU")
    print(f"  gcm.auto.assign_causal_mechanisms (default quality) + fit: {auto:6.2f} s wall / {auto_cpu:6.2f} s "
          f"CPU of this process (its model selection runs in worker processes)  (x{auto / lin:.0f} wall)")


def bench_accuracy() -> None:
    from audit.datasets import TrueScoreModel, make_lending_data, model_causal_truth
    from causal import parse_graph, scm_analysis

    data = make_lending_data(0, 0, 2000, seed=21)
    m = TrueScoreModel()
    cols = list(m.feature_names_in_)

    def predict(X):
        p = m.predict_proba(X[cols])[:, 1]
        return p, (p > 0.5).astype(int)

    eff, cf = scm_analysis(data.test, data.test[cols], predict, parse_graph(edges=data.edges), "sex",
                           mediators=("income", "debt_ratio"), n_bootstrap=50, seed=5)
    t = model_causal_truth(data.scm, lambda X: m.predict_proba(X)[:, 1], 400_000, 7)
    o = cf.overall
    print("== accuracy with the Bayes-score oracle (2000 rows, 50 bootstrap refits; truths from the generator) ==")
    for name, (est, lo, hi), truth in (
        ("total effect", (eff.total["male"].estimate, eff.total["male"].ci_low, eff.total["male"].ci_high),
         t["total_effect"]),
        ("natural direct effect", (eff.direct["male"].estimate, eff.direct["male"].ci_low, eff.direct["male"].ci_high),
         t["natural_direct_effect"]),
        ("natural indirect effect", (eff.indirect["male"].estimate, eff.indirect["male"].ci_low,
                                     eff.indirect["male"].ci_high), t["natural_indirect_effect"]),
        ("counterfactual flip rate", (o["flip_rate"], o["flip_rate.ci_low"], o["flip_rate.ci_high"]),
         t["counterfactual_flip_rate"]),
        ("counterfactual mean |Δ|", (o["mean_abs_delta"], o["mean_abs_delta.ci_low"], o["mean_abs_delta.ci_high"]),
         t["counterfactual_mean_abs_delta"]),
    ):
        print(f"  {name:24s} estimate {est:.4f}  95% CI [{lo:.4f}, {hi:.4f}]  truth {truth:.4f}  error {est - truth:+.4f}")


def _adult_child(folder: str) -> None:
    """Child process: the causal checks on the anchor workload, timed one by one (wall and CPU)."""
    import json
    import os
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_audit import EDGES

    from audit.io import load_model, load_table
    from audit.registry import iter_checks
    from audit.runner import context_from_frames, run_check

    model = load_model(Path(folder) / "model.skops").adapter.estimator
    test = load_table(Path(folder) / "test.csv")
    ctx = context_from_frames(
        model, test, target="income", positive_label=">50K", sensitive=["sex", "race"], checks=["causal"],
        causal={"edges": EDGES, "treatment": "sex", "outcome": "income", "mediators": ["occupation", "hours-per-week"]},
        seed=0,
    )
    out = {}
    for info in iter_checks(["causal"]):
        w0, c0 = time.perf_counter(), time.process_time()
        r = run_check(info, ctx)
        out[info.check_id] = {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0,
                              "verdict": r.verdict.value, "summary": r.summary,
                              "metrics": {k: v for k, v in r.metrics.items() if isinstance(v, float)}}
    out["load"] = os.getloadavg()[0]
    print(json.dumps(out))


def bench_adult(repeats: int) -> None:
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from bench_audit import DATA, build

    if not (DATA / "adult_train.csv").is_file():
        print(f"Adult not found in {DATA}; nothing to measure")
        return
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        runs = []
        load0 = os.getloadavg()[0]
        for _ in range(repeats):
            proc = subprocess.run([sys.executable, __file__, "--adult-child", tmp], capture_output=True, text=True,
                                  check=True, cwd=here.parent)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    med = statistics.median
    print(f"== causal family on the Adult anchor workload (default policy; {repeats} fresh processes; load average "
          f"{load0:.1f} at start, {runs[-1]['load']:.1f} at end, {os.cpu_count()} cores); seconds as wall / CPU ==")
    checks = [k for k in runs[0] if k != "load"]
    for cid in checks:
        print(f"  {cid:34s} {med(r[cid]['wall'] for r in runs):6.2f} s wall {med(r[cid]['cpu'] for r in runs):6.2f} s "
              f"CPU  {runs[-1][cid]['verdict']}")
    print(f"  {'family':34s} {med(sum(r[c]['wall'] for c in checks) for r in runs):6.2f} s wall "
          f"{med(sum(r[c]['cpu'] for c in checks) for r in runs):6.2f} s CPU (DoWhy's import included)")
    for cid in checks:
        print(f"  {cid}: {runs[-1][cid]['summary']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-bare", action="store_true", help="only the family timing")
    ap.add_argument("--adult", action="store_true", help="only the causal family on the Adult anchor workload")
    ap.add_argument("--adult-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.adult_child:
        _adult_child(args.adult_child)
        return
    if args.adult:
        bench_adult(args.repeats)
        return
    np.random.seed(0)
    bench_family(args.rows, args.repeats)
    if not args.skip_bare:
        bench_refuter(args.rows)
        bench_mechanisms()
        bench_accuracy()


if __name__ == "__main__":
    main()
