"""A study's comparison report, built once after the study ended and kept in the database.

`history?limit=100` reads up to 100 reports: building each from its results (every
evaluation point, then the statistics) on every request would cost seconds. A finished
study's report is kept, per report format (`REPORT_FORMAT`), with the digest of the
results it was built from (`Store.results_digest`) and of the clrstudy version that built
it, and served while that digest holds: a write about the study after its end (the
dispatcher recording interrupted tuning trials) changes the digest, and the report is built
again. A running study's report is always built afresh.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version
from typing import Any

from service.store import Store
from workers.states import TERMINAL_STUDY_STATUSES

CODE_VERSION = version("clrstudy")


def study_report(
    store: Store, study_id: str, results: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The comparison report of the study (None: no such study); `results`, where the caller
    has read them already, are not read again."""
    from service.reports import build_report  # late: numpy, scipy
    from service.reports.comparison import REPORT_FORMAT

    study = store.get_study(study_id)
    if study is None:
        return None
    digest = None
    if study.status in TERMINAL_STUDY_STATUSES:
        # Read before the results, so a kept report is never older than its digest; with
        # the code's version, since a new release may build reports another way.
        results_digest = store.results_digest(study_id)
        digest = hashlib.sha256(f"{results_digest} {CODE_VERSION}".encode()).hexdigest()
        if cached := store.cached_report(study_id, REPORT_FORMAT, digest):
            return cached
    if results is None:
        results = store.results(study_id)
    if results is None:
        return None
    report = build_report(results)
    if digest is not None:
        store.cache_report(study_id, REPORT_FORMAT, digest, report)
    return report
