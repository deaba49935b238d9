"""Server-side settings of the dashboard, passed from ``trustaudit dashboard`` to the app.

The command line starts Streamlit in a child process; the settings travel in its environment
(``TRUSTAUDIT_DASHBOARD_*`` and ``TRUSTAUDIT_STORE``) so that the app, its pages and the tests
(which run the pages in-process under ``AppTest``) read them the same way. Only the person who
starts the server sets them: nothing a visitor uploads can change them.
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
    "ENV_MAX_UPLOAD_MB",
    "ENV_UNSAFE_PICKLE",
    "MAX_UPLOAD_MB_LIMIT",
    "DashboardSettings",
    "default_data_dir",
]

ENV_DATA_DIR = "TRUSTAUDIT_DASHBOARD_DATA_DIR"
ENV_MAX_UPLOAD_MB = "TRUSTAUDIT_DASHBOARD_MAX_UPLOAD_MB"
ENV_UNSAFE_PICKLE = "TRUSTAUDIT_DASHBOARD_UNSAFE_PICKLE"
ENV_STORE = "TRUSTAUDIT_STORE"

#: Streamlit's own default for ``server.maxUploadSize``.
DEFAULT_MAX_UPLOAD_MB = 200
#: Above this an upload is held in memory several times over (bytes, parsed frame, cache).
MAX_UPLOAD_MB_LIMIT = 4096

MSG_MAX_UPLOAD = "max-upload-mb must be a whole number of megabytes from 1 to {limit}; got {got!r}"


def default_data_dir() -> Path:
    """Where uploads are stored when no folder is given: next to the history store's default."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trustaudit" / "dashboard"


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

    ``data_dir``: uploads are written under ``data_dir/uploads`` with generated names, federated
    runs under ``data_dir/federated``. ``max_upload_mb``: the per-file upload limit (also given to
    Streamlit as ``server.maxUploadSize``). ``allow_unsafe_pickle``: pickle/joblib models are
    accepted only when this is set (``--unsafe-pickle``). ``store_path``: the history store, or
    None for the default (``$TRUSTAUDIT_STORE``, else the user's data folder).
    """

    data_dir: Path
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    allow_unsafe_pickle: bool = False
    store_path: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_upload_mb", _parse_max_upload(self.max_upload_mb))
        object.__setattr__(self, "data_dir", Path(self.data_dir))

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def federated_dir(self) -> Path:
        return self.data_dir / "federated"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DashboardSettings:
        """Read the settings the command line put in the environment (defaults otherwise)."""
        env = os.environ if environ is None else environ
        data_dir = env.get(ENV_DATA_DIR) or str(default_data_dir())
        store = env.get(ENV_STORE)
        return cls(
            data_dir=Path(data_dir),
            max_upload_mb=_parse_max_upload(env.get(ENV_MAX_UPLOAD_MB, DEFAULT_MAX_UPLOAD_MB)),
            allow_unsafe_pickle=env.get(ENV_UNSAFE_PICKLE, "") == "1",
            store_path=Path(store) if store else None,
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that make :meth:`from_env` return these settings."""
        env = {
            ENV_DATA_DIR: str(self.data_dir),
            ENV_MAX_UPLOAD_MB: str(self.max_upload_mb),
            ENV_UNSAFE_PICKLE: "1" if self.allow_unsafe_pickle else "0",
        }
        if self.store_path is not None:
            env[ENV_STORE] = str(self.store_path)
        return env
