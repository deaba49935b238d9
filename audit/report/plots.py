"""Draw an evidence table from its PlotSpec (matplotlib, headless). Never computes statistics:
it only draws the numbers a check put in the table. Used by the HTML report and the dashboard."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from audit.results import EvidenceTable, PlotSpec

__all__ = ["figure_for", "plot_png", "png_data_uri"]


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _records(table: EvidenceTable) -> list[Mapping[str, Any]]:
    return list(table.records)


def figure_for(table: EvidenceTable, max_items: int = 40) -> Any | None:
    """A matplotlib Figure for the table, or None when it has no plot hint or no rows."""
    spec = table.plot
    if spec is None or not table.records:
        return None
    plt = _mpl()
    drawer = {
        "bar": _bar,
        "line": _line,
        "heatmap": _heatmap,
        "scatter": _scatter,
        "graph": _graph,
    }.get(spec.kind)
    if drawer is None:
        return None
    fig = drawer(plt, spec, _records(table), max_items)
    if fig is not None:
        fig.tight_layout()
    return fig


def plot_png(table: EvidenceTable, dpi: int = 90) -> bytes | None:
    fig = figure_for(table)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _mpl().close(fig)
    return buf.getvalue()


def png_data_uri(table: EvidenceTable) -> str | None:
    png = plot_png(table)
    if png is None:
        return None
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _title(ax: Any, spec: PlotSpec) -> None:
    if spec.title:
        ax.set_title(spec.title, fontsize=10)
    if spec.xlabel:
        ax.set_xlabel(spec.xlabel)
    if spec.ylabel:
        ax.set_ylabel(spec.ylabel)


def _bar(plt: Any, spec: PlotSpec, recs: Sequence[Mapping[str, Any]], max_items: int) -> Any:
    recs = list(recs)[: max_items * 4]
    groups: list[str] = []
    if spec.group:
        for r in recs:
            g = str(r.get(spec.group, ""))
            if g not in groups:
                groups.append(g)
    else:
        groups = [""]
    cats: list[str] = []
    for r in recs:
        c = str(r.get(spec.x, ""))
        if c not in cats:
            cats.append(c)
    side_by_side = bool(spec.group) and len(cats) < len(recs)
    if not side_by_side:
        labels = [
            (f"{r.get(spec.group)}: " if spec.group else "") + str(r.get(spec.x, "")) for r in recs
        ][:max_items]
        vals = [_num(r.get(spec.y)) for r in recs][:max_items]
        fig, ax = plt.subplots(figsize=(7, max(2.4, 0.28 * len(labels) + 1)))
        err = None
        if spec.lo and spec.hi:
            lo = [_num(r.get(spec.lo)) for r in recs][:max_items]
            hi = [_num(r.get(spec.hi)) for r in recs][:max_items]
            err = [
                [max(v - a, 0) if not math.isnan(a) else 0 for v, a in zip(vals, lo, strict=True)],
                [max(b - v, 0) if not math.isnan(b) else 0 for v, b in zip(vals, hi, strict=True)],
            ]
        ax.barh(range(len(vals)), vals, xerr=err, color="#4C72B0", capsize=3)
        ax.set_yticks(range(len(vals)), labels, fontsize=8)
        ax.invert_yaxis()
        if spec.reference is not None:
            ax.axvline(spec.reference, color="#C44E52", linestyle="--", linewidth=1)
        _title(ax, spec)
        if spec.ylabel and not spec.xlabel:
            ax.set_xlabel(spec.ylabel)
            ax.set_ylabel("")
        return fig
    cats = cats[:max_items]
    fig, ax = plt.subplots(figsize=(7, max(2.4, 0.3 * len(cats) * max(1, len(groups)) / 2 + 1)))
    width = 0.8 / max(1, len(groups))
    for gi, g in enumerate(groups):
        sub = {str(r.get(spec.x)): r for r in recs if str(r.get(spec.group, "")) == g}
        vals = [_num(sub[c].get(spec.y)) if c in sub else math.nan for c in cats]
        pos = [i + gi * width for i in range(len(cats))]
        err = None
        if spec.lo and spec.hi:
            err = [
                [max(v - _num(sub[c].get(spec.lo)), 0) if c in sub and not math.isnan(v) else 0
                 for v, c in zip(vals, cats, strict=True)],
                [max(_num(sub[c].get(spec.hi)) - v, 0) if c in sub and not math.isnan(v) else 0
                 for v, c in zip(vals, cats, strict=True)],
            ]
        ax.barh(pos, vals, height=width, xerr=err, label=g, capsize=2)
    ax.set_yticks([i + width * (len(groups) - 1) / 2 for i in range(len(cats))], cats, fontsize=8)
    ax.invert_yaxis()
    ax.legend(fontsize=7)
    if spec.reference is not None:
        ax.axvline(spec.reference, color="#C44E52", linestyle="--", linewidth=1)
    _title(ax, spec)
    return fig


def _line(plt: Any, spec: PlotSpec, recs: Sequence[Mapping[str, Any]], max_items: int) -> Any:
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in recs:
        g = str(r.get(spec.group, "")) if spec.group else ""
        groups.setdefault(g, []).append((_num(r.get(spec.x)), _num(r.get(spec.y))))
    for g, pts in list(groups.items())[:max_items]:
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=g or None, linewidth=1.4)
    if spec.group:
        ax.legend(fontsize=7)
    if spec.reference is not None:
        ax.axhline(spec.reference, color="#C44E52", linestyle="--", linewidth=1)
    _title(ax, spec)
    return fig


def _heatmap(plt: Any, spec: PlotSpec, recs: Sequence[Mapping[str, Any]], max_items: int) -> Any:
    xs: list[str] = []
    ys: list[str] = []
    for r in recs:
        if str(r.get(spec.x)) not in xs:
            xs.append(str(r.get(spec.x)))
        if str(r.get(spec.y)) not in ys:
            ys.append(str(r.get(spec.y)))
    xs, ys = xs[:max_items], ys[:max_items]
    grid = [[math.nan] * len(xs) for _ in ys]
    for r in recs:
        x, y = str(r.get(spec.x)), str(r.get(spec.y))
        if x in xs and y in ys:
            grid[ys.index(y)][xs.index(x)] = _num(r.get(spec.value))
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(xs), 0.8 + 0.6 * len(ys)))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=-1 if any(v < 0 for row in grid for v in row if not math.isnan(v)) else 0, vmax=1)
    ax.set_xticks(range(len(xs)), xs, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(ys)), ys, fontsize=8)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, shrink=0.8)
    _title(ax, spec)
    return fig


def _scatter(plt: Any, spec: PlotSpec, recs: Sequence[Mapping[str, Any]], max_items: int) -> Any:
    ys_raw = [r.get(spec.y) for r in recs]
    categorical_y = any(isinstance(v, str) for v in ys_raw)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = [_num(r.get(spec.x)) for r in recs]
    if categorical_y:
        cats: list[str] = []
        for v in ys_raw:
            if str(v) not in cats:
                cats.append(str(v))
        cats = cats[:max_items]
        import random

        jitter = random.Random(0)  # a fixed jitter: the plot is reproducible
        ypos = [cats.index(str(v)) + jitter.uniform(-0.3, 0.3) if str(v) in cats else math.nan for v in ys_raw]
        c = [_num(r.get(spec.value)) for r in recs] if spec.value else None
        sc = ax.scatter(xs, ypos, c=c, cmap="coolwarm", s=6, alpha=0.7)
        ax.set_yticks(range(len(cats)), cats, fontsize=8)
        ax.invert_yaxis()
        if spec.value:
            fig.colorbar(sc, ax=ax, shrink=0.8, label=spec.value)
    else:
        ys = [_num(v) for v in ys_raw]
        if spec.group:
            groups: dict[str, list[int]] = {}
            for i, r in enumerate(recs):
                groups.setdefault(str(r.get(spec.group)), []).append(i)
            for g, idx in groups.items():
                ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], label=g, s=30)
            ax.legend(fontsize=7)
        else:
            c = [_num(r.get(spec.value)) for r in recs] if spec.value else None
            ax.scatter(xs, ys, c=c, s=8, cmap="coolwarm")
    if spec.reference is not None:
        ax.axvline(spec.reference, color="#C44E52", linestyle="--", linewidth=1)
    _title(ax, spec)
    if not spec.xlabel:
        ax.set_xlabel(spec.x)
    return fig


def _graph(plt: Any, spec: PlotSpec, recs: Sequence[Mapping[str, Any]], max_items: int) -> Any:
    import networkx as nx

    dot = str(recs[0].get("dot", ""))
    g = _parse_dot(dot)
    if g.number_of_nodes() == 0:
        return None
    highlight = {str(x) for x in str(recs[0].get("highlight", "")).split(",") if x}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        layers = list(nx.topological_generations(g))
        for i, layer in enumerate(layers):
            for n in layer:
                g.nodes[n]["layer"] = i
        pos = nx.multipartite_layout(g, subset_key="layer", align="horizontal")
        pos = {k: (v[0], -v[1]) for k, v in pos.items()}
    except nx.NetworkXUnfeasible:
        pos = nx.spring_layout(g, seed=0)
    colours = ["#F4A582" if n in highlight else "#92C5DE" for n in g.nodes]
    nx.draw_networkx(g, pos, ax=ax, node_color=colours, node_size=1400, font_size=7, arrows=True,
                     arrowsize=12, edge_color="#555555")
    ax.axis("off")
    _title(ax, spec)
    return fig


def _parse_dot(dot: str) -> Any:
    import networkx as nx

    g = nx.DiGraph()
    try:
        import pydot

        graphs = pydot.graph_from_dot_data(dot)
        if graphs:
            pg = graphs[0]
            for n in pg.get_nodes():
                name = n.get_name().strip('"')
                if name not in ("node", "edge", "graph", "\\n", ""):
                    g.add_node(name)
            for e in pg.get_edges():
                g.add_edge(str(e.get_source()).strip('"'), str(e.get_destination()).strip('"'))
            return g
    except Exception:  # noqa: BLE001 - fall back to a simple edge scan
        pass
    import re

    for a, b in re.findall(r'"?([\w.\- ]+?)"?\s*->\s*"?([\w.\- ]+?)"?\s*[;\[\n]', dot):
        g.add_edge(a.strip(), b.strip())
    return g
