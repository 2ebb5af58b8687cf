"""token expiry, login throttle, confirmation mail log

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import postway.store.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("expires_at", postway.store.models.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", postway.store.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", postway.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttle")),
    )
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_login_throttle_updated_at"), ["updated_at"], unique=False
        )
    op.create_table(
        "confirmation_mails",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("sent_at", postway.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_confirmation_mails")),
    )
    with op.batch_alter_table("confirmation_mails", schema=None) as batch_op:
        batch_op.create_index(
            "ix_confirmation_mails_address_sent", ["address", "sent_at"], unique=False
        )
        batch_op.create_index(
            "ix_confirmation_mails_user_sent", ["user_id", "sent_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("confirmation_mails", schema=None) as batch_op:
        batch_op.drop_index("ix_confirmation_mails_user_sent")
        batch_op.drop_index("ix_confirmation_mails_address_sent")
    op.drop_table("confirmation_mails")
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_throttle_updated_at"))
    op.drop_table("login_throttle")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
