"""Jobs: audits and federated simulations queued or running in the store, with their progress and
a Cancel button, and the recently finished ones with their outcome. Refreshes itself."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from audit.exceptions import StoreError, TrustAuditError
from dashboard._jobs import ACTIVE_STATES, describe, elapsed, show_job, stamp
from dashboard._settings import PROJECT
from dashboard._state import error_line, get_settings, get_store, set_current_report, store_label

FINDINGS_PAGE = "app_pages/findings.py"
NEW_PAGE = "app_pages/new_audit.py"
FEDERATED_PAGE = "app_pages/federated.py"
REFRESH_SECONDS = 2.0
FINISHED_SHOWN = 20
FINISHED_STATES = ("succeeded", "failed", "cancelled")

settings = get_settings()
st.title("Jobs")
try:
    store = get_store(settings)
except TrustAuditError as exc:
    st.error(exc.message, icon=":material/block:")
    st.stop()
every = st.toggle("Every project's jobs (also those submitted through the HTTP API)", key="jobs_every_project")
project = None if every else PROJECT
st.caption(f"Jobs in the store {store_label(store)}" + ("" if every else f" from this dashboard (project {PROJECT})")
           + f"; this page refreshes every {REFRESH_SECONDS:g} s.")


def _took(job) -> str:
    s = elapsed(job)
    return "" if s is None else f"{s:.0f} s"


@st.fragment(run_every=REFRESH_SECONDS)
def _jobs() -> None:
    try:
        active = store.list_jobs(project=project, state=ACTIVE_STATES, limit=200)
        finished = store.list_jobs(project=project, state=FINISHED_STATES, limit=FINISHED_SHOWN)
    except StoreError as exc:
        st.warning(f"The jobs cannot be read right now: {exc.message}", icon=":material/sync_problem:")
        return
    st.subheader(f"Queued and running ({len(active)})")
    if not active:
        st.caption("No job is queued or running.")
    for job in reversed(active):  # oldest first: the order workers take them
        if show_job(store, job, key="jobs"):
            st.rerun()
        if job.kind == "audit":
            st.page_link(NEW_PAGE, label="Follow it on the New audit page", icon=":material/visibility:",
                         query_params={"job": job.job_id})
        else:
            st.page_link(FEDERATED_PAGE, label="Follow it on the Federated page", icon=":material/visibility:",
                         query_params={"job": job.job_id})

    st.subheader("Recently finished")
    if not finished:
        st.caption("No job has finished yet.")
        return
    st.dataframe(pd.DataFrame([
        {"job": j.job_id[:12], "state": j.state, "what": describe(j), "submitted (UTC)": stamp(j.created_at),
         "finished (UTC)": stamp(j.finished_at), "took": _took(j), "by": j.submitted_by, "project": j.project,
         "audit": (j.audit_id or "")[:12], "reason": j.error or ""}
        for j in finished
    ]), hide_index=True, width="stretch")
    openable = [j for j in finished if j.state == "succeeded" and j.audit_id]
    if not openable:
        return
    by_id = {j.job_id: j for j in openable}
    o1, o2 = st.columns([4, 1], vertical_alignment="bottom")
    chosen = o1.selectbox("Report of a finished job", list(by_id), key="jobs_open_id",
                          format_func=lambda jid: f"{jid[:12]} · {stamp(by_id[jid].finished_at)} · {describe(by_id[jid])}")
    if o2.button("Open in Findings", icon=":material/open_in_new:", key="jobs_open", width="stretch"):
        try:
            report = store.get(by_id[chosen].audit_id)
        except TrustAuditError as exc:
            st.error(exc.message, icon=":material/block:")
        except Exception as exc:  # noqa: BLE001 - a damaged record must not break the page
            st.error(f"The report could not be read: {error_line(exc)}", icon=":material/block:")
        else:
            set_current_report(report, "history")
            st.switch_page(FINDINGS_PAGE)


_jobs()
