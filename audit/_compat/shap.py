"""shap: exact TreeSHAP with the rows split between this process and forked children.

What it bypasses: nothing private. shap's TreeSHAP (0.51) is single-threaded C that holds the GIL,
so threads cannot share it; this module forks children that inherit the already-built
``TreeExplainer`` (a fork starts in milliseconds; a fresh worker would first spend a second
importing shap and scikit-learn), each computes its share of the rows with the public
``shap_values`` and sends the array back. It depends on how that shap line behaves (GIL held,
values exact per row, the explainer usable after a fork), hence the version gate.

Values are the serial ones bit for bit (TreeSHAP is exact per row; tested). A child that fails or
does not answer within ten times this process's own share (at least 30 s) is stopped and its rows
are computed here; the backend string says so.

Off switch: ``TRUSTAUDIT_COMPAT_SHAP=0`` (or ``false``/``off``/``no``) — TreeSHAP then runs in
this process with the public ``shap.TreeExplainer(...).shap_values(Z)``, as it also does when the
installed shap is outside ``SUPPORTED``. Measured benefit: bench/bench_explain.py (the Adult
workload; it prints the backend and the one-process ratio).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import warnings
from typing import Any

import numpy as np

from audit._compat import _gate

__all__ = ["SUPPORTED", "enabled", "installed_version", "tree_shap_values"]

#: shap versions the fast path was written and tested against: lower <= version < upper
SUPPORTED = ("0.51", "0.52")


def installed_version() -> str | None:
    return _gate.installed_version("shap")


def enabled() -> bool:
    """The fast path is used: the switch is on and the installed shap is in ``SUPPORTED``."""
    return _gate.enabled("shap", installed_version(), SUPPORTED)


def tree_shap_values(
    final: Any, perturbation: str, background: np.ndarray | None, Z: np.ndarray, n_jobs: int
) -> tuple[np.ndarray, Any, str]:
    """TreeSHAP values of ``Z`` (additivity not re-checked), the expected value, and the backend.

    ``n_jobs > 1`` and the fast path enabled: the rows are split between this process and
    ``n_jobs - 1`` forked children (``"fork"``), or worker processes through joblib's loky where
    fork does not exist (``"loky"``). Otherwise one public call in this process (``"serial"``).
    """
    if n_jobs <= 1 or not enabled():
        values, expected = _serial(final, perturbation, background, Z)
        return np.asarray(values), expected, "serial"
    if "fork" in multiprocessing.get_all_start_methods():
        return _forked(final, perturbation, background, Z, n_jobs)
    from joblib import Parallel, delayed

    chunks = np.array_split(Z, n_jobs)
    parts = Parallel(n_jobs=n_jobs, backend="loky")(
        delayed(_serial)(final, perturbation, background, c) for c in chunks
    )
    return np.concatenate([np.asarray(v) for v, _ in parts], axis=0), parts[0][1], "loky"


def _explainer(final: Any, perturbation: str, background: np.ndarray | None) -> Any:
    import shap

    return shap.TreeExplainer(final, data=background, feature_perturbation=perturbation)


def _serial(final: Any, perturbation: str, background: np.ndarray | None, Z: np.ndarray) -> Any:
    """The public path: one explainer, all rows (module level so that loky workers can import it)."""
    explainer = _explainer(final, perturbation, background)
    return explainer.shap_values(Z, check_additivity=False), explainer.expected_value


def _shap_in_child(explainer: Any, Z: np.ndarray, conn: Any) -> None:
    """Runs in a forked child: TreeSHAP of its rows, sent back through the pipe."""
    try:
        conn.send(("ok", np.asarray(explainer.shap_values(Z, check_additivity=False))))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which recomputes
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _forked(
    final: Any, perturbation: str, background: np.ndarray | None, Z: np.ndarray, n_jobs: int
) -> tuple[np.ndarray, Any, str]:
    """This process computes the first share of the rows while ``n_jobs - 1`` forked children
    compute the others; a failed or silent child's rows are recomputed here."""
    explainer = _explainer(final, perturbation, background)
    chunks = np.array_split(np.arange(len(Z)), n_jobs)
    mp = multiprocessing.get_context("fork")
    children = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python >= 3.12)
        for idx in chunks[1:]:
            recv, send = mp.Pipe(duplex=False)
            proc = mp.Process(target=_shap_in_child, args=(explainer, Z[idx], send), daemon=True)
            proc.start()
            send.close()
            children.append((proc, recv, idx))
    t0 = time.perf_counter()
    parts = [np.asarray(explainer.shap_values(Z[chunks[0]], check_additivity=False))]
    budget = max(30.0, 10 * (time.perf_counter() - t0))
    backend = "fork"
    for proc, recv, idx in children:
        status, payload = "timeout", None
        try:
            if recv.poll(budget):
                status, payload = recv.recv()
        except (EOFError, OSError):
            status = "died"
        recv.close()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        if status != "ok":
            payload = explainer.shap_values(Z[idx], check_additivity=False)
            backend = f"fork (a child {status}: its rows were recomputed in-process)"
        parts.append(np.asarray(payload))
    return np.concatenate(parts, axis=0), explainer.expected_value, backend
