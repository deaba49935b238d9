"""AuditContext: the immutable input every check receives.

Built once by the runner after validation at the boundary (files loaded, columns checked, model
output checked), so checks trust what they get: ``split.y`` is 0/1 with 1 the positive label,
``split.scores`` is the model's probability of the positive label, ``split.y_pred`` its 0/1
decision, ``split.sensitive`` holds the sensitive columns as strings (missing -> "<missing>").

Everything the boundary learned is on the context, typed: the positive class's column
(``positive_index``), the checks that will run (``checks``), the DP claim resolved from the spec or
the model's metadata (``dp_claim``), and what each family's ``prepare`` hook validated (``prepared``,
e.g. the parsed causal graph and its roles; each family reads its own through a typed accessor).

Shared intermediates are declared, not string-keyed: a module declares an :class:`Intermediate`
(``TABLES = Intermediate("fairness.bootstrap", _compute_tables)``), a check lists the ones it reads
(``register_check(..., needs=(TABLES,))``) and reads them with ``ctx.get(TABLES)``. Each is
computed at most once per context, on first use, under its own lock, so checks that share nothing
can run at the same time; the runner groups checks that share intermediates into one lane.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from audit.model import ModelAdapter
    from audit.privacy.accounting import ClaimConditions
    from audit.spec import AuditSpec, DPClaim, Policy

__all__ = ["AuditContext", "DataSplit", "Intermediate", "ResolvedClaim"]

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Intermediate(Generic[T]):
    """A shared intermediate: ``compute(ctx, *key)`` runs at most once per context and key.

    ``needs`` lists the intermediates ``compute`` itself reads: the runner keeps every check that
    reaches the same intermediate (directly or through ``needs``) in one lane.
    """

    name: str
    compute: Callable[..., T]
    needs: tuple[Intermediate[Any], ...] = ()
    description: str = ""

    def closure(self) -> tuple[str, ...]:
        """This intermediate's name and the names of all it needs, transitively."""
        seen: dict[str, None] = {}
        stack: list[Intermediate[Any]] = [self]
        while stack:
            item = stack.pop()
            if item.name not in seen:
                seen[item.name] = None
                stack.extend(item.needs)
        return tuple(seen)


@dataclass(frozen=True)
class ResolvedClaim:
    """A DP claim as validated at the boundary: the claim, where it came from ("spec" or "model
    metadata"), and how the model's run sampled and drew its noise (empty when not recorded)."""

    claim: DPClaim
    source: str
    conditions: ClaimConditions


class _Intermediates:
    """Values of a context's intermediates, one lock per (name, key): a value is computed once even
    when two threads ask for it at the same time; different intermediates never wait for each other."""

    def __init__(self) -> None:
        self._values: dict[tuple[Any, ...], Any] = {}
        self._locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, ctx: AuditContext, item: Intermediate[T], key: tuple[Any, ...]) -> T:
        k = (item.name, *key)
        if k in self._values:
            return cast(T, self._values[k])
        with self._guard:
            lock = self._locks.setdefault(k, threading.Lock())
        with lock:
            if k not in self._values:
                self._values[k] = item.compute(ctx, *key)
        return cast(T, self._values[k])

    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(k[0] for k in self._values))


@dataclass(frozen=True, eq=False)
class DataSplit:
    """One role of the data (test = the audited rows, train, holdout), validated."""

    role: str
    frame: pd.DataFrame  # every column as loaded (target included)
    X: pd.DataFrame  # exactly the columns the model takes, in its order
    y: np.ndarray  # 0/1, 1 = positive label
    sensitive: pd.DataFrame  # sensitive columns as strings
    scores: np.ndarray  # model's probability of the positive label
    y_pred: np.ndarray  # model's 0/1 decision
    source: str = ""
    sha256: str = ""

    def __post_init__(self) -> None:
        for arr in (self.y, self.scores, self.y_pred):
            arr.setflags(write=False)

    @property
    def n(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class AuditContext:
    spec: AuditSpec
    model: ModelAdapter
    test: DataSplit
    train: DataSplit | None = None
    holdout: DataSplit | None = None
    seed: int = 0
    #: column of ``model.predict_proba`` holding the positive label; resolved once, by the runner
    positive_index: int = 1
    #: ids of the checks the audit runs (validated, in order)
    checks: tuple[str, ...] = ()
    #: the DP claim to verify (spec wins over the model's metadata), validated at the boundary
    dp_claim: ResolvedClaim | None = None
    #: what each family's ``prepare`` hook validated at the boundary, by family name
    prepared: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: cores this context's checks may use at once (the runner lowers it for concurrent lanes)
    cores: int = 1
    _values: _Intermediates = field(default_factory=_Intermediates, repr=False)

    @property
    def policy(self) -> Policy:
        return self.spec.policy

    @property
    def sensitive_features(self) -> tuple[str, ...]:
        return tuple(self.spec.data.sensitive)

    @property
    def target(self) -> str:
        return self.spec.data.target

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.test.X.columns)

    def split(self, role: str) -> DataSplit | None:
        return {"test": self.test, "train": self.train, "holdout": self.holdout}[role]

    def get(self, item: Intermediate[T], *key: Any) -> T:
        """The value of a shared intermediate (computed on first use, once per context and key)."""
        return self._values.get(self, item, key)

    def computed(self) -> tuple[str, ...]:
        """Names of the intermediates computed so far (tests, provenance)."""
        return self._values.names()

    def for_lane(self, cores: int) -> AuditContext:
        """A copy with fresh intermediates and a core budget, for a lane of checks run apart."""
        return replace(self, cores=max(1, int(cores)), _values=_Intermediates())

    def seed_for(self, name: str) -> int:
        """A seed derived from the audit seed and a name: independent of check order."""
        h = hashlib.sha256(f"{self.seed}:{name}".encode()).digest()
        return int.from_bytes(h[:4], "little")

    def rng(self, name: str) -> np.random.Generator:
        """A fresh generator for a named stochastic step (e.g. the check id)."""
        return np.random.default_rng(self.seed_for(name))
