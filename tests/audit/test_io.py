"""Safe model intake (skops trusted types, ONNX, TorchScript, pickle only when asked) and data loading."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from audit.cli import main
from audit.datasets import make_lending_data
from audit.exceptions import ModelLoadError, UnsafeModelError
from audit.io import detect_model_format, load_model, load_table, save_skops, save_torchscript, sha256_file
from audit.model import TabularEncoder
from tests.audit.helpers import FEATURES, lr_pipeline


class _Evil:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


class CustomClassifier(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.tile([0.5, 0.5], (len(X), 1))


@pytest.fixture(scope="module")
def small():
    return make_lending_data(600, 200, 300, seed=2)


def test_pickle_refused_and_payload_not_run(tmp_path):
    marker = tmp_path / "pwned.txt"
    p = tmp_path / "model.pkl"
    p.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(UnsafeModelError, match="is a pickle/joblib file: loading it can run arbitrary code"):
        load_model(p)
    assert not marker.exists()


def test_pickle_refused_through_cli(tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    p = tmp_path / "model.pkl"
    p.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    data = tmp_path / "d.csv"
    make_lending_data(0, 0, 50, seed=1).test.to_csv(data, index=False)
    rc = main(["audit", "--model", str(p), "--data", str(data), "--target", "approved", "--positive-label", "1",
               "--quiet", "--no-store"])
    assert rc == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_joblib_loads_only_with_unsafe_flag_and_warns(tmp_path, small):
    import joblib

    p = tmp_path / "m.joblib"
    joblib.dump(lr_pipeline(small), p, compress=3)
    for method in ("gzip", "bz2", "lzma", "xz"):
        q = tmp_path / f"m.{method}"
        joblib.dump({"a": 1}, q, compress=(method, 3))
        assert detect_model_format(q.read_bytes()) == "pickle", method
    assert detect_model_format(p.read_bytes()) == "pickle"
    with pytest.raises(UnsafeModelError):
        load_model(p)
    with pytest.warns(UserWarning, match="runs any code the file contains"):
        m = load_model(p, allow_unsafe_pickle=True)
    assert m.format == "pickle"
    assert m.adapter.predict_proba(small.test).shape == (300, 2)


def test_skops_untrusted_type_named(tmp_path, small):
    p = tmp_path / "custom.skops"
    save_skops(CustomClassifier().fit(small.train[["income"]], small.train.approved), p)
    with pytest.raises(UnsafeModelError) as exc:
        load_model(p)
    assert str(exc.value) == (
        f"model file {p} contains types that are not trusted: tests.audit.test_io.CustomClassifier; "
        "review them and trust each explicitly with --trust TYPE (or model.trusted_types)"
    )
    m = load_model(p, trusted_types=["tests.audit.test_io.CustomClassifier"])
    assert m.adapter.predict_proba(small.test[["income"]]).shape == (300, 2)


@pytest.mark.parametrize("est", [HistGradientBoostingClassifier(max_iter=20), RandomForestClassifier(5, random_state=0),
                                 LogisticRegression(max_iter=500)])
def test_skops_library_types_trusted_by_default(tmp_path, small, est):
    from sklearn.base import clone

    from tests.audit.helpers import lr_pipeline as _  # noqa: F401  (same data prep)

    X = small.train[["education", "income", "debt_ratio"]]
    model = clone(est).fit(X, small.train.approved)
    p = tmp_path / "m.skops"
    save_skops(model, p)
    loaded = load_model(p)
    Xt = small.test[["education", "income", "debt_ratio"]]
    np.testing.assert_allclose(loaded.adapter.predict_proba(Xt), model.predict_proba(Xt), atol=1e-12)
    assert loaded.sha256 == sha256_file(p)
    assert loaded.adapter.feature_names == ("education", "income", "debt_ratio")


def test_pipeline_with_column_transformer_gets_only_its_columns(tmp_path, small):
    model = lr_pipeline(small)
    p = tmp_path / "pipe.skops"
    save_skops(model, p)
    loaded = load_model(p)
    extra = small.test.assign(unrelated=1.0)  # sex, approved and a new column are not model inputs
    proba = loaded.adapter.predict_proba(extra)
    np.testing.assert_allclose(proba, model.predict_proba(small.test[FEATURES]))


def test_onnx_single_tensor_and_per_column_inputs(tmp_path, small):
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    num = ["education", "income", "debt_ratio"]
    lr = LogisticRegression(max_iter=500).fit(small.train[num], small.train.approved)
    onx = to_onnx(lr, initial_types=[("X", FloatTensorType([None, 3]))], options={id(lr): {"zipmap": False}})
    onx.metadata_props.add(key="feature_names", value='["education", "income", "debt_ratio"]')
    p = tmp_path / "lr.onnx"
    p.write_bytes(onx.SerializeToString())
    loaded = load_model(p)
    assert loaded.format == "onnx"
    np.testing.assert_allclose(loaded.adapter.predict_proba(small.test), lr.predict_proba(small.test[num]), atol=1e-5)

    pipe = lr_pipeline(small)
    types = [(c, StringTensorType([None, 1]) if c in ("age_group", "region") else FloatTensorType([None, 1]))
             for c in FEATURES]
    onx2 = to_onnx(pipe, initial_types=types)  # ZipMap output: a list of {class: p}
    p2 = tmp_path / "pipe.onnx"
    p2.write_bytes(onx2.SerializeToString())
    loaded2 = load_model(p2)
    assert loaded2.adapter.feature_names == tuple(FEATURES)
    np.testing.assert_allclose(loaded2.adapter.predict_proba(small.test), pipe.predict_proba(small.test[FEATURES]),
                               atol=1e-4)
    assert list(loaded2.adapter.classes_) == [0, 1]


def test_torchscript_with_encoder_metadata(tmp_path, small):
    import torch

    X = small.train[["sex", "region", "income", "education"]]
    enc = TabularEncoder.fit(X)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(enc.width, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    p = tmp_path / "m.pt"
    save_torchscript(net, p, {"encoder": enc.to_dict(), "classes": [0, 1], "output": "logits",
                              "dp_claim": {"epsilon": 3.0, "delta": 1e-5, "noise_multiplier": 1.1,
                                           "sample_rate": 0.01, "steps": 100}})
    loaded = load_model(p)
    assert loaded.format == "torchscript"
    Z = torch.as_tensor(enc.transform(small.test), dtype=torch.float32)
    with torch.no_grad():
        expected = torch.sigmoid(net(Z)).numpy()[:, 0]
    np.testing.assert_allclose(loaded.adapter.predict_proba(small.test)[:, 1], expected, atol=1e-6)
    assert loaded.adapter.metadata["dp_claim"]["epsilon"] == 3.0
    assert loaded.adapter.encoder.encoded_names()[:2] == ["sex=female", "sex=male"]


def test_declared_format_must_match_content(tmp_path, small):
    p = tmp_path / "m.skops"
    save_skops(LogisticRegression().fit(small.train[["income"]], small.train.approved), p)
    with pytest.raises(ModelLoadError, match="was declared as onnx but its content is skops"):
        load_model(p, format="onnx")


def test_unknown_model_format(tmp_path):
    p = tmp_path / "m.bin"
    p.write_bytes(b"hello world, not a model")
    with pytest.raises(ModelLoadError, match="is not a recognised format; allowed: skops, ONNX, TorchScript"):
        load_model(p)


def test_adult_question_marks_read_as_missing(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("age, workclass, income\n39, State-gov, <=50K\n50, ?, >50K\n")
    df = load_table(p)
    assert df["workclass"].isna().tolist() == [False, True]
    assert list(df.columns) == ["age", "workclass", "income"]


def test_parquet_by_content(tmp_path):
    p = tmp_path / "data.bin"
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(p)
    assert load_table(p).shape == (2, 2)


def test_model_without_probabilities_uses_decision_function(tmp_path, small):
    from sklearn.svm import LinearSVC

    from audit.model import SklearnAdapter

    X = small.train[["income", "education"]]
    svc = LinearSVC().fit((X - X.mean()) / X.std(), small.train.approved)
    proba = SklearnAdapter(svc).predict_proba((small.test[["income", "education"]] - X.mean()) / X.std())
    assert proba.shape == (300, 2)
    assert np.allclose(proba.sum(1), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ((proba[:, 1] > 0.5) == (svc.predict((small.test[["income", "education"]] - X.mean()) / X.std()) == 1)).all()
