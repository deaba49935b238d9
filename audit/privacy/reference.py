"""Reference models for the calibrated membership attack, trained on holdout rows only.

Two kinds, chosen by what the audited model offers:

- ``clone``: a fresh ``sklearn.base.clone`` of the audited scikit-learn estimator (same
  hyper-parameters, every ``random_state`` re-seeded), refit on a subsample of the holdout rows —
  shadow models of the very learning algorithm (Shokri et al. 2017). The rules of
  :mod:`audit._refit` make them cheaper within the family (:class:`CloneReferences`): gradient
  boosting runs at most ``REFERENCE_MAX_ITER`` iterations, the learning rate raised to keep
  iterations × rate; a Pipeline's preprocessing is fitted once per holdout fold (on all of the
  fold's rows, none of which a reference model of that fold ever scores) and shared by the
  fold's models, which refit its last step only; columns none of a HistGradientBoosting model's
  splits could use are left out of its refit (the same trees).
- ``proxy``: when the model is not a scikit-learn estimator (TorchScript, ONNX), a small torch MLP
  (two hidden layers of 64, Adam) on the model's own input encoding (or one fitted on the holdout
  rows) — it stands in for the unknown training recipe, so its calibration is approximate.

Reference training is cross-fitted (see ``audit.checks.privacy``): a model never scores a row it
trained on. torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["PROXY_HIDDEN", "REFERENCE_MAX_ITER", "CloneReferences", "fit_clone_predict", "fit_proxy_predict",
           "torch_threads"]

PROXY_HIDDEN = (64, 64)
PROXY_MAX_STEPS = 300
PROXY_MAX_EPOCHS = 20
PROXY_BATCH = 256
PROXY_LR = 1e-3
#: at most this many boosting iterations per clone reference model (iterations × rate kept): the
#: calibrated attack's AUC on the Adult workload stays within its DeLong interval (bench_privacy.py)
REFERENCE_MAX_ITER = 20


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads, then restore the previous setting.

    Small MLPs train several times faster on one thread than on two contended ones.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _positive_proba(est: Any, X: Any) -> np.ndarray:
    proba = np.asarray(est.predict_proba(X), dtype=np.float64)
    classes = list(getattr(est, "classes_", [0, 1]))
    if 1 not in classes:  # a fold with a single class cannot happen upstream, but be exact
        return np.zeros(len(proba))
    return proba[:, classes.index(1)]


def fit_clone_predict(estimator: Any, X_fit: Any, y_fit: np.ndarray, X_pred: Any, seed: int) -> np.ndarray:
    """Refit a clone of ``estimator`` on (X_fit, y_fit ∈ {0, 1}); P(positive) on X_pred."""
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits

    est = _reseeded(clone(estimator), seed)
    # one native thread: OpenMP estimators (HistGradientBoosting...) on a busy machine spin-wait
    # many times slower than a single thread on these small refits
    with threadpool_limits(limits=1):
        est.fit(X_fit, np.asarray(y_fit, dtype=int))
        return _positive_proba(est, X_pred)


def _reseeded(est: Any, seed: int) -> Any:
    params = est.get_params(deep=True)
    reseed = {k: int(seed) for k in params if k == "random_state" or k.endswith("__random_state")}
    if reseed:
        est.set_params(**reseed)
    return est


def _rows(Z: Any, pos: np.ndarray) -> Any:
    return Z.iloc[pos] if hasattr(Z, "iloc") else Z[pos]


class CloneReferences:
    """The clone reference models of one holdout fold.

    ``estimator`` is cloned with its boosting shortened (:func:`audit._refit.shorter_boosting`,
    at most ``max_iter`` iterations). A Pipeline's steps before the last are fitted once, on every
    row of the fold (``X_fold``, ``y_fold``), and transform the fold and the rows to score
    (``X_pred``) once; :meth:`fit_predict` then refits only the last step on a subset of the fold.
    Construction fits the shared preprocessing, so it raises when the estimator cannot be refit.
    """

    def __init__(self, estimator: Any, X_fold: Any, y_fold: np.ndarray, X_pred: Any, seed: int,
                 max_iter: int = REFERENCE_MAX_ITER) -> None:
        from threadpoolctl import threadpool_limits

        from audit._refit import shorter_boosting, split_pipeline

        est, self.boosting = shorter_boosting(estimator, max_iter)
        pre, self._last = split_pipeline(est)
        #: per model fitted: columns left out as no split can use them (audit._refit.drop_unsplittable)
        self.left_out: list[int] = []
        self.shared_preprocessing = pre is not None
        self._y = np.asarray(y_fold, dtype=int)
        if pre is None:
            self._Z, self._Z_pred = X_fold, X_pred
        else:
            with threadpool_limits(limits=1):
                pre = _reseeded(pre, seed)
                self._Z = pre.fit_transform(X_fold, self._y)  # as Pipeline.fit transforms its rows
                self._Z_pred = pre.transform(X_pred)

    def fit_predict(self, pos: np.ndarray, seed: int) -> np.ndarray:
        """P(positive) on the rows to score, of a model refit on the fold's rows at ``pos``."""
        from sklearn.base import clone
        from threadpoolctl import threadpool_limits

        from audit._refit import drop_unsplittable

        est = _reseeded(clone(self._last), seed)
        (Z, Z_pred), dropped = drop_unsplittable(est, _rows(self._Z, pos), self._Z_pred)
        self.left_out.append(dropped)
        with threadpool_limits(limits=1):
            est.fit(Z, self._y[pos])
            return _positive_proba(est, Z_pred)


def fit_proxy_predict(Z_fit: np.ndarray, y_fit: np.ndarray, Z_pred: np.ndarray, seed: int) -> np.ndarray:
    """Train the proxy MLP on encoded rows (Z_fit, y_fit ∈ {0, 1}); P(positive) on Z_pred."""
    import torch
    from torch import nn

    with torch_threads(1), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Z = torch.from_numpy(np.array(Z_fit, dtype=np.float32, order="C", copy=True))
        y = torch.from_numpy(np.array(y_fit, dtype=np.int64, copy=True))
        layers: list[nn.Module] = []
        width = Z.shape[1]
        for h in PROXY_HIDDEN:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        net = nn.Sequential(*layers, nn.Linear(width, 2))
        opt = torch.optim.Adam(net.parameters(), lr=PROXY_LR)
        gen = torch.Generator().manual_seed(seed)
        n = len(Z)
        per_epoch = max(1, math.ceil(n / PROXY_BATCH))
        epochs = max(1, min(PROXY_MAX_EPOCHS, PROXY_MAX_STEPS // per_epoch))
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, PROXY_BATCH):
                idx = perm[i : i + PROXY_BATCH]
                loss = nn.functional.cross_entropy(net(Z[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            out = torch.softmax(net(torch.from_numpy(np.array(Z_pred, dtype=np.float32, order="C", copy=True))), dim=1)
        return out[:, 1].double().numpy()
