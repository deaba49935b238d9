"""The store: audit history, audit jobs and API tokens, in a SQLite file or on PostgreSQL.

``open_store(None | path | URL)`` returns a :class:`Store` (``HistoryStore`` is the same class, its
old name). See ``_history.py`` for what it holds and ``_engine.py`` for URLs, errors and migrations.
"""

from audit.store._engine import (
    NotFoundError,
    QueueFullError,
    StoreLockedError,
    StoreUnavailableError,
    default_store_path,
    default_store_url,
)
from audit.store._history import STORE_SCHEMA_VERSION, HistoryStore, Store, compare_reports, open_store
from audit.store._models import JOB_KINDS, JOB_STATES, TERMINAL_STATES, Job, TokenInfo

__all__ = [
    "JOB_KINDS",
    "JOB_STATES",
    "STORE_SCHEMA_VERSION",
    "TERMINAL_STATES",
    "HistoryStore",
    "Job",
    "NotFoundError",
    "QueueFullError",
    "Store",
    "StoreLockedError",
    "StoreUnavailableError",
    "TokenInfo",
    "compare_reports",
    "default_store_path",
    "default_store_url",
    "open_store",
]
