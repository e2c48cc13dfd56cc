"""One page shell and one stylesheet for every HTML page of the service."""

from __future__ import annotations

from datetime import UTC, datetime

from service.reports import render_html
from service.reports.page import STYLESHEET, page
from service.reports.schedule_page import render_schedule_html
from service.store import ScheduleRecord
from tests.factories import against_baseline_results

WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def schedule(name: str = "nightly") -> ScheduleRecord:
    return ScheduleRecord(
        id=1,
        owner_id=1,
        name=name,
        cron="0 2 * * *",
        timezone="Europe/Berlin",
        spec={},
        enabled=True,
        points_threshold=2.0,
        iterations_fraction=0.25,
        created_at=WHEN,
        next_run_at=WHEN,
        last_run_at=None,
    )


def test_the_shell_escapes_the_title_and_carries_the_stylesheet() -> None:
    html = page('a <b> & "c"', "<p>body</p>", body_class="report")
    assert "<title>a &lt;b&gt; &amp; &quot;c&quot;</title>" in html
    assert html.count(STYLESHEET) == 1 and '<body class="report">' in html
    assert "<p>body</p>" in html and "<link" not in html and "<script" not in html


def test_report_and_schedule_pages_share_the_shell() -> None:
    for html in (render_html(against_baseline_results()), render_schedule_html(schedule(), [])):
        assert html.startswith("<!DOCTYPE html>") and html.count(STYLESHEET) == 1


def test_the_schedule_page_flags_the_regressed_arm() -> None:
    delta = {"arm": "clr", "regression": True, "final_accuracy": 0.8, "reasons": ["fell 9 points"]}
    arms = [
        {"arm": a, "final_accuracy": f, "iterations_to_target": 100.0, "speedup": 1.0}
        for a, f in (("fixed", 0.9), ("clr", 0.8))
    ]
    entry = {
        "due_at": WHEN.isoformat(),
        "state": "created",
        "reason": None,
        "study_id": "s2",
        "study_status": "succeeded",
        "arms": arms,
        "comparison": {"regression": True, "arms": [delta]},
    }
    html = render_schedule_html(schedule("<nightly>"), [entry])
    assert html.count('<tr class="regression">') == 1 and "fell 9 points" in html
    assert '<p id="regression" class="banner error">' in html and "&lt;nightly&gt;" in html
    assert "80.0%" in html and "<svg" in html
