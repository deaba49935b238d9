"""Fairness family on UCI Adult (48,842 rows, 1,000 bootstrap resamples) and end-to-end audit cost.

Reports: the family's wall time against the bare fairlearn MetricFrame call on the same rows, our
vectorised bootstrap against fairlearn's own bootstrap (MetricFrame n_boot) on a smaller count, and
the whole `trustaudit audit` command's wall time and peak memory (resource.getrusage of the child).

Then, on the anchor workload of ``bench_audit.py`` (the HistGradientBoosting Pipeline, train and
holdout rows, default policy): the seconds (wall and CPU) of every fairness check against the bare
TreeSHAP call on the audited rows in the same process, and what ``fairness.mitigation``'s shorter
ExponentiatedGradient oracle (``EG_ORACLE_MAX_ITER`` boosting iterations, iterations × rate kept)
changes: the what-if row's accuracy and parity difference against full-length refits, over several
refit samples (audit seeds).

    python bench/bench_fairness.py [--repeats 3] [--anchor-seeds 5] [--only-anchor]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"


def adult() -> pd.DataFrame:
    frames = [pd.read_csv(DATA / f"adult_{n}.csv", na_values=["?"], skipinitialspace=True) for n in ("train", "test")]
    return pd.concat(frames, ignore_index=True)


def anchor_context(folder: Path):
    """The anchor workload's audit context (``bench_audit.build`` writes it into ``folder``)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_audit

    from audit.io import load_model
    from audit.runner import build_context
    from audit.spec import load_spec_file

    bench_audit.build(folder)
    sf = load_spec_file(folder / "audit.toml")
    loaded = load_model(sf.sources.model.path)
    data = {"test": sf.sources.data.test, "train": sf.sources.data.train, "holdout": sf.sources.data.holdout}
    ctx, _ = build_context(sf.spec, loaded, data, na_values=sf.sources.data.na_values)
    return ctx, loaded.adapter.estimator


def bench_anchor(repeats: int, seeds: int) -> None:
    import dataclasses
    import os
    import warnings

    import shap

    import audit.checks.fairness as fairness
    from audit.registry import iter_checks
    from audit.runner import run_check

    warnings.simplefilter("ignore")
    med = statistics.median
    with tempfile.TemporaryDirectory() as tmp:
        ctx, pipe = anchor_context(Path(tmp))
        Z = pipe[:-1].transform(ctx.test.X)
        infos = iter_checks(["fairness"])
        loads = [os.getloadavg()[0]]
        bare: list[tuple[float, float]] = []
        per: dict[str, list[tuple[float, float]]] = {i.check_id: [] for i in infos}
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            shap.TreeExplainer(pipe[-1]).shap_values(Z)
            bare.append((time.perf_counter() - t, time.process_time() - c))
            lane = ctx.for_lane(1)
            for info in infos:
                t, c = time.perf_counter(), time.process_time()
                run_check(info, lane)
                per[info.check_id].append((time.perf_counter() - t, time.process_time() - c))
        loads.append(os.getloadavg()[0])
        b_wall, b_cpu = med(w for w, _ in bare), med(c for _, c in bare)
        print(f"\n## Anchor workload (bench_audit.py), {repeats} repeats, load average {loads[0]:.1f} -> "
              f"{loads[1]:.1f}, {os.cpu_count()} cores")
        print(f"bare TreeSHAP on the {ctx.test.n:,} audited rows: {b_wall:.2f} s wall, {b_cpu:.2f} s CPU")
        tot_w = tot_c = 0.0
        for cid, runs in per.items():
            w, c = med(x for x, _ in runs), med(x for _, x in runs)
            tot_w, tot_c = tot_w + w, tot_c + c
            print(f"  {cid:30s} {w:6.2f} s wall {c:6.2f} s CPU")
        print(f"  fairness family: {tot_w:.2f} s wall, {tot_c:.2f} s CPU = {tot_c / b_cpu:.2f} x the bare TreeSHAP "
              f"CPU (budget 0.25 x: 1.5 s of a 6 s TreeSHAP)")

        print(f"\n## ExponentiatedGradient what-if: oracle of {fairness.EG_ORACLE_MAX_ITER} boosting iterations "
              f"(iterations x rate kept) vs full-length refits, {seeds} refit samples")
        print("| audit seed | full: accuracy | parity diff | CPU s | shorter: accuracy | parity diff | CPU s |")
        print("|---|---|---|---|---|---|---|")
        mit = next(i for i in infos if i.check_id == "fairness.mitigation")
        short_cap = fairness.EG_ORACLE_MAX_ITER
        acc: dict[str, list[float]] = {"full": [], "short": []}
        for seed in range(seeds):
            cells = []
            for label, cap in (("full", 10**6), ("short", short_cap)):
                fairness.EG_ORACLE_MAX_ITER = cap
                lane = dataclasses.replace(ctx, seed=seed).for_lane(1)
                c = time.process_time()
                r = run_check(mit, lane)
                cpu = time.process_time() - c
                m = r.metrics
                acc[label].append(m["exponentiated_gradient.accuracy"])
                cells.append(f"{m['exponentiated_gradient.accuracy']:.4f} | "
                             f"{m['exponentiated_gradient.demographic_parity_difference']:.4f} | {cpu:.2f}")
            fairness.EG_ORACLE_MAX_ITER = short_cap
            print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)
        sd = statistics.stdev(acc["full"]) if seeds > 1 else float("nan")
        print(f"mean accuracy: full {statistics.mean(acc['full']):.4f} (sd over samples {sd:.4f}), "
              f"shorter {statistics.mean(acc['short']):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--anchor-seeds", type=int, default=5, help="refit samples for the oracle comparison")
    ap.add_argument("--only-anchor", action="store_true", help="only the anchor-workload sections")
    args = ap.parse_args()
    if args.only_anchor:
        bench_anchor(args.repeats, args.anchor_seeds)
        return
    from fairlearn.metrics import MetricFrame, selection_rate
    from sklearn.tree import DecisionTreeClassifier

    from audit.runner import context_from_frames, run_checks

    a = adult()
    X = pd.get_dummies(a.drop(columns=["income"]))
    y = (a["income"] == ">50K").astype(int)
    clf = DecisionTreeClassifier(min_samples_leaf=10, max_depth=4, random_state=0).fit(X, y)
    frame = X.assign(sex=a["sex"].to_numpy(), race=a["race"].to_numpy(), income_gt_50k=y.to_numpy())

    def ctx(mitigation: bool):
        return context_from_frames(clf, frame, target="income_gt_50k", positive_label=1, sensitive=["sex", "race"],
                                   features=list(X.columns), checks=["fairness"],
                                   policy={"fairness": {"n_bootstrap": 1000, "mitigation": mitigation}})

    fam, fam_mit, bare, boot_ours, boot_fl = [], [], [], [], []
    for _ in range(args.repeats):
        c = ctx(False)
        t = time.perf_counter()
        run_checks(c)
        fam.append(time.perf_counter() - t)
        c = ctx(True)
        t = time.perf_counter()
        run_checks(c)
        fam_mit.append(time.perf_counter() - t)
        pred = clf.predict(X)
        t = time.perf_counter()
        MetricFrame(metrics=selection_rate, y_true=y, y_pred=pred, sensitive_features=a["sex"])
        bare.append(time.perf_counter() - t)
        # bootstrap alone: ours (1,000) vs fairlearn's MetricFrame n_boot (100, extrapolated x10)
        from audit.checks.fairness import bootstrap_disparities

        t = time.perf_counter()
        bootstrap_disparities(y.to_numpy(), pred, pred.astype(float), a[["sex", "race"]], n_boot=1000,
                              rng=np.random.default_rng(0))
        boot_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        MetricFrame(metrics=selection_rate, y_true=y, y_pred=pred, sensitive_features=a["sex"], n_boot=100,
                    ci_quantiles=[0.025, 0.975], random_state=0)
        boot_fl.append((time.perf_counter() - t) * 10)
    med = statistics.median
    print(f"rows {len(frame)}, sensitive sex+race (+ intersection), 1,000 bootstrap resamples, {args.repeats} repeats")
    print(f"fairness family without mitigation : {med(fam):.2f} s (median)  [target <= 5 s]")
    print(f"fairness family with mitigation    : {med(fam_mit):.2f} s (ThresholdOptimizer; no refit: no train data)")
    print(f"bare fairlearn MetricFrame (1 metric, no CI): {med(bare):.3f} s")
    print(f"bootstrap: ours 1,000 resamples {med(boot_ours):.3f} s vs fairlearn MetricFrame n_boot "
          f"(1,000 extrapolated from 100) {med(boot_fl):.1f} s -> {med(boot_fl) / med(boot_ours):.0f}x")

    # end to end: the CLI on Adult with a skops model
    from audit.io import save_skops

    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        save_skops(clf, tmp_p / "m.skops")
        frame.to_csv(tmp_p / "adult.csv", index=False)
        cmd = [sys.executable, "-m", "audit.cli", "audit", "--model", str(tmp_p / "m.skops"), "--data",
               str(tmp_p / "adult.csv"), "--target", "income_gt_50k", "--positive-label", "1", "--sensitive", "sex",
               "--sensitive", "race", "--checks", "fairness", "--out", str(tmp_p / "out"), "--no-store", "--quiet"]
        walls = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=False)
            walls.append(time.perf_counter() - t)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"end-to-end `trustaudit audit` (fairness, 5 reports) on Adult: {med(walls):.1f} s wall (median), "
              f"peak RSS {peak_mb:.0f} MB")
    bench_anchor(args.repeats, args.anchor_seeds)


if __name__ == "__main__":
    main()
