"""Hardening: keys' last use, browser sessions, idempotency body hashes, the report cache
and the checkpoint retention mark.

Revision ID: 0004_hardening
Revises: 0003_tuning
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_hardening"
down_revision = "0003_tuning"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only columns are added: SQLite adds them in place, so no table is recreated.
    with op.batch_alter_table("clr_api_keys") as batch_op:
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("clr_studies") as batch_op:
        batch_op.add_column(sa.Column("idempotency_body_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("checkpoints_removed_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "clr_browser_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["clr_api_keys.id"],
            name=op.f("fk_clr_browser_sessions_key_id_clr_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clr_browser_sessions")),
        sa.UniqueConstraint("session_hash", name=op.f("uq_clr_browser_sessions_session_hash")),
    )
    op.create_table(
        "clr_report_cache",
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("format_version", sa.Integer(), nullable=False),
        sa.Column("results_digest", sa.String(length=64), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["clr_studies.id"],
            name=op.f("fk_clr_report_cache_study_id_clr_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("study_id", "format_version", name=op.f("pk_clr_report_cache")),
    )


def downgrade() -> None:
    op.drop_table("clr_report_cache")
    op.drop_table("clr_browser_sessions")
    # Not in batch mode, which would recreate the tables on SQLite (and, with foreign keys
    # on, delete the rows that refer to them): SQLite 3.35+ drops a column in place.
    op.drop_column("clr_studies", "checkpoints_removed_at")
    op.drop_column("clr_studies", "idempotency_body_hash")
    op.drop_column("clr_api_keys", "last_used_at")
