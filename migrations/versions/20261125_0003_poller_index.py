"""an index for the poller: pending messages in first-seen order

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_messages_pending", "messages", ["final", "given_up_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_pending", table_name="messages")
