"""A failed study's full log or traceback, for admins; owners see a clean `error` (issue 14).

Revision ID: 0006_error_detail
Revises: 0005_step_size
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_error_detail"
down_revision = "0005_step_size"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: SQLite adds it in place, and earlier studies read as NULL.
    with op.batch_alter_table("clr_studies") as batch_op:
        batch_op.add_column(sa.Column("error_detail", sa.Text(), nullable=True))


def downgrade() -> None:
    # Not in batch mode, which would recreate clr_studies on SQLite (and, with foreign keys
    # on, delete the rows that refer to it): SQLite 3.35+ drops a column in place.
    op.drop_column("clr_studies", "error_detail")
