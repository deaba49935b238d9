"""One adapter over every model format: ``predict_proba(X)``, ``predict(X)``, ``classes_``.

X is always a pandas DataFrame of the audited columns; each adapter picks exactly the columns its
model needs (scikit-learn's ``feature_names_in_``, ONNX input names, the TorchScript metadata's
``feature_names``) and converts them. Adapters never open files: ``audit.io`` loads the bytes.

Torch models carry a JSON metadata block (``trustaudit.json`` in the TorchScript archive)::

    {"format": "trustaudit-torch/1",
     "feature_names": ["age", "sex", ...],            # DataFrame columns, in order
     "classes": [0, 1],
     "output": "logits" | "probabilities",
     "encoder": {"columns": [
         {"name": "age", "kind": "numeric", "mean": 38.5, "std": 13.6, "fill": 38.5},
         {"name": "sex", "kind": "categorical", "categories": ["female", "male"]}]},
     "dp_claim": {...}}                              # optional: read by the privacy checks

The encoder turns the DataFrame into the float matrix the module takes: numeric columns are
standardised (missing -> ``fill``), categorical ones one-hot encoded in the listed order (an
unseen or missing category -> all zeros).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from audit.exceptions import DataError, ModelLoadError, ModelOutputError

__all__ = [
    "MSG_NON_NUMERIC",
    "EncodedColumn",
    "ModelAdapter",
    "OnnxAdapter",
    "SklearnAdapter",
    "TabularEncoder",
    "TorchAdapter",
    "check_proba",
    "numeric_column",
]


@runtime_checkable
class ModelAdapter(Protocol):
    kind: str  # "sklearn" | "onnx" | "torchscript"
    classes_: np.ndarray
    feature_names: tuple[str, ...] | None
    metadata: Mapping[str, Any]
    estimator: Any  # the scikit-learn estimator, or None
    torch_module: Any  # a torch.nn.Module (TorchScript), or None
    encoder: TabularEncoder | None

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray: ...

    def predict(self, X: pd.DataFrame) -> np.ndarray: ...

    def select(self, X: pd.DataFrame) -> pd.DataFrame: ...


MSG_NON_NUMERIC = "column '{column}' has {n} non-numeric value(s) where the model expects numbers (e.g. {example!r})"


def numeric_column(col: pd.Series, name: str) -> np.ndarray:
    """A column as float64; missing stays NaN, any other non-number is refused naming the column."""
    values = pd.to_numeric(col, errors="coerce")
    arr = np.asarray(values, dtype=np.float64)
    bad = np.isnan(arr) & np.asarray(col.notna())
    if bad.any():
        example = col[bad].iloc[0]
        raise DataError(MSG_NON_NUMERIC.format(column=name, n=int(bad.sum()), example=str(example)))
    return arr


def _sigmoid(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(np.asarray(z, dtype=np.float64))


def _softmax(z: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    z = np.asarray(z, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return softmax(z, axis=1)


def _explain_conversion_error(exc: ValueError, X: pd.DataFrame) -> DataError | None:
    """scikit-learn's "could not convert string to float: 'abc'" -> the column that holds 'abc'."""
    text = str(exc)
    marker = "could not convert string to float: "
    if marker not in text:
        return None
    raw = text.split(marker, 1)[1].strip()
    value = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" else raw
    for name in X.columns:
        col = X[name]
        if col.dtype.kind in "fiub":
            continue
        hits = col.astype(str) == value
        if hits.any():
            try:
                numeric_column(col, str(name))
            except DataError as err:
                return err
            return DataError(MSG_NON_NUMERIC.format(column=name, n=int(hits.sum()), example=value))
    return None


def check_proba(proba: Any, n_rows: int, n_classes: int) -> np.ndarray:
    """Validate a model's probability output: (n_rows, n_classes), finite, rows summing to 1."""
    arr = np.asarray(proba)
    if arr.ndim != 2 or arr.shape != (n_rows, n_classes):
        raise ModelOutputError(
            f"model output has shape {tuple(arr.shape)}, expected ({n_rows}, {n_classes}) "
            f"(one probability per row and class)"
        )
    if arr.dtype.kind not in "fiu":
        raise ModelOutputError(f"model output must be numeric probabilities, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ModelOutputError("model output contains NaN or infinite probabilities")
    if np.any(arr < -1e-6) or np.any(arr > 1 + 1e-6) or not np.allclose(arr.sum(1), 1, atol=1e-3):
        raise ModelOutputError("model output is not probabilities (values outside [0, 1] or rows not summing to 1)")
    return np.clip(arr, 0.0, 1.0)


class _Base:
    kind = "base"
    classes_: np.ndarray
    feature_names: tuple[str, ...] | None = None
    metadata: Mapping[str, Any] = {}
    estimator: Any = None
    torch_module: Any = None
    encoder: TabularEncoder | None = None

    def select(self, X: pd.DataFrame) -> pd.DataFrame:
        if self.feature_names is None:
            return X
        missing = [c for c in self.feature_names if c not in X.columns]
        if missing:
            raise ModelOutputError(
                f"model expects columns the data lacks: {', '.join(missing)}"
            )
        return X.loc[:, list(self.feature_names)]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        proba = self.predict_proba(X)
        return np.asarray(self.classes_)[np.argmax(proba, axis=1)]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class SklearnAdapter(_Base):
    """Any fitted scikit-learn classifier or Pipeline (ColumnTransformer included)."""

    kind = "sklearn"

    def __init__(self, estimator: Any, feature_names: Sequence[str] | None = None) -> None:
        if not hasattr(estimator, "predict_proba") and not hasattr(estimator, "decision_function"):
            raise ModelLoadError(
                f"model of type {type(estimator).__name__} has neither predict_proba nor "
                "decision_function; a classifier is required"
            )
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise ModelLoadError(
                f"model of type {type(estimator).__name__} has no classes_: is it a fitted classifier?"
            )
        self.estimator = estimator
        self.classes_ = np.asarray(classes)
        names = getattr(estimator, "feature_names_in_", None)
        if feature_names:
            self.feature_names = tuple(feature_names)
        elif names is not None:
            self.feature_names = tuple(str(n) for n in names)
        else:
            self.feature_names = None
        self.n_features_in = getattr(estimator, "n_features_in_", None)
        self.metadata = {}

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        Xs = self.select(X)
        if self.feature_names is None and self.n_features_in is not None and Xs.shape[1] != self.n_features_in:
            raise ModelOutputError(
                f"model expects {self.n_features_in} feature columns, the data gives {Xs.shape[1]}; "
                "name the model's columns with data.features"
            )
        try:
            if hasattr(self.estimator, "predict_proba"):
                try:
                    return np.asarray(self.estimator.predict_proba(Xs))
                except AttributeError:
                    # e.g. SVC(probability=False) exposes predict_proba but raises
                    if not hasattr(self.estimator, "decision_function"):
                        raise
            d = np.asarray(self.estimator.decision_function(Xs), dtype=float)
        except ValueError as exc:
            named = _explain_conversion_error(exc, Xs)
            if named is not None:
                raise named from None
            raise
        if d.ndim == 1:
            p = _sigmoid(d)
            return np.column_stack([1 - p, p])
        return _softmax(d)

    @property
    def has_native_proba(self) -> bool:
        """Whether the estimator itself gives probabilities (not derived from decision_function)."""
        return hasattr(self.estimator, "predict_proba")


@dataclass(frozen=True)
class EncodedColumn:
    name: str
    kind: str  # "numeric" | "categorical"
    mean: float = 0.0
    std: float = 1.0
    fill: float = 0.0
    categories: tuple[Any, ...] = ()

    @property
    def width(self) -> int:
        return 1 if self.kind == "numeric" else len(self.categories)


@dataclass(frozen=True)
class TabularEncoder:
    """A declarative (JSON) DataFrame -> float matrix encoding for torch models."""

    columns: tuple[EncodedColumn, ...] = field(default_factory=tuple)

    @classmethod
    def fit(
        cls, X: pd.DataFrame, categorical: Sequence[str] | None = None
    ) -> TabularEncoder:
        cols = []
        cat = set(categorical) if categorical is not None else {
            c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])
        }
        for c in X.columns:
            if c in cat:
                cats = sorted(pd.Series(X[c]).dropna().astype(str).unique().tolist())
                cols.append(EncodedColumn(str(c), "categorical", categories=tuple(cats)))
            else:
                v = pd.to_numeric(X[c], errors="coerce").astype(float)
                mean = float(np.nanmean(v)) if v.notna().any() else 0.0
                std = float(np.nanstd(v)) if v.notna().any() else 1.0
                cols.append(EncodedColumn(str(c), "numeric", mean, std if std > 0 else 1.0, mean))
        return cls(tuple(cols))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TabularEncoder:
        try:
            cols = []
            for c in d["columns"]:
                kind = c["kind"]
                if kind not in ("numeric", "categorical"):
                    raise ValueError(f"unknown column kind {kind!r}")
                cols.append(
                    EncodedColumn(
                        name=str(c["name"]),
                        kind=kind,
                        mean=float(c.get("mean", 0.0)),
                        std=float(c.get("std", 1.0)) or 1.0,
                        fill=float(c.get("fill", c.get("mean", 0.0))),
                        categories=tuple(c.get("categories", ())),
                    )
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"model metadata 'encoder' is invalid: {exc}") from None
        return cls(tuple(cols))

    def to_dict(self) -> dict[str, Any]:
        out = []
        for c in self.columns:
            if c.kind == "numeric":
                out.append({"name": c.name, "kind": c.kind, "mean": c.mean, "std": c.std, "fill": c.fill})
            else:
                out.append({"name": c.name, "kind": c.kind, "categories": list(c.categories)})
        return {"columns": out}

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    def encoded_names(self) -> list[str]:
        names: list[str] = []
        for c in self.columns:
            if c.kind == "numeric":
                names.append(c.name)
            else:
                names.extend(f"{c.name}={v}" for v in c.categories)
        return names

    def groups(self) -> list[tuple[str, slice]]:
        """Which encoded columns belong to each input column (to sum attributions back)."""
        out, i = [], 0
        for c in self.columns:
            out.append((c.name, slice(i, i + c.width)))
            i += c.width
        return out

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        parts = []
        for c in self.columns:
            col = X[c.name]
            if c.kind == "numeric":
                v = numeric_column(col, c.name)
                v = np.where(np.isnan(v), c.fill, v)
                parts.append(((v - c.mean) / c.std)[:, None])
            else:
                s = col.astype(object).where(col.notna(), None)
                s = np.array([None if v is None else str(v) for v in s], dtype=object)
                cats = np.array([str(v) for v in c.categories], dtype=object)
                parts.append((s[:, None] == cats[None, :]).astype(np.float64))
        if not parts:
            return np.zeros((len(X), 0), dtype=np.float32)
        return np.hstack(parts).astype(np.float32)


class TorchAdapter(_Base):
    """A TorchScript module with the trustaudit metadata block."""

    kind = "torchscript"

    def __init__(self, module: Any, metadata: Mapping[str, Any]) -> None:
        self.torch_module = module
        self.metadata = dict(metadata)
        enc = metadata.get("encoder")
        if enc is None:
            names = metadata.get("feature_names")
            if not names:
                raise ModelLoadError(
                    "TorchScript model metadata has neither 'encoder' nor 'feature_names'; "
                    "save it with audit.io.save_torchscript"
                )
            enc = {"columns": [{"name": n, "kind": "numeric"} for n in names]}
        self.encoder = TabularEncoder.from_dict(enc)
        self.feature_names = self.encoder.feature_names
        self.classes_ = np.asarray(metadata.get("classes", [0, 1]))
        self.output = str(metadata.get("output", "logits"))
        if self.output not in ("logits", "probabilities"):
            raise ModelLoadError(
                f"model metadata 'output' must be 'logits' or 'probabilities', got {self.output!r}"
            )

    def forward_numpy(self, Z: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.torch_module(torch.as_tensor(Z, dtype=torch.float32))
        return out.detach().cpu().numpy().astype(np.float64)

    def to_proba(self, out: np.ndarray) -> np.ndarray:
        out = np.asarray(out, dtype=np.float64)
        if out.ndim == 1:
            out = out[:, None]
        if out.ndim == 2 and out.shape[1] == 1:
            # expit: no overflow warning for large logits (1 / (1 + exp(-z)) warned once per call)
            p = _sigmoid(out[:, 0]) if self.output == "logits" else out[:, 0]
            return np.column_stack([1 - p, p])
        if self.output == "logits":
            return _softmax(out)
        return out

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        Z = self.encoder.transform(self.select(X)) if self.encoder else X.to_numpy(np.float32)
        return self.to_proba(self.forward_numpy(Z))


class OnnxAdapter(_Base):
    """An ONNX classifier run by onnxruntime (skl2onnx pipelines with per-column inputs included)."""

    kind = "onnx"

    def __init__(self, session: Any, feature_names: Sequence[str] | None = None) -> None:
        self.session = session
        self.inputs = session.get_inputs()
        self.outputs = session.get_outputs()
        meta = session.get_modelmeta().custom_metadata_map or {}
        self.metadata = dict(meta)
        if len(self.inputs) > 1:
            self.feature_names = tuple(i.name for i in self.inputs)
            self._single = False
        else:
            self._single = True
            names = feature_names
            if not names and "feature_names" in meta:
                try:
                    names = json.loads(meta["feature_names"])
                except json.JSONDecodeError:
                    names = [n.strip() for n in meta["feature_names"].split(",")]
            self.feature_names = tuple(names) if names else None
        self.classes_ = self._find_classes()

    def _find_classes(self) -> np.ndarray:
        if "classes" in self.metadata:
            try:
                return np.asarray(json.loads(self.metadata["classes"]))
            except json.JSONDecodeError:
                pass
        try:
            import onnx
        except ImportError:  # pragma: no cover
            pass
        model_bytes = getattr(self, "_model_bytes", None)
        if model_bytes is not None:
            import onnx

            model = onnx.load_from_string(model_bytes)
            for node in model.graph.node:
                for attr in node.attribute:
                    if attr.name == "classlabels_int64s" or attr.name == "classlabels_ints":
                        return np.asarray(list(attr.ints))
                    if attr.name == "classlabels_strings":
                        return np.asarray([s.decode("utf-8", "replace") for s in attr.strings])
        return np.asarray([0, 1])

    @classmethod
    def from_bytes(cls, data: bytes, feature_names: Sequence[str] | None = None) -> OnnxAdapter:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4  # the error comes back as one line below, not as a log record
        try:
            import contextlib
            import io as _io

            # onnxruntime prints an "EP Error ... Falling back" block on stdout when a session fails
            with contextlib.redirect_stdout(_io.StringIO()):
                sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelLoadError(f"not a valid ONNX model: {str(exc).splitlines()[0][:200]}") from None
        obj = cls.__new__(cls)
        obj._model_bytes = data  # type: ignore[attr-defined]
        try:
            cls.__init__(obj, sess, feature_names)
        except (UnicodeDecodeError, ValueError, TypeError) as exc:  # damaged metadata or labels
            raise ModelLoadError(f"not a valid ONNX model: {' '.join(str(exc).split())[:200]}") from None
        return obj

    def _feed(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        Xs = self.select(X)
        if self._single:
            inp = self.inputs[0]
            width = inp.shape[1] if len(inp.shape) > 1 and isinstance(inp.shape[1], int) else None
            if width is not None and Xs.shape[1] != width:
                raise ModelOutputError(
                    f"model expects {width} feature columns, the data gives {Xs.shape[1]}; "
                    "name the model's columns with data.features"
                )
            return {inp.name: _onnx_cast(Xs, inp.type)}
        feed = {}
        for inp in self.inputs:
            feed[inp.name] = _onnx_cast(Xs[[inp.name]], inp.type)
        return feed

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        outs = self.session.run(None, self._feed(X))
        prob = None
        for meta, val in zip(self.outputs, outs, strict=False):
            if "prob" in meta.name.lower():
                prob = val
        if prob is None:
            prob = outs[-1]
        if isinstance(prob, list):  # ZipMap: a list of {class: p}
            keys = list(prob[0].keys()) if prob else list(self.classes_)
            self.classes_ = np.asarray(keys)
            prob = np.array([[row[k] for k in keys] for row in prob], dtype=np.float64)
        prob = np.asarray(prob, dtype=np.float64)
        if prob.ndim == 2 and prob.shape[1] == 1:
            prob = np.column_stack([1 - prob[:, 0], prob[:, 0]])
        return prob


def _onnx_cast(frame: pd.DataFrame, onnx_type: str) -> np.ndarray:
    """Columns -> the input tensor; a non-number in a numeric input is refused naming its column."""
    a = frame.to_numpy()
    if "string" in onnx_type:
        return np.array([["" if pd.isna(v) else str(v)] for v in a.ravel()], dtype=object).reshape(a.shape)
    if frame.shape[1] == 0:
        return np.zeros((len(frame), 0), dtype=np.float32)
    cols = np.column_stack([numeric_column(frame.iloc[:, j], str(frame.columns[j])) for j in range(frame.shape[1])])
    if "double" in onnx_type:
        return cols.astype(np.float64)
    if "int64" in onnx_type:
        return np.nan_to_num(cols, nan=0.0).astype(np.int64)
    return cols.astype(np.float32)
