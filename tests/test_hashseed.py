"""Results do not depend on PYTHONHASHSEED: the same audit, seed and data give the same JSON report.

Two interpreter processes with different hash seeds (so every set and str-keyed hash order
differs) run one small audit of the demo's generator data with all four families; the reports
must be identical once the volatile fields are removed: the audit id, timestamps, durations and
the environment block (host platform). Anything a set or a dict's hash order reaches a report
through shows up here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from audit.datasets import make_lending_data
from audit.runner import run_audit
from tests.audit.helpers import lr_pipeline

data = make_lending_data(600, 300, 600, seed=3)
model = lr_pipeline(data)
spec = {
    "data": {"target": data.target, "positive_label": data.positive_label,
             "sensitive": ["sex", "age_group"]},
    "seed": 11,
    "checks": sys.argv[1].split(","),
    "causal": {"treatment": "sex", "outcome": data.target, "mediators": ["income", "debt_ratio"],
               "edges": [list(e) for e in data.edges]},
    "policy": {
        "fairness": {"n_bootstrap": 100, "mitigation_refit_rows": 300, "mitigation_max_iter": 2},
        "explain": {"sample_size": 60, "background_size": 20, "blackbox_sample_size": 10, "n_bootstrap": 40,
                    "lime_sample_size": 5, "lime_num_samples": 200, "permutation_sample_size": 100,
                    "permutation_repeats": 2, "faithfulness_sample_size": 20, "proxy_sample_size": 300,
                    "n_jobs": 1},
        "causal": {"sample_size": 300, "effect_sample_size": 300, "n_bootstrap": 5, "refuter_simulations": 3},
        "privacy": {"n_reference_models": 1, "max_rows": 600},
    },
}
print("set order:", list({"sex", "age_group", "region", "income", "education"}), file=sys.stderr)
report = run_audit(model, data.test, train=data.train, holdout=data.holdout, spec=spec)
json.dump(report.to_dict(), sys.stdout, sort_keys=False)
"""

#: Keys whose values legitimately differ between two runs of the same audit.
VOLATILE = {"audit_id", "created_at", "seconds", "environment"}


def strip_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value


def run_in_subprocess(hash_seed: str, checks: str) -> tuple[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, checks], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    set_order = next(line for line in proc.stderr.splitlines() if line.startswith("set order:"))
    return proc.stdout, set_order


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)} vs {list(b)}"
        for k in a:
            d = first_difference(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = first_difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b or (a != a and b != b) else f"{path}: {a!r} vs {b!r}"


@pytest.mark.parametrize("checks", ["fairness,explain,causal,privacy"])
def test_report_is_identical_across_hash_seeds(checks: str) -> None:
    out1, order1 = run_in_subprocess("1", checks)
    out2, order2 = run_in_subprocess("2", checks)
    assert order1 != order2  # the two processes really iterate sets in different orders
    one, two = json.loads(out1), json.loads(out2)
    assert {r["check_id"].split(".")[0] for r in one["results"]} == set(checks.split(","))
    a, b = strip_volatile(one), strip_volatile(two)
    assert first_difference(a, b) is None, first_difference(a, b)
    # the comparison is of the whole report, byte for byte once serialised
    assert json.dumps(a) == json.dumps(b)
