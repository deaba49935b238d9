"""Charts map an evidence table's columns to marks by its PlotSpec; they compute nothing."""

from __future__ import annotations

import math

from audit.results import EvidenceTable, PlotSpec
from dashboard._charts import chart_for


def _layers(chart):
    return {layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]: layer
            for layer in chart.spec["layer"]}


def test_bar_with_interval_group_and_reference():
    t = EvidenceTable("by_group", (
        {"feature": "sex", "group": "female", "rate": 0.3, "rate_lo": 0.25, "rate_hi": 0.35},
        {"feature": "sex", "group": "male", "rate": 0.5, "rate_lo": 0.45, "rate_hi": math.nan},
    ), PlotSpec("bar", x="group", y="rate", lo="rate_lo", hi="rate_hi", group="feature", reference=0.8,
                title="Rate by group"))
    chart = chart_for(t)
    layers = _layers(chart)
    assert set(layers) == {"bar", "errorbar", "rule"}
    assert layers["bar"]["encoding"]["x"]["field"] == "rate"
    assert layers["bar"]["encoding"]["color"]["field"] == "feature"
    assert "yOffset" not in layers["bar"]["encoding"]  # one bar per category: no side-by-side
    assert (layers["errorbar"]["encoding"]["x"]["field"], layers["errorbar"]["encoding"]["x2"]["field"]) == (
        "rate_lo", "rate_hi")
    assert layers["rule"]["encoding"]["x"]["datum"] == 0.8
    assert chart.spec["title"] == "Rate by group"
    # the values are the table's, untouched; NaN becomes missing (Vega cannot draw NaN)
    assert chart.data["rate"].tolist() == [0.3, 0.5]
    assert chart.data["rate_hi"].isna().tolist() == [False, True]


def test_side_by_side_bars_and_dotted_field_names():
    t = EvidenceTable("x", (
        {"feature": "income", "method": "SHAP", "tpr_at_1pct.fpr": 0.9},
        {"feature": "income", "method": "LIME", "tpr_at_1pct.fpr": 0.8},
    ), PlotSpec("bar", x="feature", y="tpr_at_1pct.fpr", group="method"))
    chart = chart_for(t)
    bar = _layers(chart)["bar"]["encoding"]
    assert bar["yOffset"]["field"] == "method"
    assert bar["x"]["field"] == "tpr_at_1pct_fpr" and "tpr_at_1pct_fpr" in chart.data.columns


def test_line_heatmap_scatter():
    line = chart_for(EvidenceTable("roc", ({"attack": "a", "fpr": 0.0, "tpr": 0.0}, {"attack": "a", "fpr": 1.0, "tpr": 1.0}),
                                   PlotSpec("line", x="fpr", y="tpr", group="attack")))
    assert _layers(line)["line"]["encoding"]["color"]["field"] == "attack"
    heat = chart_for(EvidenceTable("m", ({"a": "SHAP", "b": "LIME", "rho": -0.2},),
                                   PlotSpec("heatmap", x="a", y="b", value="rho")))
    rect = _layers(heat)["rect"]["encoding"]
    assert rect["color"]["scale"]["domain"] == [-1.0, 1.0]  # a negative correlation widens the scale
    swarm = chart_for(EvidenceTable("b", ({"feature": "income", "shap": 1.0, "v": 0.9},
                                          {"feature": "age", "shap": -0.1, "v": 0.1}),
                                    PlotSpec("scatter", x="shap", y="feature", value="v")))
    enc = _layers(swarm)["circle"]["encoding"]
    assert enc["y"]["type"] == "nominal" and enc["color"]["field"] == "v" and "yOffset" in enc


def test_no_chart_without_plot_rows_or_columns():
    assert chart_for(EvidenceTable("t", ({"a": 1},))) is None
    assert chart_for(EvidenceTable("t", (), PlotSpec("bar", x="a", y="b"))) is None
    assert chart_for(EvidenceTable("t", ({"a": 1},), PlotSpec("bar", x="a", y="missing"))) is None
    assert chart_for(EvidenceTable("g", ({"dot": "digraph { a -> b }"},), PlotSpec("graph"))) is None
