"""audit._refit: the rules that make a refit of the audited model's family cheaper."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from audit._refit import bin_wide_columns, describe, drop_unsplittable, shorter_boosting, split_pipeline


def _pipe(final):
    return Pipeline([("pre", ColumnTransformer([("cat", OneHotEncoder(), [0])], remainder="passthrough")),
                     ("clf", final)])


def test_shorter_boosting_keeps_iterations_times_rate():
    pipe = _pipe(HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=15))
    short, b = shorter_boosting(pipe, 20)
    clf = short.named_steps["clf"]
    assert (clf.max_iter, clf.learning_rate, clf.max_leaf_nodes) == (20, pytest.approx(0.5), 15)
    assert pipe.named_steps["clf"].max_iter == 100  # the audited estimator is left alone
    assert b is not None and (b.iterations, b.learning_rate, b.refit_iterations) == (100, 0.1, 20)
    assert describe(b) == ("20 boosting iterations at learning rate 0.5 (the audited "
                           "HistGradientBoostingClassifier: 100 at 0.1; iterations × rate kept)")


def test_shorter_boosting_caps_the_rate_at_one_and_leaves_the_rest_alone():
    short, b = shorter_boosting(GradientBoostingClassifier(n_estimators=300, learning_rate=0.1), 20)
    assert (short.n_estimators, short.learning_rate) == (20, 1.0)
    assert describe(b).endswith("rate capped at 1)")
    for est in (HistGradientBoostingClassifier(max_iter=15), LogisticRegression(C=3.0)):
        same, none = shorter_boosting(est, 20)
        assert none is None and same is not est and same.get_params() == est.get_params()
    assert describe(None).startswith("as the audited model")


def test_split_pipeline_clones_preprocessing_and_last_step():
    pipe = _pipe(LogisticRegression())
    pre, last = split_pipeline(pipe)
    assert isinstance(pre, Pipeline) and [n for n, _ in pre.steps] == ["pre"]
    assert isinstance(last, LogisticRegression) and last is not pipe.named_steps["clf"]
    pre1, alone = split_pipeline(LogisticRegression())
    assert pre1 is None and isinstance(alone, LogisticRegression)


def _wide_data(n, rng):
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 5, n).astype(float), rng.exponential(size=n)])
    X[rng.random(n) < 0.05, 0] = np.nan
    return X


def test_binning_wide_columns_once_gives_the_estimators_own_unweighted_trees():
    """Ground truth: HistGradientBoosting fitted without weights on the binned columns predicts
    exactly what it predicts when it bins the raw columns itself."""
    rng = np.random.default_rng(0)
    X, Xt = _wide_data(3000, rng), _wide_data(1000, rng) * 1.5
    y = (X[:, 2] + np.nan_to_num(X[:, 0]) + rng.normal(size=3000) > 1).astype(int)
    est = HistGradientBoostingClassifier(max_iter=30, random_state=0)
    (Zb, Ztb), cut = bin_wide_columns(est, X, Xt)
    assert cut == [0, 2]  # the 5-valued column is left as it is
    assert np.array_equal(np.isnan(Zb[:, 0]), np.isnan(X[:, 0]))  # missing stays missing
    assert len(np.unique(Zb[~np.isnan(Zb[:, 0]), 0])) <= 255
    with threadpool_limits(1):  # OpenMP on a busy machine is many times slower than one thread
        raw = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y).predict_proba(Xt)
        binned = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(Zb, y).predict_proba(Ztb)
    assert np.array_equal(raw, binned)


def test_binning_applies_only_where_it_is_exact():
    rng = np.random.default_rng(1)
    X = _wide_data(600, rng)
    for est in (LogisticRegression(), HistGradientBoostingClassifier(categorical_features=[1])):
        mats, cut = bin_wide_columns(est, X, X)
        assert cut == [] and mats[0] is X
    mats, cut = bin_wide_columns(HistGradientBoostingClassifier(), X[:, 1:2])  # nothing wide
    assert cut == [] and mats[0] is not None


def test_columns_no_split_can_use_are_left_out_with_the_same_trees():
    """Ground truth: with and without the left-out columns (rare one-hot categories: fewer than
    min_samples_leaf = 20 rows off the most frequent value) the fitted model predicts the same,
    sample weights or not; a column with missing values is kept whatever its counts."""
    rng = np.random.default_rng(2)
    n = 1500
    rare = np.zeros((n, 3))
    rare[rng.choice(n, 19, replace=False), 0] = 1.0  # 19 rows off the mode: never splittable
    rare[rng.choice(n, 20, replace=False), 1] = 1.0  # 20: splittable
    rare[:5, 2] = np.nan  # missing values: kept
    X = np.column_stack([rng.normal(size=(n, 2)), rare])
    y = (X[:, 0] + 0.5 * X[:, 1] + 2 * rare[:, 0] + rng.normal(size=n) > 0).astype(int)
    w = np.where(y == 1, 2.0, 0.7)
    est = HistGradientBoostingClassifier(max_iter=25, random_state=0)
    (Zf, Zp), dropped = drop_unsplittable(est, X, X[:300])
    assert dropped == 1 and Zf.shape[1] == 4 and np.array_equal(Zf[:, 2], X[:, 3])
    for weights in (None, w):
        with threadpool_limits(1):
            full = HistGradientBoostingClassifier(max_iter=25, random_state=0).fit(X, y, sample_weight=weights)
            kept = HistGradientBoostingClassifier(max_iter=25, random_state=0).fit(Zf, y, sample_weight=weights)
            assert np.array_equal(full.predict_proba(X[:300]), kept.predict_proba(Zp))
    for other in (LogisticRegression(), HistGradientBoostingClassifier(max_features=0.5),
                  HistGradientBoostingClassifier(monotonic_cst=[1, 0, 0, 0, 0])):
        mats, none = drop_unsplittable(other, X)
        assert none == 0 and mats[0] is X
