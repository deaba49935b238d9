"""Privacy accounting with the subsampled-Gaussian RDP accountant (Opacus' analysis module).

Central DP (client level). Flower's ``DifferentialPrivacyServerSideFixedClipping`` clips each
client's update to L2 norm C and adds N(0, (zC/m)^2) to the uniform mean of the m sampled
clients' updates. Following Flower's own (no-amplification) accountant and McMahan et al. (2018),
a round is a Gaussian mechanism on that mean with sensitivity C/k for the k updates actually
averaged (add/remove-one neighbouring clients). When only k < m sampled clients answer, the
noise is unchanged while the sensitivity grows, so the round's effective noise multiplier is
z * k / m: the accountant composes exactly that. Two figures are reported per round:

* ``epsilon``: with privacy amplification by sampling at rate q = m / N, via Mironov et al.'s
  subsampled-Gaussian RDP bound (``compute_rdp``). The bound is derived for Poisson sampling;
  Flower samples a fixed-size subset without replacement, for which it is the customary
  approximation (as in McMahan et al. 2018), not a proof.
* ``epsilon_no_amplification``: the same composition with q = 1, a valid upper bound whatever
  the sampling (and what Flower's built-in accountant computes).

Local DP (record level, per client): each client runs DP-SGD (Opacus) with Poisson batches at
rate q_i and noise multiplier sigma; its epsilon composes every local step it took over all the
rounds it joined. Records belong to one client each, so the model is (max_i eps_i, delta)-DP at
the record level against anyone who sees the updates (parallel composition).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ORDERS", "CentralAccountant", "epsilon_from_rdp", "rdp_of"]

#: RDP orders (Opacus' defaults extended to large orders for small epsilons).
ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 128, 256, 512])


def rdp_of(sample_rate: float, noise_multiplier: float, steps: int) -> np.ndarray:
    """RDP of ``steps`` compositions of the sampled Gaussian mechanism, at every order in ORDERS."""
    from opacus.accountants.analysis.rdp import compute_rdp

    if steps <= 0:
        return np.zeros(len(ORDERS))
    return np.asarray(
        compute_rdp(q=float(sample_rate), noise_multiplier=float(noise_multiplier), steps=int(steps), orders=list(ORDERS)),
        dtype=float,
    )


def epsilon_from_rdp(rdp: Sequence[float] | np.ndarray, delta: float) -> float:
    """The (epsilon, delta) conversion of an RDP curve (Balle et al. 2020, as Opacus does)."""
    import warnings

    from opacus.accountants.analysis.rdp import get_privacy_spent

    r = np.asarray(rdp, dtype=float)
    if not np.any(r > 0):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eps, _ = get_privacy_spent(orders=list(ORDERS), rdp=r, delta=float(delta))
    return float(eps)


class CentralAccountant:
    """Composes the rounds of central DP; see the module docstring for the model."""

    def __init__(self, noise_multiplier: float, num_clients: int, clients_per_round: int, delta: float) -> None:
        self.noise_multiplier = float(noise_multiplier)
        self.num_clients = int(num_clients)
        self.m = int(clients_per_round)
        self.delta = float(delta)
        self.sample_rate = self.m / self.num_clients
        self._rdp = np.zeros(len(ORDERS))
        self._rdp_full = np.zeros(len(ORDERS))
        self.releases = 0
        self.effective_multipliers: list[float] = []

    def compose_round(self, answered: int) -> tuple[float, float]:
        """Account one round in which ``answered`` updates were averaged; returns both epsilons."""
        if answered > 0:
            z_eff = self.noise_multiplier * answered / self.m
            self._rdp += rdp_of(self.sample_rate, z_eff, 1)
            self._rdp_full += rdp_of(1.0, z_eff, 1)
            self.releases += 1
            self.effective_multipliers.append(z_eff)
        return self.epsilon, self.epsilon_no_amplification

    @property
    def epsilon(self) -> float:
        return epsilon_from_rdp(self._rdp, self.delta)

    @property
    def epsilon_no_amplification(self) -> float:
        return epsilon_from_rdp(self._rdp_full, self.delta)
