"""The compatibility modules (audit._compat): each fast path gives the results of its public
fallback, the off switch and the version gate select the fallback, and nothing changes at import."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from audit._compat import _gate
from audit._compat import opacus as compat_opacus
from audit._compat import shap as compat_shap
from audit._compat import sklearn as compat_sklearn
from audit.datasets import make_lending_data

LEND = ["age_group", "region", "education", "years_experience", "marketing_segment", "income", "debt_ratio"]


# --- the gate -----------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "inside"), [
    ("0.51.0", True), ("0.51.7", True), ("0.51", True), ("0.52.0", False), ("0.50.9", False),
    ("0.52.0rc1", False), ("1.0", False), ("", False), (None, False), ("not a version", False),
])
def test_version_range_is_lower_inclusive_upper_exclusive(version, inside):
    assert _gate.in_range(version, ("0.51", "0.52")) is inside


def test_local_version_labels_compare_by_release():
    assert _gate.in_range("2.13.0+cpu", ("2.13", "2.14"))


def test_an_absent_distribution_has_no_version_and_no_fast_path():
    assert _gate.installed_version("trustaudit-no-such-distribution") is None
    assert not _gate.enabled("nothing", None, ("0", "99"))


def test_every_switch_is_named_after_its_package():
    assert [_gate.env_var(p) for p in ("shap", "sklearn", "opacus", "flwr")] == [
        "TRUSTAUDIT_COMPAT_SHAP", "TRUSTAUDIT_COMPAT_SKLEARN", "TRUSTAUDIT_COMPAT_OPACUS", "TRUSTAUDIT_COMPAT_FLWR"]


@pytest.mark.parametrize("module", ["shap", "sklearn", "opacus"])
def test_the_tested_versions_are_the_installed_ones(module):
    """The pinned dependencies are inside each module's range (else the fast paths are off)."""
    import importlib

    mod = importlib.import_module(f"audit._compat.{module}")
    assert mod.enabled() or _gate.env_var(module) in os.environ, mod.installed_version()


@pytest.mark.parametrize("value", ["0", "false", "OFF", " no "])
def test_switch_off_values(monkeypatch, value):
    monkeypatch.setenv("TRUSTAUDIT_COMPAT_SHAP", value)
    assert not _gate.switch_on("shap") and not compat_shap.enabled()


@pytest.mark.parametrize("value", [None, "1", "yes", ""])
def test_switch_on_values(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("TRUSTAUDIT_COMPAT_SHAP", raising=False)
    else:
        monkeypatch.setenv("TRUSTAUDIT_COMPAT_SHAP", value)
    assert _gate.switch_on("shap")


def test_importing_the_compat_modules_changes_nothing():
    """No patch, thread count or environment change at import (a fresh interpreter)."""
    code = (
        "import os, torch\n"
        "from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState as S\n"
        "n = torch.get_num_threads(); env = dict(os.environ); orig = S.get_message_ins\n"
        "import audit._compat, audit._compat.shap, audit._compat.sklearn, audit._compat.opacus\n"
        "import federated._compat, federated._compat.flwr, federated._torch\n"
        "assert torch.get_num_threads() == n and dict(os.environ) == env\n"
        "assert S.get_message_ins is orig\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


# --- shap: forked TreeSHAP ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tree_model():
    data = make_lending_data(3000, 0, 1200, seed=17)
    cat = ["age_group", "region"]
    num = [c for c in LEND if c not in cat]
    model = Pipeline([
        ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat),
                                   ("num", "passthrough", num)])),
        ("clf", HistGradientBoostingClassifier(max_iter=30, random_state=0)),
    ]).fit(data.train[LEND], data.train["approved"])
    Z = np.asarray(model[:-1].transform(data.test[LEND].head(600)), dtype=np.float64)
    return model[-1], Z, np.asarray(model[:-1].transform(data.train[LEND].head(100)), dtype=np.float64)


def _public_tree_shap(final, perturbation, background, Z):
    import shap

    explainer = shap.TreeExplainer(final, data=background, feature_perturbation=perturbation)
    return np.asarray(explainer.shap_values(Z, check_additivity=False)), explainer.expected_value


needs_fork = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                                reason="no fork on this platform (the loky path is used there)")


@needs_fork
@pytest.mark.parametrize("perturbation", ["tree_path_dependent", "interventional"])
def test_forked_treeshap_equals_the_public_call_bit_for_bit(tree_model, monkeypatch, perturbation):
    final, Z, bg = tree_model
    bg = bg if perturbation == "interventional" else None
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_SHAP", raising=False)
    want, want_base = _public_tree_shap(final, perturbation, bg, Z)
    got, base, backend = compat_shap.tree_shap_values(final, perturbation, bg, Z, 3)
    assert backend == "fork"
    assert np.array_equal(want, got) and np.array_equal(np.asarray(want_base), np.asarray(base))


def test_off_switch_and_version_gate_use_the_public_call_in_process(tree_model, monkeypatch):
    final, Z, _ = tree_model
    want, want_base = _public_tree_shap(final, "tree_path_dependent", None, Z)
    monkeypatch.setenv("TRUSTAUDIT_COMPAT_SHAP", "0")
    got, base, backend = compat_shap.tree_shap_values(final, "tree_path_dependent", None, Z, 2)
    assert backend == "serial" and np.array_equal(want, got) and np.array_equal(want_base, base)

    monkeypatch.delenv("TRUSTAUDIT_COMPAT_SHAP")
    monkeypatch.setattr(compat_shap, "installed_version", lambda: "0.52.0")
    assert not compat_shap.enabled()
    got, _, backend = compat_shap.tree_shap_values(final, "tree_path_dependent", None, Z, 2)
    assert backend == "serial" and np.array_equal(want, got)


def test_one_job_is_the_public_call(tree_model, monkeypatch):
    final, Z, _ = tree_model
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_SHAP", raising=False)
    want, _ = _public_tree_shap(final, "tree_path_dependent", None, Z)
    got, _, backend = compat_shap.tree_shap_values(final, "tree_path_dependent", None, Z, 1)
    assert backend == "serial" and np.array_equal(want, got)


@needs_fork
def test_a_failed_child_has_its_rows_recomputed_in_process(tree_model, monkeypatch):
    final, Z, _ = tree_model
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_SHAP", raising=False)
    want, _ = _public_tree_shap(final, "tree_path_dependent", None, Z)

    def broken_child(explainer, rows, conn):
        raise SystemExit(3)  # dies without answering

    monkeypatch.setattr(compat_shap, "_shap_in_child", broken_child)
    got, _, backend = compat_shap.tree_shap_values(final, "tree_path_dependent", None, Z, 2)
    assert backend.startswith("fork (a child died") and np.array_equal(want, got)


def test_the_shap_check_reports_one_job_when_the_switch_is_off(monkeypatch):
    """Through the check: with the switch off the parameters say serial and one job, and the
    attributions equal the forked run's."""
    from audit.checks._explain_methods import outcome
    from tests.audit.test_explain import ctx_for, onehot_pipeline

    data = make_lending_data(1500, 0, 600, seed=3)
    model = onehot_pipeline(HistGradientBoostingClassifier(max_iter=20, random_state=0))
    model.fit(data.train[LEND], data.train["approved"])
    monkeypatch.setattr("audit.checks._explain_methods._free_cores", lambda wanted: wanted)
    kw = dict(target="approved", features=LEND, policy={"parallel_min_rows": 100, "n_jobs": 2})
    monkeypatch.setenv("TRUSTAUDIT_COMPAT_SHAP", "0")
    off = outcome(ctx_for(model, data.test, data.train, **kw), "shap").get()
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_SHAP")
    on = outcome(ctx_for(model, data.test, data.train, **kw), "shap").get()
    assert off.params["parallel_backend"] == "serial" and off.params["n_jobs"] == 1
    if "fork" in multiprocessing.get_all_start_methods():
        assert on.params["parallel_backend"] == "fork" and on.params["n_jobs"] == 2
    assert np.array_equal(off.local, on.local)


# --- sklearn: ColumnTransformer input indices ---------------------------------------------


def _frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "age": rng.normal(40, 10, 60), "city": rng.choice(["a", "b", "c"], 60),
        "income": rng.normal(3, 1, 60), "sex": rng.choice(["f", "m"], 60),
        "hours": rng.integers(10, 60, 60), "score": rng.normal(0, 1, 60),
    })


def _column_transformers():
    oh = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    mask = np.array([True, False, True, False, False, True])
    return {
        "names, remainder passthrough": ColumnTransformer(
            [("cat", oh, ["city", "sex"]), ("num", StandardScaler(), ["age", "income"])], remainder="passthrough"),
        "ints, drop, remainder passthrough": ColumnTransformer(
            [("num", StandardScaler(), [0, 2]), ("gone", "drop", [3]), ("cat", oh, [1])], remainder="passthrough"),
        "negative ints": ColumnTransformer([("num", StandardScaler(), [-1, -2])], remainder="passthrough"),
        "integer slice": ColumnTransformer([("first", "passthrough", slice(0, 1)),
                                            ("cat", oh, slice(1, 2))], remainder="drop"),
        "label slice includes its stop": ColumnTransformer(
            [("mid", oh, slice("city", "city")), ("tail", StandardScaler(), slice("hours", None))],
            remainder="passthrough"),
        "boolean mask array": ColumnTransformer([("num", StandardScaler(), mask)], remainder="drop"),
        "boolean mask list": ColumnTransformer([("num", StandardScaler(), mask.tolist())], remainder="drop"),
        "column selectors": ColumnTransformer(
            [("num", StandardScaler(), make_column_selector(dtype_include="number")),
             ("cat", oh, make_column_selector(dtype_exclude="number"))]),
        "selector by pattern, remainder transformer": ColumnTransformer(
            [("s", StandardScaler(), make_column_selector(pattern="^(?:age|score)$"))],
            remainder=OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        "empty selection": ColumnTransformer([("none", StandardScaler(), []),
                                              ("num", StandardScaler(), ["age"])], remainder="drop"),
        "numpy array name": ColumnTransformer([("cat", oh, np.array(["sex", "city"], dtype=object))],
                                              remainder="passthrough"),
    }


@pytest.mark.parametrize("case", list(_column_transformers()))
def test_public_column_indices_equal_sklearns_private_ones(case, monkeypatch):
    X = _frame()
    ct = _column_transformers()[case].fit(X)
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_SKLEARN", raising=False)
    assert compat_sklearn.enabled()
    private = compat_sklearn.transformer_input_indices(ct)
    assert private == {k: list(v) for k, v in ct._transformer_to_input_indices.items()}
    monkeypatch.setenv("TRUSTAUDIT_COMPAT_SKLEARN", "0")
    assert compat_sklearn.transformer_input_indices(ct) == private


def test_public_column_indices_on_an_array_input(monkeypatch):
    X = _frame()[["age", "income", "hours", "score"]].to_numpy()
    ct = ColumnTransformer([("a", StandardScaler(), [1, 3]), ("b", "passthrough", slice(0, 1))],
                           remainder="passthrough").fit(X)
    private = compat_sklearn.transformer_input_indices(ct)
    monkeypatch.setattr(compat_sklearn, "installed_version", lambda: "1.10.0")
    assert not compat_sklearn.enabled()
    assert compat_sklearn.transformer_input_indices(ct) == private == {"a": [1, 3], "b": [0], "remainder": [2]}


def test_public_column_indices_refuse_what_they_cannot_resolve():
    with pytest.raises(ValueError, match="unresolved callable"):
        compat_sklearn._resolve(lambda X: ["age"], 3, ["age", "b", "c"], "t")
    with pytest.raises(ValueError, match="no input names"):
        compat_sklearn._resolve(["age"], 3, None, "t")
    with pytest.raises(ValueError, match="outside"):
        compat_sklearn._resolve([5], 3, None, "t")
    with pytest.raises(ValueError, match="not fitted"):
        compat_sklearn.transformer_input_indices(ColumnTransformer([("a", "passthrough", [0])]))
    assert compat_sklearn._resolve("c", 3, ["a", "b", "c"], "t") == [2]
    assert compat_sklearn._resolve(np.int64(-1), 3, None, "t") == [2]


@pytest.mark.parametrize("case", ["names, remainder passthrough", "column selectors", "label slice includes its stop"])
def test_the_explain_column_owner_is_the_same_on_both_paths(case, monkeypatch):
    from audit.checks._explain_space import _column_transformer_owner

    X = _frame()
    ct = _column_transformers()[case].fit(X)
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_SKLEARN", raising=False)
    fast = _column_transformer_owner(ct, list(X.columns))
    monkeypatch.setenv("TRUSTAUDIT_COMPAT_SKLEARN", "0")
    public = _column_transformer_owner(ct, list(X.columns))
    assert np.array_equal(fast, public) and len(fast) == ct.transform(X).shape[1]


# --- opacus: DP-SGD noise -----------------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("std", [0.0, 1.3])
def test_public_noise_equals_opacus_draw_for_draw(monkeypatch, secure, dtype, std):
    import torch
    from opacus.optimizers.optimizer import _generate_noise

    reference = torch.zeros(7, 5, dtype=getattr(torch, dtype))

    def draws(fn):
        gen = torch.Generator().manual_seed(11)
        first = fn(std, reference, gen, secure)
        second = fn(std, reference, gen, secure)  # the generator moved on exactly as much
        return first, second, gen.get_state()

    want = draws(lambda s, r, g, m: _generate_noise(std=s, reference=r, generator=g, secure_mode=m))
    monkeypatch.delenv("TRUSTAUDIT_COMPAT_OPACUS", raising=False)
    assert compat_opacus.enabled()
    fast = draws(compat_opacus.generate_noise)
    monkeypatch.setenv("TRUSTAUDIT_COMPAT_OPACUS", "0")
    public = draws(compat_opacus.generate_noise)
    for got in (fast, public):
        assert got[0].dtype == want[0].dtype and got[0].shape == reference.shape
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert torch.equal(got[2], want[2])
    if std:
        assert not torch.equal(want[0], want[1])


def test_opacus_version_gate_uses_the_public_noise(monkeypatch):
    import torch

    monkeypatch.delenv("TRUSTAUDIT_COMPAT_OPACUS", raising=False)
    monkeypatch.setattr(compat_opacus, "installed_version", lambda: "1.7.0")
    assert not compat_opacus.enabled()
    called = []
    monkeypatch.setattr(compat_opacus, "_public_noise", lambda *a: called.append(a) or torch.zeros(1))
    compat_opacus.generate_noise(1.0, torch.zeros(3), None, True)
    assert len(called) == 1


def test_bookkeeping_secure_noise_is_opacus_noise(monkeypatch):
    """The book-keeping optimizer's secure-mode step adds exactly Opacus' noise on both paths."""
    import torch
    from opacus.optimizers.optimizer import _generate_noise

    from audit.privacy.bookkeeping import BookKeepingDPOptimizer

    def noised(switch):
        if switch is None:
            monkeypatch.delenv("TRUSTAUDIT_COMPAT_OPACUS", raising=False)
        else:
            monkeypatch.setenv("TRUSTAUDIT_COMPAT_OPACUS", switch)
        net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        opt = BookKeepingDPOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), noise_multiplier=0.7,
                                     max_grad_norm=1.5, expected_batch_size=8, loss_reduction="sum",
                                     generator=torch.Generator().manual_seed(5), secure_mode=True)
        opt.add_noise()
        return opt.flat_grad.clone()

    want = _generate_noise(std=0.7 * 1.5, reference=torch.zeros(23), generator=torch.Generator().manual_seed(5),
                           secure_mode=True)
    assert torch.equal(noised(None), want) and torch.equal(noised("0"), want)


def test_bookkeeping_refuses_a_virtual_step_when_it_is_signalled():
    import torch

    from audit.privacy.bookkeeping import BookKeepingDPOptimizer

    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    opt = BookKeepingDPOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), noise_multiplier=1.0,
                                 max_grad_norm=1.0, expected_batch_size=4, generator=torch.Generator())
    opt.signal_skip_step(do_skip=False)  # the last physical batch of a Poisson batch: a normal step
    assert opt.pre_step() is True
    with pytest.raises(RuntimeError, match="does not split Poisson batches into virtual steps"):
        opt.signal_skip_step(do_skip=True)


# --- skops: import without torch ------------------------------------------------------------

_SKOPS_PROBE = """
import json, sys
from audit._compat.skops import import_skops_io
sio = import_skops_io()
from skops.io import _trusted_types as tt
import sklearn.externals.array_api_compat as aac
print(json.dumps({"torch": "torch" in sys.modules, "types": sorted(tt.SKLEARN_ESTIMATOR_TYPE_NAMES),
                  "placeholder_left": "sklearn.externals.array_api_compat.torch" in sys.modules,
                  "attr_left": hasattr(aac, "torch")}))
"""


def _skops_probe(switch: str) -> dict:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRUSTAUDIT_COMPAT_SKOPS": switch}
    out = subprocess.run([sys.executable, "-c", _SKOPS_PROBE], capture_output=True, text=True, env=env,
                         check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_skops_imports_without_torch_and_trusts_the_same_types() -> None:
    fast, public = _skops_probe("1"), _skops_probe("0")
    assert fast["types"] == public["types"] and len(fast["types"]) > 150  # the same trusted estimators
    assert fast["torch"] is False and public["torch"] is True  # what the fast path saves
    assert not fast["placeholder_left"] and not fast["attr_left"]  # nothing of the placeholder stays


def test_skops_model_round_trip_on_both_paths(tmp_path, monkeypatch) -> None:
    from sklearn.linear_model import LogisticRegression

    from audit.io import load_model, save_skops

    X = np.arange(40, dtype=float).reshape(20, 2)
    y = (X[:, 0] > 19).astype(int)
    model = LogisticRegression().fit(X, y)
    for switch in ("1", "0"):
        monkeypatch.setenv("TRUSTAUDIT_COMPAT_SKOPS", switch)
        save_skops(model, tmp_path / f"m{switch}.skops")
        loaded = load_model(tmp_path / f"m{switch}.skops").adapter
        np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
