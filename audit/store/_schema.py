"""The store's tables as SQLAlchemy Core objects, for building queries.

The tables themselves are created and changed only by the Alembic migrations in
``audit/store/migrations/versions``; these objects describe the schema at the head revision and
must agree with it (``tests/audit/test_store.py`` compares them with a migrated database).

Timestamps are ISO 8601 text in UTC with microseconds (``2026-01-01T00:00:00.000000+00:00``):
one fixed format, so text order is time order on SQLite and PostgreSQL alike. ``*_json`` columns
hold JSON text.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, ForeignKey, Integer, MetaData, Table, Text

#: the Alembic revision of the schema below; the newest file in migrations/versions
HEAD_REVISION = "0002"
#: Alembic's version table; named for trustaudit so a PostgreSQL database shared with another
#: Alembic-managed application keeps both apart
VERSION_TABLE = "trustaudit_alembic_version"

metadata = MetaData()

meta = Table(
    "meta", metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

audits = Table(
    "audits", metadata,
    Column("audit_id", Text, primary_key=True),
    Column("created_at", Text, nullable=False),
    Column("verdict", Text, nullable=False),
    Column("model_path", Text),
    Column("model_sha256", Text),
    Column("data_path", Text),
    Column("data_sha256", Text),
    Column("n_checks", Integer, nullable=False),
    Column("n_pass", Integer, nullable=False),
    Column("n_fail", Integer, nullable=False),
    Column("n_warn", Integer, nullable=False),
    Column("n_error", Integer, nullable=False),
    Column("n_skipped", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("schema_version", Text, nullable=False),
    Column("label", Text),
    Column("report_json", Text, nullable=False),
    Column("report_sha256", Text, nullable=False),
    Column("project", Text),  # revision 0002; NULL for audits recorded before projects existed
)

findings = Table(
    "findings", metadata,
    Column("audit_id", Text, ForeignKey("audits.audit_id", ondelete="CASCADE"), primary_key=True),
    Column("check_id", Text, primary_key=True),
    Column("family", Text, nullable=False),
    Column("verdict", Text, nullable=False),
    Column("summary", Text, nullable=False),
)

jobs = Table(
    "jobs", metadata,
    Column("job_id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("project", Text, nullable=False),
    Column("submitted_by", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("started_at", Text),
    Column("finished_at", Text),
    Column("heartbeat_at", Text),
    Column("attempts", Integer, nullable=False),
    Column("worker_id", Text),
    Column("spec_json", Text, nullable=False),
    Column("inputs_json", Text, nullable=False),
    Column("progress_json", Text, nullable=False),
    Column("error", Text),
    Column("audit_id", Text, ForeignKey("audits.audit_id", ondelete="SET NULL")),
    Column("cancel_requested", Boolean, nullable=False),
    Column("result_json", Text),
)

tokens = Table(
    "tokens", metadata,
    Column("token_id", Text, primary_key=True),
    Column("project", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("sha256", Text, nullable=False, unique=True),
    Column("created_at", Text, nullable=False),
    Column("revoked_at", Text),
)
