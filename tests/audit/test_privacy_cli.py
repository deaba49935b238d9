"""``trustaudit privacy train-dp``: DP models exported with their claims, the trade-off reported."""

from __future__ import annotations

import json

import pytest

from audit.cli import main
from audit.datasets import make_lending_data
from audit.spec import DPClaim


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    d = make_lending_data(n_train=300, n_holdout=100, n_test=100, seed=2)
    frame = d.train.copy()
    frame["approved"] = frame["approved"].map({1: "yes", 0: "no"})  # a string target
    path = tmp_path_factory.mktemp("data") / "lending.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(csv_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    rc = main(["privacy", "train-dp", "--data", str(csv_path), "--target", "approved", "--positive-label", "yes",
               "--sensitive", "sex", "--epsilons", "2,inf", "--epochs", "2", "--batch-size", "16",
               "--accountant", "rdp", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def test_train_dp_writes_models_splits_and_report(trained):
    report = json.loads((trained / "train_dp.json").read_text(encoding="utf-8"))
    assert [m["target_epsilon"] for m in report["models"]] == [2.0, None]
    assert {p.name for p in trained.iterdir()} >= {
        "train.csv", "holdout.csv", "test.csv", "train_dp.json", "model_eps2.pt", "model_epsinf.pt"}
    assert report["n_train"] + report["data"]["n_holdout"] + report["n_test"] == 300
    assert report["classes"] == ["no", "yes"]
    dp, plain = report["models"]
    assert dp["private"] and not plain["private"]
    assert 0 < dp["epsilon"] <= 2.0 and dp["noise_multiplier"] > 0
    for m in (dp, plain):
        groups = m["groups"]["sex"]
        assert set(groups) == {"female", "male"}
        assert sum(g["n"] for g in groups.values()) == report["n_test"]
        # overall accuracy is the count-weighted mean of the group accuracies
        pooled = sum(g["n"] * g["accuracy"] for g in groups.values()) / report["n_test"]
        assert pooled == pytest.approx(m["accuracy"])
        assert m["accuracy_gap"]["sex"] == pytest.approx(
            max(g["accuracy"] for g in groups.values()) - min(g["accuracy"] for g in groups.values()))


def test_exported_claim_is_valid_and_audited(trained, capsys):
    from audit.io import load_model

    adapter = load_model(trained / "model_eps2.pt").adapter
    claim = DPClaim.model_validate(adapter.metadata["dp_claim"])
    assert claim.accountant == "rdp" and claim.max_grad_norm == 1.0
    assert "dp_claim" not in load_model(trained / "model_epsinf.pt").adapter.metadata
    rc = main(["audit", "--model", str(trained / "model_eps2.pt"), "--data", str(trained / "test.csv"),
               "--train", str(trained / "train.csv"), "--holdout", str(trained / "holdout.csv"),
               "--target", "approved", "--positive-label", "yes", "--sensitive", "sex",
               "--checks", "privacy", "--json", str(trained / "report.json"), "--no-store", "--quiet"])
    assert rc in (0, 1)
    report = json.loads((trained / "report.json").read_text(encoding="utf-8"))
    verdicts = {r["check_id"]: r["verdict"] for r in report["results"]}
    assert verdicts["privacy.dp_claim"] == "PASS"
    assert verdicts["privacy.membership_inference"] in ("PASS", "WARN", "FAIL")
    mi = next(r for r in report["results"] if r["check_id"] == "privacy.membership_inference")
    assert mi["metrics"]["claimed_epsilon"] == pytest.approx(claim.epsilon)


def test_train_dp_on_the_generator_by_default(tmp_path, capsys):
    rc = main(["privacy", "train-dp", "--epsilons", "inf", "--epochs", "1", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    report = json.loads((tmp_path / "train_dp.json").read_text(encoding="utf-8"))
    assert report["target"] == "approved" and report["sensitive"] == ["sex", "age_group"]
    assert report["data"]["source"] == "generator"
    assert "accuracy per sensitive group" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilons", "0,1"], "trustaudit: error: train-dp: --epsilons takes positive numbers or 'inf', got '0'"),
        (["--epsilons", "one"], "trustaudit: error: train-dp: --epsilons takes positive numbers or 'inf', got 'one'"),
        (["--data", "x.csv"], "trustaudit: error: train-dp: --data needs --target and --positive-label"),
        (["--epochs", "0"], "trustaudit: error: train-dp: --epochs must be >= 1, got 0"),
        (["--target", "y"], "trustaudit: error: train-dp: --target and --positive-label go with --data "
                            "(the generator has its own)"),
    ],
)
def test_bad_train_dp_arguments_exit_2(tmp_path, capsys, args, message):
    rc = main(["privacy", "train-dp", "--out", str(tmp_path), *args])
    assert rc == 2
    assert capsys.readouterr().err.strip() == message


def test_unknown_columns_exit_2(csv_path, tmp_path, capsys):
    rc = main(["privacy", "train-dp", "--data", str(csv_path), "--target", "approved", "--positive-label", "maybe",
               "--out", str(tmp_path)])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        "trustaudit: error: positive label 'maybe' is not among the values of target 'approved' (values: no, yes)")
    rc = main(["privacy", "train-dp", "--data", str(csv_path), "--target", "approved", "--positive-label", "yes",
               "--sensitive", "gender", "--out", str(tmp_path)])
    assert rc == 2
    assert capsys.readouterr().err.startswith(
        f"trustaudit: error: sensitive column 'gender' not found in data file '{csv_path}'")
