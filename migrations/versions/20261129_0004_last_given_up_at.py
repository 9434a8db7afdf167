"""messages.last_given_up_at: when polling gave up, kept after a final status

A final status that arrives after polling gave up clears `given_up_at` (the
message is no longer given up); `last_given_up_at` keeps that it once was.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("last_given_up_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE messages SET last_given_up_at = given_up_at")


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("last_given_up_at")
