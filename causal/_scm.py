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
model families per node, many times slower; bench/bench_causal.py measures it):

* roots: their observed values (dowhy.gcm's ``EmpiricalDistribution``);
* numeric non-roots: an additive-noise model with a linear regressor (``mechanisms="linear"``:
  least squares on one-hot coded categories, here in NumPy) or a histogram gradient-boosting
  regressor (``"boosted"``, dowhy.gcm's ``AdditiveNoiseModel``): invertible, so each individual's
  noise can be recovered (abduction) for counterfactuals;
* categorical or binary non-roots: a classifier (``"linear"``: scikit-learn's L2-penalised
  logistic regression, solved here by Newton's method; ``"boosted"``: dowhy.gcm's ``ClassifierFCM``
  with gradient boosting): not invertible. Interventions draw them from the fitted class
  probabilities; counterfactuals draw each individual's noise from its posterior given the
  observed category under a Gumbel-max mechanism (``FittedSCM.abduct``, ``gumbel_posterior``), an
  assumption the results state;
* ``"auto"``: DoWhy's ``assign_causal_mechanisms`` with ``AssignmentQuality.GOOD``.

The ``"linear"`` mechanisms are fitted in NumPy with row weights (a bootstrap replicate is the
original rows weighted by their draw counts) and warm starts from the full-sample fit: the SCM is
refitted on every replicate, and scikit-learn's lbfgs on the raw parents of a 14-level node spent
about a second per fit at its iteration cap.

String columns stay strings: dowhy.gcm one-hot encodes string parents itself, and the model is
re-scored on frames whose columns keep their original dtypes.

**Randomness.** Every draw comes from a generator seeded by the caller (dowhy.gcm draws from NumPy's
global generator: it is seeded inside a context that restores the previous global state). The two
arms of an interventional contrast use the same seed, so they share noise draws (common random
numbers): the contrast's Monte-Carlo noise cancels.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
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
    2-core machine OpenBLAS' own threading made a small SVD many times slower, and OpenMP threads of a gradient-boosting model's ``predict_proba`` spun for minutes."""
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


# --- the "linear" mechanisms, in NumPy ------------------------------------------------------------
#
# The SCM is refitted on every bootstrap replicate (51 fits by default). scikit-learn's lbfgs
# multinomial regression on the raw (unscaled) parents of a 14-level node ran into its 1,000
# iteration cap on every fit (most of the analysis' time); dowhy.gcm's per-call encoding
# and validation added the rest. These fit the same models: ordinary least squares with one-hot
# coded categories (reference coding), and scikit-learn's L2-penalised logistic regression
# (``C * sum(loss) + ||coef||^2 / 2``, intercepts unpenalised, multinomial with one coefficient
# vector per class, binomial for two classes) solved by Newton's method to convergence. They take
# row weights, so a bootstrap replicate is fitted as the original rows weighted by how often they
# were drawn (the same fit as on the resampled rows), and a replicate starts from the full-sample
# fit, reusing its Hessian (``_Logit``).


class _Coder:
    """One parent column as numbers: numeric as is, text and booleans one-hot coded (all levels, as
    dowhy.gcm codes a classifier's inputs, or all but the first as reference coding for least
    squares). Levels come from the data the coder is built on; unseen values code to all zeros."""

    def __init__(self, values: np.ndarray, *, drop_first: bool) -> None:
        first = values[0] if len(values) else None
        self.levels: list[Any] | None = None
        if isinstance(first, (str, bool, np.bool_)):
            self.levels = sorted(set(values.tolist()), key=str)
        self.drop_first = drop_first
        self._index = {v: i for i, v in enumerate(self.levels or ())}

    @property
    def width(self) -> int:
        if self.levels is None:
            return 1
        return len(self.levels) - (1 if self.drop_first else 0)

    def fill(self, out: np.ndarray, values: np.ndarray) -> None:
        """Write the coded columns of ``values`` into ``out`` (n x width)."""
        if self.levels is None:
            out[:, 0] = np.asarray(values, dtype=float)
            return
        inverse, uniq = pd.factorize(values)  # hash-based: far cheaper than sorting objects
        table = np.fromiter((self._index.get(v, -1) for v in uniq), dtype=np.int64, count=len(uniq))
        codes = np.where(inverse >= 0, table[np.maximum(inverse, 0)] if len(table) else -1, -1)
        if self.drop_first:
            codes = codes - 1
        out[:] = 0.0
        hit = codes >= 0
        out[np.flatnonzero(hit), codes[hit]] = 1.0


class _Design:
    """The design matrix [1, coded parents...] of one node's mechanism."""

    def __init__(self, parents: Sequence[str], cols: Sequence[np.ndarray], *, drop_first: bool) -> None:
        self.parents = tuple(parents)
        self.coders = [_Coder(c, drop_first=drop_first) for c in cols]
        self.width = 1 + sum(c.width for c in self.coders)

    def matrix(self, cols: Sequence[np.ndarray]) -> np.ndarray:
        n = len(cols[0]) if cols else 0
        D = np.empty((n, self.width))
        D[:, 0] = 1.0
        j = 1
        for coder, col in zip(self.coders, cols, strict=True):
            coder.fill(D[:, j:j + coder.width], np.asarray(col))
            j += coder.width
        return D


class _LinearANM:
    """Additive noise, linear in the coded parents (weighted least squares); the noise distribution
    is the residuals' empirical distribution (weighted like the rows they come from)."""

    categorical = False

    def __init__(self, design: _Design) -> None:
        self.design = design
        self.parents = design.parents
        self.coef = np.zeros(design.width)
        self.residuals = np.zeros(0)
        self.residual_weights = np.zeros(0)

    @classmethod
    def fit(cls, parents: Sequence[str], cols: Sequence[np.ndarray], y: np.ndarray, w: np.ndarray,
            warm: _LinearANM | None = None) -> _LinearANM:
        m = cls(warm.design if warm is not None else _Design(parents, cols, drop_first=True))
        D = m.design.matrix(cols)
        y = np.asarray(y, dtype=float)
        sw = np.sqrt(w)
        m.coef, *_ = np.linalg.lstsq(D * sw[:, None], y * sw, rcond=None)
        m.residuals = y - D @ m.coef
        m.residual_weights = np.asarray(w, dtype=float)
        return m

    def mean(self, cols: Sequence[np.ndarray]) -> np.ndarray:
        return self.design.matrix(cols) @ self.coef

    def evaluate(self, cols: Sequence[np.ndarray], noise: np.ndarray) -> np.ndarray:
        return self.mean(cols) + np.asarray(noise, dtype=float).reshape(-1)

    def estimate_noise(self, y: np.ndarray, cols: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(y, dtype=float) - self.mean(cols)

    def draw_noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        p = self.residual_weights / self.residual_weights.sum()
        return self.residuals[rng.choice(len(self.residuals), size=n, replace=True, p=p)]


def _class_codes(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Position of each value in ``classes`` (matched as text, so 1 matches "1"); -1 if absent."""
    inverse, uniq = pd.factorize(np.asarray(values))
    index = {str(c): i for i, c in enumerate(np.asarray(classes).tolist())}
    table = np.fromiter((index.get(str(v), -1) for v in uniq), dtype=np.int64, count=len(uniq))
    return np.where(inverse >= 0, table[np.maximum(inverse, 0)] if len(table) else -1, -1)


def _softmax(eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, log-probabilities) of logits ``eta`` (n x K)."""
    z = eta - eta.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    return e / s, z - np.log(s)


class _Logit:
    """scikit-learn's ``LogisticRegression(C=1)`` (lbfgs, L2) as a weighted Newton solve.

    Objective ``sum_i w_i * (-log p_{i, y_i}) + ||coef||^2 / (2 C)``, intercepts unpenalised:
    multinomial with a coefficient vector per class (one intercept fixed at 0: the likelihood does
    not see a common shift) for three or more classes, binomial for two. Classes are the values
    present among the rows with positive weight, sorted (scikit-learn's ``classes_``)."""

    categorical = True
    C = 1.0
    #: Newton iterations before giving up (the fit then raises, and a bootstrap replicate counts as failed)
    MAX_ITER = 200
    #: a warm-started fit stops when every step is below this share of the parameter's standard error
    TOL_SE = 1e-4
    #: refresh the Hessian after a step larger than this many tolerances (else reuse its factor)
    REFRESH = 1e3

    def __init__(self, design: _Design, classes: np.ndarray) -> None:
        self.design = design
        self.parents = design.parents
        self.classes = classes
        self.theta = np.zeros((design.width, len(classes)))
        self.std_errors: np.ndarray | None = None  # of the free parameters (p x K, 0 where fixed)

    # parameters: theta (p x K); vec order k * p + j; the free ones are masked
    def _free(self) -> np.ndarray:
        p, k = self.theta.shape
        free = np.ones((p, k), dtype=bool)
        if k == 2:
            free[:, 0] = False  # binomial: class 0 is the reference
        else:
            free[0, 0] = False  # multinomial: one intercept fixed (the likelihood sees no common shift)
        return free

    def _penalty(self) -> np.ndarray:
        pen = np.full(self.theta.shape, 1.0 / self.C)
        pen[0, :] = 0.0  # intercepts
        return pen

    @staticmethod
    def _objective(D: np.ndarray, Y: np.ndarray, w: np.ndarray, theta: np.ndarray,
                   pen: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        if theta.shape[1] == 2:  # binomial: class 0's logit is fixed at 0
            eta = D @ theta[:, 1]
            s = np.exp(-np.logaddexp(0.0, -eta))  # sigmoid
            log1pexp = np.logaddexp(0.0, eta)
            f = float(w @ (log1pexp - Y[:, 1] * eta)) + 0.5 * float(pen[:, 1] @ theta[:, 1] ** 2)
            G = np.zeros_like(theta)
            G[:, 1] = D.T @ (w * (s - Y[:, 1])) + pen[:, 1] * theta[:, 1]
            return f, G, np.column_stack([1.0 - s, s])
        P, logP = _softmax(D @ theta)
        f = -float(np.dot(w, (logP * Y).sum(axis=1))) + 0.5 * float((pen * theta * theta).sum())
        G = D.T @ (w[:, None] * (P - Y)) + pen * theta
        return f, G, P

    @staticmethod
    def _hessian(D: np.ndarray, w: np.ndarray, P: np.ndarray, pen: np.ndarray) -> np.ndarray:
        n, p = D.shape
        k = P.shape[1]
        if k == 2:  # binomial: only class 1's block is used (class 0's parameters are fixed)
            H = np.zeros((2 * p, 2 * p))
            H[:p, :p] = np.eye(p)
            H[p:, p:] = (D * (w * P[:, 0] * P[:, 1])[:, None]).T @ D + np.diag(pen[:, 1])
            return H
        Z = (P[:, :, None] * D[:, None, :]).reshape(n, k * p) * np.sqrt(w)[:, None]
        H = -(Z.T @ Z)
        WP = w[:, None] * P
        for c in range(k):
            sl = slice(c * p, (c + 1) * p)
            H[sl, sl] += (D * WP[:, c:c + 1]).T @ D
        H[np.diag_indices_from(H)] += pen.T.reshape(-1)
        return H

    @classmethod
    def fit(cls, parents: Sequence[str], cols: Sequence[np.ndarray], y: np.ndarray, w: np.ndarray,
            warm: _Logit | None = None) -> _Logit:
        """Fit on rows weighted by ``w``. ``warm`` (a fit of the same node, e.g. on the full sample)
        gives the parents' coding and the starting point, and its standard errors set the
        tolerance: a bootstrap replicate lies about one standard error from the full-sample fit,
        and stops when every Newton step is below 1e-4 of a standard error."""
        from scipy.linalg import cho_factor, cho_solve

        y = np.asarray(y)
        try:
            classes = np.unique(y)
        except TypeError:  # mixed types: order as text
            classes = np.asarray(sorted(set(y.tolist()), key=str), dtype=object)
        if len(classes) < 2:
            raise ValueError(f"a categorical node needs at least two classes in the data; got {len(classes)}")
        design = warm.design if warm is not None else _Design(parents, cols, drop_first=False)
        m = cls(design, np.asarray(classes, dtype=object) if y.dtype == object else classes)
        codes = _class_codes(y, m.classes)
        D = design.matrix(cols)
        n, p = D.shape
        k = len(m.classes)
        Y = np.zeros((n, k))
        Y[np.arange(n), codes] = 1.0
        w = np.asarray(w, dtype=float)
        pen = m._penalty()
        fvec = m._free().T.reshape(-1)  # vec order k * p + j
        tol = 1e-9 * np.ones(int(fvec.sum()))
        relative = True
        theta = m.theta
        if warm is not None and (k > 2) == (len(warm.classes) > 2):
            pos = {str(v): i for i, v in enumerate(warm.classes.tolist())}
            sel = [pos[str(c)] for c in m.classes.tolist()]
            theta = warm.theta[:, sel].copy()
            if k == 2:
                theta[:, 1] -= theta[:, 0]
                theta[:, 0] = 0.0
            else:
                theta[0, :] -= theta[0, 0]
            if warm.std_errors is not None:
                tol = cls.TOL_SE * warm.std_errors[:, sel].T.reshape(-1)[fvec]
                relative = False
        f, G, P = m._objective(D, Y, w, theta, pen)
        g = G.T.reshape(-1)[fvec]
        factor = None  # the Cholesky factor of the Hessian in use
        for _ in range(cls.MAX_ITER):
            fresh = factor is None
            if fresh:
                H = m._hessian(D, w, P, pen)[np.ix_(fvec, fvec)]
                try:
                    factor = cho_factor(H)
                except np.linalg.LinAlgError:
                    factor = cho_factor(H + 1e-10 * np.abs(np.diag(H)).max() * np.eye(len(H)))
            step = cho_solve(factor, g)
            full = np.zeros(k * p)
            full[fvec] = step
            delta = full.reshape(k, p).T
            limit = tol * (1.0 + np.abs(theta.T.reshape(-1)[fvec])) if relative else tol
            t = 1.0
            while True:  # backtracking (Armijo, up to rounding)
                new = theta - t * delta
                f_new, G_new, P_new = m._objective(D, Y, w, new, pen)
                if f_new <= f - 1e-4 * t * float(g @ step) + 1e-12 * abs(f) or t < 1e-3:
                    break
                t *= 0.5
            if t < 1e-3:
                if np.all(np.abs(step) <= limit):
                    break  # converged: what is left of the step is rounding
                if fresh:
                    raise ValueError("the logistic regression of a categorical node did not converge")
                factor = None  # a stale Hessian: refresh it and retry
                continue
            size = np.abs(t * step)
            theta, f, g, P = new, f_new, G_new.T.reshape(-1)[fvec], P_new
            if np.all(size <= limit):
                break
            # Newton's error after a step is about the square of the step's: keep the factor while
            # steps are small (the Hessian barely moves), else refresh it at the new point
            if np.any(size > cls.REFRESH * limit) or t < 1.0:
                factor = None
        else:
            raise ValueError("the logistic regression of a categorical node did not converge")
        m.theta = theta
        if warm is None:  # the full-sample fit: keep its standard errors for the replicates' tolerance
            H_full = m._hessian(D, w, P, pen)[np.ix_(fvec, fvec)]
            try:
                se = np.zeros(k * p)
                se[fvec] = np.sqrt(np.clip(np.diag(np.linalg.inv(H_full)), 0.0, None))
                m.std_errors = se.reshape(k, p).T
            except np.linalg.LinAlgError:
                m.std_errors = None
        return m

    def proba(self, cols: Sequence[np.ndarray]) -> np.ndarray:
        return _softmax(self.design.matrix(cols) @ self.theta)[0]


class _GcmNode:
    """A fitted dowhy.gcm mechanism (``"boosted"`` and ``"auto"``) behind the same small interface."""

    def __init__(self, mech: Any, parents: Sequence[str], categorical: bool) -> None:
        self.mech = mech
        self.parents = tuple(parents)
        self.categorical = categorical

    @property
    def classes(self) -> np.ndarray:
        return np.asarray(self.mech.classifier_model.classes, dtype=object)

    def proba(self, cols: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(self.mech.estimate_probabilities(_stack(cols)), dtype=float)

    def evaluate(self, cols: Sequence[np.ndarray], noise: np.ndarray) -> np.ndarray:
        return np.asarray(self.mech.evaluate(_stack(cols), np.asarray(noise).reshape(-1, 1))).reshape(-1)

    def estimate_noise(self, y: np.ndarray, cols: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(self.mech.estimate_noise(np.asarray(y), _stack(cols))).reshape(-1)

    def draw_noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        # dowhy.gcm draws from NumPy's global generator: seeded from rng here
        with seeded_global_numpy(int(rng.integers(0, 2**32))):
            return np.asarray(self.mech.draw_noise_samples(n)).reshape(-1)


def _gcm_mechanism(kind: str, categorical: bool) -> tuple[Any, str]:
    from dowhy import gcm

    if categorical:
        return gcm.ClassifierFCM(gcm.ml.create_hist_gradient_boost_classifier(max_iter=100)), (
            "ClassifierFCM(hist gradient boosting)"
        )
    return gcm.AdditiveNoiseModel(gcm.ml.create_hist_gradient_boost_regressor(max_iter=100)), (
        "AdditiveNoiseModel(hist gradient boosting)"
    )


#: how each kind of node is described in the results (the same words for every backend)
_ROOT = "EmpiricalDistribution (root: observed values)"
_LINEAR_NUMERIC = "AdditiveNoiseModel(linear regression)"
_LINEAR_CATEGORICAL = "ClassifierFCM(logistic regression)"


@dataclass(frozen=True)
class GumbelVariates:
    """Standard Gumbel draws fixed per individual and class, for ``gumbel_posterior``: the same
    draws serve the full-sample fit and every bootstrap replicate (each replicate's posterior noise
    is then a function of its fitted probabilities and the individual's draws: the individual and
    their draws are resampled together)."""

    top: np.ndarray  # (n,)
    other: np.ndarray  # (n, K): one column per class of ``classes``
    classes: tuple[Any, ...]

    def take(self, rows: np.ndarray, classes: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        pos = {str(c): j for j, c in enumerate(self.classes)}
        cols = [pos[str(c)] for c in classes]
        return self.top[rows].reshape(-1, 1), self.other[np.ix_(rows, cols)]


@dataclass
class FittedSCM:
    """An SCM fitted on ``data`` following ``plan``: NumPy mechanisms (``kind="linear"``) or dowhy.gcm
    ones (``scm`` holds the dowhy.gcm model then)."""

    plan: SCMPlan
    scm: Any
    mechanisms: dict[str, str]
    n_rows: int
    kind: str
    invertible: bool = True
    models: dict[str, Any] = field(default_factory=dict)  # node -> fitted mechanism (roots: none)

    def parents(self, node: str) -> tuple[str, ...]:
        m = self.models.get(node)
        return () if m is None else tuple(m.parents)

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
        rng = np.random.default_rng(seed)
        noise: dict[str, np.ndarray] = {}
        for node in self.plan.nodes:
            m = self.models.get(node)
            if m is None:
                noise[node] = rows[node].to_numpy()
            elif m.categorical:
                noise[node] = rng.uniform(0.0, 1.0, len(rows))
            else:
                noise[node] = m.draw_noise(len(rows), rng)
        return noise

    def abduct(self, rows: pd.DataFrame, seed: int = 0) -> dict[str, np.ndarray]:
        """Each individual's noise given their data. Roots: the observed values. Additive-noise
        nodes: the residual (exact). Categorical nodes: one draw from the noise posterior under a
        Gumbel-max mechanism (``gumbel_posterior``): the class is argmax_j(log p_j(parents) + g_j)
        with g_j iid standard Gumbel, and g is drawn given that the argmax was the observed class."""
        values = {n: rows[n].to_numpy() for n in self.plan.nodes}
        return self.abduct_arrays(values, rng=np.random.default_rng(seed))

    def abduct_arrays(self, values: Mapping[str, np.ndarray], *, rng: np.random.Generator | None = None,
                      variates: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
                      ) -> dict[str, np.ndarray]:
        """``abduct`` on one array per node. ``variates`` (node -> (top, other) Gumbel draws aligned
        with the node's classes, ``GumbelVariates.take``) replaces the draws from ``rng``."""
        noise: dict[str, np.ndarray] = {}
        with _quiet():
            for node in self.plan.nodes:
                m = self.models.get(node)
                if m is None:
                    noise[node] = np.asarray(values[node])
                    continue
                cols = [np.asarray(values[p]) for p in m.parents]
                if m.categorical:
                    proba = m.proba(cols)
                    observed = _class_codes(np.asarray(values[node]), m.classes)
                    if (observed < 0).any():
                        raise NotIdentifiedError(f"'{node}' holds a value its fitted mechanism never saw")
                    top, other = variates[node] if variates is not None and node in variates else (None, None)
                    noise[node] = gumbel_posterior(proba, observed, rng, top=top, other=other)
                else:
                    noise[node] = m.estimate_noise(np.asarray(values[node]), cols)
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
        n = len(next(iter(noise.values())))
        out: dict[str, np.ndarray] = {}
        with _quiet():
            for node in self.plan.nodes:
                if node in fixed:
                    v = fixed[node]
                    out[node] = np.asarray(v) if np.ndim(v) else np.repeat(np.array([v], dtype=object), n)
                    continue
                m = self.models.get(node)
                u = noise[node]
                if m is None:
                    out[node] = np.asarray(u)
                    continue
                cols = [out[p] for p in m.parents]
                if m.categorical:
                    proba = m.proba(cols)
                    if np.ndim(u) == 2:
                        with np.errstate(divide="ignore"):
                            idx = np.argmax(np.log(proba) + u, axis=1)
                    else:  # inverse CDF of a uniform (dowhy.gcm's ClassifierFCM.evaluate)
                        idx = np.argmax(np.cumsum(proba, axis=1) >= np.asarray(u).reshape(-1, 1), axis=1)
                    out[node] = m.classes[idx]
                else:
                    out[node] = m.evaluate(cols, u)
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
    if all(np.asarray(c).dtype.kind in "fiub" for c in cols):
        return np.column_stack(cols).astype(float, copy=False)
    out = np.empty((len(cols[0]), len(cols)), dtype=object)
    for j, c in enumerate(cols):
        out[:, j] = c
    return out


def gumbel_posterior(proba: np.ndarray, observed: np.ndarray, rng: np.random.Generator | None = None, *,
                     top: np.ndarray | None = None, other: np.ndarray | None = None) -> np.ndarray:
    """Gumbel noise g (n, k) drawn from its posterior given argmax_j(log p_j + g_j) = observed
    (Oberst & Sontag 2019, top-down truncated Gumbels): the maximum of log p_j + g_j is a standard
    Gumbel (the p_j sum to one) reached at the observed class; every other class's perturbed
    logit is a Gumbel with location log p_j truncated below that maximum. The standard Gumbel
    draws come from ``rng`` or are given (``top`` (n, 1), ``other`` (n, k))."""
    n, k = proba.shape
    if top is None or other is None:
        if rng is None:
            raise ValueError("gumbel_posterior needs a generator or the Gumbel draws")
        top = rng.gumbel(size=(n, 1))
        other = rng.gumbel(size=(n, k))
    with np.errstate(divide="ignore"):
        logp = np.log(np.clip(proba, 0.0, 1.0))
    other = logp + other
    # a Gumbel(loc) truncated at `top`: -log(exp(-top) + exp(-G)), G ~ Gumbel(loc)
    trunc = -np.logaddexp(-top, -other)
    perturbed = np.where(np.arange(k)[None, :] == observed[:, None], top, trunc)
    with np.errstate(invalid="ignore"):
        g = perturbed - logp
    return np.where(np.isfinite(logp), g, 0.0)


def fit_scm(plan: SCMPlan, data: pd.DataFrame, *, kind: str = "linear", seed: int = 0,
            weights: np.ndarray | None = None, warm: FittedSCM | None = None) -> FittedSCM:
    """Fit the plan's SCM on ``data`` (rows with a missing value in a modelled column dropped).

    ``weights`` (one non-negative count per row of ``data``) fits on the rows repeated that many
    times, as a bootstrap resample; ``warm`` (a ``"linear"`` fit of the same plan, e.g. on the full
    sample) starts the iterative fits from its solution and codes the parents with its levels."""
    if kind not in MECHANISMS:
        raise ValueError(f"mechanisms must be one of {', '.join(MECHANISMS)}, got {kind!r}")
    rows = data[list(plan.nodes)]
    keep = rows.notna().all(axis=1).to_numpy()
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)
    if len(w) != len(rows):
        raise ValueError(f"weights has {len(w)} entries for {len(rows)} rows")
    use = keep & (w > 0)
    if not keep.all():
        rows = rows.loc[use]
    elif not use.all():
        rows = rows.iloc[np.flatnonzero(use)]
    w = w[use]
    if kind == "linear":
        return fit_linear_arrays(plan, {n: rows[n].to_numpy() for n in plan.nodes}, w,
                                 warm if warm is not None and warm.kind == "linear" else None)
    parents = {n: [a for a, b in plan.edges if b == n] for n in plan.nodes}
    return _fit_gcm(plan, rows, w, parents, kind, seed)


def fit_linear_arrays(plan: SCMPlan, values: Mapping[str, np.ndarray], w: np.ndarray,
                      warm: FittedSCM | None = None) -> FittedSCM:
    """``fit_scm(kind="linear")`` on one array per node (no missing values) and row weights ``w``;
    rows of weight 0 are left out. The bootstrap calls this once per replicate on the same arrays."""
    w = np.asarray(w, dtype=float)
    if not np.all(w > 0):
        use = np.flatnonzero(w > 0)
        values = {n: np.asarray(v)[use] for n, v in values.items()}
        w = w[use]
    parents = {n: [a for a, b in plan.edges if b == n] for n in plan.nodes}
    models: dict[str, Any] = {}
    mechanisms: dict[str, str] = {}
    for n in plan.nodes:
        if not parents[n]:
            mechanisms[n] = _ROOT
            continue
        cols = [values[p] for p in parents[n]]
        prior = warm.models.get(n) if warm is not None else None
        if n in plan.categorical:
            models[n] = _Logit.fit(parents[n], cols, values[n], w, prior if isinstance(prior, _Logit) else None)
            mechanisms[n] = _LINEAR_CATEGORICAL
        else:
            models[n] = _LinearANM.fit(parents[n], cols, values[n], w,
                                       prior if isinstance(prior, _LinearANM) else None)
            mechanisms[n] = _LINEAR_NUMERIC
    return FittedSCM(plan, None, mechanisms, round(float(w.sum())), "linear", not plan.non_invertible, models)


def _fit_gcm(plan: SCMPlan, rows: pd.DataFrame, w: np.ndarray, parents: Mapping[str, list[str]], kind: str,
             seed: int) -> FittedSCM:
    import networkx as nx
    from dowhy import gcm
    from dowhy.gcm import config

    config.disable_progress_bars()
    if not np.all(w == 1.0):
        counts = np.round(w).astype(np.int64)
        rows = rows.iloc[np.repeat(np.arange(len(rows)), counts)].reset_index(drop=True)
    g = nx.DiGraph()
    g.add_nodes_from(plan.nodes)
    g.add_edges_from(plan.edges)
    invertible = not plan.non_invertible
    scm = gcm.InvertibleStructuralCausalModel(g) if invertible else gcm.StructuralCausalModel(g)
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
                    mechanisms[n] = _ROOT
                else:
                    mech, desc = _gcm_mechanism(kind, n in plan.categorical)
                    scm.set_causal_mechanism(n, mech)
                    mechanisms[n] = desc
        gcm.fit(scm, rows)
    from dowhy.graph import get_ordered_predecessors

    models = {}
    for n in plan.nodes:
        ps = get_ordered_predecessors(scm.graph, n)
        if ps:
            mech = scm.causal_mechanism(n)
            models[n] = _GcmNode(mech, ps, hasattr(mech, "estimate_probabilities"))
    return FittedSCM(plan, scm, mechanisms, len(rows), kind, invertible, models)


def input_column(values: Any, dtype: Any) -> pd.Series:
    """``values`` as a model-input column of ``dtype`` where that loses nothing: text stays text,
    categories stay categories, and whole numbers go back to an integer column. Non-integral values
    bound for an integer column stay floating point: casting would truncate them (a counterfactual
    38.7 hours would reach the model as 38)."""
    v = pd.Series(np.asarray(values))
    if pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_integer_dtype(v.dtype):
        num = pd.to_numeric(v, errors="coerce")
        arr = num.to_numpy(dtype=float, na_value=np.nan)
        if np.isfinite(arr).all() and np.array_equal(arr, np.round(arr)):
            return num.astype(dtype)
        return num if pd.api.types.is_numeric_dtype(num.dtype) else v
    try:
        return v.astype(dtype)
    except (TypeError, ValueError):
        return v


def apply_to_inputs(X: pd.DataFrame, values: Mapping[str, Any], columns: Sequence[str]) -> pd.DataFrame:
    """A copy of the model-input frame ``X`` with ``columns`` replaced by ``values`` (same rows),
    keeping each column's dtype where that loses nothing (``input_column``)."""
    out = X.copy()
    for c in columns:
        col = input_column(values[c], X[c].dtype)
        col.index = X.index
        out[c] = col
    return out
