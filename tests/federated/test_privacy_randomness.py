"""Privacy randomness in the federation is secret; Krum is not told the number of attackers.

* local DP: a client trained twice from the same seed and weights gives different weights (the
  Poisson batches and the noise come from OS entropy); without DP the same seed reproduces exactly;
* central DP: the noise added to the aggregate does not come from numpy's global generator (which
  any code, or a seed, can fix) and differs between two identical releases;
* Krum's f defaults to a stated share of the sampled clients, whatever the simulated attackers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from federated._config import KRUM_F_FRACTION, FederatedConfig


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4)).astype(np.float32)
    y = (X @ np.array([2.0, -1.0, 0.5, 0.0]) > 0).astype(np.float32)
    return X, y


def _train(dp: object, seed: int = 7) -> list[np.ndarray]:
    from federated._torch import build_model, get_weights, set_weights, train_local

    X, y = _data()
    start = get_weights(build_model("logreg", 4, seed=0))
    m = build_model("logreg", 4)
    set_weights(m, start)
    train_local(m, X, y, epochs=2, batch_size=16, lr=0.5, seed=seed, dp=dp)  # type: ignore[arg-type]
    return get_weights(m)


def test_local_dp_weights_are_not_reproducible_from_the_seed_but_plain_training_is() -> None:
    from federated._torch import LocalDP

    dp = LocalDP(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    with pytest.warns(UserWarning, match="Secure RNG turned off"):  # Opacus' warning is not silenced
        a = _train(dp)
    b = _train(dp)
    diff = max(float(np.abs(p - q).max()) for p, q in zip(a, b, strict=True))
    assert diff > 1e-3, diff  # noise of scale lr·σ·C/batch per step: far above float rounding
    plain_a, plain_b = _train(None), _train(None)
    assert all(np.array_equal(p, q) for p, q in zip(plain_a, plain_b, strict=True))


def _central_strategy() -> object:
    from federated._strategies import make_strategy

    cfg = FederatedConfig(num_clients=4, central_dp=True, noise_multiplier=1.0, clip_norm=1.0)
    return make_strategy(cfg)


def test_central_dp_noise_is_secret_and_has_flowers_scale() -> None:
    from flwr.app import Array, ArrayRecord

    strategy = _central_strategy()
    zeros = np.zeros((200, 50), dtype=np.float32)

    def release() -> np.ndarray:
        np.random.seed(0)  # Flower's own wrapper would now draw the same noise every time
        out = strategy._add_noise_to_aggregated_arrays(ArrayRecord({"w": Array(zeros.copy())}))  # type: ignore[attr-defined]
        return out.to_numpy_ndarrays()[0]

    a, b = release(), release()
    assert not np.array_equal(a, b)
    # Flower's calibration: N(0, (z C / m)^2) with m the sampled clients (4 here)
    assert np.std(a) == pytest.approx(1.0 * 1.0 / 4, rel=0.05)
    assert abs(float(np.mean(a))) < 0.01


def test_krum_f_defaults_to_a_stated_share_not_the_true_number_of_attackers() -> None:
    from federated._strategies import make_strategy

    for malicious in (0.0, 0.1, 0.3):
        cfg = FederatedConfig(num_clients=10, strategy="krum", malicious=malicious)
        assert cfg.krum_f_used == math.floor(KRUM_F_FRACTION * 10) == 2
        assert make_strategy(cfg).num_malicious_nodes == 2  # type: ignore[attr-defined]
    # at most what Krum tolerates (m > 2f + 2), and an explicit setting wins
    assert FederatedConfig(num_clients=4, strategy="krum").krum_f_used == 0
    assert FederatedConfig(num_clients=20, fraction_train=0.5, strategy="multikrum").krum_f_used == 2
    cfg = FederatedConfig(num_clients=10, strategy="multikrum", krum_f=3, malicious=0.1)
    assert cfg.krum_f_used == 3 and cfg.krum_f_source == "krum-f setting"
    assert make_strategy(cfg).num_malicious_nodes == 3  # type: ignore[attr-defined]
