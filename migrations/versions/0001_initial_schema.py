"""initial schema

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

import models.tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_log_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_cursor", sa.BigInteger(), nullable=False),
        sa.Column("pruned_through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(
        sa.table(
            "event_log_state",
            sa.column("id"),
            sa.column("last_cursor"),
            sa.column("pruned_through"),
        ),
        [{"id": 1, "last_cursor": 0, "pruned_through": 0}],
    )
    op.create_table(
        "session_events",
        sa.Column("cursor", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("session_key", sa.String(), nullable=False),
        sa.Column("data_source", sa.String(), nullable=False),
        sa.Column("occurred_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cursor"),
    )
    op.create_table(
        "sessions",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("data_source", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("identifier", sa.String(), nullable=False),
        sa.Column("utc_offset_seconds", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", models.tables.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index("ix_sessions_created_key", ["created_at", "key"], unique=False)
        batch_op.create_index("ix_sessions_source_status", ["data_source", "status"], unique=False)
        batch_op.create_index("ix_sessions_status_created", ["status", "created_at"], unique=False)

    op.create_table(
        "idempotency_records",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("session_key", sa.String(), nullable=False),
        sa.Column("created_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_key"], ["sessions.key"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "session_associations",
        sa.Column("parent_key", sa.String(), nullable=False),
        sa.Column("child_key", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["child_key"], ["sessions.key"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_key"], ["sessions.key"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("parent_key", "child_key"),
    )
    with op.batch_alter_table("session_associations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_session_associations_child_key"), ["child_key"], unique=False
        )

    op.create_table(
        "session_details",
        sa.Column("session_key", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["session_key"], ["sessions.key"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_key", "name"),
    )
    op.create_table(
        "session_streams",
        sa.Column("session_key", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["session_key"], ["sessions.key"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_key", "position"),
        sa.UniqueConstraint("session_key", "name"),
    )


def downgrade() -> None:
    op.drop_table("session_streams")
    op.drop_table("session_details")
    with op.batch_alter_table("session_associations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_session_associations_child_key"))

    op.drop_table("session_associations")
    op.drop_table("idempotency_records")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_status_created")
        batch_op.drop_index("ix_sessions_source_status")
        batch_op.drop_index("ix_sessions_created_key")

    op.drop_table("sessions")
    op.drop_table("session_events")
    op.drop_table("event_log_state")
