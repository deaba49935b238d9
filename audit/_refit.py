"""New models of the audited model's family, for the checks that must train some.

Two checks refit the audited scikit-learn estimator on other rows: ``fairness.mitigation`` (the
ExponentiatedGradient reduction refits it once per oracle call on reweighted rows) and
``privacy.membership_inference`` (the calibrated attack's reference models, refit on holdout
folds). Both only need models *of the same family*, and both pay for every refit, so this module
holds the rules that make a refit cheaper while keeping the family:

* **Shorter boosting** (:func:`shorter_boosting`). scikit-learn's gradient boosting
  (``HistGradientBoostingClassifier``, ``GradientBoostingClassifier``, alone or as a Pipeline's
  last step) pays per boosting iteration. A refit runs at most ``max_iter`` iterations with the learning rate raised
  so that iterations × rate — the length of the boosting path — stays the audited model's (the rate
  capped at 1). Trees (leaves, depth, regularisation), loss and binning stay the audited model's.
  Any other estimator is cloned unchanged.
* **Preprocessing once** (:func:`split_pipeline`). A Pipeline's steps before the last are fitted
  once per set of rows and shared by the refits of its last step, instead of being refit with each.
* **Wide numeric columns binned once** (:func:`bin_wide_columns`). ``HistGradientBoosting`` cuts a
  column with more distinct values than ``max_bins`` at quantiles; given sample weights
  (scikit-learn >= 1.6) it computes one weighted percentile per cut at every fit, which dominates
  a small refit. Cutting such a column once, at the unweighted quantiles the estimator itself uses
  without weights, leaves at most ``max_bins`` values, which the estimator keeps as they are: the
  same trees as unweighted binning, at a fraction of the cost.
* **Columns no split can use, left out** (:func:`drop_unsplittable`). ``HistGradientBoosting``
  splits a node only when both children keep ``min_samples_leaf`` rows. A column (without missing
  values) whose most frequent value fills all but fewer than ``min_samples_leaf`` of the rows can
  never be split on, at any node: one side of every split holds only rows off that value. Such
  columns (rare one-hot categories, mostly) are left out of the refit and of its predictions; the
  trees are the same, and the estimator no longer bins and scans them at every node.

Which rule ran, with the figures, goes into the checks' provenance (:func:`describe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Boosting", "bin_wide_columns", "describe", "drop_unsplittable", "shorter_boosting",
           "split_pipeline"]

#: the parameter holding the number of boosting iterations, per estimator class name
_ITERATION_PARAM = {"HistGradientBoostingClassifier": "max_iter", "GradientBoostingClassifier": "n_estimators"}


@dataclass(frozen=True)
class Boosting:
    """How a refit's boosting was shortened: the audited model's (iterations, rate) and the refit's."""

    estimator: str
    iterations: int
    learning_rate: float
    refit_iterations: int
    refit_learning_rate: float


def _last_step(estimator: Any) -> tuple[str, Any]:
    """(parameter prefix, estimator) of a Pipeline's last step, or ("", estimator)."""
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        name, step = estimator.steps[-1]
        return f"{name}__", step
    return "", estimator


def shorter_boosting(estimator: Any, max_iter: int) -> tuple[Any, Boosting | None]:
    """An unfitted clone of ``estimator`` whose boosting runs at most ``max_iter`` iterations.

    For scikit-learn's gradient boosting with more than ``max_iter`` iterations, the clone runs
    ``max_iter`` of them at learning rate ``min(1, rate × iterations / max_iter)``; the second value
    says so. Any other estimator: a plain clone and ``None``.
    """
    from sklearn.base import clone

    est = clone(estimator)
    prefix, step = _last_step(est)
    name = type(step).__name__
    param = _ITERATION_PARAM.get(name)  # by exact class: a subclass may use its parameters otherwise
    if param is None:
        return est, None
    params = step.get_params(deep=False)
    iterations, rate = int(params[param]), float(params["learning_rate"])
    if iterations <= max_iter:
        return est, None
    new_rate = min(1.0, rate * iterations / max_iter)
    est.set_params(**{f"{prefix}{param}": int(max_iter), f"{prefix}learning_rate": new_rate})
    return est, Boosting(name, iterations, rate, int(max_iter), new_rate)


def split_pipeline(estimator: Any) -> tuple[Any | None, Any]:
    """(unfitted clone of the steps before the last, unfitted clone of the last step) of a Pipeline
    of two or more steps whose last step is an estimator; ``(None, clone)`` otherwise."""
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline) and len(estimator.steps) > 1 and estimator.steps[-1][1] not in (
        None, "passthrough"
    ):
        return clone(estimator[:-1]), clone(estimator.steps[-1][1])
    return None, clone(estimator)


def bin_wide_columns(estimator: Any, Z_fit: Any, *others: Any) -> tuple[list[Any], list[int]]:
    """Cut the numeric columns of ``Z_fit`` with more distinct values than ``estimator.max_bins``
    into that many bins, once, at the quantiles ``HistGradientBoosting`` uses without sample weights
    (``averaged_inverted_cdf``; value x goes to bin i when cut[i-1] < x <= cut[i]); the same cuts
    apply to ``others``. Missing values stay missing.

    Returns the matrices ([Z_fit, *others], binned copies where a column was cut) and the indices
    of the cut columns. Only for a ``HistGradientBoosting`` estimator and dense float matrices;
    anything else comes back unchanged.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    mats = [Z_fit, *others]
    if not isinstance(estimator, HistGradientBoostingClassifier):
        return mats, []
    if not all(isinstance(m, np.ndarray) and m.ndim == 2 and m.dtype.kind == "f" for m in mats):
        return mats, []
    max_bins = int(estimator.get_params()["max_bins"])
    cat = estimator.get_params()["categorical_features"]
    if cat is not None and not (isinstance(cat, str) and cat == "from_dtype"):
        return mats, []  # categorical columns are binned otherwise: leave the estimator its own way
    percentiles = np.linspace(0, 100, num=max_bins + 1)[1:-1]
    out = [m.copy() for m in mats]
    cut: list[int] = []
    for j in range(Z_fit.shape[1]):
        col = Z_fit[:, j]
        col = col[~np.isnan(col)]
        if len(np.unique(col)) <= max_bins:
            continue
        edges = np.percentile(col, percentiles, method="averaged_inverted_cdf")
        for m, o in zip(mats, out, strict=True):
            x = m[:, j]
            o[:, j] = np.where(np.isnan(x), np.nan, np.searchsorted(edges, x, side="left"))
        cut.append(j)
    if not cut:
        return mats, []
    return out, cut


def drop_unsplittable(estimator: Any, Z_fit: Any, *others: Any) -> tuple[list[Any], int]:
    """Leave out the columns of ``Z_fit`` that ``estimator`` (a ``HistGradientBoostingClassifier``)
    can never split on: no missing value, and fewer than ``min_samples_leaf`` rows off the most
    frequent value. The same columns go from ``others``.

    Returns the matrices ([Z_fit, *others], column subsets where some were left out) and how many
    columns were left out. Only where leaving columns out cannot change the trees: dense float
    matrices, and no per-feature setting (categorical features, interaction or monotonic
    constraints) nor feature subsampling; anything else comes back unchanged.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    mats = [Z_fit, *others]
    if not isinstance(estimator, HistGradientBoostingClassifier):
        return mats, 0
    if not all(isinstance(m, np.ndarray) and m.ndim == 2 and m.dtype.kind == "f" for m in mats):
        return mats, 0
    p = estimator.get_params()
    cat = p["categorical_features"]
    if (cat is not None and not (isinstance(cat, str) and cat == "from_dtype")) or p["interaction_cst"] is not None \
            or p["monotonic_cst"] is not None or float(p.get("max_features", 1.0)) != 1.0:
        return mats, 0
    n, min_leaf = Z_fit.shape[0], int(p["min_samples_leaf"])
    keep = np.ones(Z_fit.shape[1], dtype=bool)
    for j in range(Z_fit.shape[1]):
        col = Z_fit[:, j]
        if np.isnan(col).any():
            continue
        _, counts = np.unique(col, return_counts=True)
        keep[j] = n - counts.max() >= min_leaf
    if keep.all() or not keep.any():
        return mats, 0
    return [m[:, keep] for m in mats], int((~keep).sum())


def describe(boosting: Boosting | None) -> str:
    """One line for provenance: the refit's boosting against the audited model's."""
    if boosting is None:
        return "as the audited model (not a boosting estimator with more iterations than the cap)"
    b = boosting
    capped = b.refit_iterations * b.refit_learning_rate < b.iterations * b.learning_rate - 1e-12
    return (f"{b.refit_iterations} boosting iterations at learning rate {b.refit_learning_rate:.3g} "
            f"(the audited {b.estimator}: {b.iterations} at {b.learning_rate:.3g}; "
            + ("rate capped at 1)" if capped else "iterations × rate kept)"))
