"""Options -> Classifier -> ``list[Category]``: one frame in, the top classes out.

The card beside the model says how to prepare pixels (size, colour order,
normalisation); the interpreter's own input tensor gives the quantization that is
applied, and the card must agree with it, so a card from another model is refused
before it can give wrong answers quietly. Output scores are dequantized to floats.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from edgetl.runtime import preprocess
from edgetl.runtime.errors import ArgumentError
from edgetl.runtime.interpreter import default_probe_timeout, load_interpreter, probe
from edgetl.runtime.metadata import card_from_metadata
from edgetl.runtime.model_card import CardError, ModelCard, TensorSpec, card_path_for, load_card, verify_model_file


@dataclasses.dataclass(frozen=True)
class ClassifierOptions:
    """How to load and query a model.

    Attributes:
        model_path: the .tflite file.
        card_path: its card; default the ``.json`` with the same stem beside it.
        num_threads: interpreter threads; default all cores.
        max_results: how many categories ``classify`` returns.
        score_threshold: categories scoring below this are left out.
        verify_checksum: refuse a model whose sha256 differs from its card's.
        probe_timeout: seconds a forked child gets to load the model and invoke it
            once before this process does (a file that crashes or hangs the
            interpreter becomes one ``ModelLoadError``); None skips the probe.
            Default ``$EDGETL_PROBE_TIMEOUT`` or 60 s.
    """

    model_path: str
    card_path: Optional[str] = None
    num_threads: Optional[int] = None
    max_results: int = 3
    score_threshold: float = 0.0
    verify_checksum: bool = True
    probe_timeout: Optional[float] = dataclasses.field(default_factory=default_probe_timeout)

    def __post_init__(self) -> None:
        """Refuse arguments of the wrong kind before any file is opened (``ArgumentError``, naming the fix)."""
        for name in ("model_path", "card_path"):
            value = getattr(self, name)
            if value is None and name == "card_path":
                continue
            if not isinstance(value, (str, os.PathLike)) or isinstance(value, bool):
                raise ArgumentError(f"{name} must be a file path, a str or pathlib.Path (got {type(value).__name__})")
            object.__setattr__(self, name, os.fspath(value))
        checks = [
            (
                self.num_threads is None or _is_int(self.num_threads) and 1 <= self.num_threads <= 64,
                f"num_threads (--threads) must be None (all cores) or an integer 1..64 (got {self.num_threads!r})",
            ),
            (
                _is_int(self.max_results) and self.max_results >= 1,
                f"max_results (--top-k) must be an integer >= 1 (got {self.max_results!r})",
            ),
            (
                isinstance(self.score_threshold, (int, float))
                and not isinstance(self.score_threshold, bool)
                and 0 <= self.score_threshold <= 1,
                f"score_threshold (--threshold) must be a number in [0, 1] (got {self.score_threshold!r})",
            ),
            (
                isinstance(self.verify_checksum, bool),
                f"verify_checksum must be True or False (got {self.verify_checksum!r})",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ArgumentError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Category:
    """One class and its score (a probability for edgetl models)."""

    index: int
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}


@dataclasses.dataclass
class Timings:
    """Milliseconds spent on the last frame, per stage."""

    preprocess_ms: float = 0.0
    invoke_ms: float = 0.0
    postprocess_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.invoke_ms + self.postprocess_ms


class Classifier:
    """A .tflite image classifier driven by its model card.

    The card beside the model (or ``card_path``) wins; a model without one is
    described by its standard TFLite metadata (``edgetl convert`` embeds it).

    Raises (from the constructor):
        CardError: the card is missing, malformed, or does not describe this model.
        ModelLoadError: the .tflite file is missing or corrupt.
        RuntimeMissingError: no interpreter package is installed.
    """

    def __init__(self, options: ClassifierOptions):
        self.options = options
        model_path = Path(options.model_path)
        card_path = Path(options.card_path) if options.card_path else card_path_for(model_path)
        # No card beside an existing model (and none named): the card comes from the model's TFLite metadata.
        from_metadata = options.card_path is None and model_path.is_file() and not card_path.exists()
        if from_metadata:
            found = _read_metadata(model_path, card_path)
        else:
            self.card: ModelCard = load_card(card_path)
            if options.verify_checksum and model_path.is_file():
                verify_model_file(self.card, model_path)
        probe(model_path, options.num_threads, options.probe_timeout)
        self._interpreter = load_interpreter(model_path, options.num_threads)
        _check_signature(model_path, self._interpreter.get_input_details(), self._interpreter.get_output_details())
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        if from_metadata:
            self.card = card_from_metadata(model_path, self._input, self._output, found)  # type: ignore[assignment]
        self._input_spec = TensorSpec.from_detail(self._input)
        self._output_spec = TensorSpec.from_detail(self._output)
        self._check_card(model_path)
        self._card_for_input = self.card.replace(input=self._input_spec)
        self.last_timings = Timings()

    def _check_card(self, model_path: Path) -> None:
        shape = tuple(int(x) for x in self._input["shape"])
        where = f"{model_path} and its card"
        if len(shape) != 4 or shape[3] != 3:
            raise CardError(
                f"{model_path}: input shape {shape} is not (1, H, W, 3); edge_runtime classifies RGB images only"
            )
        if shape[1:3] != (self.card.height, self.card.width):
            raise CardError(
                f"{where} disagree: the model takes {shape[2]}x{shape[1]}, the card says {self.card.width}x{self.card.height}; use the card written with this model"
            )
        classes = int(np.prod(self._output["shape"][1:]))
        if classes != self.card.num_classes:
            raise CardError(
                f"{where} disagree: the model has {classes} outputs, the card lists {self.card.num_classes} labels; use the card written with this model"
            )
        if self._input_spec.dtype != self.card.input.dtype:
            raise CardError(
                f"{where} disagree: the model's input is {self._input_spec.dtype}, the card says {self.card.input.dtype}; use the card written with this model"
            )
        if self._input_spec.quantized and not np.isclose(self._input_spec.scale, self.card.input.scale, rtol=1e-5):
            raise CardError(
                f"{where} disagree on the input scale ({self._input_spec.scale:.6g} vs {self.card.input.scale:.6g}); use the card written with this model"
            )

    @property
    def input_spec(self) -> TensorSpec:
        """The model's input tensor as the interpreter reports it (dtype, scale, zero point)."""
        return self._input_spec

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    def prepare(self, frame: np.ndarray, color_order: str = "BGR") -> np.ndarray:
        """The input tensor (1, H, W, 3) for a frame, exactly as ``scores`` feeds it."""
        return preprocess.prepare(frame, self._card_for_input, color_order)

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Run a prepared input tensor; return dequantized float scores, one per label."""
        self._interpreter.set_tensor(self._input["index"], tensor)
        self._interpreter.invoke()
        return preprocess.dequantize(self._interpreter.get_tensor(self._output["index"])[0], self._output_spec)

    def scores(self, frame: np.ndarray, color_order: str = "BGR", tensor: Optional[np.ndarray] = None) -> np.ndarray:
        """Float scores for every label of one frame; records ``last_timings``.

        Args:
            frame: uint8 image, grey or 3/4 channels, any size.
            color_order: ``BGR`` for OpenCV frames, ``RGB`` for Picamera2 or decoded files.
            tensor: ``prepare(frame, color_order)`` when already built elsewhere (a
                source's reader thread); its cost is then not in ``last_timings``.
        """
        t0 = time.perf_counter()
        if tensor is None:
            tensor = self.prepare(frame, color_order)
        t1 = time.perf_counter()
        self._interpreter.set_tensor(self._input["index"], tensor)
        self._interpreter.invoke()
        t2 = time.perf_counter()
        out = preprocess.dequantize(self._interpreter.get_tensor(self._output["index"])[0], self._output_spec)
        t3 = time.perf_counter()
        self.last_timings = Timings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return out

    def classify(
        self, frame: np.ndarray, color_order: str = "BGR", tensor: Optional[np.ndarray] = None
    ) -> list[Category]:
        """The top ``max_results`` categories scoring at least ``score_threshold``, best first (``tensor``: as in ``scores``)."""
        t0 = time.perf_counter()
        values = self.scores(frame, color_order, tensor)
        categories = top_k(values, self.card.labels, self.options.max_results, self.options.score_threshold)
        self.last_timings.postprocess_ms += (time.perf_counter() - t0) * 1e3 - self.last_timings.total_ms
        return categories


def _check_signature(model_path: Path, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
    """Refuse at load what would crash on the first frame: several tensors, a batch other than 1, a non-vector output.

    Raises:
        CardError: not one (1, H, W, 3) input and one (1, classes) output.
    """
    shapes = [tuple(int(x) for x in d["shape"]) for d in (*inputs, *outputs)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise CardError(
            f"{model_path} has {len(inputs)} input(s) and {len(outputs)} output(s) {shapes}; edge_runtime runs "
            "classifiers with one image input and one score output, as edgetl convert writes"
        )
    out = shapes[1]
    if shapes[0][:1] != (1,) or len(out) != 2 or out[0] != 1:
        raise CardError(
            f"{model_path}: input {shapes[0]} and output {out} are not batch-1 (1, H, W, 3) -> (1, classes); "
            "convert the classifier with batch 1, as edgetl convert does"
        )


def top_k(values: np.ndarray, labels: tuple[str, ...], k: int, threshold: float = 0.0) -> list[Category]:
    """The ``k`` best categories at or above ``threshold``, ties broken by index."""
    order = np.argsort(-values, kind="stable")[: max(k, 0)]
    return [Category(int(i), labels[i], float(values[i])) for i in order if values[i] >= threshold]


def _read_metadata(model_path: Path, card_path: Path) -> dict[str, Any]:
    """The model's TFLite metadata, read before the interpreter loads; the usual missing-card error without any."""
    try:
        from edgetl.runtime.metadata import read_metadata  # (needs flatbuffers; only this path does)
    except ImportError as exc:
        raise CardError(
            f"no model card at {card_path}, and reading the model's TFLite metadata needs {exc.name} "
            f"(pip install flatbuffers); or keep the .json beside the model"
        ) from None
    found = read_metadata(model_path)
    if not found:
        load_card(card_path)  # raises "no model card at …"
    return found
