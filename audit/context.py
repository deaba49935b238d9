"""AuditContext: the immutable input every check receives.

Built once by the runner after validation at the boundary (files loaded, columns checked, model
output checked), so checks trust what they get: ``split.y`` is 0/1 with 1 the positive label,
``split.scores`` is the model's probability of the positive label, ``split.y_pred`` its 0/1
decision, ``split.sensitive`` holds the sensitive columns as strings (missing -> "<missing>").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from audit.model import ModelAdapter
    from audit.spec import AuditSpec, Policy

__all__ = ["AuditContext", "DataSplit"]


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
    extras: Any = field(default_factory=lambda: MappingProxyType({}))
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

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

    def memo(self, key: str, factory: Callable[[], Any]) -> Any:
        """Compute an expensive shared intermediate once per audit (e.g. SHAP values that
        several explanation checks read). Not thread-safe; checks run one at a time."""
        if key not in self._memo:
            self._memo[key] = factory()
        return self._memo[key]

    def seed_for(self, name: str) -> int:
        """A seed derived from the audit seed and a name: independent of check order."""
        h = hashlib.sha256(f"{self.seed}:{name}".encode()).digest()
        return int.from_bytes(h[:4], "little")

    def rng(self, name: str) -> np.random.Generator:
        """A fresh generator for a named stochastic step (e.g. the check id)."""
        return np.random.default_rng(self.seed_for(name))
