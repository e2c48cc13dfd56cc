"""What a study leaves beside its rows: its folders under STORAGE_PATH and, for tuned arms,
its Optuna studies in the same database. Deleting a study removes all of it; checkpoints of
studies that ended more than CHECKPOINT_RETENTION_DAYS ago are removed on their own.

Ray Tune writes a study's runs to folders named after it (`<study id>-trials`,
`<study id>-range-test`, `<study id>-tuning-<arm>`, and `<study id>-<trial>.failed` markers;
see `workers.runner`), and its checkpoints as `checkpoint_*` folders inside them. Only a
local STORAGE_PATH is cleaned here: an `s3://...` one needs the bucket's own lifecycle rules.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

from service.settings import Settings
from service.store import Store

log = logging.getLogger(__name__)


def _local_root(settings: Settings) -> Path | None:
    if "://" in settings.storage_path:
        return None
    return Path(settings.storage_path)


def study_paths(settings: Settings, study_id: str) -> list[Path]:
    """The study's files and folders under a local STORAGE_PATH."""
    root = _local_root(settings)
    if root is None or not root.is_dir():
        return []
    return sorted(root.glob(f"{study_id}-*"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def delete_study_data(store: Store, settings: Settings, study_id: str) -> bool:
    """Delete a study that is not running: its files, its Optuna studies, then its rows
    (trials, points, tuning trials, cached reports). False if it is running (cancel it
    first) or unknown. Files go first: if anything fails, the study is still there to
    delete again."""
    study = store.get_study(study_id)
    if study is None or study.status == "running":
        return False
    for path in study_paths(settings, study_id):
        _remove(path)
    _delete_optuna_studies(settings, study_id)
    return store.delete_study(study_id)


def _delete_optuna_studies(settings: Settings, study_id: str) -> None:
    import optuna  # late: only deletion needs it in the API process

    from service.driver import tuning_storage, tuning_study_prefix

    prefix = f"{tuning_study_prefix(study_id)}/"
    storage = optuna.storages.RDBStorage(tuning_storage(settings))
    try:
        for name in optuna.get_all_study_names(storage):
            if name.startswith(prefix):
                optuna.delete_study(study_name=name, storage=storage)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _checkpoints(path: Path) -> Iterator[Path]:
    if path.is_dir() and not path.is_symlink():
        yield from (p for p in path.rglob("checkpoint_*") if p.is_dir())


def remove_old_checkpoints(store: Store, settings: Settings, now: datetime) -> list[str]:
    """Remove the checkpoints of studies that ended more than CHECKPOINT_RETENTION_DAYS
    before `now` (0: never), keeping everything else; the ids of the studies done."""
    if settings.checkpoint_retention_days <= 0 or _local_root(settings) is None:
        return []
    before = now - timedelta(days=settings.checkpoint_retention_days)
    done = []
    for study_id in store.studies_with_checkpoints(finished_before=before):
        for path in study_paths(settings, study_id):
            for checkpoint in list(_checkpoints(path)):
                shutil.rmtree(checkpoint, ignore_errors=True)
        store.mark_checkpoints_removed(study_id)
        log.info("study %s: checkpoints removed (ended before %s)", study_id, before)
        done.append(study_id)
    return done
