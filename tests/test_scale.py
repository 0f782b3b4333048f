"""Scale (#22): the on-disk pixel cache, streamed batches, multi-worker training, float32 QAT under float16."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cluster import free_ports
from edgetl import data
from edgetl.config import Strategy
from edgetl.data import pixels as cache
from edgetl.errors import ConfigError
from edgetl.train import distribute


def _items(folder: Path) -> tuple[data.Dataset, list[data.Item]]:
    dataset = data.discover(str(folder))
    return dataset, dataset.items[:50]


def test_cache_decodes_once_with_the_device_decoder_and_reuses_it(tmp_path: Path, fm_folder: Path) -> None:
    dataset, items = _items(fm_folder)
    first = cache.load_split(dataset, items, 48, folder=tmp_path)
    expected, _, _ = dataset.pixels(items, 48, warn=False)  # edgetl.runtime.preprocess, one image at a time
    assert first.rows.shape == (50, 48, 48, 3)
    np.testing.assert_array_equal(first.rows.read(0, 50), expected)
    np.testing.assert_array_equal(first.rows.take([7, 3, 4, 49]), expected[[7, 3, 4, 49]])
    assert list(first.labels) == [it.label for it in items]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and not any(name.startswith(".") for name in files)  # .npy + .json, no temporaries
    mtime = first.rows.path.stat().st_mtime_ns
    again = cache.load_split(dataset, items, 48, folder=tmp_path)
    assert again.rows.path == first.rows.path and again.rows.path.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert np.load(again.rows.path, mmap_mode="r").shape == (50, 48, 48, 3)  # a plain .npy
    other = cache.load_split(dataset, items, 48, interpolation="linear", folder=tmp_path)
    assert other.rows.path != first.rows.path  # the interpolation is part of the key


def test_cache_key_follows_the_files_and_skips_unreadable_ones(tmp_path: Path, fm_folder: Path) -> None:
    folder = Path(shutil.copytree(fm_folder, tmp_path / "data"))
    dataset, items = _items(folder)
    before = cache.key(dataset, items, 48, "area")
    Path(items[5].ref).write_bytes(b"not an image")
    assert cache.key(dataset, items, 48, "area") != before  # size/mtime changed: a new entry, never a stale one
    split = cache.load_split(dataset, items, 48, folder=tmp_path / "cache")
    assert split.rows.shape[0] == 49 and len(split.items) == 49
    assert [s["ref"] for s in split.skipped] == [items[5].ref]
    good = [it for i, it in enumerate(items) if i != 5]
    expected, _, _ = dataset.pixels(good, 48, warn=False)
    np.testing.assert_array_equal(split.rows.read(0, 49), expected)


def test_worker_roles_and_equal_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    assert distribute.worker_from_env(Strategy.AUTO) == distribute.Worker(0, 1, True)
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert distribute.worker_from_env(Strategy.MULTI_WORKER) == distribute.Worker(1, 2, False)
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], **cluster}, "task": {"type": "worker", "index": 0}})
    )
    assert distribute.worker_from_env(Strategy.MULTI_WORKER) == distribute.Worker(1, 3, False)  # a chief exists
    shards = [distribute.shard(11, distribute.Worker(i, 3, i == 0)) for i in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3] and not set(shards[0]) & set(shards[1])
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="--strategy multi-worker needs TF_CONFIG"):
        distribute.worker_from_env(Strategy.MULTI_WORKER)


def _worker_args(fm_folder: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgetl",
        "train",
        str(fm_folder),
        "-o",
        str(run),
        "--strategy",
        "multi-worker",
        "--weights",
        "none",
        "--alpha",
        "0.35",
        "--image-size",
        "32",
        "--fine-tune-epochs",
        "1",
        "--max-per-class",
        "8",
        "--batch-size",
        "8",
        "--cache-views",
        "1",
        "--json",
        *extra,
    ]


def _start_workers(args: list[str], cwd: Path) -> list[subprocess.Popen]:
    """Two worker processes of one TF_CONFIG cluster on 127.0.0.1 (fresh ports)."""
    hosts = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}),
        }
        procs.append(
            subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
        )
    return procs


def _finish(procs: list[subprocess.Popen]) -> list[tuple[str, str]]:
    outputs = [p.communicate(timeout=900) for p in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    return outputs


RUN_FILES = {
    "config.json",
    "data.json",
    "splits",
    "model.keras",
    "model_card.json",
    "labels.txt",
    "history.json",
    "metrics.json",
    "learning_curves.png",
    "confusion_test.png",
    "report.html",
    "results.csv",
}


@pytest.mark.slow
def test_two_worker_training_on_localhost(tmp_path: Path, fm_folder: Path) -> None:
    """A real MultiWorkerMirroredStrategy run: two processes, each its shard; only the chief writes the run."""
    run = tmp_path / "mw"
    outputs = _finish(_start_workers(_worker_args(fm_folder, run, "--epochs", "2"), tmp_path))
    logs = [err for _, err in outputs]
    for index, err in enumerate(logs):  # 8 per class: 60 train images, 30 per worker, batch 8 = 4 per replica
        name = "chief" if index == 0 else "worker 1"
        assert "2 replica(s) in sync" in err
        assert f"{name}: head on 30 rows (input shard {index + 1}/2), 8 steps of 4 per epoch" in err, err[-2000:]
        assert f"{name}: fine_tune on 30 rows (input shard {index + 1}/2), 8 steps of 4 per epoch" in err
        assert err.count("8/8 - ") == 3  # Keras ran every step of 2 head epochs + 1 fine-tune epoch on each worker
        assert "unhealthy" not in err  # neither left while the other still worked
    assert "the chief writes the run" in logs[1]
    summaries = [json.loads(out) for out, _ in outputs]
    assert summaries[0]["test_top1"] == summaries[1]["test_top1"]  # one model, in sync
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mw"]  # no worker folder left behind
    from edgetl.model import classifier as model
    from edgetl.runtime.model_card import load_card

    card = load_card(run / "model_card.json")
    assert card.extra["training"]["epochs_run"] == [2, 1]
    loaded = model.load(str(run / "model.keras"))
    assert loaded.output_shape == (None, 10)


@pytest.mark.slow
def test_killed_cluster_resumes_from_the_chiefs_checkpoint(tmp_path: Path, fm_folder: Path) -> None:
    """SIGKILL both workers mid-head, worker 1's checkpoint an epoch behind; `--resume` on both finishes in sync."""
    import signal
    import time

    run, epochs = tmp_path / "mw", 40
    procs = _start_workers(_worker_args(fm_folder, run, "--epochs", str(epochs), "--patience", str(epochs)), tmp_path)
    chief_state = tmp_path / ".mw.partial" / "checkpoint" / "state.json"
    worker_state = tmp_path / ".mw.worker1.partial" / "checkpoint" / "state.json"

    def head_epoch(path: Path) -> int:
        try:
            return int(json.loads(path.read_text())["head"]["epoch"])
        except (OSError, ValueError, KeyError):
            return 0

    deadline = time.monotonic() + 600
    while head_epoch(chief_state) < 3 or head_epoch(worker_state) < 3:
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
        time.sleep(0.02)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
    chief_at = head_epoch(chief_state)
    assert 3 <= chief_at < epochs and not run.exists()
    state = json.loads(worker_state.read_text())  # as if worker 1 died before saving its last epoch
    state["head"]["epoch"] = head_epoch(worker_state) - 1
    worker_state.write_text(json.dumps(state))
    outputs = _finish(
        _start_workers([sys.executable, "-m", "edgetl", "train", "--resume", str(run), "--json"], tmp_path)
    )
    assert f"resuming head after epoch {chief_at}" in outputs[0][1]
    assert "following the chief" in outputs[1][1] or state["head"]["epoch"] == chief_at, outputs[1][1][-2000:]
    summaries = [json.loads(out) for out, _ in outputs]
    assert summaries[0]["test_top1"] == summaries[1]["test_top1"]  # one model, in sync
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mw"]
    history = json.loads((run / "history.json").read_text())
    assert [len(h["loss"]) for h in history] == [epochs, 1]


@pytest.mark.slow
def test_qat_trains_in_float32_after_float16_training(tmp_path: Path, fm_folder: Path) -> None:
    """tfmot's fake-quant ops take float32 only: QAT must not inherit a float16 training's policy."""
    from edgetl.config import MixedPrecision, QatConfig, TrainConfig
    from edgetl.model import classifier as model
    from edgetl.model.qat_scheme import load_qat
    from edgetl.qat.stage import qat
    from edgetl.train.stage import train

    config = TrainConfig(
        data=str(fm_folder),
        output=str(tmp_path / "run"),
        weights="none",
        alpha=0.35,
        image_size=32,
        epochs=1,
        fine_tune_epochs=0,
        cache_views=1,
        max_per_class=6,
        batch_size=8,
        mixed_precision=MixedPrecision.FLOAT16,
    )
    trained = train(config)
    from edgetl.runtime.model_card import load_card

    assert load_card(trained.run_dir / "model_card.json").extra["training"]["precision"] == "mixed_float16"
    model.keras().mixed_precision.set_global_policy("mixed_float16")  # as a float16 training in this process leaves it
    result = qat(QatConfig(run=str(trained.run_dir), epochs=1, batch_size=8))
    assert result.metrics["test"]["count"] > 0
    quantized = load_qat(trained.run_dir)
    assert {w.dtype.name for w in quantized.weights if w.dtype.is_floating} == {
        "float32"
    }  # (int32: tfmot's step counters)
    assert {layer.compute_dtype for layer in quantized.layers if layer.weights} == {"float32"}
    out = quantized(np.zeros((2, 32, 32, 3), np.float32), training=False)
    assert out.dtype.name == "float32"
    assert model.keras().mixed_precision.global_policy().name == "float32"  # QAT switched the process to float32


def test_multi_worker_without_tf_config_is_one_error_line(
    tmp_path: Path, fm_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner
    from edgetl.cli.main import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = CliRunner().invoke(
        main, ["train", str(fm_folder), "-o", str(tmp_path / "run"), "--strategy", "multi-worker"]
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("Error: --strategy multi-worker needs TF_CONFIG")
    assert not list(tmp_path.iterdir())  # nothing half-written
