"""Compatibility modules: the only places that rely on a library's internals or on how one
library version behaves, each gated on the versions it was tested against.

Every module has a ``SUPPORTED = (lower, upper)`` version range (``lower <= version < upper``,
read with ``importlib.metadata``), an ``enabled()`` function, the fast path and a fallback through
the library's public API that gives the same results (tests/audit/test_compat.py and
tests/federated/test_compat_flwr.py test both paths and the version gate). The fast path is used
only when the installed version is in range and the module's switch is not off: set
``TRUSTAUDIT_COMPAT_<PACKAGE>=0`` (or ``false``/``off``/``no``) to force the public path. Nothing
here changes global state at import. bench/bench_compat.py measures each fast path against its
fallback; a fast path stays only while it measurably pays (or, where noted, for exactness).

* :mod:`audit._compat.shap` (``TRUSTAUDIT_COMPAT_SHAP``) — no private API: exact TreeSHAP split
  between this process and forked children that inherit the built explainer (shap's TreeSHAP is
  single-threaded and holds the GIL). Values identical to the public in-process call. Benefit:
  close to the number of free cores on an idle machine; bench section ``shap``.
* :mod:`audit._compat.sklearn` (``TRUSTAUDIT_COMPAT_SKLEARN``) — a fitted ColumnTransformer's
  private ``_transformer_to_input_indices``; the fallback resolves the public ``transformers_``
  column specifications. Kept for exactness on specifications the public resolution does not
  recognise, not for speed (microseconds either way).
* :mod:`audit._compat.opacus` (``TRUSTAUDIT_COMPAT_OPACUS``) — Opacus' private
  ``_generate_noise`` (secure-mode and zero-σ noise of the book-keeping DP-SGD optimizer); the
  fallback makes the same ``torch.normal`` calls, draw for draw. Kept for fidelity to Opacus'
  secure noise, not for speed. (Opacus' private ``_check_skip_next_step`` is no longer used: the
  book-keeping optimizer refuses virtual steps through the public ``signal_skip_step``.)
* :mod:`audit._compat.skops` (``TRUSTAUDIT_COMPAT_SKOPS``) — no private API: ``skops.io`` is
  imported with a placeholder standing in for ``sklearn.externals.array_api_compat.torch``, so
  the estimator listing skops runs at import does not import torch (same trusted types, tested in
  fresh processes). Benefit: torch's import (about a second) off every skops model load in a fresh
  process: every CLI audit and worker job.
* :mod:`federated._compat.flwr` (``TRUSTAUDIT_COMPAT_FLWR``) — Flower's
  ``InMemoryLinkState.get_message_ins`` replaced by a lookup by destination node while a
  simulation of at least ``MIN_CLIENTS`` clients runs (reference-counted, so simulations on
  several threads restore Flower's method only when the last leaves); bench sections
  ``flwr-sweep`` and ``flwr-sim``.

Removed for want of a measured benefit: Ray's private ``_system_config`` (no worker prestart) in
the simulation's ``ray.init`` arguments (bench section ``ray``), and the import-time
``torch.set_num_threads(1)`` of federated/_torch.py, replaced by one thread around each
simulated client's training and evaluation (``federated._torch.one_thread``).
"""

__all__: list[str] = []
