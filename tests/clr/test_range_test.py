"""The LR ramp, the loss monitor, the result's round trip and real range tests."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from clr.bounds import suggest_bounds
from clr.range_test import LossMonitor, RangeTestResult, lr_ramp, range_test


def test_linear_ramp_runs_from_min_to_max_in_equal_steps() -> None:
    lrs = [lr_ramp(i, 0.001, 0.1, 100) for i in range(100)]
    assert lrs[0] == 0.001
    assert lrs[-1] == pytest.approx(0.1)
    steps = [b - a for a, b in itertools.pairwise(lrs)]
    assert max(steps) == pytest.approx(min(steps))


def test_exponential_ramp_is_geometric() -> None:
    lrs = [lr_ramp(i, 1e-4, 1.0, 5, "exponential") for i in range(5)]
    assert lrs == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 0.0, 0.1, 10), "min_lr must be a finite number > 0, got 0.0"),
        ((0, 0.1, 0.1, 10), r"max_lr must be a finite number > min_lr \(0.1\), got 0.1"),
        ((0, 0.01, math.inf, 10), "max_lr must be a finite number > min_lr"),
        ((0, 0.01, 0.1, 1), "iterations must be an integer >= 2, got 1"),
        ((0, 0.01, 0.1, 10, "cosine"), "ramp must be one of linear, exponential, got 'cosine'"),
        ((10, 0.01, 0.1, 10), r"iteration must be < iterations \(10\), got 10"),
        ((-1, 0.01, 0.1, 10), "iteration must be an integer >= 0, got -1"),
    ],
)
def test_ramp_refuses_bad_arguments_naming_them(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lr_ramp(*args)


def test_monitor_smoothing_is_bias_corrected() -> None:
    monitor = LossMonitor(smoothing=0.05)
    # Without the correction the first values would be 0.05 * loss, far below it.
    assert [monitor.update(2.0) for _ in range(3)] == pytest.approx([2.0, 2.0, 2.0])
    smoothed = monitor.update(4.0)
    # Four losses with weights 0.95^3, 0.95^2, 0.95, 1 (times 0.05), normalised.
    weights = [0.95**3, 0.95**2, 0.95, 1.0]
    assert smoothed == pytest.approx((2 * sum(weights[:3]) + 4) / sum(weights))
    assert monitor.stop_reason is None


def test_monitor_stops_when_the_smoothed_loss_exceeds_the_factor_times_its_best() -> None:
    monitor = LossMonitor(smoothing=0.5, stop_factor=4.0)
    monitor.update(1.0)
    monitor.update(1.0)
    assert monitor.stop_reason is None
    monitor.update(5.0)  # smoothed 1 + (5 - 1) * 4/7 = 3.29: not yet 4x
    assert monitor.stop_reason is None
    monitor.update(20.0)
    assert monitor.stop_reason == "diverged"
    monitor.update(1.0)
    assert monitor.stop_reason == "diverged"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_monitor_flags_non_finite_losses(bad: float) -> None:
    monitor = LossMonitor()
    monitor.update(2.0)
    assert not math.isfinite(monitor.update(bad))
    assert monitor.stop_reason == "non_finite"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"smoothing": 0.0}, "smoothing must be a number in"),
        ({"smoothing": 1.5}, "smoothing must be a number in"),
        ({"stop_factor": 1.0}, "stop_factor must be a number > 1, got 1.0"),
    ],
)
def test_monitor_refuses_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LossMonitor(**kwargs)


def test_result_survives_strict_json_with_a_non_finite_loss() -> None:
    result = RangeTestResult(
        min_lr=0.01,
        max_lr=1.0,
        ramp="linear",
        iterations=10,
        lrs=(0.01, 0.12, 0.23),
        losses=(2.3, 2.1, math.nan),
        smoothed_losses=(2.3, 2.2, math.nan),
        eval_iterations=(0,),
        eval_lrs=(0.01,),
        accuracies=(0.1,),
        eval_losses=(2.3,),
        stopped_at=3,
        stop_reason="non_finite",
    )
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["losses"] == [2.3, 2.1, None]
    back = RangeTestResult.from_dict(data)
    assert math.isnan(back.losses[-1])
    assert back.lrs == result.lrs
    assert back.eval_iterations == result.eval_iterations
    assert back.stop_reason == "non_finite"


def test_a_finite_result_round_trips_field_for_field() -> None:
    result = RangeTestResult(
        min_lr=0.01,
        max_lr=1.0,
        ramp="exponential",
        iterations=10,
        lrs=(0.01, 0.0178),
        losses=(2.3, 2.2),
        smoothed_losses=(2.3, 2.25),
        eval_iterations=(0, 1),
        eval_lrs=(0.01, 0.0178),
        accuracies=(0.1, 0.15),
        eval_losses=(2.3, 2.1),
        stopped_at=2,
        stop_reason="diverged",
    )
    assert RangeTestResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


# --- real range tests ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1], a fixed 1400/397 split."""
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]
    return x[train], y[train], x[test], y[test]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small models run fastest on one thread, and the test must not oversubscribe cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batches(x: torch.Tensor, y: torch.Tensor, size: int, seed: int) -> Iterator[tuple]:
    """Endless minibatches from a fresh permutation per epoch."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x) - size + 1, size):
            yield x[order[i : i + size]], y[order[i : i + size]]


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.mark.usefixtures("one_thread")
def test_range_test_records_curves_and_restores_model_and_optimizer(digits: tuple) -> None:
    x_train, y_train, x_test, y_test = digits
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # Give the optimizer momentum buffers and the model gradients, as mid-training.
    stream = batches(x_train, y_train, 64, seed=1)
    for _ in range(3):
        xb, yb = next(stream)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        optimizer.step()
    model.eval()
    model[1].train()  # a submodule in another mode than its parent must keep it
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    momenta = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    train_data = [next(stream) for _ in range(21)]
    seen: list[tuple[int, float, float]] = []

    result = range_test(
        model,
        optimizer,
        train_data,
        (x_test, y_test),
        min_lr=1e-3,
        max_lr=1.0,
        iterations=300,
        callback=lambda i, lr, loss: seen.append((i, lr, loss)),
    )

    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    after = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(momenta, after, strict=True))
    after_grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.equal(a, g) for a, g in zip(grads, after_grads, strict=True))
    assert [g["lr"] for g in optimizer.param_groups] == [0.05]
    assert (model.training, model[0].training, model[1].training) == (False, False, True)

    n = result.stopped_at
    assert len(result.lrs) == len(result.losses) == len(result.smoothed_losses) == n
    assert [s[0] for s in seen] == list(range(n))
    assert [s[1] for s in seen] == list(result.lrs)
    assert result.eval_iterations[:3] == (0, 15, 30)  # default: iterations // 20
    if result.stop_reason == "completed":
        assert n == 300
        assert result.eval_iterations[-1] == 299
    # An MLP learns digits well at some LR in 0.001..1.
    assert max(result.accuracies) > 0.9
    assert result.accuracies[0] < 0.3


@pytest.mark.usefixtures("one_thread")
def test_bounds_from_a_digits_range_test_train_a_triangular_clr_to_90_percent(
    digits: tuple,
) -> None:
    x_train, y_train, x_test, y_test = digits
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    stream = batches(x_train, y_train, 64, seed=1)
    result = range_test(
        model,
        optimizer,
        [next(stream) for _ in range(21)],
        (x_test, y_test),
        min_lr=1e-3,
        max_lr=1.0,
        iterations=300,
        # Accuracy starts to rise at about lr 0.02: evaluations every 15 iterations (lr
        # steps of 0.05) would miss where, and leave the paper's rule to the loss fallback.
        eval_every=5,
    )
    bounds = suggest_bounds(result)
    assert bounds.method == "accuracy", bounds.reason
    assert result.min_lr <= bounds.base_lr < bounds.max_lr <= result.max_lr
    if result.stop_reason != "completed":
        assert bounds.max_lr < result.lrs[-1]

    torch.manual_seed(1)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=bounds.base_lr, momentum=0.9)
    step = 50  # half a cycle, in iterations (about 2.3 epochs of 22 batches)
    stream = batches(x_train, y_train, 64, seed=2)
    for iteration in range(300):
        cycle = math.floor(1 + iteration / (2 * step))
        x = abs(iteration / step - 2 * cycle + 1)
        lr = bounds.base_lr + (bounds.max_lr - bounds.base_lr) * max(0.0, 1 - x)
        for group in optimizer.param_groups:
            group["lr"] = lr
        xb, yb = next(stream)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        optimizer.step()
    with torch.inference_mode():
        accuracy = (model(x_test).argmax(dim=1) == y_test).float().mean().item()
    assert accuracy >= 0.9, bounds


@pytest.mark.usefixtures("one_thread")
def test_range_test_stops_on_divergence_and_still_restores(digits: tuple) -> None:
    x_train, y_train, _, _ = digits
    torch.manual_seed(0)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stream = batches(x_train, y_train, 64, seed=1)
    train_data = [next(stream) for _ in range(20)]
    result = range_test(
        model, optimizer, train_data, min_lr=1.0, max_lr=1e4, iterations=200, ramp="exponential"
    )
    assert result.stop_reason in ("diverged", "non_finite")
    assert result.stopped_at < 200
    assert len(result.lrs) == result.stopped_at
    assert result.accuracies == ()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert optimizer.state_dict()["state"] == {}
    assert all(p.grad is None for p in model.parameters())


def test_range_test_refuses_a_used_up_generator_and_bad_eval_every(digits: tuple) -> None:
    x_train, y_train, _, _ = digits
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stream = batches(x_train, y_train, 64, seed=1)
    with pytest.raises(ValueError, match="a generator is used up after one pass"):
        range_test(
            model,
            optimizer,
            (next(stream) for _ in range(3)),
            min_lr=0.01,
            max_lr=0.1,
            iterations=10,
        )
    with pytest.raises(ValueError, match="eval_every must be an integer >= 1, got 0"):
        range_test(
            model, optimizer, [next(stream)], min_lr=0.01, max_lr=0.1, iterations=10, eval_every=0
        )
