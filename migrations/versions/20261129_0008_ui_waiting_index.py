"""the dashboard: a partial index of the messages still waiting, by first seen

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_waiting",
        "messages",
        ["first_seen_at"],
        sqlite_where=sa.text("final IS 0 AND given_up_at IS NULL"),
        postgresql_where=sa.text("final IS false AND given_up_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_waiting", table_name="messages")
