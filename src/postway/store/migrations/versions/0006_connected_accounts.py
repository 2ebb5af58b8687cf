"""connected accounts, OAuth states, account threads

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import postway.store.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

When = postway.store.models.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "connected_accounts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("access_token_enc", sa.Text(), nullable=True),
        sa.Column("refresh_token_enc", sa.Text(), nullable=True),
        sa.Column("token_expires_at", When(timezone=True), nullable=True),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("send_as", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("paused_until", When(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("bounce_scanning", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("refreshing_until", When(timezone=True), nullable=True),
        sa.Column("created_at", When(timezone=True), nullable=False),
        sa.Column("updated_at", When(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organisations.id"],
            name=op.f("fk_connected_accounts_org_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_connected_accounts_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connected_accounts")),
        sa.UniqueConstraint("user_id", "provider", name=op.f("uq_connected_accounts_user_id")),
    )
    with op.batch_alter_table("connected_accounts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_connected_accounts_org_id"), ["org_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_connected_accounts_user_id"), ["user_id"], unique=False
        )
    op.create_table(
        "oauth_states",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("verifier_enc", sa.Text(), nullable=False),
        sa.Column("session_hash", sa.String(length=64), nullable=True),
        sa.Column("bounce_scanning", sa.Boolean(), nullable=False),
        sa.Column("replace", sa.Boolean(), nullable=False),
        sa.Column("expires_at", When(timezone=True), nullable=False),
        sa.Column("created_at", When(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_oauth_states_user_id_users")
        ),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_oauth_states")),
    )
    with op.batch_alter_table("oauth_states", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oauth_states_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_oauth_states_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "account_threads",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("message_id_header", sa.String(length=400), nullable=False),
        sa.Column("thread_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", When(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "message_id_header", name=op.f("pk_account_threads")
        ),
    )


def downgrade() -> None:
    op.drop_table("account_threads")
    with op.batch_alter_table("oauth_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_states_expires_at"))
        batch_op.drop_index(batch_op.f("ix_oauth_states_user_id"))
    op.drop_table("oauth_states")
    with op.batch_alter_table("connected_accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connected_accounts_user_id"))
        batch_op.drop_index(batch_op.f("ix_connected_accounts_org_id"))
    op.drop_table("connected_accounts")
