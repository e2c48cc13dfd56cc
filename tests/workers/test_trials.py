"""The shared training loop: determinism, checkpoint resume, divergence, the range test."""

from __future__ import annotations

import copy

import pytest
import torch

from clr.bounds import suggest_bounds
from clr.range_test import range_test
from workers.datasets import load_dataset
from workers.trials import (
    ArmPlan,
    RangeTestPlan,
    TrialSetup,
    build_engine,
    run_arm,
    run_range_test,
)

SETUP = TrialSetup(
    trial_id="t",
    seed=3,
    model={"name": "mlp", "options": {}},
    optimizer={"name": "sgd", "options": {"momentum": 0.9}},
    batch_size=64,
)
PLAN = ArmPlan(
    policy={"name": "triangular", "params": {"base_lr": 0.01, "max_lr": 0.1, "step_size": 40}},
    iterations=120,
    eval_every=20,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", {}, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def curve(data, setup=SETUP, plan=PLAN):
    engine = build_engine(setup, data, 0.01)
    return [p.point for p in run_arm(engine, plan)], engine


def values(points):
    """A curve without its wall times, which no two runs share."""
    return [(p.iteration, p.epoch, p.lr, p.train_loss, p.accuracy, p.loss) for p in points]


def test_same_seed_same_curve_bit_for_bit(digits):
    first, engine_a = curve(digits)
    second, engine_b = curve(digits)
    assert values(first) == values(second)
    for name, tensor in engine_a.model.state_dict().items():
        assert torch.equal(tensor, engine_b.model.state_dict()[name]), name


def test_another_seed_another_curve(digits):
    first, _ = curve(digits)
    other, _ = curve(digits, setup=TrialSetup(**{**SETUP.__dict__, "seed": 4}))
    assert [p.accuracy for p in first] != [p.accuracy for p in other]


def test_curve_shape_and_learning(digits):
    points, engine = curve(digits)
    assert [p.iteration for p in points] == [0, 20, 40, 60, 80, 100, 120]
    assert points[0].train_loss is None
    assert all(p.train_loss is not None and p.train_loss > 0 for p in points[1:])
    # The LR reported is the schedule's: triangular peaks at step_size.
    assert points[2].lr == pytest.approx(0.01 + 0.09 * (39 / 40))
    assert points[-1].accuracy > 0.9 > points[0].accuracy
    assert engine.epoch == pytest.approx(120 / engine.iterations_per_epoch)


def test_resume_from_checkpoint_gives_the_same_curve(digits):
    full, _ = curve(digits)
    engine = build_engine(SETUP, digits, 0.01)
    run = run_arm(engine, PLAN)
    head = [next(run).point for _ in range(3)]  # iterations 0, 20, 40
    state = copy.deepcopy(engine.state_dict())
    torch.manual_seed(1234)  # a new process's RNG would differ: the checkpoint must not care
    restored = build_engine(SETUP, digits, 0.01)
    restored.load_state_dict(state)
    tail = [p.point for p in run_arm(restored, PLAN)]
    assert values(head + tail) == values(full)


def test_absurd_lr_diverges(digits):
    plan = ArmPlan(policy={"name": "fixed", "params": {"lr": 1e6}}, iterations=60, eval_every=20)
    engine = build_engine(SETUP, digits, 1e6)
    progress = list(run_arm(engine, plan))
    assert progress[-1].state == "diverged"
    assert progress[-1].point is None
    assert progress[-1].iteration < 60 or engine.iteration <= 60


def momenta(data, plan):
    """The momentum each training iteration ran with, read after every step."""
    engine = build_engine(SETUP, data, 0.01)
    seen = {}
    for progress in run_arm(engine, ArmPlan(**{**plan.__dict__, "eval_every": 1})):
        if progress.iteration > 0:
            seen[progress.iteration - 1] = engine.optimizer.param_groups[0]["momentum"]
    return seen


def test_momentum_cycles_inversely_to_the_lr(digits):
    plan = ArmPlan(**{**PLAN.__dict__, "iterations": 41, "cycle_momentum": True})
    seen = momenta(digits, plan)
    # triangular 0.01..0.1, step 40: lr 0.01 at 0, 0.055 at 20, 0.1 at 40, so momentum
    # 0.95 (max, at the lowest lr), 0.90, 0.85 (base, at the highest lr).
    assert [seen[0], seen[20], seen[40]] == pytest.approx([0.95, 0.90, 0.85])


def test_one_cycle_cycles_momentum_over_its_whole_lr_range(digits):
    # It crashed once (TypeError: one_cycle has neither base_lr nor lr).
    params = {"max_lr": 0.1, "total_iterations": 30, "pct_start": 0.5}  # peak at 14
    plan = ArmPlan(policy={"name": "one_cycle", "params": params}, iterations=30, eval_every=1)
    seen = momenta(digits, ArmPlan(**{**plan.__dict__, "cycle_momentum": True}))
    # lr: 0.1 / 25 = 0.004 at 0, 0.1 at 14, down to 0.004 / 1e4 = 4e-7 at 29.
    assert seen[0] == pytest.approx(0.95 - 0.1 * (0.004 - 4e-7) / (0.1 - 4e-7))
    assert seen[14] == pytest.approx(0.85)
    assert seen[29] == pytest.approx(0.95)


def test_range_test_in_the_engine_gives_usable_bounds(digits):
    engine = build_engine(SETUP, digits, 1e-3)
    before = copy.deepcopy(engine.model.state_dict())
    plan = RangeTestPlan(min_lr=1e-3, max_lr=1.0, iterations=200, eval_every=10)
    progress = list(run_range_test(engine, plan))
    result = progress[-1].result
    assert result is not None
    points = [p for step in progress for p in step.points]
    assert [p.iteration for p in points] == list(range(result.stopped_at))
    assert len(result.accuracies) == len([p for p in points if p.accuracy is not None])
    after = engine.model.state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)  # it trained
    bounds = suggest_bounds(result)
    assert 1e-3 <= bounds.base_lr < bounds.max_lr <= 1.0


def engine_batches(data, setup, count):
    """The batches an engine seeded with `setup.seed` trains on, in its order: a fresh
    permutation of the training set per epoch, from the trial's own generator."""
    generator = torch.Generator().manual_seed(setup.seed)
    size, per_epoch = setup.batch_size, data.iterations_per_epoch(setup.batch_size)
    out = []
    while len(out) < count:
        order = torch.randperm(data.train_size, generator=generator)
        for i in range(per_epoch):
            index = order[i * size : (i + 1) * size]
            out.append((data.x_train[index], data.y_train[index]))
    return out[:count]


@pytest.mark.parametrize(("max_lr", "stopped"), [(0.3, False), (1e3, True)], ids=["full", "stop"])
def test_the_engine_and_clr_record_the_same_range_test(digits, max_lr, stopped):
    plan = RangeTestPlan(min_lr=1e-3, max_lr=max_lr, iterations=60, eval_every=7)
    progress = list(run_range_test(build_engine(SETUP, digits, 1e-3), plan))
    worker = progress[-1].result
    points = [p for step in progress for p in step.points]

    engine = build_engine(SETUP, digits, 1e-3)  # the same initial weights and optimizer
    library = range_test(
        engine.model,
        engine.optimizer,
        engine_batches(digits, SETUP, plan.iterations),
        (digits.x_test, digits.y_test),
        min_lr=plan.min_lr,
        max_lr=plan.max_lr,
        iterations=plan.iterations,
        eval_every=plan.eval_every,
    )
    assert (worker.stop_reason != "completed") is stopped
    assert worker.stopped_at == library.stopped_at
    assert worker.stop_reason == library.stop_reason
    assert worker.lrs == library.lrs
    # The same weights, batches and LRs give the same training losses, bit for bit.
    assert worker.losses == pytest.approx(library.losses, rel=0, abs=0, nan_ok=True)
    # clr's cadence: iteration 0, every eval_every, the last; none once the test stopped.
    assert worker.eval_iterations == library.eval_iterations
    if not stopped:
        assert worker.eval_iterations == (0, 7, 14, 21, 28, 35, 42, 49, 56, 59)
    assert worker.accuracies == library.accuracies
    # The engine sums held-out losses in float64, clr in float32 batches.
    assert worker.eval_losses == pytest.approx(library.eval_losses, rel=1e-6)
    evaluated = [p.iteration for p in points if p.accuracy is not None]
    assert tuple(evaluated) == library.eval_iterations
