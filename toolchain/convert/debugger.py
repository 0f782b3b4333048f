"""``edgetl convert --debug``: TensorFlow's int8 quantization debugger, per layer, to ``RUN/int8_debug.csv``.

The debugger converts the int8 model with numeric-verify ops and runs a few
calibration images through it; each layer's error, divided by its quantization
step (``rmse/scale``), says which layer int8 hurts most. The worst are logged
with the ``--keep-float`` option that would keep one in float.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Callable

from edgetl import log
from edgetl.convert.tflite_inspect import layers_of
from edgetl.errors import ConversionError
from edgetl.runtime.guard import csv_cell
from edgetl.runtime.model_card import write_bytes_atomic

DEBUG_CSV = "int8_debug.csv"
DEBUG_SAMPLES = 50  # images the int8 debugger compares layer by layer
WORST_LAYERS = 5


def debug_int8(tf: Any, saved_dir: Path, representative: Callable[[], Any], run: Path) -> Path:
    """Per-layer int8 error statistics to ``RUN/int8_debug.csv``; the worst layers go to the log."""
    rows = layer_statistics(tf, saved_dir, representative)
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=list(rows[0].keys()) if rows else ["layer", "rmse/scale"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows({k: csv_cell(v, numbers=True) for k, v in r.items()} for r in rows)  # names from the model
    path = run / DEBUG_CSV
    write_bytes_atomic(path, out.getvalue().encode("utf-8"))
    worst = sorted((r for r in rows if r["rmse/scale"] != "nan"), key=lambda r: -float(r["rmse/scale"]))[:WORST_LAYERS]
    if worst:
        names = ", ".join(f"{r['layer']} ({r['op_name']}) {float(r['rmse/scale']):.3f}" for r in worst)
        log.info(f"worst int8 layers by rmse/scale: {names}")
        log.info(f"{len(rows)} layers in {path.name}; keep one in float with --keep-float {worst[0]['layer']}")
    return path


def layer_statistics(tf: Any, saved_dir: Path, representative: Callable[[], Any]) -> list[dict[str, str]]:
    """The debugger's per-tensor rows (first ``DEBUG_SAMPLES`` images), each with its ``layer`` and ``rmse/scale``.

    Raises:
        ConversionError: the debugger failed on this graph.
    """

    def sample() -> Any:
        for i, item in enumerate(representative()):
            if i >= DEBUG_SAMPLES:
                return
            yield item

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_dir))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    try:
        with log.quiet_native():
            debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=sample)
            debugger.run()
            buffer = io.StringIO()
            debugger.layer_statistics_dump(buffer)
    except Exception as exc:  # noqa: BLE001 - the debugger raises ValueError/RuntimeError from deep inside TFLite
        raise ConversionError(f"int8 quantization debugger failed: {str(exc).splitlines()[0][:300]}") from None
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    for row in rows:
        scale, mse = float(row.get("scale") or 0), float(row.get("mean_squared_error") or 0)
        row["rmse/scale"] = f"{math.sqrt(mse) / scale:.6g}" if scale > 0 else "nan"
        row["layer"] = (layers_of(row.get("tensor_name", "")) or [""])[-1]
    return rows
