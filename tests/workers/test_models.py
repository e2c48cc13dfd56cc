from __future__ import annotations

import pytest
import torch
from torch import nn

from workers.models import MODELS, build_model

CONV_MODELS = ["small_cnn", "cifar10_quick", "resnet20", "resnet18"]


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(
    ("input_shape", "num_classes"), [((1, 8, 8), 10), ((3, 16, 16), 7), ((3, 32, 32), 100)]
)
def test_every_model_maps_images_to_class_logits(
    name: str, input_shape: tuple[int, int, int], num_classes: int
) -> None:
    torch.manual_seed(0)
    model = build_model(name, {}, input_shape=input_shape, num_classes=num_classes)
    assert model.training
    logits = model(torch.randn(2, *input_shape))
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()


def test_mlp_takes_vectors_and_hidden_widths() -> None:
    model = build_model("mlp", {"hidden": "32, 16"}, input_shape=(20,), num_classes=3)
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert widths == [32, 16, 3]
    assert model(torch.randn(5, 20)).shape == (5, 3)
    linear = build_model("mlp", {"hidden": ""}, input_shape=(1, 8, 8), num_classes=10)
    assert _parameters(linear) == 64 * 10 + 10


@pytest.mark.parametrize("hidden", ["a,b", "0", "32,-1", "3.5"])
def test_mlp_bad_hidden_names_the_field(hidden: str) -> None:
    with pytest.raises(ValueError, match=r"mlp\.hidden"):
        build_model("mlp", {"hidden": hidden}, input_shape=(4,), num_classes=2)


def test_cifar10_quick_matches_caffe_parameter_count() -> None:
    model = build_model("cifar10_quick", {}, input_shape=(3, 32, 32), num_classes=10)
    # conv 2432 + 25632 + 51264, ip1 (64*4*4 -> 64) 65600, ip2 650: as in Caffe's prototxt.
    assert _parameters(model) == 145_578


def test_resnet20_shortcut_options() -> None:
    a = build_model("resnet20", {}, input_shape=(3, 32, 32), num_classes=10)
    b = build_model("resnet20", {"shortcut": "B"}, input_shape=(3, 32, 32), num_classes=10)
    assert 265_000 < _parameters(a) < 275_000  # He et al.: 0.27M
    one_by_one = [m for m in b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(one_by_one) == 2 and _parameters(b) > _parameters(a)
    with pytest.raises(ValueError, match=r"resnet20\.shortcut must be one of 'A', 'B'"):
        build_model("resnet20", {"shortcut": "C"}, input_shape=(3, 32, 32), num_classes=10)


def test_resnet18_keeps_small_images_at_full_resolution_in_the_stem() -> None:
    model = build_model("resnet18", {}, input_shape=(1, 16, 16), num_classes=10)
    assert isinstance(model, nn.Module)
    conv1 = model.get_submodule("conv1")
    assert isinstance(conv1, nn.Conv2d)
    assert conv1.in_channels == 1 and conv1.stride == (1, 1) and conv1.kernel_size == (3, 3)
    assert isinstance(model.get_submodule("maxpool"), nn.Identity)


def test_small_cnn_width_and_batchnorm_options() -> None:
    model = build_model(
        "small_cnn", {"width": 4, "batchnorm": False}, input_shape=(3, 8, 8), num_classes=2
    )
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 16]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(ValueError, match=r"small_cnn\.width must be a number"):
        build_model("small_cnn", {"width": "wide"}, input_shape=(3, 8, 8), num_classes=2)
    with pytest.raises(ValueError, match=r"small_cnn\.width must be at least 1"):
        build_model("small_cnn", {"width": 0}, input_shape=(3, 8, 8), num_classes=2)


@pytest.mark.parametrize("name", CONV_MODELS)
def test_conv_models_refuse_vector_inputs(name: str) -> None:
    with pytest.raises(ValueError, match=rf"model '{name}' needs image inputs.*'mlp'"):
        build_model(name, {}, input_shape=(64,), num_classes=10)


def test_too_small_images_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"'cifar10_quick' cannot take inputs shaped \(3, 3, 3\)"):
        build_model("cifar10_quick", {}, input_shape=(3, 3, 3), num_classes=10)


def test_unknown_model_option_and_class_count_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'vgg16'; known models: mlp, small_cnn"):
        build_model("vgg16", {}, input_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ValueError, match=r"resnet18: unknown parameter 'depth'"):
        build_model("resnet18", {"depth": 34}, input_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        build_model("mlp", {}, input_shape=(4,), num_classes=1)


def test_registry_describes_every_entry() -> None:
    assert list(MODELS) == ["mlp", *CONV_MODELS]
    described = MODELS["small_cnn"].describe()
    assert described["name"] == "small_cnn" and described["summary"]
    assert [p["name"] for p in described["params"]] == ["width", "batchnorm"]
    assert described["params"][0]["default"] == 16
