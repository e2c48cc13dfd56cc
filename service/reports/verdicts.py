"""The report's prose: the numbers of `service.reports.comparison` turned into sentences.

Nothing here computes a figure; each function phrases figures it is given, so that a test can
hold a sentence against numbers worked out by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from workers.states import RAN_TRIAL_STATES

CLR_VS_TUNED = "CLR with one range test vs tuned fixed LR"
SIGNIFICANCE = 0.05
CROSSING_RULE = (
    "Iterations to target: the first evaluation at which held-out accuracy is at or above the "
    "target and still is at the next evaluation (a crossing at the last evaluation counts), "
    "interpolated linearly between that evaluation and the one before it; averaged over the "
    "seeds that reached the target. Speedup = the baseline's iterations to target / the arm's. "
    "Time to target (AlgoPerf's rule): the training seconds at that crossing, evaluations "
    "excluded; per arm the median over seeds, a seed that never reaches the target counting "
    "as infinity, with a percentile bootstrap 95% interval of the median (unbounded above "
    "when too many seeds missed). The same median is given for iterations to target."
)


def format_percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def format_iterations(value: float) -> str:
    return f"{round(value):,}"


def format_seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:,.1f} s"


def format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def welch_sentence(
    arm: str, base: str, n: int, base_n: int, p: float | None, difference: float | None
) -> str:
    """Welch's test of `arm` against `base` in words: `n` and `base_n` finished seeds, its
    p-value, and `difference`, the arm's mean final accuracy minus the base's."""
    if n < 2 or base_n < 2:
        return (
            f"not tested: needs 2 or more finished seeds in both {arm} and {base} "
            f"(has {n} and {base_n})"
        )
    if p is None:
        return "identical results: every seed of both arms ended at the same accuracy"
    if p < SIGNIFICANCE:
        direction = "higher" if difference is not None and difference > 0 else "lower"
        return f"significantly {direction} at 5% ({format_p(p)})"
    return f"no significant difference at 5% ({format_p(p)})"


def target_description(source: str, baseline: str | None, accuracy: float | None) -> str:
    """Where the target accuracy comes from: the baseline's final mean, or the spec."""
    if source == "spec":
        return "the spec's target_accuracy"
    if accuracy is None:
        return f"the baseline ({baseline})'s final mean accuracy, not known yet"
    return f"the baseline ({baseline})'s final mean accuracy"


def cost_note(range_test: int, shared_by: Sequence[str]) -> str:
    """How the study's arms are charged for its range test of `range_test` iterations."""
    shown = format_iterations(range_test)
    if len(shared_by) > 1:
        note = (
            f"The range test ran once ({shown} iterations) and is shared by {len(shared_by)} "
            f"arms ({', '.join(shared_by)}); each is charged it in full, as each would need it "
            "alone."
        )
    elif shared_by:
        note = (
            f"The range test ({shown} iterations) is charged to {shared_by[0]}, the only arm "
            "that takes its bounds from it."
        )
    elif range_test:
        note = f"The range test ran ({shown} iterations) but no arm takes its bounds from it."
    else:
        note = "No range test was run: no arm is charged for one."
    return (
        note + " Tuning counts every tuning trial's iterations, stopped early and interrupted ones "
        "included; trials count every seed's final trial."
    )


def verdicts(report: Mapping[str, Any], match: Mapping[str, Any] | None) -> list[str]:
    """The report's verdict lines: progress, iterations to target against the baseline, CLR
    against tuned fixed LR (`match`: comparison's `clr_vs_tuned`), Welch's tests, failures."""
    rows: Sequence[Mapping[str, Any]] = report["arms"]
    baseline = report["baseline"]
    trials = report["trials"]
    lines = []
    if report["partial"]:
        lines.append(
            f"Partial report: the study is {report['study']['status']}; "
            f"{trials['finished']} of {trials['total']} trials have finished."
        )
    if trials["finished"] == 0:
        lines.append("No trial has finished: there is nothing to compare yet.")
        return lines
    target = report["target"]["accuracy"]
    if target is None:
        lines.append(f"No target accuracy yet: the baseline ({baseline}) has no finished seed.")
    base = next(r for r in rows if r["arm"] == baseline)
    # Each arm's line on iterations, then its line on time.
    reach, time = _reach_lines(report, rows, base), _time_lines(report, rows, base)
    lines += [
        line for row in rows for line in (reach.get(row["arm"]), time.get(row["arm"])) if line
    ]
    if match is not None:
        lines += _clr_vs_tuned(report, match)
    for row in rows:
        welch = row["welch"]
        if welch is not None and welch["p_value"] is not None:
            lines.append(
                f"Final accuracy of {row['arm']}, {format_percent(row['final_accuracy']['mean'])}"
                f" vs {format_percent(base['final_accuracy']['mean'])} for {baseline}: "
                f"{welch['sentence']}."
            )
    for row in rows:
        problems = [
            f"{row[state]} of {sum(row['trials'].values())} trials {state}"
            for state in RAN_TRIAL_STATES
            if state != "completed"
            if row[state]
        ]
        if problems:
            lines.append(f"{row['arm']}: {' and '.join(problems)}.")
    return lines


def _reach_lines(
    report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], base: Mapping[str, Any]
) -> dict[str, str]:
    """Per arm: when it reached the target, against the baseline; or that it never did."""
    target = report["target"]["accuracy"]
    baseline = base["arm"]
    base_its = base["iterations_to_target"]["mean"]
    what = (
        "the baseline's final accuracy"
        if report["target"]["source"] == "baseline"
        else "the target"
    )
    lines: dict[str, str] = {}
    for row in rows:
        reach = row["iterations_to_target"]
        if target is None or row["finished"] == 0:
            continue
        seeds = f"{reach['reached']} of {reach['of']} seeds"
        if reach["mean"] is None:
            final = row["final_accuracy"]["mean"]
            ended = f"; final accuracy {format_percent(final)}" if final is not None else ""
            lines[row["arm"]] = (
                f"{row['arm']} never reached {what} ({format_percent(target)}): {seeds}{ended}."
            )
            continue
        if row["arm"] == baseline:
            continue
        seeds = f" ({seeds})" if reach["reached"] < reach["of"] else ""
        head = (
            f"{row['arm']} reached {what} ({format_percent(target)}) "
            f"at {format_iterations(reach['mean'])} iterations{seeds}"
        )
        if base_its is None:
            lines[row["arm"]] = f"{head}; the baseline {baseline} never did."
            continue
        speedup = row["speedup"]
        if speedup is None:
            # One of the two met the target before training: no ratio means anything.
            lines[row["arm"]] = (
                f"{head}; {baseline} at {format_iterations(base_its)}: no speedup is defined "
                "when the target is met at iteration 0."
            )
            continue
        if round(speedup, 1) == 1.0:
            compared = "about as many as"
        elif speedup > 1:
            compared = f"{speedup:.1f}x fewer than"
        else:
            compared = f"{1 / speedup:.1f}x more than"
        base_reach = base["iterations_to_target"]
        base_seeds = (
            f"; {base_reach['reached']} of {base_reach['of']} seeds"
            if base_reach["reached"] < base_reach["of"]
            else ""
        )
        lines[row["arm"]] = (
            f"{head}, {compared} {baseline} ({format_iterations(base_its)}{base_seeds})."
        )
    return lines


def _interval(time: Mapping[str, Any]) -> str:
    """'; 95% CI 1.20 s to 1.45 s', or with no upper end when too many seeds missed."""
    if time["ci_low"] is None and time["ci_high"] is None:
        return ""  # a single seed: no interval
    low = format_seconds(time["ci_low"])
    if time["ci_high"] is None:
        return f"; 95% CI from {low}, unbounded above"
    return f"; 95% CI {low} to {format_seconds(time['ci_high'])}"


def _time_lines(
    report: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], base: Mapping[str, Any]
) -> dict[str, str]:
    """Per arm: its median training time to the target against the baseline's, with what
    one training iteration cost (the line on time beside the one on iterations)."""
    if report["target"]["accuracy"] is None:
        return {}
    baseline = base["arm"]
    base_median = base["time_to_target"]["median"]
    lines: dict[str, str] = {}
    for row in rows:
        time = row["time_to_target"]
        if row["finished"] == 0:
            continue
        per = row["seconds_per_iteration"]
        cost = f"; {1000 * per:.2f} ms per iteration" if per is not None else ""
        seeds = f"{time['reached']} of {time['of']} seeds"
        if time["median"] is None:
            lines[row["arm"]] = (
                f"{row['arm']}: median training time to target unbounded ({seeds} reached "
                f"it, a seed that misses counting as infinity{cost})."
            )
            continue
        head = (
            f"{row['arm']} took a median {format_seconds(time['median'])} of training to "
            "reach the target"
        )
        speedup = time["speedup"]
        if row["arm"] == baseline:
            compared = ""
        elif base_median is None:
            compared = f"; {baseline}'s median is unbounded"
        elif speedup is None:
            compared = f"; against {baseline}, no ratio: the target was met at time 0"
        elif round(speedup, 1) == 1.0:
            compared = f", about as fast as {baseline} ({format_seconds(base_median)})"
        else:
            ratio = f"{speedup:.1f}x faster" if speedup > 1 else f"{1 / speedup:.1f}x slower"
            compared = f", {ratio} than {baseline} ({format_seconds(base_median)})"
        lines[row["arm"]] = f"{head}{compared} ({seeds}{_interval(time)}{cost})."
    return lines


def _reach(row: Mapping[str, Any]) -> str:
    reach = row["iterations_to_target"]
    if reach["of"] == 0:
        return "no finished seed"
    seeds = f" ({reach['reached']} of {reach['of']} seeds)"
    if reach["mean"] is None:
        return f"never{seeds}"
    return format_iterations(reach["mean"]) + (seeds if reach["reached"] < reach["of"] else "")


def cost_text(row: Mapping[str, Any], shared_by: int) -> str:
    """'range test 300 + tuning 5,120 (12 trials, 7 stopped early) + trials 2,016 = 7,436'."""
    cost, tuning = row["cost"], row["tuning"]
    parts = []
    if cost["range_test"]:
        shared = f" (shared by {shared_by} arms)" if shared_by > 1 else ""
        parts.append(f"range test {format_iterations(cost['range_test'])}{shared}")
    if tuning is not None:
        planned = tuning["trials_planned"]
        ended = (
            f"{tuning['ended']} of {planned} trials"
            if isinstance(planned, int) and tuning["ended"] < planned
            else f"{tuning['ended']} trials"
        )
        details = [ended]
        if cost["stopped_early"]:
            details.append(f"{cost['stopped_early']} stopped early")
        if tuning["states"]["interrupted"]:
            details.append(f"{tuning['states']['interrupted']} interrupted and rerun")
        parts.append(f"tuning {format_iterations(cost['tuning'])} ({', '.join(details)})")
    parts.append(f"trials {format_iterations(cost['trials'])}")
    return f"{' + '.join(parts)} = {format_iterations(cost['total'])} iterations"


def compute_text(clr: str, fixed: str, compute: Mapping[str, Any]) -> str:
    """'sgd-triangular2 used 3.1x less compute', from comparison's compute ratio: the fixed
    arm's iterations over the CLR arm's, on totals or per trained model (`per_seed`)."""
    ratio = compute["ratio"]
    if round(ratio, 1) == 1.0:
        compared = f"{clr} and {fixed} used about the same compute"
    elif ratio > 1:
        compared = f"{clr} used {ratio:.1f}x less compute"
    else:
        compared = f"{clr} used {1 / ratio:.1f}x more compute"
    if compute["per_seed"]:
        compared += (
            f" per trained model (they trained {compute['seeds'][0]} and {compute['seeds'][1]} "
            f"seeds: {format_iterations(compute['clr'])} against "
            f"{format_iterations(compute['fixed'])} iterations each)"
        )
    return compared


def _choice(candidates: int, ranked: int) -> str:
    """Why this CLR arm: of `candidates` CLR arms with range-test bounds, `ranked` finished."""
    if candidates == 1:
        return "the only CLR arm with range-test bounds"
    if ranked == candidates:
        return f"best of {candidates} CLR arms by final accuracy"
    if ranked:
        missing = candidates - ranked
        return (
            f"best of {ranked} CLR arms by final accuracy; "
            f"{missing} more {'has' if missing == 1 else 'have'} no finished seed"
        )
    return f"first of {candidates} CLR arms, none with a finished seed"


def _clr_vs_tuned(report: Mapping[str, Any], match: Mapping[str, Any]) -> list[str]:
    """One line per tuned fixed-LR arm against the chosen CLR arm (see comparison)."""
    clr = match["clr"]
    choice = _choice(match["candidates"], match["ranked"])
    partial = report["partial"]
    so_far = " so far" if partial else ""
    shared_by = len(report["cost"]["range_test_shared_by"])
    target = report["target"]["accuracy"]
    lines = []
    for pair in match["pairs"]:
        fixed, welch = pair["fixed"], pair["welch"]
        a, b = clr["final_accuracy"]["mean"], fixed["final_accuracy"]["mean"]
        head = f"{CLR_VS_TUNED}: {clr['arm']} ({choice})"
        compared = welch is not None
        if compared:
            text = (
                f"{head} ended at {format_percent(a)} against {format_percent(b)} for "
                f"{fixed['arm']}: {welch['sentence']}."
            )
            if target is not None:
                text += (
                    f" Iterations to the target ({format_percent(target)}): {_reach(clr)} "
                    f"against {_reach(fixed)}."
                )
        else:
            lacking = [r["arm"] for r in (clr, fixed) if r["final_accuracy"]["mean"] is None]
            has = "has" if len(lacking) == 1 else "have"
            text = (
                f"{head} against {fixed['arm']}: not compared{' yet' if partial else ''}, "
                f"{' and '.join(lacking)} {has} no finished seed."
            )
        costs = f"{cost_text(clr, shared_by)} against {cost_text(fixed, shared_by)}"
        text += f" Compute{so_far}: {costs}"
        if compared and not partial and pair["compute"] is not None:
            text += f"; {compute_text(clr['arm'], fixed['arm'], pair['compute'])}."
        elif compared and partial:
            text += "; no compute ratio until the study has ended."
        else:
            text += "."
        if clr["optimizer"] != fixed["optimizer"]:
            text += (
                f" The two arms use different optimizers ({clr['optimizer']} and "
                f"{fixed['optimizer']})."
            )
        lines.append(text)
    return lines
