"""when each user last opened Failed Deliveries

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import postway.store.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

When = postway.store.models.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "failed_seen",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("seen_at", When(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_failed_seen_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_failed_seen")),
    )


def downgrade() -> None:
    op.drop_table("failed_seen")
