"""Schedules (cron rules that create studies) and their runs.

Revision ID: 0002_schedules
Revises: 0001_initial
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_schedules"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clr_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("points_threshold", sa.Float(), nullable=False),
        sa.Column("iterations_fraction", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["clr_owners.id"],
            name=op.f("fk_clr_schedules_owner_id_clr_owners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clr_schedules")),
        sa.UniqueConstraint("owner_id", "name", name=op.f("uq_clr_schedules_owner_id_name")),
    )
    op.create_index(
        "ix_clr_schedules_enabled_next_run", "clr_schedules", ["enabled", "next_run_at"]
    )
    op.create_table(
        "clr_schedule_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("study_id", sa.String(length=36), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('created', 'skipped')", name=op.f("ck_clr_schedule_runs_state")
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["clr_schedules.id"],
            name=op.f("fk_clr_schedule_runs_schedule_id_clr_schedules"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["clr_studies.id"],
            name=op.f("fk_clr_schedule_runs_study_id_clr_studies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clr_schedule_runs")),
        sa.UniqueConstraint(
            "schedule_id", "due_at", name=op.f("uq_clr_schedule_runs_schedule_id_due_at")
        ),
    )


def downgrade() -> None:
    op.drop_table("clr_schedule_runs")
    op.drop_index("ix_clr_schedules_enabled_next_run", table_name="clr_schedules")
    op.drop_table("clr_schedules")
