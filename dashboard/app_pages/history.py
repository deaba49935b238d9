"""History: audits from the store, filterable; open one; compare two (verdict changes, metric deltas)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from audit.exceptions import TrustAuditError
from audit.results import AuditReport
from audit.store import compare_reports
from dashboard._jobs import ACTIVE_STATES
from dashboard._settings import PROJECT
from dashboard._state import (
    error_line,
    get_settings,
    get_store,
    set_current_report,
    store_label,
    verdict_badge,
)

FINDINGS_PAGE = "app_pages/findings.py"
VERDICTS = ["any", "PASS", "WARN", "FAIL", "ERROR"]
BOUND_SUFFIXES = (".ci_low", ".ci_high", "_lo", "_hi", ".std_error", ".lo", ".hi")


@st.cache_data(max_entries=32, ttl=3600, show_spinner=False)
def _report_dict(store_url: str, audit_id: str) -> dict:
    """A stored report (immutable once recorded), parsed once per store and audit id."""
    return get_store(get_settings()).get(audit_id).to_dict()


def _report(audit_id: str) -> AuditReport:
    return AuditReport.from_dict(_report_dict(get_settings().store_url, audit_id))


settings = get_settings()
st.title("History")
try:
    store = get_store(settings)
    total = store.count()
except TrustAuditError as exc:
    st.error(exc.message, icon=":material/block:")
    st.stop()
st.caption(f"{total:,} audit(s) in the history store {store_label(store)}.")
try:
    running = sum(store.count_jobs(project=PROJECT, state=state) for state in ACTIVE_STATES)
except TrustAuditError:
    running = 0
if running:
    st.page_link("app_pages/jobs.py", label=f"{running} job(s) of this dashboard queued or running: their reports "
                                             "join the history when they finish", icon=":material/pending_actions:")

c1, c2, c3 = st.columns([1, 2, 1])
verdict = c1.selectbox("Verdict", VERDICTS, key="hist_verdict")
search = c2.text_input("Search model, data or audit id", key="hist_search", placeholder="e.g. model.skops")
limit = c3.number_input("Show at most", min_value=5, max_value=1000, value=50, step=5, key="hist_limit")
try:
    rows = store.list(limit=int(limit), verdict=None if verdict == "any" else verdict, search=search.strip() or None)
except TrustAuditError as exc:
    st.error(exc.message, icon=":material/block:")
    st.stop()
if not rows:
    st.info("No audit recorded yet: run one on the New audit page." if total == 0 and verdict == "any" and not search
            else "No audit matches these filters.", icon=":material/info:")
    st.stop()

table = pd.DataFrame([
    {"audit": r["audit_id"][:12], "created": r["created_at"], "verdict": r["verdict"], "model": r["model_path"],
     "data": r["data_path"], "label": r["label"] or "", "checks": r["n_checks"], "pass": r["n_pass"],
     "warn": r["n_warn"], "fail": r["n_fail"], "error": r["n_error"], "seconds": round(r["seconds"], 1)}
    for r in rows
])
st.dataframe(table, hide_index=True, width="stretch")
ids = [r["audit_id"] for r in rows]
by_id = {r["audit_id"]: r for r in rows}


def _label(audit_id: str) -> str:
    r = by_id[audit_id]
    return f"{audit_id[:12]} · {r['created_at']} · {r['verdict']} · {r['model_path']} on {r['data_path']}"


st.subheader("Open an audit")
o1, o2 = st.columns([4, 1], vertical_alignment="bottom")
chosen = o1.selectbox("Audit", ids, format_func=_label, key="hist_open_id")
if o2.button("Open in Findings", icon=":material/open_in_new:", key="hist_open", width="stretch"):
    try:
        report = _report(chosen)
    except TrustAuditError as exc:
        st.error(exc.message, icon=":material/block:")
    except Exception as exc:  # noqa: BLE001 - a damaged record must not break the page
        st.error(f"The audit could not be read: {error_line(exc)}", icon=":material/block:")
    else:
        set_current_report(report, "history")
        st.switch_page(FINDINGS_PAGE)

st.subheader("Compare two audits")
if len(ids) < 2:
    st.info("Two audits are needed for a comparison.", icon=":material/info:")
    st.stop()
k1, k2 = st.columns(2)
old_id = k1.selectbox("Baseline (earlier)", ids, index=1, format_func=_label, key="hist_old")
new_id = k2.selectbox("Compared (later)", ids, index=0, format_func=_label, key="hist_new")
if old_id == new_id:
    st.info("Choose two different audits.", icon=":material/info:")
    st.stop()
try:
    old, new = _report(old_id), _report(new_id)
except TrustAuditError as exc:
    st.error(exc.message, icon=":material/block:")
    st.stop()
changes = compare_reports(old, new)
for c in changes:
    # a check skipped on one side was not measured there: neither better nor worse
    if c["change"] in ("better", "worse") and "SKIPPED" in (c["old_verdict"], c["new_verdict"]):
        c["change"] = "not comparable"
counts = {k: sum(1 for c in changes if c["change"] == k)
          for k in ("worse", "better", "same", "not comparable", "added", "removed")}
m = st.columns(len(counts))
for col, k in zip(m, counts, strict=True):
    col.metric(k.capitalize(), counts[k])
st.markdown(f"Overall: {verdict_badge(old.verdict.value)} → {verdict_badge(new.verdict.value)}")
for kind in ("worse", "better"):
    moved = [c for c in changes if c["change"] == kind]
    if moved:
        st.markdown(f"**Got {kind}:** " + "; ".join(f"`{c['check_id']}` {c['old_verdict']} → {c['new_verdict']}"
                                                   for c in moved))
st.dataframe(
    pd.DataFrame([{"check": c["check_id"], "before": c["old_verdict"], "after": c["new_verdict"],
                   "change": c["change"], "metrics changed": sum(1 for d in c["metric_deltas"].values() if d != 0)}
                  for c in changes]),
    hide_index=True, width="stretch",
)
skipped = [c["check_id"] for c in changes if c["change"] == "not comparable"]
if skipped:
    st.caption("Not comparable: skipped in one of the two audits (" + ", ".join(skipped) + ").")

st.markdown("#### Metric deltas")
f1, f2 = st.columns(2)
hide_bounds = f1.toggle("Hide interval bounds and standard errors", value=True, key="hist_hide_bounds")
only_changed = f2.toggle("Only metrics that changed", value=True, key="hist_only_changed")
old_by = {r.check_id: r for r in old.results}
new_by = {r.check_id: r for r in new.results}
delta_rows = []
for c in changes:
    for name, delta in c["metric_deltas"].items():
        if hide_bounds and name.endswith(BOUND_SUFFIXES):
            continue
        if only_changed and delta == 0:
            continue
        delta_rows.append({"check": c["check_id"], "metric": name, "before": old_by[c["check_id"]].metrics[name],
                           "after": new_by[c["check_id"]].metrics[name], "delta": delta})
if delta_rows:
    st.dataframe(pd.DataFrame(delta_rows), hide_index=True, width="stretch",
                 column_config={"delta": st.column_config.NumberColumn("delta", format="%+.4g")})
else:
    st.caption("No metric shared by both audits changed.")
