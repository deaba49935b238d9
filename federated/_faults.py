"""Simulated faults and adversaries, decided deterministically from the seed.

Server and clients evaluate the same functions, so the run report can state exactly who was
meant to drop out and tests can compare it with who actually answered.

* Drop-out: in each round each sampled client independently fails to answer with probability
  ``dropout`` (a Bernoulli draw seeded by (seed, round, partition id)).
* Stragglers: a fixed set of ``floor(stragglers * num_clients)`` clients (slow devices) whose
  answers take ``straggler-delay`` seconds longer, on a simulated clock: a Ray actor that slept
  would hold up every client queued behind it, and wall-clock deadlines on a shared machine are
  not reproducible. With ``round-timeout`` > 0, an answer later than the deadline is one the
  server no longer waits for: it is left out of the round and reported as timed out (under
  SecAgg+, the late client never sends its masked vector, and the protocol recovers without it).
* Malicious clients: a fixed set of ``floor(malicious * num_clients)`` clients that flip their
  labels (``label-flip``) or send ``global + attack_scale * (local - global)`` (``scale``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["fault_roles", "is_dropped", "is_late"]


def is_dropped(seed: int, server_round: int, partition_id: int, rate: float) -> bool:
    """Whether this client drops out of this round (Bernoulli(rate), seeded)."""
    if rate <= 0:
        return False
    u = np.random.default_rng([int(seed), 0xD80F, int(server_round), int(partition_id)]).random()
    return bool(u < rate)


@lru_cache(maxsize=64)
def fault_roles(seed: int, num_clients: int, n_malicious: int, n_stragglers: int) -> tuple[frozenset[int], frozenset[int]]:
    """(malicious partition ids, straggler partition ids), each a seeded random subset."""
    rng = np.random.default_rng([int(seed), 0xBAD])
    malicious = frozenset(int(i) for i in rng.permutation(num_clients)[:n_malicious])
    rng = np.random.default_rng([int(seed), 0x5105])
    stragglers = frozenset(int(i) for i in rng.permutation(num_clients)[:n_stragglers])
    return malicious, stragglers


def is_late(delay: float, round_timeout: float) -> bool:
    """Whether an answer with this simulated delay misses the round's deadline (0: no deadline)."""
    return round_timeout > 0 and delay > round_timeout
