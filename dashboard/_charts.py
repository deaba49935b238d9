"""Vega-Lite charts drawn from an evidence table's PlotSpec.

Like ``audit.report.plots`` (matplotlib, for the HTML report) these only map columns a check
already filled to marks: bars with their interval whiskers, lines, heatmap cells, scatter points.
No statistic is computed here. The specs are plain dictionaries given to ``st.vega_lite_chart``
(interactive in the browser, and a few milliseconds to build, so reruns stay cheap).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audit.results import EvidenceTable, PlotSpec

__all__ = ["MAX_POINTS", "Chart", "chart_for", "chart_kinds", "records_frame"]

#: Points drawn at most per chart (a SHAP beeswarm can hold many); the table keeps them all.
MAX_POINTS = 5000
_KINDS = ("bar", "line", "heatmap", "scatter")
_BLUE = "#4C72B0"
_RED = "#C44E52"
_SCHEME = "tableau10"


@dataclass(frozen=True)
class Chart:
    """A Vega-Lite spec and the data it draws (``st.vega_lite_chart(chart.data, chart.spec)``)."""

    data: Any
    spec: dict[str, Any]


def chart_kinds() -> tuple[str, ...]:
    """PlotSpec kinds drawn as charts here (``graph`` is drawn with Graphviz by the page)."""
    return _KINDS


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def records_frame(records: Sequence[Mapping[str, Any]]) -> Any:
    """The records as a DataFrame, non-finite numbers as missing (Vega cannot draw NaN)."""
    import pandas as pd

    return pd.DataFrame([{str(k): _clean(v) for k, v in r.items()} for r in records])


def chart_for(table: EvidenceTable, *, height_per_row: int = 24) -> Chart | None:
    """A chart for the table, or None (no plot hint, no rows, missing columns, or a kind drawn elsewhere)."""
    spec = table.plot
    if spec is None or not table.records or spec.kind not in _KINDS:
        return None
    df = records_frame(table.records[:MAX_POINTS])
    needed = [c for c in (spec.x, spec.y, spec.value) if c]
    if any(c not in df.columns for c in needed):
        return None
    title = spec.title or table.description or table.name
    df, spec = _safe_fields(df, spec)
    drawer = {"bar": _bar, "line": _line, "heatmap": _heatmap, "scatter": _scatter}[spec.kind]
    return drawer(df, spec, title, height_per_row)


def _safe_fields(df: Any, spec: PlotSpec) -> tuple[Any, PlotSpec]:
    """Column names Vega-Lite reads literally: dots, brackets and colons have meanings there."""
    rename: dict[str, str] = {}
    taken = set(map(str, df.columns))
    for c in map(str, df.columns):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", c):
            continue
        new = re.sub(r"[^A-Za-z0-9_]", "_", c) or "field"
        if new[0].isdigit():
            new = "f_" + new
        while new in taken:
            new += "_"
        taken.add(new)
        rename[c] = new
    if not rename:
        return df, spec
    fields = {f: rename.get(getattr(spec, f), getattr(spec, f)) for f in ("x", "y", "value", "lo", "hi", "group")}
    return df.rename(columns=rename), dataclasses.replace(spec, **fields)


def _tooltip(df: Any, *cols: str) -> list[dict[str, Any]]:
    return [{"field": c} for c in dict.fromkeys(cols) if c and c in df.columns]


def _rule(axis: str, value: float) -> dict[str, Any]:
    return {"mark": {"type": "rule", "color": _RED, "strokeDash": [5, 3]},
            "encoding": {axis: {"datum": value, "type": "quantitative"}}}


def _bar(df: Any, spec: PlotSpec, title: str, height_per_row: int) -> Chart:
    df = df.copy()
    df[spec.x] = df[spec.x].astype(str)
    group = spec.group if spec.group and spec.group in df.columns else ""
    if group:
        df[group] = df[group].astype(str)
    side_by_side = bool(group) and df[spec.x].nunique() < len(df)
    cat = {"field": spec.x, "type": "nominal", "sort": list(dict.fromkeys(df[spec.x])),
           "title": spec.xlabel or spec.x, "axis": {"labelLimit": 240}}
    bar_enc: dict[str, Any] = {
        "y": cat,
        "x": {"field": spec.y, "type": "quantitative", "title": spec.ylabel or spec.y},
        "tooltip": _tooltip(df, group, spec.x, spec.y, spec.lo, spec.hi),
        "color": {"field": group, "type": "nominal", "title": group, "scale": {"scheme": _SCHEME}}
        if group else {"value": _BLUE},
    }
    if side_by_side:
        bar_enc["yOffset"] = {"field": group, "type": "nominal"}
    layers: list[dict[str, Any]] = [{"mark": {"type": "bar", "opacity": 0.85}, "encoding": bar_enc}]
    if spec.lo and spec.hi and spec.lo in df.columns and spec.hi in df.columns:
        err_enc: dict[str, Any] = {
            "y": cat,
            "x": {"field": spec.lo, "type": "quantitative", "title": spec.ylabel or spec.y},
            "x2": {"field": spec.hi},
            "tooltip": _tooltip(df, group, spec.x, spec.y, spec.lo, spec.hi),
        }
        if side_by_side:
            err_enc["yOffset"] = {"field": group, "type": "nominal"}
        layers.append({"mark": {"type": "errorbar", "ticks": True, "color": "#222222"}, "encoding": err_enc})
    if spec.reference is not None:
        layers.append(_rule("x", spec.reference))
    # a step per category keeps every label readable; with side-by-side bars the step is per bar
    step = round(height_per_row * 0.6) if side_by_side else height_per_row
    return Chart(df, {"title": title, "height": {"step": step}, "layer": layers})


def _line(df: Any, spec: PlotSpec, title: str, height_per_row: int) -> Chart:
    group = spec.group if spec.group and spec.group in df.columns else ""
    enc: dict[str, Any] = {
        "x": {"field": spec.x, "type": "quantitative", "title": spec.xlabel or spec.x},
        "y": {"field": spec.y, "type": "quantitative", "title": spec.ylabel or spec.y},
        "tooltip": _tooltip(df, group, spec.x, spec.y),
    }
    if group:
        enc["color"] = {"field": group, "type": "nominal", "title": group, "scale": {"scheme": _SCHEME}}
    layers: list[dict[str, Any]] = [{"mark": {"type": "line", "point": len(df) <= 60}, "encoding": enc}]
    if spec.reference is not None:
        layers.append(_rule("y", spec.reference))
    return Chart(df, {"title": title, "height": 300, "layer": layers})


def _heatmap(df: Any, spec: PlotSpec, title: str, height_per_row: int) -> Chart:
    df = df.copy()
    df[spec.x] = df[spec.x].astype(str)
    df[spec.y] = df[spec.y].astype(str)
    values = df[spec.value].dropna()
    lo = -1.0 if len(values) and float(values.min()) < 0 else 0.0
    hi = max(1.0, float(values.max())) if len(values) else 1.0
    x_order = list(dict.fromkeys(df[spec.x]))
    y_order = list(dict.fromkeys(df[spec.y]))
    enc = {
        "x": {"field": spec.x, "type": "nominal", "sort": x_order, "title": spec.xlabel or spec.x,
              "axis": {"labelAngle": -20, "labelLimit": 240}},
        "y": {"field": spec.y, "type": "nominal", "sort": y_order, "title": spec.ylabel or spec.y,
              "axis": {"labelLimit": 240}},
    }
    cells = {"mark": "rect", "encoding": {
        **enc,
        "color": {"field": spec.value, "type": "quantitative", "title": spec.value,
                  "scale": {"scheme": "redyellowgreen", "domain": [lo, hi]}},
        "tooltip": _tooltip(df, spec.x, spec.y, spec.value),
    }}
    text = {"mark": {"type": "text", "fontSize": 11},
            "encoding": {**enc, "text": {"field": spec.value, "type": "quantitative", "format": ".2f"}}}
    return Chart(df, {"title": title, "width": {"step": 64}, "height": {"step": 40}, "layer": [cells, text]})


def _scatter(df: Any, spec: PlotSpec, title: str, height_per_row: int) -> Chart:
    categorical_y = bool(df[spec.y].map(lambda v: isinstance(v, str)).any())
    enc: dict[str, Any] = {"x": {"field": spec.x, "type": "quantitative", "title": spec.xlabel or spec.x}}
    height: Any = 320
    if categorical_y:
        df = df.copy()
        # a fixed, reproducible spread of the points around their row (a beeswarm's jitter)
        df["_jitter"] = [((i * 0.6180339887) % 1.0) - 0.5 for i in range(len(df))]
        order = list(dict.fromkeys(df[spec.y].astype(str)))
        enc["y"] = {"field": spec.y, "type": "nominal", "sort": order, "title": spec.ylabel or spec.y,
                    "axis": {"labelLimit": 240}}
        enc["yOffset"] = {"field": "_jitter", "type": "quantitative", "scale": {"domain": [-1.2, 1.2]}}
        height = {"step": 34}
    else:
        enc["y"] = {"field": spec.y, "type": "quantitative", "title": spec.ylabel or spec.y,
                    "scale": {"zero": False}}
    if spec.value and spec.value in df.columns:
        enc["color"] = {"field": spec.value, "type": "quantitative", "title": spec.value,
                        "scale": {"scheme": "redblue", "reverse": True}}
    elif spec.group and spec.group in df.columns:
        enc["color"] = {"field": spec.group, "type": "nominal", "title": spec.group, "scale": {"scheme": _SCHEME}}
    enc["tooltip"] = _tooltip(df, spec.group, spec.x, spec.y, spec.value)
    size = 12 if categorical_y or len(df) > 200 else 60
    layers: list[dict[str, Any]] = [{"mark": {"type": "circle", "size": size, "opacity": 0.7}, "encoding": enc}]
    if spec.reference is not None:
        layers.append(_rule("x", spec.reference))
    return Chart(df, {"title": title, "height": height, "layer": layers})
