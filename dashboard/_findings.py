"""Render an AuditReport in Streamlit: verdicts, per-family sections, every evidence table, downloads.

Everything shown is read from the report. Evidence tables are drawn by their PlotSpec kind
(``dashboard._charts``; ``graph`` with Graphviz); the family sections put the most telling
tables first (fairness by group with CI bars, explanation importances and agreement, the causal
graph with effects and flip rates, membership-inference ROC and ε). Where a section gathers
numbers from several checks (ε claimed / recomputed / empirical) it copies them, it does not
derive new ones.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import streamlit as st

from audit.results import AuditReport, CheckResult, EvidenceTable, PlotSpec
from dashboard._charts import chart_for, records_frame
from dashboard._state import verdict_badge

__all__ = ["family_label", "render_check", "render_downloads", "render_report", "render_summary"]

def family_label(name: str) -> str:
    """What a family is called on the page: the title it registered with (plugins name theirs),
    read from the registry each time, so a family added to a running server shows up."""
    from audit.registry import families

    return next((f.title for f in families() if f.name == name), name.replace("_", " ").capitalize())
#: Per-group metrics of fairness.group_metrics that carry an interval (Wilson).
GROUP_METRICS = ("selection_rate", "tpr", "fpr", "fnr", "precision", "accuracy", "calibration_gap")
INTERSECTION_MARK = "×"


# --- helpers ----------------------------------------------------------------------------------


def _table(result: CheckResult | None, name: str) -> EvidenceTable | None:
    if result is None:
        return None
    for t in result.evidence:
        if t.name == name:
            return t
    return None


def _result(report: AuditReport, check_id: str) -> CheckResult | None:
    for r in report.results:
        if r.check_id == check_id:
            return r
    return None


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.4g}"
    return str(v)


def _show_chart(chart: Any) -> None:
    st.vega_lite_chart(chart.data, chart.spec, width="stretch")


def _draw(table: EvidenceTable, key: str) -> bool:
    """Draw the table by its PlotSpec; True when something was drawn."""
    if table.plot is not None and table.plot.kind == "graph" and table.records:
        dot = str(table.records[0].get("dot", ""))
        if dot.strip():
            if table.plot.title:
                st.markdown(f"**{table.plot.title}**")
            st.graphviz_chart(dot, width="stretch")
            return True
        return False
    chart = chart_for(table)
    if chart is None:
        return False
    _show_chart(chart)
    return True


def _records_table(records: Sequence[Mapping[str, Any]], *, height: int | None = None) -> None:
    df = records_frame(records)
    if height is None:
        st.dataframe(df, hide_index=True, width="stretch")
    else:
        st.dataframe(df, hide_index=True, width="stretch", height=height)


# --- summary and downloads --------------------------------------------------------------------


def render_summary(report: AuditReport) -> None:
    """Overall verdict, counts per verdict, what was audited."""
    verdict = report.verdict.value
    st.markdown(f"### Audit `{report.audit_id[:12]}` {verdict_badge(verdict)}")
    counts = report.counts()
    cols = st.columns(5)
    for col, v in zip(cols, ("PASS", "WARN", "FAIL", "ERROR", "SKIPPED"), strict=True):
        col.metric(v.title(), counts.get(v, 0))
    model = dict(report.model)
    data = dict(dict(report.inputs).get("data", {}))
    test = dict(data.get("test", {}) or {})
    bits = [
        f"model **{model.get('path', '?')}** ({model.get('format', '?')}, {model.get('type', model.get('kind', '?'))})",
        f"data **{test.get('path', '?')}** ({_fmt(test.get('rows'))} rows)",
    ]
    for role in ("train", "holdout"):
        if data.get(role):
            bits.append(f"{role} **{data[role].get('path', '?')}** ({_fmt(data[role].get('rows'))} rows)")
    bits.append(f"created {report.created_at}, {report.seconds:.1f} s")
    st.caption(" · ".join(bits))


def _results_frame(results: Iterable[CheckResult]) -> Any:
    import pandas as pd

    return pd.DataFrame([
        {"verdict": r.verdict.value, "check": r.check_id, "summary": r.summary,
         "seconds": round(float(r.provenance.seconds), 2)}
        for r in results
    ])


def render_downloads(report: AuditReport, key: str) -> None:
    """JSON, HTML, Markdown, JUnit and SARIF, each rendered only when its button is pressed."""
    from audit.report import render_html, render_json, render_junit, render_markdown, render_sarif

    stem = f"trustaudit-{report.audit_id[:12]}"
    kinds = (
        ("JSON", render_json, "json", "application/json"),
        ("HTML", render_html, "html", "text/html"),
        ("Markdown", render_markdown, "md", "text/markdown"),
        ("JUnit XML", render_junit, "xml", "application/xml"),
        ("SARIF", render_sarif, "sarif", "application/json"),
    )
    cols = st.columns(len(kinds))
    for col, (label, fn, ext, mime) in zip(cols, kinds, strict=True):
        col.download_button(
            label, data=functools.partial(fn, report), file_name=f"{stem}.{ext}", mime=mime,
            key=f"{key}_dl_{ext}_{report.audit_id}", on_click="ignore", icon=":material/download:",
            width="stretch",
        )


# --- one check --------------------------------------------------------------------------------


def render_check(result: CheckResult, key: str, *, skip_tables: Iterable[str] = ()) -> None:
    """One check: verdict, summary, every evidence table (drawn, then as data), metrics, provenance."""
    skip = set(skip_tables)
    with st.container(border=True):
        st.markdown(f"**{result.check_id}** {verdict_badge(result.verdict.value)}")
        st.write(result.summary)
        if result.error is not None:
            st.error(f"{result.error.type}: {result.error.message}")
        for i, table in enumerate(result.evidence):
            if table.name in skip:
                continue
            drawn = _draw(table, f"{key}_{i}")
            if table.plot is not None and table.plot.kind == "graph":
                continue
            label = f"{'Data of the chart' if drawn else 'Table'}: {table.name} ({len(table.records)} rows)"
            with st.expander(label, expanded=not drawn and len(table.records) <= 8):
                if table.description:
                    st.caption(table.description)
                _records_table(table.records, height=min(400, 38 + 35 * len(table.records)))
        if result.metrics or result.policy or result.provenance.params:
            with st.expander(f"Metrics ({len(result.metrics)}), policy and provenance"):
                if result.metrics:
                    _records_table([{"metric": k, "value": v} for k, v in result.metrics.items()],
                                   height=min(400, 38 + 35 * len(result.metrics)))
                if result.policy:
                    st.markdown("**Policy applied:** " + ", ".join(f"`{k}` = {_fmt(v)}"
                                                                   for k, v in result.policy.items()))
                prov = result.provenance
                params = ", ".join(f"`{k}` = {_fmt(v)}" for k, v in prov.params.items())
                st.caption(f"seed {prov.seed}, {prov.seconds:.2f} s" + (f"; {params}" if params else ""))


# --- family sections --------------------------------------------------------------------------


def _fairness_section(report: AuditReport, results: Sequence[CheckResult], key: str) -> set[tuple[str, str]]:
    shown: set[tuple[str, str]] = set()
    groups = _table(_result(report, "fairness.group_metrics"), "by_group")
    if groups is not None and groups.records:
        st.markdown("#### By group and intersection")
        cols = groups.records[0].keys()
        options = [m for m in GROUP_METRICS if m in cols]
        labels = {"selection_rate": "selection rate", "tpr": "true positive rate", "fpr": "false positive rate",
                  "fnr": "false negative rate", "precision": "precision", "accuracy": "accuracy",
                  "calibration_gap": "calibration gap"}
        metric = st.selectbox("Metric by group", options, format_func=lambda m: labels.get(m, m),
                              key=f"{key}_group_metric")
        has_ci = f"{metric}_lo" in cols and f"{metric}_hi" in cols
        single = [r for r in groups.records if INTERSECTION_MARK not in str(r.get("feature", ""))]
        inter = [r for r in groups.records if INTERSECTION_MARK in str(r.get("feature", ""))]
        for title, recs in (("each sensitive feature", single), ("intersections", inter)):
            if not recs:
                continue
            spec = PlotSpec(kind="bar", x="group", y=metric, lo=f"{metric}_lo" if has_ci else "",
                            hi=f"{metric}_hi" if has_ci else "", group="feature",
                            title=f"{labels.get(metric, metric)} by group, {title}"
                                  + (" (95% CI)" if has_ci else ""),
                            ylabel=labels.get(metric, metric))
            chart = chart_for(EvidenceTable(f"by_group_{title}", tuple(recs), spec))
            if chart is not None:
                _show_chart(chart)
        small = [f"{r.get('feature')}={r.get('group')}" for r in groups.records if r.get("small")]
        if small:
            st.caption("Groups below the minimum size (estimates unreliable): " + ", ".join(small))
        shown.add(("fairness.group_metrics", "by_group"))
    rows: list[dict[str, Any]] = []
    for r in results:
        t = _table(r, "disparities")
        if t is not None:
            rows.extend(dict(rec) for rec in t.records)
    if rows:
        st.markdown("#### Disparities against the policy")
        _records_table(rows)
    return shown


def _explain_section(report: AuditReport, results: Sequence[CheckResult], key: str) -> set[tuple[str, str]]:
    shown: set[tuple[str, str]] = set()
    agreement = _result(report, "explain.agreement")
    by_method = _table(agreement, "importance_by_method")
    st.markdown("#### Importance per method")
    if by_method is not None and _draw(by_method, f"{key}_bymethod"):
        shown.add(("explain.agreement", "importance_by_method"))
    else:
        drawn = False
        for r in results:
            t = _table(r, "global_importance")
            if t is not None and _draw(t, f"{key}_{r.check_id}_gi"):
                shown.add((r.check_id, "global_importance"))
                drawn = True
        if not drawn:
            st.caption("No explanation method produced global importances in this audit.")
    matrix = _table(agreement, "agreement_matrix")
    if matrix is not None:
        st.markdown("#### Agreement between methods")
        if _draw(matrix, f"{key}_matrix"):
            shown.add(("explain.agreement", "agreement_matrix"))
    beeswarm = _table(_result(report, "explain.shap"), "beeswarm")
    if beeswarm is not None:
        st.markdown("#### SHAP summary")
        st.caption("Each dot is one row: its SHAP value for the feature (x) and the feature's value (colour).")
        if _draw(beeswarm, f"{key}_beeswarm"):
            shown.add(("explain.shap", "beeswarm"))
    return shown


def _causal_section(report: AuditReport, results: Sequence[CheckResult], key: str) -> set[tuple[str, str]]:
    shown: set[tuple[str, str]] = set()
    graph = None
    for cid in ("causal.path_decomposition", "causal.sensitive_effect", "causal.counterfactual_fairness",
                "causal.treatment_effect"):
        graph = graph or _table(_result(report, cid), "causal_graph")
    if graph is not None and graph.records:
        st.markdown("#### Causal graph")
        st.graphviz_chart(str(graph.records[0].get("dot", "")), width="stretch")
        for r in results:
            shown.add((r.check_id, "causal_graph"))
    effects: list[dict[str, Any]] = []
    total = _table(_result(report, "causal.sensitive_effect"), "total_effect")
    if total is not None:
        effects += [{"effect": "total effect", "contrast": rec.get("contrast"), "estimate": rec.get("effect"),
                     "ci_low": rec.get("ci_low"), "ci_high": rec.get("ci_high"),
                     "check": "causal.sensitive_effect"} for rec in total.records]
    paths = _table(_result(report, "causal.path_decomposition"), "path_decomposition")
    if paths is not None:
        effects += [{"effect": rec.get("component"), "contrast": rec.get("contrast"), "estimate": rec.get("effect"),
                     "ci_low": rec.get("ci_low"), "ci_high": rec.get("ci_high"),
                     "check": "causal.path_decomposition"} for rec in paths.records]
    estimates = _table(_result(report, "causal.treatment_effect"), "estimates")
    if estimates is not None:
        effects += [{"effect": f"treatment effect ({rec.get('method')})", "contrast": rec.get("effect", ""),
                     "estimate": rec.get("estimate"), "ci_low": rec.get("ci_low"), "ci_high": rec.get("ci_high"),
                     "check": "causal.treatment_effect"} for rec in estimates.records]
    if effects:
        st.markdown("#### Effects")
        _records_table(effects)
        if paths is not None and _draw(paths, f"{key}_paths"):
            shown.add(("causal.path_decomposition", "path_decomposition"))
    cf = _result(report, "causal.counterfactual_fairness")
    flips = _table(cf, "flip_rate_by_group")
    if cf is not None and flips is not None:
        st.markdown("#### Counterfactual flip rates")
        m = cf.metrics
        if "flip_rate" in m:
            c1, c2 = st.columns(2)
            c1.metric("Decisions that flip", f"{m['flip_rate']:.1%}",
                      help=f"95% CI {m.get('flip_rate.ci_low', math.nan):.1%} to {m.get('flip_rate.ci_high', math.nan):.1%}")
            if "mean_abs_delta" in m:
                c2.metric("Mean |Δ score|", f"{m['mean_abs_delta']:.3f}")
        if _draw(flips, f"{key}_flips"):
            shown.add(("causal.counterfactual_fairness", "flip_rate_by_group"))
    return shown


def _privacy_section(report: AuditReport, results: Sequence[CheckResult], key: str) -> set[tuple[str, str]]:
    shown: set[tuple[str, str]] = set()
    mi = _result(report, "privacy.membership_inference")
    roc = _table(mi, "roc_curve")
    if roc is not None:
        st.markdown("#### Membership inference: ROC curve")
        log = st.toggle("Log scales (shows the low false-positive region an attacker cares about)",
                        key=f"{key}_roc_log")
        chart = chart_for(roc)
        if chart is not None:
            if log:
                for layer in chart.spec["layer"]:
                    for axis in ("x", "y"):
                        if "field" in layer["encoding"].get(axis, {}):
                            layer["encoding"][axis]["scale"] = {"type": "symlog", "constant": 1e-3}
            _show_chart(chart)
            shown.add(("privacy.membership_inference", "roc_curve"))
    attacks = _table(mi, "attacks")
    if attacks is not None and attacks.records:
        st.markdown("#### True-positive rate at low false-positive rates")
        rows: list[dict[str, Any]] = []
        for rec in attacks.records:
            row: dict[str, Any] = {"attack": rec.get("attack"), "AUC": rec.get("auc")}
            for pct, label in (("0.1pct", "0.1%"), ("1pct", "1%")):
                if f"tpr_at_{pct}_fpr" in rec:
                    row[f"TPR at {label} FPR"] = rec.get(f"tpr_at_{pct}_fpr")
                    row[f"low ({label})"] = rec.get(f"tpr_at_{pct}_fpr_lo")
                    row[f"high ({label})"] = rec.get(f"tpr_at_{pct}_fpr_hi")
            rows.append(row)
        _records_table(rows)
        spec = PlotSpec(kind="bar", x="attack", y="tpr_at_1pct_fpr", lo="tpr_at_1pct_fpr_lo",
                        hi="tpr_at_1pct_fpr_hi", title="TPR at 1% FPR (95% CI); a random guess gives 0.01",
                        ylabel="TPR at 1% FPR", reference=0.01)
        if all("tpr_at_1pct_fpr" in rec for rec in attacks.records):
            chart = chart_for(EvidenceTable("tpr_low_fpr", attacks.records, spec))
            if chart is not None:
                _show_chart(chart)
    eps_rows: list[dict[str, Any]] = []
    dp = _result(report, "privacy.dp_claim")
    if dp is not None and "claimed_epsilon" in dp.metrics:
        eps_rows.append({"source": "claimed", "epsilon": dp.metrics["claimed_epsilon"]})
        acc = _table(dp, "accountants")
        for rec in acc.records if acc is not None else ():
            eps_rows.append({"source": f"recomputed ({str(rec.get('accountant')).upper()})",
                             "epsilon": rec.get("epsilon")})
    if mi is not None and "epsilon_lower_bound" in mi.metrics:
        eps_rows.append({"source": "empirical lower bound (attack)", "epsilon": mi.metrics["epsilon_lower_bound"]})
    if eps_rows:
        st.markdown("#### ε: claimed, recomputed, empirical")
        if dp is None or "claimed_epsilon" not in dp.metrics:
            st.caption("No differential-privacy claim was stated, so only the attack's empirical lower bound is shown.")
        spec = PlotSpec(kind="bar", x="source", y="epsilon", title="Privacy loss ε", ylabel="ε")
        chart = chart_for(EvidenceTable("epsilons", tuple(eps_rows), spec))
        if chart is not None:
            _show_chart(chart)
        _records_table(eps_rows)
    return shown


_SECTIONS = {
    "fairness": _fairness_section,
    "explain": _explain_section,
    "causal": _causal_section,
    "privacy": _privacy_section,
}


# --- the whole report -------------------------------------------------------------------------


def _families(report: AuditReport) -> list[str]:
    return list(dict.fromkeys(r.family or r.check_id.split(".", 1)[0] for r in report.results))


def render_family(report: AuditReport, family: str, key: str) -> None:
    """A family's section (its key tables first), then each of its checks in full."""
    results = [r for r in report.results if (r.family or r.check_id.split(".", 1)[0]) == family]
    ran = [r for r in results if r.verdict.value != "SKIPPED"]
    section = _SECTIONS.get(family)
    shown: set[tuple[str, str]] = set()
    if section is not None and ran:
        shown = section(report, ran, f"{key}_{family}")
    st.markdown("#### Checks")
    for r in results:
        if r.verdict.value == "SKIPPED":
            st.markdown(f"{verdict_badge('SKIPPED')} **{r.check_id}**: {r.summary}")
            continue
        render_check(r, f"{key}_{r.check_id}", skip_tables={t for c, t in shown if c == r.check_id})


def render_report(report: AuditReport, *, key: str = "findings") -> None:
    """Summary, downloads, then one tab per family (only the open tab is computed)."""
    render_summary(report)
    render_downloads(report, key)
    families = _families(report)
    labels = ["Overview"] + [family_label(f) for f in families]
    if st.session_state.get(f"{key}_tab") not in (None, *labels):
        st.session_state[f"{key}_tab"] = "Overview"  # a tab of an earlier report this one lacks
    tabs = st.tabs(labels, key=f"{key}_tab", on_change="rerun")
    with tabs[0]:
        if tabs[0].open is not False:
            _overview(report)
    for fam, tab in zip(families, tabs[1:], strict=True):
        with tab:
            if tab.open is not False:
                render_family(report, fam, key)


def _overview(report: AuditReport) -> None:
    worst_first = sorted(report.results, key=lambda r: -r.verdict.severity)
    st.dataframe(
        _results_frame(worst_first), hide_index=True, width="stretch",
        column_config={"summary": st.column_config.TextColumn("summary", width="large")},
    )
    problems = [r for r in worst_first if r.verdict.value in ("FAIL", "ERROR", "WARN")]
    if problems:
        st.markdown("#### What needs attention")
        for r in problems:
            st.markdown(f"- {verdict_badge(r.verdict.value)} **{r.check_id}**: {r.summary}")
    else:
        st.success("Every check that ran passed its policy.")
