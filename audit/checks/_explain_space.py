"""Where explanations are computed, and how they are mapped back to the submitted columns.

Two views of a model serve the explanation family:

* ``TabularCodec`` turns the audited DataFrame (numbers and category labels) into a float matrix
  and back, so that model-agnostic explainers (LIME, shap's permutation explainer) can perturb
  whole *input columns* and call the model on real rows again.
* ``ModelView`` says which SHAP algorithm fits the model (exact TreeSHAP for tree ensembles,
  exact linear SHAP for linear models, a sampled permutation explainer otherwise) and, for a
  scikit-learn Pipeline, how the preprocessed matrix's columns map back to input columns
  (``owner[k]`` = the input column that produced transformed column ``k``), so that one-hot
  attributions are summed back into the column a person submitted.

A mapping read from a ColumnTransformer's structure is always verified by probing (shuffle one
input column, see which transformed columns move); when it cannot be established the view falls
back to the model-agnostic explainer over the input columns, and says why.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ModelView", "TabularCodec", "model_view", "positive_index"]

_TREE_TYPES = (
    "HistGradientBoostingClassifier",
    "GradientBoostingClassifier",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "DecisionTreeClassifier",
    "ExtraTreeClassifier",
    "XGBClassifier",
    "LGBMClassifier",
    "CatBoostClassifier",
)
#: Tree models whose TreeSHAP output is the class probability (the others explain log-odds).
_PROBA_TREES = (
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "DecisionTreeClassifier",
    "ExtraTreeClassifier",
)
_LINEAR_MODULES = ("sklearn.linear_model", "sklearn.svm")


def positive_index(ctx: Any) -> int:
    """Column of ``predict_proba`` holding the positive label, as the runner resolved it (the
    only place that resolves the positive class, against the model's ``classes_``)."""
    return int(ctx.positive_index)


# --- codec over the submitted columns -------------------------------------------------------


@dataclass(frozen=True)
class TabularCodec:
    """Submitted columns <-> a float matrix (categories as integer codes, missing as its own code).

    ``decode(encode(X))`` gives X back (numbers exactly, categories as their original labels,
    missing categories as NaN), so perturbed matrices can be fed to the model as real rows.
    """

    columns: tuple[str, ...]
    categorical: tuple[bool, ...]
    categories: tuple[tuple[Any, ...], ...]
    medians: tuple[float, ...] = field(default=())

    @classmethod
    def fit(
        cls, frames: Sequence[pd.DataFrame], categorical: Sequence[str] | None = None
    ) -> TabularCodec:
        first = frames[0]
        cols = tuple(str(c) for c in first.columns)
        cat_set = set(categorical) if categorical is not None else {
            c for c in cols if _is_categorical(first[c])
        }
        cats, is_cat, medians = [], [], []
        for c in cols:
            if c in cat_set:
                values = pd.concat([pd.Series(f[c], dtype=object) for f in frames], ignore_index=True)
                uniq = pd.unique(values.dropna())
                try:
                    uniq = np.array(sorted(uniq, key=str), dtype=object)
                except TypeError:  # pragma: no cover - mixed unorderable labels
                    uniq = np.array(list(uniq), dtype=object)
                cats.append(tuple(uniq.tolist()))
                is_cat.append(True)
                medians.append(0.0)
            else:
                v = pd.to_numeric(pd.concat([f[c] for f in frames], ignore_index=True), errors="coerce")
                cats.append(())
                is_cat.append(False)
                medians.append(float(np.nanmedian(v)) if v.notna().any() else 0.0)
        return cls(cols, tuple(is_cat), tuple(cats), tuple(medians))

    @property
    def n_features(self) -> int:
        return len(self.columns)

    def missing_code(self, j: int) -> int:
        return len(self.categories[j])

    def encode(self, X: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(X), len(self.columns)), dtype=np.float64)
        for j, c in enumerate(self.columns):
            col = X[c]
            if self.categorical[j]:
                lookup = {v: i for i, v in enumerate(self.categories[j])}
                miss = self.missing_code(j)
                vals = pd.Series(col, dtype=object)
                codes = vals.map(lambda v, lk=lookup, m=miss: m if _isna(v) else lk.get(v, m))
                out[:, j] = codes.to_numpy(dtype=np.float64)
            else:
                out[:, j] = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        return out

    def decode(self, A: np.ndarray) -> pd.DataFrame:
        A = np.asarray(A, dtype=np.float64)
        if A.ndim == 1:
            A = A[None, :]
        data: dict[str, Any] = {}
        for j, c in enumerate(self.columns):
            if self.categorical[j]:
                lut = np.array([*self.categories[j], np.nan], dtype=object)
                codes = np.clip(np.rint(np.nan_to_num(A[:, j], nan=len(lut) - 1)), 0, len(lut) - 1)
                data[c] = lut[codes.astype(np.int64)]
            else:
                data[c] = A[:, j]
        return pd.DataFrame(data, columns=list(self.columns))

    def fill_numeric_missing(self, A: np.ndarray) -> np.ndarray:
        """Numeric NaN -> the column median (for LIME, whose discretiser needs finite values)."""
        A = np.array(A, dtype=np.float64, copy=True)
        for j in range(A.shape[1]):
            if not self.categorical[j]:
                col = A[:, j]
                col[np.isnan(col)] = self.medians[j]
        return A

    def reference_row(self, background: pd.DataFrame) -> np.ndarray:
        """A single 'feature removed' value per column: the median (numbers), the mode (categories)."""
        enc = self.encode(background)
        ref = np.empty(len(self.columns))
        for j in range(len(self.columns)):
            col = enc[:, j]
            if self.categorical[j]:
                vals, counts = np.unique(col, return_counts=True)
                ref[j] = vals[np.argmax(counts)]
            else:
                finite = col[np.isfinite(col)]
                ref[j] = float(np.median(finite)) if finite.size else 0.0
        return ref


def _isna(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _is_categorical(s: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


# --- the SHAP view of a model --------------------------------------------------------------


@dataclass
class ModelView:
    """How to explain a model with SHAP, and how its attributions map to input columns.

    kind ``tree`` / ``linear``: an exact explainer runs on ``transform(X)`` (the final estimator's
    input) and ``owner`` maps each transformed column to its input column; ``raw_output(Z)`` is
    the quantity the explainer decomposes (``output_space`` says which). kind ``blackbox``: the
    permutation explainer runs over the input columns on the positive-class probability.
    """

    kind: str
    reason: str
    final: Any = None
    transform: Callable[[pd.DataFrame], np.ndarray] | None = None
    owner: np.ndarray | None = None
    raw_output: Callable[[np.ndarray], np.ndarray] | None = None
    output_space: str = "probability of the positive class"
    estimator_name: str = ""

    def group_matrix(self, n_features: int) -> np.ndarray:
        """(transformed columns x input columns) 0/1 matrix: attributions @ G sums them back."""
        assert self.owner is not None
        G = np.zeros((len(self.owner), n_features))
        G[np.arange(len(self.owner)), self.owner] = 1.0
        return G


def _dense(Z: Any) -> np.ndarray:
    if hasattr(Z, "toarray"):
        Z = Z.toarray()
    return np.asarray(Z, dtype=np.float64)


def _type_name(est: Any) -> str:
    return type(est).__name__


def _is_tree(est: Any) -> bool:
    return _type_name(est) in _TREE_TYPES


def _is_linear(est: Any) -> bool:
    module = type(est).__module__
    return (
        any(module.startswith(m) for m in _LINEAR_MODULES)
        and hasattr(est, "coef_")
        and hasattr(est, "intercept_")
        and np.ndim(np.asarray(getattr(est, "coef_", 0.0))) in (1, 2)
        and not hasattr(est, "support_vectors_")  # kernel SVMs are not linear in the input
    )


def _pick(arr: np.ndarray, pos: int, *, binary_margin_axis: bool) -> np.ndarray:
    """Select the positive class from a per-class output (last axis), or flip a binary margin."""
    arr = np.asarray(arr, dtype=np.float64)
    if binary_margin_axis:
        return arr if pos == 1 else -arr
    return arr[..., pos]


def _quiet(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """The explainer's matrix has no column names: silence scikit-learn's warning about it."""

    def call(Z: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return fn(Z)

    return call


def _raw_output_fn(est: Any, pos: int, n_classes: int) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    fn, space = _raw_output(est, pos, n_classes)
    return _quiet(fn), space


def _raw_output(est: Any, pos: int, n_classes: int) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    name = _type_name(est)
    if name in _PROBA_TREES:
        return (lambda Z: np.asarray(est.predict_proba(Z), dtype=np.float64)[:, pos]), (
            "probability of the positive class"
        )
    if name == "XGBClassifier":  # pragma: no cover - optional dependency
        def xgb(Z: np.ndarray) -> np.ndarray:
            m = np.asarray(est.predict(Z, output_margin=True), dtype=np.float64)
            return _pick(m, pos, binary_margin_axis=m.ndim == 1)

        return xgb, "log-odds (margin) of the positive class"
    if name == "LGBMClassifier":  # pragma: no cover - optional dependency
        def lgbm(Z: np.ndarray) -> np.ndarray:
            m = np.asarray(est.predict(Z, raw_score=True), dtype=np.float64)
            return _pick(m, pos, binary_margin_axis=m.ndim == 1)

        return lgbm, "log-odds (margin) of the positive class"

    def margin(Z: np.ndarray) -> np.ndarray:
        m = np.asarray(est.decision_function(Z), dtype=np.float64)
        return _pick(m, pos, binary_margin_axis=m.ndim == 1)

    return margin, "log-odds (decision function) of the positive class"


def _split_pipeline(est: Any) -> tuple[Any, Any]:
    steps = getattr(est, "steps", None)
    if steps and len(steps) >= 2:
        pre = est[:-1]
        return pre, steps[-1][1]
    if steps and len(steps) == 1:
        return None, steps[0][1]
    return None, est


class _Unmappable(Exception):  # noqa: N818 - internal signal
    pass


def _column_transformer_owner(ct: Any, columns: Sequence[str]) -> np.ndarray:
    """Which input column produced each output column of a fitted ColumnTransformer."""
    from audit._compat import sklearn as compat_sklearn

    index = {c: i for i, c in enumerate(columns)}
    names_in = [str(c) for c in getattr(ct, "feature_names_in_", columns)]
    try:
        to_input = compat_sklearn.transformer_input_indices(ct)
    except ValueError as exc:
        raise _Unmappable(f"the ColumnTransformer's column lists cannot be read ({exc})") from None
    widths = {name: sl.stop - sl.start for name, sl in ct.output_indices_.items()}
    owner = np.full(sum(widths.values()), -1, dtype=np.int64)
    for name, trans, _cols in ct.transformers_:
        sl = ct.output_indices_.get(name)
        if sl is None or sl.stop == sl.start or (isinstance(trans, str) and trans == "drop"):
            continue
        if name not in to_input:
            raise _Unmappable("the ColumnTransformer does not expose its column lists")
        in_cols = [names_in[i] for i in to_input[name]]
        try:
            src = [index[c] for c in in_cols]
        except KeyError as exc:
            raise _Unmappable(
                f"transformer {name!r} reads column {exc.args[0]!r}, not a model input"
            ) from None
        width = sl.stop - sl.start
        if len(src) == 1:
            owner[sl] = src[0]
        elif width == len(src):
            owner[sl] = src
        else:
            try:
                out_names = [str(n) for n in trans.get_feature_names_out(in_cols)]
            except Exception as exc:  # noqa: BLE001 - any transformer may lack names
                raise _Unmappable(f"transformer {name!r} cannot name its outputs ({exc})") from None
            if len(out_names) != width:
                raise _Unmappable(f"transformer {name!r} names {len(out_names)} of {width} outputs")
            for k, out in enumerate(out_names):
                hits = [c for c in in_cols if out == c or out.startswith(c + "_")]
                if not hits:
                    raise _Unmappable(f"output {out!r} of transformer {name!r} matches no input column")
                owner[sl.start + k] = index[max(hits, key=len)]
    if (owner < 0).any():
        raise _Unmappable("some transformed columns have no source column")
    return owner


def _probe_changes(
    transform: Callable[[pd.DataFrame], np.ndarray], X: pd.DataFrame, rng: np.random.Generator
) -> np.ndarray:
    """(input columns x transformed columns): does shuffling input j move transformed k?"""
    m = len(X)
    base = X.reset_index(drop=True)
    order = rng.permutation(m)
    perm = np.empty(m, dtype=np.int64)
    perm[order] = np.roll(order, -1)  # one cycle: every row takes another row's value
    variants = [base]
    for c in base.columns:
        v = base.copy()
        v[c] = base[c].to_numpy()[perm]
        variants.append(v)
    Z = _dense(transform(pd.concat(variants, ignore_index=True)))
    Z0 = Z[:m]
    changed = np.zeros((base.shape[1], Z.shape[1]), dtype=bool)
    for j in range(base.shape[1]):
        Zj = Z[(j + 1) * m : (j + 2) * m]
        diff = ~((Zj == Z0) | (np.isnan(Zj) & np.isnan(Z0)))
        changed[j] = diff.any(axis=0)
    return changed


def _pipeline_owner(
    pre: Any, columns: Sequence[str], probe: pd.DataFrame, rng: np.random.Generator
) -> np.ndarray:
    """Map the preprocessor's outputs to input columns: structure first, always probe-verified."""
    transform = pre.transform
    changed = _probe_changes(transform, probe, rng)
    n_out = changed.shape[1]
    ct = None
    steps = list(getattr(pre, "steps", [("pre", pre)]))
    if type(steps[0][1]).__name__ == "ColumnTransformer":
        ct = steps[0][1]
    owner: np.ndarray | None = None
    if ct is not None:
        owner = _column_transformer_owner(ct, columns)
        if len(owner) != n_out:  # later steps changed the width: the structure says nothing
            owner = None
    if owner is None:
        counts = changed.sum(axis=0)
        if (counts != 1).any():
            raise _Unmappable(
                f"{int((counts == 0).sum())} transformed column(s) move with no input column and "
                f"{int((counts > 1).sum())} with several"
            )
        owner = np.argmax(changed, axis=0)
    for j in range(changed.shape[0]):
        bad = changed[j] & (owner != j)
        if bad.any():
            raise _Unmappable(
                f"shuffling {columns[j]!r} moves transformed columns attributed to other inputs"
            )
    return owner.astype(np.int64)


def model_view(
    adapter: Any,
    columns: Sequence[str],
    pos: int,
    probe: pd.DataFrame,
    rng: np.random.Generator,
) -> ModelView:
    """Choose the SHAP algorithm for ``adapter`` and map its space back to ``columns``."""
    est = getattr(adapter, "estimator", None)
    if est is None:
        return ModelView(
            "blackbox",
            f"a {adapter.kind} model: no exact explainer reads it, so the model-agnostic "
            "permutation explainer runs on its probabilities",
            estimator_name=adapter.kind,
        )
    pre, final = _split_pipeline(est)
    name = _type_name(final)
    if _is_tree(final) and np.any(getattr(final, "is_categorical_", None) is not None
                                  and np.asarray(final.is_categorical_)):
        return ModelView(
            "blackbox",
            f"{name} uses native categorical splits, which shap's TreeExplainer does not read (its "
            "values would not add up to the model output): the permutation explainer runs instead",
            estimator_name=name,
        )
    if _is_tree(final):
        kind = "tree"
    elif _is_linear(final):
        kind = "linear"
    else:
        return ModelView(
            "blackbox",
            f"{name} is neither a tree ensemble nor a linear model: the model-agnostic permutation "
            "explainer runs on its probabilities",
            estimator_name=name,
        )
    n_classes = len(adapter.classes_)
    raw, space = _raw_output_fn(final, pos, n_classes)
    if pre is None:
        if any(_is_categorical(probe[c]) for c in columns):
            return ModelView(
                "blackbox",
                f"{name} receives non-numeric columns directly: the permutation explainer runs instead",
                estimator_name=name,
            )
        cols = list(columns)

        def ident(X: pd.DataFrame) -> np.ndarray:
            return X.loc[:, cols].to_numpy(dtype=np.float64)

        return ModelView(kind, "", final, ident, np.arange(len(cols)), raw, space, name)
    try:
        owner = _pipeline_owner(pre, columns, probe, rng)
    except _Unmappable as exc:
        return ModelView(
            "blackbox",
            f"the pipeline's preprocessing cannot be mapped back to input columns ({exc}): the "
            "permutation explainer runs over the input columns instead",
            estimator_name=name,
        )

    def transform(X: pd.DataFrame) -> np.ndarray:
        return _dense(pre.transform(X))

    return ModelView(kind, "", final, transform, owner, raw, space, name)
