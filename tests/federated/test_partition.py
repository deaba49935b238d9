"""Partitioning: disjoint covers, the skew each scheme promises, exact errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.exceptions import ConfigError
from federated.partition import (
    column_partition,
    dirichlet_partition,
    iid_partition,
    make_partitions,
    partition_summary,
    quantity_partition,
)


def _is_disjoint_cover(parts: list[np.ndarray], n: int) -> bool:
    allidx = np.concatenate(parts)
    return len(allidx) == n and len(np.unique(allidx)) == n


def _label_tv(parts: list[np.ndarray], y: np.ndarray) -> float:
    rates = np.array([y[p].mean() for p in parts])
    return float(np.mean(np.abs(rates - y.mean())))


def test_iid_is_a_near_equal_disjoint_cover() -> None:
    parts = iid_partition(1003, 10, np.random.default_rng(0))
    assert _is_disjoint_cover(parts, 1003)
    assert {len(p) for p in parts} == {100, 101}


def test_dirichlet_small_alpha_skews_labels_large_alpha_does_not() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(4000) < 0.4).astype(int)
    skewed = dirichlet_partition(y, 20, 0.1, np.random.default_rng(2))
    flat = dirichlet_partition(y, 20, 1000.0, np.random.default_rng(2))
    assert _is_disjoint_cover(skewed, 4000) and _is_disjoint_cover(flat, 4000)
    iid = iid_partition(4000, 20, np.random.default_rng(2))
    # alpha = 0.1 gives clients dominated by one label; alpha = 1000 is as close to the pooled
    # label rate as IID partitions of 200 rows are (sampling noise of about 0.03)
    assert _label_tv(skewed, y) > 0.3
    assert _label_tv(flat, y) < 0.05 and _label_tv(iid, y) < 0.05


def test_dirichlet_keeps_client_sizes_even_at_tiny_alpha() -> None:
    y = np.array([0] * 900 + [1] * 100)
    parts = dirichlet_partition(y, 20, 0.01, np.random.default_rng(0))
    assert _is_disjoint_cover(parts, 1000)
    assert {len(p) for p in parts} == {50}
    # alpha = 0.01: nearly every client holds a single label
    assert sum(len(set(y[p])) == 1 for p in parts) >= 18
    # the mix follows Dirichlet(alpha * p): with a 90/10 prior, most single-label clients are 0s
    assert sum(set(y[p]) == {1} for p in parts) <= 4


def test_column_partition_one_client_per_value_and_splits_large_values() -> None:
    values = np.array(["north"] * 60 + ["south"] * 30 + ["east"] * 10)
    one_each = column_partition(values, 3, np.random.default_rng(0))
    assert _is_disjoint_cover(one_each, 100)
    assert sorted({tuple(sorted(set(values[p]))) for p in one_each}) == [("east",), ("north",), ("south",)]
    # six clients: allotted in proportion to size (north 3-4, south 1-2, east 1); never mixed
    six = column_partition(values, 6, np.random.default_rng(0))
    assert _is_disjoint_cover(six, 100) and all(len(set(values[p])) == 1 for p in six)
    per_value = pd.Series([values[p][0] for p in six]).value_counts().to_dict()
    assert per_value == {"north": 3, "south": 2, "east": 1}
    # two clients: whole values dealt out, largest first, to the smaller client
    two = column_partition(values, 2, np.random.default_rng(0))
    assert sorted(len(p) for p in two) == [40, 60]


def test_quantity_skew_sizes() -> None:
    parts = quantity_partition(5000, 10, 0.3, np.random.default_rng(3), min_size=20)
    sizes = np.array([len(p) for p in parts])
    assert _is_disjoint_cover(parts, 5000)
    assert sizes.min() >= 20
    assert sizes.max() / sizes.min() > 5  # a strongly skewed draw at alpha = 0.3


def test_too_many_clients_and_bad_alpha_messages() -> None:
    with pytest.raises(ConfigError) as e:
        iid_partition(5, 6, np.random.default_rng(0))
    assert str(e.value) == (
        "num-clients (6) is larger than the number of training rows (5); every client needs at least one row"
    )
    with pytest.raises(ConfigError) as e:
        dirichlet_partition(np.array([0, 1, 0, 1]), 2, 0.0, np.random.default_rng(0))
    assert str(e.value) == "alpha must be greater than 0 (the Dirichlet concentration); got 0.0"
    with pytest.raises(ConfigError) as e:
        quantity_partition(100, 2, -1.0, np.random.default_rng(0))
    assert str(e.value) == "alpha must be greater than 0 (the Dirichlet concentration); got -1.0"
    frame = pd.DataFrame({"a": [1, 2, 3]})
    with pytest.raises(ConfigError, match="partition-column 'zone' is not a column of the data"):
        make_partitions(frame, np.array([0, 1, 0]), scheme="column", num_clients=2, alpha=1.0, column="zone",
                        min_size=1, seed=0)


def test_partitions_are_reproducible_from_the_seed() -> None:
    frame = pd.DataFrame({"x": np.arange(300)})
    y = np.arange(300) % 3 == 0
    kw = dict(scheme="dirichlet", num_clients=7, alpha=0.3, column="", min_size=1)
    a = make_partitions(frame, y, seed=4, **kw)
    b = make_partitions(frame, y, seed=4, **kw)
    c = make_partitions(frame, y, seed=5, **kw)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


def test_partition_summary_counts() -> None:
    y = np.array([1, 0, 1, 1, 0, 0])
    sens = pd.DataFrame({"sex": ["f", "m", "f", "m", "m", "m"]})
    recs = partition_summary([np.array([0, 1, 2]), np.array([3, 4, 5])], y, sens)
    assert recs[0] == {"partition_id": 0, "rows": 3, "positives": 2, "positive_rate": pytest.approx(2 / 3),
                       "label_tv": pytest.approx(2 / 3 - 0.5), "sex=f": 2, "sex=m": 1}
    assert recs[1]["positives"] == 1 and recs[1]["sex=m"] == 3
