"""reconciliation against stats.php: message context and reports

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "message_context",
        sa.Column("id_sms", sa.String(19), nullable=False),
        sa.Column("originator", sa.String(128), nullable=True),
        sa.Column("name_delivery", sa.String(128), nullable=True),
        sa.Column("operator", sa.String(128), nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("sent_at", UTC, nullable=True),
        sa.Column("sent_time_raw", sa.String(64), nullable=True),
        sa.Column("num_parts", sa.Integer(), nullable=False),
        sa.Column("price", sa.String(32), nullable=True),
        sa.Column("cost", sa.String(32), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id_sms", name=op.f("pk_message_context")),
    )
    op.create_index(op.f("ix_message_context_sent_at"), "message_context", ["sent_at"])
    op.create_table(
        "reconciliation_reports",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=True),
        sa.Column("lease_until", UTC, nullable=True),
        sa.Column("windows", sa.Integer(), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("provider_counts", sa.Text(), nullable=False),
        sa.Column("our_counts", sa.Text(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("flagged", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_reports")),
    )
    op.create_index(
        "ix_reconciliation_reports_day_status", "reconciliation_reports", ["day", "status"]
    )


def downgrade() -> None:
    op.drop_index("ix_reconciliation_reports_day_status", table_name="reconciliation_reports")
    op.drop_table("reconciliation_reports")
    op.drop_index(op.f("ix_message_context_sent_at"), table_name="message_context")
    op.drop_table("message_context")
