"""Findings: the last audit run (or opened from the history), read from its report."""

from __future__ import annotations

import streamlit as st

from dashboard._findings import render_report
from dashboard._state import NOTICE_KEY, REPORT_ORIGIN_KEY, current_report

st.title("Findings")
notice = st.session_state.pop(NOTICE_KEY, None)
if notice:
    st.warning(notice)
report = current_report()
if report is None:
    st.info("No audit to show yet: run one, or open an earlier one from the history.", icon=":material/info:")
    c1, c2 = st.columns(2)
    c1.page_link("app_pages/new_audit.py", label="New audit", icon=":material/upload_file:")
    c2.page_link("app_pages/history.py", label="History", icon=":material/history:")
    st.stop()
origin = st.session_state.get(REPORT_ORIGIN_KEY, "run")
if origin == "history":
    st.caption("Opened from the history.")
render_report(report, key="findings")
