"""Heavier demonstrations (``-m slow``): robust aggregation against attackers, stragglers, a CSV run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.cli import main
from federated import FederatedConfig, simulate_many
from federated._faults import fault_roles

pytestmark = pytest.mark.slow


def test_robust_aggregation_resists_scaled_updates_and_stragglers_are_left_out() -> None:
    base = FederatedConfig(num_clients=10, num_rounds=8, n_rows=4000, seed=2)
    attack = {"malicious": 0.2, "attack": "scale", "attack_scale": -4.0}
    late = base.replace(stragglers=0.2, straggler_delay=30.0, round_timeout=10.0, num_rounds=3)
    clean, fedavg, median, trimmed, slow = simulate_many([
        base, base.replace(**attack), base.replace(strategy="fedmedian", **attack),
        base.replace(strategy="fedtrimmedavg", trim_beta=0.2, **attack), late,
    ])
    # two attackers sending -4x their update wreck the mean; median and trimmed mean hold
    assert fedavg.final_accuracy < clean.final_accuracy - 0.1
    assert median.final_accuracy > clean.final_accuracy - 0.03
    assert trimmed.final_accuracy > clean.final_accuracy - 0.03
    bad, _ = fault_roles(2, 10, 2, 0)
    assert {c["partition_id"] for c in fedavg.rounds[1]["clients"] if c["malicious"]} == set(bad)
    # stragglers 30 s late against a 10 s deadline: every round closes without them
    _, slow_ids = fault_roles(2, 10, 0, 2)
    for r in slow.rounds[1:]:
        assert sorted(r["timed_out"]) == sorted(slow_ids)
        assert set(r["answered"]).isdisjoint(slow_ids) and len(r["answered"]) == 8 and r["aggregated"]


def test_cli_on_a_csv_with_column_partitions(tmp_path: Path, lending) -> None:
    csv = tmp_path / "loans.csv"
    lending.train.iloc[:1500].to_csv(csv, index=False)
    out = tmp_path / "run"
    rc = main(["federated", "simulate", "--data", str(csv), "--target", "approved", "--positive-label", "1",
               "--sensitive", "sex", "--num-clients", "3", "--num-rounds", "2", "--partition", "column",
               "--partition-column", "region", "--strategy", "fedprox", "--secagg", "--local-dp",
               "--out", str(out), "--audit", "--checks", "fairness,privacy"])
    assert rc in (0, 1)
    metrics = json.loads((out / "metrics.json").read_text())
    # one client per region of the training split
    from federated._data import load_run_data

    data = load_run_data(FederatedConfig.from_mapping(metrics["config"]).data_setup_json())
    assert sorted(p["rows"] for p in metrics["partitions"]) == sorted(data.train["region"].value_counts().tolist())
    assert metrics["privacy"]["local"]["epsilon_max"] > 0
    assert (out / "audit.json").is_file()
