"""Shared fixtures: a real Fashion-MNIST subset, the offline ImageNet weights, one trained run.

Session-scoped so the expensive parts (decoding, a MobileNetV2 training run)
happen once per test session and every stage's tests reuse them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# No test touches the network (tests/netguard/edgetl_netguard.py): this process, and every Python subprocess a test
# starts, through the sitecustomize.py that PYTHONPATH points them at. Blocked attempts are logged to one file per
# session; `_no_network` below fails the test that made one, even when the code under test swallowed the error.
NETGUARD = Path(__file__).parent / "netguard"
sys.path.insert(0, str(NETGUARD))
import edgetl_netguard  # noqa: E402

edgetl_netguard.install()
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD), os.environ.get("PYTHONPATH")]))
os.environ[edgetl_netguard.LOG_ENV] = tempfile.mkstemp(prefix="edgetl-netguard-", suffix=".log")[1]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"
# Decoded-pixel cache of this test session (subprocesses inherit it), not the user's ~/.cache.
if "EDGETL_PIXEL_CACHE" not in os.environ:
    os.environ["EDGETL_PIXEL_CACHE"] = tempfile.mkdtemp(prefix="edgetl-pixels-")

# Fixtures that train or convert a real model: any test using one is slow (`pytest -m "not slow"` skips it).
SLOW_FIXTURES = frozenset({"trained_run", "converted"})
# Tests measured over ~10 s (`pytest -m "not slow" --durations=0`, 2 cores shared at load ~20, 2026-12-04)
# that no slow fixture gives away: they convert or train a tiny model, build full-size MobileNetV2s,
# decode a 20000 px PNG, or cycle 300 browser viewers.
SLOW_TESTS = frozenset(
    {
        "tests/test_bad_input.py::test_20000px_png_is_decoded_downscaled_in_bounded_memory",
        "tests/test_bad_input.py::test_skips_are_counted_and_listed_in_the_run",
        "tests/test_bench.py::test_count_macs_mobilenet_v2_matches_the_paper",
        "tests/test_convert.py::test_int8_io_type_is_as_asked",
        "tests/test_convert.py::test_unknown_keep_float_layer_is_named",
        "tests/test_edge_serve.py::test_viewers_coming_and_going_keep_memory_flat",
        "tests/test_qat.py::test_batchnorm_folding_keeps_the_function",
        "tests/test_qat.py::test_quantized_graph_has_no_fake_quant_between_conv_and_relu",
        "tests/test_train.py::test_tf_hub_feature_vector_backbone",
        "tests/test_train.py::test_uncached_path_and_config_round_trip",
        "tests/test_weights.py::test_install_writes_into_edgetls_cache_and_leaves_keras_files_alone",
        "tests/test_weights.py::test_missing_weights_name_both_fixes",
        "tests/test_weights.py::test_other_alphas_say_only_one_has_offline_weights",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark as slow every test that uses a training fixture or was measured slow, so the fast lane stays fast."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.nodeid.split("[")[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_network(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any test during which this process or one of its subprocesses tried to reach a non-loopback host."""
    log = Path(os.environ[edgetl_netguard.LOG_ENV])
    start = log.stat().st_size if log.exists() else 0
    yield
    if request.node.get_closest_marker("expects_blocked_network") is None and log.exists():
        with log.open(encoding="utf-8") as handle:
            handle.seek(start)
            attempts = handle.read().strip()
        if attempts:
            pytest.fail(f"this test tried to reach the network ({edgetl_netguard.HINT}):\n{attempts}", pytrace=False)


@pytest.fixture(scope="session")
def imagenet_weights() -> Path:
    """The offline ImageNet weight file in edgetl's cache; tests never download it (scripts/setup.sh installs it)."""
    from edgetl.model import weights

    path = weights.cache_dir() / weights.keras_weights_name(1.0, 96)
    if not path.exists():
        pytest.fail(
            f"no offline ImageNet weights in {path.parent}: run `edgetl weights install` first "
            "(scripts/setup.sh and scripts/test.sh do); tests never download them",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def fm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 real Fashion-MNIST photos per class as a class-folder PNG dataset."""
    from edgetl.data.fashion_mnist import write_fashion_mnist_folder

    folder = tmp_path_factory.mktemp("data") / "fashion"
    write_fashion_mnist_folder(folder, per_class=40, seed=0)
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, fm_folder: Path, imagenet_weights: Path) -> Path:
    """A real run: ImageNet MobileNetV2 1.0/96, head trained on cached features."""
    from edgetl.config import TrainConfig
    from edgetl.train.stage import train

    run = tmp_path_factory.mktemp("runs") / "fm96"
    config = TrainConfig(
        data=str(fm_folder), output=str(run), image_size=96, epochs=8, seed=1, cache_views=2, fine_tune_epochs=0
    )
    train(config)
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, fm_folder: Path) -> Path:
    """An untrained MobileNetV2 0.35/96 (weights none) as a run folder over the real Fashion-MNIST subset.

    For conversion mechanics (variants, IO types, cards, calibration), where accuracy
    does not matter; copy it before writing into it.
    """
    from edgetl import data
    from edgetl.config import TrainConfig
    from edgetl.model import classifier as model
    from edgetl.runtime.model_card import ModelCard, sha256_file, write_json_atomic

    run = tmp_path_factory.mktemp("runs") / "tiny"
    config = TrainConfig(data=str(fm_folder), output=str(run), alpha=0.35, image_size=96, weights="none", seed=3)
    dataset = data.discover(str(fm_folder))
    data.write_splits(run, dataset, data.split(dataset, 0.1, 0.1, config.seed), [])
    model.keras().utils.set_random_seed(config.seed)
    built = model.build(config, len(dataset.class_names))
    built.full.save(str(run / "model.keras"))
    write_json_atomic(run / "config.json", config.to_dict())
    ModelCard(
        labels=tuple(dataset.class_names),
        height=96,
        width=96,
        model_file="model.keras",
        model_sha256=sha256_file(run / "model.keras"),
        normalization=built.normalization,
        extra={"backbone": {"name": "mobilenet_v2", "alpha": 0.35, "weights": "none"}},
    ).save(run / "model_card.json")
    return run
