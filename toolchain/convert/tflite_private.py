"""Every private TensorFlow Lite call edgetl makes, gathered here so an upgrade breaks one file.

Checked against TensorFlow 2.21 and ai-edge-litert 2.3 (the versions ``pyproject.toml`` pins).
Each call has no public equivalent in those versions:

- ``calibrate_only``: ``TFLiteConverter._experimental_calibrate_only`` makes ``convert()`` stop after
  calibration and return the float model annotated with each tensor's min/max. edgetl reads those
  ranges for GPTQ (the converter's own ranges, so the rounding matches what it will quantize to) and
  quantizes them with a denylist for ``--keep-float``. ``tf.lite.experimental.QuantizationDebugger``
  uses the same two steps internally.
- ``quantize_calibrated``: ``tensorflow.lite.python.convert.mlir_quantize`` quantizes a calibrated
  model leaving the denylisted nodes in float (selective quantization; the debugger's own path).
- ``read_model``: the flatbuffer schema bindings (``schema_py_generated``) read a model's tensors and
  their calibrated ranges; only LiteRT's copy of the same bindings is public.
- ``ops_details``: ``Interpreter._get_ops_details()`` lists each op's output tensors, which names the
  Keras layer behind a tensor and the ops that compute in float.
"""

from __future__ import annotations

from typing import Any


def calibrate_only(converter: Any) -> bytes:
    """The calibrated float model (min/max on every tensor) instead of a quantized one."""
    converter._experimental_calibrate_only = True  # noqa: SLF001 - see the module docstring
    return bytes(converter.convert())


def quantize_calibrated(calibrated: bytes, io_type: Any, denylisted_nodes: list[str]) -> bytes:
    """Full-integer quantization of a calibrated model, the denylisted nodes left in float."""
    from tensorflow.lite.python import convert as tflite_convert

    return bytes(
        tflite_convert.mlir_quantize(
            calibrated, input_data_type=io_type, output_data_type=io_type, denylisted_nodes=denylisted_nodes
        )
    )


def read_model(flatbuffer: bytes) -> Any:
    """The model's flatbuffer as TFLite's object API (``ModelT``: subgraphs, tensors, quantization)."""
    from tensorflow.lite.python import schema_py_generated as schema

    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))


def ops_details(interpreter: Any) -> list[dict[str, Any]]:
    """Each op of a loaded interpreter: ``op_name``, ``inputs`` and ``outputs`` tensor indices."""
    return list(interpreter._get_ops_details())  # noqa: SLF001 - see the module docstring
