"""Standard TFLite metadata: written without TensorFlow, read back, ignored by the interpreter, used without a card.

Runs on the committed golden int8 model (no TensorFlow needed); the converted
variants of a real run are checked in tests/test_convert.py, and MediaPipe reading
the labels in tests/test_mediapipe.py.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from edgetl.runtime import Classifier, ClassifierOptions, metadata
from edgetl.runtime._vendor import metadata_schema_py_generated as schema
from edgetl.runtime.decode import decode_image
from edgetl.runtime.model_card import CardError, load_card, sha256_file
from edgetl.runtime.preprocess import prepare

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
MODEL = GOLDEN / "golden_int8.tflite"
CARD = load_card(GOLDEN / "golden_int8.json")
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
IMAGES = sorted(EXPECTED["images"])


@pytest.fixture(scope="module")
def embedded() -> bytes:
    return metadata.embed(MODEL.read_bytes(), CARD, "int8")


def _write(tmp_path: Path, data: bytes, name: str = "model.tflite") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _raw_outputs(model: bytes) -> list[np.ndarray]:
    """The output tensor, as the interpreter returns it (uint8 here), for every golden image."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for name in IMAGES:
        interpreter.set_tensor(inp["index"], prepare(decode_image(GOLDEN / name), CARD, "RGB"))
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).copy())
    return results


def test_metadata_reads_back_with_labels_normalisation_and_names(tmp_path: Path, embedded: bytes) -> None:
    found = metadata.read_metadata(_write(tmp_path, embedded))
    assert found["labels"] == list(CARD.labels)
    assert found["normalization"] == {"mean": [127.5] * 3, "std": [127.5] * 3}
    assert found["color_space"] == "RGB" and found["min_parser_version"] == "1.0.0" and found["author"] == "edgetl"
    assert found["name"] == "edgetl image classifier (int8)" and CARD.model_sha256[:12] in found["version"]
    assert metadata.read_metadata(MODEL) == {}


def test_metadata_layout_is_the_standard_one(embedded: bytes) -> None:
    """TFL3 model, a TFLITE_METADATA buffer holding an M001 flatbuffer, labels.txt stored last in a zip."""
    assert embedded[4:8] == b"TFL3"
    buffer = metadata._metadata_bytes(embedded)
    assert buffer is not None and buffer[4:8] == b"M001"
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    graph = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(buffer, 0)).subgraphMetadata[0]
    assert len(graph.inputTensorMetadata) == len(graph.outputTensorMetadata) == 1
    image = graph.inputTensorMetadata[0]
    assert image.content.contentPropertiesType == schema.ContentProperties.ImageProperties
    assert image.processUnits[0].optionsType == schema.ProcessUnitOptions.NormalizationOptions
    labels = graph.outputTensorMetadata[0].associatedFiles[0]
    assert (labels.name, labels.type) == (b"labels.txt", schema.AssociatedFileType.TENSOR_AXIS_LABELS)
    with zipfile.ZipFile(io.BytesIO(embedded)) as archive:
        (entry,) = archive.infolist()
        assert entry.compress_type == zipfile.ZIP_STORED and entry.header_offset > len(MODEL.read_bytes()) // 2
        assert archive.read("labels.txt").decode() == "\n".join(CARD.labels) + "\n"
    assert embedded[-22:-18] == b"PK\x05\x06"  # the zip's end record closes the file


def test_embedding_is_deterministic_and_idempotent(embedded: bytes) -> None:
    assert metadata.embed(MODEL.read_bytes(), CARD, "int8") == embedded
    assert metadata.embed(embedded, CARD, "int8") == embedded  # old metadata replaced, old zip dropped


def test_the_interpreter_ignores_metadata_outputs_are_byte_identical(embedded: bytes) -> None:
    with_metadata, without = _raw_outputs(embedded), _raw_outputs(MODEL.read_bytes())
    assert all(a.dtype == b.dtype == np.uint8 and a.tobytes() == b.tobytes() for a, b in zip(with_metadata, without))
    assert _raw_outputs(metadata.strip(embedded))[0].tobytes() == without[0].tobytes()


def test_weights_stay_16_byte_aligned_after_repacking(embedded: bytes) -> None:
    from ai_edge_litert import schema_py_generated as tflite

    model = tflite.Model.GetRootAs(embedded, 0)
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            assert buffer._tab.Vector(buffer._tab.Offset(4)) % 16 == 0, i


def test_classifier_without_a_card_reads_the_metadata(tmp_path: Path, embedded: bytes) -> None:
    model = _write(tmp_path, embedded)
    classifier = Classifier(ClassifierOptions(model_path=str(model), max_results=4, num_threads=1))
    assert classifier.labels == CARD.labels and classifier.card.normalization == CARD.normalization
    assert (classifier.card.height, classifier.card.width) == (CARD.height, CARD.width)
    assert classifier.card.input == CARD.input and classifier.card.output == CARD.output
    for name in IMAGES:
        want = EXPECTED["images"][name]
        scores = classifier.scores(decode_image(GOLDEN / name), "RGB")
        assert classifier.labels[int(np.argmax(scores))] == want["top1"]
        np.testing.assert_allclose(scores, want["scores"], atol=0.01)


def test_the_card_wins_and_must_cover_the_final_file(tmp_path: Path, embedded: bytes) -> None:
    model = _write(tmp_path, embedded)
    renamed = CARD.replace(labels=("b", "g", "r", "s"), model_file=model.name, model_sha256=sha256_file(model))
    renamed.save(model.with_suffix(".json"))
    assert Classifier(ClassifierOptions(model_path=str(model))).labels == ("b", "g", "r", "s")
    CARD.replace(labels=("b", "g", "r", "s")).save(model.with_suffix(".json"))  # sha256 of the file without metadata
    with pytest.raises(CardError, match="does not match its card"):
        Classifier(ClassifierOptions(model_path=str(model)))


def test_damaged_or_missing_metadata_is_one_clear_error(tmp_path: Path, embedded: bytes) -> None:
    with pytest.raises(
        CardError, match=r"no model card at .*model\.json; pass --card or keep the \.json beside the model$"
    ):
        Classifier(ClassifierOptions(model_path=str(_write(tmp_path, MODEL.read_bytes()))))
    cut = _write(tmp_path, embedded[:-30], "cut.tflite")  # the zip's directory is gone: no labels
    with pytest.raises(
        metadata.MetadataError,
        match=r"cut\.tflite: the label file labels\.txt its metadata names is missing or unreadable",
    ):
        Classifier(ClassifierOptions(model_path=str(cut)))
    with pytest.raises(metadata.MetadataError, match=r"not a TFLite model \(no TFL3 header"):
        metadata.read_metadata(_write(tmp_path, b"PK\x03\x04" + bytes(64), "zip.tflite"))
    with pytest.raises(metadata.MetadataError, match="not a TFLite model"):
        metadata.embed(b"not a model", CARD, "int8")


def test_edge_classify_runs_a_model_whose_card_was_deleted(tmp_path: Path, embedded: bytes) -> None:
    model = _write(tmp_path, embedded)
    assert not model.with_suffix(".json").exists()
    result = subprocess.run(
        [sys.executable, "-m", "edgetl.runtime", "--model", str(model), "--image", str(GOLDEN), "--headless"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {Path(x["source"]).name: x["top_k"][0]["label"] for x in lines} == {
        n: EXPECTED["images"][n]["top1"] for n in IMAGES
    }
