"""``BENCHMARKS.md`` from the results dictionary that ``benchmarks/__main__.py`` also writes as JSON.

Pure formatting: every function takes plain dicts and returns Markdown, so the
tests can render a canned result without running anything.
"""

from __future__ import annotations

import re
from typing import Any

from benchmarks.util import fmt, markdown_table

pct = lambda v: fmt(None if v is None else 100 * v, ".2f", "%")  # noqa: E731
kib = lambda b: fmt(None if b is None else b / 1024, ".0f")  # noqa: E731
times = lambda v: fmt(v, ".2f", "×")  # noqa: E731


def header(meta: dict[str, Any]) -> str:
    m, v = meta["machine"], meta["versions"]
    cores = f"{m['logical_cpus']} logical CPUs ({m.get('sockets') or '?'} socket × {m.get('cores_per_socket') or '?'} cores × {m.get('threads_per_core') or '?'} threads)"
    libs = ", ".join(f"{k} {val}" for k, val in v.items())
    load = lambda x: "/".join(str(i) for i in x) if x else "unknown"  # noqa: E731
    return "\n".join(
        [
            "# Benchmarks",
            "",
            f"Measured by `benchmarks/__main__.py` in one run ({meta['mode']} mode) on {meta['date']}, {meta['wall_s'] / 60:.1f} min wall.",
            "",
            f"- **Command:** `{meta['command']}`",
            f"- **CPU:** {m['cpu_model']}, {cores}, {m.get('hypervisor') or 'no'} hypervisor, {m.get('memory_gib')} GiB RAM, {m['os']} {m['machine']}",
            f"- **Load average (1/5/15 min):** {load(m.get('loadavg_start'))} at the start, {load(meta.get('loadavg_end'))} at the end",
            f"- **Python {m['python']}; libraries:** {libs}",
            "",
            "Every figure is a median over repeats (latency: interleaved blocks, so drift hits every variant alike);",
            "every ratio compares numbers measured in this same run. Absolute timings depend on the machine and on",
            "whatever else it was running; nothing here is asserted (CI runs `--quick` only to prove the script works).",
        ]
    )


def training(section: dict[str, Any]) -> str:
    rows = section["rows"]
    s = rows[0]["splits"]
    out = [
        "## 1. Training speed",
        "",
        f"MobileNetV2 1.0 at {section['image_size']} px, offline ImageNet weights, batch 32, float32, on a real Fashion-MNIST "
        f"subset ({s['train']} train / {s['val']} val images); every run trains exactly {section['epochs']} head epochs "
        "(early stopping off). Images/s = epochs × train images ÷ phase wall time, feature caching included.",
        "",
        markdown_table(
            ["head phase", "epochs", "seconds", "images/s", "vs uncached", "val top-1 (head)"],
            [
                [
                    r["name"],
                    r["epochs"],
                    fmt(r["head_seconds"], ".1f"),
                    fmt(r["head_images_per_s"], ".0f"),
                    times(r["speedup_vs_uncached"]),
                    pct(r["head_val_top1"]),
                ]
                for r in rows
            ],
        ),
    ]
    fine = next((r for r in rows if r.get("fine_tune")), None)
    if fine:
        f = fine["fine_tune"]
        out += [
            "",
            markdown_table(
                ["full fine-tune (after the cached head)", "epochs", "seconds", "images/s", "val top-1 after"],
                [
                    [
                        f"all {f['trainable_layers']} backbone layers with weights trainable, BatchNorm frozen, lr 1e-5",
                        f["epochs"],
                        fmt(f["seconds"], ".1f"),
                        fmt(f["images_per_s"], ".0f"),
                        pct(fine["final_val_top1"]),
                    ]
                ],
            ),
        ]
    return "\n".join(out)


def accuracy(section: dict[str, Any], prep: dict[str, Any], data: dict[str, Any]) -> str:
    rows = [
        [
            r["variant"],
            pct(r["top1"]),
            fmt(r["drop_pt"], "+.2f"),
            pct(r["agreement"]),
            kib(r["size_bytes"]),
            fmt(r["size_ratio"], ".3f", "×"),
        ]
        for r in section["rows"]
    ]
    qat = f"QAT for {prep['qat_epochs']} epoch(s)" if prep["qat_epochs"] else "no QAT in this mode"
    goals = [
        [
            g["goal"],
            ("≤ " if g["at_most"] else "≥ ") + _goal_value(g["goal"], g["limit"]),
            _goal_value(g["goal"], g["value"]),
            "–" if g["met"] is None else ("met" if g["met"] else "**NOT met**"),
        ]
        for g in section["goals"]
    ]
    return "\n".join(
        [
            "## 2. Accuracy and size",
            "",
            f"The section-1 model (3 cached views + full fine-tune), {qat}, int8 calibrated on "
            f"{prep['calibration_images']} train-split images. Evaluated on {section['images']} held-out photos of the "
            f"Fashion-MNIST *test* part ({data['test_per_class']} per class, never seen in training); every .tflite through "
            f"`edgetl.runtime.Classifier` (decode, resize, input quantization: the device path), via {section['via'].split(' (')[0]}.",
            "Drop = float top-1 − variant top-1 (negative: the variant did better); agreement = share of images whose top-1 equals float's.",
            "",
            markdown_table(
                ["model", "top-1", "drop vs float (pt)", "agreement with float", "size KiB", "size vs fp32"], rows
            ),
            "",
            "Goals (issue #6), measured against the table above:",
            "",
            markdown_table(["goal", "target", "measured", "status"], goals, right=[False, True, True, False]),
        ]
    )


def _goal_value(name: str, value: Any) -> str:
    if value is None:
        return "–"
    if "agreement" in name:
        return f"{100 * value:.2f}%"
    return f"{value:.3f}×" if "size" in name else f"{value:.2f} pt"


def latency(section: dict[str, Any], models: list[dict[str, Any]]) -> str:
    out = [
        "## 3. Latency per image",
        "",
        f"Through `edgetl.runtime.Classifier`: `invoke()` on a prepared tensor, and `scores()` on a {section['frame']} "
        "(resize, colour order, quantization, dequantization included); Keras is `predict_on_batch` on one normalised image "
        f"with TensorFlow's intra/inter-op threads set to the same count. {section['repeats']} calls per cell in "
        f"{section['rounds']} interleaved rounds after 3 warm-up calls; heads trained one epoch (latency does not depend on it).",
    ]
    for model in models:
        rows = [r for r in section["rows"] if r["model"] == model["name"]]
        out += [
            "",
            f"**MobileNetV2 {model['name']}** ({model['weights']} weights): {model['macs'] / 1e6:.1f} M multiply-accumulates "
            "per image (conv, depthwise and dense kernels × output positions).",
            "",
            markdown_table(
                [
                    "variant",
                    "threads",
                    "invoke median ms",
                    "invoke p95 ms",
                    "scores() median ms",
                    "scores() p95 ms",
                    "speed-up vs Keras",
                    "vs fp32",
                    "GMAC/s",
                ],
                [
                    [
                        r["variant"],
                        r["threads"],
                        fmt(r["invoke"]["median_ms"], ".2f"),
                        fmt(r["invoke"]["p95_ms"], ".2f"),
                        fmt((r["scores"] or {}).get("median_ms"), ".2f"),
                        fmt((r["scores"] or {}).get("p95_ms"), ".2f"),
                        times(r["speedup_vs_keras"]),
                        times(r["speedup_vs_fp32"]),
                        fmt(r["gmac_per_s"], ".1f"),
                    ]
                    for r in rows
                ],
            ),
        ]
    return "\n".join(out)


def runtime(section: dict[str, Any]) -> str:
    p, c, s, v = section["pipeline"], section["cold_start"], section["soak"], section["video"]
    rows = [
        [
            r["model"],
            r["threads"],
            fmt(r["pipeline_fps"], ".1f"),
            fmt(r["bare_invoke_fps"], ".1f"),
            pct(r["ratio"]),
            "met" if (r["ratio"] or 0) >= p["goal_ratio"] else "**NOT met**",
            *(pct(r["shares"].get(k)) for k in ("preprocess", "invoke", "postprocess", "other", "preprocess_ahead")),
        ]
        for r in p["rows"]
    ]
    return "\n".join(
        [
            "## 4. Runtime pipeline",
            "",
            f"`edge-classify --video clip.avi --headless` on a {v['frames']}-frame {v['size']} {v['codec']} video of real "
            "Fashion-MNIST photos (written with `cv2.VideoWriter`), vs bare `Classifier.invoke()` on one prepared tensor in a "
            "fresh process, same model and threads. Pipeline FPS is edge-classify's own summary (frames ÷ loop wall time, model "
            "load excluded); stage shares are of that wall time, from its per-frame JSON lines (*other* = waiting for the decoder "
            "thread, writing the JSON line). The video reader thread decodes and prepares each frame's input tensor while the "
            "loop invokes the previous one; *ahead* is that preprocessing time, overlapped, so outside the 100%. "
            f"Median of {p['rows'][0]['runs'] if p['rows'] else 0} run(s) each.",
            "",
            f"Example: `{p['example_command']}`",
            "",
            markdown_table(
                [
                    "model",
                    "threads",
                    "edge-classify FPS",
                    "bare invoke FPS",
                    "pipeline / bare",
                    "goal ≥ 95%",
                    "preprocess",
                    "invoke",
                    "postprocess",
                    "other",
                    "ahead",
                ],
                rows,
            ),
            "",
            f"Cold start (subprocess wall time, median of {c['rows'][0]['runs']}; model `{c['model'].rsplit('/', 1)[-1]}`):",
            "",
            markdown_table(
                ["what", "command", "median s"],
                [[r["what"], f'`python -c "{_short(r["code"])}"`', fmt(r["median_s"], ".2f")] for r in c["rows"]],
                right=[False, False, True],
            ),
            "",
            f"`import tensorflow` takes {times(c['tf_over_edge'])} as long as importing edge_runtime and loading a model.",
            "",
            f"Soak: `{s['command']}` — {s['frames']} frames at {fmt(s['fps'], '.1f')} FPS; resident memory "
            f"{fmt(s['rss_first_mb'], '.1f')} MiB at the first frame, {fmt(s.get('rss_warm_mb'), '.1f')} MiB after 100 frames "
            f"(decode-ahead queue full), {fmt(s['rss_last_mb'], '.1f')} MiB at the last: {fmt(s.get('rss_growth_after_warmup_pct'), '+.2f')}% "
            "after warm-up (goal < 5%).",
        ]
    )


def _short(code: str) -> str:
    """A cold-start command with the model path cut to its file name."""
    return re.sub(r"model_path='[^']*/([^'/]+)'", r"model_path='\1'", code)


def conversion(rows: list[dict[str, Any]], prep: dict[str, Any]) -> str:
    n = prep["calibration_images"]
    steps = [
        [
            f"`calibrate()`: choose {n} balanced train images, write calibration.json",
            fmt(prep["calibrate_seconds"], ".2f"),
        ],
        [
            f"decode + prepare the {n} calibration images once (representative dataset)",
            fmt(prep["calibration_feed_seconds"], ".2f"),
        ],
    ]
    if prep["qat_seconds"] is not None:  # --quick skips QAT
        steps.append(
            [
                f"`qat()`: quantize_model, range init, {prep['qat_epochs']} fine-tune epoch(s), save",
                fmt(prep["qat_seconds"], ".1f"),
            ]
        )
    return "\n".join(
        [
            "## 5. Conversion",
            "",
            "Wall time of each `edgetl.convert` variant (the library's own per-variant timing; int8 includes "
            "running the calibration set through the model), the rest of the call (one SavedModel export per Keras model; "
            "for QAT also rebuilding the fake-quant graph from model.keras, as tfmot cannot reload it; read-back with "
            "ai-edge-litert; cards), and the calibration steps around it.",
            "",
            markdown_table(
                ["model", "step", "seconds", "size KiB"],
                [[r["model"], r["step"], fmt(r["seconds"], ".2f"), kib(r["size_bytes"])] for r in rows],
                right=[False, False, True, True],
            ),
            "",
            markdown_table(["1.0 trained model: other steps", "seconds"], steps),
        ]
    )


def serve(section: dict[str, Any]) -> str:
    """Section 6 (``benchmarks/serve.py``): classification FPS and CPU per frame with the browser preview and one viewer vs without."""
    first = section["models"][0]
    v = section["models"][0]["video"]
    parts = [
        "## 6. Browser preview",
        "",
        f"`edge-classify --video clip.avi --loop --max-frames {first['frames_per_run']} --threads {first['threads']} --headless` with and without "
        "`--serve 127.0.0.1:PORT` and one viewer reading the MJPEG stream (`benchmarks/serve.py`, "
        f"{first['date']}): a {v['frames']}-frame {v['size']} {v['codec']} video of real Fashion-MNIST photos, "
        "interleaved pairs of runs per model. FPS from the per-frame JSON lines after each "
        f"run's first {first['skip_s']:g} s; CPU = user + system time of the whole edge-classify process per frame "
        "(on this shared machine FPS swings with the other jobs, CPU per frame much less; a CPU-bound Pi's FPS follows it). "
        "The preview encodes only while someone watches, at most 15 JPEGs a second, on its own thread.",
    ]
    for m in section["models"]:
        pairs = zip([r for r in m["samples"] if not r["serve"]], [r for r in m["samples"] if r["serve"]])
        rows = [
            [
                f"pair {i + 1}",
                fmt(a["fps"], ".1f"),
                fmt(b["fps"], ".1f"),
                fmt(a["cpu_ms_per_frame"], ".3f"),
                fmt(b["cpu_ms_per_frame"], ".3f"),
                fmt(b.get("viewer_fps"), ".1f"),
            ]
            for i, (a, b) in enumerate(pairs)
        ]
        rows.append(
            [
                "**median**",
                f"**{fmt(m['fps_without'], '.1f')}**",
                f"**{fmt(m['fps_with_viewer'], '.1f')}**",
                f"**{fmt(m['cpu_ms_per_frame_without'], '.3f')}**",
                f"**{fmt(m['cpu_ms_per_frame_with_viewer'], '.3f')}**",
                fmt(m["viewer_fps"], ".1f"),
            ]
        )
        parts += [
            "",
            f"Model `{m['model']}`:",
            "",
            markdown_table(
                [
                    "run",
                    "FPS without",
                    "FPS with a viewer",
                    "CPU ms/frame without",
                    "CPU ms/frame with a viewer",
                    "JPEGs/s the viewer got",
                ],
                rows,
            ),
            "",
            f"With a viewer: FPS {pct(m['ratio'])} of the FPS without, CPU per frame {pct(m['cpu_ratio'])} of it "
            f"(medians of {m['runs']} runs each; load average at the end {', '.join(f'{x:.1f}' for x in m.get('loadavg_end') or [])} "
            f"on this shared 2-core machine, benchmark at niceness {m.get('nice', 0)}). The process used "
            f"{pct(m['fps_without'] * m['cpu_ms_per_frame_without'] / 1e3)} of a core without a viewer and "
            f"{pct(m['fps_with_viewer'] * m['cpu_ms_per_frame_with_viewer'] / 1e3)} with one: where that is well under 100%, the "
            "machine's other jobs set the FPS (it came out higher with a viewer here, a scheduling effect, not a speed-up) and "
            "the CPU per frame is the figure that says what serving costs.",
        ]
    return "\n".join(parts)


def render(results: dict[str, Any]) -> str:
    """The whole ``BENCHMARKS.md``."""
    parts = [
        header(results["meta"]),
        training(results["training"]),
        accuracy(results["accuracy"], results["variants"], results["data"]),
        latency(results["latency"], results["latency_models"]),
        runtime(results["runtime"]),
        conversion(results["conversion"], results["variants"]),
    ]
    if "serve" in results:  # benchmarks/serve.py adds it
        parts.append(serve(results["serve"]))
    return "\n\n".join(parts) + "\n"
