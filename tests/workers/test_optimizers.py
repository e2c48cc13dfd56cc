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
    if OPTIMIZERS[name].stepping.schedule_free:
        optimizer.train()  # type: ignore[attr-defined]
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
        "sgd_schedulefree",
        "adamw_schedulefree",
        "prodigy",
        "dadapt_sgd",
        "dadapt_adam",
        "dog",
        "ldog",
    ]
    described = OPTIMIZERS["adam"].describe()
    assert described["name"] == "adam"
    assert [p["name"] for p in described["params"]][:2] == ["beta1", "beta2"]


@pytest.mark.parametrize("name", ["prodigy", "dadapt_sgd", "dadapt_adam", "dog", "ldog"])
def test_parameter_free_optimizers_build_at_a_zero_lr(name: str) -> None:
    # Their classes refuse lr <= 0; a warm-up from zero starts there, and the engine sets the
    # policy's lr before every step anyway.
    optimizer = build_optimizer(name, {}, _model().parameters(), lr=0.0)
    assert optimizer.param_groups[0]["lr"] > 0


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("sgd_schedulefree", {"warmup_steps": 5}, {"momentum": 0.9, "warmup_steps": 5}),
        ("adamw_schedulefree", {"beta1": 0.95}, {"betas": (0.95, 0.999), "r": 0.0}),
        ("prodigy", {"d_coef": 0.5, "safeguard_warmup": True}, {"d_coef": 0.5, "d": 1e-6}),
        ("dadapt_sgd", {"momentum": 0.9}, {"momentum": 0.9, "d": 1e-6}),
        ("dadapt_adam", {"decouple": True}, {"decouple": True, "eps": 1e-8}),
        ("dog", {"reps_rel": 1e-4}, {"reps_rel": 1e-4, "eps": 1e-8}),
        ("ldog", {}, {"reps_rel": 1e-6, "weight_decay": 0.0}),
    ],
)
def test_modern_options_reach_their_classes(
    name: str, options: dict[str, Any], expected: dict[str, Any]
) -> None:
    group = build_optimizer(name, options, _model().parameters(), lr=1.0).param_groups[0]
    assert {key: group[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("sgd_schedulefree", {"momentum": 0.0}, r"sgd_schedulefree\.momentum must be in \(0, 1\)"),
        ("prodigy", {"d_coef": 0.0}, r"prodigy\.d_coef must be > 0"),
        ("dog", {"reps_rel": -1.0}, r"dog\.reps_rel must be > 0"),
        ("adamw_schedulefree", {"warmup_steps": -1}, r"warmup_steps must be >= 0"),
    ],
)
def test_bad_modern_options_name_the_field(
    name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_optimizer(name, options, _model().parameters(), lr=1.0)


def test_entries_say_how_they_are_stepped_and_whether_they_batch() -> None:
    not_batchable = {name for name, entry in OPTIMIZERS.items() if not entry.batchable}
    assert not_batchable == {"prodigy", "dadapt_sgd", "dadapt_adam", "dog", "ldog"}
    described = OPTIMIZERS["dog"].describe()
    assert described["averaged"] and described["parameter_free"]
    assert not described["batchable"]
    assert OPTIMIZERS["adamw_schedulefree"].describe()["schedule_free"]
