"""The training loop shared by range-test and arm trials.

One `Engine` trains one model on one data set. The LR (and, optionally, the momentum) is
set from a pure `iteration -> value` function before every step, so a trial's whole
schedule is a function of its iteration counter and nothing else needs checkpointing.
In-memory data sets are batched by slicing a per-epoch permutation of tensors that live on
the trial's device (no DataLoader processes); file-backed ones go through a DataLoader.
`state_dict()` is a plain dict (model, optimizer, iteration, RNG states, loader position),
so a run restored from it continues bit for bit on the CPU.

The optimizer is driven as its package asks (`workers.optimizers.Stepping`): a schedule-free
one is put in eval mode for every evaluation and checkpoint and back in train mode at the next
step, so a restored run goes through the same switches as an uninterrupted one; a DoG one is
evaluated on the weights of a `PolynomialDecayAverager` checkpointed with the model.

Training time (`elapsed_s`) is measured from the first step after an evaluation to the next
evaluation or checkpoint, where the device is synchronized first: kernels still queued count
as training, and steps themselves never wait for the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from dog import PolynomialDecayAverager
from torch import nn

from workers.datasets import Dataset
from workers.optimizers import PLAIN, Stepping

LrFunction = Callable[[int], float]
# Training batches whose forward passes recompute BatchNorm statistics at a schedule-free
# optimizer's evaluation weights (the schedulefree README's recipe uses about 50).
BATCH_NORM_BATCHES = 50


@dataclass(frozen=True)
class Evaluation:
    """Held-out accuracy (0..1) and mean loss."""

    accuracy: float
    loss: float


class Engine:
    """Owns a model, its optimizer and the stream of training batches of one trial."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: Dataset,
        *,
        batch_size: int,
        seed: int,
        device: torch.device | str = "cpu",
        bf16: bool = False,
        eval_batch_size: int = 4096,
        stepping: Stepping = PLAIN,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).train()  # evaluate() puts it back in train mode
        self.optimizer = optimizer
        self.stepping = stepping
        # Made after the model is on its device: the averager copies it.
        self.averager = PolynomialDecayAverager(self.model) if stepping.averaged else None
        # A schedule-free optimizer in eval mode, as its package builds it.
        self._optimizer_evaluating = stepping.schedule_free
        self._clock_started: float | None = None
        self.data = data
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.bf16 = bf16
        self.loss_fn = nn.CrossEntropyLoss()
        self.iteration = 0
        self._elapsed_s = 0.0  # training wall time up to the last stop of the clock
        # The shuffling generator is the trial's own, so evaluation or other code that
        # draws from torch's global RNG cannot change the order of batches.
        self._generator = torch.Generator().manual_seed(seed)
        self.iterations_per_epoch = data.iterations_per_epoch(batch_size)
        if self.iterations_per_epoch < 1:
            raise ValueError(
                f"batch_size {batch_size} is larger than the training set ({data.train_size})"
            )
        self._perm: torch.Tensor | None = None
        self._loader_iter: Iterator[Any] | None = None
        self._pos = 0  # batches taken from the current epoch
        if data.in_memory:
            assert data.x_train is not None and data.y_train is not None
            self._x_train = data.x_train.to(self.device)
            self._y_train = data.y_train.to(self.device)
        if data.x_test is not None and data.y_test is not None:
            self._x_test = data.x_test.to(self.device)
            self._y_test = data.y_test.to(self.device)

    # ----------------------------------------------------------------------------------
    # batches
    def _autocast(self) -> AbstractContextManager[Any]:
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pos >= self.iterations_per_epoch:
            self._perm = None
            self._loader_iter = None
            self._pos = 0
        if self._perm is None:
            # The epoch's order is drawn from the trial's own generator and kept in the
            # checkpoint, so a restored run continues with the same batches.
            self._perm = torch.randperm(self.data.train_size, generator=self._generator)
            if self.data.in_memory:
                self._perm = self._perm.to(self.device)
        if self.data.in_memory:
            idx = self._perm[self._pos * self.batch_size : (self._pos + 1) * self.batch_size]
            self._pos += 1
            return self._x_train[idx], self._y_train[idx]
        if self._loader_iter is None:
            assert self.data.train_set is not None
            loader = torch.utils.data.DataLoader(
                self.data.train_set,
                batch_size=self.batch_size,
                sampler=self._perm[self._pos * self.batch_size :].tolist(),
                drop_last=True,
                num_workers=0,
                pin_memory=self.device.type == "cuda",
            )
            self._loader_iter = iter(loader)
        x, y = next(self._loader_iter)
        self._pos += 1
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    # ----------------------------------------------------------------------------------
    # training and evaluation
    def step(self, lr: float, momentum: float | None = None) -> torch.Tensor:
        """One iteration at `lr`; returns the batch loss as a 0-d tensor (no sync)."""
        if self._clock_started is None:
            self._clock_started = time.perf_counter()
        if self._optimizer_evaluating:
            self.optimizer.train()  # type: ignore[attr-defined]
            self._optimizer_evaluating = False
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if momentum is not None:
                if "betas" in group:
                    group["betas"] = (momentum, group["betas"][1])
                else:
                    group["momentum"] = momentum
        x, y = self._next_batch()
        with self._autocast():
            loss = self.loss_fn(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.averager is not None:
            self.averager.step()
        self.iteration += 1
        return loss.detach()

    def _stop_clock(self) -> None:
        """Add the training time since the clock started, once the device has finished it."""
        if self._clock_started is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._elapsed_s += time.perf_counter() - self._clock_started
        self._clock_started = None

    @property
    def elapsed_s(self) -> float:
        """Seconds of training, carried across restores; exact right after an evaluation.

        Between evaluations it includes only what the host has seen: queued kernels are
        counted once the next evaluation synchronizes the device.
        """
        running = 0.0 if self._clock_started is None else time.perf_counter() - self._clock_started
        return self._elapsed_s + running

    def _optimizer_to_eval(self) -> None:
        """A schedule-free optimizer's evaluation weights in the model (its README's rule)."""
        if self.stepping.schedule_free and not self._optimizer_evaluating:
            self.optimizer.eval()  # type: ignore[attr-defined]
            self._optimizer_evaluating = True
            self._recompute_batch_norm()

    @torch.no_grad()
    def _recompute_batch_norm(self) -> None:
        """BatchNorm statistics of the evaluation weights, from fixed training batches.

        The statistics gathered in training belong to other weights (schedule-free's y, not
        x). The first batches of the training set in its stored order are used, so the
        shuffling generator and the batch stream are untouched.
        """
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [norm.momentum for norm in norms]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the batches below
        self.model.train()
        for x, _ in self._train_batches_in_order(BATCH_NORM_BATCHES):
            with self._autocast():
                self.model(x)
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum

    def _train_batches_in_order(self, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.data.in_memory:
            for i in range(min(count, self.iterations_per_epoch)):
                start = i * self.batch_size
                yield (
                    self._x_train[start : start + self.batch_size],
                    self._y_train[start : start + self.batch_size],
                )
            return
        assert self.data.train_set is not None
        loader = torch.utils.data.DataLoader(
            self.data.train_set, batch_size=self.batch_size, num_workers=0
        )
        for i, (x, y) in enumerate(loader):
            if i >= count:
                return
            yield x.to(self.device), y.to(self.device)

    def step_size(self) -> float | None:
        """The step size the optimizer estimated (Prodigy, D-Adaptation, DoG), else None."""
        reader = self.stepping.step_size
        return None if reader is None else reader(self.optimizer)

    @property
    def epoch(self) -> float:
        return self.iteration / self.iterations_per_epoch

    @torch.inference_mode()
    def evaluate(self) -> Evaluation:
        """Accuracy and loss on the held-out set, in large batches.

        Schedule-free optimizers are evaluated at their averaged iterate, DoG at the
        polynomial-decay averaged weights.
        """
        self._stop_clock()
        self._optimizer_to_eval()
        model = self.model if self.averager is None else self.averager.averaged_model
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        for x, y in self._test_batches():
            with self._autocast():
                logits = model(x)
            loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(dim=1) == y).sum()
            count += len(y)
        model.train()
        return Evaluation(accuracy=correct.item() / count, loss=loss_sum.item() / count)

    def _test_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.data.x_test is not None:
            for start in range(0, len(self._y_test), self.eval_batch_size):
                end = start + self.eval_batch_size
                yield self._x_test[start:end], self._y_test[start:end]
            return
        assert self.data.test_set is not None
        loader = torch.utils.data.DataLoader(
            self.data.test_set, batch_size=self.eval_batch_size, num_workers=0
        )
        for x, y in loader:
            yield x.to(self.device), y.to(self.device)

    # ----------------------------------------------------------------------------------
    # checkpoints: plain dicts
    def state_dict(self) -> dict[str, Any]:
        # Checkpoints hold a schedule-free optimizer in eval mode, as its README asks.
        self._stop_clock()
        self._optimizer_to_eval()
        return {
            "averager": None if self.averager is None else self.averager.state_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "elapsed_s": self._elapsed_s,
            "generator": self._generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "perm": None if self._perm is None else self._perm.cpu(),
            "pos": self._pos,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.averager is not None:
            self.averager.load_state_dict(state["averager"])
        # Saved in eval mode: the next step switches back to train mode.
        self._optimizer_evaluating = self.stepping.schedule_free
        self._clock_started = None
        self.iteration = state["iteration"]
        self._elapsed_s = state["elapsed_s"]
        self._generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        perm = state["perm"]
        on_device = perm is not None and self.data.in_memory
        self._perm = perm.to(self.device) if on_device else perm
        self._pos = state["pos"]
        self._loader_iter = None
