"""Audits and federated simulations as jobs: submit them to the store, show how far they are.

The dashboard computes nothing itself: a page writes the visitor's uploads into a job folder
(``audit.service.stage_inputs``, the layout the workers read), queues a job in the store
(``submit_job``, project ``local``) and then only reads the job's row: its state, its per-check
progress (written by the worker) and, once it succeeded, the report the worker recorded. So an
audit does not depend on the page that started it: widget changes, reloads and closed browsers
leave it running, and any page of any session can show it or cancel it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import streamlit as st

from audit.exceptions import StoreError, TrustAuditError
from dashboard._settings import PROJECT, SUBMITTED_BY, DashboardSettings

__all__ = [
    "ACTIVE_STATES",
    "POLL_SECONDS",
    "describe",
    "elapsed",
    "progress_of",
    "queued_ahead",
    "show_job",
    "stamp",
    "state_badge",
    "submit_audit",
    "submit_federated",
]

#: how often a page showing a running job looks at the store again
POLL_SECONDS = 1.0
ACTIVE_STATES = ("queued", "running")
#: a job queued this long without a worker taking it gets a hint about workers
WAITING_HINT_SECONDS = 15.0

_STATE_STYLE = {
    "queued": ("gray", ":material/schedule:"),
    "running": ("blue", ":material/progress_activity:"),
    "succeeded": ("green", ":material/check_circle:"),
    "failed": ("red", ":material/error:"),
    "cancelled": ("orange", ":material/cancel:"),
}


def submit_audit(store: Any, settings: DashboardSettings, files: Mapping[str, tuple[str, bytes]],
                 spec: dict[str, Any], *, na_values: tuple[str, ...] = ("?",)) -> str:
    """Write the uploads into a new job folder and queue the audit; returns the job id.

    ``files`` maps a role ("model", "data", "train", "holdout") to (uploaded name, bytes). The
    worker loads them with the CLI's safe intake; a pickle model runs only when this server allows
    it (the submitter's consent here, the workers' ``--unsafe-pickle`` there).
    """
    from audit.service import remove_job_folder, stage_inputs

    jobs_dir = settings.job_folders
    inputs = stage_inputs(jobs_dir, files, na_values=na_values, allow_unsafe_pickle=settings.allow_unsafe_pickle)
    try:
        return store.submit_job("audit", spec, inputs, project=PROJECT, submitted_by=SUBMITTED_BY)
    except BaseException:
        remove_job_folder(jobs_dir, "", inputs)
        raise


def submit_federated(store: Any, settings: DashboardSettings, config: dict[str, Any],
                     data: tuple[str, bytes] | None = None) -> str:
    """Queue a federated simulation (``trustaudit federated simulate``'s settings, kebab-case, no
    file paths); an uploaded data file goes into a job folder. Returns the job id."""
    from audit.service import remove_job_folder, stage_inputs

    jobs_dir = settings.job_folders
    inputs: dict[str, Any] = {}
    if data is not None:
        inputs = stage_inputs(jobs_dir, {"data": data})
    try:
        return store.submit_job("federated", config, inputs, project=PROJECT, submitted_by=SUBMITTED_BY)
    except BaseException:
        if inputs:
            remove_job_folder(jobs_dir, "", inputs)
        raise


# --- reading a job ------------------------------------------------------------------------------


def _when(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        t = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def stamp(text: str | None) -> str:
    """A store timestamp as shown: ``2026-01-02 03:04:05`` (UTC), to the second."""
    t = _when(text)
    return "" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def elapsed(job: Any, now: datetime | None = None) -> float | None:
    """Seconds the job has been running (or ran), or has been queued; None without timestamps."""
    now = now or datetime.now(UTC)
    start = _when(job.started_at) if job.state != "queued" else _when(job.created_at)
    if start is None:
        return None
    end = _when(job.finished_at) or now
    return max(0.0, (end - start).total_seconds())


def _seconds(s: float | None) -> str:
    if s is None:
        return ""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def describe(job: Any) -> str:
    """What the job is, in a few words (the uploaded file names, never a server path)."""
    if job.kind == "federated":
        c = job.spec or {}
        data = (job.inputs.get("data") or {}).get("name") if isinstance(job.inputs, Mapping) else None
        rows = f"on {data}" if data else "on generated lending rows"
        return (f"Federated simulation: {c.get('strategy', 'fedavg')}, {c.get('num-clients', '?')} clients, "
                f"{c.get('num-rounds', '?')} rounds {rows}" + (", then an audit" if c.get("audit") else ""))
    names = {role: (entry or {}).get("name") for role, entry in (job.inputs or {}).items()
             if role in ("model", "data") and isinstance(entry, Mapping)}
    return f"Audit of {names.get('model') or 'a model'} on {names.get('data') or 'its data'}"


def queued_ahead(store: Any, job: Any) -> int:
    """How many queued jobs a worker will take before this one (oldest first)."""
    queued = store.list_jobs(state="queued", limit=1000)
    return sum(1 for j in queued if (j.created_at, j.job_id) < (job.created_at, job.job_id))


def progress_of(job: Any, ahead: int | None = None) -> tuple[float, str]:
    """The job's progress as a fraction and one line of text."""
    p = job.progress or {}
    done, total = int(p.get("done") or 0), int(p.get("total") or 0)
    took = _seconds(elapsed(job))
    if job.state == "queued":
        where = "next in line" if not ahead else f"{ahead} job{'s' if ahead != 1 else ''} ahead"
        return 0.0, f"Queued ({where}) for {took}"
    if job.state == "running":
        if job.cancel_requested:
            return min(1.0, done / total) if total else 0.0, f"Cancelling … ({took})"
        stage = p.get("stage")
        if stage == "simulation" or (job.kind == "federated" and stage != "audit"):
            rnd = p.get("round") or {}
            if not total:
                return 0.0, f"Starting the simulation engine … {took}"
            acc = rnd.get("accuracy")
            extra = f": accuracy {acc:.3f}, {rnd.get('answered')}/{rnd.get('sampled')} clients answered" \
                if isinstance(acc, int | float) else ""
            return min(1.0, done / total), f"Round {done}/{total}{extra} ({took})"
        prefix = "Auditing the final model: " if stage == "audit" else ""
        if not total:
            return 0.0, f"{prefix}Starting: loading the model and the data … {took}"
        # checks may run side by side (forked lanes): say which are running, count those done
        checks = p.get("checks") or {}
        if checks:
            done = sum(1 for v in checks.values() if v == "done")
        running = [c for c, v in checks.items() if v == "running"]
        now = f"; running {', '.join(running[:3])}{' …' if len(running) > 3 else ''}" if running else ""
        return min(1.0, done / total), f"{prefix}{done}/{total} checks done{now} ({took})"
    if job.state == "succeeded":
        return 1.0, f"Succeeded in {took}"
    return (min(1.0, done / total) if total else 0.0), f"{job.state.capitalize()} after {took}"


def state_badge(state: str) -> str:
    colour, icon = _STATE_STYLE.get(state, ("gray", ""))
    return f":{colour}-badge[{icon} {state}]"


# --- showing a job ------------------------------------------------------------------------------


def show_job(store: Any, job: Any, *, key: str) -> bool:
    """A bordered box: what the job is, its state and progress, a Cancel button while it is active.

    Returns True when the visitor cancelled it just now (the caller reruns the page).
    """
    with st.container(border=True):
        c1, c2 = st.columns([6, 1], vertical_alignment="center")
        c1.markdown(f"{state_badge(job.state)} **{describe(job)}** · job `{job.job_id[:12]}`")
        ahead = None
        if job.state == "queued":
            try:
                ahead = queued_ahead(store, job)
            except StoreError:
                ahead = None
        fraction, text = progress_of(job, ahead)
        c1.progress(fraction, text=text)
        if job.state == "queued" and (elapsed(job) or 0) > WAITING_HINT_SECONDS:
            c1.caption("No worker has taken it yet. `trustaudit dashboard` runs one unless started with "
                       "`--no-worker`; otherwise start `trustaudit worker` on the same store and jobs folder.")
        if job.state not in ACTIVE_STATES:
            return False
        if job.cancel_requested:
            c2.caption("Cancel requested")
            return False
        if c2.button("Cancel", key=f"{key}_cancel_{job.job_id}", icon=":material/cancel:", width="stretch"):
            try:
                store.cancel_job(job.job_id)
            except TrustAuditError as exc:
                st.error(exc.message, icon=":material/block:")
                return False
            return True
    return False
