"""State vocabularies: named once in workers/states.py, consistent, and not copied elsewhere."""

from __future__ import annotations

import ast
from pathlib import Path

from workers import states

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("clr", "workers", "service", "api", "cli")
HOME = ROOT / "workers" / "states.py"
NAMES = frozenset(
    states.STUDY_STATUSES + states.STUDY_PHASES + states.TRIAL_STATES + states.TUNING_TRIAL_STATES
)


def test_the_vocabularies_keep_the_values_the_database_and_api_know() -> None:
    # Migrations' check constraints and the OpenAPI schema's enums spell these out: changing
    # one needs a migration and changes the API.
    assert states.STUDY_STATUSES == ("queued", "running", "succeeded", "failed", "cancelled")
    assert states.STUDY_PHASES == ("queued", "range_test", "tuning", "trials", "report", "done")
    assert states.TRIAL_STATES == (
        "pending", "running", "completed", "diverged", "failed", "cancelled",
    )  # fmt: skip
    assert states.TUNING_TRIAL_STATES == (
        "completed", "stopped", "diverged", "failed", "cancelled", "interrupted",
    )  # fmt: skip


def test_study_statuses_are_active_or_terminal_and_move_forward() -> None:
    active, terminal = set(states.ACTIVE_STUDY_STATUSES), set(states.TERMINAL_STUDY_STATUSES)
    assert active | terminal == set(states.STUDY_STATUSES)
    assert not active & terminal
    assert set(states.STUDY_TRANSITIONS) == active
    reachable = set().union(*states.STUDY_TRANSITIONS.values())
    assert reachable == set(states.STUDY_STATUSES) - {"queued"}
    assert states.STUDY_TRANSITIONS["running"] == terminal
    assert all(source not in to for source, to in states.STUDY_TRANSITIONS.items())


def test_trial_states_nest() -> None:
    finished, ran = set(states.FINISHED_TRIAL_STATES), set(states.RAN_TRIAL_STATES)
    ended, every = set(states.ENDED_TRIAL_STATES), set(states.TRIAL_STATES)
    assert finished < ran < ended < every
    assert every - ended == {"pending", "running"}
    assert ended - ran == {"cancelled"}


def test_counted_tuning_trials_are_some_of_them() -> None:
    counted, every = set(states.COUNTED_TUNING_TRIAL_STATES), set(states.TUNING_TRIAL_STATES)
    assert counted < every
    assert every - counted == {"cancelled", "interrupted"}
    # A tuning trial trains like a trial: the trial's ends are tuning trials' ends too.
    assert set(states.ENDED_TRIAL_STATES) < every


def state_collections(source: str) -> list[tuple[int, list[str]]]:
    """(line, names) of each tuple, list or set display made only of two or more state names
    (not the values of a parallel assignment: `status, message = "cancelled", "interrupted"`)."""
    tree = ast.parse(source)
    parallel = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in parallel:
            continue
        if isinstance(node, ast.Tuple | ast.List | ast.Set) and len(node.elts) >= 2:
            values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            if all(isinstance(v, str) and v in NAMES for v in values):
                found.append((node.lineno, [str(v) for v in values]))
    return found


def test_state_collections_are_found() -> None:
    planted = 'DONE = ("succeeded", "failed")\nOK = status in {"queued", "running"}\n'
    planted += 'x: Literal["completed", "diverged"]\nTWO = ("completed", "iterations")\n'
    planted += 'status, message = "cancelled", "interrupted"\n'
    assert state_collections(planted) == [
        (1, ["succeeded", "failed"]),
        (2, ["queued", "running"]),
        (3, ["completed", "diverged"]),
    ]


def test_no_module_but_states_spells_out_a_set_of_states() -> None:
    copies = [
        f"{path.relative_to(ROOT)}:{line}: {names}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != HOME
        for line, names in state_collections(path.read_text())
    ]
    assert not copies, "take these from workers.states instead:\n" + "\n".join(copies)
