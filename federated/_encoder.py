"""The input encoder, computed federatedly from per-client sufficient statistics.

Clients never send rows. Each sends, per feature column, either (count, mean, M2) of its
non-missing numeric values or the counts of each category; the server merges them (Chan et al.'s
parallel variance update, numerically stable) into the same :class:`audit.model.TabularEncoder`
that ``TabularEncoder.fit`` would produce on the pooled rows: standardisation with the pooled
mean and population standard deviation (missing values filled with the mean), one-hot encoding
over the sorted union of categories. The category union does reveal which categories occur at
some client; counts are only summed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from audit.exceptions import ConfigError
from audit.model import EncodedColumn, TabularEncoder

__all__ = ["ColumnarTable", "column_stats", "encoder_from_stats"]


def column_stats(X: pd.DataFrame) -> dict[str, Any]:
    """Per-column sufficient statistics of one client's rows (JSON-serialisable)."""
    out: dict[str, Any] = {}
    for c in X.columns:
        col = X[c]
        if pd.api.types.is_numeric_dtype(col):
            v = pd.to_numeric(col, errors="coerce").astype(float).to_numpy()
            v = v[~np.isnan(v)]
            n = len(v)
            mean = float(v.mean()) if n else 0.0
            m2 = float(((v - mean) ** 2).sum()) if n else 0.0
            out[str(c)] = {"kind": "numeric", "n": n, "mean": mean, "m2": m2}
        else:
            counts = col.dropna().astype(str).value_counts()
            out[str(c)] = {"kind": "categorical", "counts": {str(k): int(v) for k, v in counts.items()}}
    return out


@dataclass(frozen=True)
class ColumnarTable:
    """A table's columns as numpy arrays, so that one client's statistics come from row indices.

    A simulation process hosts many clients over one table: converting it once and indexing
    rows per client gives :func:`column_stats` of each client's rows (the same numbers, computed
    by the same numpy operations on the same values) without pandas' per-call overhead.
    """

    names: tuple[str, ...]
    numeric: tuple[bool, ...]
    values: tuple[np.ndarray, ...]  # float64 with NaN (numeric) or int64 codes, -1 = missing
    categories: tuple[tuple[str, ...], ...]  # per column (empty for numeric)

    @classmethod
    def from_frame(cls, X: pd.DataFrame, *, all_categorical: bool = False) -> ColumnarTable:
        """``all_categorical``: every column's values as strings (group labels)."""
        names, numeric, values, categories = [], [], [], []
        for c in X.columns:
            col = X[c]
            names.append(str(c))
            if pd.api.types.is_numeric_dtype(col) and not all_categorical:
                numeric.append(True)
                values.append(pd.to_numeric(col, errors="coerce").astype(float).to_numpy())
                categories.append(())
            else:
                present = col.notna().to_numpy()
                codes, uniques = pd.factorize(col[present].astype(str))
                full = np.full(len(col), -1, dtype=np.int64)
                full[present] = codes
                numeric.append(False)
                values.append(full)
                categories.append(tuple(str(u) for u in uniques))
        return cls(tuple(names), tuple(numeric), tuple(values), tuple(categories))

    def column_stats(self, rows: np.ndarray) -> dict[str, Any]:
        """:func:`column_stats` of the rows at these positions."""
        out: dict[str, Any] = {}
        for name, is_num, vals, cats in zip(self.names, self.numeric, self.values, self.categories, strict=True):
            if is_num:
                v = vals[rows]
                v = v[~np.isnan(v)]
                n = len(v)
                mean = float(v.mean()) if n else 0.0
                m2 = float(((v - mean) ** 2).sum()) if n else 0.0
                out[name] = {"kind": "numeric", "n": n, "mean": mean, "m2": m2}
            else:
                codes = vals[rows]
                counts = np.bincount(codes[codes >= 0], minlength=len(cats))
                nz = np.flatnonzero(counts)
                out[name] = {"kind": "categorical", "counts": {cats[k]: int(counts[k]) for k in nz}}
        return out

    def group_counts(self, rows: np.ndarray) -> dict[str, int]:
        """Rows per value of each categorical column, as ``"column=value"`` keys sorted by value
        (the per-group counts of :func:`federated.partition.partition_summary`)."""
        out: dict[str, int] = {}
        for name, is_num, vals, cats in zip(self.names, self.numeric, self.values, self.categories, strict=True):
            if is_num:
                raise ValueError(f"group counts need categorical columns; {name!r} is numeric")
            codes = vals[rows]
            counts = np.bincount(codes[codes >= 0], minlength=len(cats))
            for g, c in sorted((cats[k], int(counts[k])) for k in np.flatnonzero(counts)):
                out[f"{name}={g}"] = c
        return out


def encoder_from_stats(stats: Sequence[dict[str, Any]], columns: Sequence[str]) -> TabularEncoder:
    """Merge clients' statistics into the encoder of the pooled rows."""
    cols = []
    for name in columns:
        per = [s[name] for s in stats if name in s]
        kinds = {p["kind"] for p in per}
        if len(kinds) != 1:
            raise ConfigError(f"column {name!r} is numeric at some clients and categorical at others")
        kind = kinds.pop()
        if kind == "numeric":
            n, mean, m2 = 0, 0.0, 0.0
            for p in per:
                nb, mb, m2b = int(p["n"]), float(p["mean"]), float(p["m2"])
                if nb == 0:
                    continue
                tot = n + nb
                delta = mb - mean
                mean += delta * nb / tot
                m2 += m2b + delta * delta * n * nb / tot
                n = tot
            std = math.sqrt(m2 / n) if n else 1.0
            if n == 0:
                mean = 0.0
            cols.append(EncodedColumn(name, "numeric", mean, std if std > 0 else 1.0, mean))
        else:
            cats: set[str] = set()
            for p in per:
                cats.update(p["counts"])
            cols.append(EncodedColumn(name, "categorical", categories=tuple(sorted(cats))))
    return TabularEncoder(tuple(cols))
