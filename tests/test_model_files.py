"""Security (#18 item 1): a run folder's Keras files are data, never code.

``tf_keras``' ``safe_mode`` covers the zip format only: a legacy HDF5 file named
``model.keras`` reaches the legacy loader, which runs a ``Lambda``'s bytecode.
Each payload here would write a marker file if any of its code ran; every stage
that loads a Keras model (convert, qat, parity via ``model.load``) must refuse it
with one line before Keras sees it, and the marker must not appear.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import clicheck
import pytest
from edgetl.errors import RunFolderError
from edgetl.model import classifier as model
from edgetl.model import keras_file
from edgetl.runtime.model_card import sha256_file

FIX = "re-run `edgetl train` (or `edgetl qat`) to write it again"


def _lambda_model(marker: Path, size: int = 96) -> Any:
    """A model whose Lambda layer touches ``marker`` whenever its code runs."""
    k = model.keras()
    payload = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")
    inputs = k.Input((size, size, 3))
    return k.Model(inputs, k.layers.Lambda(payload)(inputs))


def _hdf5_payload(tmp_path: Path, marker: Path) -> Path:
    """A legacy HDF5 model with a code-running Lambda, under a ``.keras`` name; proven live first."""
    k = model.keras()
    h5 = tmp_path / "payload.h5"
    _lambda_model(marker).save(str(h5))
    marker.unlink(missing_ok=True)
    k.models.load_model(str(h5), safe_mode=True)  # the bypass itself: tf_keras runs the Lambda here
    assert marker.exists(), "the payload must be live for this test to mean anything"
    marker.unlink()
    return h5


def _swap_model(run: Path, source: Path, name: str = "model.keras", card: str = "model_card.json") -> None:
    """Put ``source`` in the run under ``name`` with a card that matches it, as an attacker would."""
    shutil.copy(source, run / name)
    data = json.loads((run / card).read_text())
    data["model_sha256"] = sha256_file(run / name)
    (run / card).write_text(json.dumps(data))


@pytest.fixture
def run(tmp_path: Path, tiny_run: Path) -> Path:
    shutil.copytree(tiny_run, tmp_path / "r")
    return tmp_path / "r"


@pytest.mark.parametrize("command", [["convert", "--quant", "fp32", "--no-parity"], ["qat", "--epochs", "1"]])
def test_hdf5_lambda_named_model_keras_never_runs(tmp_path: Path, run: Path, command: list[str]) -> None:
    marker = tmp_path / "ran"
    _swap_model(run, _hdf5_payload(tmp_path, marker))
    message = clicheck.fails(clicheck.run(command[0], run, *command[1:], "-q"), 3)
    assert message == (
        f"{run / 'model.keras'} is a legacy HDF5 file, not a zip .keras model; edgetl never loads HDF5 models "
        f"(their Lambda layers run code on load): {FIX}"
    )
    assert not marker.exists()
    assert not list(run.glob("model_*.tflite")) and not (run / "model_qat.keras").exists()


def test_hdf5_payload_as_model_qat_keras_is_refused(tmp_path: Path, run: Path) -> None:
    """``model_qat.keras`` (only its weights are read) is refused the same way, before tfmot or Keras."""
    from edgetl.runfolder import QAT_SCHEME

    marker = tmp_path / "ran"
    card = json.loads((run / "model_card.json").read_text())
    card.update(
        quantization="qat",
        extra={"qat": {"scheme": QAT_SCHEME}, "source": {"sha256": sha256_file(run / "model.keras")}},
    )
    (run / "model_qat.json").write_text(json.dumps(card))
    _swap_model(run, _hdf5_payload(tmp_path, marker), "model_qat.keras", "model_qat.json")
    message = clicheck.fails(clicheck.run("convert", run, "--quant", "qat-int8", "--no-parity", "-q"), 3)
    assert message.startswith(f"{run / 'model_qat.keras'} is a legacy HDF5 file, not a zip .keras model")
    assert not marker.exists() and not list(run.glob("model_*.tflite"))


def _rewrite_config(source: Path, dest: Path, edit: Any, extra: dict[str, bytes] | None = None) -> Path:
    """Copy a real .keras zip with its config.json edited (and optional extra members)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w") as out:
        for name in src.namelist():
            body = src.read(name)
            if name == "config.json":
                config = json.loads(body)
                edit(config)
                body = json.dumps(config).encode()
            out.writestr(name, body)
        for name, body in (extra or {}).items():
            out.writestr(name, body)
    return dest


def _first_dense(config: dict[str, Any]) -> dict[str, Any]:
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")


def test_zip_naming_an_arbitrary_module_is_refused_before_import(
    tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keras would ``importlib.import_module`` a config's module; a module with import side effects never loads."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_layers.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Dense: pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _rewrite_config(
        tiny_run / "model.keras", tmp_path / "m.keras", lambda c: _first_dense(c).update(module="evil_layers")
    )
    with pytest.raises(RunFolderError) as caught:
        model.load(str(path))
    assert str(caught.value) == (
        f"{path} holds a Dense from module evil_layers, which edgetl does not build and never loads; "
        "use a model made by `edgetl train` / `edgetl qat`"
    )
    assert not marker.exists() and "evil_layers" not in sys.modules


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: _first_dense(c).update(class_name="TFOpLambda"), "holds a Lambda layer (Python code)"),
        (
            lambda c: _first_dense(c)["config"].update(
                activation={"module": "os", "class_name": "function", "config": "system", "registered_name": "function"}
            ),
            "holds a function from module os, which edgetl does not build",
        ),
        (
            lambda c: _first_dense(c).update(registered_name="Custom>Dense"),
            "holds a Dense from module keras.layers, which",
        ),
    ],
    ids=["tf-op-lambda", "function-from-os", "custom-registered-name"],
)
def test_zip_with_code_or_custom_objects_is_refused(tmp_path: Path, tiny_run: Path, edit: Any, message: str) -> None:
    path = _rewrite_config(tiny_run / "model.keras", tmp_path / "m.keras", edit)
    with pytest.raises(RunFolderError, match=f"^{path}: ?|^{path} ") as caught:
        keras_file.check(path)
    assert message in str(caught.value)


@pytest.mark.parametrize("kind", ["extra-member", "missing-weights", "not-json", "garbage", "empty", "missing"])
def test_files_that_are_not_an_edgetl_keras_zip(tmp_path: Path, tiny_run: Path, kind: str) -> None:
    path = tmp_path / "m.keras"
    if kind == "extra-member":
        _rewrite_config(tiny_run / "model.keras", path, lambda c: None, {"assets/evil.py": b"print('x')"})
    elif kind in ("missing-weights", "not-json"):
        with zipfile.ZipFile(path, "w") as out:
            out.writestr("metadata.json", "{}")
            out.writestr("config.json", "{" if kind == "not-json" else "{}")
            if kind == "not-json":
                out.writestr("model.weights.h5", b"")
    elif kind != "missing":
        path.write_bytes(b"" if kind == "empty" else b"PK\x03\x04 not really a zip")
    expected = {
        "extra-member": f"{path} is not a .keras model edgetl wrote (members assets/evil.py differ from config.json, metadata.json, model.weights.h5); {FIX}",
        "missing-weights": f"{path} is not a .keras model edgetl wrote (members model.weights.h5 differ from config.json, metadata.json, model.weights.h5); {FIX}",
        "not-json": f"{path} is not a readable .keras model (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); {FIX}",
        "garbage": f"{path} is not a readable .keras model (File is not a zip file); {FIX}",
        "empty": f"{path} is not a zip .keras model (edgetl loads no other format); {FIX}",
        "missing": f"{path} does not exist; {FIX}",
    }[kind]
    with pytest.raises(RunFolderError) as caught:
        model.load(str(path))
    assert str(caught.value) == expected


def test_models_edgetl_writes_pass_the_check(tiny_run: Path, tmp_path: Path) -> None:
    """The allow-list holds every class of a real model, including the optional head layers."""
    from edgetl.config import Pooling, TrainConfig

    keras_file.check(tiny_run / "model.keras")
    config = TrainConfig(
        data="x",
        output="y",
        alpha=0.35,
        image_size=32,
        weights="none",
        hidden_units=4,
        head_batchnorm=True,
        pooling=Pooling.MAX,
    )
    model.build(config, 3).full.save(str(tmp_path / "m.keras"))
    assert model.load(str(tmp_path / "m.keras")).output_shape == (None, 3)
