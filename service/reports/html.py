"""The report as one self-contained HTML page: verdicts, tables and inline SVG plots.

Nothing is fetched: no external CSS, JS or fonts, so the page works offline and can be mailed.
Stable ids (`summary`, `verdicts`, `partial`, ...) and `class="plot"` on each figure's
container are part of the contract: the browser test and users' scripts select by them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from service.reports.comparison import (
    build_report,
    format_iterations,
    format_p,
    format_percent,
    with_arms,
)
from service.reports.figures import (
    accuracy_figure,
    arm_colors,
    range_test_figure,
    schedule_figure,
)

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1100px; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.meta, .note, figcaption { color: #555; font-size: 0.9em; }
.banner { padding: 0.6em 1em; border-radius: 4px; background: #fff4d6; border: 1px solid #e0b84c; }
.banner.error { background: #fde2e2; border-color: #d66; }
#verdicts li { margin: 0.25em 0; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px;
          margin-right: 0.4em; vertical-align: -0.05em; }
figure.plot { margin: 1em 0; } figure.plot svg { max-width: 100%; height: auto; }
"""
_MISSING = "&ndash;"


def _e(value: Any) -> str:
    return escape(str(value))


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _e(value)


def _percent(value: float | None) -> str:
    return format_percent(value) if value is not None else _MISSING


def _table(table_id: str, head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table of already-escaped cells; the first column is text, the others numbers."""
    header = "".join(
        f'<th class="text">{h}</th>' if i == 0 else f"<th>{h}</th>" for i, h in enumerate(head)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="text">{c}</td>' if i == 0 else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table id="{table_id}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def _arm_cell(name: str, color: str, baseline: str | None) -> str:
    tag = " (baseline)" if name == baseline else ""
    return f'<span class="swatch" style="background:{color}"></span>{_e(name)}{tag}'


def _summary(report: Mapping[str, Any], colors: Mapping[str, str]) -> str:
    rows = []
    for row in report["arms"]:
        final = row["final_accuracy"]
        if final["mean"] is None:
            final_cell = _MISSING
        elif final["ci_low"] is None:
            final_cell = f"{format_percent(final['mean'])} (1 seed, no CI)"
        else:
            final_cell = (
                f"{format_percent(final['mean'])} "
                f"[{100 * final['ci_low']:.1f}, {100 * final['ci_high']:.1f}]"
            )
        reach = row["iterations_to_target"]
        reach_cell = (
            f"{format_iterations(reach['mean'])} ({reach['reached']}/{reach['of']})"
            if reach["mean"] is not None
            else f"never ({reach['reached']}/{reach['of']})"
        )
        params = ", ".join(
            f"{_e(p['name'])}={_num(p['value'])}{'&dagger;' if p['source'] == 'range test' else ''}"
            for p in row["params"]
        )
        options = ", ".join(f"{_e(k)}={_num(v)}" for k, v in row["optimizer_options"].items())
        rows.append(
            [
                _arm_cell(row["arm"], colors[row["arm"]], report["baseline"]),
                _e(row["optimizer"]) + (f" ({options})" if options else ""),
                f"{_e(row['policy'])} ({params})" if params else _e(row["policy"]),
                final_cell,
                _percent(row["best_accuracy"]),
                reach_cell,
                f"{row['speedup']:.2f}x" if row["speedup"] is not None else _MISSING,
                f"{row['wall_s_mean']:.1f} s" if row["wall_s_mean"] is not None else _MISSING,
                f"{row['diverged']} / {row['failed']}",
            ]
        )
    head = [
        "arm",
        "optimizer",
        "policy (params)",
        "final accuracy, mean [95% CI]",
        "best accuracy",
        "iterations to target (seeds reached)",
        "speedup vs baseline",
        "wall time per trial",
        "diverged / failed",
    ]
    return _table("summary", head, rows)


def _budgets(report: Mapping[str, Any], colors: Mapping[str, str]) -> str:
    budgets = report["budgets"]
    head = ["arm"] + [
        f"{100 * f:.0f}% ({format_iterations(i)} it.)"
        for f, i in zip(budgets["fractions"], budgets["iterations"], strict=True)
    ]
    rows = [
        [_arm_cell(row["arm"], colors[row["arm"]], report["baseline"])]
        + [_percent(cell["mean"]) for cell in row["accuracy_at_budget"]]
        for row in report["arms"]
    ]
    return _table("budget-table", head, rows)


def _tests(report: Mapping[str, Any], colors: Mapping[str, str]) -> str:
    rows = [
        [
            _arm_cell(row["arm"], colors[row["arm"]], None),
            _e(row["welch"]["against"]),
            format_p(row["welch"]["p_value"]) if row["welch"]["p_value"] is not None else _MISSING,
            _e(row["welch"]["sentence"]),
        ]
        for row in report["arms"]
        if row["welch"] is not None
    ]
    return _table("t-tests", ["arm", "against", "p-value", "result"], rows)


def _figure(figure_id: str, svg: str | None, caption: str) -> str:
    return (
        f'<figure class="plot" id="{figure_id}">{svg or ""}'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _range_test(report: Mapping[str, Any]) -> tuple[str, str]:
    """The range test's caption and its section's text (both escaped)."""
    test, bounds = report["range_test"], report["bounds"]
    if bounds:
        caption = (
            f"Suggested bounds: base_lr {bounds['base_lr']:.3g}, max_lr {bounds['max_lr']:.3g} "
            f"(method: {_e(bounds.get('method'))}). {_e(bounds.get('reason') or '')}"
        )
    else:
        caption = "No bounds were derived."
    if test is None:
        return "No range test: every arm gave its bounds.", "<p>No range test was run.</p>"
    section = (
        f"<p>Learning rate raised from {_num(test['min_lr'])} to {_num(test['max_lr'])} "
        f"({_e(test['ramp'])} ramp); stopped at iteration {_e(test['stopped_at'])} "
        f"({_e(test['stop_reason'])}).</p><p>{caption}</p>"
    )
    return caption, section


def render_html(results: Mapping[str, Any], report: Mapping[str, Any] | None = None) -> str:
    """The report page of `results`; `report` is `build_report(results)` when already built."""
    results = with_arms(results)
    report = report if report is not None else build_report(results)
    study = report["study"]
    colors = arm_colors([row["arm"] for row in report["arms"]])
    title = f"{study['name'] or study['id'] or 'study'}: learning rate policy comparison"
    meta = ", ".join(
        f"{label} {_e(study[key])}"
        for label, key in (("study", "id"), ("status", "status"), ("finished", "finished_at"))
        if study[key] is not None
    )
    banners = ""
    if report["partial"]:
        banners += (
            f'<div id="partial" class="banner">Partial report: the study is '
            f"{_e(study['status'])}; {report['trials']['finished']} of "
            f"{report['trials']['total']} trials have finished. Figures will change.</div>"
        )
    if study["error"]:
        banners += f'<div id="error" class="banner error">Error: {_e(study["error"])}</div>'
    verdicts = "".join(f"<li>{_e(line)}</li>" for line in report["verdicts"])
    target = report["target"]
    target_text = (
        f"Target accuracy: <b>{format_percent(target['accuracy'])}</b>, "
        if target["accuracy"] is not None
        else "Target accuracy: not known yet, "
    )
    range_caption, range_section = _range_test(report)
    plots = "".join(
        (
            _figure(
                "plot-accuracy",
                accuracy_figure(results, report),
                "Held-out accuracy against iteration: mean over seeds (line) and min-max band; "
                "the dashed line is the target, dotted lines each arm's iterations to target.",
            ),
            _figure(
                "plot-schedule",
                schedule_figure(results),
                "Learning rate against iteration for every arm.",
            ),
            _figure("plot-range-test", range_test_figure(results), range_caption),
        )
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<header><h1>{_e(title)}</h1><p class="meta">{meta}</p></header>
{banners}
<section id="verdicts"><h2>Verdict</h2><ul>{verdicts}</ul></section>
<section id="summary-section"><h2>Summary</h2>{_summary(report, colors)}
<p class="note">&dagger; from the LR range test; other parameters as given.
CI: Student t over seeds. Failed and cancelled trials are excluded from the figures.</p></section>
<section id="target"><h2>Target and crossing rule</h2>
<p>{target_text}{_e(target["description"])}.</p><p>{_e(target["rule"])}</p></section>
<section id="budgets"><h2>Accuracy at fractions of the baseline's iterations</h2>
{_budgets(report, colors)}
<p class="note">Mean over finished seeds, interpolated between evaluations.</p></section>
<section id="tests"><h2>Final accuracy against the baseline (Welch's t-test)</h2>
{_tests(report, colors)}</section>
<section id="plots"><h2>Plots</h2>{plots}</section>
<section id="range-test"><h2>LR range test</h2>{range_section}</section>
</body></html>
"""
