"""Standard TFLite metadata inside the .tflite: labels, normalisation, names, without TensorFlow.

MediaPipe Tasks, the TFLite Task Library and Netron read a model's description from
a FlatBuffer (file identifier ``M001``) stored in the model's buffer named
``TFLITE_METADATA``, and its label file from a zip appended to the model. edgetl's
model card carries the same facts; this module writes them into the model as well,
so the file alone says what it is (MediaPipe shows class names, ``edge-classify``
runs without the card). The interpreter ignores both parts: outputs are unchanged.

Writing follows what MediaPipe's and tflite-support's ``MetadataPopulator`` do:
the metadata is built with the vendored, generated schema
(:mod:`edgetl.runtime._vendor.metadata_schema_py_generated`, needs only
``flatbuffers``), the model is unpacked and re-packed with ``ai_edge_litert``'s
TFLite schema (object API), and ``labels.txt`` is appended as a stored (uncompressed)
zip entry. Reading needs only the vendored module, so a device with tflite-runtime
can read it too.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Optional

import flatbuffers
import numpy as np
from edgetl.runtime._vendor import metadata_schema_py_generated
from edgetl.runtime.model_card import CardError, ModelCard, Normalization, TensorSpec, check_values, sha256_file
from edgetl.runtime.version import __version__

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
LABELS_FILE = "labels.txt"
# The oldest metadata parser that understands every field written here (image properties,
# tensor-level NormalizationOptions, TENSOR_AXIS_LABELS all date from 1.0.0; see
# mediapipe/tasks/cc/metadata/metadata_version.cc).
MIN_PARSER_VERSION = "1.0.0"
AUTHOR = "edgetl"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so the same model and labels give the same bytes
BUFFER_ALIGN = 16  # TFLite's schema aligns Buffer.data to 16 bytes (force_align)
# An appended label zip is refused beyond these (a hostile 6 MB model can inflate to gigabytes):
# 8 MiB of labels is ~400,000 class names; edgetl writes one member.
MAX_LABELS_BYTES = 8 << 20
MAX_ZIP_MEMBERS = 256


class MetadataError(CardError):
    """A model cannot take metadata, or its metadata cannot be read (the card inside the file is bad)."""


def metadata_buffer(card: ModelCard, quantization: str) -> bytes:
    """The ``M001`` FlatBuffer describing a model of ``card`` converted as ``quantization``.

    Float-input models need the NormalizationOptions (MediaPipe refuses a float
    image input without them); integer-input models carry them too, as the float
    normalisation their input quantization stands in for.
    """
    norm = metadata_schema_py_generated.NormalizationOptionsT()
    norm.mean, norm.std = [float(x) for x in card.normalization.mean], [float(x) for x in card.normalization.std]
    unit = metadata_schema_py_generated.ProcessUnitT()
    unit.optionsType, unit.options = metadata_schema_py_generated.ProcessUnitOptions.NormalizationOptions, norm
    image = metadata_schema_py_generated.ImagePropertiesT()
    image.colorSpace = metadata_schema_py_generated.ColorSpaceType.RGB
    source = card.normalization.description
    image_in = _tensor(
        "image",
        f"{card.color_order} image {card.width}x{card.height}, pixels 0-255 normalised {source}; "
        "integer inputs then quantize with the tensor's scale and zero point",
        metadata_schema_py_generated.ContentProperties.ImageProperties,
        image,
    )
    image_in.processUnits = [unit]
    labels = metadata_schema_py_generated.AssociatedFileT()
    labels.name, labels.type = LABELS_FILE, metadata_schema_py_generated.AssociatedFileType.TENSOR_AXIS_LABELS
    labels.description = "Class names in output order, one per line."
    scores = _tensor(
        "probability",
        f"Scores of the {card.num_classes} classes (softmax).",
        metadata_schema_py_generated.ContentProperties.FeatureProperties,
        metadata_schema_py_generated.FeaturePropertiesT(),
    )
    scores.associatedFiles = [labels]
    subgraph = metadata_schema_py_generated.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [image_in], [scores]
    model = metadata_schema_py_generated.ModelMetadataT()
    backbone = card.extra.get("backbone", {}) if isinstance(card.extra.get("backbone"), dict) else {}
    model.name = f"edgetl {backbone.get('name', 'image')} classifier ({quantization})"
    model.description = (
        f"Image classifier over {card.num_classes} classes trained with edgetl; {quantization} variant. "
        f"The JSON model card beside the file has the training, calibration and parity details."
    )
    model.version = f"edgetl {__version__}; float model sha256 {card.model_sha256[:12]}"
    model.author = AUTHOR
    model.license = str(card.extra.get("license") or "see the backbone weights' source in the model card")
    model.minParserVersion = MIN_PARSER_VERSION
    model.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def _tensor(name: str, description: str, kind: int, properties: Any) -> Any:
    content = metadata_schema_py_generated.ContentT()
    content.contentPropertiesType, content.contentProperties = kind, properties
    tensor = metadata_schema_py_generated.TensorMetadataT()
    tensor.name, tensor.description, tensor.content = name, description, content
    return tensor


def embed(model: bytes, card: ModelCard, quantization: str) -> bytes:
    """``model`` (a .tflite's bytes) with standard metadata and ``labels.txt`` from ``card``.

    Metadata already in the model is replaced (and a zip appended earlier dropped),
    so embedding twice gives the same bytes as once. Needs ``ai_edge_litert``.

    Raises:
        MetadataError: not a TFLite model, or not one image input and one output.
    """
    from ai_edge_litert import schema_py_generated as schema  # (the device may have tflite-runtime only)

    if len(model) < 8 or model[4:8] != MODEL_IDENTIFIER:
        raise MetadataError("not a TFLite model (no TFL3 identifier); embed metadata into the converter's output")
    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    graph = tree.subgraphs[0] if tree.subgraphs else None
    if graph is None or len(tree.subgraphs) != 1 or len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise MetadataError(
            "TFLite metadata here describes one subgraph with one image input and one output; this model has another shape"
        )
    if any(buffer.offset > 1 for buffer in tree.buffers or []):
        raise MetadataError(
            "the model keeps its weights outside the flatbuffer (over 2 GB); re-packing it would lose them"
        )
    entry = schema.BufferT()
    entry.data = np.frombuffer(metadata_buffer(card, quantization), dtype=np.uint8)
    tree.buffers, tree.metadata = tree.buffers or [], tree.metadata or []
    old = [m for m in tree.metadata if m.name in (METADATA_NAME, METADATA_NAME.encode())]
    if old:  # replace in place, as MetadataPopulator does
        tree.buffers[old[0].buffer] = entry
    else:
        tree.buffers.append(entry)
        link = schema.MetadataT()
        link.name, link.buffer = METADATA_NAME, len(tree.buffers) - 1
        tree.metadata.append(link)
    return _append_labels(_pack(schema, tree), card.labels)


def strip(model: bytes) -> bytes:
    """``model`` without its standard metadata or appended zip (what the converter wrote, re-packed).

    For checking that metadata changes nothing the interpreter computes.
    """
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    for link in [m for m in tree.metadata or [] if m.name in (METADATA_NAME, METADATA_NAME.encode())]:
        tree.metadata.remove(link)
        if link.buffer == len(tree.buffers) - 1:
            tree.buffers.pop()
        else:  # keep the other buffers' indices
            tree.buffers[link.buffer] = schema.BufferT()
    return _pack(schema, tree)


def _pack(schema: Any, tree: Any) -> bytes:
    """Re-pack a TFLite ``ModelT``, keeping every buffer's data 16-byte aligned as the converter does.

    The generated ``BufferT.Pack`` writes numpy data with 1-byte alignment; a
    ``Prep`` just before it restores the schema's alignment (weights read in place
    on the device stay aligned).
    """

    class AlignedBufferT(schema.BufferT):  # type: ignore[misc, name-defined]
        def Pack(self, builder: Any) -> Any:  # noqa: N802  (flatbuffers' name)
            if isinstance(self.data, np.ndarray) and self.data.size:
                builder.Prep(BUFFER_ALIGN, int(self.data.size))
            return super().Pack(builder)

    for buffer in tree.buffers:
        buffer.__class__ = AlignedBufferT
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(tree.Pack(builder), MODEL_IDENTIFIER)
    return bytes(builder.Output())


def _append_labels(model: bytes, labels: tuple[str, ...]) -> bytes:
    """``model`` followed by a zip holding ``labels.txt``, stored uncompressed.

    Written after the model's bytes in the same stream, the zip records offsets from
    the start of the file, as MediaPipe's and tflite-support's writers leave them
    (write mode: the model's bytes are never sniffed for an old zip).
    """
    out = io.BytesIO(model)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(zipfile.ZipInfo(LABELS_FILE, date_time=ZIP_DATE), "\n".join(labels) + "\n")
    return out.getvalue()


def read_metadata(path: Path) -> dict[str, Any]:
    """The standard metadata of a .tflite as plain data; ``{}`` when it has none.

    Returns:
        ``name``, ``description``, ``version``, ``author``, ``license``,
        ``min_parser_version``, ``color_space`` (``RGB``...), ``normalization``
        (``{"mean": [...], "std": [...]}`` or None) and ``labels`` (from the output's
        TENSOR_AXIS_LABELS file, or None).

    Raises:
        MetadataError: not a TFLite model, or its metadata or label file is damaged.
    """
    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != MODEL_IDENTIFIER:
        raise MetadataError(
            f"{path}: not a TFLite model (no TFL3 header: truncated or another format); "
            f"copy it again or re-run edgetl convert"
        )
    try:
        buffer = _metadata_bytes(data)
        if buffer is None:
            return {}
        if buffer[4:8] != METADATA_IDENTIFIER:
            raise MetadataError(f"{path}: its {METADATA_NAME} buffer is not TFLite metadata (no M001 identifier)")
        model = metadata_schema_py_generated.ModelMetadataT.InitFromObj(
            metadata_schema_py_generated.ModelMetadata.GetRootAs(buffer, 0)
        )
    except (
        IndexError,
        ValueError,
        TypeError,
        AttributeError,
        struct.error,
    ) as exc:  # flatbuffers' errors on bad offsets
        if isinstance(exc, MetadataError):
            raise
        raise MetadataError(
            f"{path}: its TFLite metadata is damaged ({type(exc).__name__}); re-run edgetl convert"
        ) from None
    text = lambda value: value.decode("utf-8", "replace") if isinstance(value, bytes) else value  # noqa: E731
    graph = model.subgraphMetadata[0] if model.subgraphMetadata else None
    image = graph.inputTensorMetadata[0] if graph and graph.inputTensorMetadata else None
    scores = graph.outputTensorMetadata[0] if graph and graph.outputTensorMetadata else None
    props = image.content.contentProperties if image is not None and image.content is not None else None
    colour = {v: k for k, v in vars(metadata_schema_py_generated.ColorSpaceType).items() if not k.startswith("_")}
    return {
        "name": text(model.name),
        "description": text(model.description),
        "version": text(model.version),
        "author": text(model.author),
        "license": text(model.license),
        "min_parser_version": text(model.minParserVersion),
        "color_space": colour.get(props.colorSpace)
        if isinstance(props, metadata_schema_py_generated.ImagePropertiesT)
        else None,
        "normalization": _normalization(image),
        "labels": _labels(path, data, scores),
    }


def _metadata_bytes(data: bytes) -> Optional[bytes]:
    """The contents of the model's ``TFLITE_METADATA`` buffer, or None."""
    model = metadata_schema_py_generated.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset() > 1:
                return data[buffer.Offset() : buffer.Offset() + buffer.Size()]
            return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else None
    return None


def _normalization(tensor: Any) -> Optional[dict[str, list[float]]]:
    for unit in (tensor.processUnits or []) if tensor is not None else []:
        if isinstance(unit.options, metadata_schema_py_generated.NormalizationOptionsT):
            mean, std = [float(x) for x in unit.options.mean], [float(x) for x in unit.options.std]
            return {"mean": mean * 3 if len(mean) == 1 else mean, "std": std * 3 if len(std) == 1 else std}
    return None


def _labels(path: Path, data: bytes, tensor: Any) -> Optional[list[str]]:
    files = (
        [
            f
            for f in (tensor.associatedFiles or [])
            if f.type == metadata_schema_py_generated.AssociatedFileType.TENSOR_AXIS_LABELS
        ]
        if tensor
        else []
    )
    if not files:
        return None
    name = files[0].name.decode("utf-8", "replace") if isinstance(files[0].name, bytes) else str(files[0].name)
    try:
        content = _read_member(data, name).decode("utf-8")
    except MetadataError as exc:
        raise MetadataError(f"{path}: the label file {name} its metadata names is refused ({exc})") from None
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, RuntimeError, NotImplementedError) as exc:
        raise MetadataError(
            f"{path}: the label file {name} its metadata names is missing or unreadable ({type(exc).__name__}: {exc})"
        ) from None
    except (OSError, EOFError, ValueError, zlib.error, struct.error) as exc:  # damaged zip records
        raise MetadataError(
            f"{path}: the zip appended to the model is damaged ({type(exc).__name__}); re-run edgetl convert"
        ) from None
    return [line.rstrip("\r") for line in content.split("\n") if line.strip()]


def _read_member(data: bytes, name: str) -> bytes:
    """One member of the zip appended to a model, refused before inflating when it would blow up.

    A few MB of deflate can inflate to gigabytes, and a central directory can list
    millions of members: both are checked from the zip's own records first
    (``MAX_ZIP_MEMBERS``, ``MAX_LABELS_BYTES``), and the read itself stops at the
    cap whatever the records claim. Encrypted members are refused (no password).
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise MetadataError(f"the appended zip lists {len(members)} files, over {MAX_ZIP_MEMBERS}")
        info = archive.getinfo(name)
        if info.flag_bits & 0x1:
            raise MetadataError("it is encrypted; edgetl writes labels unencrypted")
        if info.file_size > MAX_LABELS_BYTES:
            raise MetadataError(f"it would inflate to {info.file_size} bytes, over {MAX_LABELS_BYTES}")
        with archive.open(info) as handle:
            content = handle.read(MAX_LABELS_BYTES + 1)
    if len(content) > MAX_LABELS_BYTES:
        raise MetadataError(f"it inflates past {MAX_LABELS_BYTES} bytes")
    return content


def card_from_metadata(
    path: Path, input_detail: dict[str, Any], output_detail: dict[str, Any], found: Optional[dict[str, Any]] = None
) -> Optional[ModelCard]:
    """A model card for a .tflite without one, from its metadata and its interpreter's tensors.

    Labels and normalisation come from the metadata; input size and the tensors'
    dtype and quantization from the interpreter (``get_input_details()[0]``,
    ``get_output_details()[0]``); the sha256 is the file's own. ``found`` is
    ``read_metadata(path)`` when the caller has it already.

    Returns:
        The card, or None when the model has no TFLite metadata at all.

    Raises:
        MetadataError: the metadata is damaged or lacks the labels or the normalisation.
    """
    path = Path(path)
    found = read_metadata(path) if found is None else found
    if not found:
        return None
    if not found.get("labels") or not found.get("normalization"):
        raise MetadataError(
            f"{path} has no card beside it and its TFLite metadata lacks labels or normalisation; "
            f"keep the .json card beside the model or pass --card"
        )
    norm, shape = found["normalization"], [int(x) for x in input_detail["shape"]]
    card = ModelCard(
        labels=tuple(found["labels"]),
        height=shape[1] if len(shape) == 4 else 0,
        width=shape[2] if len(shape) == 4 else 0,
        model_file=path.name,
        model_sha256=sha256_file(path),
        quantization="tflite-metadata",
        normalization=Normalization(mean=tuple(norm["mean"]), std=tuple(norm["std"])),
        input=TensorSpec.from_detail(input_detail),
        output=TensorSpec.from_detail(output_detail),
        extra={
            "source": "TFLite metadata",
            "metadata": {k: v for k, v in found.items() if k not in ("labels", "normalization")},
        },
    )
    # the checks a JSON card gets: std 0 / NaN, an integer input without scale, int16 and other types
    check_values(
        card,
        f"{path}: its TFLite metadata and tensors cannot be used ({{}}); keep the model's .json card beside it or re-run edgetl convert",
    )
    return card
