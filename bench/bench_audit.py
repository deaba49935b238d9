"""The anchor workload: the full audit of UCI Adult, every family, as ``trustaudit audit`` runs it.

Workload (the issue's): Adult (train + test files, 48,842 rows), a 70/30 split with
``random_state=0`` (stratified on income); the 70 % is split again into the training rows the model
is fitted on (70 %) and holdout rows it never sees (30 %); the 30 % is audited (14,653 rows).
Model: ``Pipeline(ColumnTransformer(OneHotEncoder on the 8 categoricals, passthrough numerics),
HistGradientBoostingClassifier(random_state=0))`` saved as skops. Sensitive ``sex`` and ``race``;
all four families; the causal graph below (sex -> occupation, hours-per-week, income; age,
education-num and race -> ...; occupation and hours-per-week -> income) with the categorical
mediator ``occupation``.

Each repeat runs, in fresh child processes and in alternating order:

* the audit exactly as the CLI runs it (``trustaudit audit --spec ... --json ...``), timing the
  whole command and reading its peak resident memory (the audit runs in the command's child);
* the bare library call ``shap.TreeExplainer(model).shap_values(Z)`` on the same 14,653 transformed
  rows — the yardstick: the issue asks the whole audit to cost at most 1.5x this call.

Printed: the median of the repeats for both, their ratio, peak RSS, the load average, and the
seconds of every check (median). Run from the repository root: ``python bench/bench_audit.py``
(needs ../shared/data; ``--repeats 5`` is the default).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TRUSTAUDIT_SHARED_DATA", ROOT.parent / "shared" / "data"))

CATEGORICAL = ["workclass", "education", "marital-status", "occupation", "relationship", "race", "sex",
               "native-country"]
EDGES = [
    ["sex", "occupation"], ["sex", "hours-per-week"], ["sex", "income"],
    ["age", "occupation"], ["age", "hours-per-week"], ["age", "income"],
    ["education-num", "occupation"], ["education-num", "income"],
    ["race", "occupation"], ["race", "income"],
    ["occupation", "hours-per-week"], ["occupation", "income"], ["hours-per-week", "income"],
]

SPEC = """\
seed = 0
checks = ["fairness", "explain", "causal", "privacy"]

[model]
path = "model.skops"

[data]
test = "test.csv"
train = "train.csv"
holdout = "holdout.csv"
target = "income"
positive_label = ">50K"
sensitive = ["sex", "race"]

[causal]
edges = {edges}
treatment = "sex"
outcome = "income"
mediators = ["occupation", "hours-per-week"]
"""


def load_adult() -> pd.DataFrame:
    frames = [pd.read_csv(DATA / n, na_values=["?"], skipinitialspace=True)
              for n in ("adult_train.csv", "adult_test.csv")]
    df = pd.concat(frames, ignore_index=True)
    df["income"] = df["income"].astype(str).str.rstrip(".")
    return df


def build(folder: Path) -> None:
    """Write model.skops, train/holdout/test CSVs and audit.toml into ``folder``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from audit.io import save_skops

    df = load_adult()
    rest, test = train_test_split(df, test_size=0.3, random_state=0, stratify=df["income"])
    train, holdout = train_test_split(rest, test_size=0.3, random_state=0, stratify=rest["income"])
    num = [c for c in df.columns if c not in CATEGORICAL and c != "income"]
    pipe = Pipeline([
        ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                                    CATEGORICAL), ("num", "passthrough", num)])),
        ("clf", HistGradientBoostingClassifier(random_state=0)),
    ])
    pipe.fit(train.drop(columns=["income"]), train["income"])
    save_skops(pipe, folder / "model.skops")
    for name, frame in (("train", train), ("holdout", holdout), ("test", test)):
        frame.to_csv(folder / f"{name}.csv", index=False)
    (folder / "audit.toml").write_text(SPEC.format(edges=json.dumps(EDGES)))


def _bare(folder: str) -> None:
    """Child: the bare TreeSHAP call on the audited rows, timed around the call only."""
    import shap

    from audit.io import load_model

    pipe = load_model(Path(folder) / "model.skops").adapter.estimator
    test = pd.read_csv(Path(folder) / "test.csv", na_values=["?"])
    Z = pipe[:-1].transform(test.drop(columns=["income"]))
    t0 = time.perf_counter()
    shap.TreeExplainer(pipe[-1]).shap_values(Z)
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": int(Z.shape[0])}))


def run_bare(folder: Path) -> float:
    out = subprocess.run([sys.executable, __file__, "--bare", str(folder)], check=True, capture_output=True,
                         text=True, cwd=ROOT)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def run_audit(folder: Path) -> dict:
    """``trustaudit audit`` as a user runs it; wall time of the command and its children's peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "audit.cli", "audit", "--spec", str(folder / "audit.toml"),
                           "--json", str(folder / "report.json")], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"audit failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux; max over children
    report = json.loads((folder / "report.json").read_text())
    return {"wall": wall, "peak_kib": peak, "peak_grew": peak > before, "report": report}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="build the workload into this folder and keep it")
    ap.add_argument("--bare", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        _bare(args.bare)
        return 0
    if not (DATA / "adult_train.csv").is_file():
        print(f"Adult not found in {DATA}; nothing to measure")
        return 0
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        build(folder)
        load0 = os.getloadavg()[0]
        audits, bares = [], []
        for r in range(args.repeats):
            if r % 2:
                bares.append(run_bare(folder))
            audits.append(run_audit(folder))
            if not r % 2:
                bares.append(run_bare(folder))
            print(f"  repeat {r + 1}: audit {audits[-1]['wall']:.1f} s, bare TreeSHAP {bares[-1]:.1f} s",
                  flush=True)
        med = statistics.median
        walls = [a["wall"] for a in audits]
        wall = med(walls)
        bare = med(bares)
        peak_mib = max(a["peak_kib"] for a in audits) / 1024
        print(f"Adult full audit ({args.repeats} runs, load average {load0:.1f} at start, "
              f"{os.getloadavg()[0]:.1f} at end, {os.cpu_count()} cores)")
        print(f"  audit (trustaudit audit, all four families): median {wall:.1f} s wall "
              f"(runs: {', '.join(f'{w:.1f}' for w in walls)}); peak RSS {peak_mib:.0f} MiB")
        print(f"  bare shap.TreeExplainer(model).shap_values(Z) on the audited rows: median {bare:.1f} s")
        print(f"  ratio audit / bare TreeSHAP: {wall / bare:.2f} (goal <= 1.5; and <= 20 s, <= 1 GiB)")
        checks: dict[str, list[float]] = {}
        verdicts: dict[str, str] = {}
        for a in audits:
            for res in a["report"]["results"]:
                checks.setdefault(res["check_id"], []).append(float(res["provenance"]["seconds"] or 0.0))
                verdicts[res["check_id"]] = res["verdict"]
        print("  seconds per check (median):")
        for cid, secs in sorted(checks.items(), key=lambda kv: -med(kv[1])):
            print(f"    {cid:36s} {verdicts[cid]:7s} {med(secs):6.2f}")
        print(f"  sum of check seconds {sum(med(s) for s in checks.values()):.1f} s "
              f"(above the wall time when checks run concurrently)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
