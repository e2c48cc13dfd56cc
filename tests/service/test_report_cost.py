"""What each arm cost, in training iterations, and the verdict "CLR with one range test vs tuned
fixed LR", from hand-made results documents with tuned arms (docs/results-format.md)."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser
from typing import Any

import pytest
from scipy import stats

from service.reports import build_report, render_csv, render_html
from tests.factories import report_row, results_arm, results_trial

BUDGET = 672  # iterations per trial: 16 epochs of 42
EVERY = 84  # iterations between evaluations
SEEDS = (0, 1, 2)
RANGE_TEST = 300
LABEL = "CLR with one range test vs tuned fixed LR"

# (number, lr, state, iterations_done, value) of sgd-fixed-tuned's search: ASHA (max_t 672,
# reduction factor 3) stops at rungs 74 and 224; trial 9 diverged; trial 12 was running when
# an earlier run of the study died (interrupted) and trial 13 replaced it.
TUNING_TRIALS = (
    (0, 0.01, "completed", 672, 0.952),
    (1, 0.3, "stopped", 74, 0.41),
    (2, 0.05, "completed", 672, 0.968),
    (3, 0.0005, "stopped", 74, 0.22),
    (4, 0.08, "completed", 672, 0.975),
    (5, 0.002, "stopped", 224, 0.78),
    (6, 0.12, "stopped", 224, 0.86),
    (7, 0.06, "completed", 672, 0.971),
    (8, 0.0002, "stopped", 74, 0.15),
    (9, 0.9, "diverged", 150, 0.0),
    (10, 0.04, "completed", 672, 0.965),
    (11, 0.2, "stopped", 74, 0.52),
    (12, 0.07, "interrupted", 300, None),
)
TUNING_COST = 5 * 672 + 74 + 74 + 224 + 224 + 74 + 74 + 150 + 300  # = 4,554
TRIALS_COST = len(SEEDS) * BUDGET  # = 2,016 per arm


def _curve(final: float, speed: float) -> list[float]:
    """Held-out accuracy at iterations 0, 84, ..., 672: 0.1 untrained, rising to `final`."""
    return [
        round(0.1 + (final - 0.1) * (1 - (1 - i / 8) ** speed), 4)
        for i in range(BUDGET // EVERY + 1)
    ]


def _trial(arm: str, seed: int, accuracies: list[float], state: str = "completed") -> dict:
    """A trial evaluated at iterations 0, 84, ..., 672 (16 epochs of 42)."""
    return results_trial(
        arm,
        seed,
        accuracies,
        state,
        every=EVERY,
        start=0,
        iterations=BUDGET,
        iterations_per_epoch=42,
    )


def _arm(
    policy: str, params: dict[str, Any], auto: list[str], tuned: list[str] | None = None
) -> dict:
    return results_arm(
        policy, params, auto, tuned=tuned, options={"momentum": 0.9}, iterations=BUDGET
    )


# final accuracy per seed and how fast each arm rises (a higher speed rises sooner)
FINALS = {
    "sgd-fixed": ((0.900, 0.902, 0.898), 1.5),
    "sgd-triangular": ((0.950, 0.955, 0.948), 3.0),
    "sgd-triangular2": ((0.969, 0.972, 0.966), 3.5),
    "sgd-exp_range": ((0.960, 0.962, 0.958), 3.0),
    "sgd-fixed-tuned": ((0.971, 0.968, 0.974), 2.5),
}


def _results(status: str = "succeeded") -> dict[str, Any]:
    """A finished digits study: a given-LR baseline, three CLR arms whose bounds come from one
    range test (300 iterations), and a fixed-LR arm whose lr an Optuna search chose."""
    bounds = {"base_lr": 0.02, "max_lr": 0.08, "step_size": 168}
    return {
        "format": 1,
        "study_id": "st_tuned",
        "status": status,
        "error": None,
        "spec": {"name": "digits-tuned", "baseline": "sgd-fixed", "target_accuracy": "auto"},
        "started_at": "2026-11-29T12:00:00+00:00",
        "finished_at": "2026-11-29T12:30:00+00:00",
        "wall_s": 1800.0,
        "iterations_per_epoch": 42,
        "range_test": {
            "points": [
                {
                    "iteration": i,
                    "lr": 0.001 + i * (1.0 - 0.001) / RANGE_TEST,
                    "loss": 2.3 - 0.004 * i,
                    "smoothed_loss": 2.3 - 0.004 * i,
                    "accuracy": 0.1 + 0.002 * i if i % 21 == 0 else None,
                    "eval_loss": None,
                }
                for i in range(RANGE_TEST)
            ],
            "stopped_at": RANGE_TEST,
            "stop_reason": "completed",
            "min_lr": 0.001,
            "max_lr": 1.0,
            "ramp": "linear",
            "node_id": "node-a",
        },
        "bounds": {"base_lr": 0.02, "max_lr": 0.08, "method": "accuracy", "reason": "rise"},
        "arms": {
            "sgd-fixed": _arm("fixed", {"lr": 0.01}, [], []),
            "sgd-triangular": _arm("triangular", dict(bounds), ["base_lr", "max_lr"], []),
            "sgd-triangular2": _arm("triangular2", dict(bounds), ["base_lr", "max_lr"], []),
            "sgd-exp_range": _arm(
                "exp_range", {**bounds, "gamma": 0.999}, ["base_lr", "max_lr"], []
            ),
            "sgd-fixed-tuned": _arm("fixed", {"lr": 0.08}, [], ["lr"]),
        },
        "tuning": {
            "sgd-fixed-tuned": {
                "optuna_study": "clrstudy-st_tuned/sgd-fixed-tuned",
                "trials_planned": 12,
                "max_iterations": BUDGET,
                "space": {"lr": {"type": "float", "low": 0.0001, "high": 1.0, "log": True}},
                "trials": [
                    {
                        "number": number,
                        "params": {"lr": lr},
                        "state": state,
                        "iterations_done": done,
                        "value": value,
                        "wall_s": done / 30,
                        "error": None,
                        "node_id": "node-b",
                    }
                    # stored out of order: the report sorts them by number
                    for number, lr, state, done, value in reversed(TUNING_TRIALS)
                ],
                "best": {"number": 4, "params": {"lr": 0.08}, "value": 0.975},
            }
        },
        "trials": [
            _trial(arm, seed, _curve(finals[seed], speed))
            for arm, (finals, speed) in FINALS.items()
            for seed in SEEDS
        ],
    }


def _clr_lines(report: dict[str, Any]) -> list[str]:
    return [v for v in report["verdicts"] if v.startswith(LABEL)]


def _p(arm: str, other: str) -> str:
    p = stats.ttest_ind(FINALS[arm][0], FINALS[other][0], equal_var=False).pvalue
    return f"p = {p:.3f}"


# --- cost ---------------------------------------------------------------------------------


def test_each_arm_costs_its_range_test_tuning_and_trials() -> None:
    report = build_report(_results())
    costs = {row["arm"]: row["cost"] for row in report["arms"]}
    assert costs["sgd-fixed"] == {
        "range_test": 0,
        "tuning": 0,
        "trials": 2016,
        "total": 2016,
        "tuning_trials": 0,
        "stopped_early": 0,
        "seeds_ran": 3,
        "per_seed_total": 672,
    }
    # every arm with an "auto" bound is charged the whole range test
    for clr in ("sgd-triangular", "sgd-triangular2", "sgd-exp_range"):
        assert costs[clr]["range_test"] == 300
        assert costs[clr]["total"] == 300 + 2016
        assert costs[clr]["per_seed_total"] == 300 + 672
    # stopped early, diverged and interrupted tuning trials all count: they were spent
    assert TUNING_COST == 4554
    assert costs["sgd-fixed-tuned"] == {
        "range_test": 0,
        "tuning": 4554,
        "trials": 2016,
        "total": 4554 + 2016,
        "tuning_trials": 13,
        "stopped_early": 6,
        "seeds_ran": 3,
        "per_seed_total": 4554 + 672,
    }


def test_the_study_cost_counts_the_range_test_once_and_says_it_is_shared() -> None:
    cost = build_report(_results())["cost"]
    assert cost["range_test"] == 300
    assert cost["range_test_shared_by"] == ["sgd-triangular", "sgd-triangular2", "sgd-exp_range"]
    assert (cost["tuning"], cost["trials"]) == (4554, 5 * 2016)
    assert cost["total"] == 300 + 4554 + 5 * 2016
    assert "shared by 3 arms" in cost["note"] and "charged it in full" in cost["note"]


def test_range_test_without_stopped_at_costs_its_points() -> None:
    results = _results(status="running")
    del results["range_test"]["points"][250:]
    results["range_test"]["stopped_at"] = None  # still running: 250 iterations so far
    report = build_report(results)
    assert report_row(report, "sgd-triangular")["cost"]["range_test"] == 250
    assert report_row(report, "sgd-fixed")["cost"]["range_test"] == 0
    results["range_test"] = None
    results["bounds"] = None
    assert report_row(build_report(results), "sgd-triangular")["cost"]["range_test"] == 0


def test_the_only_auto_arm_is_charged_and_the_note_says_so() -> None:
    results = _results()
    for name in ("sgd-triangular", "sgd-exp_range"):
        results["arms"][name]["auto"] = []
    report = build_report(results)
    assert report_row(report, "sgd-triangular")["cost"]["range_test"] == 0
    assert report_row(report, "sgd-triangular2")["cost"]["range_test"] == 300
    assert report["cost"]["range_test_shared_by"] == ["sgd-triangular2"]
    assert "the only arm" in report["cost"]["note"]


def test_final_trials_cost_what_they_ran_whatever_their_state() -> None:
    results = _results(status="running")
    trials = {t["trial_id"]: t for t in results["trials"]}
    failed = trials["sgd-fixed-tuned-s1"]
    failed.update(state="failed", error="CUDA error", iterations_done=252)
    del failed["points"][4:]
    running = trials["sgd-fixed-tuned-s2"]
    running.update(state="pending", iterations_done=0, points=[])
    cost = report_row(build_report(results), "sgd-fixed-tuned")["cost"]
    assert cost["trials"] == 672 + 252
    assert cost["seeds_ran"] == 2  # the pending seed has not run
    assert cost["per_seed_total"] == pytest.approx(4554 + (672 + 252) / 2)


def test_no_seed_run_has_no_per_seed_cost() -> None:
    results = _results(status="running")
    for trial in results["trials"]:
        trial.update(state="pending", iterations_done=0, points=[])
    cost = report_row(build_report(results), "sgd-fixed-tuned")["cost"]
    assert (cost["trials"], cost["seeds_ran"], cost["per_seed_total"]) == (0, 0, None)
    assert cost["total"] == 4554


# --- tuning in the rows ---------------------------------------------------------------------


def test_tuned_params_are_marked_tuned() -> None:
    report = build_report(_results())
    assert report_row(report, "sgd-fixed-tuned")["params"] == [
        {"name": "lr", "value": 0.08, "source": "tuned"}
    ]
    assert {p["name"]: p["source"] for p in report_row(report, "sgd-exp_range")["params"]} == {
        "base_lr": "range test",
        "max_lr": "range test",
        "step_size": "given",
        "gamma": "given",
    }
    assert report_row(report, "sgd-fixed")["params"][0]["source"] == "given"


def test_a_tuned_arm_row_has_its_search() -> None:
    report = build_report(_results())
    tuning = report_row(report, "sgd-fixed-tuned")["tuning"]
    assert tuning["optuna_study"] == "clrstudy-st_tuned/sgd-fixed-tuned"
    assert tuning["best"] == {"number": 4, "params": {"lr": 0.08}, "value": 0.975}
    assert tuning["states"] == {
        "completed": 5,
        "stopped": 6,
        "diverged": 1,
        "failed": 0,
        "cancelled": 0,
        "interrupted": 1,
    }
    assert tuning["ended"] == 12  # the interrupted one was replaced
    assert [t["number"] for t in tuning["trials"]] == list(range(13))
    assert [t["number"] for t in tuning["trials"] if t["best"]] == [4]
    assert tuning["trials"][12]["value"] is None
    assert report_row(report, "sgd-triangular2")["tuning"] is None
    json.dumps(report, allow_nan=False)


def test_a_queued_study_marks_tuned_params_from_its_spec() -> None:
    results = _results(status="queued")
    results.update(arms={}, trials=[], tuning={}, range_test=None, bounds=None)
    results["spec"]["arms"] = [
        {
            "name": "sgd-fixed",
            "optimizer": {"name": "sgd", "options": {}},
            "policy": {"name": "fixed", "params": {"lr": 0.01}},
        },
        {
            "name": "sgd-fixed-tuned",
            "optimizer": {"name": "sgd", "options": {}},
            "policy": {"name": "fixed", "params": {"lr": "tuned"}},
            "tuning": {"trials": 12, "space": {"lr": {"low": 0.0001, "high": 1.0}}},
        },
    ]
    report = build_report(results)
    assert report_row(report, "sgd-fixed-tuned")["params"][0]["source"] == "tuned"
    assert report_row(report, "sgd-fixed-tuned")["cost"]["total"] == 0
    assert 'id="summary"' in render_html(results, report)


def test_an_old_document_without_tuning_still_builds() -> None:
    results = _results()
    del results["tuning"]
    for arm in results["arms"].values():
        del arm["tuned"]
    report = build_report(results)
    assert all(row["tuning"] is None for row in report["arms"])
    assert report_row(report, "sgd-fixed-tuned")["params"][0]["source"] == "given"
    assert report_row(report, "sgd-fixed-tuned")["cost"]["tuning"] == 0
    assert _clr_lines(report) == []  # no arm is known to be tuned
    page = render_html(results, report)
    assert 'id="tuning"' not in page
    assert "cost (training iterations)" in page


def test_a_tuning_trial_in_an_unknown_state_is_refused() -> None:
    results = _results()
    results["tuning"]["sgd-fixed-tuned"]["trials"][0]["state"] = "pruned"
    with pytest.raises(ValueError, match=r"tuning.sgd-fixed-tuned.trials\[0\].state"):
        build_report(results)


# --- the verdict ----------------------------------------------------------------------------


def test_verdict_compares_the_best_clr_arm_with_the_tuned_fixed_arm() -> None:
    report = build_report(_results())
    reach = {r["arm"]: r["iterations_to_target"]["mean"] for r in report["arms"]}
    assert reach["sgd-triangular2"] < reach["sgd-fixed-tuned"]
    assert _clr_lines(report) == [
        f"{LABEL}: sgd-triangular2 (best of 3 CLR arms by final accuracy) ended at 96.9% "
        f"against 97.1% for sgd-fixed-tuned: no significant difference at 5% "
        f"({_p('sgd-triangular2', 'sgd-fixed-tuned')}). Iterations to the target (90.0%): "
        f"{round(reach['sgd-triangular2']):,} against {round(reach['sgd-fixed-tuned']):,}. "
        "Compute: range test 300 (shared by 3 arms) + trials 2,016 = 2,316 iterations against "
        "tuning 4,554 (12 trials, 6 stopped early, 1 interrupted and rerun) + trials 2,016 = "
        "6,570 iterations; sgd-triangular2 used 2.8x less compute."
    ]


def test_verdict_follows_the_speedup_lines_and_precedes_the_t_tests() -> None:
    verdicts = build_report(_results())["verdicts"]
    at = next(i for i, v in enumerate(verdicts) if v.startswith(LABEL))
    assert verdicts[at - 2].startswith("sgd-fixed-tuned reached the baseline's final accuracy")
    assert verdicts[at - 1].startswith("sgd-fixed-tuned took a median")
    assert verdicts[at + 1].startswith("Final accuracy of ")
    assert sum(v.startswith("Final accuracy of ") for v in verdicts) == 4


def test_verdict_picks_the_clr_arm_with_the_best_final_accuracy() -> None:
    results = _results()
    for trial in results["trials"]:
        if trial["arm"] == "sgd-exp_range":
            trial["points"][-1]["accuracy"] = 0.99
    (line,) = _clr_lines(build_report(results))
    assert line.startswith(f"{LABEL}: sgd-exp_range (best of 3 CLR arms by final accuracy)")
    assert "ended at 99.0% against 97.1%" in line
    assert "significantly higher at 5%" in line


def test_tuned_clr_arms_and_clr_arms_without_range_test_bounds_do_not_compete() -> None:
    results = _results()
    results["arms"]["sgd-triangular2"]["tuned"] = ["step_size"]  # tuned: not "one range test"
    results["arms"]["sgd-exp_range"]["auto"] = []  # its bounds were given
    (line,) = _clr_lines(build_report(results))
    assert line.startswith(f"{LABEL}: sgd-triangular (the only CLR arm with range-test bounds)")
    # sgd-triangular2 still takes its bounds from the range test, so it still shares it
    assert "range test 300 (shared by 2 arms) + trials 2,016 = 2,316 iterations" in line


def test_no_tuned_fixed_arm_no_verdict() -> None:
    results = _results()
    del results["tuning"]["sgd-fixed-tuned"]
    results["arms"]["sgd-fixed-tuned"]["tuned"] = []
    assert _clr_lines(build_report(results)) == []
    # a tuned arm whose policy is not fixed is no "tuned fixed LR"
    results = _results()
    results["arms"]["sgd-fixed-tuned"]["policy"] = {
        "name": "step",
        "params": {"lr": 0.08, "step_size": 200, "gamma": 0.1},
    }
    assert _clr_lines(build_report(results)) == []


def test_no_clr_arm_with_range_test_bounds_no_verdict() -> None:
    results = _results()
    for name in ("sgd-triangular", "sgd-triangular2", "sgd-exp_range"):
        results["arms"][name]["auto"] = []
    assert _clr_lines(build_report(results)) == []


def test_one_line_per_tuned_fixed_arm() -> None:
    results = _results()
    results["arms"]["adam-fixed-tuned"] = {
        **copy.deepcopy(results["arms"]["sgd-fixed-tuned"]),
        "optimizer": {"name": "adam", "options": {}},
    }
    entry = copy.deepcopy(results["tuning"]["sgd-fixed-tuned"])
    entry["optuna_study"] = "clrstudy-st_tuned/adam-fixed-tuned"
    results["tuning"]["adam-fixed-tuned"] = entry
    for trial in [t for t in results["trials"] if t["arm"] == "sgd-fixed-tuned"]:
        results["trials"].append(
            {**copy.deepcopy(trial), "arm": "adam-fixed-tuned", "trial_id": f"adam-{trial['seed']}"}
        )
    lines = _clr_lines(build_report(results))
    assert [line.split(" for ")[1].split(":")[0] for line in lines] == [
        "sgd-fixed-tuned",
        "adam-fixed-tuned",
    ]
    assert "different optimizers (sgd and adam)" in lines[1]
    assert "different optimizers" not in lines[0]


def test_seeds_that_ran_differ_compares_cost_per_trained_model() -> None:
    results = _results()
    results["trials"] = [t for t in results["trials"] if t["trial_id"] != "sgd-fixed-tuned-s2"]
    (line,) = _clr_lines(build_report(results))
    # 300 + 672 = 972 per CLR model against 4,554 + 672 = 5,226 per tuned model: 5.4x
    assert line.endswith(
        "sgd-triangular2 used 5.4x less compute per trained model (they trained 3 and 2 "
        "seeds: 972 against 5,226 iterations each)."
    )


def test_while_tuning_runs_nothing_is_claimed() -> None:
    results = _results(status="running")
    entry = results["tuning"]["sgd-fixed-tuned"]
    entry["trials"] = [t for t in entry["trials"] if t["number"] < 5]
    entry["best"] = None
    results["arms"]["sgd-fixed-tuned"]["policy"]["params"]["lr"] = "tuned"
    for trial in results["trials"]:
        if trial["arm"] == "sgd-fixed-tuned":
            trial.update(state="pending", iterations_done=0, points=[])
    report = build_report(results)
    json.dumps(report, allow_nan=False)
    (line,) = _clr_lines(report)
    assert line == (
        f"{LABEL}: sgd-triangular2 (best of 3 CLR arms by final accuracy) against "
        "sgd-fixed-tuned: not compared yet, sgd-fixed-tuned has no finished seed. "
        "Compute so far: range test 300 (shared by 3 arms) + trials 2,016 = 2,316 iterations "
        "against tuning 2,164 (5 of 12 trials, 2 stopped early) + trials 0 = 2,164 iterations."
    )
    assert "less compute" not in line and "more compute" not in line
    assert "No best trial yet" in render_html(results, report)


def test_a_running_study_with_both_arms_finished_gives_no_ratio_yet() -> None:
    results = _results(status="running")
    results["trials"].append(
        {**_trial("sgd-triangular", 3, [0.1]), "state": "running", "iterations_done": 40}
    )
    (line,) = _clr_lines(build_report(results))
    assert "ended at 96.9% against 97.1%" in line
    assert "Compute so far:" in line
    assert line.endswith("; no compute ratio until the study has ended.")


def test_no_finished_clr_seed_is_said_plainly() -> None:
    results = _results(status="cancelled")
    for trial in results["trials"]:
        if trial["arm"] in ("sgd-triangular", "sgd-triangular2", "sgd-exp_range"):
            trial.update(state="cancelled")
    (line,) = _clr_lines(build_report(results))
    assert line.startswith(
        f"{LABEL}: sgd-triangular (first of 3 CLR arms, none with a finished seed) against "
        "sgd-fixed-tuned: not compared, sgd-triangular has no finished seed. Compute: "
    )
    assert "less compute" not in line


def test_one_finished_seed_each_is_not_tested() -> None:
    results = _results()
    results["trials"] = [
        t
        for t in results["trials"]
        if t["seed"] == 0 or t["arm"] not in ("sgd-triangular2", "sgd-fixed-tuned")
    ]
    (line,) = _clr_lines(build_report(results))
    assert "not tested: needs 2 or more finished seeds in both sgd-triangular2 and " in line
    assert "2.8x less compute" not in line  # 1 seed each: 972 against 5,226
    assert "5.4x less compute." in line


# --- HTML -----------------------------------------------------------------------------------


class _Tables(HTMLParser):
    """Every table of a page by id: its header rows and body rows as lists of (attrs, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, list[list[tuple[dict, str]]]]] = {}
        self.row_attrs: dict[str, list[dict]] = {}
        self.codes: list[str] = []
        self._table: str | None = None
        self._part = "body"
        self._cell: tuple[dict, list[str]] | None = None
        self._code: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = table = a["id"] or ""
            self.tables[table] = {"head": [], "body": []}
            self.row_attrs[table] = []
        elif tag in ("thead", "tbody"):
            self._part = "head" if tag == "thead" else "body"
        elif tag == "tr" and self._table:
            self.tables[self._table][self._part].append([])
            if self._part == "body":
                self.row_attrs[self._table].append(a)
        elif tag in ("td", "th") and self._table:
            self._cell = (a, [])
        elif tag == "code":
            self._code = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            attrs, text = self._cell
            self.tables[self._table][self._part][-1].append((attrs, "".join(text)))
            self._cell = None
        elif tag == "code" and self._code is not None:
            self.codes.append("".join(self._code))
            self._code = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[1].append(data)
        if self._code is not None:
            self._code.append(data)


def _parse(page: str) -> _Tables:
    parser = _Tables()
    parser.feed(page)
    parser.close()
    return parser


def test_html_summary_has_a_cost_column_group() -> None:
    page = _parse(render_html(_results()))
    summary = page.tables["summary"]
    top, bottom = summary["head"]
    assert [(a.get("colspan"), t) for a, t in top if a.get("colspan")] == [
        ("4", "cost (training iterations)")
    ]
    assert [t for _, t in bottom] == ["range test", "tuning", "trials", "total"]
    width = len(top) - 1 + 4
    cells = {row[0][1]: [t for _, t in row] for row in summary["body"]}
    assert all(len(row) == width for row in cells.values())
    assert cells["sgd-fixed-tuned"][-4:] == ["0", "4,554", "2,016", "6,570"]
    assert cells["sgd-triangular2"][-4:] == ["300", "\u2013", "2,016", "2,316"]
    assert cells["sgd-fixed (baseline)"][-4:] == ["0", "\u2013", "2,016", "2,016"]
    assert "lr=0.08\u2021" in cells["sgd-fixed-tuned"][2]  # double dagger: chosen by tuning


def test_html_has_a_tuning_table_per_tuned_arm_with_the_best_marked() -> None:
    results = _results()
    results["tuning"]["sgd-fixed-tuned"]["optuna_study"] = "clrstudy-<st>/sgd-fixed-tuned"
    text = render_html(results)
    assert "<st>" not in text and "<script" not in text and "<link" not in text
    page = _parse(text)
    assert "clrstudy-<st>/sgd-fixed-tuned" in page.codes  # escaped, read back as written
    assert "optuna-dashboard" in text
    table = page.tables["tuning-0"]
    assert [t for _, t in table["head"][0]] == [
        "trial",
        "params",
        "state",
        "iterations",
        "validation accuracy",
    ]
    rows = [[t for _, t in row] for row in table["body"]]
    assert len(rows) == 13
    assert rows[4] == ["4 (best)", "lr=0.08", "completed", "672", "97.5%"]
    assert rows[1][2:] == ["stopped", "74", "41.0%"]
    assert rows[12][2:] == ["interrupted", "300", "\u2013"]
    best = [i for i, a in enumerate(page.row_attrs["tuning-0"]) if a.get("class") == "best"]
    assert best == [4]
    assert "tuning-1" not in page.tables
    assert 'data-arm="sgd-fixed-tuned"' in text


def test_html_of_a_search_not_started_says_so() -> None:
    results = _results(status="running")
    results["tuning"]["sgd-fixed-tuned"].update(optuna_study=None, space={}, trials=[], best=None)
    text = render_html(results)
    assert "The search has not started yet." in text
    assert "<code>None</code>" not in text and "optuna-dashboard" not in text


def test_csv_keeps_one_row_per_evaluation_point() -> None:
    # The CSV has no arm rows, so it carries no cost columns; tuning trials add no rows.
    results = _results()
    lines = render_csv(results).splitlines()
    assert len(lines) - 1 == sum(len(t["points"]) for t in results["trials"])
