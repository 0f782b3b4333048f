"""edge_runtime without TensorFlow, its import direction, and the Classifier's contract.

Everything runs the real golden .tflite (tests/golden) through the real interpreter;
only the files around it (cards, truncated copies) are made up per test.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edgetl.runtime.classifier import Category, Classifier, ClassifierOptions, top_k
from edgetl.runtime.decode import decode_image
from edgetl.runtime.interpreter import INSTALL_HINT, ModelLoadError
from edgetl.runtime.model_card import CardError, sha256_file

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
MODEL = GOLDEN / "golden_int8.tflite"
CARD = json.loads((GOLDEN / "golden_int8.json").read_text())
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
BLOCKED = ("tensorflow", "tf_keras", "keras")
# What a Pi install has (the core dependencies click + numpy, and the edge extra): anything else imported by edge_runtime is a bug.
EDGE_IMPORTS = {
    "click",
    "numpy",
    "cv2",
    "ai_edge_litert",
    "tflite_runtime",
    "picamera2",
    "flatbuffers",
    "edgetl.runtime",
}

WITHOUT_TF = r"""
import contextlib, io, json, sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import tensorflow` now raises ImportError
import edgetl.runtime, edgetl.runtime.__main__, edgetl.runtime.sources, edgetl.runtime.decode, edgetl.runtime.overlay
from edgetl.runtime import Classifier, ClassifierOptions
from edgetl.runtime.decode import decode_image
golden, summary = sys.argv[1], sys.argv[2]
classifier = Classifier(ClassifierOptions(model_path=golden + "/golden_int8.tflite", max_results=1))
top1 = {{n: classifier.classify(decode_image(golden + "/" + n), "RGB")[0].label for n in {images!r}}}
lines = io.StringIO()
with contextlib.redirect_stdout(lines):
    code = edgetl.runtime.__main__.main(["--model", golden + "/golden_int8.tflite", "--image", golden, "--headless",
                                       "-q", "--summary-json", summary])
loaded = sorted(k for k, v in sys.modules.items() if v is not None and k.split(".")[0] in {forbidden!r}
                or k.startswith("edgetl.") and not k.startswith("edgetl.runtime"))
print(json.dumps({{"top1": top1, "code": code, "lines": len(lines.getvalue().splitlines()), "loaded": loaded}}))
"""


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def _copy_model(tmp_path: Path, card: dict | None = None, name: str = "model.tflite") -> Path:
    model = tmp_path / name
    shutil.copyfile(MODEL, model)
    if card is not None:
        model.with_suffix(".json").write_text(json.dumps(card))
    return model


# --- TensorFlow absent --------------------------------------------------------------------------


@pytest.mark.parametrize("block", [True, False], ids=["tf-blocked", "tf-installed"])
def test_runtime_classifies_and_runs_the_command_without_tensorflow(tmp_path: Path, block: bool) -> None:
    """Blocked: it works with no TensorFlow. Not blocked (TF is in the dev venv): nothing even tries it."""
    images = sorted(EXPECTED["images"])
    code = WITHOUT_TF.format(
        blocked=BLOCKED if block else (),
        images=images,
        forbidden=("tensorflow", "tf_keras", "keras", "toolchain", "edge_runtime", "calibration"),
    )
    result = _run_python(code, str(GOLDEN), str(tmp_path / "summary.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert report["code"] == 0 and report["lines"] == len(images)
    assert report["top1"] == {name: EXPECTED["images"][name]["top1"] for name in images}
    assert json.loads((tmp_path / "summary.json").read_text())["frames"] == len(images)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(_package(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(_package(node.module))
    return names


def _package(module: str) -> str:
    """The top-level name of an import, or ``edgetl.runtime``/``edgetl.<x>`` for edgetl's own."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "edgetl" and len(parts) > 1 else parts[0]


def test_edge_runtime_imports_only_the_edge_extra_and_the_stdlib() -> None:
    modules = sorted((REPO / "edge_runtime").glob("*.py"))
    assert len(modules) >= 8
    for path in modules:
        third_party = _imports(path) - set(sys.stdlib_module_names) - {"__future__"}
        assert third_party <= EDGE_IMPORTS, f"{path.name} imports {sorted(third_party - EDGE_IMPORTS)}"
        assert not _imports(path) & {"tensorflow", "tf_keras", "keras", "edgetl", "edgetl.calibration", "PIL"}


def test_runtime_missing_error_names_the_pip_command(tmp_path: Path) -> None:
    code = r"""
import sys
sys.modules["ai_edge_litert"] = sys.modules["tflite_runtime"] = None
from edgetl.runtime.interpreter import RuntimeMissingError
from edgetl.runtime import Classifier, ClassifierOptions
try:
    Classifier(ClassifierOptions(model_path=sys.argv[1]))
except RuntimeMissingError as exc:
    print(exc)
    sys.exit(0)
sys.exit("no RuntimeMissingError")
"""
    result = _run_python(code, str(MODEL))
    assert result.returncode == 0, result.stderr[-2000:]
    message = result.stdout.strip()
    assert message.startswith("no TFLite interpreter is installed (ai_edge_litert.interpreter: ")
    assert "; tflite_runtime.interpreter: " in message
    assert message.endswith(f"); {INSTALL_HINT}")
    assert (
        INSTALL_HINT
        == "pip install ai-edge-litert (or, where no wheel exists for this platform, pip install tflite-runtime)"
    )


# --- Classifier contract errors -----------------------------------------------------------------


def test_card_with_another_models_sha256_is_refused(tmp_path: Path) -> None:
    model = _copy_model(tmp_path, {**CARD, "model_sha256": "ab" * 32})
    with pytest.raises(CardError) as err:
        Classifier(ClassifierOptions(model_path=str(model)))
    actual = sha256_file(model)
    assert str(err.value) == (
        f"{model} does not match its card (sha256 {actual[:12]}… vs abababababab… recorded): "
        "the copy is incomplete or the card belongs to another model; copy both again"
    )
    Classifier(ClassifierOptions(model_path=str(model), verify_checksum=False))  # the check is the only objection


def test_card_with_wrong_label_count_is_refused(tmp_path: Path) -> None:
    model = _copy_model(tmp_path, {**CARD, "labels": ["blue", "green", "red"]})
    with pytest.raises(CardError) as err:
        Classifier(ClassifierOptions(model_path=str(model)))
    assert (
        str(err.value)
        == f"{model} and its card disagree: the model has 4 outputs, the card lists 3 labels; use the card written with this model"
    )


def test_card_with_wrong_input_size_is_refused(tmp_path: Path) -> None:
    model = _copy_model(tmp_path, {**CARD, "height": 64, "width": 48})
    with pytest.raises(CardError) as err:
        Classifier(ClassifierOptions(model_path=str(model)))
    assert (
        str(err.value)
        == f"{model} and its card disagree: the model takes 32x32, the card says 48x64; use the card written with this model"
    )


def test_card_with_wrong_input_dtype_or_scale_is_refused(tmp_path: Path) -> None:
    model = _copy_model(tmp_path, {**CARD, "input": {"dtype": "float32", "scale": 0.0, "zero_point": 0}})
    with pytest.raises(
        CardError, match=r"the model's input is uint8, the card says float32; use the card written with this model$"
    ):
        Classifier(ClassifierOptions(model_path=str(model)))
    model.with_suffix(".json").write_text(json.dumps({**CARD, "input": {**CARD["input"], "scale": 0.5}}))
    with pytest.raises(
        CardError, match=r"disagree on the input scale \(0\.00784314 vs 0\.5\); use the card written with this model$"
    ):
        Classifier(ClassifierOptions(model_path=str(model)))


def test_model_without_a_card_beside_it_is_refused(tmp_path: Path) -> None:
    model = _copy_model(tmp_path)
    with pytest.raises(CardError) as err:
        Classifier(ClassifierOptions(model_path=str(model)))
    assert (
        str(err.value) == f"no model card at {tmp_path / 'model.json'}; pass --card or keep the .json beside the model"
    )
    elsewhere = tmp_path / "cards" / "golden.json"
    elsewhere.parent.mkdir()
    shutil.copyfile(GOLDEN / "golden_int8.json", elsewhere)
    assert Classifier(ClassifierOptions(model_path=str(model), card_path=str(elsewhere))).labels == tuple(
        CARD["labels"]
    )


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_model_is_a_model_load_error(tmp_path: Path, keep: float) -> None:
    model = tmp_path / "model.tflite"
    data = MODEL.read_bytes()
    model.write_bytes(data[: int(len(data) * keep)])
    model.with_suffix(".json").write_text(json.dumps({**CARD, "model_sha256": sha256_file(model)}))
    with pytest.raises(ModelLoadError) as err:
        Classifier(ClassifierOptions(model_path=str(model)))
    assert str(err.value) == (
        f"{model}: the interpreter cannot load it (The model is not a valid Flatbuffer buffer); "
        "copy it again or re-run edgetl convert"
    )


@pytest.mark.parametrize("content", [b"this is not a model\n" * 10, b"tiny"], ids=["text", "tiny"])
def test_non_tflite_file_is_a_model_load_error(tmp_path: Path, content: bytes) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(content)
    model.with_suffix(".json").write_text(json.dumps(CARD))
    with pytest.raises(ModelLoadError) as err:
        Classifier(ClassifierOptions(model_path=str(model), verify_checksum=False))
    assert str(err.value) == (
        f"{model}: not a TFLite model (no TFL3 header: truncated or another format); "
        "copy it again or re-run edgetl convert"
    )


def test_missing_model_file_is_a_model_load_error(tmp_path: Path) -> None:
    (tmp_path / "gone.json").write_text(json.dumps(CARD))
    with pytest.raises(ModelLoadError) as err:
        Classifier(ClassifierOptions(model_path=str(tmp_path / "gone.tflite")))
    assert (
        str(err.value)
        == f"{tmp_path / 'gone.tflite'}: no such model file; pass the path of a .tflite written by edgetl convert"
    )


# --- categories, top-k, threshold ---------------------------------------------------------------


def test_max_results_and_threshold_shape_the_categories() -> None:
    image = decode_image(GOLDEN / "00_blue.png")
    scores = EXPECTED["images"]["00_blue.png"]["scores"]
    every = Classifier(ClassifierOptions(model_path=str(MODEL), max_results=10)).classify(image, "RGB")
    assert [c.index for c in every] == list(np.argsort(-np.asarray(scores), kind="stable"))
    assert [c.label for c in every] == ["blue", "red", "green", "stripes"]
    assert all(isinstance(c, Category) and c.label == CARD["labels"][c.index] for c in every)
    two = Classifier(ClassifierOptions(model_path=str(MODEL), max_results=2)).classify(image, "RGB")
    assert two == every[:2]
    confident = Classifier(ClassifierOptions(model_path=str(MODEL), max_results=4, score_threshold=0.5)).classify(
        image, "RGB"
    )
    assert [c.label for c in confident] == ["blue"]
    nothing = Classifier(ClassifierOptions(model_path=str(MODEL), score_threshold=0.99)).classify(image, "RGB")
    assert nothing == []


def test_top_k_ties_threshold_and_bounds() -> None:
    labels = ("a", "b", "c", "d")
    values = np.array([0.2, 0.4, 0.4, 0.0], dtype=np.float32)
    assert [c.label for c in top_k(values, labels, 4)] == ["b", "c", "a", "d"]  # equal scores: lower index first
    assert [c.label for c in top_k(values, labels, 10, threshold=0.2)] == ["b", "c", "a"]
    assert top_k(values, labels, 0) == [] and top_k(values, labels, -1) == []
    assert Category(1, "b", 0.123456789).to_dict() == {"index": 1, "label": "b", "score": 0.123457}


def test_any_frame_layout_is_accepted_and_timed() -> None:
    classifier = Classifier(ClassifierOptions(model_path=str(MODEL), max_results=1))
    rgb = decode_image(GOLDEN / "02_red.png")
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert classifier.classify(rgba, "RGB")[0].label == "red"
    assert classifier.classify(rgb[:, :, ::-1].copy(), "BGR")[0].label == "red"
    assert len(classifier.classify(rgb[:, :, 0], "RGB")) == 1  # grey: replicated to three channels
    t = classifier.last_timings
    assert t.preprocess_ms > 0 and t.invoke_ms > 0 and t.postprocess_ms >= 0
    assert t.total_ms == pytest.approx(t.preprocess_ms + t.invoke_ms + t.postprocess_ms)
    with pytest.raises(ValueError, match="expected uint8 pixels, got float32"):
        classifier.classify(rgb.astype(np.float32), "RGB")


@pytest.mark.parametrize(
    "dtype,scale,zero_point", [("uint8", 1 / 127.5, 127), ("int8", 0.0078431, -1), ("float32", 0.0, 0)]
)
def test_fast_prepare_equals_the_composed_contract(dtype: str, scale: float, zero_point: int) -> None:
    """prepare() resizes before swapping channels and uses a lookup table; the tensor must not change."""
    from edgetl.runtime import preprocess as pp
    from edgetl.runtime.model_card import ModelCard, Normalization, TensorSpec

    rng = np.random.default_rng(7)
    spec = TensorSpec(dtype, scale, zero_point)
    for norm in (Normalization(), Normalization((123.7, 116.3, 103.5), (58.4, 57.1, 57.4))):
        for model_order in ("RGB", "BGR"):
            card = ModelCard(
                ("a", "b"), 60, 80, "m.tflite", "0" * 64, color_order=model_order, normalization=norm, input=spec
            )
            for shape in ((480, 640, 3), (480, 640), (480, 640, 4), (30, 40, 3), (60, 80, 1)):
                frame = rng.integers(0, 256, shape, dtype=np.uint8)
                for order in ("BGR", "RGB"):
                    pixels = pp.resize(pp.to_rgb(frame, order), 60, 80)
                    pixels = pixels[:, :, ::-1] if model_order == "BGR" else pixels
                    expected = pp.quantize(pp.normalize(pixels, norm), spec)[None]
                    got = pp.prepare(frame, card, order)
                    assert got.dtype == expected.dtype and got.shape == (1, 60, 80, 3)
                    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype,zero_point", [("uint8", 128), ("uint8", 127), ("int8", 0), ("int8", -1)])
def test_half_step_ties_round_the_same_way_for_every_pixel(dtype: str, zero_point: int) -> None:
    """x / 127.5 - 1 at scale 2/255 puts each pixel on a tie; all ties must go up, not alternate by parity."""
    from edgetl.runtime import preprocess as pp
    from edgetl.runtime.model_card import Normalization, TensorSpec

    spec = TensorSpec(dtype, 0.007843137718737125, zero_point)  # the converter's float32 2/255
    values = np.arange(256, dtype=np.uint8)
    exact = pp.normalize(np.repeat(values[:, None], 3, axis=1), Normalization())
    error = pp.dequantize(pp.quantize(exact, spec), spec) - exact
    inside = (values > 2) & (values < 252)  # away from the clipped ends of the range
    np.testing.assert_allclose(error[inside], 0.5 * spec.scale, atol=1e-4 * spec.scale)
    off_ties = pp.quantize(np.asarray([0.26, -0.26, 1.49, -1.51]) * spec.scale, spec).astype(int) - zero_point
    assert off_ties.tolist() == [0, 0, 1, -2]  # everything else still rounds to nearest


def test_fps_counts_frames_over_time_with_uneven_gaps() -> None:
    """Frames arriving in pairs 1 ms apart, one pair every 200 ms, are 10 frames/s; a mean of 1/dt said ~500."""
    from edgetl.runtime.overlay import FpsMeter

    meter, t, fps = FpsMeter(window=2.0), 0.0, []
    for _ in range(40):
        fps.append(meter.tick(t))
        fps.append(meter.tick(t + 0.001))
        t += 0.2
    assert fps[:2] == [0.0, 2.0]  # one frame: no rate; two frames 1 ms apart: 1 over a quarter window, not 1000
    assert all(0 < f < 12.0 for f in fps[1:]), fps  # never the spike a mean of 1/dt gave
    assert all(f == pytest.approx(10.0, rel=0.06) for f in fps[20:]), fps[20:]  # a full window: the rate


def test_fps_follows_a_change_of_pace_within_the_window() -> None:
    from edgetl.runtime.overlay import FpsMeter

    meter = FpsMeter(window=1.0)
    times = [i / 30 for i in range(60)] + [2.0 + i / 5 for i in range(1, 11)]  # 30 fps for 2 s, then 5 fps
    readings = [meter.tick(t) for t in times]
    assert readings[59] == pytest.approx(30.0, rel=0.05)
    assert readings[-1] == pytest.approx(5.0, rel=0.05)
