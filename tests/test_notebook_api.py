"""The notebook door: ``audit.run_audit(model, test_df, target=..., ...)`` on Adult with a fitted
scikit-learn Pipeline and DataFrames gives the same report as ``trustaudit audit`` on the same
inputs written to files (timestamps, ids, durations and file paths aside), and the report reads
like the ecosystem's objects: ``.verdict``, ``.results``, ``.to_frame()``, ``.to_json()``,
``.to_html()``, ``_repr_html_``.

The default run uses a sample of Adult and small budgets; the full anchor workload (every row,
default budgets) is ``bench/bench_audit.py``, and the slow test below compares the two doors on it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT.parent / "shared" / "data"
CATEGORICAL = ["workclass", "education", "marital-status", "occupation", "relationship", "race", "sex",
               "native-country"]
EDGES = [["sex", "occupation"], ["sex", "hours-per-week"], ["sex", "income"], ["age", "occupation"],
         ["age", "hours-per-week"], ["age", "income"], ["education-num", "occupation"], ["education-num", "income"],
         ["race", "occupation"], ["race", "income"], ["occupation", "hours-per-week"], ["occupation", "income"],
         ["hours-per-week", "income"]]
CAUSAL = {"edges": EDGES, "treatment": "sex", "outcome": "income", "mediators": ["occupation", "hours-per-week"]}
SMALL = {
    "fairness": {"n_bootstrap": 200, "mitigation_refit_rows": 500},
    "explain": {"sample_size": 150, "lime_sample_size": 5, "lime_num_samples": 200, "permutation_sample_size": 300,
                "permutation_repeats": 2, "faithfulness_sample_size": 50, "proxy_sample_size": 1000},
    "causal": {"sample_size": 400, "effect_sample_size": 1000, "n_bootstrap": 5, "refuter_simulations": 2},
    "privacy": {"n_reference_models": 1, "max_rows": 2000},
}


def _adult(n_train: int, n_holdout: int, n_test: int, seed: int = 0):
    if not (ADULT / "adult_train.csv").is_file():
        pytest.skip("the Adult data (shared/data/adult_train.csv) is absent")
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = pd.concat([pd.read_csv(ADULT / n, na_values=["?"], skipinitialspace=True)
                    for n in ("adult_train.csv", "adult_test.csv")], ignore_index=True)
    df["income"] = df["income"].astype(str).str.rstrip(".")
    rest, test = train_test_split(df, test_size=0.3, random_state=seed, stratify=df["income"])
    train, holdout = train_test_split(rest, test_size=0.3, random_state=seed, stratify=rest["income"])
    train, holdout, test = (f.sample(min(n, len(f)), random_state=seed).reset_index(drop=True)
                            for f, n in ((train, n_train), (holdout, n_holdout), (test, n_test)))
    num = [c for c in df.columns if c not in CATEGORICAL and c != "income"]
    pipe = Pipeline([
        ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL),
                                   ("num", "passthrough", num)])),
        ("clf", HistGradientBoostingClassifier(random_state=0)),
    ]).fit(train.drop(columns=["income"]), train["income"])
    return pipe, train, holdout, test


def _spec_toml(policy: dict | None) -> str:
    lines = ['seed = 0', 'checks = ["fairness", "explain", "causal", "privacy"]', '[model]', 'path = "model.skops"',
             '[data]', 'test = "test.csv"', 'train = "train.csv"', 'holdout = "holdout.csv"', 'target = "income"',
             'positive_label = ">50K"', 'sensitive = ["sex", "race"]', '[causal]', f'edges = {json.dumps(EDGES)}',
             'treatment = "sex"', 'outcome = "income"', 'mediators = ["occupation", "hours-per-week"]']
    for fam, values in (policy or {}).items():
        lines.append(f"[policy.{fam}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _both_doors(tmp: Path, sizes: tuple[int, int, int], policy: dict | None):
    from audit import run_audit
    from audit.io import save_skops

    pipe, train, holdout, test = _adult(*sizes)
    save_skops(pipe, tmp / "model.skops")
    for name, frame in (("train", train), ("holdout", holdout), ("test", test)):
        frame.to_csv(tmp / f"{name}.csv", index=False)
    (tmp / "audit.toml").write_text(_spec_toml(policy))
    # the notebook: the fitted Pipeline and the DataFrames a user holds (read back from the same
    # files, as a user who received them would)
    frames = {n: pd.read_csv(tmp / f"{n}.csv", na_values=["?"]) for n in ("train", "holdout", "test")}
    nb = run_audit(pipe, frames["test"], target="income", positive_label=">50K", sensitive=["sex", "race"],
                   train=frames["train"], holdout=frames["holdout"], checks=["fairness", "explain", "causal", "privacy"],
                   policy=policy, causal=CAUSAL, seed=0)
    proc = subprocess.run([sys.executable, "-m", "audit.cli", "audit", "--spec", str(tmp / "audit.toml"), "--json",
                           str(tmp / "cli.json"), "--no-store", "--quiet"], capture_output=True, text=True, cwd=ROOT,
                          timeout=3000)
    assert proc.returncode in (0, 1), proc.stderr
    return nb, json.loads((tmp / "cli.json").read_text())


def _comparable(d: dict) -> list[dict]:
    out = []
    for r in d["results"]:
        r = dict(r)
        prov = dict(r.pop("provenance"))
        prov.pop("seconds")
        prov["params"] = {k: v for k, v in prov["params"].items() if k not in ("n_jobs", "parallel_backend")}
        out.append({**r, "provenance": prov})
    return out


def _assert_same(a: object, b: object, where: str) -> None:
    """Equal, numbers to 1e-9 relative (the lanes' thread counts may change a last bit of a sum)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k != "seconds":  # durations (of a check, of an attack) differ run to run
                _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and math.isfinite(a):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), where
    else:
        assert a == b, where


def _check(nb, cli: dict) -> None:
    d = json.loads(nb.to_json())
    assert d["spec"] == cli["spec"]  # what was audited and against which limits: the same
    assert d["inputs"]["target"] == cli["inputs"]["target"]
    assert {r: (v["rows"], v["columns"]) for r, v in d["inputs"]["data"].items()} == {
        r: (v["rows"], v["columns"]) for r, v in cli["inputs"]["data"].items()}
    assert d["model"]["path"] is None and d["model"]["source"] == "in memory"
    assert cli["model"]["path"].endswith("model.skops") and d["inputs"]["data"]["test"]["path"] is None
    _assert_same(_comparable(d), _comparable(cli), "results")
    assert d["verdict"] == cli["verdict"] and d["counts"] == cli["counts"]


def test_notebook_call_equals_the_cli_on_adult(tmp_path: Path) -> None:
    nb, cli = _both_doors(tmp_path, (4000, 2000, 2500), SMALL)
    _check(nb, cli)
    assert {r.family for r in nb.results} == {"fairness", "explain", "causal", "privacy"}
    ran = [r for r in nb.results if r.verdict.value not in ("SKIPPED", "ERROR")]
    assert len(ran) >= 15, [(r.check_id, r.verdict.value, r.summary) for r in nb.results]
    # what a notebook shows and what pandas users expect
    frame = nb.to_frame()
    assert list(frame.columns) == ["check_id", "family", "verdict", "summary", "seconds"]
    assert list(frame["check_id"]) == [r.check_id for r in nb.results]
    assert nb.verdict.value in set(frame["verdict"])
    metrics = nb.metrics_frame()
    assert set(metrics["check_id"]) <= set(frame["check_id"]) and len(metrics) == sum(len(r.metrics) for r in nb.results)
    html = nb._repr_html_()
    assert all(r.check_id in html for r in nb.results) and nb.verdict.value in html
    page = nb.to_html()
    assert page.lstrip().lower().startswith("<!doctype html") and "fairness.demographic_parity" in page


@pytest.mark.slow
def test_notebook_call_equals_the_cli_on_the_full_adult_workload(tmp_path: Path) -> None:
    nb, cli = _both_doors(tmp_path, (10**6, 10**6, 10**6), None)
    _check(nb, cli)
    assert nb.inputs["data"]["test"]["rows"] == 14_653
