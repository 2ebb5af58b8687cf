"""bounce storage: raw bounces stored once (bounce_bodies, by SHA-256), per-client keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

import postway.store.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BATCH = 200  # rows moved at a time: a bounce may be 10 MB


def upgrade() -> None:
    op.create_table(
        "bounce_bodies",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("peer_key", sa.String(length=64), nullable=False),
        sa.Column("received_at", postway.store.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_bounce_bodies")),
    )
    with op.batch_alter_table("bounce_bodies", schema=None) as batch_op:
        batch_op.create_index(
            "ix_bounce_bodies_peer_received", ["peer_key", "received_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_bounce_bodies_received_at"), ["received_at"], unique=False
        )

    with op.batch_alter_table("bounce_messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("peer_key", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("raw_sha256", sa.String(length=64), nullable=True))

    _move_raw_to_bodies()

    with op.batch_alter_table("bounce_messages", schema=None) as batch_op:
        batch_op.alter_column("raw_sha256", existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_column("raw")
        batch_op.create_index(
            "ix_bounce_messages_peer_received", ["peer_key", "received_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_bounce_messages_raw_sha256"), ["raw_sha256"], unique=False
        )


def _move_raw_to_bodies() -> None:
    """Each distinct raw message once into bounce_bodies; rows keep its hash."""
    conn = op.get_bind()
    messages = sa.table(
        "bounce_messages",
        sa.column("id", sa.String),
        sa.column("raw", sa.LargeBinary),
        sa.column("peer", sa.String),
        sa.column("peer_key", sa.String),
        sa.column("raw_sha256", sa.String),
        sa.column("received_at", postway.store.models.UTCDateTime(timezone=True)),
    )
    bodies = sa.table(
        "bounce_bodies",
        sa.column("sha256", sa.String),
        sa.column("raw", sa.LargeBinary),
        sa.column("size", sa.Integer),
        sa.column("peer_key", sa.String),
        sa.column("received_at", postway.store.models.UTCDateTime(timezone=True)),
    )
    seen: set[str] = set()
    while True:
        batch = conn.execute(
            sa.select(messages.c.id, messages.c.raw, messages.c.peer, messages.c.received_at)
            .where(messages.c.raw_sha256.is_(None))
            .order_by(messages.c.received_at, messages.c.id)
            .limit(_BATCH)
        ).all()
        if not batch:
            return
        for row_id, raw, peer, received_at in batch:
            raw = bytes(raw or b"")
            digest = hashlib.sha256(raw).hexdigest()
            if digest not in seen:
                seen.add(digest)
                conn.execute(
                    bodies.insert().values(
                        sha256=digest, raw=raw, size=len(raw), peer_key=peer or "",
                        received_at=received_at,
                    )  # fmt: skip
                )
            conn.execute(
                messages.update()
                .where(messages.c.id == row_id)
                .values(raw_sha256=digest, peer_key=peer or "")
            )


def downgrade() -> None:
    with op.batch_alter_table("bounce_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bounce_messages_raw_sha256"))
        batch_op.drop_index("ix_bounce_messages_peer_received")
        batch_op.add_column(
            sa.Column("raw", sa.LargeBinary(), nullable=False, server_default=sa.text("''"))
        )
    # Bodies deleted by retention come back empty.
    op.execute(
        "UPDATE bounce_messages SET raw = (SELECT b.raw FROM bounce_bodies b "
        "WHERE b.sha256 = bounce_messages.raw_sha256) "
        "WHERE raw_sha256 IN (SELECT sha256 FROM bounce_bodies)"
    )
    with op.batch_alter_table("bounce_messages", schema=None) as batch_op:
        batch_op.drop_column("raw_sha256")
        batch_op.drop_column("peer_key")

    with op.batch_alter_table("bounce_bodies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bounce_bodies_received_at"))
        batch_op.drop_index("ix_bounce_bodies_peer_received")
    op.drop_table("bounce_bodies")
