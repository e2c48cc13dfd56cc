"""The states of a study, its trials and its tuning trials: each named here, once.

Every other module takes its types and sets from here; tests/workers/test_states.py fails
when a tuple, set or list of state names is spelled out anywhere else.
"""

from __future__ import annotations

from typing import Literal, get_args

# A study: queued -> running -> succeeded | failed | cancelled.
ActiveStudyStatus = Literal["queued", "running"]
TerminalStudyStatus = Literal["succeeded", "failed", "cancelled"]
StudyStatus = Literal[ActiveStudyStatus, TerminalStudyStatus]
# What a running study is doing.
StudyPhase = Literal["queued", "range_test", "tuning", "trials", "report", "done"]

# A trial's end: "completed" and "diverged" trained until their own end (their curves are
# whole); "failed" and "cancelled" were cut short, and only "cancelled" by a cancel (a study
# whose trials all ran ran to its end).
FinishedTrialState = Literal["completed", "diverged"]
RanTrialState = Literal[FinishedTrialState, "failed"]
EndedTrialState = Literal[RanTrialState, "cancelled"]
TrialState = Literal["pending", "running", EndedTrialState]

# A tuning trial's end: "completed" ran to tuning.max_iterations; "stopped" was ended early
# by ASHA (Optuna itself records those as COMPLETE); "interrupted" was running when an
# earlier run of the study died. Interrupted and cancelled ones are replaced by new ones
# when the study runs again: only the counted ones count towards tuning.trials.
CountedTuningTrialState = Literal["completed", "stopped", "diverged", "failed"]
TuningTrialState = Literal[CountedTuningTrialState, "cancelled", "interrupted"]

STUDY_STATUSES: tuple[StudyStatus, ...] = get_args(StudyStatus)
ACTIVE_STUDY_STATUSES: tuple[ActiveStudyStatus, ...] = get_args(ActiveStudyStatus)
TERMINAL_STUDY_STATUSES: tuple[TerminalStudyStatus, ...] = get_args(TerminalStudyStatus)
STUDY_PHASES: tuple[StudyPhase, ...] = get_args(StudyPhase)
# A queued study starts, or ends without running (cancelled, or failed when its spec no
# longer passes); a running one ends.
STUDY_TRANSITIONS: dict[str, frozenset[StudyStatus]] = {
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset(TERMINAL_STUDY_STATUSES),
}

TRIAL_STATES: tuple[TrialState, ...] = get_args(TrialState)
ENDED_TRIAL_STATES: tuple[EndedTrialState, ...] = get_args(EndedTrialState)
RAN_TRIAL_STATES: tuple[RanTrialState, ...] = get_args(RanTrialState)
FINISHED_TRIAL_STATES: tuple[FinishedTrialState, ...] = get_args(FinishedTrialState)

TUNING_TRIAL_STATES: tuple[TuningTrialState, ...] = get_args(TuningTrialState)
COUNTED_TUNING_TRIAL_STATES: tuple[CountedTuningTrialState, ...] = get_args(CountedTuningTrialState)
