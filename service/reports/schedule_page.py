"""A schedule's page: its settings, a plot of final accuracy over its runs, and its history
table, with regressions in red. Stable ids: `history` (the table), `regression` (the banner
when the latest run regressed); a flagged arm's row has `class="regression"`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

from service.reports.figures import arm_colors, new_figure, place_legend, to_svg
from service.reports.page import page
from service.reports.regressions import latest_comparison

if TYPE_CHECKING:
    from service.store import ScheduleRecord

HEAD = (
    "due (UTC)", "run", "study", "status", "arm", "final accuracy", "iterations to target",
    "speedup", "regression",
)  # fmt: skip


def history_figure(entries: Sequence[Mapping[str, Any]]) -> str:
    """Final accuracy per arm over the runs' due times (regressions circled red), as SVG."""
    ordered = [e for e in reversed(entries) if e["arms"]]
    arms = list(dict.fromkeys(a["arm"] for e in ordered for a in e["arms"]))
    colors = arm_colors(arms)
    figure, (ax,) = new_figure()
    for arm in arms:
        points = [
            (datetime.fromisoformat(e["due_at"]), a["final_accuracy"])
            for e in ordered
            for a in e["arms"]
            if a["arm"] == arm and a["final_accuracy"] is not None
        ]
        if points:
            times, values = zip(*points, strict=True)
            # matplotlib plots datetimes through its date converter; the stubs say floats.
            ax.plot(
                list(times),
                values,
                color=colors[arm],
                marker="o",
                ms=3,
                lw=1.2,
                label=arm,
            )
    for entry in ordered:
        for delta in (entry["comparison"] or {}).get("arms", ()):
            if delta["regression"] and delta["final_accuracy"] is not None:
                when = datetime.fromisoformat(entry["due_at"])
                ax.plot(
                    [when],  # type: ignore[arg-type]
                    [delta["final_accuracy"]],
                    "o",
                    ms=9,
                    mfc="none",
                    mec="#d62728",
                )
    ax.set_title("final accuracy per arm (mean over seeds); red circles: regressions")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    figure.autofmt_xdate()
    if arms:
        place_legend(figure)
    else:
        ax.text(0.5, 0.5, "no finished run yet", ha="center", transform=ax.transAxes)
    return to_svg(figure)


def _cell(value: float | None, pattern: str) -> str:
    return "&ndash;" if value is None else pattern.format(value)


def render_schedule_html(schedule: ScheduleRecord, entries: Sequence[Mapping[str, Any]]) -> str:
    """The schedule's page from its history entries (`service.scheduling.history`)."""
    rows = []
    for entry in entries:
        comparison = entry["comparison"] or {}
        flagged = {d["arm"]: d for d in comparison.get("arms", ()) if d["regression"]}
        status = entry["study_status"] or ""
        state = escape(entry["state"] + (f": {entry['reason']}" if entry["reason"] else ""))
        for figures in entry["arms"] or [None]:
            arm = figures["arm"] if figures else None
            delta = flagged.get(arm) if arm else None
            rows.append(
                f'<tr class="{"regression" if delta else ""}">'
                f"<td>{escape(entry['due_at'])}</td><td>{state}</td>"
                f"<td>{escape(entry['study_id'] or '')}</td><td>{escape(status)}</td>"
                f"<td>{escape(arm or '')}</td>"
                f"<td>{_cell(figures and figures['final_accuracy'], '{:.1%}')}</td>"
                f"<td>{_cell(figures and figures['iterations_to_target'], '{:,.0f}')}</td>"
                f"<td>{_cell(figures and figures['speedup'], '{:.2f}x')}</td>"
                f"<td>{escape('; '.join(delta['reasons'])) if delta else ''}</td></tr>"
            )
    latest = latest_comparison(entries)
    banner = ""
    if latest is not None and latest["regression"]:
        arms = ", ".join(d["arm"] for d in latest["arms"] if d["regression"])
        banner = (
            f'<p id="regression" class="banner error">Regression in the latest run '
            f"({escape(latest['due_at'])}): {escape(arms)}</p>"
        )
    enabled = "enabled" if schedule.enabled else "disabled"
    return page(
        f"schedule {schedule.name}",
        f"<h1>{escape(schedule.name)}</h1>"
        f'<p class="meta"><code>{escape(schedule.cron)}</code> in {escape(schedule.timezone)}, '
        f"{enabled}; next run {escape(schedule.next_run_at.isoformat())}</p>{banner}"
        f'<figure class="plot">{history_figure(entries)}</figure>'
        f'<table id="history"><thead><tr>{"".join(f"<th>{h}</th>" for h in HEAD)}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>",
    )
