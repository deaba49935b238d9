"""The trustaudit dashboard's entry point: ``streamlit run dashboard/app.py`` (or ``trustaudit dashboard``).

Pages live in ``dashboard/app_pages/`` (not ``pages/``, which Streamlit would discover on its own)
and are registered here with ``st.navigation``; each page is UI only: audits and federated
simulations run as jobs in workers (``trustaudit dashboard`` starts local ones), and the pages
read their progress and reports from the store.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
PAGES = HERE / "app_pages"

st.set_page_config(page_title="trustaudit", page_icon=":material/verified_user:", layout="wide")

pages = [
    st.Page(PAGES / "new_audit.py", title="New audit", icon=":material/upload_file:", url_path="new", default=True),
    st.Page(PAGES / "findings.py", title="Findings", icon=":material/fact_check:", url_path="findings"),
    st.Page(PAGES / "jobs.py", title="Jobs", icon=":material/pending_actions:", url_path="jobs"),
    st.Page(PAGES / "history.py", title="History", icon=":material/history:", url_path="history"),
    st.Page(PAGES / "federated.py", title="Federated", icon=":material/hub:", url_path="federated"),
]
with st.sidebar:
    st.markdown("**trustaudit**: fairness, explanations, causal effects and privacy, with evidence.")
current = st.navigation(pages)
current.run()
