"""The Engine against a hand-written PyTorch loop: same batches, same weights, same answers."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from workers.datasets import Dataset, load_dataset
from workers.engine import Engine
from workers.models import build_model

SEED = 3
BATCH = 64
LR = 0.05


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", {}, seed=0)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp(data: Dataset) -> nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", {}, input_shape=data.input_shape, num_classes=data.num_classes)


def engine_for(data: Dataset, model: nn.Module, momentum: float = 0.9) -> Engine:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=momentum)
    return Engine(model, optimizer, data, batch_size=BATCH, seed=SEED)


def hand_loop(data: Dataset, model: nn.Module, steps: int) -> list[float]:
    """What the engine should do: per epoch a permutation from a generator seeded with the
    trial's seed, full batches sliced from it in order, one SGD step each."""
    assert data.x_train is not None and data.y_train is not None
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    generator = torch.Generator().manual_seed(SEED)
    per_epoch = data.train_size // BATCH
    losses = []
    order = torch.randperm(data.train_size, generator=generator)
    for step in range(steps):
        if step and step % per_epoch == 0:
            order = torch.randperm(data.train_size, generator=generator)
        index = order[(step % per_epoch) * BATCH : (step % per_epoch + 1) * BATCH]
        loss = nn.functional.cross_entropy(model(data.x_train[index]), data.y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_matches_a_hand_written_loop_across_epochs(digits: Dataset) -> None:
    steps = 2 * digits.iterations_per_epoch(BATCH) + 5  # two reshuffles
    model = mlp(digits)
    reference = copy.deepcopy(model)
    engine = engine_for(digits, model)
    losses = [engine.step(LR).item() for _ in range(steps)]
    assert losses == hand_loop(digits, reference, steps)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(engine.model.state_dict()[name], tensor), name
    assert engine.iteration == steps
    assert engine.epoch == pytest.approx(steps / digits.iterations_per_epoch(BATCH))
    assert engine.elapsed_s > 0


def test_training_lowers_the_loss_and_raises_the_accuracy(digits: Dataset) -> None:
    engine = engine_for(digits, mlp(digits))
    before = engine.evaluate()
    for _ in range(100):
        engine.step(LR)
    after = engine.evaluate()
    assert after.loss < before.loss / 2
    assert before.accuracy < 0.3 < 0.9 < after.accuracy


def test_evaluation_is_the_held_out_accuracy_and_mean_loss(digits: Dataset) -> None:
    assert digits.x_test is not None and digits.y_test is not None
    engine = engine_for(digits, mlp(digits))
    for _ in range(10):
        engine.step(LR)
    engine.eval_batch_size = 100  # several batches, the last one partial
    evaluation = engine.evaluate()
    with torch.inference_mode():
        logits = engine.model(digits.x_test)
    expected_accuracy = (logits.argmax(dim=1) == digits.y_test).double().mean().item()
    expected_loss = nn.functional.cross_entropy(logits.double(), digits.y_test).item()
    assert evaluation.accuracy == pytest.approx(expected_accuracy, abs=1e-12)
    assert evaluation.loss == pytest.approx(expected_loss, rel=1e-6)
    assert engine.model.training  # back in training mode


def test_a_file_backed_data_set_trains_on_the_same_batches(digits: Dataset) -> None:
    assert digits.x_train is not None and digits.y_train is not None
    assert digits.x_test is not None and digits.y_test is not None
    # Tensors through torch Datasets: what a data set read from files gives the engine.
    train_set: Any = TensorDataset(digits.x_train, digits.y_train)
    test_set: Any = TensorDataset(digits.x_test, digits.y_test)
    files = Dataset(
        "digits-files",
        digits.input_shape,
        digits.num_classes,
        train_set=train_set,
        test_set=test_set,
    )
    steps = digits.iterations_per_epoch(BATCH) + 3
    in_memory = engine_for(digits, mlp(digits))
    from_files = engine_for(files, mlp(digits))
    assert [in_memory.step(LR).item() for _ in range(steps)] == [
        from_files.step(LR).item() for _ in range(steps)
    ]
    assert in_memory.evaluate().accuracy == from_files.evaluate().accuracy


def test_step_sets_lr_and_momentum_or_adams_first_beta(digits: Dataset) -> None:
    engine = engine_for(digits, mlp(digits))
    engine.step(0.02, 0.8)
    group = engine.optimizer.param_groups[0]
    assert (group["lr"], group["momentum"]) == (0.02, 0.8)
    engine.step(0.03)  # no momentum given: the last one stays
    assert (group["lr"], group["momentum"]) == (0.03, 0.8)
    model = mlp(digits)
    adam = Engine(model, torch.optim.Adam(model.parameters()), digits, batch_size=BATCH, seed=SEED)
    adam.step(0.001, 0.85)
    assert adam.optimizer.param_groups[0]["betas"] == (0.85, 0.999)


def test_a_restored_engine_continues_bit_for_bit(digits: Dataset) -> None:
    engine = engine_for(digits, mlp(digits))
    for _ in range(15):
        engine.step(LR)
    state = copy.deepcopy(engine.state_dict())
    expected = [engine.step(LR).item() for _ in range(20)]  # across an epoch's end
    torch.manual_seed(99)  # another process's global RNG: the engine must not depend on it
    restored = engine_for(digits, build_model("mlp", {}, input_shape=(1, 8, 8), num_classes=10))
    restored.load_state_dict(state)
    assert restored.iteration == 15
    assert [restored.step(LR).item() for _ in range(20)] == expected
    for name, tensor in engine.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[name], tensor), name


def test_a_batch_larger_than_the_training_set_is_refused(digits: Dataset) -> None:
    model = mlp(digits)
    with pytest.raises(ValueError, match="batch_size must be between 1 and the training set"):
        Engine(model, torch.optim.SGD(model.parameters(), lr=LR), digits, batch_size=5000, seed=0)
