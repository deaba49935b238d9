"""Charts map an evidence table's columns to marks by its PlotSpec (Altair); they compute nothing."""

from __future__ import annotations

import math

import altair as alt
import pytest

from audit.results import EvidenceTable, PlotSpec
from dashboard._charts import MAX_POINTS, Chart, chart_for, chart_kinds, records_frame


def _layers(chart: Chart) -> dict:
    return {layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]: layer
            for layer in chart.spec["layer"]}


def _valid(chart: Chart) -> dict:
    """The standalone chart (rows inline) validated by Altair against the Vega-Lite schema, and its
    spec without data equal to what the dashboard is given."""
    assert isinstance(chart.chart, alt.LayerChart)
    full = chart.to_dict()  # raises altair's SchemaValidationError on an invalid spec
    assert full["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    (rows,) = full["datasets"].values()
    assert len(rows) == len(chart.data)
    # the dashboard's spec is the same chart without a data source (the rows go beside it)
    assert "data" not in chart.spec and "datasets" not in chart.spec
    assert {k: v for k, v in full.items() if k not in ("data", "datasets")} == chart.spec
    chart.layers.to_dict(validate=True)  # the spec without rows is valid Vega-Lite too
    return full


def test_bar_with_interval_group_and_reference():
    t = EvidenceTable("by_group", (
        {"feature": "sex", "group": "female", "rate": 0.3, "rate_lo": 0.25, "rate_hi": 0.35},
        {"feature": "sex", "group": "male", "rate": 0.5, "rate_lo": 0.45, "rate_hi": math.nan},
    ), PlotSpec("bar", x="group", y="rate", lo="rate_lo", hi="rate_hi", group="feature", reference=0.8,
                title="Rate by group"))
    chart = chart_for(t)
    _valid(chart)
    layers = _layers(chart)
    assert set(layers) == {"bar", "errorbar", "rule"}
    bar = layers["bar"]["encoding"]
    assert bar["x"] == {"field": "rate", "type": "quantitative", "title": "rate"}
    assert bar["y"]["field"] == "group" and bar["y"]["type"] == "nominal" and bar["y"]["sort"] == ["female", "male"]
    assert bar["color"] == {"field": "feature", "type": "nominal", "title": "feature", "scale": {"scheme": "tableau10"}}
    assert "yOffset" not in bar  # one bar per category: no side-by-side
    assert [(c["field"], c["type"]) for c in bar["tooltip"]] == [
        ("feature", "nominal"), ("group", "nominal"), ("rate", "quantitative"), ("rate_lo", "quantitative"),
        ("rate_hi", "quantitative")]
    err = layers["errorbar"]
    assert err["mark"] == {"type": "errorbar", "ticks": True, "color": "#222222"}
    assert (err["encoding"]["x"]["field"], err["encoding"]["x2"]["field"]) == ("rate_lo", "rate_hi")
    rule = layers["rule"]
    assert rule["encoding"]["x"] == {"datum": 0.8, "type": "quantitative"}
    assert rule["mark"] == {"type": "rule", "color": "#C44E52", "strokeDash": [5, 3]}
    assert chart.spec["title"] == "Rate by group" and chart.spec["height"] == {"step": 24}
    # the values are the table's, untouched; NaN becomes missing (Vega cannot draw NaN)
    assert chart.data["rate"].tolist() == [0.3, 0.5]
    assert chart.data["rate_hi"].isna().tolist() == [False, True]


def test_single_colour_bars():
    chart = chart_for(EvidenceTable("t", ({"f": "a", "v": 1.0}, {"f": "b", "v": 2.0}), PlotSpec("bar", x="f", y="v")))
    _valid(chart)
    assert _layers(chart)["bar"]["encoding"]["color"] == {"value": "#4C72B0"}
    assert set(_layers(chart)) == {"bar"}


def test_side_by_side_bars_and_dotted_field_names():
    t = EvidenceTable("x", (
        {"feature": "income", "method": "SHAP", "tpr_at_1pct.fpr": 0.9},
        {"feature": "income", "method": "LIME", "tpr_at_1pct.fpr": 0.8},
    ), PlotSpec("bar", x="feature", y="tpr_at_1pct.fpr", group="method"))
    chart = chart_for(t)
    _valid(chart)
    bar = _layers(chart)["bar"]["encoding"]
    assert bar["yOffset"] == {"field": "method", "type": "nominal"}
    assert bar["x"]["field"] == "tpr_at_1pct_fpr" and "tpr_at_1pct_fpr" in chart.data.columns
    assert chart.spec["height"] == {"step": round(24 * 0.6)}  # a step per bar when bars stand side by side


def test_line_heatmap_scatter():
    line = chart_for(EvidenceTable("roc", ({"attack": "a", "fpr": 0.0, "tpr": 0.0}, {"attack": "a", "fpr": 1.0, "tpr": 1.0}),
                                   PlotSpec("line", x="fpr", y="tpr", group="attack", reference=0.5)))
    _valid(line)
    layers = _layers(line)
    assert layers["line"]["mark"] == {"type": "line", "point": True}
    assert layers["line"]["encoding"]["color"]["field"] == "attack"
    assert layers["rule"]["encoding"]["y"] == {"datum": 0.5, "type": "quantitative"}
    assert line.spec["height"] == 300

    heat = chart_for(EvidenceTable("m", ({"a": "SHAP", "b": "LIME", "rho": -0.2},),
                                   PlotSpec("heatmap", x="a", y="b", value="rho")))
    _valid(heat)
    rect = _layers(heat)["rect"]["encoding"]
    assert rect["color"]["scale"] == {"scheme": "redyellowgreen", "domain": [-1.0, 1.0]}  # negative widens it
    assert _layers(heat)["text"]["encoding"]["text"] == {"field": "rho", "type": "quantitative", "format": ".2f"}
    assert (heat.spec["width"], heat.spec["height"]) == ({"step": 64}, {"step": 40})

    swarm = chart_for(EvidenceTable("b", ({"feature": "income", "shap": 1.0, "v": 0.9},
                                          {"feature": "age", "shap": -0.1, "v": 0.1}),
                                    PlotSpec("scatter", x="shap", y="feature", value="v")))
    _valid(swarm)
    circle = _layers(swarm)["circle"]
    enc = circle["encoding"]
    assert enc["y"]["type"] == "nominal" and enc["color"]["field"] == "v" and "yOffset" in enc
    assert enc["color"]["scale"] == {"scheme": "redblue", "reverse": True}
    assert enc["yOffset"] == {"field": "_jitter", "type": "quantitative", "scale": {"domain": [-1.2, 1.2]}}
    assert circle["mark"] == {"type": "circle", "size": 12, "opacity": 0.7}
    assert swarm.spec["height"] == {"step": 34}

    points = chart_for(EvidenceTable("p", tuple({"x": i / 10, "y": i % 3, "g": "ab"[i % 2]} for i in range(20)),
                                     PlotSpec("scatter", x="x", y="y", group="g")))
    _valid(points)
    enc = _layers(points)["circle"]["encoding"]
    assert enc["y"]["type"] == "quantitative" and enc["y"]["scale"] == {"zero": False}
    assert enc["color"]["field"] == "g" and _layers(points)["circle"]["mark"]["size"] == 60


def test_points_are_capped_and_the_cap_is_the_tables_first_rows():
    n = MAX_POINTS + 250
    t = EvidenceTable("b", tuple({"feature": f"f{i % 7}", "shap": i / n, "v": 0.5} for i in range(n)),
                      PlotSpec("scatter", x="shap", y="feature", value="v"))
    chart = chart_for(t)
    assert len(chart.data) == MAX_POINTS
    assert chart.data["shap"].tolist() == [i / n for i in range(MAX_POINTS)]
    assert len(chart.chart.data) == MAX_POINTS  # what st.altair_chart would draw
    assert chart.spec["layer"][0]["mark"]["size"] == 12


def test_no_chart_without_plot_rows_or_columns():
    assert chart_for(EvidenceTable("t", ({"a": 1},))) is None
    assert chart_for(EvidenceTable("t", (), PlotSpec("bar", x="a", y="b"))) is None
    assert chart_for(EvidenceTable("t", ({"a": 1},), PlotSpec("bar", x="a", y="missing"))) is None
    assert chart_for(EvidenceTable("g", ({"dot": "digraph { a -> b }"},), PlotSpec("graph"))) is None
    assert "graph" not in chart_kinds() and set(chart_kinds()) == {"bar", "line", "heatmap", "scatter"}


def test_records_frame_makes_non_finite_values_missing():
    df = records_frame([{"a": 1.0, "b": math.inf}, {"a": math.nan, "b": -math.inf, 3: "x"}])
    assert df["a"].isna().tolist() == [False, True] and df["b"].isna().all()
    assert list(df.columns) == ["a", "b", "3"]


@pytest.mark.parametrize("kind", ["bar", "line", "scatter"])
def test_spec_is_built_from_the_chart_once(kind):
    chart = chart_for(EvidenceTable("t", ({"x": 1.0, "y": 2.0},), PlotSpec(kind, x="x", y="y")))
    assert chart.spec is chart.spec  # cached: a rerun's later reads cost nothing
