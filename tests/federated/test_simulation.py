"""The app on Flower's simulation engine: the four runs of the shared ``runs`` fixture (conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.model import TabularEncoder
from federated import FederatedConfig, centralised_baseline
from federated._data import load_run_data
from federated._faults import is_dropped
from federated._privacy import epsilon_from_rdp, rdp_of
from tests.federated.conftest import CONFIGS


@pytest.fixture(scope="module")
def exported(runs: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The DP run's files, and its audit (the families that read a DP model: fairness, privacy)."""
    from federated.export import audit_run, write_audit_reports, write_run_outputs

    out = tmp_path_factory.mktemp("fedrun")
    written = write_run_outputs(runs["dp"], out)
    report = audit_run(runs["dp"], written["model"], checks=("fairness", "privacy"),
                       policy={"fairness": {"n_bootstrap": 200}})
    written.update(write_audit_reports(report, out))
    return out, written


def test_fedavg_iid_is_within_two_points_of_centralised_training(runs: dict) -> None:
    run = runs["iid"]
    central = centralised_baseline(CONFIGS["iid"])
    assert central["accuracy"] > 0.7  # the model learned something (base rate is about 0.5)
    assert abs(run.final_accuracy - central["accuracy"]) <= 0.02, (run.final_accuracy, central)
    # accuracy rose from the initial model, every round aggregated all six clients
    assert run.final_accuracy > run.rounds[0]["global"]["accuracy"] + 0.1
    assert [len(r["answered"]) for r in run.rounds[1:]] == [6] * 8


def test_encoder_and_partition_summary_come_from_clients_and_equal_the_pooled_truth(runs: dict) -> None:
    run = runs["iid"]
    data = load_run_data(CONFIGS["iid"].data_setup_json())
    pooled = TabularEncoder.fit(data.train.loc[:, list(data.features)])
    fed = TabularEncoder.from_dict(run.encoder)
    X = data.test.loc[:, list(data.features)]
    np.testing.assert_allclose(fed.transform(X), pooled.transform(X), rtol=1e-5, atol=1e-5)
    assert list(run.partitions) == data.summary()


def _expected_drops(cfg: FederatedConfig, run: object) -> dict[int, list[int]]:
    return {r["round"]: [p for p in r["sampled"] if is_dropped(cfg.seed, r["round"], p, cfg.dropout)]
            for r in run.rounds if r["round"] > 0}


@pytest.mark.parametrize("name", ["drop", "drop_secagg"])
def test_thirty_percent_drop_out_completes_and_reports_who_answered(runs: dict, name: str) -> None:
    run, cfg = runs[name], CONFIGS[name]
    expected = _expected_drops(cfg, run)
    assert sum(len(v) for v in expected.values()) > 0  # the seed does drop clients
    for r in run.rounds[1:]:
        assert r["aggregated"], r["round"]
        assert r["dropped"] == expected[r["round"]]
        assert sorted(r["answered"] + r["dropped"] + r["timed_out"]) == r["sampled"] == list(range(6))
        assert r["timed_out"] == [] and r["failed"] == []
    clients = run.clients_frame()
    dropped_rows = clients[clients["status"] == "dropped"]
    assert sorted(zip(dropped_rows["round"], dropped_rows["partition_id"], strict=True)) == sorted(
        (k, p) for k, v in expected.items() for p in v)


def _secagg_tolerance(cfg: FederatedConfig, run: object, r: int, theta: list[np.ndarray]) -> float:
    """Worst-case SecAgg+ error of round r's aggregate: stochastic quantisation of each client's
    weighted parameters (step 2c/T) plus quantisation of each weight (n_i / max_weight, step 1/T)."""
    T, c = cfg.secagg_quant_range, cfg.secagg_clip_range
    rows = {p["partition_id"]: p["train_rows"] for p in run.partitions}
    max_w = max(rows.values())
    answered = run.rounds[r]["answered"]
    sum_ratio = sum(rows[p] / max_w for p in answered)
    big = max(float(np.max(np.abs(a))) for a in theta)
    return len(answered) * (2 * c / T) / sum_ratio + len(answered) * big / (T * sum_ratio) + 1e-6 * big


def test_secagg_aggregate_equals_fedavg_within_quantisation(runs: dict) -> None:
    plain, sec = runs["drop"], runs["drop_secagg"]
    assert plain.answered() == sec.answered()
    assert len(plain.round_arrays) == len(sec.round_arrays) == 4  # initial + 3 rounds
    for r in range(1, 4):
        a, b = plain.round_arrays[r], sec.round_arrays[r]
        diff = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))
        # later rounds start from slightly different global models: allow the error to add up
        tol = r * _secagg_tolerance(CONFIGS["drop_secagg"], sec, r, list(a))
        assert 0 < diff <= tol, (r, diff, tol)
    assert sec.final_accuracy == pytest.approx(plain.final_accuracy, abs=1e-3)


def test_central_and_local_dp_are_accounted_per_round(runs: dict) -> None:
    run, cfg = runs["dp"], CONFIGS["dp"]
    m, n = cfg.clients_per_round, cfg.num_clients
    rdp = np.zeros(len(rdp_of(0.5, 1.0, 1)))
    previous = 0.0
    for r in run.rounds[1:]:
        k = len(r["answered"])
        assert len(r["sampled"]) == m
        if k:  # no amplification: the clients are not sampled secretly
            rdp += rdp_of(1.0, cfg.noise_multiplier * k / m, 1)
        assert r["epsilon"] == pytest.approx(epsilon_from_rdp(rdp, cfg.dp_delta), rel=1e-9)
        assert r["epsilon"] >= previous
        previous = r["epsilon"]
    central = run.privacy["central"]
    assert central["epsilon"] == pytest.approx(run.rounds[-1]["epsilon"])
    assert central["sample_rate"] == 1.0 and central["sampling_fraction"] == m / n
    assert "epsilon_no_amplification" not in central
    # local DP: each client's epsilon recomputed from the steps and sample rate it reported
    steps: dict[int, int] = {}
    for r in run.rounds[1:]:
        for c in r["clients"]:
            if "epsilon" not in c:
                continue
            pid = c["partition_id"]
            steps[pid] = steps.get(pid, 0) + c["local_steps"]
            expect = epsilon_from_rdp(rdp_of(c["sample_rate"], cfg.local_noise, steps[pid]), cfg.local_delta)
            assert c["epsilon"] == pytest.approx(expect, rel=1e-9)
    local = run.privacy["local"]
    assert local["epsilon_max"] == max(local["per_client_epsilon"].values())
    # the claim (one multiplier: the worst round's) is recomputable and bounds the exact composition
    claim = run.dp_claim()
    assert claim is not None and claim["dataset_size"] == n and claim["steps"] == central["releases"]
    assert claim["noise_multiplier"] == min(central["effective_noise_multipliers"])
    assert claim["epsilon"] == pytest.approx(epsilon_from_rdp(
        rdp_of(1.0, claim["noise_multiplier"], claim["steps"]), cfg.dp_delta), rel=1e-12)
    assert claim["sample_rate"] == 1.0
    cond = run.dp_conditions()
    assert cond["unit"] == "client" and cond["sampling"] == "fixed-size" and cond["sampling_secret"] is False
    assert cond["noise_secret"] is True and "os.urandom" in cond["noise_source"]
    assert any("encoder" in x for x in cond["not_covered"]) and any("at setup" in x for x in cond["not_covered"])
    assert claim["epsilon"] >= central["epsilon"] - 1e-12


def test_exported_model_loads_through_the_safe_intake_and_is_audited(runs: dict, exported: tuple) -> None:
    from audit.io import load_model
    from audit.spec import DPClaim

    out, written = exported
    run = runs["dp"]
    loaded = load_model(written["model"])
    assert loaded.format == "torchscript"
    meta = loaded.adapter.metadata
    DPClaim.model_validate(meta["dp_claim"])
    assert meta["dp_claim"] == run.dp_claim()
    assert meta["federated"]["config"]["strategy"] == "fedavg" and meta["output"] == "logits"
    # the file's predictions are the run's final global model's
    data = load_run_data(CONFIGS["dp"].data_setup_json())
    from federated._torch import predict_logits

    enc = TabularEncoder.from_dict(run.encoder)
    z = predict_logits(run.build_module(), enc.transform(data.test.loc[:, list(data.features)]))
    np.testing.assert_allclose(loaded.adapter.predict_proba(data.test)[:, 1], 1 / (1 + np.exp(-z)), atol=1e-6)
    report = json.loads((out / "audit.json").read_text())
    results = report.get("results", [])
    assert results, "the audit ran no checks"
    errors = [(r["check_id"], r.get("summary")) for r in results if r["verdict"] == "ERROR"]
    assert not errors, errors
    # the privacy family recomputes the shipped DP claim and accepts it
    claim_checks = [r for r in results if r["check_id"] == "privacy.dp_claim"]
    assert [r["verdict"] for r in claim_checks] in ([], ["PASS"]), claim_checks
    # what the ε does not cover travels with the model and is shown by the claim check
    assert meta["dp_conditions"] == run.dp_conditions()
    for r in claim_checks:
        assert r["provenance"]["params"]["not_covered"] == meta["dp_conditions"]["not_covered"]
        assert "Not covered by this ε" in r["summary"]


def test_metrics_files_and_run_report(runs: dict, exported: tuple) -> None:
    out, _ = exported
    metrics = json.loads((out / "metrics.json").read_text())
    run = runs["dp"]
    assert [r["answered"] for r in metrics["rounds"]] == [r["answered"] for r in run.rounds]
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds["round"]) == [0, 1, 2, 3] and rounds["epsilon"].iloc[1:].notna().all()
    groups = pd.read_csv(out / "groups.csv")
    assert set(groups["attribute"]) == {"sex", "age_group"}
    final = groups[groups["round"] == 3]
    # per-group accuracy weighted by group size is the global accuracy
    for _, g in final.groupby("attribute"):
        assert (g["accuracy"] * g["n"]).sum() / g["n"].sum() == pytest.approx(run.final_accuracy)
    clients = pd.read_csv(out / "clients.csv")
    assert {"answered", "dropped"} <= set(clients["status"])
    assert len(pd.read_csv(out / "partitions.csv")) == 6
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "Privacy loss per round" in html


@pytest.mark.parametrize("name", ["fedadam", "krum"])
def test_other_strategies_learn(runs: dict, name: str) -> None:
    run = runs[name]
    assert all(r["aggregated"] for r in run.rounds[1:])
    assert run.final_accuracy > run.rounds[0]["global"]["accuracy"] + 0.1, [r["global"] for r in run.rounds]
    if name == "krum":
        # Krum keeps one update per round, never the attacker's: the model still learns
        attacker = [c["partition_id"] for c in run.rounds[1]["clients"] if c["malicious"]]
        assert len(attacker) == 1
        # f is the stated default share of the sampled clients, reported in the run outputs
        agg = run.to_dict()["aggregation"]
        assert agg["krum_f"] == 1 and agg["krum_f_source"].startswith("default: floor(0.2 x 6")
