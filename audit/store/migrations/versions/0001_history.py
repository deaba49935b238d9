"""The history store as trustaudit wrote it before Alembic: meta, audits, findings.

Revision ID: 0001
Revises: (none)

A history file written before the migrations existed has exactly these tables; the store stamps it
at this revision instead of running it. On a database with only some of them (a first open killed
half-way), the missing ones are created. On PostgreSQL, audits and findings get an identity column
``seq`` standing in for SQLite's ``rowid`` (insertion order).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _seq(pg: bool) -> list[sa.Column]:
    return [sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False)] if pg else []


def upgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    if "meta" not in existing:
        op.create_table(
            "meta",
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
        )
    if "audits" not in existing:
        op.create_table(
            "audits",
            sa.Column("audit_id", sa.Text, primary_key=True),
            sa.Column("created_at", sa.Text, nullable=False),
            sa.Column("verdict", sa.Text, nullable=False),
            sa.Column("model_path", sa.Text),
            sa.Column("model_sha256", sa.Text),
            sa.Column("data_path", sa.Text),
            sa.Column("data_sha256", sa.Text),
            sa.Column("n_checks", sa.Integer, nullable=False),
            sa.Column("n_pass", sa.Integer, nullable=False),
            sa.Column("n_fail", sa.Integer, nullable=False),
            sa.Column("n_warn", sa.Integer, nullable=False),
            sa.Column("n_error", sa.Integer, nullable=False),
            sa.Column("n_skipped", sa.Integer, nullable=False),
            sa.Column("seconds", sa.Float, nullable=False),
            sa.Column("schema_version", sa.Text, nullable=False),
            sa.Column("label", sa.Text),
            sa.Column("report_json", sa.Text, nullable=False),
            sa.Column("report_sha256", sa.Text, nullable=False),
            *_seq(pg),
        )
    if "findings" not in existing:
        op.create_table(
            "findings",
            sa.Column("audit_id", sa.Text, sa.ForeignKey("audits.audit_id", ondelete="CASCADE"), nullable=False),
            sa.Column("check_id", sa.Text, nullable=False),
            sa.Column("family", sa.Text, nullable=False),
            sa.Column("verdict", sa.Text, nullable=False),
            sa.Column("summary", sa.Text, nullable=False),
            *_seq(pg),
            sa.PrimaryKeyConstraint("audit_id", "check_id"),
        )
    if "audits_created" not in {ix["name"] for ix in sa.inspect(bind).get_indexes("audits")}:
        op.create_index("audits_created", "audits", ["created_at"])
    meta = sa.table("meta", sa.column("key", sa.Text), sa.column("value", sa.Text))
    if bind.execute(sa.select(meta.c.value).where(meta.c.key == "store_schema_version")).first() is None:
        op.bulk_insert(meta, [{"key": "store_schema_version", "value": "1"}])


def downgrade() -> None:
    op.drop_index("audits_created", table_name="audits")
    op.drop_table("findings")
    op.drop_table("audits")
    op.drop_table("meta")
