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
from typing import Any

import numpy as np
import pandas as pd

from audit.exceptions import ConfigError
from audit.model import EncodedColumn, TabularEncoder

__all__ = ["column_stats", "encoder_from_stats"]


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
