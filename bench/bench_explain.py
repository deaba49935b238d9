"""Benchmark of the explanation family on the anchor workload (bench/bench_audit.py: UCI Adult, the
one-hot + HistGradientBoosting pipeline, 14,653 audited rows, default policy).

The full audit is to cost at most 1.5x one bare ``shap.TreeExplainer(model).shap_values(Z)`` call on
the audited rows, with the checks in two concurrent lanes on two cores; the explanation family is
one lane, with one core. Printed, as medians of ``--repeats`` runs (load average stated):

* every ``explain.*`` check's seconds, run one after another as its lane runs them (one core: the
  context of a lane of two): wall, and this process's CPU seconds (on a busy machine the CPU
  seconds are the fairer figure; the family's work is single-threaded);
* the family's total against the bare TreeSHAP call on all audited rows, timed in the same process
  in alternating order;
* the SHAP step (``explain.shap``'s attribution work on its sampled rows) against the bare call on
  the same rows: what the check adds around TreeSHAP; and the SHAP step given every core of the
  machine (the TreeSHAP split of ``audit._compat.shap``: its backend and process count) against one
  process.

Run from the repository root: ``python bench/bench_explain.py`` (needs ../shared/data).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("TRUSTAUDIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def load_adult() -> pd.DataFrame:
    frames = [
        pd.read_csv(DATA / n, na_values=["?"], skipinitialspace=True)
        for n in ("adult_train.csv", "adult_test.csv")
    ]
    return pd.concat(frames, ignore_index=True)


def build(seed: int = 0):
    """A one-hot + HistGradientBoosting pipeline on a 70/30 split of Adult (pipeline, train, test);
    bench/bench_compat.py times TreeSHAP on it."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = load_adult()
    X = df.drop(columns=["income"])
    cat = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    num = [c for c in X.columns if c not in cat]
    train, test = train_test_split(df, test_size=0.3, random_state=seed, stratify=df["income"])
    pipe = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat),
                        ("num", "passthrough", num),
                    ]
                ),
            ),
            ("clf", HistGradientBoostingClassifier(random_state=seed)),
        ]
    )
    pipe.fit(train.drop(columns=["income"]), train["income"])
    return pipe, train.reset_index(drop=True), test.reset_index(drop=True)


def timed(fn):
    """Wall seconds, this process's CPU seconds and the result."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def bare_call(final, Z):
    """The bare library call, exactly as a user writes it (TreeSHAP's C code is single-threaded)."""
    import shap

    return shap.TreeExplainer(final).shap_values(Z)


def anchor_context(folder: Path):
    """The context ``trustaudit audit --checks explain`` builds for the anchor workload."""
    from audit.io import load_model
    from audit.runner import build_context
    from audit.spec import load_spec_file

    sf = load_spec_file(folder / "audit.toml", {"checks": ["explain"]})
    src = sf.sources
    model = load_model(src.model.path, format=src.model.format, trusted_types=src.model.trusted_types)
    ctx, _ = build_context(sf.spec, model, {"test": src.data.test, "train": src.data.train,
                                             "holdout": src.data.holdout}, na_values=src.data.na_values)
    return ctx


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workload", type=Path,
                    help="a folder bench/bench_audit.py built (--keep); built afresh when not given")
    args = ap.parse_args()
    if args.workload is None and not (DATA / "adult_train.csv").is_file():
        print(f"Adult not found in {DATA}; nothing to measure")
        return 0
    import lime.lime_tabular  # noqa: F401  (one-off imports are not part of any timing)
    import shap  # noqa: F401
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_audit import build as build_workload

    from audit.checks._explain_methods import outcome, shared
    from audit.registry import iter_checks
    from audit.runner import run_check

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workload or Path(tmp)
        if args.workload is None:
            build_workload(folder)
        base = anchor_context(folder)
        load0 = os.getloadavg()[0]
        checks = iter_checks(["explain"])
        wall: dict[str, list[float]] = {c.check_id: [] for c in checks}
        cpu: dict[str, list[float]] = {c.check_id: [] for c in checks}
        totals, totals_cpu, bares, bares_cpu, steps, step_bares = [], [], [], [], [], []
        pipe = base.model.estimator
        Z_all = pipe[:-1].transform(base.test.X)
        with threadpool_limits(limits=1):  # one core, as the family's lane has
            for r in range(args.repeats):
                ctx = base.for_lane(1)  # fresh intermediates, one core
                if r % 2:  # alternating order: neither side always runs on colder caches
                    tb, cb, _ = timed(lambda: bare_call(pipe[-1], Z_all))
                results = []
                for info in checks:
                    t, c, res = timed(lambda i=info, x=ctx: run_check(i, x))
                    wall[info.check_id].append(t)
                    cpu[info.check_id].append(c)
                    results.append(res)
                totals.append(sum(w[-1] for w in wall.values()))
                totals_cpu.append(sum(x[-1] for x in cpu.values()))
                if not r % 2:
                    tb, cb, _ = timed(lambda: bare_call(pipe[-1], Z_all))
                bares.append(tb)
                bares_cpu.append(cb)
                # the SHAP step alone against the bare call on its own rows
                one = base.for_lane(1)
                Z = pipe[:-1].transform(shared(one).X)
                one = base.for_lane(1)
                steps.append(timed(lambda x=one: outcome(x, "shap").get())[1])
                step_bares.append(timed(lambda z=Z: bare_call(pipe[-1], z))[1])
                print(f"  repeat {r + 1}: family {totals[-1]:.2f} s wall / {totals_cpu[-1]:.2f} s CPU, bare "
                      f"TreeSHAP on all rows {tb:.2f} s wall / {cb:.2f} s CPU", flush=True)
    med = statistics.median
    print(f"Explanation family on the anchor workload: {len(base.test.X)} audited rows, one core, "
          f"{args.repeats} runs; load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end, "
          f"{os.cpu_count()} cores")
    print(f"  {'check':28s} {'verdict':7s} {'wall s':>7s} {'CPU s':>7s}")
    for res in results:
        cid = res.check_id
        print(f"  {cid:28s} {res.verdict.value:7s} {med(wall[cid]):7.2f} {med(cpu[cid]):7.2f}")
    print(f"  {'family total':36s} {med(totals):7.2f} {med(totals_cpu):7.2f}")
    print(f"  bare shap.TreeExplainer(model).shap_values(Z) on all {len(Z_all)} rows: {med(bares):.2f} s wall, "
          f"{med(bares_cpu):.2f} s CPU; family / bare: {med(totals) / med(bares):.2f} wall, "
          f"{med(totals_cpu) / med(bares_cpu):.2f} CPU")
    print(f"  SHAP step on its {len(Z)} sampled rows: {med(steps):.2f} s CPU against the bare call on the "
          f"same rows {med(step_bares):.2f} s CPU (ratio {med(steps) / med(step_bares):.2f})")
    split, single = [], []
    for r in range(args.repeats):  # every core (the fork split where cores are idle) against one
        for cores in ((os.cpu_count() or 1, 1) if r % 2 == 0 else (1, os.cpu_count() or 1)):
            t, _, a = timed(lambda c=cores: outcome(base.for_lane(c), "shap").get())
            (split if cores > 1 else single).append(t)
            if cores > 1:
                backend = f"{a.params['n_jobs']} process(es), {a.params['parallel_backend']}"
    if os.cpu_count() and os.cpu_count() > 1:
        print(f"  SHAP step given all {os.cpu_count()} cores: {med(split):.2f} s wall ({backend}, last run), "
              f"one process {med(single):.2f} s wall (x{med(single) / med(split):.2f})")
    for res in results:
        print(f"  {res.check_id}: {res.summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
