"""clr: cyclical learning rates (Smith, WACV 2017), the LR range test and bound suggestion.

A pure library on top of torch: LR policies are functions `iteration -> lr`, registered by
name in `POLICIES`; `build_scheduler` drives a torch optimizer with any of them, and cycles
momentum by `momentum_schedule`'s rule; `range_test` sweeps the LR and `suggest_bounds`
reads a (base_lr, max_lr) pair off it.
"""

from clr.bounds import Bounds, UnusableRangeTest, suggest_bounds
from clr.momentum import momentum_schedule
from clr.params import Param
from clr.policies import (
    POLICIES,
    Policy,
    cosine_lr,
    cyclic_lr,
    decay_lr,
    exp_lr,
    exp_range,
    fixed_lr,
    get_policy,
    make_schedule,
    one_cycle_lr,
    step_lr,
    triangular,
    triangular2,
    wsd_lr,
)
from clr.range_test import LossMonitor, RangeTestRecorder, RangeTestResult, lr_ramp, range_test
from clr.schedulers import build_scheduler
from clr.step_size import StepSizeChoice, choose_step_size, step_size_for

__all__ = [
    "POLICIES",
    "Bounds",
    "LossMonitor",
    "Param",
    "Policy",
    "RangeTestRecorder",
    "RangeTestResult",
    "StepSizeChoice",
    "UnusableRangeTest",
    "build_scheduler",
    "choose_step_size",
    "cosine_lr",
    "cyclic_lr",
    "decay_lr",
    "exp_lr",
    "exp_range",
    "fixed_lr",
    "get_policy",
    "lr_ramp",
    "make_schedule",
    "momentum_schedule",
    "one_cycle_lr",
    "range_test",
    "step_lr",
    "step_size_for",
    "suggest_bounds",
    "triangular",
    "triangular2",
    "wsd_lr",
]
