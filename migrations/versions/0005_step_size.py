"""Evaluation points' estimated step size d (Prodigy, D-Adaptation, DoG; issue 15).

Revision ID: 0005_step_size
Revises: 0004_hardening
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_step_size"
down_revision = "0004_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: SQLite adds it in place, and older points read as NULL.
    with op.batch_alter_table("clr_eval_points") as batch_op:
        batch_op.add_column(sa.Column("d", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clr_eval_points") as batch_op:
        batch_op.drop_column("d")
