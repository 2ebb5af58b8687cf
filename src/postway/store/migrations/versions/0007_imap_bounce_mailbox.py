"""IMAP bounce mailbox of custom SMTP senders; mailbox reports already read

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import postway.store.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

When = postway.store.models.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("channel_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("imap_host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("imap_port", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("imap_security", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("imap_username", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("imap_password_enc", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "imap_reuse_relay", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.add_column(sa.Column("imap_folder", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("imap_checked_at", When(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("imap_error", sa.Text(), nullable=True))
    op.create_table(
        "mailbox_reports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("mailbox", sa.String(length=400), nullable=False),
        sa.Column("source_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("delivery_ids", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", When(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mailbox_reports_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailbox_reports")),
        sa.UniqueConstraint(
            "user_id", "mailbox", "source_id", name=op.f("uq_mailbox_reports_user_id")
        ),
    )
    with op.batch_alter_table("mailbox_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mailbox_reports_org_id"), ["org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_mailbox_reports_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("mailbox_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailbox_reports_user_id"))
        batch_op.drop_index(batch_op.f("ix_mailbox_reports_org_id"))
    op.drop_table("mailbox_reports")
    with op.batch_alter_table("channel_settings", schema=None) as batch_op:
        for name in (
            "imap_error", "imap_checked_at", "imap_folder", "imap_reuse_relay",
            "imap_password_enc", "imap_username", "imap_security", "imap_port", "imap_host",
        ):  # fmt: skip
            batch_op.drop_column(name)
