"""edgetl train on real data: artifacts, accuracy, phases, precision and distribution."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgetl.config import TrainConfig
from edgetl.runtime.model_card import load_card, sha256_file


def test_run_folder_holds_every_artifact(trained_run: Path) -> None:
    expected = {
        "model.keras",
        "model_card.json",
        "labels.txt",
        "config.json",
        "history.json",
        "metrics.json",
        "learning_curves.png",
        "confusion_test.png",
        "data.json",
        "splits",
        "report.html",
        "results.csv",
    }
    assert expected <= {p.name for p in trained_run.iterdir()}
    assert not list(trained_run.parent.glob(".*partial*")), "temporary folder left behind"
    card = load_card(trained_run / "model_card.json")
    assert card.model_sha256 == sha256_file(trained_run / "model.keras")
    assert card.labels[0] == "ankle_boot" and card.num_classes == 10 and card.height == 96
    assert card.normalization.mean == (127.5,) * 3 and card.color_order == "RGB"
    backbone = card.extra["backbone"]
    assert backbone["weights"] == "imagenet" and len(backbone["sha256"]) == 64
    assert backbone["tensors_sha256"].startswith("c009b1f1")
    assert (trained_run / "labels.txt").read_text().split() == list(card.labels)
    history = json.loads((trained_run / "history.json").read_text())
    assert history[0]["phase"] == "head (cached features)" and history[0]["views"] == 2


def test_offline_imagenet_run_learns_real_photos(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test"]["count"] == 40
    assert metrics["test"]["top1"] >= 0.6  # chance is 0.1


def test_saved_model_reloads_in_safe_mode_and_predicts(trained_run: Path) -> None:
    from edgetl import data
    from edgetl.data import feed
    from edgetl.model import classifier as model

    keras_model = model.load(str(trained_run / "model.keras"))
    assert not any(type(layer).__name__ in ("Lambda", "Rescaling", "Functional") for layer in keras_model.layers)
    dataset, items = data.load_split(trained_run, "test")
    pixels, kept, _ = dataset.pixels(items, 96)
    probs = feed.predict(keras_model, pixels, model.MOBILENET_NORMALIZATION)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    top1 = float((probs.argmax(1) == [it.label for it in kept]).mean())
    assert top1 == pytest.approx(metrics["test"]["top1"])


def _train(tmp_path: Path, folder: Path, **overrides) -> dict:
    from edgetl.train.stage import train

    options = dict(
        data=str(folder),
        output=str(tmp_path / "run"),
        image_size=96,
        epochs=8,
        seed=1,
        cache_views=1,
        fine_tune_epochs=0,
    )
    options.update(overrides)
    return train(TrainConfig(**options)).metrics


@pytest.mark.slow
def test_imagenet_weights_beat_random_init_on_the_same_budget(
    tmp_path: Path, fm_folder: Path, trained_run: Path
) -> None:
    none = _train(tmp_path, fm_folder, weights="none", cache_views=2)
    real = json.loads((trained_run / "metrics.json").read_text())
    print(f"test top-1: imagenet {real['test']['top1']:.3f}, none {none['test']['top1']:.3f}")
    assert real["test"]["top1"] >= none["test"]["top1"] + 0.25


@pytest.mark.slow
def test_fine_tune_keeps_batchnorm_statistics(tmp_path: Path, fm_folder: Path, imagenet_weights: Path) -> None:
    from edgetl.model import classifier as model

    metrics = _train(
        tmp_path,
        fm_folder,
        epochs=2,
        fine_tune_epochs=1,
        fine_tune_layers=20,
        max_per_class=12,
        keep_fine_tune="always",
    )
    tuned = model.load(str(tmp_path / "run" / "model.keras"))
    reference = model.keras().applications.MobileNetV2(
        input_shape=(96, 96, 3), include_top=False, weights=str(imagenet_weights)
    )
    bn = reference.get_layer("block_16_project_BN").get_weights()
    np.testing.assert_array_equal(tuned.get_layer("block_16_project_BN").get_weights()[2], bn[2])
    assert not np.array_equal(
        tuned.get_layer("block_16_project").get_weights()[0], reference.get_layer("block_16_project").get_weights()[0]
    )
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["phase"] for h in history] == ["head (cached features)", "fine-tune"]
    assert metrics["val"]["count"] > 0


@pytest.mark.slow
def test_fine_tune_that_loses_on_val_is_dropped(tmp_path: Path, fm_folder: Path, imagenet_weights: Path) -> None:
    """A fine-tune at a rate that wrecks the backbone loses on val: the head-only weights come back, and it is recorded."""
    from edgetl.model import classifier as model

    metrics = _train(tmp_path, fm_folder, epochs=3, fine_tune_epochs=1, fine_tune_learning_rate=1.0, max_per_class=12)
    tuned = model.load(str(tmp_path / "run" / "model.keras"))
    reference = model.keras().applications.MobileNetV2(
        input_shape=(96, 96, 3), include_top=False, weights=str(imagenet_weights)
    )
    for name in ("block_16_project", "Conv_1"):  # the top layers the fine-tune changed are ImageNet's again
        np.testing.assert_array_equal(
            tuned.get_layer(name).get_weights()[0], reference.get_layer(name).get_weights()[0]
        )
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    decision = history[1]["decision"]
    assert decision["kept"] is False and decision["helped_on_val"] is False and decision["rule"] == "if-better"
    assert decision["fine_tuned"]["val_loss"] > decision["head_only"]["val_loss"]
    assert metrics["val"]["top1"] == pytest.approx(decision["head_only"]["val_top1"], abs=0.02)  # float16 features
    card = json.loads((tmp_path / "run" / "model_card.json").read_text())
    assert card["extra"]["training"]["fine_tune_kept"] is False


def test_no_test_split_with_test_fraction_zero(tmp_path: Path, fm_folder: Path) -> None:
    """--test-fraction 0 trains on every image but val; parity then needs the user's own test images."""
    from click.testing import CliRunner
    from edgetl.cli.main import main

    run = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["train", str(fm_folder), "-o", str(run), "--weights", "none", "--alpha", "0.35", "--image-size", "32"]
        + ["--epochs", "1", "--fine-tune-epochs", "0", "--per-class", "10", "--test-fraction", "0", "-q", "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["test_top1"] is None and summary["val_top1"] is not None
    counts = {s: len((run / "splits" / f"{s}.csv").read_text().splitlines()) - 1 for s in ("train", "val", "test")}
    assert counts == {"train": 90, "val": 10, "test": 0}
    assert json.loads((run / "metrics.json").read_text())["test"] == {"count": 0, "top1": None}
    assert (run / "confusion_val.png").exists()
    parity = CliRunner().invoke(main, ["parity", str(run)])
    assert parity.exit_code == 3 and "pass --data DIR" in parity.output, parity.output


@pytest.mark.slow
def test_own_test_images_flow_as_docs_train_md_shows(tmp_path: Path, fm_folder: Path) -> None:
    """docs/train.md's flow on a tiny model: --test-fraction 0, convert skips its gate, parity --data DIR judges."""
    from click.testing import CliRunner
    from edgetl.cli.main import main
    from edgetl.data.fashion_mnist import write_fashion_mnist_folder

    run, test = tmp_path / "runs" / "fm-own-test", tmp_path / "data" / "fm-test"
    write_fashion_mnist_folder(test, per_class=5, seed=1, part="test")
    trained = CliRunner().invoke(
        main,
        ["train", str(fm_folder), "-o", str(run), "--test-fraction", "0", "--weights", "none", "--alpha", "0.35"]
        + ["--image-size", "32", "--epochs", "1", "--fine-tune-epochs", "0", "--per-class", "10", "-q"],
    )
    assert trained.exit_code == 0, trained.output
    converted = CliRunner().invoke(main, ["convert", str(run), "--variants", "int8", "--calib-size", "20"])
    assert converted.exit_code == 0, converted.output
    assert "has no test split (--test-fraction 0): check it with `edgetl parity" in converted.stderr
    assert not list(run.glob("parity*.json"))  # convert's own gate was skipped, not run on nothing
    checked = CliRunner().invoke(main, ["parity", str(run), "--data", str(test), "--json", "-q"])
    assert checked.exit_code in (0, 1), checked.output  # 1: the gate's verdict on evidence, a documented answer
    report = json.loads(checked.stdout)
    assert report["models"]["int8"]["count"] == 50 and (run / "parity.json").is_file()


def test_split_fractions_are_checked() -> None:
    from edgetl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--test-fraction in \[0, 1\) \(got 0.1 and -0.1\)"):
        TrainConfig(data="d", output="o", test_fraction=-0.1)
    with pytest.raises(ConfigError, match="--val-fraction must be in"):
        TrainConfig(data="d", output="o", val_fraction=0)


def test_uncached_path_and_config_round_trip(tmp_path: Path, fm_folder: Path) -> None:
    _train(tmp_path, fm_folder, weights="none", alpha=0.35, image_size=32, epochs=1, cache_views=0, max_per_class=5)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["cache_views"] == 0 and config["alpha"] == 0.35
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["phase"] == "head (uncached)"
    from click.testing import CliRunner
    from edgetl.cli.main import main

    result = CliRunner().invoke(
        main, ["train", "--config", str(tmp_path / "run" / "config.json"), "-o", str(tmp_path / "again"), "-q"]
    )
    assert result.exit_code == 0, result.output
    first = (tmp_path / "run" / "splits" / "test.csv").read_text()
    assert (tmp_path / "again" / "splits" / "test.csv").read_text() == first


@pytest.mark.slow
def test_mirrored_strategy_with_bfloat16_on_two_logical_cpus(tmp_path: Path, fm_folder: Path) -> None:
    """The multi-device and mixed-precision paths, on a CPU split into two logical devices."""
    code = f"""
import os, json
os.environ['TF_USE_LEGACY_KERAS'] = '1'
import tensorflow as tf
cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from edgetl import log
from edgetl.config import TrainConfig
from edgetl.train.stage import train
log.configure()  # the library logs through `logging`; show its stage lines as the CLI does
r = train(TrainConfig(data={str(fm_folder)!r}, output={str(tmp_path / "mirror")!r}, weights='none', alpha=0.35,
          image_size=32, epochs=1, fine_tune_epochs=1, cache_views=1, max_per_class=6, batch_size=8,
          strategy='mirrored', mixed_precision='bfloat16'))
print(json.dumps(r.metrics['test']['count']))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 replica(s)" in result.stderr and "mixed_bfloat16" in result.stderr
    card = load_card(tmp_path / "mirror" / "model_card.json")
    assert card.extra["training"]["precision"] == "mixed_bfloat16"
    from edgetl.model import classifier as model

    saved = model.load(str(tmp_path / "mirror" / "model.keras"))
    assert saved.layers[1].dtype_policy.name == "float32"  # saved for conversion in float32


def test_tf_hub_feature_vector_backbone(tmp_path: Path, fm_folder: Path) -> None:
    """``--backbone hub:DIR`` trains on a local SavedModel feature vector, normalised to [0, 1]."""
    import tensorflow as tf
    from edgetl.model.graph import keras

    base = keras().applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    tf.saved_model.save(base, str(tmp_path / "hub"))
    _train(tmp_path, fm_folder, backbone=f"hub:{tmp_path / 'hub'}", image_size=32, epochs=1, max_per_class=4)
    card = load_card(tmp_path / "run" / "model_card.json")
    assert card.extra["backbone"]["weights"] == "hub" and card.normalization.std == (255.0,) * 3
    with pytest.raises(Exception, match="TF-Hub backbone"):
        _train(
            tmp_path / "bad",
            fm_folder,
            backbone=f"hub:{tmp_path / 'nowhere'}",
            image_size=32,
            epochs=1,
            max_per_class=4,
        )
