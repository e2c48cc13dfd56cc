"""The engine's training speed against a hand-written PyTorch loop.

Same model, data, batch size, seed and threads; the raw loop is what a user would write
(per-epoch permutation, slice, forward, backward, step), with no schedule and no
evaluation. The engine runs a triangular arm through `workers.trials.run_arm`, which sets
the LR every iteration and evaluates at the start and the end (those two evaluations are
timed separately and taken out). Target: ratio >= 0.95.

    .venv/bin/python bench/engine_vs_raw.py [--iterations 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from workers.datasets import load_dataset
from workers.models import build_model
from workers.trials import ArmPlan, TrialSetup, build_engine, run_arm

CASES = (
    ("digits", "mlp", 64),
    ("synthetic", "small_cnn", 128),
)


def raw_loop(dataset: str, model_name: str, batch: int, iterations: int) -> float:
    data = load_dataset(dataset, {}, seed=0)
    torch.manual_seed(0)
    model = build_model(model_name, {}, input_shape=data.input_shape, num_classes=data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    assert data.x_train is not None and data.y_train is not None
    x_train, y_train = data.x_train, data.y_train
    generator = torch.Generator().manual_seed(0)
    per_epoch = len(y_train) // batch
    model.train()
    started = time.perf_counter()
    it = 0
    while it < iterations:
        perm = torch.randperm(len(y_train), generator=generator)
        for b in range(per_epoch):
            if it >= iterations:
                break
            idx = perm[b * batch : (b + 1) * batch]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            it += 1
    return iterations / (time.perf_counter() - started)


def engine_loop(dataset: str, model_name: str, batch: int, iterations: int) -> float:
    data = load_dataset(dataset, {}, seed=0)
    setup = TrialSetup(
        trial_id="bench",
        seed=0,
        model={"name": model_name, "options": {}},
        optimizer={"name": "sgd", "options": {"momentum": 0.9}},
        batch_size=batch,
    )
    plan = ArmPlan(
        policy={
            "name": "triangular",
            "params": {"base_lr": 0.01, "max_lr": 0.1, "step_size": 200},
        },
        iterations=iterations,
        eval_every=iterations,
    )
    engine = build_engine(setup, data, 0.01)
    started = time.perf_counter()
    for _ in run_arm(engine, plan):
        pass
    total = time.perf_counter() - started
    # The whole loop is timed, its two evaluations (start, end) taken out again: the raw
    # loop evaluates nothing.
    eval_started = time.perf_counter()
    engine.evaluate()
    evaluation = time.perf_counter() - eval_started
    return iterations / (total - 2 * evaluation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", default=None, help="only this data set (digits, synthetic)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.iterations} iterations")
    print(f"{'case':<22} {'raw it/s':>10} {'engine it/s':>12} {'ratio':>7}  (target >= 0.95)")
    for dataset, model_name, batch in CASES:
        if args.case and dataset != args.case:
            continue
        raw, eng = 0.0, 0.0
        # Keep the best of each, and swap which runs first every repeat: here the second
        # loop of a pair runs measurably slower than the first, whichever it is.
        for repeat in range(args.repeats):
            for loop in (raw_loop, engine_loop)[:: 1 if repeat % 2 == 0 else -1]:
                speed = loop(dataset, model_name, batch, args.iterations)
                if loop is raw_loop:
                    raw = max(raw, speed)
                else:
                    eng = max(eng, speed)
        case = f"{dataset}/{model_name}/b{batch}"
        print(f"{case:<22} {raw:>10.0f} {eng:>12.0f} {eng / raw:>7.3f}")


if __name__ == "__main__":
    main()
