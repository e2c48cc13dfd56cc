"""Tuned arms: the "tuning" phase, each study's tuning summary and its tuning trials.

Revision ID: 0003_tuning
Revises: 0002_schedules
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision = "0003_tuning"
down_revision = "0002_schedules"
branch_labels = None
depends_on = None

PHASES_BEFORE = "phase IN ('queued', 'range_test', 'trials', 'report', 'done')"
PHASES_AFTER = "phase IN ('queued', 'range_test', 'tuning', 'trials', 'report', 'done')"


@contextmanager
def _recreating_parent_table() -> Iterator[None]:
    """Lets batch mode recreate clr_studies on SQLite without losing the rows that refer to it.

    SQLite cannot change a CHECK constraint in place: batch mode copies the table, drops the
    old one and renames the copy. With foreign keys enforced (service.db turns them on),
    dropping the old table deletes every trial, point and tuning trial of every study
    (ON DELETE CASCADE); so they are turned off meanwhile, and checked afterwards.
    PostgreSQL alters the table in place and needs none of this.
    """
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        # The pragma is ignored inside a transaction: refuse rather than delete data.
        raise RuntimeError("cannot turn SQLite's foreign keys off to recreate clr_studies")
    yield
    broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"foreign keys broken by recreating clr_studies: {broken[:5]}")
    bind.exec_driver_sql("PRAGMA foreign_keys=ON")


def upgrade() -> None:
    # Batch mode: SQLite cannot add or drop a CHECK constraint in place, so it recreates
    # the table (keeping its other named constraints); PostgreSQL alters it.
    with _recreating_parent_table(), op.batch_alter_table("clr_studies") as batch_op:
        batch_op.add_column(sa.Column("tuning", sa.JSON(), nullable=True))
        batch_op.drop_constraint(op.f("ck_clr_studies_phase"), type_="check")
        batch_op.create_check_constraint(op.f("ck_clr_studies_phase"), PHASES_AFTER)
    op.create_table(
        "clr_tuning_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("arm", sa.String(length=100), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("iterations_done", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("wall_s", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("node_id", sa.String(length=100), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('completed', 'stopped', 'diverged', 'failed', 'cancelled', 'interrupted')",
            name=op.f("ck_clr_tuning_trials_state"),
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["clr_studies.id"],
            name=op.f("fk_clr_tuning_trials_study_id_clr_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clr_tuning_trials")),
        sa.UniqueConstraint(
            "study_id", "arm", "number", name=op.f("uq_clr_tuning_trials_study_id_arm_number")
        ),
    )


def downgrade() -> None:
    with _recreating_parent_table():  # first: SQLite ignores the pragma after an UPDATE
        op.drop_table("clr_tuning_trials")
        # A study in the tuning phase goes back to the phase before it.
        op.execute("UPDATE clr_studies SET phase = 'range_test' WHERE phase = 'tuning'")
        with op.batch_alter_table("clr_studies") as batch_op:
            batch_op.drop_constraint(op.f("ck_clr_studies_phase"), type_="check")
            batch_op.create_check_constraint(op.f("ck_clr_studies_phase"), PHASES_BEFORE)
            batch_op.drop_column("tuning")
