"""Pure helpers of the benchmark: statistics, tables, multiply-accumulate counts, machine facts.

Nothing here times anything that matters or imports TensorFlow at module level, so
``tests/test_bench.py`` can check every function on small, known inputs.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
from edgetl.model.graph import WEIGHTED_CLASSES
from edgetl.runfolder import package_version

# Layers whose multiply-accumulates are counted: their kernel holds one weight per MAC per output position.
MAC_LAYERS = WEIGHTED_CLASSES  # the layers whose multiply-accumulates count
PACKAGES = (
    "tensorflow",
    "tf-keras",
    "tensorflow-model-optimization",
    "ai-edge-litert",
    "numpy",
    "opencv-python-headless",
)


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """Median and 95th percentile of per-call milliseconds (NaN when there are none)."""
    if not len(samples_ms):
        return {"median_ms": float("nan"), "p95_ms": float("nan"), "n": 0}
    values = np.asarray(samples_ms, dtype=np.float64)
    return {
        "median_ms": round(float(np.median(values)), 4),
        "p95_ms": round(float(np.percentile(values, 95)), 4),
        "n": int(values.size),
    }


def median(values: Iterable[float]) -> float:
    """The median of ``values`` (NaN when empty)."""
    items = [float(v) for v in values]
    return float(np.median(items)) if items else float("nan")


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0 or np.isnan(denominator) or np.isnan(numerator):
        return None
    return numerator / denominator


def fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    """One table cell: ``value`` formatted with ``spec``; ``–`` for None/NaN; strings as they are."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:{spec}}{suffix}"


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Optional[Sequence[bool]] = None
) -> str:
    """A GitHub Markdown table; cells are ``str()``-ed, ``|`` escaped; numeric columns right-aligned.

    Args:
        headers: column titles.
        rows: one sequence of cells per row, as long as ``headers``.
        right: per column, whether to right-align; default: every column but the first.
    """
    align = list(right) if right is not None else [False] + [True] * (len(headers) - 1)
    if len(align) != len(headers) or any(len(r) != len(headers) for r in rows):
        raise ValueError(f"every row needs {len(headers)} cells")
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "|" + "|".join("---:" if a else "---" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def goal(value: Optional[float], limit: float, at_most: bool = True) -> str:
    """``met`` / ``not met`` for ``value <= limit`` (or ``>=`` when ``at_most`` is False); ``–`` when unmeasured."""
    if value is None or np.isnan(value):
        return "–"
    ok = value <= limit if at_most else value >= limit
    return "met" if ok else "NOT met"


def _shape(value: Any) -> tuple[int, ...]:
    """A Keras shape (TensorShape, tuple, or a one-element list of them) as a tuple of ints, batch dropped."""
    if isinstance(value, list):
        value = value[0]
    return tuple(int(d) for d in tuple(value)[1:])


def layer_macs(layer: Any) -> int:
    """Multiply-accumulates of one layer for one image (0 for layers that are not conv/depthwise/dense).

    Every output position of a Conv2D, DepthwiseConv2D or Dense layer costs one MAC per
    kernel weight that reaches it: Conv2D ``kh*kw*cin*cout`` per position for all ``cout``
    outputs at once, DepthwiseConv2D ``kh*kw*cin*mult``, Dense ``units_in*units_out``. So
    the count is ``prod(spatial output dims) * kernel.size``; biases, BatchNorm,
    activations, adds and pooling are left out, as in the MobileNet papers.
    """
    if type(layer).__name__ not in MAC_LAYERS:
        return 0
    kernel = layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel
    positions = int(np.prod(_shape(layer.output_shape)[:-1], dtype=np.int64))
    return positions * int(np.prod(tuple(kernel.shape), dtype=np.int64))


def count_macs(model: Any) -> int:
    """Multiply-accumulates per image of a flat Keras model (sum of ``layer_macs``)."""
    return sum(layer_macs(layer) for layer in model.layers)


def interleaved(
    calls: dict[str, Callable[[], Any]], repeats: int, rounds: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Per-call milliseconds of each callable, measured in interleaved blocks.

    Each callable first runs ``warmup`` times untimed; then, ``rounds`` times, each
    runs ``repeats // rounds`` timed calls in turn, so slow drift on a shared machine
    (another job starting) hits every variant alike and the ratios stay fair.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    per_round = max(1, repeats // max(1, rounds))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(1, rounds)):
        for name, call in calls.items():
            for _ in range(per_round):
                start = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


def run_seconds(command: Sequence[str], env: Optional[dict[str, str]] = None, **kwargs: Any) -> float:
    """Wall seconds of a subprocess that must succeed (its output is discarded unless redirected)."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    start = time.perf_counter()
    subprocess.run(list(command), check=True, env=env, **kwargs)
    return time.perf_counter() - start


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def machine_info() -> dict[str, Any]:
    """CPU model, cores and threads, memory, OS and load average of this machine."""
    cpu = _lscpu()
    model = cpu.get("Model name") or platform.processor() or "unknown"
    try:
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        memory_gib: Optional[float] = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        memory_gib = None
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cores_per_socket": cpu.get("Core(s) per socket"),
        "threads_per_core": cpu.get("Thread(s) per core"),
        "sockets": cpu.get("Socket(s)"),
        "hypervisor": cpu.get("Hypervisor vendor"),
        "memory_gib": memory_gib,
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "loadavg_start": load_average(),
    }


def load_average() -> Optional[list[float]]:
    """The 1/5/15-minute load averages (how busy the shared machine was), None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def library_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (``not installed`` when absent), read without importing them."""
    return {name: package_version(name, missing="not installed") for name in packages}


SECTION_START, SECTION_END = "<!-- section:{name} -->", "<!-- /section:{name} -->"


def write_section(root: Path, name: str, markdown: str, data: dict[str, Any]) -> None:
    """Put one separately measured section into ``BENCHMARKS.md`` (between markers) and ``benchmarks.json``.

    Scripts that measure one thing (the parity gate study, the browser preview, scale)
    own a named section; ``benchmarks/__main__.py`` keeps every such section when it rewrites
    the rest (``preserved_sections``).
    """
    import json

    from edgetl.runtime.model_card import write_bytes_atomic

    md_path, json_path = root / "BENCHMARKS.md", root / "benchmarks.json"
    start, end = SECTION_START.format(name=name), SECTION_END.format(name=name)
    text = md_path.read_text() if md_path.exists() else "# Benchmarks\n"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    results = json.loads(json_path.read_text()) if json_path.exists() else {}
    results.setdefault("sections", {})[name] = data
    write_bytes_atomic(json_path, (json.dumps(results, indent=1) + "\n").encode())
    write_bytes_atomic(md_path, text.encode())


def preserved_sections(md_text: str, results_json: dict[str, Any], old_json: dict[str, Any]) -> str:
    """The marked sections of an old ``BENCHMARKS.md`` (appended by ``bench.py`` to the new one; JSON too)."""
    import re

    blocks = re.findall(r"<!-- section:([\w-]+) -->.*?<!-- /section:\1 -->", md_text, flags=re.S)
    out = []
    for name in blocks:
        start, end = SECTION_START.format(name=name), SECTION_END.format(name=name)
        out.append(md_text[md_text.index(start) : md_text.index(end) + len(end)])
        if name in old_json.get("sections", {}):
            results_json.setdefault("sections", {})[name] = old_json["sections"][name]
    return "\n\n".join(out)
