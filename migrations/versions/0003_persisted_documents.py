"""persisted_documents: documents registered by automatic persisted queries, by their SHA-256

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

import models.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "persisted_documents",
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("stored_at", models.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_index(op.f("ix_persisted_documents_stored_at"), "persisted_documents", ["stored_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_persisted_documents_stored_at"), table_name="persisted_documents")
    op.drop_table("persisted_documents")
