"""Models a study can train, each adapted to its data set's input shape and class count.

``build_model(name, options, input_shape=..., num_classes=...)`` checks the options against
the entry's declared parameters and returns a freshly initialised ``nn.Module`` whose
forward maps ``(N, *input_shape)`` float tensors to ``(N, num_classes)`` logits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
import torchvision
from torch import nn

from clr.params import Param, Registered, check_params

ModelBuilder = Callable[[dict[str, Any], tuple[int, ...], int], nn.Module]


@dataclass(frozen=True)
class ModelEntry(Registered):
    """One model of the registry: its declared options and the function that builds it."""

    name: str
    params: tuple[Param, ...]
    summary: str
    build: ModelBuilder


def _image_shape(model: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model {model!r} needs image inputs shaped (channels, height, width), "
            f"got input shape {input_shape}; use 'mlp' for vector data"
        )
    c, h, w = input_shape
    return c, h, w


MAX_HIDDEN_LAYERS = 64
# Widths past this overflow the size arithmetic of a layer before its parameters are counted;
# MAX_MODEL_PARAMETERS refuses far smaller models anyway.
MAX_LAYER_WIDTH = 1_000_000


def _parse_hidden(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")] if text.strip() else []
    if len(parts) > MAX_HIDDEN_LAYERS:
        raise ValueError(
            f"mlp.hidden has {len(parts)} layers, above the limit of {MAX_HIDDEN_LAYERS}"
        )
    # isdecimal, not isdigit: int() refuses superscripts such as '²' that isdigit accepts.
    if not all(part.isdecimal() and int(part) > 0 for part in parts):
        raise ValueError(
            f"mlp.hidden must be comma-separated positive layer widths like '128,64' "
            f"(or '' for none), got {text!r}"
        )
    widths = [int(part) for part in parts]
    if any(width > MAX_LAYER_WIDTH for width in widths):
        raise ValueError(
            f"mlp.hidden has a layer of {max(widths)} units, above the limit of {MAX_LAYER_WIDTH}"
        )
    return widths


def _build_mlp(
    options: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    sizes = [math.prod(input_shape), *_parse_hidden(options["hidden"])]
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], num_classes))
    return nn.Sequential(*layers)


def _build_small_cnn(
    options: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    channels, _, _ = _image_shape("small_cnn", input_shape)
    width: int = options["width"]
    if width < 1:
        raise ValueError(f"small_cnn.width must be at least 1, got {width}")
    widths = [channels, width, 2 * width, 4 * width]
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Conv2d(fan_in, fan_out, 3, padding=1, bias=not options["batchnorm"]))
        if options["batchnorm"]:
            layers.append(nn.BatchNorm2d(fan_out))
        layers.append(nn.ReLU())
        if i < 2:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
    # Global pooling lets the same network take 8x8 digits and 32x32 CIFAR images.
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes)]
    return nn.Sequential(*layers)


def _build_cifar10_quick(
    options: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Caffe's examples/cifar10/cifar10_quick_train_test.prototxt, layer for layer.

    Caffe pools with ceil mode, so 32x32 inputs reach the first fully connected layer as
    64x4x4 (145,578 parameters for 10 classes). Weights keep PyTorch's default init:
    Caffe's (gaussian std 1e-4 for conv1) was tuned for raw 0-255 pixels, not standardised ones.
    """
    channels, height, width = _image_shape("cifar10_quick", input_shape)
    features = nn.Sequential(
        nn.Conv2d(channels, 32, 5, padding=2),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.ReLU(),
        nn.Conv2d(32, 32, 5, padding=2),
        nn.ReLU(),
        nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(),
    )
    flat = _probe_features(features, "cifar10_quick", (channels, height, width))
    return nn.Sequential(features, nn.Linear(flat, 64), nn.Linear(64, num_classes))


class _BasicBlock(nn.Module):
    """ResNet basic block; option A pads the identity with zero channels, B projects it."""

    def __init__(self, fan_in: int, fan_out: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(fan_in, fan_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(fan_out)
        self.conv2 = nn.Conv2d(fan_out, fan_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(fan_out)
        self.stride = stride
        self.extra_channels = fan_out - fan_in
        self.projection: nn.Module | None = None
        if (stride != 1 or fan_in != fan_out) and shortcut == "B":
            self.projection = nn.Sequential(
                nn.Conv2d(fan_in, fan_out, 1, stride, bias=False), nn.BatchNorm2d(fan_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.projection is not None:
            identity = self.projection(x)
        else:
            identity = x[:, :, :: self.stride, :: self.stride]
            if self.extra_channels:
                identity = nn.functional.pad(identity, (0, 0, 0, 0, 0, self.extra_channels))
        return torch.relu(out + identity)


def _build_resnet20(
    options: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """He et al. 2016, section 4.2: 3 stages of 3 basic blocks, 16/32/64 channels (n=3)."""
    channels, _, _ = _image_shape("resnet20", input_shape)
    layers: list[nn.Module] = [
        nn.Conv2d(channels, 16, 3, 1, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
    ]
    fan_in = 16
    for stage, fan_out in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(_BasicBlock(fan_in, fan_out, stride, options["shortcut"]))
            fan_in = fan_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    model = nn.Sequential(*layers)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


def _build_resnet18(
    options: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """torchvision's resnet18 with the usual small-image stem: 3x3 conv, stride 1, no maxpool."""
    channels, _, _ = _image_shape("resnet18", input_shape)
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def _probe_features(module: nn.Module, name: str, input_shape: tuple[int, ...]) -> int:
    """Width of `module`'s flattened output for one input, or a ValueError if it cannot run."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *input_shape))
    except RuntimeError as exc:
        raise ValueError(f"model {name!r} cannot take inputs shaped {input_shape}: {exc}") from exc
    finally:
        module.train(was_training)
    return int(out.shape[1])


MODELS: Mapping[str, ModelEntry] = MappingProxyType(
    {
        entry.name: entry
        for entry in (
            ModelEntry(
                "mlp",
                (
                    Param(
                        "hidden",
                        "str",
                        "128,64",
                        "comma-separated hidden layer widths; '' for a linear model",
                    ),
                ),
                "multilayer perceptron with ReLU; flattens any input",
                _build_mlp,
            ),
            ModelEntry(
                "small_cnn",
                (
                    Param(
                        "width",
                        "int",
                        16,
                        "channels of the first conv layer (x2, x4 after)",
                        maximum=MAX_LAYER_WIDTH,
                    ),
                    Param("batchnorm", "bool", True, "batch normalisation after each conv"),
                ),
                "three 3x3 conv layers and global average pooling; fast on CPU",
                _build_small_cnn,
            ),
            ModelEntry(
                "cifar10_quick",
                (),
                "Caffe's 'cifar10 quick' network, used for the paper's CIFAR-10 experiments",
                _build_cifar10_quick,
            ),
            ModelEntry(
                "resnet20",
                (
                    Param(
                        "shortcut",
                        "str",
                        "A",
                        "A: zero-padded identity shortcuts (the paper's CIFAR choice); "
                        "B: 1x1 conv projections where the shape changes",
                        choices=("A", "B"),
                    ),
                ),
                "CIFAR ResNet-20 of He et al. 2016 (3 stages x 3 basic blocks, 16/32/64)",
                _build_resnet20,
            ),
            ModelEntry(
                "resnet18",
                (),
                "torchvision ResNet-18 with a 3x3 stride-1 stem and no max pooling",
                _build_resnet18,
            ),
        )
    }
)


def count_parameters(
    name: str, options: Mapping[str, Any], *, input_shape: tuple[int, ...], num_classes: int
) -> int:
    """Parameters of model `name` for this input shape, counted without allocating them."""
    # On the meta device tensors have shapes but no storage: an absurd width costs nothing.
    with torch.device("meta"):
        model = build_model(name, options, input_shape=input_shape, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def build_model(
    name: str, options: Mapping[str, Any], *, input_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Build model `name` for inputs shaped `input_shape` and `num_classes` classes."""
    entry = MODELS.get(name)
    if entry is None:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    checked = check_params(name, entry.params, options)
    return entry.build(checked, tuple(input_shape), num_classes)
