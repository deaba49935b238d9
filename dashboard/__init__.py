"""The trustaudit dashboard: a Streamlit app to upload a model and data, run the audit, read the
findings, browse and compare earlier audits, and simulate federated training.

``trustaudit dashboard`` serves :data:`APP_PATH` (``st.navigation`` over the pages in
``dashboard/app_pages/``). The pages only show and submit: an audit or a federated simulation is a
job in the store (``audit.store``), run by a worker (``audit.service``; ``trustaudit dashboard``
starts local workers unless ``--no-worker``), so it survives widget changes, reloads and a closed
browser; findings and history are read back from the store.
Importing this package does not import Streamlit.
"""

from __future__ import annotations

from pathlib import Path

from dashboard._settings import (
    DEFAULT_MAX_UPLOAD_MB,
    ENV_DATA_DIR,
    ENV_MAX_UPLOAD_MB,
    ENV_UNSAFE_PICKLE,
    DashboardSettings,
    default_data_dir,
)

__all__ = [
    "APP_PATH",
    "DEFAULT_MAX_UPLOAD_MB",
    "ENV_DATA_DIR",
    "ENV_MAX_UPLOAD_MB",
    "ENV_UNSAFE_PICKLE",
    "PAGES_DIR",
    "DashboardSettings",
    "default_data_dir",
]

#: The Streamlit entry point (``streamlit run`` / ``AppTest.from_file`` take this file).
APP_PATH = Path(__file__).resolve().with_name("app.py")
#: The page scripts ``app.py`` registers with ``st.Page``.
PAGES_DIR = APP_PATH.parent / "app_pages"
