"""the dashboard: counts of events per closed 15-minute interval, kept across restarts

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_buckets",
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_event_buckets")),
    )
    op.create_table(
        "event_bucket_counts",
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "status", name=op.f("pk_event_bucket_counts")),
    )


def downgrade() -> None:
    op.drop_table("event_bucket_counts")
    op.drop_table("event_buckets")
