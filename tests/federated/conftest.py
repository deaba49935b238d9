"""One simulation engine start shared by the federated tests.

Starting Ray and importing torch, Opacus and Flower's crypto in every actor costs tens of seconds
on a busy two-core machine; a round costs a fraction of one. So the runs the tests need are
executed one after the other on one federation (``federated.simulate_many``):

* ``iid``: FedAvg, logistic regression, IID partitions (accuracy vs centralised training);
* ``drop``: FedAvg, MLP, 30 % drop-out per round (who answered);
* ``drop_secagg``: the same under SecAgg+ (the aggregate equals FedAvg's within quantisation);
* ``dp``: central DP (server-side fixed clipping) and local DP (Opacus) on Dirichlet partitions,
  half the clients per round and some drop-outs (accounting), then exported and audited;
* ``fedadam`` (quantity-skewed partitions) and ``krum`` (one client scaling its update by -4):
  the other strategies run and learn.
"""

from __future__ import annotations

import pytest

from federated import FederatedConfig

CONFIGS = {
    "iid": FederatedConfig(num_clients=6, num_rounds=8, n_rows=3000, seed=5),
    "drop": FederatedConfig(num_clients=6, num_rounds=3, n_rows=1200, seed=3, dropout=0.3, model="mlp", hidden=8),
    "dp": FederatedConfig(num_clients=6, num_rounds=3, n_rows=1200, seed=4, partition="dirichlet", alpha=0.5,
                          fraction_train=0.5, dropout=0.2, central_dp=True, noise_multiplier=0.8, clip_norm=2.0,
                          local_dp=True, local_noise=1.0, local_clip=1.0),
}
CONFIGS["drop_secagg"] = CONFIGS["drop"].replace(secagg=True)
CONFIGS["fedadam"] = FederatedConfig(num_clients=6, num_rounds=4, n_rows=1200, seed=6, strategy="fedadam",
                                     partition="quantity", alpha=0.5)
CONFIGS["krum"] = FederatedConfig(num_clients=6, num_rounds=4, n_rows=1200, seed=6, strategy="krum",
                                  malicious=1 / 6, attack="scale", attack_scale=-4.0)


@pytest.fixture(scope="session")
def runs() -> dict:
    from federated import simulate_many

    names = list(CONFIGS)
    out = simulate_many([CONFIGS[n] for n in names])
    return dict(zip(names, out, strict=True))
