"""How many iterations the small CNN needs on the synthetic data set, per difficulty.

A plain PyTorch loop (batch 128, SGD momentum 0.9, fixed LR) printing held-out accuracy
every 200 iterations, so the default difficulty can be chosen to make iterations-to-target
comparisons meaningful (still rising at 1-2k iterations, flat only after several thousand).

    .venv/bin/python bench/synthetic_difficulty.py --iterations 8000

Measured (default data: 20,000 16x16 greyscale images, difficulty 0.5; small_cnn width 16;
lr 0.05; one run, torch seed 0, 1 thread), held-out accuracy by iteration:
    200: 0.15   600: 0.43   1000: 0.55   1400: 0.64   2000: 0.72
    2600: 0.71  3000: 0.76  3600: 0.77   4000: 0.75
(a fixed LR's evaluations scatter by about +-0.04). For comparison, the older default (4 modes
per class on a 4x4 grid, difficulty 1.0) reached 0.70 by 2,000 iterations and then only
overfitted (0.69 at 5,000), and digits plateaus within ~300 iterations.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from workers.datasets import load_dataset
from workers.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulty", type=float, nargs="+", default=[0.5])
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke-test", action="store_true", help="400 iterations, small data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for difficulty in args.difficulty:
        run(difficulty, args.iterations, args.lr, args.batch_size, args.smoke_test)


def run(difficulty: float, iterations: int, lr: float, batch_size: int, smoke: bool) -> None:
    options: dict[str, object] = {"difficulty": difficulty}
    if smoke:
        options |= {"train_size": 2000, "test_size": 500}
        iterations = 400
    started = time.perf_counter()
    data = load_dataset("synthetic", options)
    print(f"difficulty {difficulty}: generated in {time.perf_counter() - started:.2f} s")
    assert data.x_train is not None and data.y_train is not None
    assert data.x_test is not None and data.y_test is not None
    torch.manual_seed(0)
    model = build_model("small_cnn", {}, input_shape=data.input_shape, num_classes=data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    per_epoch = data.iterations_per_epoch(batch_size)
    started = time.perf_counter()
    order = torch.randperm(data.train_size)
    for it in range(1, iterations + 1):
        step = (it - 1) % per_epoch
        if step == 0:
            order = torch.randperm(data.train_size)
        idx = order[step * batch_size : (step + 1) * batch_size]
        model.train()
        loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if it % 200 == 0:
            model.eval()
            with torch.inference_mode():
                accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
            elapsed = time.perf_counter() - started
            print(f"  it {it:6d}  loss {loss.item():.3f}  acc {accuracy:.4f}  {elapsed:.0f} s")


if __name__ == "__main__":
    main()
