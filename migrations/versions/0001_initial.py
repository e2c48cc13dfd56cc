"""Initial schema: owners, API keys, studies, trials, evaluation and range test points.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clr_owners",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clr_owners")),
        sa.UniqueConstraint("name", name=op.f("uq_clr_owners_name")),
    )
    op.create_table(
        "clr_api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["clr_owners.id"],
            name=op.f("fk_clr_api_keys_owner_id_clr_owners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clr_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_clr_api_keys_key_hash")),
    )
    op.create_table(
        "clr_studies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("submission_id", sa.String(length=100), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bounds", sa.JSON(), nullable=True),
        sa.Column("resolved_arms", sa.JSON(), nullable=True),
        sa.Column("iterations_per_epoch", sa.Integer(), nullable=True),
        sa.Column("range_test_stopped_at", sa.Integer(), nullable=True),
        sa.Column("range_test_stop_reason", sa.String(length=32), nullable=True),
        sa.Column("range_test_node_id", sa.String(length=100), nullable=True),
        sa.CheckConstraint(
            "phase IN ('queued', 'range_test', 'trials', 'report', 'done')",
            name=op.f("ck_clr_studies_phase"),
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_clr_studies_status"),
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["clr_owners.id"],
            name=op.f("fk_clr_studies_owner_id_clr_owners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clr_studies")),
        sa.UniqueConstraint(
            "owner_id", "idempotency_key", name=op.f("uq_clr_studies_owner_id_idempotency_key")
        ),
    )
    op.create_index("ix_clr_studies_owner_created", "clr_studies", ["owner_id", "created_at"])
    op.create_index("ix_clr_studies_status_created", "clr_studies", ["status", "created_at"])
    op.create_table(
        "clr_range_test_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("lr", sa.Float(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("smoothed_loss", sa.Float(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("eval_loss", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["clr_studies.id"],
            name=op.f("fk_clr_range_test_points_study_id_clr_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clr_range_test_points")),
        sa.UniqueConstraint(
            "study_id", "iteration", name=op.f("uq_clr_range_test_points_study_id_iteration")
        ),
    )
    op.create_table(
        "clr_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.String(length=36), nullable=False),
        sa.Column("trial_id", sa.String(length=200), nullable=False),
        sa.Column("arm", sa.String(length=100), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("node_id", sa.String(length=100), nullable=True),
        sa.Column("iterations", sa.Integer(), nullable=False),
        sa.Column("iterations_done", sa.Integer(), nullable=False),
        sa.Column("wall_s", sa.Float(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'completed', 'diverged', 'failed', 'cancelled')",
            name=op.f("ck_clr_trials_state"),
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["clr_studies.id"],
            name=op.f("fk_clr_trials_study_id_clr_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clr_trials")),
        sa.UniqueConstraint("study_id", "trial_id", name=op.f("uq_clr_trials_study_id_trial_id")),
    )
    op.create_table(
        "clr_eval_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_pk", sa.Integer(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Float(), nullable=False),
        sa.Column("lr", sa.Float(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("elapsed_s", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_pk"],
            ["clr_trials.id"],
            name=op.f("fk_clr_eval_points_trial_pk_clr_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clr_eval_points")),
        sa.UniqueConstraint(
            "trial_pk", "iteration", name=op.f("uq_clr_eval_points_trial_pk_iteration")
        ),
    )


def downgrade() -> None:
    op.drop_table("clr_eval_points")
    op.drop_table("clr_trials")
    op.drop_table("clr_range_test_points")
    op.drop_table("clr_studies")
    op.drop_table("clr_api_keys")
    op.drop_table("clr_owners")
