"""Structural causal models over a causal graph (dowhy.gcm): fit, intervene, counterfactuals.

**Which part of the graph is modelled.** An intervention on the treatment T changes only T's
descendants, so the SCM covers T, the descendants of T that feed the model's inputs (directly or
through other nodes), and the parents of those descendants. Parents that are not descendants of
T are *exogenous* here: they keep their observed values in every intervention and counterfactual
(the same individual keeps their region, education...). Model inputs that are not graph nodes are
held fixed too, and reported. A latent node with a single child is absorbed into that child's
noise; a latent common cause of T or of a modelled descendant makes the SCM unidentified here, and
the analysis says so instead of running.

**Mechanisms, chosen deliberately by dtype** (DoWhy's automatic selection cross-validates several
model families per node: about 17 s for 3 nodes × 2,000 rows on a 2-core machine):

* roots: ``EmpiricalDistribution`` (resamples the observed values);
* numeric non-roots: ``AdditiveNoiseModel`` with a linear regressor (``mechanisms="linear"``) or
  a histogram gradient-boosting regressor (``"boosted"``): invertible, so each individual's noise
  can be recovered (abduction) for counterfactuals;
* categorical or binary non-roots: ``ClassifierFCM`` with a logistic regression (or gradient
  boosting): not invertible. Interventions draw them from the fitted class probabilities;
  counterfactuals draw each individual's noise from its posterior given the observed category
  under a Gumbel-max mechanism (``FittedSCM.abduct``, ``gumbel_posterior``), an assumption the
  results state;
* ``"auto"``: DoWhy's ``assign_causal_mechanisms`` with ``AssignmentQuality.GOOD``.

String columns stay strings: dowhy.gcm one-hot encodes string parents itself, and the model is
re-scored on frames whose columns keep their original dtypes.

**Randomness.** dowhy.gcm draws noise from NumPy's global generator; every call here seeds it
from the caller's seed inside a context that restores the previous global state. The two arms of
an interventional contrast use the same seed, so they share noise draws (common random numbers):
the contrast's Monte-Carlo noise cancels.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from causal._graph import CausalGraph

__all__ = [
    "FittedSCM",
    "NotIdentifiedError",
    "SCMPlan",
    "fit_scm",
    "plan_scm",
    "treatment_levels",
]

MECHANISMS = ("linear", "boosted", "auto")


class NotIdentifiedError(ValueError):
    """The requested SCM analysis cannot be done on this graph / data (the message says why)."""


def is_categorical(s: pd.Series) -> bool:
    """Text, boolean and categorical columns, and numeric columns with at most two values."""
    if (
        pd.api.types.is_bool_dtype(s)
        or isinstance(s.dtype, pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(s)
        or s.dtype == object
    ):
        return True
    return bool(pd.api.types.is_numeric_dtype(s) and s.nunique(dropna=True) <= 2)


def plain_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as NumPy object arrays: scikit-learn's encoders (used by dowhy.gcm and DoWhy's
    estimators on every refit) are several times slower on pandas' Arrow-backed strings."""
    conv = {c: object for c in frame.columns
            if pd.api.types.is_string_dtype(frame[c]) and frame[c].dtype != object}
    return frame.astype(conv) if conv else frame


def treatment_levels(
    values: pd.Series,
    name: str,
    *,
    treatment_value: Any = None,
    control_value: Any = None,
    max_levels: int = 10,
) -> tuple[Any, list[Any]]:
    """(control, [treated, ...]) in the column's own values.

    Default: the values in sorted order (as text), control first, every other value a treated
    level. ``treatment_value`` / ``control_value`` (matched as text, so ``1`` matches ``"1"``)
    fix either side. A numeric treatment with many values needs both.
    """
    uniq = list(pd.unique(values.dropna()))
    if len(uniq) < 2:
        raise NotIdentifiedError(f"the treatment '{name}' has a single value in the data; there is no contrast")
    by_text = {str(v): v for v in uniq}

    def find(v: Any, param: str) -> Any:
        if str(v) in by_text:
            return by_text[str(v)]
        shown = ", ".join(sorted(by_text)[:10])
        raise NotIdentifiedError(f"causal.{param} {v!r} is not a value of '{name}' (values: {shown})")

    if len(uniq) > max_levels and (treatment_value is None or control_value is None):
        raise NotIdentifiedError(
            f"the treatment '{name}' has {len(uniq)} values: name the contrast with causal.treatment_value "
            "and causal.control_value"
        )
    ordered = [by_text[k] for k in sorted(by_text)]
    control = find(control_value, "control_value") if control_value is not None else ordered[0]
    if treatment_value is not None:
        treated = [find(treatment_value, "treatment_value")]
        if str(treated[0]) == str(control):
            raise NotIdentifiedError("causal.treatment_value and causal.control_value are the same value")
    else:
        treated = [v for v in ordered if str(v) != str(control)]
    return control, treated


@contextlib.contextmanager
def seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator (dowhy.gcm draws from it) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(int(seed) % (2**32))
    try:
        yield
    finally:
        np.random.set_state(state)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """One thread for BLAS and OpenMP during the many small fits and predictions here. On a busy
    2-core machine OpenBLAS' own threading made a 10,000 x 9 SVD 35 times slower (150 ms instead of
    4 ms), and OpenMP threads of a gradient-boosting model's ``predict_proba`` spun for minutes."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


F = TypeVar("F", bound=Callable[..., Any])


def blas_single_thread(func: F) -> F:
    """Decorator: run ``func`` under ``single_threaded_blas``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with single_threaded_blas():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    from dowhy.gcm import config

    config.disable_progress_bars()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@dataclass(frozen=True)
class SCMPlan:
    """Which nodes the SCM covers for interventions on ``treatment`` (see the module docstring)."""

    treatment: str
    nodes: tuple[str, ...]  # topological order
    edges: tuple[tuple[str, str], ...]
    affected: tuple[str, ...]  # modelled descendants of the treatment, topological order
    exogenous: tuple[str, ...]  # parents kept at observed values
    categorical: frozenset[str]  # nodes modelled as categorical
    inputs_changed: tuple[str, ...]  # model inputs an intervention can change (treatment included)
    inputs_fixed_not_in_graph: tuple[str, ...]
    latent_absorbed: tuple[str, ...]

    @property
    def non_invertible(self) -> tuple[str, ...]:
        return tuple(n for n in self.affected if n in self.categorical)

    def describe(self) -> dict[str, Any]:
        return {
            "scm_nodes": list(self.nodes),
            "scm_affected_nodes": list(self.affected),
            "scm_exogenous_nodes": list(self.exogenous),
            "inputs_changed_by_intervention": list(self.inputs_changed),
            "inputs_not_in_graph_held_fixed": list(self.inputs_fixed_not_in_graph),
            "latent_absorbed_into_noise": list(self.latent_absorbed),
        }


def plan_scm(graph: CausalGraph, treatment: str, inputs: Sequence[str], data: pd.DataFrame) -> SCMPlan:
    """Decide the SCM's nodes for interventions on ``treatment`` feeding a model with ``inputs``."""
    inputs = [str(c) for c in inputs]
    in_graph = [c for c in inputs if c in graph]
    desc = graph.descendants(treatment)
    relevant: set[str] = set()
    for d in desc:
        if d in in_graph or (graph.descendants(d) & set(in_graph)):
            if d in graph.latent:
                hit = sorted((graph.descendants(d) | {d}) & set(in_graph))
                raise NotIdentifiedError(
                    f"'{d}' is latent and lies on a causal path from '{treatment}' to the model input "
                    f"'{hit[0]}': the structural causal model cannot be fitted without its data"
                )
            relevant.add(d)
    absorbed: set[str] = set()
    nodes: set[str] = {treatment} | relevant
    edges: list[tuple[str, str]] = []
    for r in relevant:
        for p in graph.parents(r):
            if p in graph.latent:
                kids = graph.children(p)
                if len(kids) > 1:
                    others = [k for k in kids if k != r]
                    raise NotIdentifiedError(
                        f"latent '{p}' is a common cause of '{r}' and '{others[0]}': the mechanism of '{r}' "
                        f"(a descendant of '{treatment}') is confounded and the SCM is not identified"
                    )
                absorbed.add(p)
                continue
            nodes.add(p)
            edges.append((p, r))
    order = [n for n in graph.topological_order() if n in nodes]
    categorical = frozenset(n for n in order if n in data.columns and is_categorical(data[n]))
    changed = [c for c in inputs if c in relevant or c == treatment]
    return SCMPlan(
        treatment=treatment,
        nodes=tuple(order),
        edges=tuple(sorted(edges, key=lambda e: (order.index(e[1]), order.index(e[0])))),
        affected=tuple(n for n in order if n in relevant),
        exogenous=tuple(n for n in order if n not in relevant and n != treatment),
        categorical=categorical,
        inputs_changed=tuple(changed),
        inputs_fixed_not_in_graph=tuple(c for c in inputs if c not in graph),
        latent_absorbed=tuple(sorted(absorbed)),
    )


@functools.cache
def _least_squares_class() -> type:
    """A gcm PredictionModel doing ordinary least squares with its own one-hot coding.

    Same fit as gcm's ``create_linear_regressor()`` (scikit-learn's LinearRegression after a
    OneHotEncoder), but the coding is a NumPy lookup instead of an encoder call with its input
    validation on every fit and prediction: the SCM is refitted and evaluated hundreds of times per
    bootstrap, where that overhead was most of the cost.
    """
    from dowhy.gcm.ml.prediction_model import PredictionModel

    class LeastSquaresModel(PredictionModel):  # type: ignore[misc]
        def __init__(self) -> None:
            self._levels: list[list[Any] | None] = []
            self._coef: np.ndarray | None = None

        def _design(self, X: np.ndarray) -> np.ndarray:
            X = X.reshape(len(X), -1)
            parts = [np.ones((len(X), 1))]
            for j, levels in enumerate(self._levels):
                col = X[:, j]
                if levels is None:
                    parts.append(col.astype(float).reshape(-1, 1))
                else:
                    index = {v: i for i, v in enumerate(levels)}
                    inverse, uniq = pd.factorize(col)  # hash-based: far cheaper than sorting objects
                    table = np.fromiter((index.get(v, -1) for v in uniq), dtype=np.int64, count=len(uniq))
                    codes = np.where(inverse >= 0, table[np.maximum(inverse, 0)] if len(table) else -1, -1)
                    onehot = np.zeros((len(col), len(levels)))
                    hit = codes >= 0  # unseen values code to no level (all zeros)
                    onehot[np.flatnonzero(hit), codes[hit]] = 1.0
                    parts.append(onehot[:, 1:])  # first level is the reference
            return np.hstack(parts)

        def fit(self, X: np.ndarray, Y: np.ndarray) -> None:
            X = X.reshape(len(X), -1)
            self._levels = []
            for j in range(X.shape[1]):
                col = X[:, j]
                if len(col) and isinstance(col[0], (str, bool, np.bool_)):
                    self._levels.append(sorted(set(col.tolist()), key=str))
                else:
                    self._levels.append(None)
            self._coef, *_ = np.linalg.lstsq(self._design(X), np.asarray(Y, dtype=float).reshape(-1), rcond=None)

        def predict(self, X: np.ndarray) -> np.ndarray:
            assert self._coef is not None
            return (self._design(X) @ self._coef).reshape(-1, 1)

        def clone(self) -> LeastSquaresModel:
            return LeastSquaresModel()

        def __str__(self) -> str:
            return "least squares (one-hot coded categories)"

    return LeastSquaresModel


def _mechanism(kind: str, categorical: bool) -> tuple[Any, str]:
    from dowhy import gcm

    if categorical:
        if kind == "boosted":
            return gcm.ClassifierFCM(gcm.ml.create_hist_gradient_boost_classifier(max_iter=100)), (
                "ClassifierFCM(hist gradient boosting)"
            )
        return gcm.ClassifierFCM(gcm.ml.create_logistic_regression_classifier(max_iter=1000)), (
            "ClassifierFCM(logistic regression)"
        )
    if kind == "boosted":
        return gcm.AdditiveNoiseModel(gcm.ml.create_hist_gradient_boost_regressor(max_iter=100)), (
            "AdditiveNoiseModel(hist gradient boosting)"
        )
    return gcm.AdditiveNoiseModel(_least_squares_class()()), "AdditiveNoiseModel(linear regression)"


@dataclass
class FittedSCM:
    """A dowhy.gcm SCM fitted on ``data`` following ``plan``."""

    plan: SCMPlan
    scm: Any
    mechanisms: dict[str, str]
    n_rows: int
    kind: str
    invertible: bool = True

    # -- what-if queries ----------------------------------------------------------------------

    def interventional(self, rows: pd.DataFrame, value: Any, seed: int) -> pd.DataFrame:
        """do(treatment := value) on ``rows``: affected nodes re-drawn from their mechanisms
        (fresh noise from ``seed``; the same seed gives the same noise for any value)."""
        return self.propagate(self.draw_noise(rows, seed), {self.plan.treatment: value})

    def counterfactual(self, rows: pd.DataFrame, value: Any, seed: int = 0) -> pd.DataFrame:
        """The same individuals had the treatment been ``value``: noise recovered from the data
        (exactly for additive-noise nodes, a posterior draw for categorical ones; ``abduct``)."""
        return self.propagate(self.abduct(rows, seed), {self.plan.treatment: value})

    def draw_noise(self, rows: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
        """Prior noise for ``rows``: roots (the treatment and the exogenous parents) keep their
        observed values; every other node gets a fresh draw from its fitted noise distribution
        (additive-noise residuals resampled; Uniform(0, 1) for a classifier's inverse-CDF draw)."""
        from dowhy.graph import get_ordered_predecessors

        g = self.scm.graph
        noise: dict[str, np.ndarray] = {}
        with _quiet(), seeded_global_numpy(seed):
            for node in self.plan.nodes:
                if not get_ordered_predecessors(g, node):
                    noise[node] = rows[node].to_numpy()
                else:
                    noise[node] = np.asarray(self.scm.causal_mechanism(node).draw_noise_samples(len(rows))).reshape(-1)
        return noise

    def abduct(self, rows: pd.DataFrame, seed: int = 0) -> dict[str, np.ndarray]:
        """Each individual's noise given their data. Roots: the observed values. Additive-noise
        nodes: the residual (exact). Categorical nodes: one draw from the noise posterior under a
        Gumbel-max mechanism (``gumbel_posterior``): the class is argmax_j(log p_j(parents) + g_j)
        with g_j iid standard Gumbel, and g is drawn given that the argmax was the observed class."""
        from dowhy.graph import get_ordered_predecessors

        g = self.scm.graph
        rng = np.random.default_rng(seed)
        noise: dict[str, np.ndarray] = {}
        with _quiet():
            for node in self.plan.nodes:
                parents = get_ordered_predecessors(g, node)
                if not parents:
                    noise[node] = rows[node].to_numpy()
                    continue
                mech = self.scm.causal_mechanism(node)
                if node in self.plan.categorical:
                    proba = np.asarray(mech.estimate_probabilities(rows[parents].to_numpy()), dtype=float)
                    classes = [str(c) for c in mech.classifier_model.classes]
                    index = {c: i for i, c in enumerate(classes)}
                    observed = np.fromiter((index.get(str(v), -1) for v in rows[node].to_numpy()), dtype=np.int64,
                                           count=len(rows))
                    if (observed < 0).any():
                        raise NotIdentifiedError(f"'{node}' holds a value its fitted mechanism never saw")
                    noise[node] = gumbel_posterior(proba, observed, rng)
                else:
                    noise[node] = np.asarray(
                        mech.estimate_noise(rows[node].to_numpy(), rows[parents].to_numpy())).reshape(-1)
        return noise

    def propagate(self, noise: Mapping[str, np.ndarray], fixed: Mapping[str, Any]) -> pd.DataFrame:
        """Evaluate the SCM on given noise, with ``fixed`` nodes set (a value or one per row).

        A categorical node whose noise is a matrix (one Gumbel per class, from ``abduct``) takes
        argmax_j(log p_j + g_j); with a vector of uniforms (``draw_noise``) it takes the fitted
        classifier's inverse-CDF draw (dowhy.gcm's ``ClassifierFCM.evaluate``)."""
        vals = self.propagate_arrays(noise, fixed)
        return pd.DataFrame({k: pd.Series(v, dtype=v.dtype) for k, v in vals.items()})

    def propagate_arrays(self, noise: Mapping[str, np.ndarray], fixed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``propagate`` returning one NumPy array per node (no DataFrame: this runs hundreds of
        times per bootstrap, where pandas' per-column overhead was most of the cost)."""
        from dowhy.graph import get_ordered_predecessors

        g = self.scm.graph
        n = len(next(iter(noise.values())))
        out: dict[str, np.ndarray] = {}
        with _quiet():
            for node in self.plan.nodes:
                if node in fixed:
                    v = fixed[node]
                    out[node] = np.asarray(v) if np.ndim(v) else np.repeat(np.array([v], dtype=object), n)
                    continue
                parents = get_ordered_predecessors(g, node)
                u = noise[node]
                if not parents:
                    out[node] = np.asarray(u)
                    continue
                mech = self.scm.causal_mechanism(node)
                x = _stack([out[p] for p in parents])
                if np.ndim(u) == 2:
                    proba = np.asarray(mech.estimate_probabilities(x), dtype=float)
                    with np.errstate(divide="ignore"):
                        idx = np.argmax(np.log(proba) + u, axis=1)
                    classes = np.asarray(mech.classifier_model.classes, dtype=object)
                    out[node] = classes[idx]
                else:
                    out[node] = np.asarray(mech.evaluate(x, u)).reshape(-1)
        return out

    def require_invertible(self) -> None:
        """Raise ``NotIdentifiedError`` when a modelled descendant is categorical (no exact abduction)."""
        bad = self.plan.non_invertible
        if bad:
            raise NotIdentifiedError(
                f"counterfactuals need invertible mechanisms, but '{bad[0]}' (a descendant of "
                f"'{self.plan.treatment}') is categorical: its noise cannot be recovered from data"
            )


def _stack(cols: Sequence[np.ndarray]) -> np.ndarray:
    """Columns side by side as dowhy.gcm expects them: float when all are numeric, else object."""
    if all(c.dtype.kind in "fiub" for c in cols):
        return np.column_stack(cols).astype(float, copy=False)
    out = np.empty((len(cols[0]), len(cols)), dtype=object)
    for j, c in enumerate(cols):
        out[:, j] = c
    return out


def gumbel_posterior(proba: np.ndarray, observed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gumbel noise g (n, k) drawn from its posterior given argmax_j(log p_j + g_j) = observed
    (Oberst & Sontag 2019, top-down truncated Gumbels): the maximum of log p_j + g_j is a standard
    Gumbel (the p_j sum to one) reached at the observed class; every other class's perturbed
    logit is a Gumbel with location log p_j truncated below that maximum."""
    n, k = proba.shape
    with np.errstate(divide="ignore"):
        logp = np.log(np.clip(proba, 0.0, 1.0))
    top = rng.gumbel(size=(n, 1))
    other = logp + rng.gumbel(size=(n, k))
    # a Gumbel(loc) truncated at `top`: -log(exp(-top) + exp(-G)), G ~ Gumbel(loc)
    trunc = -np.logaddexp(-top, -other)
    perturbed = np.where(np.arange(k)[None, :] == observed[:, None], top, trunc)
    with np.errstate(invalid="ignore"):
        g = perturbed - logp
    return np.where(np.isfinite(logp), g, 0.0)


def fit_scm(plan: SCMPlan, data: pd.DataFrame, *, kind: str = "linear", seed: int = 0) -> FittedSCM:
    """Fit the plan's SCM on ``data`` (rows with a missing value in a modelled column dropped)."""
    import networkx as nx
    from dowhy import gcm

    if kind not in MECHANISMS:
        raise ValueError(f"mechanisms must be one of {', '.join(MECHANISMS)}, got {kind!r}")
    g = nx.DiGraph()
    g.add_nodes_from(plan.nodes)
    g.add_edges_from(plan.edges)
    invertible = not plan.non_invertible
    scm = gcm.InvertibleStructuralCausalModel(g) if invertible else gcm.StructuralCausalModel(g)
    rows = data[list(plan.nodes)].dropna()
    mechanisms: dict[str, str] = {}
    with _quiet(), seeded_global_numpy(seed):
        if kind == "auto":
            gcm.auto.assign_causal_mechanisms(scm, rows, quality=gcm.auto.AssignmentQuality.GOOD)
            for n in plan.nodes:
                mechanisms[n] = type(scm.causal_mechanism(n)).__name__
        else:
            for n in plan.nodes:
                if g.in_degree(n) == 0:
                    scm.set_causal_mechanism(n, gcm.EmpiricalDistribution())
                    mechanisms[n] = "EmpiricalDistribution (root: observed values)"
                else:
                    mech, desc = _mechanism(kind, n in plan.categorical)
                    scm.set_causal_mechanism(n, mech)
                    mechanisms[n] = desc
        gcm.fit(scm, rows)
    return FittedSCM(plan, scm, mechanisms, len(rows), kind, invertible)


def apply_to_inputs(X: pd.DataFrame, values: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy of the model-input frame ``X`` with ``columns`` replaced by ``values`` (same rows),
    keeping each column's dtype so the model sees what it was trained on."""
    out = X.copy()
    for c in columns:
        v = pd.Series(np.asarray(values[c]), index=X.index)
        try:
            out[c] = v.astype(X[c].dtype)
        except (TypeError, ValueError):
            out[c] = v
    return out
