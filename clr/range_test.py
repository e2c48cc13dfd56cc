"""The LR range test (Smith 2017, section 3.3): raise the LR over a short run, record the curves.

`range_test` leaves the model and optimizer as it found them (weights, buffers, gradients,
optimizer state, param-group LRs, train/eval mode), so a caller can train the same objects
afterwards. `LossMonitor` holds the smoothing and stop rule on its own so that a training
engine running the test inside its own loop applies the same rule.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

RAMPS = ("linear", "exponential")
# Rows per forward pass when held-out data comes as one (x, y) tensor pair.
EVAL_BATCH = 1024
Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_ramp(min_lr: float, max_lr: float, iterations: int, ramp: str) -> None:
    if not (isinstance(min_lr, (int, float)) and math.isfinite(min_lr) and min_lr > 0):
        raise ValueError(f"min_lr must be a finite number > 0, got {min_lr!r}")
    if not (isinstance(max_lr, (int, float)) and math.isfinite(max_lr) and max_lr > min_lr):
        raise ValueError(f"max_lr must be a finite number > min_lr ({min_lr!r}), got {max_lr!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 2:
        raise ValueError(f"iterations must be an integer >= 2, got {iterations!r}")
    if ramp not in RAMPS:
        raise ValueError(f"ramp must be one of {', '.join(RAMPS)}, got {ramp!r}")


def lr_ramp(
    iteration: int, min_lr: float, max_lr: float, iterations: int, ramp: str = "linear"
) -> float:
    """LR at `iteration` (0-based) of a range test: min_lr at 0, max_lr at iterations - 1.

    "linear" is the paper's ramp; "exponential" is geometric (a constant LR ratio per
    iteration), which spends as many iterations on each decade of a wide range.
    """
    _check_ramp(min_lr, max_lr, iterations, ramp)
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"iteration must be an integer >= 0, got {iteration!r}")
    if iteration >= iterations:
        raise ValueError(f"iteration must be < iterations ({iterations}), got {iteration}")
    fraction = iteration / (iterations - 1)
    if ramp == "linear":
        return min_lr + (max_lr - min_lr) * fraction
    return float(min_lr * (max_lr / min_lr) ** fraction)


class LossMonitor:
    """Bias-corrected exponential smoothing of the training loss, and the range test's stop rule.

    `smoothing` is the weight of the newest loss: avg = (1 - smoothing) * avg + smoothing * loss,
    smoothed = avg / (1 - (1 - smoothing) ** n) after n losses (the division removes the pull
    towards the zero start, as in fast.ai). 0.05 averages over about the last 20 iterations.
    """

    def __init__(self, smoothing: float = 0.05, stop_factor: float = 4.0) -> None:
        if not (isinstance(smoothing, (int, float)) and 0 < smoothing <= 1):
            raise ValueError(f"smoothing must be a number in (0, 1], got {smoothing!r}")
        if not (isinstance(stop_factor, (int, float)) and stop_factor > 1):
            raise ValueError(f"stop_factor must be a number > 1, got {stop_factor!r}")
        self.smoothing = float(smoothing)
        self.stop_factor = float(stop_factor)
        self._avg = 0.0
        self._count = 0
        self._best = math.inf
        self._stop_reason: str | None = None

    def update(self, loss: float) -> float:
        """Add one raw loss; return the smoothed loss (the raw value itself if it is not finite)."""
        loss = float(loss)
        if not math.isfinite(loss):
            # A NaN or inf would poison the average for good; the run is over anyway.
            self._stop_reason = "non_finite"
            return loss
        decay = 1.0 - self.smoothing
        self._count += 1
        self._avg = decay * self._avg + self.smoothing * loss
        smoothed = self._avg / (1.0 - decay**self._count)
        if self._stop_reason is None and smoothed > self.stop_factor * self._best:
            self._stop_reason = "diverged"
        self._best = min(self._best, smoothed)
        return smoothed

    @property
    def stop_reason(self) -> str | None:
        """ "non_finite", "diverged" or None while the test may go on; it stays once set."""
        return self._stop_reason


def _floats_out(values: tuple[float, ...]) -> list[float | None]:
    # JSON has no NaN/inf; a non-finite loss (the one that stopped the test) travels as null.
    return [v if math.isfinite(v) else None for v in values]


def _floats_in(values: Iterable[float | None]) -> tuple[float, ...]:
    return tuple(math.nan if v is None else float(v) for v in values)


@dataclass(frozen=True)
class RangeTestResult:
    """What one range test planned and recorded.

    `lrs`, `losses`, `smoothed_losses` hold one entry per iteration run (`stopped_at` of them,
    including the one that stopped the test, whose loss may be NaN/inf); `eval_*` and
    `accuracies` (fractions in [0, 1]) one entry per evaluation, empty without held-out data.
    """

    min_lr: float
    max_lr: float
    ramp: str
    iterations: int
    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed_losses: tuple[float, ...]
    eval_iterations: tuple[int, ...]
    eval_lrs: tuple[float, ...]
    accuracies: tuple[float, ...]
    eval_losses: tuple[float, ...]
    stopped_at: int
    stop_reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists; non-finite floats as None)."""
        out = asdict(self)
        for name in ("lrs", "eval_lrs", "accuracies", "eval_iterations"):
            out[name] = list(out[name])
        for name in ("losses", "smoothed_losses", "eval_losses"):
            out[name] = _floats_out(out[name])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RangeTestResult:
        """Inverse of `to_dict`."""
        return cls(
            min_lr=float(data["min_lr"]),
            max_lr=float(data["max_lr"]),
            ramp=str(data["ramp"]),
            iterations=int(data["iterations"]),
            lrs=tuple(float(v) for v in data["lrs"]),
            losses=_floats_in(data["losses"]),
            smoothed_losses=_floats_in(data["smoothed_losses"]),
            eval_iterations=tuple(int(v) for v in data["eval_iterations"]),
            eval_lrs=tuple(float(v) for v in data["eval_lrs"]),
            accuracies=tuple(float(v) for v in data["accuracies"]),
            eval_losses=_floats_in(data["eval_losses"]),
            stopped_at=int(data["stopped_at"]),
            stop_reason=str(data["stop_reason"]),
        )


class RangeTestRecorder:
    """A range test as it runs: its LR ramp, the curves it records, when it evaluates and
    when it stops. `range_test` drives it, and so does a training engine that runs the test
    in its own loop (`workers`), so both record the same points.

    Per iteration: `lr_at(iteration)`, one training step at that LR, `record_loss`; stop
    when `stop_reason` is set; else evaluate when `evaluation_due(iteration)` (iteration 0,
    every `eval_every`, the last) and `record_evaluation`. `result()` gives what ran.
    """

    def __init__(
        self,
        *,
        min_lr: float,
        max_lr: float,
        iterations: int,
        ramp: str = "linear",
        eval_every: int,
        smoothing: float = 0.05,
        stop_factor: float = 4.0,
    ) -> None:
        _check_ramp(min_lr, max_lr, iterations, ramp)
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(f"eval_every must be an integer >= 1, got {eval_every!r}")
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.iterations = iterations
        self.ramp = ramp
        self.eval_every = eval_every
        self.monitor = LossMonitor(smoothing, stop_factor)
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed_losses: list[float] = []
        self.eval_iterations: list[int] = []
        self.eval_lrs: list[float] = []
        self.accuracies: list[float] = []
        self.eval_losses: list[float] = []

    def lr_at(self, iteration: int) -> float:
        return lr_ramp(iteration, self.min_lr, self.max_lr, self.iterations, self.ramp)

    def record_loss(self, lr: float, loss: float) -> float:
        """Record the next iteration's LR and raw training loss; return the smoothed loss."""
        smoothed = self.monitor.update(loss)
        self.lrs.append(lr)
        self.losses.append(float(loss))
        self.smoothed_losses.append(smoothed)
        return smoothed

    @property
    def stop_reason(self) -> str | None:
        """The monitor's: "non_finite" or "diverged" once the test must stop, else None."""
        return self.monitor.stop_reason

    def evaluation_due(self, iteration: int) -> bool:
        """Whether held-out data is evaluated after `iteration`: at 0, every `eval_every`
        and at the last iteration, never once the test has stopped."""
        return self.stop_reason is None and (
            iteration % self.eval_every == 0 or iteration == self.iterations - 1
        )

    def record_evaluation(self, iteration: int, lr: float, accuracy: float, loss: float) -> None:
        self.eval_iterations.append(iteration)
        self.eval_lrs.append(lr)
        self.accuracies.append(accuracy)
        self.eval_losses.append(loss)

    def result(self) -> RangeTestResult:
        return RangeTestResult(
            min_lr=self.min_lr,
            max_lr=self.max_lr,
            ramp=self.ramp,
            iterations=self.iterations,
            lrs=tuple(self.lrs),
            losses=tuple(self.losses),
            smoothed_losses=tuple(self.smoothed_losses),
            eval_iterations=tuple(self.eval_iterations),
            eval_lrs=tuple(self.eval_lrs),
            accuracies=tuple(self.accuracies),
            eval_losses=tuple(self.eval_losses),
            stopped_at=len(self.lrs),
            stop_reason=self.stop_reason or "completed",
        )


def _batches_forever(train_data: Iterable[Batch]) -> Iterator[Batch]:
    # Re-iterating (rather than itertools.cycle) lets a shuffling DataLoader reshuffle each pass.
    while True:
        empty = True
        for batch in train_data:
            empty = False
            yield batch
        if empty:
            raise ValueError(
                "train_data must yield (x, y) batches on every pass over it; a pass yielded"
                " none (a generator is used up after one pass: pass a list or a DataLoader)"
            )


def _val_batches(val_data: Batch | Iterable[Batch]) -> Iterable[Batch]:
    if isinstance(val_data, tuple) and len(val_data) == 2 and isinstance(val_data[0], torch.Tensor):
        x, y = val_data
        starts = range(0, len(x), EVAL_BATCH)
        return [(x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]) for i in starts]
    return val_data


def _evaluate(
    model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn, device: torch.device
) -> tuple[float, float]:
    """(accuracy, mean loss) over held-out batches, in eval mode without autograd."""
    model.eval()
    correct = 0
    total = 0
    loss_sum = 0.0
    with torch.inference_mode():
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss_sum += float(loss_fn(out, y)) * len(y)
            correct += int((out.argmax(dim=1) == y).sum())
            total += len(y)
    if total == 0:
        raise ValueError(
            "val_data must hold at least one example on every evaluation, it held none"
            " (a generator is used up after one pass: pass a tensor pair or a list)"
        )
    return correct / total, loss_sum / total


def range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_data: Iterable[Batch],
    val_data: Batch | Iterable[Batch] | None = None,
    *,
    min_lr: float,
    max_lr: float,
    iterations: int,
    ramp: str = "linear",
    eval_every: int | None = None,
    loss_fn: LossFn | None = None,
    device: torch.device | str | None = None,
    smoothing: float = 0.05,
    stop_factor: float = 4.0,
    callback: Callable[[int, float, float], None] | None = None,
) -> RangeTestResult:
    """Run an LR range test on `model` with `optimizer`, then restore both as they were.

    `train_data` is an iterable of (x, y) batches, iterated again as often as needed;
    `val_data` an (x, y) tensor pair or an iterable of batches, evaluated at iteration 0,
    every `eval_every` iterations (default: iterations // 20) and at the last one.
    The model stays where it is; batches are moved to `device` (default: the model's).
    `callback(iteration, lr, smoothed_loss)` is called after every iteration.
    """
    _check_ramp(min_lr, max_lr, iterations, ramp)  # before iterations // 20
    if eval_every is None:
        eval_every = max(1, iterations // 20)
    recorder = RangeTestRecorder(
        min_lr=min_lr,
        max_lr=max_lr,
        iterations=iterations,
        ramp=ramp,
        eval_every=eval_every,
        smoothing=smoothing,
        stop_factor=stop_factor,
    )
    loss_fn = loss_fn if loss_fn is not None else nn.functional.cross_entropy
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)

    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    modes = [(module, module.training) for module in model.modules()]
    grads = [(p, None if p.grad is None else p.grad.clone()) for p in model.parameters()]

    try:
        batches = _batches_forever(train_data)
        model.train()
        for iteration in range(iterations):
            lr = recorder.lr_at(iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            raw = float(loss.detach())
            if math.isfinite(raw):
                loss.backward()
                optimizer.step()
            smoothed = recorder.record_loss(lr, raw)
            if callback is not None:
                callback(iteration, lr, smoothed)
            if recorder.stop_reason is not None:
                break
            if val_data is not None and recorder.evaluation_due(iteration):
                accuracy, eval_loss = _evaluate(model, _val_batches(val_data), loss_fn, device)
                recorder.record_evaluation(iteration, lr, accuracy, eval_loss)
                model.train()
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        for module, training in modes:
            module.training = training
        for p, grad in grads:
            p.grad = grad
    return recorder.result()
