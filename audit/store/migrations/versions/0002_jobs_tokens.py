"""The audit service: jobs, API tokens, and the project an audit belongs to.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audits", sa.Column("project", sa.Text))
    op.create_index("audits_project", "audits", ["project", "created_at"])
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("project", sa.Text, nullable=False),
        sa.Column("submitted_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("started_at", sa.Text),
        sa.Column("finished_at", sa.Text),
        sa.Column("heartbeat_at", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker_id", sa.Text),
        sa.Column("spec_json", sa.Text, nullable=False),
        sa.Column("inputs_json", sa.Text, nullable=False),
        sa.Column("progress_json", sa.Text, nullable=False, server_default="{}"),
        sa.Column("error", sa.Text),
        sa.Column("audit_id", sa.Text, sa.ForeignKey("audits.audit_id", ondelete="SET NULL")),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("result_json", sa.Text),
        sa.CheckConstraint("state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
                           name="jobs_state_known"),
    )
    op.create_index("jobs_state_created", "jobs", ["state", "created_at"])
    op.create_index("jobs_project_created", "jobs", ["project", "created_at"])
    op.create_table(
        "tokens",
        sa.Column("token_id", sa.Text, primary_key=True),
        sa.Column("project", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("revoked_at", sa.Text),
        sa.UniqueConstraint("sha256", name="tokens_sha256_unique"),
    )
    meta = sa.table("meta", sa.column("key", sa.Text), sa.column("value", sa.Text))
    op.execute(meta.update().where(meta.c.key == "store_schema_version").values(value="2"))


def downgrade() -> None:
    op.drop_table("tokens")
    op.drop_index("jobs_project_created", table_name="jobs")
    op.drop_index("jobs_state_created", table_name="jobs")
    op.drop_table("jobs")
    with op.batch_alter_table("audits") as batch:
        batch.drop_index("audits_project")
        batch.drop_column("project")
    meta = sa.table("meta", sa.column("key", sa.Text), sa.column("value", sa.Text))
    op.execute(meta.update().where(meta.c.key == "store_schema_version").values(value="1"))
