"""initial schema: messages, events, documents, instance_settings

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("received_at", UTC, nullable=False),
        sa.Column("remote_addr", sa.String(length=64), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("acked_ids", sa.Text(), nullable=False),
        sa.Column("state_count", sa.Integer(), nullable=False),
        sa.Column("duplicate_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
    )
    op.create_index(op.f("ix_documents_received_at"), "documents", ["received_at"])

    op.create_table(
        "events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("id_sms", sa.String(length=19), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=False),
        sa.Column("time_raw", sa.String(length=64), nullable=False),
        sa.Column("status_at", UTC, nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("conflict", sa.Boolean(), nullable=False),
        sa.Column("num_parts", sa.Integer(), nullable=True),
        sa.Column("price", sa.String(length=32), nullable=True),
        sa.Column("received_at", UTC, nullable=False),
        sa.Column("document_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("id_sms", "status", "time_raw", name="uq_events_state"),
    )
    op.create_index(op.f("ix_events_received_at"), "events", ["received_at"])

    op.create_table(
        "instance_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_instance_settings")),
    )

    op.create_table(
        "messages",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("id_sms", sa.String(length=19), nullable=False),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("conflict", sa.Boolean(), nullable=False),
        sa.Column("status_at", UTC, nullable=True),
        sa.Column("status_time_raw", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=True),
        sa.Column("num_parts", sa.Integer(), nullable=True),
        sa.Column("price", sa.String(length=32), nullable=True),
        sa.Column("first_seen_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("tracked_at", UTC, nullable=True),
        sa.Column("last_polled_at", UTC, nullable=True),
        sa.Column("given_up_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("id_sms", name=op.f("uq_messages_id_sms")),
    )
    op.create_index("ix_messages_final_updated_at", "messages", ["final", "updated_at"])
    op.create_index(op.f("ix_messages_updated_at"), "messages", ["updated_at"])


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_table("instance_settings")
    op.drop_table("events")
    op.drop_table("documents")
