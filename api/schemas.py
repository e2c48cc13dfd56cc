"""The API's response bodies; requests are `workers.spec.StudySpec` (POST /studies) or none."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from workers.states import StudyPhase, StudyStatus, TrialState


class ErrorView(BaseModel):
    """An error: what went wrong, in words."""

    detail: str = Field(description="What went wrong and, where it helps, what to do.")


class ProgressView(BaseModel):
    """How far a study is; a finished trial counts its whole budget as done."""

    trials_done: int = Field(description="Trials that have ended (completed, diverged, ...).")
    trials_total: int = Field(description="Trials planned; 0 until the study has started.")
    iterations_done: int = Field(description="Training iterations done over all trials.")
    iterations_total: int = Field(description="Training iterations planned over all trials.")
    best_accuracy: dict[str, float] = Field(
        description="Per arm, the best held-out accuracy (0..1) any of its trials reached so far."
    )
    tuning_trials_done: int = Field(
        description="Tuning trials of tuned arms' searches that have ended and count towards "
        "the searches (interrupted or cancelled ones are replaced, and not counted)."
    )
    tuning_trials_total: int = Field(
        description="Tuning trials planned over all tuned arms; 0 when no arm is tuned."
    )


class StudyLinks(BaseModel):
    """Where to find more about a study."""

    self: str = Field(description="This study.")
    trials: str = Field(description="Its trials.")
    results: str = Field(description="Its results document (results.json's content).")
    report: str = Field(description="Its comparison report, JSON.")
    report_html: str = Field(description="Its comparison report, a self-contained HTML page.")
    report_csv: str = Field(description="Every evaluation point, one CSV row each.")
    cancel: str = Field(description="POST here to cancel it.")


class StudyView(BaseModel):
    """A study: its spec, where its lifecycle stands and how far it got."""

    id: str = Field(
        description="The study's id, a UUID.", examples=["0b7d6f0e-3c1a-4f59-9a51-2f0c8f1f6a1e"]
    )
    name: str = Field(description="The spec's name.")
    owner_id: int = Field(description="Id of the owner (API key holder) who submitted it.")
    status: StudyStatus = Field(description="queued -> running -> succeeded | failed | cancelled.")
    phase: StudyPhase = Field(description="What a running study is doing.")
    progress: ProgressView
    bounds: dict[str, Any] | None = Field(
        description="The LR bounds the range test suggested (base_lr, max_lr, method, reason); "
        "null until known."
    )
    ray_job_id: str | None = Field(
        description="Submission id of the Ray Job running the study; null until started."
    )
    ray_dashboard_url: str | None = Field(
        description="The study's Ray Job in the Ray dashboard; null until started."
    )
    error: str | None = Field(description="Why the study failed; null otherwise.")
    error_detail: str | None = Field(
        None,
        description="Admins only (null for others): what `error` leaves out, the failed "
        "job's log or the driver's traceback.",
    )
    cancel_requested: bool = Field(description="A cancel was asked for and is being carried out.")
    created_at: datetime = Field(description="When it was submitted (UTC).")
    started_at: datetime | None = Field(description="When it started running (UTC).")
    finished_at: datetime | None = Field(description="When it ended (UTC).")
    spec: dict[str, Any] = Field(description="The StudySpec as validated (shorthands expanded).")
    links: StudyLinks


class StudyPage(BaseModel):
    """One page of studies, newest first."""

    items: list[StudyView]
    total: int = Field(description="Studies matching the filters, over all pages.")
    limit: int = Field(description="Most items on this page.")
    offset: int = Field(description="Items skipped before this page.")


class TrialView(BaseModel):
    """One arm trained with one seed."""

    trial_id: str = Field(description='"{arm}-s{seed}".', examples=["triangular-s0"])
    arm: str = Field(description="The arm's name.")
    seed: int = Field(description="The seed.")
    state: TrialState = Field(description="Where the trial stands.")
    error: str | None = Field(description="Why it failed or diverged.")
    node_id: str | None = Field(description="The Ray node it ran on last.")
    iterations: int = Field(description="Its budget in iterations.")
    iterations_done: int = Field(description="Iterations trained so far.")
    wall_s: float | None = Field(description="Wall time in seconds, once ended.")
    started_at: datetime | None = Field(description="When it started (UTC).")
    ended_at: datetime | None = Field(description="When it ended (UTC).")


class ParamView(BaseModel):
    """One parameter of a catalog entry."""

    name: str
    type: str = Field(description="int, float, bool, str, ...")
    required: bool
    default: Any = Field(description="The value when left out; null when required.")
    choices: list[Any] | None = Field(description="The allowed values, when restricted.")
    auto: bool = Field(description="May be 'auto': taken from the range test's bounds.")
    tunable: bool | None = Field(
        None,
        description="Policies only: may be searched by a tuned arm (its tuning.space).",
    )
    help: str


class CatalogEntry(BaseModel):
    """A data set, model, optimizer or policy the server accepts."""

    name: str = Field(description="The name to use in a StudySpec.")
    summary: str
    params: list[ParamView] = Field(description="Its options (policies: params).")
    # Optimizers only: how the engine steps them (workers.optimizers.Stepping).
    batchable: bool | None = Field(
        None, description="Optimizers: an elementwise update (seeds could train stacked)."
    )
    schedule_free: bool | None = Field(
        None, description="Optimizers: switched to eval mode for evaluations and checkpoints."
    )
    parameter_free: bool | None = Field(
        None, description="Optimizers: the policy's lr multiplies a step size it estimates."
    )
    averaged: bool | None = Field(
        None, description="Optimizers: evaluated on polynomial-decay averaged weights."
    )


class CatalogView(BaseModel):
    """Everything a StudySpec may name."""

    datasets: list[CatalogEntry]
    models: list[CatalogEntry]
    optimizers: list[CatalogEntry]
    policies: list[CatalogEntry]


class HealthView(BaseModel):
    status: Literal["ok"] = Field(description="The process is up.")


class ReadinessView(BaseModel):
    """Whether the service can serve: each dependency's state."""

    status: Literal["ready", "unavailable"]
    database: str = Field(description='"ok", or why the database cannot be reached.')
    ray: str = Field(description='"ok", "not used" (studies are not run here), or why not.')
