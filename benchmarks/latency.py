"""Benchmark section 3: per-image latency, Keras vs every .tflite, through edge_runtime.

The models are built with ``edgetl.train`` (one short head epoch: latency does
not depend on how well the head is trained) and converted with
``edgetl.convert``. Each thread count is measured in its own subprocess
(``python -m benchmarks.latency SPEC OUT``) because TensorFlow fixes its thread
pools when it starts; inside it, Keras and every .tflite take turns in interleaved
blocks, so the ratios compare like with like on a shared machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgetl.config import DEFAULT_VARIANTS

from benchmarks.util import count_macs, interleaved, ratio, summarize

ROOT = Path(__file__).resolve().parent.parent


TFLITE_VARIANTS = tuple(q.value for q in DEFAULT_VARIANTS)


def build_models(params: Any, data_dir: Path, work: Path) -> list[dict[str, Any]]:
    """Train (one epoch) and convert a model per ``params.latency_models`` entry ``(alpha, size, weights)``.

    Returns:
        Per model: name, run folder, weights, MACs per image, the .tflite paths and
        the convert result (for the conversion section).
    """
    from edgetl.config import ConvertConfig, Quantization, Rounding, TrainConfig
    from edgetl.convert.stage import convert
    from edgetl.model import classifier as model_mod
    from edgetl.train.stage import train

    models = []
    for alpha, size, weights in params.latency_models:
        run = work / f"latency-{alpha}-{size}"
        train(
            TrainConfig(
                data=str(data_dir),
                output=str(run),
                alpha=alpha,
                image_size=size,
                weights=weights,
                epochs=1,
                fine_tune_epochs=0,
                cache_views=1,
                augment=False,
                max_per_class=params.latency_per_class,
                seed=7,
            )
        )
        quants = tuple(Quantization(v) for v in TFLITE_VARIANTS)
        # latency does not depend on how the int8 weights were rounded; section 2 times the calibrated rounding
        converted = convert(
            ConvertConfig(
                str(run), quantizations=quants, calib_size=params.latency_calib_size, rounding=Rounding.NEAREST
            )
        )
        macs = count_macs(model_mod.load(str(run / "model.keras")))
        models.append(
            {
                "name": f"{alpha}/{size}",
                "alpha": alpha,
                "size": size,
                "weights": weights,
                "run": str(run),
                "macs": macs,
                "tflite": {v.quantization.value: str(v.path) for v in converted.variants},
                "convert": converted.to_dict(),
            }
        )
    return models


def measure(params: Any, models: list[dict[str, Any]], frame: Path, work: Path) -> dict[str, Any]:
    """Run one worker subprocess per thread count; return their samples summarised, with ratios and GMAC/s."""
    results = []
    for threads in params.threads:
        spec = {
            "threads": threads,
            "repeats": params.repeats,
            "rounds": params.rounds,
            "frame": str(frame),
            "models": [{k: m[k] for k in ("name", "run", "tflite")} for m in models],
        }
        spec_path, out_path = work / f"latency-spec-{threads}.json", work / f"latency-{threads}.json"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}
        subprocess.run(
            [sys.executable, "-m", "benchmarks.latency", str(spec_path), str(out_path)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            cwd=ROOT,
        )
        results += json.loads(out_path.read_text())
    macs = {m["name"]: m["macs"] for m in models}
    return {
        "rows": [_row(r, macs[r["model"]], results) for r in results],
        "repeats": params.repeats,
        "rounds": params.rounds,
        "threads": list(params.threads),
        "frame": "640x480 BGR frame",
    }


def _row(r: dict[str, Any], macs: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    """One table row: medians, p95, speed-ups vs Keras and fp32 at the same model and threads, GMAC/s."""
    same = {x["variant"]: x for x in results if x["model"] == r["model"] and x["threads"] == r["threads"]}
    invoke = r["invoke"]["median_ms"]
    keras, fp32 = same.get("keras", {}).get("invoke", {}), same.get("fp32", {}).get("invoke", {})
    return {
        **r,
        "macs": macs,
        "speedup_vs_keras": ratio(keras.get("median_ms"), invoke),
        "speedup_vs_fp32": ratio(fp32.get("median_ms"), invoke),
        "gmac_per_s": ratio(macs / 1e9, invoke / 1e3),
    }


def _worker_calls(model: dict[str, Any], frame: Any, threads: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The callables to time: invoke on a prepared tensor (Keras: predict_on_batch), and scores() on the frame."""
    from edgetl.model import classifier as model_mod
    from edgetl.runtime import Classifier, ClassifierOptions, preprocess
    from edgetl.runtime.model_card import load_card

    card = load_card(Path(model["run"]) / "model_card.json")
    keras_model = model_mod.load(str(Path(model["run"]) / "model.keras"))
    batch = preprocess.normalize(
        preprocess.resize(preprocess.to_rgb(frame, "BGR"), card.height, card.width), card.normalization
    )[None]
    invoke: dict[str, Any] = {"keras": lambda: keras_model.predict_on_batch(batch)}
    scores: dict[str, Any] = {}
    for variant, path in model["tflite"].items():
        classifier = Classifier(ClassifierOptions(model_path=path, num_threads=threads))
        tensor = classifier.prepare(frame, "BGR")
        invoke[variant] = lambda c=classifier, t=tensor: c.invoke(t)
        scores[variant] = lambda c=classifier: c.scores(frame, "BGR")
    return invoke, scores


def worker(spec_path: str, out_path: str) -> None:
    """Subprocess body: fix TensorFlow's threads, then time every model's variants interleaved."""
    import cv2
    from edgetl.model import graph

    spec = json.loads(Path(spec_path).read_text())
    threads = int(spec["threads"])
    graph.keras()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    frame = cv2.imread(spec["frame"], cv2.IMREAD_COLOR)
    out = []
    for model in spec["models"]:
        invoke_calls, score_calls = _worker_calls(model, frame, threads)
        invoke = interleaved(invoke_calls, spec["repeats"], spec["rounds"])
        scores = interleaved(score_calls, spec["repeats"], spec["rounds"])
        for variant in invoke:
            out.append(
                {
                    "model": model["name"],
                    "variant": variant,
                    "threads": threads,
                    "invoke": summarize(invoke[variant]),
                    "scores": summarize(scores[variant]) if variant in scores else None,
                }
            )
    Path(out_path).write_text(json.dumps(out))


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
