"""Local data partitioning for simulated clients (no downloads): IID, label skew, by column, quantity skew.

Every function takes the number of clients and a seeded ``numpy.random.Generator`` and returns
one array of row indices per client (disjoint, covering every row, each sorted). They follow the
schemes of Flower Datasets' partitioners (``IidPartitioner``, ``DirichletPartitioner``,
``NaturalIdPartitioner``, size-skewed partitioners) but run on an in-memory table:

* ``iid``: a random permutation cut into near-equal parts.
* ``dirichlet``: label skew (Hsu et al. 2019). Each client's label mix is drawn from
  Dirichlet(alpha x pooled label shares); clients keep near-equal sizes, so no client is empty
  even at tiny alpha. Small alpha gives clients dominated by one label.
* ``column``: one client per value of a column (a region, a site, a sensitive attribute). With
  more clients than values, clients are allotted to values in proportion to their rows (each
  value gets at least one) and split IID within; with fewer, values are dealt to the client with
  the fewest rows so far, largest first.
* ``quantity``: IID rows but client sizes drawn from Dirichlet(alpha) over clients, each client
  keeping at least ``min_size`` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from audit.exceptions import ConfigError
from federated._config import MSG_ALPHA, MSG_TOO_MANY_CLIENTS

__all__ = [
    "column_partition",
    "dirichlet_partition",
    "iid_partition",
    "make_partitions",
    "partition_summary",
    "quantity_partition",
]


def _check(n_rows: int, num_clients: int, min_size: int = 1) -> None:
    if num_clients > n_rows:
        raise ConfigError(MSG_TOO_MANY_CLIENTS.format(clients=num_clients, rows=n_rows))
    if num_clients * min_size > n_rows:
        raise ConfigError(
            f"num-clients ({num_clients}) x min-partition-size ({min_size}) is larger than the number of "
            f"training rows ({n_rows})"
        )


def iid_partition(n_rows: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation of the rows cut into ``num_clients`` near-equal parts."""
    _check(n_rows, num_clients)
    perm = rng.permutation(n_rows)
    return [np.sort(p) for p in np.array_split(perm, num_clients)]


def dirichlet_partition(
    labels: Sequence[Any] | np.ndarray,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    *,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Label skew: each client's label mix is drawn from Dirichlet(alpha * pooled label shares).

    The scheme of Hsu, Qi and Brown (2019): clients get near-equal numbers of rows (size skew is
    the ``quantity`` scheme's job) and client k draws its label distribution
    q_k ~ Dirichlet(alpha * p), p the pooled label shares, then takes rows of each class in those
    proportions from what is left (when a class runs out, the client fills up with the classes it
    favours next). alpha -> infinity gives IID partitions, alpha -> 0 one label per client. Every
    client gets at least ``floor(n / num_clients)`` rows, so no client is empty whatever alpha.
    """
    if not alpha > 0:
        raise ConfigError(MSG_ALPHA.format(got=alpha))
    y = np.asarray(labels)
    _check(len(y), num_clients, min_size)
    classes, counts = np.unique(y, return_counts=True)
    prior = counts / counts.sum()
    pools = [list(rng.permutation(np.flatnonzero(y == c))) for c in classes]
    sizes = [len(p) for p in np.array_split(np.arange(len(y)), num_clients)]
    out: list[np.ndarray | None] = [None] * num_clients
    for k in rng.permutation(num_clients):
        q = rng.dirichlet(np.maximum(alpha * prior, 1e-3))
        want = rng.multinomial(sizes[k], q)
        take = [min(int(w), len(pool)) for w, pool in zip(want, pools, strict=True)]
        short = sizes[k] - sum(take)
        for c in np.argsort(-q, kind="stable"):  # fill up from the favoured classes still available
            if short == 0:
                break
            extra = min(short, len(pools[c]) - take[c])
            take[c] += extra
            short -= extra
        rows = []
        for c, t in enumerate(take):
            rows.extend(pools[c][:t])
            del pools[c][:t]
        out[k] = np.sort(np.asarray(rows, dtype=np.int64))
    return [p for p in out if p is not None]


def column_partition(
    values: Sequence[Any] | np.ndarray | pd.Series, num_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One client per value of a column (or several clients per value, or several values per client)."""
    raw = pd.Series(np.asarray(values, dtype=object))
    s = raw.astype(str).where(raw.notna(), "<missing>")
    _check(len(s), num_clients)
    groups = {v: np.flatnonzero((s == v).to_numpy()) for v in sorted(s.unique())}
    if num_clients <= len(groups):
        order = sorted(groups, key=lambda v: (-len(groups[v]), v))
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        sizes = np.zeros(num_clients, dtype=int)
        for v in order:
            k = int(np.argmin(sizes))
            parts[k].append(groups[v])
            sizes[k] += len(groups[v])
        return [np.sort(np.concatenate(p)) for p in parts]
    # more clients than values: allot clients to values in proportion to size, each value >= 1
    names = list(groups)
    n = np.array([len(groups[v]) for v in names], dtype=float)
    alloc = np.ones(len(names), dtype=int)
    spare = num_clients - len(names)
    if spare:
        share = n / n.sum() * spare
        extra = np.floor(share).astype(int)
        rest = spare - extra.sum()
        order = np.argsort(-(share - extra), kind="stable")
        extra[order[:rest]] += 1
        alloc += extra
    # a value cannot feed more clients than it has rows
    while np.any(alloc > n):
        over = int(np.argmax(alloc - n))
        alloc[over] -= 1
        room = np.flatnonzero(alloc < n)
        if len(room) == 0:
            raise ConfigError(MSG_TOO_MANY_CLIENTS.format(clients=num_clients, rows=int(n.sum())))
        alloc[room[np.argmax(n[room] - alloc[room])]] += 1
    out: list[np.ndarray] = []
    for v, k in zip(names, alloc, strict=True):
        perm = rng.permutation(groups[v])
        out.extend(np.sort(p) for p in np.array_split(perm, int(k)))
    return out


def quantity_partition(
    n_rows: int, num_clients: int, alpha: float, rng: np.random.Generator, *, min_size: int = 1
) -> list[np.ndarray]:
    """IID rows, skewed sizes: ``min_size`` each plus a Dirichlet(alpha)-multinomial share of the rest."""
    if not alpha > 0:
        raise ConfigError(MSG_ALPHA.format(got=alpha))
    _check(n_rows, num_clients, min_size)
    props = rng.dirichlet(np.full(num_clients, alpha))
    sizes = min_size + rng.multinomial(n_rows - num_clients * min_size, props)
    perm = rng.permutation(n_rows)
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(p) for p in np.split(perm, cuts)]


def make_partitions(
    frame: pd.DataFrame,
    y: np.ndarray,
    *,
    scheme: str,
    num_clients: int,
    alpha: float,
    column: str,
    min_size: int,
    seed: int,
) -> list[np.ndarray]:
    """Dispatch to the scheme named in the configuration; validates the column when needed."""
    rng = np.random.default_rng([seed, 0x5EED])
    if scheme == "iid":
        return iid_partition(len(frame), num_clients, rng)
    if scheme == "dirichlet":
        return dirichlet_partition(y, num_clients, alpha, rng, min_size=min_size)
    if scheme == "quantity":
        return quantity_partition(len(frame), num_clients, alpha, rng, min_size=min_size)
    if scheme == "column":
        if column not in frame.columns:
            cols = ", ".join(map(str, frame.columns[:20]))
            raise ConfigError(f"partition-column {column!r} is not a column of the data (columns: {cols})")
        return column_partition(frame[column], num_clients, rng)
    raise ConfigError(f"partition must be one of iid, dirichlet, column, quantity; got {scheme!r}")


def partition_summary(
    parts: Sequence[np.ndarray], y: np.ndarray, sensitive: pd.DataFrame | None = None
) -> list[dict[str, Any]]:
    """One record per client: rows, positives, positive rate, and rows per sensitive group.

    ``label_tv`` is the total-variation distance between the client's label distribution and
    the pooled one (0 = IID labels, up to 1 - min(p, 1 - p) for a single-label client).
    """
    y = np.asarray(y)
    pooled = float(y.mean()) if len(y) else 0.0
    out = []
    for k, idx in enumerate(parts):
        yk = y[idx]
        rate = float(yk.mean()) if len(yk) else float("nan")
        rec: dict[str, Any] = {
            "partition_id": k,
            "rows": len(idx),
            "positives": int(yk.sum()),
            "positive_rate": rate,
            "label_tv": abs(rate - pooled) if len(yk) else float("nan"),
        }
        if sensitive is not None:
            for col in sensitive.columns:
                counts = sensitive[col].iloc[idx].astype(str).value_counts()
                for g, c in sorted(counts.items()):
                    rec[f"{col}={g}"] = int(c)
        out.append(rec)
    return out
