"""Session state, bounded caches and small display helpers shared by the pages.

Caches are bounded: parsed data frames in ``st.cache_data`` (``max_entries`` and ``ttl``), loaded
models in ``st.cache_resource`` (``max_entries`` and ``ttl``), both keyed on the upload's sha256 so
a rerun (every widget change) reuses them. The last report lives in ``st.session_state`` and is
never recomputed by a rerun.

Uploads are kept per session in "slots" (name, sha256, bytes) so a visitor can go to the findings
and come back without uploading again; a slot changes only when its file widget changes.

Audits run as jobs in the store, not in the page: the job a page follows is kept in the session
*and* in the URL (``?job=<id>``), so a widget change (a rerun), a reload or a new browser window
on that URL (a new session) goes on following it (:func:`followed_job`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from audit.exceptions import StoreError, TrustAuditError
from audit.io import LoadedModel
from audit.results import AuditReport
from dashboard._intake import (
    check_upload_size,
    display_name,
    load_model_upload,
    read_table_upload,
    sha256_hex,
)
from dashboard._settings import DashboardSettings

__all__ = [
    "FINDINGS_TAB_KEY",
    "NOTICE_KEY",
    "QUERY_JOB",
    "REPORT_KEY",
    "REPORT_ORIGIN_KEY",
    "VERDICT_STYLE",
    "Upload",
    "cached_model",
    "cached_table",
    "current_report",
    "error_line",
    "follow_job",
    "followed_job",
    "forget_job",
    "get_job",
    "get_settings",
    "get_store",
    "load_model_slot",
    "load_table_slot",
    "set_current_report",
    "store_error",
    "store_label",
    "upload_slot",
    "verdict_badge",
]

CACHE_TTL_SECONDS = 3600
MODEL_CACHE_ENTRIES = 4
DATA_CACHE_ENTRIES = 8
REPORT_KEY = "trustaudit_report"
REPORT_ORIGIN_KEY = "trustaudit_report_origin"
FINDINGS_TAB_KEY = "findings_tab"
#: a message for the next page to show (a page that switches away cannot show it itself)
NOTICE_KEY = "trustaudit_notice"
#: the URL query parameter naming the job a page follows
QUERY_JOB = "job"
_JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
STORE_CACHE_ENTRIES = 4

#: verdict -> (Streamlit colour, icon)
VERDICT_STYLE: dict[str, tuple[str, str]] = {
    "PASS": ("green", ":material/check_circle:"),
    "WARN": ("orange", ":material/warning:"),
    "FAIL": ("red", ":material/cancel:"),
    "ERROR": ("violet", ":material/error:"),
    "SKIPPED": ("gray", ":material/skip_next:"),
}


def verdict_badge(verdict: str) -> str:
    """Markdown for a coloured verdict badge."""
    colour, icon = VERDICT_STYLE.get(verdict, ("gray", ""))
    return f":{colour}-badge[{icon} {verdict}]"


def error_line(exc: BaseException) -> str:
    """One readable line for any exception: the message of ours, type and first line otherwise."""
    if isinstance(exc, TrustAuditError):
        return exc.message
    text = " ".join(str(exc).split())[:400]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def get_settings() -> DashboardSettings:
    """The server's settings (from the environment the command line prepared)."""
    try:
        return DashboardSettings.from_env()
    except TrustAuditError as exc:
        st.error(f"The dashboard is misconfigured: {exc.message}")
        st.stop()
        raise  # unreachable: st.stop() ends the run


@st.cache_resource(max_entries=STORE_CACHE_ENTRIES, show_spinner=False)
def _open_store(url: str) -> Any:
    """One store (and its connection pool) per URL for the whole server; a store that cannot be
    opened raises, and is not cached."""
    from audit.store import open_store

    return open_store(url)


def get_store(settings: DashboardSettings) -> Any:
    """The store the server was started with (history, jobs)."""
    return _open_store(settings.store_url)


def store_label(store: Any) -> str:
    """How the page names the store: a SQLite file's name, a database URL without its password."""
    path = getattr(store, "path", None)
    return path.name if isinstance(path, Path) else str(store)


# --- the job a page follows -----------------------------------------------------------------


def _job_key(kind: str) -> str:
    return f"trustaudit_job_{kind}"


def followed_job(kind: str) -> str | None:
    """The id of the ``kind`` job this page follows: the URL's ``?job=`` (a reload, a new window,
    a shared link), else the session's. Whichever holds it, both do afterwards."""
    key = _job_key(kind)
    in_url = st.query_params.get(QUERY_JOB)
    held = st.session_state.get(key)
    if in_url and _JOB_ID_RE.match(in_url):
        if in_url != held:
            st.session_state[key] = in_url
        return in_url
    if in_url:  # not a job id: drop it rather than look it up
        del st.query_params[QUERY_JOB]
    if held:
        st.query_params[QUERY_JOB] = held
    return held


def follow_job(kind: str, job_id: str) -> None:
    st.session_state[_job_key(kind)] = job_id
    st.query_params[QUERY_JOB] = job_id


def forget_job(kind: str) -> None:
    st.session_state.pop(_job_key(kind), None)
    if QUERY_JOB in st.query_params:
        del st.query_params[QUERY_JOB]


def get_job(store: Any, job_id: str) -> Any:
    """The job, or None when the store has no such job; other store errors propagate."""
    from audit.store import NotFoundError

    try:
        return store.get_job(job_id)
    except NotFoundError:
        return None


def store_error(exc: StoreError) -> None:
    st.error(exc.message, icon=":material/block:")


def current_report() -> AuditReport | None:
    return st.session_state.get(REPORT_KEY)


def set_current_report(report: AuditReport, origin: str) -> None:
    """Show ``report`` on the Findings page (from its Overview tab)."""
    st.session_state[REPORT_KEY] = report
    st.session_state[REPORT_ORIGIN_KEY] = origin
    st.session_state.pop(FINDINGS_TAB_KEY, None)


# --- uploads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """An uploaded file held for the session: the shown name, its hash and its bytes."""

    name: str
    sha256: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def _slot_key(slot: str) -> str:
    return f"trustaudit_slot_{slot}"


def _on_upload_change(slot: str, widget_key: str) -> None:
    f = st.session_state.get(widget_key)
    if f is None:
        st.session_state.pop(_slot_key(slot), None)
        return
    data = f.getvalue()
    st.session_state[_slot_key(slot)] = Upload(display_name(f.name), sha256_hex(data), data)


def upload_slot(slot: str, label: str, *, help: str, max_mb: int, container: Any = None) -> Upload | None:
    """A file widget whose upload stays with the session until replaced or removed."""
    where = container or st
    widget_key = f"upload_{slot}"
    where.file_uploader(label, key=widget_key, help=help, max_upload_size=max_mb,
                        on_change=_on_upload_change, args=(slot, widget_key))
    current = st.session_state.get(widget_key)
    held: Upload | None = st.session_state.get(_slot_key(slot))
    if current is not None and held is None:
        _on_upload_change(slot, widget_key)  # first run after an upload, before any callback
        held = st.session_state.get(_slot_key(slot))
    if held is not None and current is None:
        c1, c2 = where.columns([4, 1], vertical_alignment="center")
        c1.caption(f"Using **{held.name}** ({held.size / 1024:,.0f} KB), uploaded earlier in this session.")
        if c2.button("Remove", key=f"remove_{slot}", type="tertiary"):
            st.session_state.pop(_slot_key(slot), None)
            st.rerun()
    return held


@st.cache_resource(max_entries=MODEL_CACHE_ENTRIES, ttl=CACHE_TTL_SECONDS, show_spinner=False)
def cached_model(sha256: str, name: str, allow_unsafe_pickle: bool, _data: bytes) -> LoadedModel:
    """A model loaded through the audit's safe intake, once per (content, name, pickle switch)."""
    return load_model_upload(_data, name, allow_unsafe_pickle=allow_unsafe_pickle)


@st.cache_data(max_entries=DATA_CACHE_ENTRIES, ttl=CACHE_TTL_SECONDS, show_spinner=False)
def cached_table(sha256: str, kind: str, na_values: tuple[str, ...], uploads_dir: str, _data: bytes,
                 _name: str) -> tuple[Any, str]:
    """An uploaded table stored under a generated name and parsed by content, once per content."""
    frame, path = read_table_upload(_data, _name, Path(uploads_dir), na_values=na_values, kind=kind)
    return frame, path.name


def load_model_slot(upload: Upload, settings: DashboardSettings) -> LoadedModel:
    check_upload_size("model file", upload.name, upload.size, settings.max_upload_mb)
    return cached_model(upload.sha256, upload.name, settings.allow_unsafe_pickle, upload.data)


def load_table_slot(upload: Upload, settings: DashboardSettings, kind: str,
                    na_values: tuple[str, ...] = ("?",)) -> tuple[Any, str]:
    check_upload_size("data file", upload.name, upload.size, settings.max_upload_mb)
    return cached_table(upload.sha256, kind, na_values, str(settings.uploads_dir), upload.data, upload.name)
