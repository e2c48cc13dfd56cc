"""Every study in examples/ runs, shrunk by `clrstudy run --smoke-test`, so the examples
cannot rot. CIFAR ones read a tiny generated data set in CIFAR-10's own format."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from workers.spec import load_spec

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))
IMAGES_PER_BATCH = 100  # 5 training batches: 500 images; the test batch: 100
CLASSES = 10


def write_cifar10(root: Path, seed: int = 0) -> None:
    """CIFAR-10's python version under `root`/cifar-10-batches-py, as torchvision lays it out.

    Each class is a fixed random pattern under a little noise (a nearest-mean classifier
    gets every test image right), so that a range test of a few dozen iterations sees the
    accuracy rise even from cifar10_quick's tiny initial weights.
    """
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 255, size=(CLASSES, 3 * 32 * 32))
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(name: str) -> None:
        labels = rng.integers(0, CLASSES, size=IMAGES_PER_BATCH)
        noise = rng.uniform(0, 255, size=(IMAGES_PER_BATCH, 3 * 32 * 32))
        data = (0.95 * patterns[labels] + 0.05 * noise).astype(np.uint8)
        entry = {"batch_label": name, "labels": labels.tolist(), "data": data}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))

    for i in range(1, 6):
        batch(f"data_batch_{i}")
    batch("test_batch")
    meta = {"label_names": [f"class{c}" for c in range(CLASSES)], "num_vis": 3 * 32 * 32}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root)
    return root


def test_every_example_is_in_the_list() -> None:
    assert {p.name for p in EXAMPLES} >= {"digits.yaml", "cifar10-paper.yaml"}


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_in_smoke_mode(
    example: Path, ray_address: str, data_root: Path, tmp_path: Path
) -> None:
    spec = load_spec(example)
    out = tmp_path / "out"
    options = ["--smoke-test", "--ray-address", ray_address, "--data-root", str(data_root)]
    code = main(["run", str(example), "--out", str(out), *options])
    results = json.loads((out / "results.json").read_text())
    assert (code, results["status"], results["error"]) == (0, "succeeded", None)
    # Every arm of the example trained (seeds shrink, arms never), each trial to its end.
    assert set(results["arms"]) == {arm.name for arm in spec.arms}
    trials = results["trials"]
    assert {t["arm"] for t in trials} == set(results["arms"])
    assert all(t["state"] == "completed" for t in trials), trials
    assert (results["range_test"] is not None) == spec.needs_range_test
    tuned = {arm.name for arm in spec.arms if arm.tuning is not None}
    assert set(results["tuning"]) == tuned
    report = json.loads((out / "report.json").read_text())
    assert report["verdicts"]
