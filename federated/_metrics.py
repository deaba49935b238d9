"""Per-round metrics: the global model on the server's test rows, overall and per sensitive group.

Numbers only (records ready for JSON / CSV / plots); nothing here draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["client_spread", "fairness_gaps", "global_metrics", "group_metrics"]

MISSING = "<missing>"


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def global_metrics(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Logistic loss, accuracy (threshold 0.5), AUC and positive-prediction rate."""
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    pred = (z > 0).astype(np.float64)
    return {
        "loss": float(np.mean(np.logaddexp(0.0, z) - y * z)) if len(y) else float("nan"),
        "accuracy": float(np.mean(pred == y)) if len(y) else float("nan"),
        "auc": _auc(y, z),
        "selection_rate": float(pred.mean()) if len(y) else float("nan"),
    }


def group_metrics(y: np.ndarray, logits: np.ndarray, sensitive: pd.DataFrame) -> list[dict[str, Any]]:
    """One record per (attribute, group): n, accuracy, selection rate, TPR, FPR."""
    y = np.asarray(y, dtype=np.int8)
    pred = (np.asarray(logits) > 0).astype(np.int8)
    out: list[dict[str, Any]] = []
    for col in sensitive.columns:
        vals = sensitive[col]
        g = vals.astype(str).where(vals.notna(), MISSING).to_numpy()
        for name in sorted(set(g)):
            m = g == name
            yy, pp = y[m], pred[m]
            pos, neg = yy == 1, yy == 0
            out.append({
                "attribute": str(col),
                "group": str(name),
                "n": int(m.sum()),
                "accuracy": float(np.mean(yy == pp)),
                "selection_rate": float(pp.mean()),
                "tpr": float(pp[pos].mean()) if pos.any() else float("nan"),
                "fpr": float(pp[neg].mean()) if neg.any() else float("nan"),
                "base_rate": float(yy.mean()),
            })
    return out


def fairness_gaps(groups: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per attribute: demographic-parity difference, equalised-odds difference, accuracy gap."""
    out: dict[str, dict[str, float]] = {}
    for attr in sorted({g["attribute"] for g in groups}):
        rows = [g for g in groups if g["attribute"] == attr]

        def spread(key: str, rows: list[dict[str, Any]] = rows) -> float:
            v = np.array([r[key] for r in rows], dtype=float)
            v = v[~np.isnan(v)]
            return float(v.max() - v.min()) if len(v) >= 2 else float("nan")

        out[attr] = {
            "demographic_parity_difference": spread("selection_rate"),
            "equalized_odds_difference": float(np.nanmax([spread("tpr"), spread("fpr")]))
            if not (np.isnan(spread("tpr")) and np.isnan(spread("fpr"))) else float("nan"),
            "accuracy_gap": spread("accuracy"),
        }
    return out


def client_spread(accuracies: Sequence[float]) -> dict[str, float]:
    """Fairness across clients: spread of the per-client accuracies of one global model."""
    a = np.asarray([x for x in accuracies if x == x], dtype=float)
    if len(a) == 0:
        return {"clients": 0.0, "mean": float("nan"), "min": float("nan"), "max": float("nan"),
                "std": float("nan"), "p10": float("nan")}
    return {
        "clients": float(len(a)),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
        "std": float(a.std()),
        "p10": float(np.percentile(a, 10)),
    }
