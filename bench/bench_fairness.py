"""Fairness family on UCI Adult (48,842 rows, 1,000 bootstrap resamples) and end-to-end audit cost.

Reports: the family's wall time against the bare fairlearn MetricFrame call on the same rows, our
vectorised bootstrap against fairlearn's own bootstrap (MetricFrame n_boot) on a smaller count, and
the whole `trustaudit audit` command's wall time and peak memory (resource.getrusage of the child).

    python bench/bench_fairness.py [--repeats 3]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
