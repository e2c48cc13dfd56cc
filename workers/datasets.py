"""Data sets a study can train on; nothing here ever downloads.

``load_dataset(name, options)`` checks the options against the entry's declared parameters
and returns a ``Dataset``: in-memory tensors (float32 inputs, int64 labels), which the
engine batches by slicing a per-epoch permutation, or file-backed torch Datasets
(``imagefolder``). Files are read from under ``DATA_ROOT`` only (env var, else ``./data``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torchvision
from torch.nn import functional
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Subset

from clr.params import Param, Registered, check_params


@dataclass(frozen=True)
class Dataset:
    """A loaded data set: either in-memory tensors or file-backed torch Datasets.

    ``input_shape`` is (C, H, W) for images and (D,) for vectors; labels are 0..num_classes-1.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    x_train: torch.Tensor | None = None
    y_train: torch.Tensor | None = None
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    train_set: TorchDataset[tuple[torch.Tensor, int]] | None = None
    test_set: TorchDataset[tuple[torch.Tensor, int]] | None = None

    def __post_init__(self) -> None:
        tensors = (self.x_train, self.y_train, self.x_test, self.y_test)
        sets = (self.train_set, self.test_set)
        if not (
            (all(t is not None for t in tensors) and all(s is None for s in sets))
            or (all(t is None for t in tensors) and all(s is not None for s in sets))
        ):
            raise ValueError(
                f"data set {self.name!r} needs either x/y train/test tensors or "
                "train_set/test_set, not a mix"
            )

    @property
    def in_memory(self) -> bool:
        return self.x_train is not None

    @property
    def train_size(self) -> int:
        return len(self.y_train if self.y_train is not None else self.train_set)  # type: ignore[arg-type]

    @property
    def test_size(self) -> int:
        return len(self.y_test if self.y_test is not None else self.test_set)  # type: ignore[arg-type]

    def iterations_per_epoch(self, batch_size: int) -> int:
        """Full batches per epoch: the last partial batch is dropped, so every step sees
        `batch_size` examples (and BatchNorm never sees a batch of one)."""
        if not 1 <= batch_size <= self.train_size:
            raise ValueError(
                f"batch_size must be between 1 and the training set size "
                f"{self.train_size} of {self.name!r}, got {batch_size}"
            )
        return self.train_size // batch_size

    def validation_split(self, fraction: float, seed: int = 0) -> Dataset:
        """The training set split in two: a seeded `fraction` of it becomes the held-out part.

        Tuning searches on this, so the test set never chooses a learning rate: a baseline
        tuned on the test set would look better than it is. The split is stratified, so
        every class keeps its share in both parts. Inputs keep the whole training set's
        standardisation (computed once at load); a step of the split cannot change it.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"validation fraction must be between 0 and 1, got {fraction!r}")
        labels = self.y_train if self.y_train is not None else _targets(self.train_set)
        held_out = _stratified_indices(labels, fraction, seed)
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[held_out] = False
        train_idx = torch.nonzero(keep).flatten()
        if len(held_out) == 0 or len(train_idx) == 0:
            raise ValueError(
                f"validation fraction {fraction} of {len(labels)} training examples leaves "
                "one part empty"
            )
        name = f"{self.name}[validation]"
        if self.x_train is not None and self.y_train is not None:
            return Dataset(
                name=name,
                input_shape=self.input_shape,
                num_classes=self.num_classes,
                x_train=self.x_train[train_idx],
                y_train=self.y_train[train_idx],
                x_test=self.x_train[held_out],
                y_test=self.y_train[held_out],
            )
        assert self.train_set is not None
        return Dataset(
            name=name,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            train_set=Subset(self.train_set, train_idx.tolist()),
            test_set=Subset(self.train_set, held_out.tolist()),
        )


def _targets(data: TorchDataset[tuple[torch.Tensor, int]] | None) -> torch.Tensor:
    """Labels of a file-backed set without reading its images (ImageFolder keeps them)."""
    targets = getattr(data, "targets", None)
    if targets is None:
        assert data is not None
        targets = [data[i][1] for i in range(len(data))]  # type: ignore[arg-type]
    return torch.as_tensor(targets, dtype=torch.int64)


def _stratified_indices(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A seeded, per-class `fraction` of the indices of `labels`, sorted."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten()
        count = round(fraction * len(members))
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[:count]])
    return torch.sort(torch.cat(chosen)).values


DatasetLoader = Callable[[dict[str, Any], Path], Dataset]
_MAX_SEED = 2**32 - 1  # numpy's seeding accepts 0 .. 2**32 - 1


@dataclass(frozen=True)
class DatasetEntry(Registered):
    """One data set of the registry: its declared options and the function that loads it."""

    name: str
    params: tuple[Param, ...]
    summary: str
    load: DatasetLoader
    # (input shape, class count) from the checked options alone, where no file decides them:
    # the service counts a model's parameters at submission with it.
    shape: Callable[[dict[str, Any]], tuple[tuple[int, ...], int]] | None = None


def default_data_root() -> Path:
    """`DATA_ROOT` from the environment, else ./data."""
    return Path(os.environ.get("DATA_ROOT") or "data")


def resolve_data_path(data_root: str | Path, relative: str | Path) -> Path:
    """`relative` resolved under `data_root`; refuses anything that leads out of it.

    Absolute paths are refused outright; ``..`` and symlinks are resolved first, so a path
    is accepted only if where it really points lies inside the resolved data root.
    """
    if Path(relative).is_absolute():
        raise ValueError(f"path must be relative to the data root {data_root}, got {relative!r}")
    root = Path(data_root).resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise ValueError(
            f"path {str(relative)!r} leads out of the data root {root} (to {target}); "
            "only paths inside it are allowed"
        )
    return target


def _standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Both splits scaled by the training split's per-channel (per-feature for vectors) stats."""
    axes = (0, 2, 3) if x_train.ndim == 4 else (0,)
    train = x_train.astype(np.float64)
    mean = train.mean(axis=axes, keepdims=True)
    # A constant channel or feature stays at zero rather than dividing by zero.
    std = np.maximum(train.std(axis=axes, keepdims=True), 1e-8)
    return (
        torch.from_numpy(((train - mean) / std).astype(np.float32)),
        torch.from_numpy(((x_test - mean) / std).astype(np.float32)),
    )


def _labels(y: np.ndarray, where: str) -> torch.Tensor:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError(f"{where} must be a 1-d array of non-negative integer labels")
    return torch.from_numpy(y.astype(np.int64))


# --- digits -------------------------------------------------------------------------------


def _load_digits(options: dict[str, Any], data_root: Path) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    fraction: float = options["test_fraction"]
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"digits.test_fraction must be between 0 and 1, got {fraction}")
    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]  # pixel counts 0..16 -> [0, 1]
    y = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=fraction, random_state=options["split_seed"], stratify=y
    )
    return Dataset(
        name="digits",
        input_shape=(1, 8, 8),
        num_classes=10,
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test),
    )


# --- synthetic ----------------------------------------------------------------------------


# Many modes of fine-grained patterns give the network a lot to learn, so accuracy keeps rising
# for thousands of iterations (see bench/synthetic_difficulty.py for the measured curve).
_MODES_PER_CLASS = 16
_PATTERN_GRID = 6  # prototypes are smooth: random values on this grid, upsampled bicubically


def _load_synthetic(options: dict[str, Any], data_root: Path) -> Dataset:
    """Images of smooth class patterns under shifts, contrast changes, distractors and noise.

    Each class has a few smooth random prototypes (modes). A sample is one of its class's
    modes, circularly shifted, with random contrast, plus a weaker mode of another class and
    pixel noise; `difficulty` scales the distractor and the noise, hence the class overlap.
    """
    minimums = {"train_size": 1, "test_size": 1, "image_size": 1, "num_classes": 2}
    for field, minimum in minimums.items():
        if options[field] < minimum:
            raise ValueError(f"synthetic.{field} must be at least {minimum}, got {options[field]}")
    if options["difficulty"] < 0:
        raise ValueError(f"synthetic.difficulty must be >= 0, got {options['difficulty']}")
    rng = np.random.default_rng(options["seed"])
    classes, channels, size = options["num_classes"], options["channels"], options["image_size"]
    modes = _MODES_PER_CLASS
    coarse = torch.from_numpy(
        rng.standard_normal((classes * modes, channels, _PATTERN_GRID, _PATTERN_GRID))
    )
    protos = functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    protos = (protos - protos.mean(dim=(1, 2, 3), keepdim=True)) / protos.std(
        dim=(1, 2, 3), keepdim=True
    )
    prototypes = protos.numpy()

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, n)
        own = labels * modes + rng.integers(0, modes, n)
        other = ((labels + rng.integers(1, classes, n)) % classes) * modes + rng.integers(
            0, modes, n
        )
        contrast = rng.uniform(0.5, 1.5, (n, 1, 1, 1))
        x = contrast * prototypes[own] + 0.5 * options["difficulty"] * prototypes[other]
        x += options["difficulty"] * rng.standard_normal(x.shape)
        rows = (np.arange(size)[None, :] - rng.integers(0, size, (n, 1))) % size
        cols = (np.arange(size)[None, :] - rng.integers(0, size, (n, 1))) % size
        shifted = x[
            np.arange(n)[:, None, None, None],
            np.arange(channels)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
        return shifted.astype(np.float32), labels.astype(np.int64)

    x_train, y_train = sample(options["train_size"])
    x_test, y_test = sample(options["test_size"])
    train, test = _standardize(x_train, x_test)
    return Dataset(
        name="synthetic",
        input_shape=(channels, size, size),
        num_classes=classes,
        x_train=train,
        y_train=torch.from_numpy(y_train),
        x_test=test,
        y_test=torch.from_numpy(y_test),
    )


# --- CIFAR --------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR's batch files hold (dicts, lists, numpy arrays), so a file
    planted under the data root cannot run code."""

    _allowed = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),  # bytes written by Python 3 with protocol 2
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batches(folder: Path, files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    data, labels = [], []
    for file in files:
        with open(folder / file, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
        data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    return np.concatenate(data), np.asarray(labels, dtype=np.int64)


def _cifar_loader(
    kind: type[torchvision.datasets.CIFAR10], num_classes: int
) -> Callable[[dict[str, Any], Path], Dataset]:
    """Loader reading torchvision's on-disk format of `kind` (CIFAR10 or CIFAR100).

    The batch files are read here rather than through `kind` itself because torchvision
    insists on the MD5 sums of the official files; the names and format are its own.
    """
    name = kind.__name__.lower()
    train_files = [f for f, _ in kind.train_list]
    test_files = [f for f, _ in kind.test_list]
    meta_file: str = kind.meta["filename"]

    def load(options: dict[str, Any], data_root: Path) -> Dataset:
        folder = resolve_data_path(data_root, options["path"]) / kind.base_folder
        expected = [*train_files, *test_files, meta_file]
        missing = [f for f in expected if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{name}: {folder} lacks {', '.join(missing)}; it must hold "
                f"{', '.join(expected)} (the Python version of the data set, unpacked). "
                "clrstudy never downloads data: put the files there yourself."
            )
        x_train, y_train = _read_cifar_batches(folder, train_files)
        x_test, y_test = _read_cifar_batches(folder, test_files)
        train, test = _standardize(x_train / 255.0, x_test / 255.0)
        return Dataset(
            name=name,
            input_shape=(3, 32, 32),
            num_classes=num_classes,
            x_train=train,
            y_train=torch.from_numpy(y_train),
            x_test=test,
            y_test=torch.from_numpy(y_test),
        )

    return load


# --- npz ----------------------------------------------------------------------------------


def _load_npz(options: dict[str, Any], data_root: Path) -> Dataset:
    path = resolve_data_path(data_root, options["path"])
    if not path.is_file():
        raise FileNotFoundError(f"npz: no file {path} (option path={options['path']!r})")
    with np.load(path, allow_pickle=False) as archive:
        names = ("x_train", "y_train", "x_test", "y_test")
        missing = [n for n in names if n not in archive.files]
        if missing:
            raise ValueError(
                f"npz: {path} lacks arrays {', '.join(missing)}; it must hold "
                f"{', '.join(names)} (it holds {', '.join(archive.files) or 'none'})"
            )
        x_train, y_train, x_test, y_test = (archive[n] for n in names)
    x_train, x_test = _npz_layout(x_train, "x_train"), _npz_layout(x_test, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"npz: x_train examples are shaped {x_train.shape[1:]}, x_test's {x_test.shape[1:]}"
        )
    y_train_t, y_test_t = _labels(y_train, "npz y_train"), _labels(y_test, "npz y_test")
    for x, y, split in ((x_train, y_train_t, "train"), (x_test, y_test_t, "test")):
        if len(x) != len(y):
            raise ValueError(f"npz: x_{split} has {len(x)} examples but y_{split} {len(y)}")
    if options["normalize"]:
        train, test = _standardize(x_train, x_test)
    else:
        train = torch.from_numpy(x_train.astype(np.float32))
        test = torch.from_numpy(x_test.astype(np.float32))
    return Dataset(
        name="npz",
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        num_classes=int(max(y_train_t.max(), y_test_t.max())) + 1,
        x_train=train,
        y_train=y_train_t,
        x_test=test,
        y_test=y_test_t,
    )


def _npz_layout(x: np.ndarray, where: str) -> np.ndarray:
    """(N, D) and (N, C, H, W) as they are; (N, H, W) gains a channel; NHWC becomes NCHW."""
    if not (np.issubdtype(x.dtype, np.number) and not np.iscomplexobj(x)):
        raise ValueError(f"npz: {where} must hold real numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        return x[:, None, :, :]
    # Channels-last only when unambiguous: C in {1, 3} last and not also first.
    if x.ndim == 4 and x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
        return x.transpose(0, 3, 1, 2)
    if x.ndim in (2, 4):
        return x
    raise ValueError(
        f"npz: {where} must be shaped (N, D), (N, H, W), (N, C, H, W) or (N, H, W, C), "
        f"got {x.shape}"
    )


# --- imagefolder --------------------------------------------------------------------------


def _load_imagefolder(options: dict[str, Any], data_root: Path) -> Dataset:
    root = resolve_data_path(data_root, options["path"])
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise FileNotFoundError(
            f"imagefolder: {root} must hold train/ and test/ (or val/) folders, one "
            "subfolder per class inside each"
        )
    size: int = options["image_size"]
    if size < 1:
        raise ValueError(f"imagefolder.image_size must be positive, got {size}")
    channels: int = options["channels"]
    # ImageFolder's loader yields RGB; scaled to [-1, 1] since per-channel stats would need
    # a pass over every file.
    transforms = torchvision.transforms
    transform = transforms.Compose(
        [
            *([transforms.Grayscale(1)] if channels == 1 else []),
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * channels, [0.5] * channels),
        ]
    )
    train_set = torchvision.datasets.ImageFolder(str(root / "train"), transform=transform)
    test_set = torchvision.datasets.ImageFolder(str(test_dir), transform=transform)
    if train_set.classes != test_set.classes:
        raise ValueError(
            f"imagefolder: train/ has classes {train_set.classes} but {test_dir.name}/ has "
            f"{test_set.classes}"
        )
    return Dataset(
        name="imagefolder",
        input_shape=(channels, size, size),
        num_classes=len(train_set.classes),
        train_set=train_set,
        test_set=test_set,
    )


# --- registry -----------------------------------------------------------------------------

_PATH_HELP = "folder or file relative to DATA_ROOT"

DATASETS: Mapping[str, DatasetEntry] = MappingProxyType(
    {
        entry.name: entry
        for entry in (
            DatasetEntry(
                "digits",
                (
                    Param(
                        "split_seed",
                        "int",
                        0,
                        "seed of the stratified train/test split",
                        maximum=_MAX_SEED,
                    ),
                    Param("test_fraction", "float", 0.25, "share of the 1797 images held out"),
                ),
                "scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), in [0, 1]",
                _load_digits,
                lambda options: ((1, 8, 8), 10),
            ),
            DatasetEntry(
                "synthetic",
                (
                    Param(
                        "seed",
                        "int",
                        0,
                        "generator seed, independent of the trial seed",
                        maximum=_MAX_SEED,
                    ),
                    # Their sum is bounded by the service's MAX_SYNTHETIC_SAMPLES.
                    Param("train_size", "int", 20000, "training images"),
                    Param("test_size", "int", 4000, "held-out images"),
                    Param("image_size", "int", 16, "height and width in pixels", maximum=64),
                    Param("channels", "int", 1, "image channels", choices=(1, 3)),
                    Param("num_classes", "int", 10, "number of classes", maximum=1000),
                    Param(
                        "difficulty",
                        "float",
                        0.5,
                        "noise and distractor strength; higher means more class overlap",
                    ),
                ),
                "generated images of shifted, noisy class patterns; slow to learn by design",
                _load_synthetic,
                lambda o: ((o["channels"], o["image_size"], o["image_size"]), o["num_classes"]),
            ),
            DatasetEntry(
                "cifar10",
                (Param("path", "str", ".", f"{_PATH_HELP} holding cifar-10-batches-py/"),),
                "CIFAR-10 from disk (never downloaded), per-channel standardised",
                _cifar_loader(torchvision.datasets.CIFAR10, 10),
                lambda options: ((3, 32, 32), 10),
            ),
            DatasetEntry(
                "cifar100",
                (Param("path", "str", ".", f"{_PATH_HELP} holding cifar-100-python/"),),
                "CIFAR-100 (fine labels) from disk (never downloaded), per-channel standardised",
                _cifar_loader(torchvision.datasets.CIFAR100, 100),
                lambda options: ((3, 32, 32), 100),
            ),
            DatasetEntry(
                "npz",
                (
                    Param("path", "str", help=f"{_PATH_HELP}: a .npz with x/y train/test"),
                    Param("normalize", "bool", True, "standardise with the training stats"),
                ),
                "arrays x_train, y_train, x_test, y_test from a .npz file",
                _load_npz,
            ),
            DatasetEntry(
                "imagefolder",
                (
                    Param("path", "str", help=f"{_PATH_HELP} with train/ and test/ (or val/)"),
                    Param(
                        "image_size",
                        "int",
                        32,
                        "images are resized to this square size",
                        maximum=512,
                    ),
                    Param("channels", "int", 3, "1 converts to greyscale", choices=(1, 3)),
                ),
                "torchvision ImageFolder read from disk on the fly (class = subfolder)",
                _load_imagefolder,
            ),
        )
    }
)


def known_shape(name: str, options: Mapping[str, Any]) -> tuple[tuple[int, ...], int] | None:
    """Input shape and class count of data set `name` where its options decide them (not
    its files); None for `npz` and `imagefolder`, whose files are read on the cluster."""
    entry = DATASETS[name]
    if entry.shape is None:
        return None
    return entry.shape(check_params(name, entry.params, options))


def load_dataset(
    name: str,
    options: Mapping[str, Any],
    *,
    seed: int = 0,
    data_root: str | Path | None = None,
) -> Dataset:
    """Load data set `name` with checked `options`.

    `seed` is the trial's seed. No built-in data set depends on it (their splits and
    generators have their own seed options, so every trial of a study sees the same data);
    it is accepted so callers need not know which data sets could.
    """
    entry = DATASETS.get(name)
    if entry is None:
        raise ValueError(f"unknown data set {name!r}; known data sets: {', '.join(DATASETS)}")
    checked = check_params(name, entry.params, options)
    return entry.load(checked, Path(data_root) if data_root is not None else default_data_root())
