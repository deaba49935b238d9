"""Where explanations are computed, and how they are mapped back to the submitted columns.

Two views of a model, and a way to score many rows, serve the explanation family:

* ``TabularCodec`` turns the audited DataFrame (numbers and category labels) into a float matrix
  and back, so that model-agnostic explainers (LIME, shap's permutation explainer) can perturb
  whole *input columns* and call the model on real rows again.
* ``ModelView`` says which SHAP algorithm fits the model (exact TreeSHAP for tree ensembles,
  exact linear SHAP for linear models, a sampled permutation explainer otherwise) and, for a
  scikit-learn Pipeline, how the preprocessed matrix's columns map back to input columns
  (``owner[k]`` = the input column that produced transformed column ``k``), so that one-hot
  attributions are summed back into the column a person submitted.
* ``RowMixer`` scores rows assembled column by column from a few source rows (permuted rows,
  rows with features removed): each distinct row once, in large model calls, in the transformed
  space when the probe showed that to give the model's own probabilities.

A mapping read from a ColumnTransformer's structure is always verified by probing (shuffle one
input column, see which transformed columns move); when it cannot be established the view falls
back to the model-agnostic explainer over the input columns, and says why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ModelView", "RowMixer", "TabularCodec", "bit_ids", "model_view", "positive_index", "unique_rows"]

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
                # each frame's distinct labels, then their union: the labels (and their order of
                # first appearance) of all frames' rows together, without converting every row
                values = pd.concat([pd.Series(f[c].unique(), dtype=object) for f in frames],
                                   ignore_index=True)
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
                # each distinct label's position among the categories (missing and unknown labels:
                # the missing code), then every row's
                codes, labels = pd.factorize(col, use_na_sentinel=True)
                pos = pd.Index(self.categories[j], dtype=object).get_indexer(
                    pd.Series(labels, dtype=object).to_numpy())
                pos = np.where(pos < 0, self.missing_code(j), pos)
                out[:, j] = np.where(codes < 0, self.missing_code(j), pos[np.maximum(codes, 0)] if len(pos) else 0)
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

    ``proba(Z)``, when set, is the model's positive-class probability of transformed rows: the
    transform was probed to be row-wise and column-separable (each transformed column a function
    of its owner's value alone, the same in any row) and ``proba(transform(X))`` was found equal,
    bit for bit, to the model's own probability of ``X``. Rows assembled from the columns of other
    rows can then be scored in the transformed space (``RowMixer``) without transforming them again.
    """

    kind: str
    reason: str
    final: Any = None
    transform: Callable[[pd.DataFrame], np.ndarray] | None = None
    owner: np.ndarray | None = None
    raw_output: Callable[[np.ndarray], np.ndarray] | None = None
    output_space: str = "probability of the positive class"
    estimator_name: str = ""
    proba: Callable[[np.ndarray], np.ndarray] | None = None

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


@dataclass(frozen=True)
class _Probe:
    """The transform of the probe rows (``Z[:m]``) and of one variant per input column (column j
    of every row replaced by that of row ``perm[i]``: ``Z[(j + 1) * m:(j + 2) * m]``)."""

    Z: np.ndarray
    m: int
    perm: np.ndarray
    sparse: bool  # the transform returns a sparse matrix

    @property
    def changed(self) -> np.ndarray:
        """(input columns x transformed columns): does shuffling input j move transformed k?"""
        m, Z0 = self.m, self.Z[: self.m]
        n_in = len(self.Z) // m - 1
        changed = np.zeros((n_in, self.Z.shape[1]), dtype=bool)
        for j in range(n_in):
            changed[j] = ~_same(self.Z[(j + 1) * m : (j + 2) * m], Z0).all(axis=0)
        return changed

    def separable(self, owner: np.ndarray) -> bool:
        """Every variant equals the probe rows with the owned columns of the shuffled input taken
        from the donor rows: the transform is row-wise and each transformed column depends on its
        owner's value only (what assembling rows in the transformed space needs)."""
        m, Z0 = self.m, self.Z[: self.m]
        for j in range(len(self.Z) // m - 1):
            own = owner == j
            want = np.where(own[None, :], Z0[self.perm], Z0)
            if not _same(self.Z[(j + 1) * m : (j + 2) * m], want).all():
                return False
        return True


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _probe_changes(
    transform: Callable[[pd.DataFrame], np.ndarray], X: pd.DataFrame, rng: np.random.Generator
) -> _Probe:
    """Transform the probe rows and, per input column, a variant where that column is shuffled."""
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
    out = transform(pd.concat(variants, ignore_index=True))
    return _Probe(_dense(out), m, perm, hasattr(out, "toarray"))


@dataclass(frozen=True)
class _Mapping:
    owner: np.ndarray
    separable: bool  # rows may be assembled in the transformed space (dense output, separable)
    probe_rows: np.ndarray  # the transform of the probe rows


def _pipeline_owner(
    pre: Any, columns: Sequence[str], probe: pd.DataFrame, rng: np.random.Generator
) -> _Mapping:
    """Map the preprocessor's outputs to input columns: structure first, always probe-verified.
    Also says whether rows may be assembled in the transformed space (``_Probe.separable``, and a
    dense output, which the final estimator then receives exactly as in the pipeline)."""
    transform = pre.transform
    probed = _probe_changes(transform, probe, rng)
    changed = probed.changed
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
    owner = owner.astype(np.int64)
    return _Mapping(owner, not probed.sparse and probed.separable(owner), probed.Z[: probed.m])


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

        view = ModelView(kind, "", final, ident, np.arange(len(cols)), raw, space, name)
        view.proba = _checked_proba(adapter, final, lambda: ident(probe), pos, probe)
        return view
    try:
        mapping = _pipeline_owner(pre, columns, probe, rng)
    except _Unmappable as exc:
        return ModelView(
            "blackbox",
            f"the pipeline's preprocessing cannot be mapped back to input columns ({exc}): the "
            "permutation explainer runs over the input columns instead",
            estimator_name=name,
        )

    def transform(X: pd.DataFrame) -> np.ndarray:
        return _dense(pre.transform(X))

    view = ModelView(kind, "", final, transform, mapping.owner, raw, space, name)
    if mapping.separable:
        view.proba = _checked_proba(adapter, final, lambda: mapping.probe_rows, pos, probe)
    return view


def _checked_proba(
    adapter: Any, final: Any, probe_Z: Callable[[], np.ndarray], pos: int, probe: pd.DataFrame
) -> Callable[[np.ndarray], np.ndarray] | None:
    """The final estimator's positive-class probability of transformed rows, if it is the
    model's own: the estimator has ``predict_proba`` and gives the adapter's probabilities of the
    probe rows (transformed: ``probe_Z()``) bit for bit (else None: such rows are scored through the
    adapter)."""
    if not hasattr(final, "predict_proba") or not getattr(adapter, "has_native_proba", False):
        return None

    def positive(Z: np.ndarray) -> np.ndarray:
        return np.asarray(final.predict_proba(Z), dtype=np.float64)[:, pos]

    proba = _quiet(positive)
    try:
        want = np.asarray(adapter.predict_proba(probe), dtype=np.float64)[:, pos]
        got = proba(probe_Z())
    except Exception:  # noqa: BLE001 - no shortcut; the adapter's own path is always there
        return None
    return proba if want.shape == got.shape and np.array_equal(want, got, equal_nan=True) else None


# --- scoring many rows assembled from a few ------------------------------------------------

#: Rows per model call: large enough that a call's fixed cost (validation, a pipeline's transform
#: set-up) vanishes, small enough that the batch stays in cache (a tree ensemble's per-row cost
#: rises on very large batches).
FRAME_CHUNK = 8192
TRANSFORMED_CHUNK = 2048


def _column_ids(values: Any) -> np.ndarray:
    """Integer id per value of a column, equal ids for the same input to a model: floats, dates
    and durations by their bits, integers and booleans by value, Python objects by type and value
    (a float also by its sign: -0.0 is not 0.0), every missing value by its kind; an object that
    cannot be hashed gets an id of its own."""
    arr = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if arr.dtype.kind == "f":
        arr = np.ascontiguousarray(arr, dtype=np.float64).view(np.uint64)
    elif arr.dtype.kind in "mM":
        arr = np.ascontiguousarray(arr).view(np.int64)
    if arr.dtype.kind in "biu":
        return np.unique(arr, return_inverse=True)[1].reshape(-1).astype(np.int64)
    seen: dict[Any, int] = {}
    ids = np.empty(len(arr), dtype=np.int64)
    for i, v in enumerate(arr if arr.dtype == object else arr.tolist()):
        if v is None or v is pd.NA or v is pd.NaT:
            key: Any = ("missing", repr(v))
        elif isinstance(v, float):
            key = ("missing", type(v)) if v != v else (type(v), v, math.copysign(1.0, v))
        else:
            key = (type(v), v)
        try:
            ids[i] = seen.setdefault(key, len(seen))
        except TypeError:  # unhashable: never merged with another value
            ids[i] = seen[("unhashable", i)] = len(seen)
    return ids


def unique_rows(K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of an integer matrix: (index of each distinct row's first occurrence, the
    distinct row of every row), such that ``K[first][inverse] == K``. Each row's columns are
    combined into one integer key (re-numbered whenever the key would overflow) and the keys
    sorted once, instead of sorting whole rows."""
    K = np.asarray(K)
    if K.ndim != 2 or K.shape[1] == 0 or len(K) == 0:
        n = len(K)
        first = np.zeros(min(n, 1), dtype=np.int64)
        return first, np.zeros(n, dtype=np.int64)
    key = np.zeros(len(K), dtype=np.int64)
    size = 1
    for j in range(K.shape[1]):
        col = K[:, j].astype(np.int64)
        lo, hi = int(col.min()), int(col.max())
        if hi - lo >= len(K):  # a sparse range: number its values 0, 1, ... first
            col = np.unique(col, return_inverse=True)[1].reshape(-1)
            lo, hi = 0, int(col.max())
        width = hi - lo + 1
        if size * width >= 2**62:
            key = np.unique(key, return_inverse=True)[1].reshape(-1)
            size = int(key.max()) + 1
        key = key * width + (col - lo)
        size *= width
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return first.astype(np.int64), inverse.reshape(-1).astype(np.int64)


class RowMixer:
    """The model's positive-class probability of rows assembled column by column from source rows.

    Row ``b`` of a batch takes input column ``j`` from source row ``S[b, j]``: a row with one
    column taken from another row (permutation importance), a row with some columns taken from a
    reference row (deletion and insertion curves). Such batches repeat themselves (a column whose
    donor holds the same value leaves the row as it was), so every distinct row is scored once.
    With a view whose ``proba`` is set, the source rows are transformed once and the batch rows
    assembled from their transformed columns; otherwise they are assembled as DataFrames (the
    source columns' dtypes kept) and scored through ``predict_frame``. Both give the model's
    probability of the assembled rows themselves.
    """

    def __init__(
        self,
        sources: pd.DataFrame,
        predict_frame: Callable[[pd.DataFrame], np.ndarray],
        view: ModelView | None = None,
    ) -> None:
        self.sources = sources.reset_index(drop=True)
        self.columns = list(self.sources.columns)
        self.predict_frame = predict_frame
        self.view = view if view is not None and view.proba is not None else None
        p = len(self.columns)
        ids = np.zeros((len(self.sources), p), dtype=np.int64)
        if self.view is not None:
            assert self.view.transform is not None and self.view.owner is not None
            self.Z = np.ascontiguousarray(self.view.transform(self.sources), dtype=np.float64)
            for j in range(p):
                own = np.flatnonzero(self.view.owner == j)
                if own.size:  # a column the model never sees leaves every row the same
                    ids[:, j] = unique_rows(bit_ids(self.Z[:, own]))[1]
        else:
            for j, c in enumerate(self.columns):
                ids[:, j] = _column_ids(self.sources[c])
        self.ids = ids
        self.rows_scored = 0

    @property
    def transformed(self) -> bool:
        return self.view is not None

    def __call__(self, S: np.ndarray) -> np.ndarray:
        S = np.asarray(S, dtype=np.int64)
        p = len(self.columns)
        first, inverse = unique_rows(self.ids[S, np.arange(p)])
        U = S[first]
        out = np.empty(len(U), dtype=np.float64)
        if self.view is not None:
            assert self.view.proba is not None and self.view.owner is not None
            owner = self.view.owner
            cols = np.arange(len(owner))
            for s in range(0, len(U), TRANSFORMED_CHUNK):
                block = U[s : s + TRANSFORMED_CHUNK]
                out[s : s + len(block)] = self.view.proba(self.Z[block[:, owner], cols])
        else:
            for s in range(0, len(U), FRAME_CHUNK):
                block = U[s : s + FRAME_CHUNK]
                frame = pd.DataFrame(
                    {c: self.sources[c].array.take(block[:, j]) for j, c in enumerate(self.columns)},
                    columns=self.columns,
                )
                out[s : s + len(block)] = np.asarray(self.predict_frame(frame), dtype=np.float64)
        self.rows_scored += len(U)
        return out[inverse]


def bit_ids(A: np.ndarray) -> np.ndarray:
    """(rows x columns) integer ids of a float matrix's values: equal bits, equal id."""
    bits = np.ascontiguousarray(A, dtype=np.float64).view(np.uint64)
    out = np.empty(bits.shape, dtype=np.int64)
    for k in range(bits.shape[1]):
        out[:, k] = np.unique(bits[:, k], return_inverse=True)[1].reshape(-1)
    return out
