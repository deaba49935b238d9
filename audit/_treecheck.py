"""Validate the tree structures of a loaded model before anything predicts with it.

scikit-learn's compiled tree code (``sklearn.tree._tree.Tree``, HistGradientBoosting's
``TreePredictor``, GradientBoosting's ``predict_stages``) trusts its node arrays: a child or feature
index out of range reads (or writes) outside the arrays and crashes the process. skops refuses
these types by default; trustaudit trusts them (:data:`audit.io.DEFAULT_TRUSTED_TYPES`) because it
validates them here, right after loading and before any prediction:

* ``Tree`` (inside DecisionTree*, ExtraTree*, RandomForest*, ExtraTrees*, GradientBoosting*...):
  ``node_count`` within the node records; each node a leaf on both sides (-1, -1) or internal
  with both children in ``1..node_count-1``; node 0 the only root, every other node the child of
  exactly one node and reachable from the root (no cycle, no sharing); ``max_depth`` not below
  the depth of the nodes; internal nodes' features in ``0..n_features-1`` and thresholds not NaN
  (+inf is what scikit-learn writes when every non-missing value goes left); values finite;
  ``n_features``, ``n_outputs`` and ``n_classes`` equal to the estimator's.
* ``TreePredictor`` (HistGradientBoosting*): the node record dtype; ``is_leaf`` 0 or 1; internal
  nodes' children in ``1..n-1`` with the same one-root, one-parent, reachable rule; features in
  ``0..n_features_in_-1``; numeric thresholds not NaN; categorical splits only on features the
  bin mapper marks categorical, with a bitset row that exists; bitsets of shape (k, 8) uint32;
  the bin mapper's per-feature arrays of length ``n_features_in_`` and categories in 0..255.
* GradientBoosting's ``estimators_``: a 2-D array of regression trees, one column per tree of an
  iteration (the compiled ``predict_stages`` writes column k of the output for column k).

The object graph is walked generically (Pipelines, ColumnTransformers, ensembles, calibrated
classifiers, any attribute), so a tree nested anywhere is found.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from audit.exceptions import UnsafeModelError

__all__ = ["MSG_BAD_TREE", "validate_trees"]

MSG_BAD_TREE = "model file {name} has a malformed tree and was refused: {where}: {reason}"

_MAX_OBJECTS = 2_000_000
_TREE_LEAF = -1


class _BadTreeError(Exception):
    pass


def validate_trees(model: Any, name: str) -> int:
    """Raise :class:`UnsafeModelError` for the first malformed tree; return how many were checked."""
    checked = 0
    seen: set[int] = set()
    stack: list[tuple[Any, str, Any]] = [(model, type(model).__name__, None)]
    while stack:
        obj, path, owner = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if len(seen) > _MAX_OBJECTS:
            raise UnsafeModelError(f"model file {name} holds more than {_MAX_OBJECTS} objects; refused")
        try:
            kind = _kind(obj)
            if kind == "tree":
                _check_tree(obj, owner)
                checked += 1
                continue
            if kind == "predictor":
                _check_predictor(obj, owner)
                checked += 1
                continue
            if kind == "estimator":
                _check_estimator(obj)
        except _BadTreeError as bad:
            where = path if kind == "estimator" else f"{path} ({type(owner).__name__ if owner is not None else '?'})"
            raise UnsafeModelError(MSG_BAD_TREE.format(name=name, where=where, reason=bad)) from None
        for child_path, child in _children(obj, path):
            child_owner = obj if kind == "estimator" else owner
            stack.append((child, child_path, child_owner))
    return checked


def _kind(obj: Any) -> str:
    t = type(obj)
    mod = getattr(t, "__module__", "") or ""
    if mod == "sklearn.tree._tree" and t.__name__ == "Tree":
        return "tree"
    if mod.endswith("_hist_gradient_boosting.predictor") and t.__name__ == "TreePredictor":
        return "predictor"
    if mod.startswith("sklearn.") and hasattr(obj, "get_params") and hasattr(obj, "__dict__"):
        return "estimator"
    return "other"


def _children(obj: Any, path: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    if isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return out
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            for idx in np.ndindex(obj.shape):
                out.append((f"{path}[{', '.join(map(str, idx))}]", obj[idx]))
        return out
    if isinstance(obj, dict):
        return [(f"{path}[{k!r}]", v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        return [(f"{path}.{k}", v) for k, v in d.items()]
    return out


# --- estimators --------------------------------------------------------------------------------


def _n_features(owner: Any) -> int | None:
    n = getattr(owner, "n_features_in_", None) if owner is not None else None
    return int(n) if isinstance(n, (int, np.integer)) else None


def _check_estimator(est: Any) -> None:
    from sklearn.ensemble import BaseEnsemble

    n = _n_features(est)
    subs = getattr(est, "estimators_", None)
    if isinstance(est, BaseEnsemble) and subs is not None and n is not None and hasattr(est, "n_features_in_"):
        flat = subs.ravel() if isinstance(subs, np.ndarray) else list(subs) if isinstance(subs, list) else []
        uses_all_features = getattr(est, "estimators_features_", None) is None
        for i, sub in enumerate(flat):
            m = _n_features(sub)
            if uses_all_features and m is not None and m != n:
                raise _BadTreeError(f"estimators_[{i}] has n_features_in_ {m}, the ensemble {n}")
    if type(est).__name__.startswith("GradientBoosting") and isinstance(subs, np.ndarray):
        if subs.ndim != 2:
            raise _BadTreeError(f"estimators_ has {subs.ndim} dimensions, expected 2")
        k = getattr(est, "n_trees_per_iteration_", None)
        if k is None:
            nc = getattr(est, "n_classes_", 1)
            k = 1 if int(nc) <= 2 else int(nc)
        if subs.shape[1] != int(k):
            raise _BadTreeError(f"estimators_ has {subs.shape[1]} trees per iteration, expected {int(k)}")
        for idx in np.ndindex(subs.shape):
            if type(subs[idx]).__name__ != "DecisionTreeRegressor":
                raise _BadTreeError(f"estimators_[{idx[0]}, {idx[1]}] is a {type(subs[idx]).__name__}, "
                           "expected DecisionTreeRegressor")
            tree = getattr(subs[idx], "tree_", None)
            if tree is None or _kind(tree) != "tree":
                raise _BadTreeError(f"estimators_[{idx[0]}, {idx[1]}] has no fitted tree")
            if tree.n_outputs != 1 or tree.max_n_classes != 1:
                raise _BadTreeError(f"estimators_[{idx[0]}, {idx[1]}] is not a single-output regression tree")
    mapper = getattr(est, "_bin_mapper", None)
    if mapper is not None and hasattr(est, "_predictors"):
        _check_bin_mapper(mapper, n)


# --- sklearn.tree._tree.Tree --------------------------------------------------------------------


def _structure(left: np.ndarray, right: np.ndarray, internal: np.ndarray) -> int:
    """Check one-root, one-parent, reachability; return the depth. Children already in range."""
    n = left.shape[0]
    idx = np.flatnonzero(internal)
    kids = np.concatenate([left[idx], right[idx]])
    counts = np.bincount(kids, minlength=n) if kids.size else np.zeros(n, dtype=np.int64)
    if counts[0]:
        raise _BadTreeError("node 0 (the root) is a child of another node")
    many = np.flatnonzero(counts[1:] > 1)
    if many.size:
        j = int(many[0]) + 1
        raise _BadTreeError(f"node {j} is the child of {int(counts[j])} nodes")
    orphans = np.flatnonzero(counts[1:] == 0)
    if orphans.size:
        raise _BadTreeError(f"node {int(orphans[0]) + 1} is not reachable from the root")
    parent = np.zeros(n, dtype=np.int64)
    parent[left[idx]] = idx
    parent[right[idx]] = idx
    dist = np.ones(n, dtype=np.int64)
    dist[0] = 0
    anc = parent
    for _ in range(max(1, math.ceil(math.log2(max(n, 2)))) + 1):
        dist = dist + dist[anc]
        anc = anc[anc]
    lost = np.flatnonzero(anc != 0)
    if lost.size:
        raise _BadTreeError(f"node {int(lost[0])} is not reachable from the root (its parents form a cycle)")
    return int(dist.max())


def _check_tree(tree: Any, owner: Any) -> None:
    n = int(tree.node_count)
    cap = int(tree.capacity)
    if n < 1 or n > cap:
        raise _BadTreeError(f"node_count {n} does not fit its {cap} node records")
    nf = int(tree.n_features)
    expected_nf = _n_features(owner)
    if expected_nf is not None and nf != expected_nf:
        raise _BadTreeError(f"the tree has n_features {nf}, the estimator {expected_nf}")
    if nf < 1:
        raise _BadTreeError(f"n_features is {nf}")
    n_out = int(tree.n_outputs)
    if n_out < 1:
        raise _BadTreeError(f"n_outputs is {n_out}")
    owner_out = getattr(owner, "n_outputs_", None)
    if owner_out is not None and int(owner_out) != n_out:
        raise _BadTreeError(f"the tree has {n_out} outputs, the estimator {int(owner_out)}")
    n_classes = np.asarray(tree.n_classes, dtype=np.int64)
    if n_classes.shape != (n_out,) or np.any(n_classes < 1) or int(n_classes.max()) != int(tree.max_n_classes):
        raise _BadTreeError(f"n_classes {n_classes.tolist()} is inconsistent with {n_out} output(s) and "
                   f"max_n_classes {int(tree.max_n_classes)}")
    owner_classes = getattr(owner, "n_classes_", None)
    if owner_classes is not None and hasattr(owner, "classes_"):
        oc = np.atleast_1d(np.asarray(owner_classes, dtype=np.int64))
        if oc.tolist() != n_classes.tolist():
            raise _BadTreeError(f"the tree has n_classes {n_classes.tolist()}, the estimator {oc.tolist()}")
    left = np.asarray(tree.children_left, dtype=np.int64)
    right = np.asarray(tree.children_right, dtype=np.int64)
    leaf_l, leaf_r = left == _TREE_LEAF, right == _TREE_LEAF
    mixed = np.flatnonzero(leaf_l != leaf_r)
    if mixed.size:
        i = int(mixed[0])
        raise _BadTreeError(f"node {i} has children {int(left[i])} and {int(right[i])}: a leaf has -1 on both sides")
    internal = ~leaf_l
    for arr, side in ((left, "left"), (right, "right")):
        bad = np.flatnonzero(internal & ((arr < 1) | (arr >= n)))
        if bad.size:
            i = int(bad[0])
            raise _BadTreeError(f"node {i}: {side} child {int(arr[i])} is outside 1..{n - 1}")
    depth = _structure(left, right, internal)
    if int(tree.max_depth) < depth:
        raise _BadTreeError(f"max_depth {int(tree.max_depth)} is below the depth of its nodes ({depth})")
    feature = np.asarray(tree.feature, dtype=np.int64)
    bad = np.flatnonzero(internal & ((feature < 0) | (feature >= nf)))
    if bad.size:
        i = int(bad[0])
        raise _BadTreeError(f"node {i}: feature {int(feature[i])} is outside 0..{nf - 1}")
    threshold = np.asarray(tree.threshold, dtype=np.float64)
    bad = np.flatnonzero(internal & np.isnan(threshold))
    if bad.size:
        raise _BadTreeError(f"node {int(bad[0])}: threshold is NaN")
    value = np.asarray(tree.value)
    if value.shape != (n, n_out, int(tree.max_n_classes)):
        raise _BadTreeError(f"value array has shape {value.shape}, expected {(n, n_out, int(tree.max_n_classes))}")
    finite = np.isfinite(value).reshape(n, -1).all(axis=1)
    if not finite.all():
        raise _BadTreeError(f"node {int(np.flatnonzero(~finite)[0])}: value is not finite")


# --- HistGradientBoosting ---------------------------------------------------------------------


def _check_bin_mapper(mapper: Any, n_features: int | None) -> None:
    is_cat = getattr(mapper, "is_categorical_", None)
    thresholds = getattr(mapper, "bin_thresholds_", None)
    if n_features is None:
        return
    if is_cat is not None:
        is_cat = np.asarray(is_cat)
        if is_cat.shape != (n_features,) or is_cat.dtype.kind not in "bui":
            raise _BadTreeError(f"_bin_mapper.is_categorical_ has shape {is_cat.shape}, expected ({n_features},)")
    if thresholds is not None:
        if not isinstance(thresholds, (list, tuple)) or len(thresholds) != n_features:
            got = len(thresholds) if isinstance(thresholds, (list, tuple)) else type(thresholds).__name__
            raise _BadTreeError(f"_bin_mapper.bin_thresholds_ has {got} entries, expected {n_features}")
        for f, t in enumerate(thresholds):
            a = np.asarray(t)
            if a.ndim != 1 or a.dtype.kind not in "fiu":
                raise _BadTreeError(f"_bin_mapper.bin_thresholds_[{f}] is not a 1-D numeric array")
            if is_cat is not None and bool(is_cat[f]):
                if not np.all((a >= 0) & (a <= 255) & (a == np.floor(a))):
                    raise _BadTreeError(f"_bin_mapper.bin_thresholds_[{f}] holds categories outside 0..255")
    nb = getattr(mapper, "n_bins_non_missing_", None)
    if nb is not None and np.asarray(nb).shape != (n_features,):
        raise _BadTreeError(f"_bin_mapper.n_bins_non_missing_ has shape {np.asarray(nb).shape}, expected ({n_features},)")
    missing = getattr(mapper, "missing_values_bin_idx_", None)
    if missing is not None and not 0 <= int(missing) <= 255:
        raise _BadTreeError(f"_bin_mapper.missing_values_bin_idx_ {int(missing)} is outside 0..255")


def _check_predictor(pred: Any, owner: Any) -> None:
    from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

    nodes = getattr(pred, "nodes", None)
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1:
        raise _BadTreeError("nodes is not a 1-D array of scikit-learn's predictor records")
    n = nodes.shape[0]
    if n < 1:
        raise _BadTreeError("the predictor has no nodes")
    for attr in ("raw_left_cat_bitsets", "binned_left_cat_bitsets"):
        b = getattr(pred, attr, None)
        if not isinstance(b, np.ndarray) or b.ndim != 2 or b.shape[1] != 8 or b.dtype != np.uint32:
            shape = getattr(b, "shape", None)
            raise _BadTreeError(f"{attr} has shape {shape}, expected (k, 8) uint32")
    n_bitsets = min(pred.raw_left_cat_bitsets.shape[0], pred.binned_left_cat_bitsets.shape[0])
    is_leaf = nodes["is_leaf"].astype(np.int64)
    bad = np.flatnonzero((is_leaf != 0) & (is_leaf != 1))
    if bad.size:
        raise _BadTreeError(f"node {int(bad[0])}: is_leaf is {int(is_leaf[bad[0]])}")
    internal = is_leaf == 0
    left = nodes["left"].astype(np.int64)
    right = nodes["right"].astype(np.int64)
    for arr, side in ((left, "left"), (right, "right")):
        bad = np.flatnonzero(internal & ((arr < 1) | (arr >= n)))
        if bad.size:
            i = int(bad[0])
            raise _BadTreeError(f"node {i}: {side} child {int(arr[i])} is outside 1..{n - 1}")
    _structure(left, right, internal)
    nf = _n_features(owner)
    feature = nodes["feature_idx"].astype(np.int64)
    if nf is not None:
        bad = np.flatnonzero(internal & (feature >= nf))
        if bad.size:
            i = int(bad[0])
            raise _BadTreeError(f"node {i}: feature {int(feature[i])} is outside 0..{nf - 1}")
    is_cat = nodes["is_categorical"].astype(np.int64)
    numeric = internal & (is_cat == 0)
    bad = np.flatnonzero(numeric & np.isnan(nodes["num_threshold"]))
    if bad.size:
        raise _BadTreeError(f"node {int(bad[0])}: threshold is NaN")
    cat = internal & (is_cat != 0)
    if cat.any():
        bad = np.flatnonzero(cat & (nodes["bitset_idx"].astype(np.int64) >= n_bitsets))
        if bad.size:
            i = int(bad[0])
            if n_bitsets == 0:
                raise _BadTreeError(f"node {i}: a categorical split, but the predictor has no category bitsets")
            raise _BadTreeError(f"node {i}: category bitset {int(nodes['bitset_idx'][i])} is outside "
                                f"0..{n_bitsets - 1}")
        mapper = getattr(owner, "_bin_mapper", None)
        mapper_cat = None if mapper is None else getattr(mapper, "is_categorical_", None)
        flags = np.zeros(0, dtype=bool) if mapper_cat is None else np.asarray(mapper_cat).astype(bool)
        for i in np.flatnonzero(cat):
            f = int(feature[i])
            if f >= flags.shape[0] or not flags[f]:
                raise _BadTreeError(f"node {int(i)}: a categorical split on feature {f}, which is not categorical")
    values = nodes["value"]
    bad = np.flatnonzero(~internal & ~np.isfinite(values))
    if bad.size:
        raise _BadTreeError(f"node {int(bad[0])}: value is not finite")
