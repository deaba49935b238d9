"""Privacy accounting with the Gaussian RDP accountant (Opacus' analysis module), and what a
federated run's ε covers.

Central DP (client level). Flower's ``DifferentialPrivacyServerSideFixedClipping`` clips each
client's update to L2 norm C and adds N(0, (zC/m)^2) to the uniform mean of the m sampled
clients' updates; here the noise is drawn from a generator seeded from OS entropy
(``federated._strategies``), never from the run's seed. Following Flower's own accountant and
McMahan et al. (2018), a round is a Gaussian mechanism on that mean with sensitivity C/k for the
k updates actually averaged (add/remove-one neighbouring clients). When only k < m sampled
clients answer, the noise is unchanged while the sensitivity grows, so the round's effective
noise multiplier is z * k / m: the accountant composes exactly that.

**No amplification by sampling.** Clients are sampled as a fixed-size subset reproducible from
the run's seed (the seed is in the run config and the model's metadata), so who took part in a
round is not secret and the subsampled-Gaussian bound (which assumes secret Poisson sampling) does
not apply. Each round is therefore accounted at q = 1, the conservative choice Flower's own
accountant enforces for fixed clipping (``sampling_method='no-amplification'``): the ε holds
whatever the sampling. (20 clients, half sampled, z = 1, 5 rounds, δ = 1e-5: ε = 12.30, where
the amplified figure, 8.23, would not hold.)

Local DP (record level, per client): each client runs DP-SGD (Opacus) with Poisson batches at
rate q_i and noise multiplier sigma, both drawn from generators seeded from OS entropy; its
epsilon composes every local step it took over all the rounds it joined. Records belong to one
client each, so the model is (max_i eps_i, delta)-DP at the record level against anyone who sees
the updates (parallel composition).

Neither ε covers what the run releases outside the noised mechanism: :func:`not_covered`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# the accountant's arithmetic lives in one place, audit.privacy.accounting (over Opacus' RDP analysis)
from audit.privacy.accounting import ORDERS, epsilon_from_rdp, rdp_of

__all__ = ["NOT_COVERED", "ORDERS", "CentralAccountant", "dp_conditions", "epsilon_from_rdp", "rdp_of"]

#: What a federated run releases that neither the central nor the local ε covers.
NOT_COVERED: tuple[str, ...] = (
    "the input encoder's statistics pooled from every client's rows without noise (numeric means and "
    "standard deviations, the set of categories of each column), stored in the model's metadata",
    "each client's row count, label count and per-group counts of the sensitive features, sent to the "
    "server in the clear at setup (also under SecAgg+ or local DP) and kept in the run outputs",
    "each client's training metrics, sent in the clear every round (number of examples, training loss, "
    "accuracy and loss of the global model on its validation rows) and kept in the run outputs",
    "the number of clients and of training rows, treated as public",
)

class CentralAccountant:
    """Composes the rounds of central DP without amplification (see the module docstring)."""

    def __init__(self, noise_multiplier: float, num_clients: int, clients_per_round: int, delta: float) -> None:
        self.noise_multiplier = float(noise_multiplier)
        self.num_clients = int(num_clients)
        self.m = int(clients_per_round)
        self.delta = float(delta)
        self.sampling_fraction = self.m / self.num_clients  # reported; not used as an amplification rate
        self.sample_rate = 1.0  # the rate the accountant uses: no amplification
        self._rdp = np.zeros(len(ORDERS))
        self.releases = 0
        self.effective_multipliers: list[float] = []

    def compose_round(self, answered: int) -> float:
        """Account one round in which ``answered`` updates were averaged; returns the ε so far."""
        if answered > 0:
            z_eff = self.noise_multiplier * answered / self.m
            self._rdp += rdp_of(self.sample_rate, z_eff, 1)
            self.releases += 1
            self.effective_multipliers.append(z_eff)
        return self.epsilon

    @property
    def epsilon(self) -> float:
        return epsilon_from_rdp(self._rdp, self.delta)


def dp_conditions(kind: str, secagg: bool = False) -> dict[str, Any]:
    """The ``dp_conditions`` block of a federated claim (``central`` or ``local``)."""
    from audit.privacy.secure_rng import NOISE_SOURCE

    if kind == "central":
        return {
            "mechanism": "central DP: Flower server-side fixed clipping, Gaussian noise on the mean of the updates",
            "unit": "client",
            "sampling": "fixed-size",
            "sampling_secret": False,
            "noise_secret": True,
            "noise_source": NOISE_SOURCE,
            "sampling_source": "a fixed-size sample of clients per round reproducible from the run's seed; "
                               "accounted without amplification (q = 1)",
            "neighbouring": "add or remove one client",
            "not_covered": list(NOT_COVERED),
        }
    if kind == "local":
        from audit.privacy.accounting import dp_sgd_conditions

        return dp_sgd_conditions(
            "local DP: DP-SGD in each client (Opacus)" + (", updates under SecAgg+" if secagg else ""),
            "add or remove one row of one client (the worst client's ε)", NOT_COVERED)
    raise ValueError(f"kind must be 'central' or 'local', got {kind!r}")
