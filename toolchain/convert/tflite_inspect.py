"""Reading converted .tflite files back with ai-edge-litert: tensors, ops, layer names.

A converted model is proven by loading it as the device will (``read_back``), by
listing the ops that still compute in float (``float_ops``: none in a
full-integer model), and by mapping Keras layer names to the TFLite tensors the
converter made of them (``layers_of``, ``keep_float_nodes``). No TensorFlow here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from edgetl import log
from edgetl.convert import tflite_private
from edgetl.errors import ConfigError, ConversionError
from edgetl.runtime.model_card import ModelCard, TensorSpec


def layers_of(tensor_name: str) -> list[str]:
    """Keras layer names in a TFLite tensor name (fused ops join several with ``;``)."""
    return [part.split("/")[1] for part in tensor_name.split(";") if part.count("/") >= 1 and part.split("/")[1]]


def keep_float_nodes(model: bytes, layers: tuple[str, ...]) -> list[str]:
    """Output tensor names of the ops that belong to each Keras layer in ``layers``.

    Raises:
        ConfigError: a layer matches no op.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    tensors = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    outputs = [tensors[i] for op in tflite_private.ops_details(interpreter) for i in op["outputs"] if i in tensors]
    nodes: list[str] = []
    for layer in layers:
        found = [name for name in outputs if layer in layers_of(name)]
        if not found:
            known = list(dict.fromkeys(layers_of(n)[-1] for n in outputs if layers_of(n)))
            sample = ", ".join(known[:6])
            raise ConfigError(
                f"--keep-float {layer}: no such layer in the converted graph (layers look like {sample}); "
                f"--debug names the worst ones"
            )
        nodes += found
    return nodes


def read_back(path: Path, card: ModelCard) -> tuple[TensorSpec, TensorSpec]:
    """Load a .tflite with ai-edge-litert and read its input and output tensors.

    Raises:
        ConversionError: it does not load, or its tensors do not fit the card.
    """
    from ai_edge_litert.interpreter import Interpreter

    try:
        with log.quiet_native():  # the XNNPACK delegate announces itself
            interpreter = Interpreter(model_path=str(path))
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ConversionError(f"{path.name} does not load in ai-edge-litert ({exc}); rerun with -v") from None
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConversionError(f"{path.name} has {len(inputs)} inputs and {len(outputs)} outputs; expected one of each")
    shape_in, shape_out = tuple(inputs[0]["shape"]), tuple(outputs[0]["shape"])
    if shape_in[1:] != (card.height, card.width, 3) or shape_out[-1] != card.num_classes:
        raise ConversionError(
            f"{path.name} takes {shape_in} and returns {shape_out}; its card says "
            f"({card.height}, {card.width}, 3) -> {card.num_classes} classes"
        )
    return TensorSpec.from_detail(inputs[0]), TensorSpec.from_detail(outputs[0])


def float_ops(path: Path) -> list[str]:
    """Names of the ops in a .tflite whose outputs are float32 (none in a full-integer model)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    floating = {t["index"] for t in interpreter.get_tensor_details() if np.dtype(t["dtype"]) == np.float32}
    return [op["op_name"] for op in tflite_private.ops_details(interpreter) if floating.intersection(op["outputs"])]


def spec_text(spec: TensorSpec) -> str:
    """``uint8 s=0.00784 zp=127`` for a quantized tensor, its dtype otherwise."""
    return f"{spec.dtype} s={spec.scale:.4g} zp={spec.zero_point}" if spec.quantized else spec.dtype
