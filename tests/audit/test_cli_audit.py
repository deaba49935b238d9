"""The CLI's happy paths: exit codes, every report written, history recorded, spec file + flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.cli import main
from audit.store import HistoryStore
from tests.audit.helpers import audit_args, write_case


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_case(tmp_path_factory.mktemp("clicase"))


def test_audit_writes_all_reports_and_records_history(case, tmp_path, capsys):
    store = tmp_path / "h.sqlite"
    rc = main(audit_args(case, "--train", str(case["train"]), "--holdout", str(case["holdout"]),
                         "--out", str(tmp_path / "out"), "--store", str(store), "--seed", "4"))
    assert rc == 1  # the generator's bias makes parity checks fail
    for name in ("report.json", "report.html", "report.md", "report.xml", "report.sarif"):
        assert (tmp_path / "out" / name).stat().st_size > 200
    d = json.loads((tmp_path / "out" / "report.json").read_text())
    assert d["verdict"] == "FAIL"
    assert d["model"]["sha256"] and len(d["model"]["sha256"]) == 64
    assert d["inputs"]["data"]["test"]["sha256"] and d["inputs"]["data"]["train"]["rows"] == 1500
    assert d["spec"]["seed"] == 4
    rows = HistoryStore(store).list()
    assert len(rows) == 1 and rows[0]["audit_id"] == d["audit_id"]
    capsys.readouterr()
    assert main(["history", "--store", str(store), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["verdict"] == "FAIL"
    assert main(["history", "--store", str(store), "--show", d["audit_id"][:10]]) == 0
    assert json.loads(capsys.readouterr().out)["audit_id"] == d["audit_id"]


def test_relaxed_policy_passes_with_exit_zero(case, tmp_path):
    spec = tmp_path / "audit.toml"
    spec.write_text(
        f'checks = ["fairness.demographic_parity"]\n[model]\npath = "{case["model"]}"\n'
        f'[data]\ntest = "{case["test"]}"\ntarget = "approved"\npositive_label = 1\nsensitive = ["sex"]\n'
        "[policy.fairness]\ndemographic_parity_difference_max = 0.6\n"
    )
    assert main(["audit", "--spec", str(spec), "--quiet", "--no-store", "--json", str(tmp_path / "r.json")]) == 0
    d = json.loads((tmp_path / "r.json").read_text())
    assert [r["check_id"] for r in d["results"]] == ["fairness.demographic_parity"]


def test_flags_override_spec_and_relative_paths(case, tmp_path, monkeypatch):
    import shutil

    for k in ("model", "test"):
        shutil.copy(case[k], tmp_path / case[k].name)
    spec = tmp_path / "audit.toml"
    spec.write_text('checks = ["fairness"]\nseed = 1\n[model]\npath = "model.skops"\n'
                    '[data]\ntest = "test.csv"\ntarget = "approved"\npositive_label = 1\nsensitive = ["sex"]\n')
    monkeypatch.chdir(Path("/"))
    out = tmp_path / "r.json"
    rc = main(["audit", "--spec", str(spec), "--seed", "9", "--checks", "fairness.disparate_impact", "--quiet",
               "--no-store", "--json", str(out)])
    assert rc in (0, 1)
    d = json.loads(out.read_text())
    assert d["spec"]["seed"] == 9
    assert [r["check_id"] for r in d["results"]] == ["fairness.disparate_impact"]


def test_strict_makes_warn_fail(case, tmp_path):
    # equal opportunity on this data straddles a limit set at its point estimate
    args = audit_args(case, "--no-store", "--json", str(tmp_path / "r.json"))
    main(args)
    d = json.loads((tmp_path / "r.json").read_text())
    eo = next(r for r in d["results"] if r["check_id"] == "fairness.equal_opportunity")
    est = eo["metrics"]["sex.equal_opportunity_difference"]
    spec = tmp_path / "audit.toml"
    spec.write_text(
        f'checks = ["fairness.equal_opportunity"]\n[model]\npath = "{case["model"]}"\n'
        f'[data]\ntest = "{case["test"]}"\ntarget = "approved"\npositive_label = 1\nsensitive = ["sex"]\n'
        f"[policy.fairness]\nequal_opportunity_difference_max = {round(est, 4)}\n"
    )
    assert main(["audit", "--spec", str(spec), "--quiet", "--no-store"]) == 0
    assert main(["audit", "--spec", str(spec), "--quiet", "--no-store", "--strict"]) == 1


def test_demo_runs_and_its_interval_contains_the_truth(tmp_path, capsys):
    store = tmp_path / "h.sqlite"
    rc = main(["demo", "--out", str(tmp_path / "demo"), "--checks", "fairness", "--store", str(store)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "inside the interval" in out
    truth = json.loads((tmp_path / "demo" / "truth.json").read_text())
    assert truth["ci_contains_truth"] is True
    est = truth["audit_estimate"]
    assert est["ci_low"] <= truth["model_population"]["demographic_parity_difference"] <= est["ci_high"]
    assert (tmp_path / "demo" / "reports" / "report.html").exists()
    assert (tmp_path / "demo" / "model.skops").exists()
    assert HistoryStore(store).count() == 1
    # the spec the demo wrote re-runs as is
    assert main(["audit", "--spec", str(tmp_path / "demo" / "audit.toml"), "--checks", "fairness.disparate_impact",
                 "--quiet", "--no-store"]) == 1


def test_some_checks_skipped_exit_is_decided_by_those_that_ran(case, tmp_path):
    """Skipped checks stay SKIPPED in the report; the exit code comes from the checks that ran."""
    spec = tmp_path / "audit.toml"
    spec.write_text(
        f'checks = ["fairness.demographic_parity", "privacy.membership_inference"]\n[model]\npath = "{case["model"]}"\n'
        f'[data]\ntest = "{case["test"]}"\ntarget = "approved"\npositive_label = 1\nsensitive = ["sex"]\n'
        "[policy.fairness]\ndemographic_parity_difference_max = 0.6\n"
    )
    out = tmp_path / "r.json"
    assert main(["audit", "--spec", str(spec), "--quiet", "--no-store", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    verdicts = {r["check_id"]: r["verdict"] for r in d["results"]}
    assert verdicts == {"fairness.demographic_parity": "PASS", "privacy.membership_inference": "SKIPPED"}
    assert d["verdict"] == "PASS"


def _three_class_frame(case):
    import numpy as np
    import pandas as pd

    df = pd.read_csv(case["test"])
    rng = np.random.default_rng(0)
    df["approved"] = np.where(rng.random(len(df)) < 0.3, 2, df["approved"])
    return df


def test_one_vs_rest_on_a_three_class_model_matches_a_direct_computation(case, tmp_path):
    """Opted in, a 3-class model is audited as positive vs the rest: the parity gap equals the one
    computed by hand from argmax decisions, and the report says which classes were counted negative."""
    from sklearn.linear_model import LogisticRegression

    from audit.runner import run_audit

    df = _three_class_frame(case)
    feats = ["education", "income", "debt_ratio"]
    model = LogisticRegression(max_iter=500).fit(df[feats], df["approved"])
    raw = {"seed": 1, "checks": ["fairness.demographic_parity"],
           "data": {"target": "approved", "positive_label": 1, "sensitive": ["sex"],
                    "features": feats, "multiclass": "one-vs-rest"},
           "policy": {"fairness": {"n_bootstrap": 50}}}
    report = run_audit(model, df, spec=raw)
    decision = model.predict(df[feats]) == 1
    rates = {s: decision[(df["sex"] == s).to_numpy()].mean() for s in ("female", "male")}
    got = report.result("fairness.demographic_parity").metrics["sex.demographic_parity_difference"]
    assert got == pytest.approx(abs(rates["male"] - rates["female"]), abs=1e-12)
    target = report.inputs["target"]
    assert target["binarisation"] == "one-vs-rest"
    assert target["negative_classes"] == ["0", "2"]
    assert target["model_classes"] == ["0", "1", "2"]
    # refused without the opt-in, naming the model's classes
    from audit.exceptions import DataError

    raw["data"]["multiclass"] = "refuse"
    with pytest.raises(DataError, match=r"^the model has 3 classes \(0, 1, 2\); the audit needs a binary outcome"):
        run_audit(model, df, spec=raw)


def test_binary_target_is_recorded_as_binary(case, tmp_path):
    out = tmp_path / "r.json"
    main(audit_args(case, "--no-store", "--json", str(out), "--checks", "fairness.demographic_parity"))
    t = json.loads(out.read_text())["inputs"]["target"]
    assert t["binarisation"] == "binary" and "negative_classes" not in t
    assert t["data_classes"] == {"test": ["0", "1"]}


def test_binned_sensitive_column_uses_quantiles_of_the_audited_rows(case, tmp_path):
    """--bin-sensitive income=4: cut points are the audited rows' quartiles, each bin holds a quarter
    of them, and the training rows are cut at the same points (not their own quartiles)."""
    import numpy as np
    import pandas as pd

    out = tmp_path / "r.json"
    args = audit_args(case, "--no-store", "--json", str(out), "--sensitive", "income", "--bin-sensitive", "income=4",
                      "--train", str(case["train"]), "--holdout", str(case["holdout"]))
    args[args.index("--checks") + 1] = "fairness.group_metrics,privacy.membership_inference"
    assert main(args) in (0, 1)
    d = json.loads(out.read_text())
    bins = d["inputs"]["sensitive_bins"]["income"]
    test_income = pd.read_csv(case["test"])["income"].to_numpy()
    expected = np.quantile(test_income, [0.25, 0.5, 0.75])
    assert bins["bins"] == 4 and np.allclose(bins["cut_points"], expected)
    gm = next(r for r in d["results"] if r["check_id"] == "fairness.group_metrics")
    table = next(t for t in gm["evidence"] if t["name"] == "by_group")
    sizes = {rec["group"]: rec["count"] for rec in table["records"] if rec.get("feature") == "income"}
    assert set(sizes) == set(bins["groups"])
    assert all(abs(n - len(test_income) / 4) <= 1 for n in sizes.values())
    # the context's training rows: cut at the audited rows' points
    from audit.runner import _apply_bins

    train_income = pd.read_csv(case["train"])["income"]
    train_groups = _apply_bins(train_income, np.asarray(bins["cut_points"]))
    manual = np.searchsorted(expected, train_income.to_numpy(), side="right")
    assert (train_groups.map({g: i for i, g in enumerate(bins["groups"])}).to_numpy() == manual).all()
