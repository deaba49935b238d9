"""The data of a simulated federation: load once per process, split, partition among clients.

The ServerApp and every ClientApp derive the same tables from the same settings (the data setup
sent in every message), so nothing but model parameters and metrics crosses the wire. Within a
process the result is cached: a Ray actor that serves many simulated clients loads and
partitions the data once.

Splits: the ground-truth generator draws train / holdout / test directly (``n-rows`` training
rows, half as many for holdout and test each); a CSV is shuffled with the seed and cut into
``test-fraction`` test rows, ``holdout-fraction`` holdout rows and the rest for training. Only
the training rows are partitioned among clients; each client keeps ``val-fraction`` of its rows
as a local validation split (used for per-client accuracy). Holdout and test stay with the
server: test for the global model's per-round metrics and the audit, holdout for the audit's
membership-inference checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from audit.exceptions import ConfigError, DataError
from federated.partition import make_partitions, partition_summary

__all__ = ["ClientSplit", "RunData", "label_vector", "load_run_data"]


@dataclass(frozen=True)
class ClientSplit:
    """Row indices (into ``RunData.train``) of one client's local training and validation rows."""

    train: np.ndarray
    val: np.ndarray


@dataclass(frozen=True)
class RunData:
    train: pd.DataFrame
    holdout: pd.DataFrame
    test: pd.DataFrame
    y_train: np.ndarray
    y_holdout: np.ndarray
    y_test: np.ndarray
    target: str
    positive_label: str
    features: tuple[str, ...]
    sensitive: tuple[str, ...]
    source: str
    parts: tuple[np.ndarray, ...]
    splits: tuple[ClientSplit, ...]
    dropped_rows: int = 0

    def client_frame(self, pid: int) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
        """(X_train, y_train, X_val, y_val) of one client (features only)."""
        sp = self.splits[pid]
        X = self.train.loc[:, list(self.features)]
        return X.iloc[sp.train], self.y_train[sp.train], X.iloc[sp.val], self.y_train[sp.val]

    def summary(self) -> list[dict[str, Any]]:
        sens = self.train.loc[:, list(self.sensitive)] if self.sensitive else None
        recs = partition_summary(self.parts, self.y_train, sens)
        for rec, sp in zip(recs, self.splits, strict=True):
            rec["train_rows"] = len(sp.train)
            rec["val_rows"] = len(sp.val)
        return recs


def label_vector(values: pd.Series, label: Any) -> np.ndarray:
    """1 where the value equals the positive label (tolerant of '1' vs 1 and 'True' vs True)."""
    s = values.astype(str).str.strip()
    target = str(label).strip()
    hit = (s == target).to_numpy()
    if not hit.any():
        if target.lower() in ("true", "false"):
            hit = (s.str.lower() == target.lower()).to_numpy()
        else:
            try:
                num = float(target)
            except ValueError:
                return hit.astype(np.int8)
            hit = (pd.to_numeric(values, errors="coerce") == num).to_numpy()
    return hit.astype(np.int8)


def _load_frames(setup: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    seed = int(setup["seed"])
    if not setup["data"]:
        from audit.datasets import make_lending_data

        n = int(setup["n_rows"])
        d = make_lending_data(n, max(n // 2, 1), max(n // 2, 1), seed=seed)
        return d.train, d.holdout, d.test, f"lending generator (seed {seed})"
    from audit.io import load_table

    frame = load_table(setup["data"])
    n = len(frame)
    rng = np.random.default_rng([seed, 0xDA7A])
    perm = rng.permutation(n)
    n_test = round(n * float(setup["test_fraction"]))
    n_hold = round(n * float(setup["holdout_fraction"]))
    test = frame.iloc[perm[:n_test]].reset_index(drop=True)
    holdout = frame.iloc[perm[n_test : n_test + n_hold]].reset_index(drop=True)
    train = frame.iloc[perm[n_test + n_hold :]].reset_index(drop=True)
    return train, holdout, test, str(setup["data"])


def _validate(frame: pd.DataFrame, setup: dict[str, Any], where: str) -> None:
    target = setup["target"]
    cols = ", ".join(map(str, frame.columns[:20]))
    if target not in frame.columns:
        raise DataError(f"target column '{target}' not found in {where} (columns: {cols})")
    for s in [c.strip() for c in str(setup["sensitive"]).split(",") if c.strip()]:
        if s not in frame.columns:
            raise DataError(f"sensitive column '{s}' not found in {where} (columns: {cols})")
        if s == target:
            raise DataError(f"sensitive column '{s}' is the target column")
    for s in [c.strip() for c in str(setup["exclude_features"]).split(",") if c.strip()]:
        if s not in frame.columns:
            raise DataError(f"exclude-features column '{s}' not found in {where} (columns: {cols})")


@lru_cache(maxsize=4)
def load_run_data(setup_json: str) -> RunData:
    """Load, split and partition the data described by a data setup (``FederatedConfig.data_setup``)."""
    setup = json.loads(setup_json)
    train, holdout, test, source = _load_frames(setup)
    where = f"data file '{setup['data']}'" if setup["data"] else "the generated data"
    _validate(train, setup, where)
    target = setup["target"]
    label = str(setup["positive_label"])
    dropped = 0
    frames = []
    for f in (train, holdout, test):
        keep = f[target].notna().to_numpy()
        dropped += int((~keep).sum())
        frames.append(f.loc[keep].reset_index(drop=True))
    train, holdout, test = frames
    if len(test) == 0:
        raise ConfigError("test-fraction leaves no test rows; the server evaluates the global model on them")
    y_train = label_vector(train[target], label)
    if not y_train.any():
        values = ", ".join(sorted(map(str, train[target].astype(str).unique()))[:10])
        raise DataError(f"positive label {label!r} is not among the values of target '{target}' in {where} "
                        f"(values: {values})")
    if y_train.all():
        raise DataError(f"target column '{target}' in {where} has a single class in the training rows")
    excluded = {c.strip() for c in str(setup["exclude_features"]).split(",") if c.strip()}
    features = tuple(c for c in train.columns if c != target and c not in excluded)
    if not features:
        raise ConfigError("no feature columns left after exclude-features")
    sensitive = tuple(c.strip() for c in str(setup["sensitive"]).split(",") if c.strip())
    num_clients = int(setup["num_clients"])
    parts = make_partitions(
        train,
        y_train,
        scheme=setup["partition"],
        num_clients=num_clients,
        alpha=float(setup["alpha"]),
        column=setup["partition_column"],
        min_size=int(setup["min_partition_size"]),
        seed=int(setup["seed"]),
    )
    vf = float(setup["val_fraction"])
    splits = []
    for k, idx in enumerate(parts):
        rng = np.random.default_rng([int(setup["seed"]), 0xC11E, k])
        perm = rng.permutation(idx)
        n_val = int(np.floor(len(idx) * vf))
        if n_val >= len(idx):
            n_val = len(idx) - 1
        splits.append(ClientSplit(train=np.sort(perm[n_val:]), val=np.sort(perm[:n_val])))
    return RunData(
        train=train,
        holdout=holdout,
        test=test,
        y_train=y_train,
        y_holdout=label_vector(holdout[target], label),
        y_test=label_vector(test[target], label),
        target=target,
        positive_label=label,
        features=features,
        sensitive=sensitive,
        source=source,
        parts=tuple(parts),
        splits=tuple(splits),
        dropped_rows=dropped,
    )
