"""Compatibility modules of the federated side: the only places that rely on Flower's internals
beyond the engine call of :mod:`federated._engine`, gated on the versions they were tested against
(conventions and the full list: :mod:`audit._compat` — ``SUPPORTED``, ``enabled()``, the
``TRUSTAUDIT_COMPAT_<PACKAGE>=0`` switch, a public fallback, nothing done at import).

* :mod:`federated._compat.flwr` — ``InMemoryLinkState.get_message_ins`` replaced, for
  simulations of at least ``MIN_CLIENTS`` clients, by a lookup by destination node
  (switch ``TRUSTAUDIT_COMPAT_FLWR``; bench/bench_compat.py sections ``flwr-sweep``, ``flwr-sim``).
"""

__all__: list[str] = []
