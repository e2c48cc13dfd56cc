"""The service's settings: one object read from the environment and `.env`."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from workers.spec import Limits


class Settings(BaseSettings):
    """Every setting; the environment variable is the field name in upper case."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(
        "sqlite:///./var/clrstudy.db",
        description="SQLAlchemy URL of the database: a SQLite file, or "
        "`postgresql://user:password@host/db` for a cluster.",
    )
    ray_address: str | None = Field(
        None,
        description="Address of an existing Ray cluster (`host:port`); unset: the service "
        "starts a local Ray head and stops it on shutdown.",
    )
    ray_head_port: int = Field(
        6380,
        description="GCS port of the local Ray head. Not Ray's default 6379, which Redis "
        "holds on many machines.",
    )
    ray_dashboard_host: str = Field(
        "127.0.0.1", description="Interface the local Ray head's dashboard listens on."
    )
    ray_dashboard_port: int = Field(8265, description="Port of the Ray dashboard and Jobs API.")
    ray_dashboard_url: str | None = Field(
        None,
        description="URL of the Ray dashboard (Jobs API) of the cluster at `RAY_ADDRESS`; "
        "unset: `http://RAY_DASHBOARD_HOST:RAY_DASHBOARD_PORT`.",
    )
    ray_num_cpus: int | None = Field(
        None, description="CPUs the local Ray head offers; unset: all of the machine's."
    )
    storage_path: str = Field(
        "./var/ray_results",
        description="Where Ray Tune keeps trial checkpoints; on a cluster, storage every "
        "node can reach (a shared file system or `s3://...`).",
    )
    data_root: str = Field("./data", description="Directory the data sets are read from.")
    max_running_studies: int = Field(
        2,
        description="Studies running at once, over every service process sharing the "
        "database; further ones wait in the queue, served one owner after another.",
    )
    max_running_studies_per_owner: int = Field(
        2,
        description="Studies one owner (API key holder) may have running at once, however "
        "they were created; the dispatcher starts no more.",
    )
    max_queued_studies_per_owner: int = Field(
        20,
        description="Studies one owner may have waiting in the queue; a new one (API, "
        "schedule) beyond it is refused (429; a schedule's run is skipped).",
    )
    max_schedules_per_owner: int = Field(10, description="Most schedules one owner may have.")
    max_iterations_per_trial: int = Field(
        200_000, description="Largest `iterations` a study may ask for per trial."
    )
    max_arms: int = Field(20, description="Most arms one study may have.")
    max_seeds: int = Field(10, description="Most seeds one study may have.")
    max_tuning_trials: int = Field(
        200, ge=1, description="Most tuning trials one tuned arm may ask for."
    )
    max_cpus_per_trial: float | None = Field(
        None,
        description="Most CPUs one trial may ask for (`resources_per_trial.cpu`); unset: "
        "`RAY_NUM_CPUS`, else this machine's CPU count. On a cluster whose largest node has "
        "more, set it to that node's count; a trial no node can place fails its study at start.",
    )
    max_gpus_per_trial: float = Field(
        8,
        description="Most GPUs one trial may ask for (`resources_per_trial.gpu`); a trial no "
        "node can place fails its study at start.",
    )
    max_failures: int = Field(5, description="Largest `max_failures` (retries of a trial).")
    max_model_parameters: int = Field(
        50_000_000,
        description="Most parameters a study's model may have; counted at submission where "
        "the data set's shape is known, by the job driver otherwise.",
    )
    max_synthetic_samples: int = Field(
        1_000_000, description="Largest `train_size + test_size` of the synthetic data set."
    )
    max_study_seconds: float = Field(
        86_400,
        description="Wall-clock limit of a running study, in seconds, and the largest "
        "`timeout_s` a spec may give; past it the study is stopped and fails.",
    )
    max_body_bytes: int = Field(
        1024 * 1024, description="Largest request body the API accepts, in bytes."
    )
    checkpoint_retention_days: float = Field(
        14,
        ge=0,
        description="Checkpoints of a study that ended more than this many days ago are "
        "removed from `STORAGE_PATH` (its results stay); 0 keeps them.",
    )
    browser_session_hours: float = Field(
        12, gt=0, description="How long a browser's login lasts, in hours; logout ends it."
    )
    host: str = Field("127.0.0.1", description="Interface `clrstudy serve` listens on.")
    port: int = Field(8000, description="Port `clrstudy serve` listens on.")
    public_url: str | None = Field(
        None,
        description="Base URL clients reach the service at (for links); unset: `http://HOST:PORT`.",
    )

    def limits(self) -> Limits:
        """The limits a study spec is validated against."""
        from workers.spec import Limits  # late, so that reading settings never imports workers

        return Limits(
            max_iterations_per_trial=self.max_iterations_per_trial,
            max_arms=self.max_arms,
            max_seeds=self.max_seeds,
            max_tuning_trials=self.max_tuning_trials,
            max_cpus_per_trial=self.trial_cpus(),
            max_gpus_per_trial=self.max_gpus_per_trial,
            max_failures=self.max_failures,
            max_model_parameters=self.max_model_parameters,
            max_synthetic_samples=self.max_synthetic_samples,
            max_study_seconds=self.max_study_seconds,
        )

    def trial_cpus(self) -> float:
        """Most CPUs one trial may ask for: the setting, else the local head's CPUs."""
        if self.max_cpus_per_trial is not None:
            return self.max_cpus_per_trial
        return float(self.ray_num_cpus or os.cpu_count() or 1)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()


def settings_table_markdown() -> str:
    """The README's table of settings: variable, default, description."""
    rows = ["| Variable | Default | Description |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = "(unset)" if info.default is None else f"`{info.default}`"
        rows.append(f"| `{name.upper()}` | {default} | {info.description} |")
    return "\n".join(rows) + "\n"
