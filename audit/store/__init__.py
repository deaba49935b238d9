"""History store (transitional: the package re-exports the module's API while it grows)."""

from audit.store._history import STORE_SCHEMA_VERSION, HistoryStore, compare_reports, default_store_path

__all__ = ["STORE_SCHEMA_VERSION", "HistoryStore", "compare_reports", "default_store_path"]
