"""Schedule-free, parameter-free and averaged optimizers driven through the engine as their
packages ask: train/eval switches, BatchNorm recomputed, averaged weights evaluated, the
estimated step size recorded, checkpoints that resume to the uninterrupted curve."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from workers.datasets import load_dataset
from workers.engine import BATCH_NORM_BATCHES, Engine
from workers.trainables import CHECKPOINT_FILE, load_checkpoint
from workers.trials import ArmPlan, TrialSetup, build_engine, run_arm

MODERN = ["sgd_schedulefree", "adamw_schedulefree", "prodigy", "dadapt_sgd", "dadapt_adam"]
MODERN += ["dog", "ldog"]
LRS = {"sgd_schedulefree": 0.5, "adamw_schedulefree": 0.005}  # the others: a multiplier, 1.0
SETUP = TrialSetup(
    trial_id="t",
    seed=5,
    model={"name": "mlp", "options": {"hidden": "32"}},
    optimizer={"name": "sgd", "options": {}},
    batch_size=64,
)
BN_SETUP = replace(SETUP, model={"name": "small_cnn", "options": {"width": 4}})


def plan(name: str, iterations: int = 36) -> ArmPlan:
    # A warm-up from zero: the optimizer is built at lr 0, which the parameter-free refuse
    # (D-Adaptation SGD cannot step at 0 at all: the spec refuses that pair).
    lr = LRS.get(name, 1.0)
    warmup = 0 if name == "dadapt_sgd" else 6
    params = {"lr": lr, "total_iterations": iterations, "warmup": warmup, "decay_fraction": 0.25}
    return ArmPlan(policy={"name": "wsd", "params": params}, iterations=iterations, eval_every=12)


def setup(name: str, base: TrialSetup = SETUP) -> TrialSetup:
    # DoG's first step is reps_rel * (1 + |x0|) long: the default 1e-6 needs far more than
    # a test's few dozen steps to get going.
    options = {"reps_rel": 1e-2} if name in ("dog", "ldog") else {}
    return replace(base, optimizer={"name": name, "options": options})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", {}, seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def values(points):
    """A curve without its wall times, which no two runs share."""
    return [(p.iteration, p.lr, p.train_loss, p.accuracy, p.loss, p.d) for p in points]


@pytest.mark.parametrize("name", MODERN)
def test_trains_and_resumes_to_the_uninterrupted_curve(digits, name: str, tmp_path) -> None:
    full = [p.point for p in run_arm(build_engine(setup(name), digits, 0.0), plan(name))]
    assert all(p is not None for p in full)
    assert full[-1].accuracy > full[0].accuracy
    engine = build_engine(setup(name), digits, 0.0)
    run = run_arm(engine, plan(name))
    head = [next(run).point for _ in range(2)]  # iterations 0 and 12
    # Saved and loaded as the arm trainable does (weights only), then the process "dies".
    torch.save(engine.state_dict(), tmp_path / CHECKPOINT_FILE)
    del engine, run
    torch.manual_seed(1234)  # a new process's RNG would differ: the checkpoint must not care
    restored = build_engine(setup(name), digits, 0.0)
    restored.load_state_dict(load_checkpoint(tmp_path))
    tail = [p.point for p in run_arm(restored, plan(name))]
    assert values(head + tail) == values(full)


def test_schedule_free_with_batch_norm_resumes_to_the_uninterrupted_curve(digits) -> None:
    name = "sgd_schedulefree"
    full = [p.point for p in run_arm(build_engine(setup(name, BN_SETUP), digits, 0.0), plan(name))]
    engine = build_engine(setup(name, BN_SETUP), digits, 0.0)
    run = run_arm(engine, plan(name))
    head = [next(run).point for _ in range(2)]
    state = copy.deepcopy(engine.state_dict())
    restored = build_engine(setup(name, BN_SETUP), digits, 0.0)
    restored.load_state_dict(state)
    tail = [p.point for p in run_arm(restored, plan(name))]
    assert values(head + tail) == values(full)


@torch.inference_mode()
def accuracy_of(model: nn.Module, engine: Engine) -> float:
    model.eval()
    logits = model(engine._x_test)
    model.train()
    return (logits.argmax(1) == engine._y_test).sum().item() / len(engine._y_test)


def trained(digits, name: str, base: TrialSetup = SETUP, steps: int = 30) -> Engine:
    engine = build_engine(setup(name, base), digits, LRS.get(name, 1.0))
    for _ in range(steps):
        engine.step(LRS.get(name, 1.0))
    return engine


@pytest.mark.parametrize("name", ["sgd_schedulefree", "adamw_schedulefree"])
def test_schedule_free_is_evaluated_in_eval_mode_and_trained_in_train_mode(digits, name) -> None:
    engine = trained(digits, name)
    assert engine.optimizer.param_groups[0]["train_mode"]
    at_y = accuracy_of(engine.model, engine)  # what an evaluation without .eval() would see
    evaluation = engine.evaluate()
    assert not engine.optimizer.param_groups[0]["train_mode"]
    assert evaluation.accuracy == accuracy_of(engine.model, engine)
    assert evaluation.accuracy != at_y
    # The package refuses a step in eval mode: the engine switches back first.
    engine.step(LRS[name])
    assert engine.optimizer.param_groups[0]["train_mode"]


def test_schedule_free_checkpoints_in_eval_mode(digits) -> None:
    engine = trained(digits, "adamw_schedulefree")
    state = engine.state_dict()
    assert state["optimizer"]["param_groups"][0]["train_mode"] is False
    engine.step(LRS["adamw_schedulefree"])  # and trains on afterwards


def test_schedule_free_recomputes_batch_norm_at_the_evaluation_weights(digits) -> None:
    engine = trained(digits, "sgd_schedulefree", BN_SETUP)
    stale = copy.deepcopy(engine.model)
    stale_optimizer = engine.optimizer.__class__(stale.parameters(), lr=LRS["sgd_schedulefree"])
    stale_optimizer.load_state_dict(engine.optimizer.state_dict())
    stale_optimizer.eval()  # the weights switched, the statistics left as training made them
    engine.evaluate()
    norms = [m for m in engine.model.modules() if isinstance(m, nn.BatchNorm2d)]
    stale_norms = [m for m in stale.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not torch.equal(norms[0].running_mean, stale_norms[0].running_mean)
    # The same statistics by hand: a cumulative average over the first training batches.
    for norm in stale_norms:
        norm.reset_running_stats()
        norm.momentum = None
    with torch.no_grad():
        for i in range(min(BATCH_NORM_BATCHES, engine.iterations_per_epoch)):
            stale(engine._x_train[i * 64 : (i + 1) * 64])
    for norm, by_hand in zip(norms, stale_norms, strict=True):
        torch.testing.assert_close(norm.running_mean, by_hand.running_mean)
        torch.testing.assert_close(norm.running_var, by_hand.running_var)
        assert norm.momentum == 0.1  # training's momentum is given back


@pytest.mark.parametrize("name", ["dog", "ldog"])
def test_dog_is_evaluated_on_the_averaged_weights(digits, name: str) -> None:
    engine = trained(digits, name)
    assert engine.averager is not None
    evaluation = engine.evaluate()
    assert evaluation.accuracy == accuracy_of(engine.averager.averaged_model, engine)
    assert evaluation.accuracy != accuracy_of(engine.model, engine)
    assert engine.state_dict()["averager"]["t"] == 31  # checkpointed with the model


@pytest.mark.parametrize("name", ["prodigy", "dadapt_sgd", "dadapt_adam", "dog"])
def test_the_estimated_step_size_is_recorded_at_every_evaluation(digits, name: str) -> None:
    points = [p.point for p in run_arm(build_engine(setup(name), digits, 0.0), plan(name))]
    steps = [p.d for p in points[1:]]
    assert all(d is not None and d > 0 for d in steps)
    assert steps[-1] != steps[0]  # it is estimated as training goes


def test_plain_optimizers_record_no_step_size(digits) -> None:
    points = [p.point for p in run_arm(build_engine(SETUP, digits, 0.0), plan("sgd", 12))]
    assert [p.d for p in points] == [None, None]


def test_the_policy_lr_multiplies_the_estimate(digits) -> None:
    engine = trained(digits, "prodigy", steps=3)
    engine.step(0.25)
    assert engine.optimizer.param_groups[0]["lr"] == 0.25


def test_the_clock_waits_for_the_device_at_evaluations_never_at_steps(digits, monkeypatch) -> None:
    synchronized: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "synchronize", synchronized.append)
    engine = trained(digits, "sgd", steps=1)
    engine.device = torch.device("cuda")  # what the clock reads; the tensors stay on the CPU
    for _ in range(5):
        engine.step(0.1)
    assert synchronized == []
    engine.state_dict()  # stops the clock, as an evaluation does
    assert synchronized == [torch.device("cuda")]
    engine.state_dict()  # no training since: nothing to wait for
    assert len(synchronized) == 1
