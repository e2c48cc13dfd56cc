"""A study's page in the browser: where it stands now, its plots so far, and what to do next.

Plain HTML (no script): while the study is queued or running the page reloads itself every
REFRESH_S seconds through a meta refresh, which the Content-Security-Policy allows. Stable ids:
`status`, `phase`, `progress`, `bounds`, `best` (the per-arm table), `plot-accuracy`,
`plot-schedule`, `links`, `ray-job`, `optuna`, `cancel` (the form, only while it can act).
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import TYPE_CHECKING, Any

from service.reports.comparison import with_arms
from service.reports.figures import accuracy_figure, schedule_figure
from service.reports.html import optuna_hint
from service.reports.page import page
from service.reports.verdicts import format_percent

if TYPE_CHECKING:
    from service.store import Progress, StudyRecord

REFRESH_S = 5  # how often a queued or running study's page reloads itself


def _progress(progress: Progress) -> str:
    trials = f"{progress.trials_done}/{progress.trials_total}"
    its = f"{progress.iterations_done:,}/{progress.iterations_total:,}"
    tuning = (
        f"<p>Tuning: {progress.tuning_trials_done}/{progress.tuning_trials_total} trials.</p>"
        if progress.tuning_trials_total
        else ""
    )
    return (
        '<section id="progress"><h2>Progress</h2>'
        f'<p><label for="trials-bar">Trials: <span id="trials">{trials}</span></label><br>'
        f'<progress id="trials-bar" value="{progress.trials_done}" '
        f'max="{max(progress.trials_total, 1)}">{trials}</progress></p>'
        f'<p><label for="iterations-bar">Iterations: <span id="iterations">{its}</span>'
        f'</label><br><progress id="iterations-bar" value="{progress.iterations_done}" '
        f'max="{max(progress.iterations_total, 1)}">{its}</progress></p>{tuning}</section>'
    )


def _bounds(bounds: Mapping[str, Any] | None) -> str:
    if not bounds:
        text = "Not known yet: the LR range test has not ended (or every arm gives its own)."
    else:
        text = f"base_lr <b>{bounds['base_lr']:.3g}</b>, max_lr <b>{bounds['max_lr']:.3g}</b>" + (
            f" ({escape(str(bounds['reason']))})" if bounds.get("reason") else ""
        )
    return f'<section id="bounds"><h2>Bounds</h2><p>{text}</p></section>'


def _best(best: Mapping[str, float]) -> str:
    if not best:
        return (
            '<section id="best-section"><h2>Best accuracy so far</h2>'
            "<p>No evaluation yet.</p></section>"
        )
    rows = "".join(
        f'<tr><th scope="row">{escape(arm)}</th><td>{format_percent(accuracy)}</td></tr>'
        for arm, accuracy in sorted(best.items())
    )
    return (
        '<section id="best-section"><h2>Best accuracy so far</h2><div class="scroll">'
        '<table id="best"><tr><th scope="col">arm</th><th scope="col">best held-out accuracy '
        f"(any seed, any evaluation)</th></tr>{rows}</table></div></section>"
    )


def _optuna(report: Mapping[str, Any]) -> str:
    parts = [
        f"<h3>{escape(row['arm'])}</h3>"
        + (
            optuna_hint(row["tuning"]["optuna_study"])
            if row["tuning"]["optuna_study"]
            else "<p>The search has not started yet.</p>"
        )
        for row in report["arms"]
        if row["tuning"] is not None
    ]
    if not parts:
        return ""
    return '<section id="optuna"><h2>Tuning searches</h2>' + "".join(parts) + "</section>"


def render_study_html(
    study: StudyRecord,
    progress: Progress,
    results: Mapping[str, Any],
    report: Mapping[str, Any],
    *,
    links: Mapping[str, str],
    ray_job_url: str | None,
    cancel_action: str | None,
) -> str:
    """The study's page. `links`: label -> URL (report, JSON, CSV, ...); `ray_job_url`: the
    study's Ray job in the dashboard, once submitted; `cancel_action`: where the cancel form
    posts (None: no form, the study has ended)."""
    results = with_arms(results)
    running = cancel_action is not None
    error = (
        f'<div id="error" class="banner error">Error: {escape(study.error)}</div>'
        if study.error
        else ""
    )
    stopping = " (cancel requested)" if study.cancel_requested else ""
    cancel = (
        f'<form method="post" action="{escape(cancel_action)}" id="cancel">'
        '<button type="submit">Cancel this study&hellip;</button></form>'
        if cancel_action is not None
        else ""
    )
    link_items = "".join(
        f'<li><a href="{escape(url)}">{escape(label)}</a></li>' for label, url in links.items()
    )
    ray = (
        f'<li><a id="ray-job" href="{escape(ray_job_url)}">the Ray job '
        f"{escape(study.submission_id or '')} in the Ray dashboard</a></li>"
        if ray_job_url
        else '<li id="ray-job">No Ray job yet: the study has not been started.</li>'
    )
    refresh = (
        f'<p class="note">This page reloads itself every {REFRESH_S} s while the study runs.</p>'
        if running
        else ""
    )
    body = f"""<header class="bar"><h1>{escape(study.name)}</h1>
<p><a href="/">All studies</a></p></header>
<p class="meta">study {escape(study.id)}</p>{error}
<p>Status: <b id="status">{escape(study.status)}</b>{stopping}; phase:
<b id="phase">{escape(study.phase)}</b>.</p>{cancel}{refresh}
{_progress(progress)}
{_bounds(study.bounds)}
{_best(progress.best_accuracy)}
<section id="plots"><h2>Plots so far</h2>
<figure class="plot" id="plot-accuracy">{accuracy_figure(results, report)}
<figcaption>Held-out accuracy against iteration: mean over seeds (line) and min-max band.
</figcaption></figure>
<figure class="plot" id="plot-schedule">{schedule_figure(results)}
<figcaption>Learning rate against iteration for every arm.</figcaption></figure>
<p>The plotted points, one row per evaluation:
<a href="{escape(links["CSV"])}">CSV</a> (the numbers the report is built from).</p></section>
<section><h2>More</h2><ul id="links">{link_items}{ray}</ul></section>
{_optuna(report)}"""
    return page(f"{study.name}: {study.status}", body, refresh_s=REFRESH_S if running else None)
