"""The report as one self-contained HTML page: verdicts, tables and inline SVG plots.

Nothing is fetched: no external CSS, JS or fonts, so the page works offline and can be mailed.
Stable ids (`summary`, `verdicts`, `partial`, `tuning`, `tuning-0`, ...) and `class="plot"` on
each figure's container are part of the contract: the browser test and users' scripts select
by them. Each tuned arm's part of the `tuning` section is a `div.tuned-arm` whose `data-arm` is
the arm's name; its table of tuning trials is `tuning-<i>` (i: the tuned arms' order) and the
best trial's row has `class="best"`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape
from typing import Any

from service.reports.comparison import build_report, with_arms
from service.reports.figures import (
    accuracy_figure,
    arm_colors,
    range_test_figure,
    schedule_figure,
    step_size_figure,
)
from service.reports.page import page
from service.reports.verdicts import format_iterations, format_p, format_percent, format_seconds

_MISSING = "&ndash;"
_MARKS = {"range test": "&dagger;", "tuned": "&Dagger;"}


def _e(value: Any) -> str:
    return escape(str(value))


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _e(value)


def _percent(value: float | None) -> str:
    return format_percent(value) if value is not None else _MISSING


def _cell(tag: str, content: str, text: bool, attrs: str = "") -> str:
    if text:
        attrs += ' class="text"'
    return f"<{tag}{attrs}>{content}</{tag}>"


def _table(
    table_id: str,
    head: Iterable[str],
    rows: Iterable[Iterable[str]],
    *,
    groups: Sequence[tuple[str, int]] = (),
    text: Iterable[int] = (0,),
    row_classes: Sequence[str] = (),
) -> str:
    """A table of already-escaped cells; the `text` columns (the first) are text, the others
    numbers. `groups`: (label, width) headers spanning the last columns over their own;
    `row_classes`: a class per body row ("" for none)."""
    heads, texts = list(head), set(text)
    first = len(heads) - sum(width for _, width in groups)
    if groups:
        top = "".join(
            _cell("th", h, i in texts, ' rowspan="2"') for i, h in enumerate(heads[:first])
        )
        top += "".join(f'<th colspan="{w}" class="group">{label}</th>' for label, w in groups)
        bottom = "".join(_cell("th", h, i in texts) for i, h in enumerate(heads) if i >= first)
        header = f"<tr>{top}</tr><tr>{bottom}</tr>"
    else:
        header = "<tr>" + "".join(_cell("th", h, i in texts) for i, h in enumerate(heads)) + "</tr>"
    body = "".join(
        (f'<tr class="{row_classes[r]}">' if r < len(row_classes) and row_classes[r] else "<tr>")
        + "".join(_cell("td", c, i in texts) for i, c in enumerate(row))
        + "</tr>"
        for r, row in enumerate(rows)
    )
    return f'<table id="{table_id}"><thead>{header}</thead><tbody>{body}</tbody></table>'


def _arm_cell(name: str, color: str, baseline: str | None) -> str:
    tag = " (baseline)" if name == baseline else ""
    return f'<span class="swatch" style="background:{color}"></span>{_e(name)}{tag}'


def _median_cell(figure: Mapping[str, Any], form: Callable[[float], str]) -> str:
    """'1.20 s [1.10 s, 1.40 s]': AlgoPerf's median, a miss counting as infinity ('∞')."""
    if figure["median"] is None:
        return "∞" if figure["unbounded"] else _MISSING
    if figure["ci_low"] is None:
        return form(figure["median"])
    high = form(figure["ci_high"]) if figure["ci_high"] is not None else "∞"
    return f"{form(figure['median'])} [{form(figure['ci_low'])}, {high}]"


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
        time = row["time_to_target"]
        params = ", ".join(
            f"{_e(p['name'])}={_num(p['value'])}{_MARKS.get(p['source'], '')}"
            for p in row["params"]
        )
        cost = row["cost"]
        options = ", ".join(f"{_e(k)}={_num(v)}" for k, v in row["optimizer_options"].items())
        rows.append(
            [
                _arm_cell(row["arm"], colors[row["arm"]], report["baseline"]),
                _e(row["optimizer"]) + (f" ({options})" if options else ""),
                f"{_e(row['policy'])} ({params})" if params else _e(row["policy"]),
                final_cell,
                _percent(row["best_accuracy"]),
                reach_cell,
                _median_cell(reach, format_iterations),
                f"{row['speedup']:.2f}x" if row["speedup"] is not None else _MISSING,
                _median_cell(time, format_seconds) + f" ({time['reached']}/{time['of']})",
                f"{time['speedup']:.2f}x" if time["speedup"] is not None else _MISSING,
                (
                    f"{1000 * row['seconds_per_iteration']:.2f} ms"
                    if row["seconds_per_iteration"] is not None
                    else _MISSING
                ),
                f"{row['wall_s_mean']:.1f} s" if row["wall_s_mean"] is not None else _MISSING,
                f"{row['diverged']} / {row['failed']}",
                format_iterations(cost["range_test"]),
                format_iterations(cost["tuning"]) if row["tuning"] is not None else _MISSING,
                format_iterations(cost["trials"]),
                f"<b>{format_iterations(cost['total'])}</b>",
            ]
        )
    head = [
        "arm",
        "optimizer",
        "policy (params)",
        "final accuracy, mean [95% CI]",
        "best accuracy",
        "iterations to target, mean (seeds reached)",
        "iterations to target, median [95% CI]",
        "speedup vs baseline",
        "training time to target, median [95% CI] (seeds reached)",
        "time speedup vs baseline",
        "training time per iteration",
        "wall time per trial",
        "diverged / failed",
        "range test",
        "tuning",
        "trials",
        "total",
    ]
    return _table("summary", head, rows, groups=[("cost (training iterations)", 4)])


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


def _search_space(space: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{_e(name)} in [{_num(r.get('low'))}, {_num(r.get('high'))}]"
        + (" (log scale)" if r.get("log") else "")
        for name, r in space.items()
        if isinstance(r, Mapping)
    )


def optuna_hint(optuna_study: str) -> str:
    """How to open a tuned arm's Optuna search in optuna-dashboard (a paragraph)."""
    return (
        f"<p>Optuna study <code>{_e(optuna_study)}</code>: "
        "<code>optuna-dashboard DATABASE_URL</code> (the service's database) or "
        "<code>optuna-dashboard sqlite:///OUT/optuna.db</code> (beside a "
        "<code>clrstudy run</code>'s results) shows every trial's curve.</p>"
    )


def _tuning(report: Mapping[str, Any], colors: Mapping[str, str]) -> str:
    """One part per tuned arm: what its Optuna search found, and every tuning trial."""
    parts = []
    tuned = [row for row in report["arms"] if row["tuning"] is not None]
    for index, row in enumerate(tuned):
        tuning, cost = row["tuning"], row["cost"]
        best = tuning["best"]
        planned = tuning["trials_planned"]
        ended = (
            f"{tuning['ended']} of {planned}"
            if isinstance(planned, int) and tuning["ended"] < planned
            else str(tuning["ended"])
        )
        states = tuning["states"]
        counts = ", ".join(
            f"{n} {'stopped early by ASHA' if state == 'stopped' else _e(state)}"
            for state, n in states.items()
            if n and state != "completed" and state != "interrupted"  # interrupted: below
        )
        interrupted = (
            f"; {states['interrupted']} more {'was' if states['interrupted'] == 1 else 'were'} "
            "interrupted by a restart and replaced"
            if states.get("interrupted")
            else ""
        )
        if best is not None:
            chosen = ", ".join(f"{_e(k)}={_num(v)}" for k, v in best["params"].items())
            value = (
                f" (validation accuracy {_percent(best['value'])})"
                if best["value"] is not None
                else ""
            )
            found = f"Best: trial {_e(best['number'])}, {chosen}{value}; the final trials use it."
        else:
            found = "No best trial yet: the search has not ended."
        space = _search_space(tuning["space"])
        max_its = tuning["max_iterations"]
        budget = f" of at most {format_iterations(max_its)} iterations" if max_its else ""
        text = (
            f"<p>{ended} tuning trials{budget} ended"
            + (f" ({counts}; the others ran to the end)" if counts else "")
            + f"{interrupted}. They trained {format_iterations(cost['tuning'])} iterations "
            "in all, every one counted in the arm's cost."
            + (f" Searched: {space}." if space else "")
            + f" {found}</p>"
            + (
                optuna_hint(tuning["optuna_study"])
                if tuning["optuna_study"]
                else "<p>The search has not started yet.</p>"
            )
        )
        rows = [
            [
                f"{_e(t['number'])}{' (best)' if t['best'] else ''}",
                ", ".join(f"{_e(k)}={_num(v)}" for k, v in t["params"].items()) or _MISSING,
                _e(t["state"]) + (f": {_e(t['error'])}" if t["error"] else ""),
                format_iterations(t["iterations_done"]),
                _percent(t["value"]),
            ]
            for t in tuning["trials"]
        ]
        table = _table(
            f"tuning-{index}",
            ["trial", "params", "state", "iterations", "validation accuracy"],
            rows,
            text=(0, 1, 2),
            row_classes=["best" if t["best"] else "" for t in tuning["trials"]],
        )
        parts.append(
            f'<div class="tuned-arm" data-arm="{_e(row["arm"])}"><h3>'
            f"{_arm_cell(row['arm'], colors[row['arm']], report['baseline'])}</h3>"
            f"{text}{table}</div>"
        )
    if not parts:
        return ""
    return (
        '<section id="tuning"><h2>Tuning</h2><p class="note">A tuned arm\'s parameters were '
        "chosen by an Optuna search (through Ray Tune, with ASHA stopping unpromising trials "
        "early) on a validation split of the training set; the test set never chose. Its "
        "cost counts every tuning trial's iterations, stopped early and interrupted ones "
        "included.</p>" + "".join(parts) + "</section>"
    )


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
    step_sizes = step_size_figure(results)
    if step_sizes is not None:
        plots += _figure(
            "plot-step-size",
            step_sizes,
            "Step size d estimated by Prodigy, D-Adaptation or DoG at each evaluation; the "
            "effective learning rate is d times the policy's lr.",
        )
    body = f"""<header><h1>{_e(title)}</h1><p class="meta">{meta}</p></header>
{banners}
<section id="verdicts"><h2>Verdict</h2><ul>{verdicts}</ul></section>
<section id="summary-section"><h2>Summary</h2>{_summary(report, colors)}
<p class="note">&dagger; from the LR range test; &Dagger; chosen by tuning; other parameters
as given. CI: Student t over seeds. Failed and cancelled trials are excluded from the figures.
Cost: training iterations spent for the arm: its range test, its tuning trials and its final
trials (every seed). {_e(report["cost"]["note"])}</p></section>
<section id="target"><h2>Target and crossing rule</h2>
<p>{target_text}{_e(target["description"])}.</p><p>{_e(target["rule"])}</p></section>
<section id="budgets"><h2>Accuracy at fractions of the baseline's iterations</h2>
{_budgets(report, colors)}
<p class="note">Mean over finished seeds, interpolated between evaluations.</p></section>
<section id="tests"><h2>Final accuracy against the baseline (Welch's t-test)</h2>
{_tests(report, colors)}</section>
{_tuning(report, colors)}
<section id="plots"><h2>Plots</h2>{plots}</section>
<section id="range-test"><h2>LR range test</h2>{range_section}</section>"""
    return page(title, body, body_class="report")
