"""Pieces checked against ground truth without the simulation engine: encoder, accountant, training, faults."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from audit.model import TabularEncoder
from federated._encoder import column_stats, encoder_from_stats
from federated._faults import fault_roles, is_dropped
from federated._privacy import ORDERS, CentralAccountant, epsilon_from_rdp, rdp_of


def test_federated_encoder_equals_the_pooled_fit() -> None:
    rng = np.random.default_rng(0)
    n = 900
    frame = pd.DataFrame({
        "income": rng.normal(50, 12, n) + 1e4,  # a large offset: the merge must stay numerically exact
        "age": rng.integers(18, 80, n).astype(float),
        "region": rng.choice(["north", "south", "east", "west"], n),
    })
    frame.loc[rng.random(n) < 0.05, "income"] = np.nan
    frame.loc[rng.random(n) < 0.05, "region"] = None
    parts = np.array_split(rng.permutation(n), 7)
    # one client never sees 'west', another has a single row
    frame.loc[parts[0], "region"] = frame.loc[parts[0], "region"].replace("west", "east")
    parts[1] = parts[1][:1]
    used = np.concatenate(parts)
    pooled = TabularEncoder.fit(frame.iloc[used])
    merged = encoder_from_stats([column_stats(frame.iloc[p]) for p in parts], list(frame.columns))
    assert [c.name for c in merged.columns] == [c.name for c in pooled.columns]
    for a, b in zip(merged.columns, pooled.columns, strict=True):
        assert a.kind == b.kind and a.categories == b.categories
        assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.std == pytest.approx(b.std, rel=1e-9)
        assert a.fill == pytest.approx(b.fill, rel=1e-12)
    X = frame.iloc[used]
    np.testing.assert_allclose(merged.transform(X), pooled.transform(X), rtol=1e-6, atol=1e-6)


def _exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon of a Gaussian mechanism with sensitivity / sigma = mu (Balle & Wang 2018)."""
    def delta_of(eps: float) -> float:
        return norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * norm.cdf(-mu / 2 - eps / mu)

    return brentq(lambda e: delta_of(e) - delta, 0.0, 100.0)


def test_rdp_without_sampling_is_the_gaussian_closed_form_and_bounds_the_exact_epsilon() -> None:
    z, steps, delta = 1.3, 10, 1e-5
    rdp = rdp_of(1.0, z, steps)
    np.testing.assert_allclose(rdp, steps * np.array(ORDERS) / (2 * z**2), rtol=1e-12)
    eps = epsilon_from_rdp(rdp, delta)
    exact = _exact_gaussian_epsilon(math.sqrt(steps) / z, delta)
    # the RDP conversion is an upper bound, and a reasonably tight one
    assert exact < eps < 1.25 * exact


def test_central_accountant_composes_rounds_without_amplification_and_penalises_missing_clients() -> None:
    """Clients are a fixed-size sample reproducible from the seed, so no amplification: q = 1."""
    full = CentralAccountant(noise_multiplier=1.0, num_clients=100, clients_per_round=10, delta=1e-5)
    for _ in range(3):
        eps = full.compose_round(10)
    assert full.sample_rate == 1.0 and full.sampling_fraction == 0.1
    assert eps == pytest.approx(epsilon_from_rdp(rdp_of(1.0, 1.0, 3), 1e-5), rel=1e-12)
    part = CentralAccountant(noise_multiplier=1.0, num_clients=100, clients_per_round=10, delta=1e-5)
    part.compose_round(10)
    part.compose_round(7)  # 3 of the 10 dropped: the noise is calibrated to 10, the mean is over 7
    part.compose_round(0)  # nothing aggregated, nothing released
    assert part.releases == 2 and part.effective_multipliers == pytest.approx([1.0, 0.7])
    expected = rdp_of(1.0, 1.0, 1) + rdp_of(1.0, 0.7, 1)
    assert part.epsilon == pytest.approx(epsilon_from_rdp(expected, 1e-5), rel=1e-12)


def test_central_epsilon_of_the_issue_example_is_the_unamplified_one() -> None:
    """20 clients, fraction 0.5, σ 1, 5 rounds, δ 1e-5: 12.30 (Gaussian mechanism composed five
    times, equal to Opacus' RDP accountant at q = 1), not the amplified 8.23 that assumed secret
    Poisson sampling of clients."""
    from audit.privacy.accounting import opacus_epsilon
    from federated._config import FederatedConfig

    cfg = FederatedConfig(num_clients=20, fraction_train=0.5, noise_multiplier=1.0, num_rounds=5, central_dp=True)
    acc = CentralAccountant(cfg.noise_multiplier, cfg.num_clients, cfg.clients_per_round, cfg.dp_delta)
    for _ in range(cfg.num_rounds):
        eps = acc.compose_round(cfg.clients_per_round)
    assert eps == pytest.approx(12.30, abs=0.005)
    assert eps == pytest.approx(opacus_epsilon("rdp", noise_multiplier=1.0, sample_rate=1.0, steps=5, delta=1e-5),
                                rel=1e-9)
    amplified = epsilon_from_rdp(rdp_of(0.5, 1.0, 5), 1e-5)
    assert amplified == pytest.approx(8.23, abs=0.005) and eps > amplified + 4


def test_local_training_is_seeded_and_the_proximal_term_pulls_to_the_anchor() -> None:
    from federated._torch import build_model, get_weights, set_weights, train_local

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (X @ np.array([2.0, -1.0, 0.5, 0.0]) > 0).astype(np.float32)
    start = get_weights(build_model("logreg", 4, seed=0))

    def run(mu: float, seed: int) -> list[np.ndarray]:
        m = build_model("logreg", 4)
        set_weights(m, start)
        train_local(m, X, y, epochs=3, batch_size=16, lr=0.5, seed=seed, proximal_mu=mu)
        return get_weights(m)

    a, b, c = run(0.0, 1), run(0.0, 1), run(0.0, 2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))

    def dist(w: list[np.ndarray]) -> float:
        return float(sum(np.sum((p - q) ** 2) for p, q in zip(w, start, strict=True)))

    assert dist(run(1.0, 1)) < 0.5 * dist(a)


def test_drop_out_rate_and_fault_roles() -> None:
    draws = [is_dropped(7, r, p, 0.3) for r in range(1, 41) for p in range(50)]
    assert abs(np.mean(draws) - 0.3) < 0.03
    assert is_dropped(7, 3, 4, 0.3) == is_dropped(7, 3, 4, 0.3)
    assert not any(is_dropped(7, r, p, 0.0) for r in range(5) for p in range(5))
    bad, slow = fault_roles(3, 20, 4, 2)
    assert len(bad) == 4 and len(slow) == 2 and bad <= set(range(20))
    assert fault_roles(3, 20, 4, 2) == (bad, slow)


def test_client_app_on_a_site_file_in_process(tmp_path) -> None:
    """The deployment path of the ClientApp: a SuperNode's ``data-path`` is its whole local dataset."""
    import json

    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from federated import FederatedConfig
    from federated._torch import build_model, get_weights
    from federated.client_app import app
    from federated.server_app import _train_config

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    rng = np.random.default_rng(0)
    site = pd.DataFrame({"x": rng.normal(size=50), "zone": rng.choice(["a", "b"], 50), "y": rng.integers(0, 2, 50)})
    path = tmp_path / "site.csv"
    site.to_csv(path, index=False)
    cfg = FederatedConfig(num_clients=1, target="y", positive_label="1", sensitive="zone", data=str(path))
    ctx = Context(run_id=1, node_id=77, node_config={"data-path": str(path)}, state=RecordDict(), run_config={})

    query = Message(RecordDict({"setup": ConfigRecord({"setup": cfg.data_setup_json()})}), dst_node_id=77,
                    message_type=MessageType.QUERY)
    rec = app(query, ctx).content.config_records["setup"]
    summary = json.loads(rec["summary"])
    assert (summary["rows"], summary["train_rows"], summary["val_rows"]) == (50, 40, 10)
    assert summary["zone=a"] + summary["zone=b"] == 50
    enc = encoder_from_stats([json.loads(rec["stats"])], json.loads(rec["columns"]))
    assert enc == TabularEncoder.fit(site[["x", "zone"]])

    config = {**_train_config(cfg, enc, "k"), "server-round": 1}
    weights = get_weights(build_model("logreg", enc.width, seed=0))
    train = Message(RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord(config)}), dst_node_id=77,
                    message_type=MessageType.TRAIN)
    reply = app(train, ctx).content
    metrics = dict(reply.metric_records["metrics"])
    assert metrics["num-examples"] == 40 and metrics["pre-n"] == 10 and metrics["delay"] == 0.0
    new = reply.array_records["arrays"].to_numpy_ndarrays()
    assert [w.shape for w in new] == [w.shape for w in weights] and not np.allclose(new[0], weights[0])


@pytest.mark.parametrize("source", ["generator", "adult"])
def test_simulated_clients_answer_exactly_what_their_own_rows_give(source, tmp_path, request) -> None:
    """The simulation's per-process column arrays give each client the statistics, summary and
    encoded rows that pandas gives on that client's own rows (missing values included)."""
    import json

    from flwr.app import Context, RecordDict

    from federated import FederatedConfig
    from federated._data import load_run_data
    from federated.client_app import _encoded, _setup_reply
    from federated.partition import partition_summary

    if source == "adult":
        adult = request.getfixturevalue("adult").sample(3000, random_state=0)
        assert adult.isna().any().any()  # '?' read as missing: the NaN paths are exercised
        path = tmp_path / "adult.csv"
        adult.to_csv(path, index=False)
        cfg = FederatedConfig(num_clients=7, data=str(path), target="income", positive_label=">50K",
                              sensitive="sex,race", partition="dirichlet", alpha=0.3, seed=3)
    else:
        cfg = FederatedConfig(num_clients=7, n_rows=1500, seed=3, partition="quantity")
    setup_json = cfg.data_setup_json()
    data = load_run_data(setup_json)
    stats = []
    for pid in range(cfg.num_clients):
        ctx = Context(run_id=1, node_id=100 + pid, node_config={"partition-id": pid, "num-partitions": 7},
                      state=RecordDict(), run_config={})
        got_stats, got_summary, columns = _setup_reply(setup_json, ctx)
        idx = data.parts[pid]
        X_own = data.train.loc[:, list(data.features)].iloc[idx]
        sens = data.train.loc[:, list(data.sensitive)].iloc[idx]
        want = partition_summary([np.arange(len(idx))], data.y_train[idx], sens)[0]
        sp = data.splits[pid]
        want.update(partition_id=pid, train_rows=len(sp.train), val_rows=len(sp.val))
        assert got_summary == want
        assert got_stats == column_stats(X_own)  # bit-identical floats, same category counts
        assert columns == list(data.features)
        stats.append(got_stats)
    enc = encoder_from_stats(stats, list(data.features))
    enc_json = json.dumps(enc.to_dict())
    for pid in range(cfg.num_clients):
        sp = data.splits[pid]
        X = data.train.loc[:, list(data.features)]
        Xtr, ytr, Xval, yval = _encoded(setup_json, enc_json, pid, "", 7)
        assert np.array_equal(Xtr, enc.transform(X.iloc[sp.train]))
        assert np.array_equal(Xval, enc.transform(X.iloc[sp.val]))
        assert np.array_equal(ytr, data.y_train[sp.train].astype(np.float32))
        assert np.array_equal(yval, data.y_train[sp.val].astype(np.float32))

