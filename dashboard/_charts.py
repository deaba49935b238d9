"""Charts drawn from an evidence table's PlotSpec, built with Altair (Vega-Lite).

Like ``audit.report.plots`` (matplotlib, for the HTML report) these only map columns a check
already filled to marks: bars with their interval whiskers, lines, heatmap cells, scatter points.
No statistic is computed here. A :class:`Chart` holds the Altair chart and the table it draws;
``st.altair_chart(chart.chart)`` or ``st.vega_lite_chart(chart.data, chart.spec)`` shows it
(interactive in the browser).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from audit.results import EvidenceTable, PlotSpec

if TYPE_CHECKING:
    import altair as alt

__all__ = ["MAX_POINTS", "Chart", "chart_for", "chart_kinds", "records_frame"]

#: Points drawn at most per chart (a SHAP beeswarm can hold many); the table keeps them all.
MAX_POINTS = 5000
_KINDS = ("bar", "line", "heatmap", "scatter")
_BLUE = "#4C72B0"
_RED = "#C44E52"
_SCHEME = "tableau10"
#: The name the chart gives its data source; the data itself is attached only where it is shown.
_DATA_NAME = "table"


@dataclass(frozen=True)
class Chart:
    """An Altair chart of an evidence table, and the table it draws.

    ``layers`` is the chart without its rows (a named data source stands in for them), so its
    Vega-Lite spec stays small; :attr:`chart` attaches the rows, :attr:`spec` is the spec for
    ``st.vega_lite_chart(chart.data, chart.spec)``.
    """

    data: Any  # pandas.DataFrame
    layers: alt.LayerChart

    @property
    def chart(self) -> alt.LayerChart:
        """The Altair chart with its rows attached (``st.altair_chart(chart.chart)``)."""
        return self.layers.properties(data=self.data)

    @functools.cached_property
    def spec(self) -> dict[str, Any]:
        """The Vega-Lite specification without a data source: the rows are passed beside it, as
        :attr:`data`. Not validated here: Altair's schema validation would run on every dashboard
        rerun, and the tests validate every kind (see :meth:`to_dict`)."""
        d = self.layers.to_dict(validate=False)
        d.pop("data", None)
        return d

    def to_dict(self, *, validate: bool = True) -> dict[str, Any]:
        """The Vega-Lite specification with the rows inline (a standalone chart), validated
        against the Vega-Lite schema by Altair unless ``validate`` is False."""
        return self.chart.to_dict(validate=validate)


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
    df, layers, size = drawer(df, spec, height_per_row)
    import altair as alt

    # given to the constructor, not .properties(), which validates each value against the schema
    chart = alt.LayerChart(layer=layers, data=alt.NamedData(name=_DATA_NAME), title=title, **size)
    return Chart(df, chart)


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


def _tooltip(df: Any, *cols: str) -> list[alt.Tooltip]:
    """A tooltip line per column that exists (numbers as quantities, anything else as names)."""
    import altair as alt
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    def kind(c: str) -> str:
        col = df[c]
        return "quantitative" if is_numeric_dtype(col) and not is_bool_dtype(col) else "nominal"

    return [alt.Tooltip(field=c, type=kind(c)) for c in dict.fromkeys(cols) if c and c in df.columns]


def _rule(axis: str, value: float) -> alt.Chart:
    """A dashed red reference line (a policy limit) across the plot at ``value``."""
    import altair as alt

    datum = alt.XDatum if axis == "x" else alt.YDatum
    return alt.Chart().mark_rule(color=_RED, strokeDash=[5, 3]).encode(
        **{axis: datum(value, type="quantitative")})


_Drawn = tuple[Any, list[Any], dict[str, Any]]  # rows, layers, chart size


def _bar(df: Any, spec: PlotSpec, height_per_row: int) -> _Drawn:
    import altair as alt

    df = df.copy()
    df[spec.x] = df[spec.x].astype(str)
    group = spec.group if spec.group and spec.group in df.columns else ""
    if group:
        df[group] = df[group].astype(str)
    side_by_side = bool(group) and df[spec.x].nunique() < len(df)
    cat = alt.Y(field=spec.x, type="nominal", sort=list(dict.fromkeys(df[spec.x])),
                title=spec.xlabel or spec.x, axis=alt.Axis(labelLimit=240))
    tooltip = _tooltip(df, group, spec.x, spec.y, spec.lo, spec.hi)
    offset = {"yOffset": alt.YOffset(field=group, type="nominal")} if side_by_side else {}
    color = (alt.Color(field=group, type="nominal", title=group, scale=alt.Scale(scheme=_SCHEME))
             if group else alt.ColorValue(_BLUE))
    layers = [alt.Chart().mark_bar(opacity=0.85).encode(
        y=cat, x=alt.X(field=spec.y, type="quantitative", title=spec.ylabel or spec.y),
        color=color, tooltip=tooltip, **offset)]
    if spec.lo and spec.hi and spec.lo in df.columns and spec.hi in df.columns:
        layers.append(alt.Chart().mark_errorbar(ticks=True, color="#222222").encode(
            y=cat, x=alt.X(field=spec.lo, type="quantitative", title=spec.ylabel or spec.y),
            x2=alt.X2(field=spec.hi), tooltip=tooltip, **offset))
    if spec.reference is not None:
        layers.append(_rule("x", spec.reference))
    # a step per category keeps every label readable; with side-by-side bars the step is per bar
    step = round(height_per_row * 0.6) if side_by_side else height_per_row
    return df, layers, {"height": alt.Step(step)}


def _line(df: Any, spec: PlotSpec, height_per_row: int) -> _Drawn:
    import altair as alt

    group = spec.group if spec.group and spec.group in df.columns else ""
    color = ({"color": alt.Color(field=group, type="nominal", title=group, scale=alt.Scale(scheme=_SCHEME))}
             if group else {})
    layers = [alt.Chart().mark_line(point=len(df) <= 60).encode(
        x=alt.X(field=spec.x, type="quantitative", title=spec.xlabel or spec.x),
        y=alt.Y(field=spec.y, type="quantitative", title=spec.ylabel or spec.y),
        tooltip=_tooltip(df, group, spec.x, spec.y), **color)]
    if spec.reference is not None:
        layers.append(_rule("y", spec.reference))
    return df, layers, {"height": 300}


def _heatmap(df: Any, spec: PlotSpec, height_per_row: int) -> _Drawn:
    import altair as alt

    df = df.copy()
    df[spec.x] = df[spec.x].astype(str)
    df[spec.y] = df[spec.y].astype(str)
    values = df[spec.value].dropna()
    lo = -1.0 if len(values) and float(values.min()) < 0 else 0.0
    hi = max(1.0, float(values.max())) if len(values) else 1.0
    x = alt.X(field=spec.x, type="nominal", sort=list(dict.fromkeys(df[spec.x])), title=spec.xlabel or spec.x,
              axis=alt.Axis(labelAngle=-20, labelLimit=240))
    y = alt.Y(field=spec.y, type="nominal", sort=list(dict.fromkeys(df[spec.y])), title=spec.ylabel or spec.y,
              axis=alt.Axis(labelLimit=240))
    cells = alt.Chart().mark_rect().encode(
        x=x, y=y,
        color=alt.Color(field=spec.value, type="quantitative", title=spec.value,
                        scale=alt.Scale(scheme="redyellowgreen", domain=[lo, hi])),
        tooltip=_tooltip(df, spec.x, spec.y, spec.value))
    text = alt.Chart().mark_text(fontSize=11).encode(
        x=x, y=y, text=alt.Text(field=spec.value, type="quantitative", format=".2f"))
    return df, [cells, text], {"width": alt.Step(64), "height": alt.Step(40)}


def _scatter(df: Any, spec: PlotSpec, height_per_row: int) -> _Drawn:
    import altair as alt

    categorical_y = bool(df[spec.y].map(lambda v: isinstance(v, str)).any())
    enc: dict[str, Any] = {"x": alt.X(field=spec.x, type="quantitative", title=spec.xlabel or spec.x)}
    height: Any = 320
    if categorical_y:
        df = df.copy()
        # a fixed, reproducible spread of the points around their row (a beeswarm's jitter)
        df["_jitter"] = [((i * 0.6180339887) % 1.0) - 0.5 for i in range(len(df))]
        order = list(dict.fromkeys(df[spec.y].astype(str)))
        enc["y"] = alt.Y(field=spec.y, type="nominal", sort=order, title=spec.ylabel or spec.y,
                         axis=alt.Axis(labelLimit=240))
        enc["yOffset"] = alt.YOffset(field="_jitter", type="quantitative", scale=alt.Scale(domain=[-1.2, 1.2]))
        height = alt.Step(34)
    else:
        enc["y"] = alt.Y(field=spec.y, type="quantitative", title=spec.ylabel or spec.y,
                         scale=alt.Scale(zero=False))
    if spec.value and spec.value in df.columns:
        enc["color"] = alt.Color(field=spec.value, type="quantitative", title=spec.value,
                                 scale=alt.Scale(scheme="redblue", reverse=True))
    elif spec.group and spec.group in df.columns:
        enc["color"] = alt.Color(field=spec.group, type="nominal", title=spec.group,
                                 scale=alt.Scale(scheme=_SCHEME))
    enc["tooltip"] = _tooltip(df, spec.group, spec.x, spec.y, spec.value)
    size = 12 if categorical_y or len(df) > 200 else 60
    layers = [alt.Chart().mark_circle(size=size, opacity=0.7).encode(**enc)]
    if spec.reference is not None:
        layers.append(_rule("x", spec.reference))
    return df, layers, {"height": height}
