"""Server-side settings of the dashboard, passed from ``trustaudit dashboard`` to the app.

The command line starts Streamlit in a child process; the settings travel in its environment
(``TRUSTAUDIT_DASHBOARD_*``, ``TRUSTAUDIT_STORE`` and ``TRUSTAUDIT_JOBS_DIR``, the last two the
same variables the workers read) so that the app, its pages and the tests (which run the pages
in-process under ``AppTest``) read them the same way. Only the person who starts the server sets
them: nothing a visitor uploads can change them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from audit.exceptions import ConfigError

__all__ = [
    "DEFAULT_MAX_UPLOAD_MB",
    "ENV_DATA_DIR",
    "ENV_JOBS_DIR",
    "ENV_MAX_UPLOAD_MB",
    "ENV_STORE",
    "ENV_UNSAFE_PICKLE",
    "MAX_UPLOAD_MB_LIMIT",
    "PROJECT",
    "SUBMITTED_BY",
    "DashboardSettings",
    "default_data_dir",
]

ENV_DATA_DIR = "TRUSTAUDIT_DASHBOARD_DATA_DIR"
ENV_MAX_UPLOAD_MB = "TRUSTAUDIT_DASHBOARD_MAX_UPLOAD_MB"
ENV_UNSAFE_PICKLE = "TRUSTAUDIT_DASHBOARD_UNSAFE_PICKLE"
ENV_STORE = "TRUSTAUDIT_STORE"
#: the workers' variable: the dashboard writes job folders where its workers look for them
ENV_JOBS_DIR = "TRUSTAUDIT_JOBS_DIR"

#: the project of the jobs and audits the dashboard submits (the CLI's local runs use it too)
PROJECT = "local"
#: who submitted a job, as the jobs table records it
SUBMITTED_BY = "dashboard"

#: Streamlit's own default for ``server.maxUploadSize``.
DEFAULT_MAX_UPLOAD_MB = 200
#: Above this an upload is held in memory several times over (bytes, parsed frame, cache).
MAX_UPLOAD_MB_LIMIT = 4096

MSG_MAX_UPLOAD = "max-upload-mb must be a whole number of megabytes from 1 to {limit}; got {got!r}"


def default_data_dir() -> Path:
    """Where uploads are stored when no folder is given: next to the history store's default."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trustaudit" / "dashboard"


def _default_jobs_dir() -> Path:
    from audit.service.worker import default_jobs_dir

    return default_jobs_dir()


def _parse_max_upload(value: object) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ConfigError(MSG_MAX_UPLOAD.format(limit=MAX_UPLOAD_MB_LIMIT, got=value)) from None
    if not 1 <= n <= MAX_UPLOAD_MB_LIMIT:
        raise ConfigError(MSG_MAX_UPLOAD.format(limit=MAX_UPLOAD_MB_LIMIT, got=value))
    return n


@dataclass(frozen=True)
class DashboardSettings:
    """What the operator decided when starting the server.

    ``data_dir``: uploads are written under ``data_dir/uploads`` with generated names (to read
    them for the form). ``max_upload_mb``: the per-file upload limit (also given to Streamlit as
    ``server.maxUploadSize``). ``allow_unsafe_pickle``: pickle/joblib models are accepted only when
    this is set (``--unsafe-pickle``). ``store``: the store (a SQLite path or a database URL), or
    None for the default (``$TRUSTAUDIT_STORE``, else the user's data folder). ``jobs_dir``: where
    a submitted audit's inputs wait for a worker (``$TRUSTAUDIT_JOBS_DIR``, else the workers'
    default), or None for that default.
    """

    data_dir: Path
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    allow_unsafe_pickle: bool = False
    store: str | None = None
    jobs_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_upload_mb", _parse_max_upload(self.max_upload_mb))
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if self.store is not None:
            object.__setattr__(self, "store", os.fspath(self.store))
        if self.jobs_dir is not None:
            object.__setattr__(self, "jobs_dir", Path(self.jobs_dir))

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def store_url(self) -> str:
        """The store to open: the one given, else ``$TRUSTAUDIT_STORE``, else the default file."""
        from audit.store import default_store_url

        return self.store if self.store is not None else default_store_url()

    @property
    def job_folders(self) -> Path:
        """The jobs folder in use (the one given, else the workers' default)."""
        return self.jobs_dir if self.jobs_dir is not None else _default_jobs_dir()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DashboardSettings:
        """Read the settings the command line put in the environment (defaults otherwise)."""
        env = os.environ if environ is None else environ
        data_dir = env.get(ENV_DATA_DIR) or str(default_data_dir())
        store = env.get(ENV_STORE)
        jobs = env.get(ENV_JOBS_DIR)
        return cls(
            data_dir=Path(data_dir),
            max_upload_mb=_parse_max_upload(env.get(ENV_MAX_UPLOAD_MB, DEFAULT_MAX_UPLOAD_MB)),
            allow_unsafe_pickle=env.get(ENV_UNSAFE_PICKLE, "") == "1",
            store=store or None,
            jobs_dir=Path(jobs).expanduser() if jobs else None,
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that make :meth:`from_env` return these settings."""
        env = {
            ENV_DATA_DIR: str(self.data_dir),
            ENV_MAX_UPLOAD_MB: str(self.max_upload_mb),
            ENV_UNSAFE_PICKLE: "1" if self.allow_unsafe_pickle else "0",
        }
        if self.store is not None:
            env[ENV_STORE] = self.store
        if self.jobs_dir is not None:
            env[ENV_JOBS_DIR] = str(self.jobs_dir)
        return env
