from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workers.datasets import DATASETS, Dataset, load_dataset, resolve_data_path

SMALL_SYNTHETIC = {"train_size": 600, "test_size": 200}


# --- digits -------------------------------------------------------------------------------


def test_digits_are_1x8x8_images_in_unit_range() -> None:
    data = load_dataset("digits", {})
    assert data.in_memory
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert data.x_train is not None and data.y_train is not None and data.x_test is not None
    assert data.x_train.shape == (1347, 1, 8, 8) and data.x_test.shape == (450, 1, 8, 8)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.x_train.min() >= 0 and data.x_train.max() == 1
    assert data.train_size == 1347 and data.test_size == 450


def test_digits_split_is_fixed_by_split_seed_and_stratified() -> None:
    a = load_dataset("digits", {"split_seed": 3})
    b = load_dataset("digits", {"split_seed": 3}, seed=99)
    c = load_dataset("digits", {"split_seed": 4})
    assert a.y_test is not None and b.y_test is not None and c.y_test is not None
    assert torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_test, c.y_test)
    half = load_dataset("digits", {"test_fraction": 0.5})
    assert half.y_test is not None and half.y_train is not None
    test_counts = torch.bincount(half.y_test, minlength=10)
    train_counts = torch.bincount(half.y_train, minlength=10)
    assert (test_counts - train_counts).abs().max() <= 1


def test_digits_test_fraction_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"digits\.test_fraction"):
        load_dataset("digits", {"test_fraction": 1.0})


# --- synthetic ----------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed_and_ignores_trial_seed() -> None:
    a = load_dataset("synthetic", SMALL_SYNTHETIC, seed=1)
    b = load_dataset("synthetic", SMALL_SYNTHETIC, seed=2)
    c = load_dataset("synthetic", {**SMALL_SYNTHETIC, "seed": 5})
    assert a.x_train is not None and b.x_train is not None and c.x_train is not None
    assert torch.equal(a.x_train, b.x_train)
    assert a.y_test is not None and b.y_test is not None and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_synthetic_size_options() -> None:
    data = load_dataset(
        "synthetic",
        {"train_size": 50, "test_size": 30, "image_size": 12, "channels": 3, "num_classes": 4},
    )
    assert data.x_train is not None and data.y_train is not None and data.x_test is not None
    assert data.input_shape == (3, 12, 12) and data.num_classes == 4
    assert data.x_train.shape == (50, 3, 12, 12) and data.x_test.shape == (30, 3, 12, 12)
    assert set(data.y_train.tolist()) <= {0, 1, 2, 3}
    assert data.x_train.dtype == torch.float32


def _shift_invariant_centroid_accuracy(data: Dataset) -> float:
    """Nearest class centroid on |FFT| features, which circular shifts leave unchanged."""
    assert data.x_train is not None and data.y_train is not None
    assert data.x_test is not None and data.y_test is not None
    train = torch.fft.fft2(data.x_train).abs().flatten(1)
    test = torch.fft.fft2(data.x_test).abs().flatten(1)
    centroids = torch.stack([train[data.y_train == k].mean(0) for k in range(data.num_classes)])
    predicted = torch.cdist(test, centroids).argmin(1)
    return (predicted == data.y_test).float().mean().item()


def test_synthetic_difficulty_controls_class_overlap() -> None:
    options = {"train_size": 2000, "test_size": 1000}
    easy, medium, hard = (
        _shift_invariant_centroid_accuracy(load_dataset("synthetic", {**options, "difficulty": d}))
        for d in (0.0, 1.0, 3.0)
    )
    # Nearest centroid only sees one blurred centroid per class (each class has many modes),
    # so even easy data stays far below 100%; what matters is the ordering.
    assert easy > medium + 0.05
    assert medium > hard + 0.05


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"difficulty": -1.0}, "difficulty"),
        ({"train_size": 0}, "train_size"),
        ({"channels": 2}, "channels"),
    ],
)
def test_synthetic_bad_options_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=rf"synthetic\.{field}"):
        load_dataset("synthetic", options)


# --- Dataset ------------------------------------------------------------------------------


def test_iterations_per_epoch_drops_the_partial_batch() -> None:
    data = load_dataset("synthetic", SMALL_SYNTHETIC)
    assert data.iterations_per_epoch(128) == 4  # 600 // 128
    assert data.iterations_per_epoch(600) == 1
    with pytest.raises(ValueError, match="batch_size"):
        data.iterations_per_epoch(601)


def test_dataset_refuses_a_mix_of_tensors_and_sets() -> None:
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="not a mix"):
        Dataset("x", (2,), 2, x_train=x, y_train=y)


# --- CIFAR --------------------------------------------------------------------------------


def _write_fake_cifar(root: Path, kind: str, per_file: int = 4) -> None:
    """Torchvision's pickle layout with a few random images per file."""
    rng = np.random.default_rng(0)
    if kind == "cifar10":
        folder, label_key, files = (
            root / "cifar-10-batches-py",
            "labels",
            [
                *(f"data_batch_{i}" for i in range(1, 6)),
                "test_batch",
            ],
        )
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
        classes = 10
    else:
        folder, label_key, files = root / "cifar-100-python", "fine_labels", ["train", "test"]
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
        classes = 100
    folder.mkdir(parents=True)
    for i, name in enumerate(files):
        batch = {
            "data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
            label_key: rng.integers(0, classes, per_file).tolist(),
        }
        with open(folder / name, "wb") as f:
            # The official files are protocol 2 (Python 2); cover the newer protocol too.
            pickle.dump(batch, f, protocol=2 if i % 2 else pickle.HIGHEST_PROTOCOL)
    with open(folder / meta[0], "wb") as f:
        pickle.dump(meta[1], f)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"]),
        ("cifar100", ["train", "test", "meta"]),
    ],
)
def test_cifar_missing_folder_names_the_expected_files(
    tmp_path: Path, name: str, expected: list[str]
) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset(name, {}, data_root=tmp_path)
    message = str(caught.value)
    assert all(file in message for file in expected)
    assert "never downloads" in message
    assert not any(tmp_path.iterdir())  # nothing was fetched or created


@pytest.mark.parametrize(
    ("name", "classes", "train_size"), [("cifar10", 10, 20), ("cifar100", 100, 4)]
)
def test_cifar_loads_torchvision_layout(
    tmp_path: Path, name: str, classes: int, train_size: int
) -> None:
    _write_fake_cifar(tmp_path / "sets", name)
    data = load_dataset(name, {"path": "sets"}, data_root=tmp_path)
    assert data.input_shape == (3, 32, 32) and data.num_classes == classes
    assert data.x_train is not None and data.x_test is not None and data.y_train is not None
    assert data.x_train.shape == (train_size, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.y_train.dtype == torch.int64
    channel_means = data.x_train.mean(dim=(0, 2, 3))
    channel_stds = data.x_train.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(channel_means, torch.zeros(3), atol=1e-5)
    assert torch.allclose(channel_stds, torch.ones(3), atol=1e-4)


def test_cifar_files_that_would_run_code_are_refused(tmp_path: Path) -> None:
    _write_fake_cifar(tmp_path, "cifar10")
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump(os.getcwd, f)  # any callable global stands in for os.system
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_dataset("cifar10", {}, data_root=tmp_path)


def test_data_root_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_fake_cifar(tmp_path, "cifar10")
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    assert load_dataset("cifar10", {}).train_size == 20


# --- npz ----------------------------------------------------------------------------------


def _write_npz(path: Path, x_train: np.ndarray, x_test: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=x_train,
        x_test=x_test,
        y_train=rng.integers(0, 3, len(x_train)),
        y_test=rng.integers(0, 3, len(x_test)),
    )


@pytest.mark.parametrize(
    ("train_shape", "input_shape"),
    [
        ((10, 5), (5,)),
        ((10, 6, 7), (1, 6, 7)),
        ((10, 3, 6, 7), (3, 6, 7)),
        ((10, 6, 7, 3), (3, 6, 7)),  # channels last
        ((10, 6, 7, 1), (1, 6, 7)),
    ],
)
def test_npz_round_trip_and_layouts(
    tmp_path: Path, train_shape: tuple[int, ...], input_shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(1)
    x_train = rng.uniform(0, 255, train_shape).astype(np.uint8)
    x_test = rng.uniform(0, 255, (4, *train_shape[1:])).astype(np.uint8)
    _write_npz(tmp_path / "sets" / "a.npz", x_train, x_test)
    data = load_dataset("npz", {"path": "sets/a.npz", "normalize": False}, data_root=tmp_path)
    assert data.input_shape == input_shape and data.num_classes <= 3
    assert data.x_train is not None and data.x_train.dtype == torch.float32
    assert data.x_train.shape == (10, *input_shape)
    if len(train_shape) == 4 and train_shape[3] == 3:
        expected = torch.from_numpy(x_train.transpose(0, 3, 1, 2).astype(np.float32))
    else:
        expected = torch.from_numpy(x_train.astype(np.float32)).reshape(10, *input_shape)
    assert torch.equal(data.x_train, expected)


def test_npz_normalizes_with_training_statistics(tmp_path: Path) -> None:
    x_train = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]])
    _write_npz(tmp_path / "v.npz", x_train, np.array([[2.0, 10.0]]))
    data = load_dataset("npz", {"path": "v.npz"}, data_root=tmp_path)
    assert data.x_train is not None and data.x_test is not None
    assert torch.allclose(data.x_train.mean(0), torch.zeros(2), atol=1e-6)
    assert data.x_test.tolist() == [[0.0, 0.0]]  # constant feature stays at zero


def test_npz_missing_arrays_are_named(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 3)), y_train=np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match=r"lacks arrays x_test, y_test"):
        load_dataset("npz", {"path": "bad.npz"}, data_root=tmp_path)


def test_npz_missing_file_and_required_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        load_dataset("npz", {"path": "nope.npz"}, data_root=tmp_path)
    with pytest.raises(ValueError, match=r"npz\.path is required"):
        load_dataset("npz", {}, data_root=tmp_path)


# --- imagefolder --------------------------------------------------------------------------


def test_imagefolder_reads_train_and_val_from_disk(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for animal in ("cat", "dog"):
            folder = tmp_path / "pets" / split / animal
            folder.mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    data = load_dataset("imagefolder", {"path": "pets", "image_size": 8}, data_root=tmp_path)
    assert not data.in_memory
    assert data.input_shape == (3, 8, 8) and data.num_classes == 2
    assert data.train_size == 4 and data.test_size == 4
    assert data.train_set is not None
    image, label = data.train_set[3]
    assert image.shape == (3, 8, 8) and label == 1
    assert image.min() >= -1 and image.max() <= 1
    grey = load_dataset(
        "imagefolder", {"path": "pets", "image_size": 6, "channels": 1}, data_root=tmp_path
    )
    assert grey.train_set is not None and grey.train_set[0][0].shape == (1, 6, 6)


def test_imagefolder_without_split_folders_says_what_it_needs(tmp_path: Path) -> None:
    (tmp_path / "flat" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"train/ and test/ \(or val/\)"):
        load_dataset("imagefolder", {"path": "flat"}, data_root=tmp_path)


# --- paths and registry -------------------------------------------------------------------


def test_resolve_data_path_keeps_paths_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "link_out").symlink_to(tmp_path / "outside")
    (root / "link_in").symlink_to(root / "a")
    assert resolve_data_path(root, "a/../a") == (root / "a").resolve()
    assert resolve_data_path(root, "link_in") == (root / "a").resolve()
    assert resolve_data_path(root, ".") == root.resolve()
    for escape in ("..", "a/../../outside", "link_out", "link_out/x.npz"):
        with pytest.raises(ValueError, match="leads out of the data root"):
            resolve_data_path(root, escape)
    with pytest.raises(ValueError, match="must be relative"):
        resolve_data_path(root, str(tmp_path / "outside"))


@pytest.mark.parametrize("path", ["../x.npz", "/etc/passwd"])
def test_loaders_refuse_paths_outside_the_root(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError, match="data root"):
        load_dataset("npz", {"path": path}, data_root=tmp_path)
    with pytest.raises(ValueError, match="data root"):
        load_dataset("cifar10", {"path": path}, data_root=tmp_path)


def test_unknown_data_set_and_option_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown data set 'mnist'.*digits, synthetic, cifar10"):
        load_dataset("mnist", {})
    with pytest.raises(ValueError, match=r"digits: unknown parameter 'size'"):
        load_dataset("digits", {"size": 3})


def test_registry_describes_every_entry() -> None:
    assert set(DATASETS) == {"digits", "synthetic", "cifar10", "cifar100", "npz", "imagefolder"}
    described = DATASETS["synthetic"].describe()
    assert described["name"] == "synthetic" and described["summary"]
    names = [p["name"] for p in described["params"]]
    assert names == [
        "seed",
        "train_size",
        "test_size",
        "image_size",
        "channels",
        "num_classes",
        "difficulty",
    ]
    with pytest.raises(TypeError):
        DATASETS["x"] = DATASETS["digits"]  # type: ignore[index]
