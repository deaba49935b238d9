"""Propose a causal graph from data with causal-learn's PC algorithm: a suggestion to review.

PC finds the conditional independences in the data and returns the equivalence class of graphs
that fit them: some edges it can orient, others it cannot (the data are equally consistent with
either direction), and some may point at a hidden common cause. None of it is used by an audit
unless a person writes it into the spec; the DOT written here keeps undecided edges as comments so
that it cannot be mistaken for a finished graph.

Text columns are integer-coded and every column standardised before the Fisher-z partial
correlation test (exact for linear-Gaussian data, an approximation otherwise; a binary category
is fine, an unordered category with many levels is not).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["DiscoveredGraph", "discover_graph"]


@dataclass(frozen=True)
class DiscoveredGraph:
    """The PC algorithm's output: oriented, undecided and bidirected edges."""

    columns: tuple[str, ...]
    directed: tuple[tuple[str, str], ...]
    undirected: tuple[tuple[str, str], ...]
    bidirected: tuple[tuple[str, str], ...]
    n_rows: int
    alpha: float
    test: str
    encoded: tuple[str, ...]  # text columns integer-coded

    def to_dot(self) -> str:
        """DOT text headed as a suggestion; undecided / bidirected edges are comments only."""

        def q(s: str) -> str:
            return '"' + s.replace('"', '\\"') + '"'

        lines = [
            "// SUGGESTED causal graph: proposed by the PC algorithm (causal-learn), NOT a validated graph.",
            "// Review every edge with domain knowledge before using it in an audit spec.",
            f"// {self.n_rows} rows, Fisher-z test, alpha = {self.alpha:g}"
            + (f"; text columns integer-coded: {', '.join(self.encoded)}" if self.encoded else ""),
            "// Edges the data could not orient (and possible hidden common causes) are listed as",
            "// comments below: decide their direction yourself.",
            "digraph suggested {",
        ]
        for c in self.columns:
            lines.append(f"  {q(c)};")
        for a, b in self.directed:
            lines.append(f"  {q(a)} -> {q(b)};")
        for a, b in self.undirected:
            lines.append(f"  // undecided: {q(a)} -- {q(b)}  (orient it: one of the two directions)")
        for a, b in self.bidirected:
            lines.append(f"  // possible hidden common cause: {q(a)} <-> {q(b)}")
        lines.append("}")
        return "\n".join(lines) + "\n"


def discover_graph(
    data: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    alpha: float = 0.05,
    max_rows: int = 5000,
    seed: int = 0,
) -> DiscoveredGraph:
    """Run PC (Fisher-z) on at most ``max_rows`` rows (a seeded sample) of ``columns``."""
    from causallearn.search.ConstraintBased.PC import pc

    cols = [str(c) for c in (columns or data.columns)]
    frame = data[cols].dropna()
    if len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed)
    encoded = []
    mat = np.empty((len(frame), len(cols)), dtype=float)
    for j, c in enumerate(cols):
        s = frame[c]
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            s = pd.Series(pd.factorize(s.astype(str), sort=True)[0], index=s.index)
            encoded.append(c)
        v = s.to_numpy(float)
        sd = v.std()
        mat[:, j] = (v - v.mean()) / sd if sd > 0 else v - v.mean()
    constant = [c for j, c in enumerate(cols) if np.all(mat[:, j] == 0)]
    if constant:
        raise ValueError(f"column(s) with a single value cannot take part in discovery: {', '.join(constant)}")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        cg = pc(mat, alpha=alpha, indep_test="fisherz", show_progress=False, node_names=cols)
    g = cg.G.graph
    directed, undirected, bidirected = [], [], []
    for i in range(len(cols)):
        for j in range(len(cols)):
            if g[j, i] == 1 and g[i, j] == -1:
                directed.append((cols[i], cols[j]))
            elif i < j and g[i, j] == -1 and g[j, i] == -1:
                undirected.append((cols[i], cols[j]))
            elif i < j and g[i, j] == 1 and g[j, i] == 1:
                bidirected.append((cols[i], cols[j]))
    return DiscoveredGraph(
        columns=tuple(cols),
        directed=tuple(directed),
        undirected=tuple(undirected),
        bidirected=tuple(bidirected),
        n_rows=len(frame),
        alpha=alpha,
        test="fisherz",
        encoded=tuple(encoded),
    )
