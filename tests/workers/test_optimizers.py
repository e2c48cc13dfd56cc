from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from workers.optimizers import OPTIMIZERS, build_optimizer


def _model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(4, 3)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_builds_and_steps(name: str) -> None:
    model = _model()
    before = model.weight.detach().clone()
    optimizer = build_optimizer(name, {}, model.parameters(), lr=0.1)
    assert optimizer.param_groups[0]["lr"] == 0.1
    loss = model(torch.randn(8, 4)).square().mean()
    loss.backward()
    optimizer.step()
    assert not torch.equal(model.weight, before)


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("sgd", {}, {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0}),
        ("sgd", {"momentum": 0.5, "nesterov": True}, {"momentum": 0.5, "nesterov": True}),
        ("nesterov", {}, {"momentum": 0.9, "nesterov": True}),
        ("adam", {"beta1": 0.8, "beta2": 0.99}, {"betas": (0.8, 0.99), "eps": 1e-8}),
        ("adamw", {}, {"betas": (0.9, 0.999), "weight_decay": 0.01}),
        ("rmsprop", {"alpha": 0.9, "centered": True}, {"alpha": 0.9, "centered": True}),
        ("adagrad", {"lr_decay": 0.01}, {"lr_decay": 0.01}),
        ("adadelta", {"rho": 0.95}, {"rho": 0.95, "eps": 1e-6}),
    ],
)
def test_options_reach_torch(name: str, options: dict[str, Any], expected: dict[str, Any]) -> None:
    group = build_optimizer(name, options, _model().parameters(), lr=0.01).param_groups[0]
    assert {key: group[key] for key in expected} == expected


def test_nesterov_without_momentum_is_refused() -> None:
    with pytest.raises(ValueError, match=r"sgd\.nesterov needs momentum > 0"):
        build_optimizer("sgd", {"nesterov": True, "momentum": 0.0}, _model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"nesterov\.momentum must be > 0"):
        build_optimizer("nesterov", {"momentum": 0}, _model().parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("sgd", {"momentum": "high"}, r"sgd\.momentum must be a number"),
        ("sgd", {"momentum": -0.1}, r"sgd\.momentum must be >= 0"),
        ("adam", {"beta1": 1.0}, r"adam\.beta1 must be in \[0, 1\)"),
        ("adam", {"betas": [0.9, 0.9]}, r"adam: unknown parameter 'betas'"),
        ("adam", {"lr": 0.1}, r"adam: unknown parameter 'lr'"),
        ("rmsprop", {"eps": 0.0}, r"rmsprop\.eps must be > 0"),
        ("adagrad", {"weight_decay": -1.0}, r"adagrad\.weight_decay must be >= 0"),
        ("adamw", {"amsgrad": 1}, r"adamw\.amsgrad must be true or false"),
    ],
)
def test_bad_options_name_the_field(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_optimizer(name, options, _model().parameters(), lr=0.1)


def test_unknown_optimizer_and_negative_lr_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown optimizer 'lion'; known optimizers: sgd"):
        build_optimizer("lion", {}, _model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        build_optimizer("sgd", {}, _model().parameters(), lr=-1.0)


def test_registry_describes_every_entry() -> None:
    assert list(OPTIMIZERS) == [
        "sgd",
        "nesterov",
        "adam",
        "adamw",
        "rmsprop",
        "adagrad",
        "adadelta",
    ]
    described = OPTIMIZERS["adam"].describe()
    assert described["name"] == "adam"
    assert [p["name"] for p in described["params"]][:2] == ["beta1", "beta2"]
