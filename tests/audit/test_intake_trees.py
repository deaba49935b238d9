"""Crafted tree files (child / feature index out of range) are refused on load, before any prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.tree import DecisionTreeClassifier

from audit._isolate import run_isolated
from audit._treecheck import validate_trees
from audit.exceptions import ModelError, UnsafeModelError
from audit.io import load_model, load_model_bytes
from tests.audit.intake_builders import (
    FEATURES3,
    audit_cli_args,
    edit_skops_array,
    edit_skops_json,
    run_cli,
    skops_bytes,
    small_frame,
    write_data,
)


def _fit(est):
    df = small_frame()
    return est.fit(df[FEATURES3], df["y"])


@pytest.fixture(scope="module")
def fitted():
    return {
        "dt": _fit(DecisionTreeClassifier(max_depth=3, random_state=0)),
        "rf": _fit(RandomForestClassifier(4, max_depth=3, random_state=0)),
        "hgb": _fit(HistGradientBoostingClassifier(max_iter=3, random_state=0)),
        "gb": _fit(GradientBoostingClassifier(n_estimators=3, max_depth=2, random_state=0)),
    }


def _set_left(a):
    a["left_child"][0] = 10**12


def _set_feature(a):
    a["feature"][0] = 10**9


def _hgb_left(a):
    a["left"][0] = 10**9


def _hgb_feature(a):
    a["feature_idx"][0] = 10**9


# (model key, class in the schema, array key, edit, owner in the message, reason)
CRAFTED = {
    "dt-child": ("dt", "Tree", "nodes", _set_left, "DecisionTreeClassifier.tree_ (DecisionTreeClassifier)",
                 "node 0: left child 1000000000000 is outside 1..{last}"),
    "dt-feature": ("dt", "Tree", "nodes", _set_feature, "DecisionTreeClassifier.tree_ (DecisionTreeClassifier)",
                   "node 0: feature 1000000000 is outside 0..2"),
    "rf-child": ("rf", "Tree", "nodes", _set_left,
                 "RandomForestClassifier.estimators_[0].tree_ (DecisionTreeClassifier)",
                 "node 0: left child 1000000000000 is outside 1..{last}"),
    "rf-feature": ("rf", "Tree", "nodes", _set_feature,
                   "RandomForestClassifier.estimators_[0].tree_ (DecisionTreeClassifier)",
                   "node 0: feature 1000000000 is outside 0..2"),
    "hgb-child": ("hgb", "TreePredictor", "nodes", _hgb_left,
                  "HistGradientBoostingClassifier._predictors[0][0] (HistGradientBoostingClassifier)",
                  "node 0: left child 1000000000 is outside 1..{last}"),
    "hgb-feature": ("hgb", "TreePredictor", "nodes", _hgb_feature,
                    "HistGradientBoostingClassifier._predictors[0][0] (HistGradientBoostingClassifier)",
                    "node 0: feature 1000000000 is outside 0..2"),
}


def _first_tree_nodes(est) -> int:
    if hasattr(est, "tree_"):
        return est.tree_.node_count
    if hasattr(est, "estimators_"):
        return est.estimators_[0].tree_.node_count
    return len(est._predictors[0][0].nodes)


def _crafted(fitted, key: str) -> tuple[bytes, str]:
    model, cls, array, edit, where, reason = CRAFTED[key]
    data = edit_skops_array(skops_bytes(fitted[model]), cls, array, edit)
    return data, f"{where}: {reason.format(last=_first_tree_nodes(fitted[model]) - 1)}"


@pytest.mark.parametrize("key", sorted(CRAFTED))
def test_crafted_tree_refused_by_cli_with_exit_2(fitted, tmp_path, key):
    data, detail = _crafted(fitted, key)
    model = tmp_path / f"{key}.skops"
    model.write_bytes(data)
    rc, _out, err, _ = run_cli(audit_cli_args(model, write_data(tmp_path)))
    assert rc == 2, err
    assert err.strip().splitlines() == [
        f"trustaudit: error: model file {model} has a malformed tree and was refused: {detail}"
    ]


@pytest.mark.parametrize("key", ["dt-child", "rf-feature", "hgb-child", "hgb-feature"])
def test_without_validation_the_crafted_tree_crashes_the_process(fitted, key):
    """The check is not decorative: with validation skipped, predict_proba kills the process."""
    import skops.io as sio

    data, _ = _crafted(fitted, key)
    est = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    X = small_frame(50)[FEATURES3]

    def predict():
        return est.predict_proba(X)

    with pytest.raises(ModelError, match=r"^the model crashed the inference process \(SIG(SEGV|BUS)\)$"):
        run_isolated(predict, timeout=120)


def test_valid_trees_pass_and_are_counted(fitted):
    assert validate_trees(fitted["dt"], "m") == 1
    assert validate_trees(fitted["rf"], "m") == 4
    assert validate_trees(fitted["hgb"], "m") == 3
    assert validate_trees(fitted["gb"], "m") == 3
    for key in ("dt", "rf", "hgb", "gb"):
        loaded = load_model_bytes(skops_bytes(fitted[key]), name="m.skops")
        X = small_frame(40)[FEATURES3]
        np.testing.assert_allclose(loaded.adapter.predict_proba(X), fitted[key].predict_proba(X))


def test_pipeline_and_categorical_hgb_trees_found_and_valid(tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = small_frame()
    pipe = Pipeline([("prep", ColumnTransformer([("oh", OneHotEncoder(), ["sex"])], remainder="passthrough")),
                     ("rf", RandomForestClassifier(3, max_depth=2, random_state=0))])
    pipe.fit(df[["sex", *FEATURES3]], df["y"])
    assert validate_trees(pipe, "m") == 3
    cat = HistGradientBoostingClassifier(max_iter=3, categorical_features="from_dtype", random_state=0)
    Xc = df[["sex", *FEATURES3]].astype({"sex": "category"})
    cat.fit(Xc, df["y"])
    assert validate_trees(cat, "m") == 3
    p = tmp_path / "cat.skops"
    p.write_bytes(skops_bytes(cat))
    # its preprocessor keeps a functools.partial, which is (rightly) untrusted until the user says so
    loaded = load_model(p, trusted_types=["functools.partial", "sklearn.utils.validation.check_array"])
    np.testing.assert_allclose(loaded.adapter.predict_proba(Xc), cat.predict_proba(Xc))


def _refusal(data: bytes) -> str:
    with pytest.raises(UnsafeModelError) as exc:
        load_model_bytes(data, name="m.skops")
    return str(exc.value).split("refused: ", 1)[1]


def test_structural_defects_each_named(fitted):
    dt = skops_bytes(fitted["dt"])
    n = fitted["dt"].tree_.node_count
    where = "DecisionTreeClassifier.tree_ (DecisionTreeClassifier)"

    def cycle(a):  # node 1's left child points back to node 1 (a loop, and node 1 gets two parents)
        i = int(np.flatnonzero(a["left_child"] > 0)[1])
        a["left_child"][i] = i

    def share(a):  # both children of the root are the same node
        a["right_child"][0] = a["left_child"][0]

    def half_leaf(a):
        a["left_child"][0] = -1

    def nan_threshold(a):
        a["threshold"][0] = np.nan

    def negative_feature(a):
        a["feature"][0] = -5

    assert _refusal(edit_skops_array(dt, "Tree", "nodes", cycle)).startswith(f"{where}: node ")
    assert _refusal(edit_skops_array(dt, "Tree", "nodes", share)) == (
        f"{where}: node {fitted['dt'].tree_.children_left[0]} is the child of 2 nodes")
    assert _refusal(edit_skops_array(dt, "Tree", "nodes", half_leaf)) == (
        f"{where}: node 0 has children -1 and {fitted['dt'].tree_.children_right[0]}: a leaf has -1 on both sides")
    assert _refusal(edit_skops_array(dt, "Tree", "nodes", nan_threshold)) == f"{where}: node 0: threshold is NaN"
    assert _refusal(edit_skops_array(dt, "Tree", "nodes", negative_feature)) == (
        f"{where}: node 0: feature -5 is outside 0..2")
    assert _refusal(edit_skops_array(dt, "Tree", "values", lambda a: a.__setitem__((1, 0, 0), np.inf))) == (
        f"{where}: node 1: value is not finite")
    # node_count larger than the node records: scikit-learn clamps it on load; checked anyway,
    # before any array is read (the arrays are views of node_count records)
    clamped = load_model_bytes(edit_skops_json(dt, "Tree", "node_count", str(10**9)), name="m.skops")
    assert clamped.adapter.estimator.tree_.node_count == n
    from types import SimpleNamespace

    from audit._treecheck import _BadTreeError, _check_tree

    with pytest.raises(_BadTreeError, match=f"^node_count 1000000000 does not fit its {n} node records$"):
        _check_tree(SimpleNamespace(node_count=10**9, capacity=n), None)
    assert _refusal(edit_skops_json(dt, "Tree", "max_depth", "0")) == (
        f"{where}: max_depth 0 is below the depth of its nodes (3)")


def test_cycle_without_sharing_is_unreachable(fitted):
    from audit._treecheck import _BadTreeError, _structure

    # 0 -> (1, 2); 3 <-> 4 form a loop no path from the root reaches, each with one parent
    left = np.array([1, -1, -1, 4, 3])
    right = np.array([2, -1, -1, 4, 3])
    internal = left != -1
    with pytest.raises(_BadTreeError, match="is the child of 2 nodes"):
        _structure(left, right, internal)
    left = np.array([1, -1, -1, 4, 3, -1, -1])
    right = np.array([2, -1, -1, 5, 6, -1, -1])
    with pytest.raises(_BadTreeError, match=r"^node 3 is not reachable from the root \(its parents form a cycle\)$"):
        _structure(left, right, left != -1)


def test_hgb_categorical_split_on_numeric_feature_refused(fitted):
    import copy

    def make_categorical(a):
        a["is_categorical"][0] = 1

    data = edit_skops_array(skops_bytes(fitted["hgb"]), "TreePredictor", "nodes", make_categorical)
    where = "HistGradientBoostingClassifier._predictors[0][0] (HistGradientBoostingClassifier)"
    assert _refusal(data) == f"{where}: node 0: a categorical split, but the predictor has no category bitsets"
    # with a bitset present, the split is still on a feature the bin mapper calls numeric: the
    # compiled code would index the (empty) table of known categories
    hgb = copy.deepcopy(fitted["hgb"])
    pred = hgb._predictors[0][0]
    pred.nodes["is_categorical"][0] = 1
    pred.raw_left_cat_bitsets = np.zeros((1, 8), dtype=np.uint32)
    pred.binned_left_cat_bitsets = np.zeros((1, 8), dtype=np.uint32)
    f = int(pred.nodes["feature_idx"][0])
    with pytest.raises(UnsafeModelError) as exc:
        validate_trees(hgb, "m")
    assert str(exc.value).endswith(f"{where}: node 0: a categorical split on feature {f}, which is not categorical")


def test_gradient_boosting_stage_shape_checked(fitted):
    import copy

    gb = copy.deepcopy(fitted["gb"])
    gb.estimators_ = np.concatenate([gb.estimators_, gb.estimators_], axis=1)
    with pytest.raises(UnsafeModelError, match="estimators_ has 2 trees per iteration, expected 1"):
        validate_trees(gb, "m")


def test_refusal_through_the_python_loader_names_the_file(fitted, tmp_path):
    data, detail = _crafted(fitted, "rf-child")
    p = Path(tmp_path) / "rf.skops"
    p.write_bytes(data)
    with pytest.raises(UnsafeModelError) as exc:
        load_model(p)
    assert str(exc.value) == f"model file {p} has a malformed tree and was refused: {detail}"
