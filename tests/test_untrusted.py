"""Untrusted input on the training machine (#28 items 1-4, 9, 14): received run folders, configs and outputs.

Each class runs the real command through ``tests/clicheck.py`` (documented exit code,
one ``Error:`` line, no traceback, nothing on stdout) and checks that nothing was
run, read, overwritten or left behind. docs/untrusted-input.md says what each
guards against.
"""

from __future__ import annotations

import csv
import json
import shutil
import stat
from pathlib import Path
from typing import Any

import clicheck
import edgetl
import pytest
from edgetl import data, untrusted
from edgetl.errors import ConfigError
from test_bad_input import _folder, _image

TINY = ["--weights", "none", "--alpha", "0.35", "--image-size", "32", "--epochs", "1", "-q"]


# --- 1. a config file never chooses code or a model ------------------------------------------------------


def _config_file(tmp_path: Path, values: dict[str, Any], suffix: str = ".json") -> Path:
    path = tmp_path / f"theirs{suffix}"
    if suffix == ".toml":
        path.write_text("".join(f'{k} = "{v}"\n' for k, v in values.items()))
    else:
        path.write_text(json.dumps(values))
    return path


@pytest.mark.parametrize(
    "key, value, suffix",
    [
        ("backbone", "hub:theirrun/hub_backbone", ".json"),
        ("weights", "theirrun/weights.h5", ".json"),
        ("backbone", "hub:https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/feature_vector/5", ".toml"),
        ("weights", "/home/someone/.keras/models/any.h5", ".toml"),
    ],
    ids=["hub-dir", "weights-file", "hub-url-toml", "weights-abs-toml"],
)
def test_a_config_file_cannot_choose_a_model_to_load(tmp_path: Path, key: str, value: str, suffix: str) -> None:
    config = _config_file(tmp_path, {"data": str(_folder(tmp_path / "data")), key: value}, suffix)
    message = clicheck.fails(clicheck.run("train", "--config", config, "-o", tmp_path / "run", *TINY[4:]), 2)
    flag = f"--{key}"
    assert message == (
        f"config file {config} sets {key}={value!r}, which loads and runs a model; a config file may not do that: "
        f"pass {flag} {value} on the command line, or add --trust-config if you trust config file {config}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", config.name]  # no run, no partial folder


def test_resume_does_not_load_the_model_a_partial_config_names(tmp_path: Path) -> None:
    """A received (or edited) ``.RUN.partial/config.json`` is a file like any other."""
    partial = tmp_path / ".run.partial"
    partial.mkdir()
    saved = {"data": str(_folder(tmp_path / "data")), "output": str(tmp_path / "run"), "backbone": "hub:/x/evil"}
    (partial / "config.json").write_text(json.dumps(saved))
    message = clicheck.fails(clicheck.run("train", "--resume", tmp_path / "run", "-q"), 2)
    assert message.startswith(f"{partial / 'config.json'} sets backbone='hub:/x/evil', which loads and runs a model")
    assert message.endswith(
        f"pass --backbone hub:/x/evil on the command line, or add --trust-config if you trust {partial / 'config.json'}"
    )
    assert not (tmp_path / "run").exists() and (partial / "config.json").is_file()


def test_the_command_line_or_the_trust_switch_may_name_a_model() -> None:
    values = {"backbone": "hub:/x/model", "weights": "imagenet"}
    untrusted.check_config_values(values, "f", given={"backbone"}, trusted=False)  # the user typed it
    untrusted.check_config_values(values, "f", given=(), trusted=True)  # --trust-config
    untrusted.check_config_values({"backbone": "mobilenet_v2", "weights": "none"}, "f", (), False)  # loads no file
    with pytest.raises(ConfigError, match="backbone='hub:/x/model'"):
        untrusted.check_config_values(values, "f", given={"weights"}, trusted=False)


def _payload_hub(path: Path, marker: Path) -> Path:
    """A real TF-Hub-style SavedModel feature vector whose graph writes ``marker`` each time it runs."""
    import tensorflow as tf

    class Payload(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = tf.Variable(1.0)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images: Any) -> Any:
            with tf.control_dependencies([tf.io.write_file(str(marker), "this ran")]):
                return tf.reduce_mean(images, axis=[1, 2]) * self.scale

    tf.saved_model.save(Payload(), str(path))
    return path


@pytest.mark.slow
def test_a_hub_savedmodel_from_a_received_config_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    hub = _payload_hub(tmp_path / "theirrun" / "hub_backbone", marker)
    assert not marker.exists()
    data_dir = _folder(tmp_path / "data", per_class=6)
    config = _config_file(tmp_path, {"data": str(data_dir), "backbone": f"hub:{hub}", "image_size": 32, "epochs": 1})
    clicheck.fails(clicheck.run("train", "--config", config, "-o", tmp_path / "run", "-q"), 2)
    partial = tmp_path / ".resumed.partial"
    partial.mkdir()
    (partial / "config.json").write_text(
        json.dumps({**json.loads(config.read_text()), "output": str(tmp_path / "resumed")})
    )
    clicheck.fails(clicheck.run("train", "--resume", tmp_path / "resumed", "-q"), 2)
    assert not marker.exists()  # neither path loaded the SavedModel
    # The control: the same file with the documented switch does run the graph, so the payload is real.
    result = clicheck.run("train", "--config", config, "--trust-config", "-o", tmp_path / "trusted", "-q")
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "this ran"


# --- 2. an edited data root reads nothing outside the user's data ------------------------------------------


@pytest.fixture
def received(tmp_path: Path, tiny_run: Path) -> Path:
    """A copy of a run folder whose ``data.json`` points at a folder of someone's private photos."""
    run = tmp_path / "received"
    shutil.copytree(tiny_run, run)
    private = _folder(tmp_path / "private", classes=("me",), per_class=3)
    meta = json.loads((run / "data.json").read_text())
    meta["root"] = str(private)
    (run / "data.json").write_text(json.dumps(meta))
    for split in data.SPLITS:  # split lines that match the private files, as the attacker would write them
        (run / "splits" / f"{split}.csv").write_text("ref,label\n" + "".join(f"me/{i}.png,0\n" for i in range(3)))
    return run


def _refused(run: Path, root: str, elsewhere: str = "") -> str:
    return (
        f"{run}/data.json records its images under {root}, but not with this machine's key (a run folder trained "
        "elsewhere, by an older edgetl, or edited), so edgetl reads no images through it; pass --data-root DIR, "
        f"the folder that holds this run's images{elsewhere}"
    )


@pytest.mark.parametrize("command", ["parity", "calibrate", "qat", "convert"])
def test_a_run_folder_cannot_point_a_stage_at_private_photos(received: Path, tmp_path: Path, command: str) -> None:
    before = sorted(p.name for p in received.iterdir())
    extra = ["--quant", "int8", "--no-parity"] if command == "convert" else []
    message = clicheck.fails(clicheck.run(command, received, *extra, "-q"), 3)
    elsewhere = ", or evaluate on held-out images of yours with --data DIR" if command == "parity" else ""
    assert message == _refused(received, str(tmp_path / "private"), elsewhere)
    assert sorted(p.name for p in received.iterdir()) == before  # no flips_*.png, no parity.json, no calibration


@pytest.mark.parametrize("variant", ["etc-passwd", "mac-of-another-root", "another-machine"])
def test_the_recorded_root_needs_this_machines_hmac(
    tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    run = tmp_path / "r"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "data.json").read_text())
    if variant == "etc-passwd":  # root /etc, a split line naming passwd, the HMAC kept from the real run
        meta["root"] = "/etc"
        (run / "splits" / "test.csv").write_text("ref,label\npasswd,0\n")
    elif variant == "mac-of-another-root":  # a valid HMAC, copied from a run whose root is elsewhere
        meta["root_hmac"] = untrusted.sign_root(meta["kind"], str(tmp_path / "other"))
    else:  # signed on a machine with another key
        monkeypatch.setenv("EDGETL_CACHE", str(tmp_path / "other-machine"))
        meta["root_hmac"] = untrusted.sign_root(meta["kind"], meta["root"])
        monkeypatch.delenv("EDGETL_CACHE")
    (run / "data.json").write_text(json.dumps(meta))
    message = clicheck.fails(clicheck.run("parity", run, "-q"), 3)
    assert message == _refused(run, meta["root"], ", or evaluate on held-out images of yours with --data DIR")


def test_data_root_from_the_user_reads_the_split_under_it(received: Path, tiny_run: Path) -> None:
    """``--data-root`` is the user's word: the split lines resolve under it, and only under it."""
    shutil.copytree(tiny_run / "splits", received / "splits", dirs_exist_ok=True)
    root = json.loads((tiny_run / "data.json").read_text())["root"]
    result = clicheck.run("calibrate", received, "--data-root", root, "--calib-size", "10", "-q")
    assert result.exit_code == 0, result.output
    manifest = json.loads((received / "calibration.json").read_text())
    assert manifest["size"] == 10 and all((Path(root) / r).is_file() for r in manifest["refs"])
    (received / "splits" / "train.csv").write_text("ref,label\n../private/me/0.png,0\n")
    message = clicheck.fails(clicheck.run("calibrate", received, "--data-root", root, "-q"), 3)
    assert "'../private/me/0.png' is not a path inside the run's data root" in message


def test_the_machine_key_is_private_and_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGETL_CACHE", str(tmp_path / "cache"))
    first = untrusted.sign_root("folder", "/data")
    path = tmp_path / "cache" / "key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(bytes.fromhex(path.read_text())) == 32
    assert untrusted.sign_root("folder", "/data") == first != untrusted.sign_root("csv", "/data")
    assert untrusted.root_verified({"kind": "folder", "root": "/data", "root_hmac": first})
    assert not untrusted.root_verified({"kind": "folder", "root": "/data/", "root_hmac": first})
    assert not untrusted.root_verified({"kind": "folder", "root": "/data"})


# --- 3. outputs never overwrite inputs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "target, why",
    [
        ("{run}/model_card.json", "is model_card.json of the run ({run}/model_card.json)"),
        ("{run}/parity.json", "a file edgetl parity writes"),
        ("{run}/parity.md", "a file edgetl parity writes"),
        ("{run}/flips_int8.png", "a file edgetl parity writes"),
        ("{run}/splits/test.csv", "is test.csv of the run ({run}/splits/test.csv)"),
        ("{data}/{first}", "is a file of the input data ({data})"),
        ("{data}/new.png", "would add an input file to the input data ({data})"),
        ("{tmp}/card-link.json", "is model_card.json of the run ({run}/model_card.json)"),
    ],
    ids=["card", "parity-json", "parity-md", "flips", "split", "data-image", "new-image-in-data", "symlink-to-card"],
)
def test_junit_never_overwrites_an_input(tmp_path: Path, tiny_run: Path, target: str, why: str) -> None:
    run = tmp_path / "r"
    shutil.copytree(tiny_run, run)
    root = json.loads((run / "data.json").read_text())["root"]
    first = sorted(p.relative_to(root) for p in Path(root).rglob("*.png"))[0]
    (tmp_path / "card-link.json").symlink_to(run / "model_card.json")
    card = (run / "model_card.json").read_bytes()
    path = target.format(run=run, data=root, first=first, tmp=tmp_path)
    message = clicheck.fails(clicheck.run("parity", run, "--junit", path, "-q"), 2)
    assert message.startswith(f"--junit {path} ") and why.format(run=run, data=root) in message
    assert (run / "model_card.json").read_bytes() == card and not (run / "parity.json").exists()


# --- 4. CSV cells that a spreadsheet would run ---------------------------------------------------------------

HOSTILE_NAMES = [
    "=1+1.png",
    "@SUM(A1).png",
    "-2+3.png",
    "\tlead.png",
    "+cmd.png",
    "'quoted.png",
    "''=x.png",
    "a,b=c.png",
]


def test_split_files_are_formula_safe_and_read_back_exactly(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for k, cls in enumerate(("=cls", "plain")):
        for i, name in enumerate(HOSTILE_NAMES):
            _image(root / cls / name, 30 * k + 20 * i)
    dataset = data.discover(str(root))
    splits = data.split(dataset, 0.25, 0.25, 0)
    run = tmp_path / "run"
    data.write_splits(run, dataset, splits, [])
    for split in data.SPLITS:
        with open(run / "splits" / f"{split}.csv", newline="", encoding="utf-8") as handle:
            cells = [cell for row in csv.reader(handle) for cell in row]
        assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
        _, items = data.load_split(run, split)
        assert sorted(it.ref for it in items) == sorted(it.ref for it in splits[split])


def test_debugger_cells_keep_numbers_and_neutralise_names() -> None:
    from edgetl.runtime.guard import csv_cell

    assert [csv_cell(v, numbers=True) for v in ("-0.25", "1e-05", "nan", "=HYPERLINK(1)", "-1+2", "@x")] == [
        "-0.25",
        "1e-05",
        "nan",
        "'=HYPERLINK(1)",
        "'-1+2",
        "'@x",
    ]


# --- 9. the Python API validates into EdgeTLError ----------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: edgetl.convert(5), "run must be the path of a run folder, a str or pathlib.Path (got int)"),
        (
            lambda: edgetl.convert("r", quantizations="int9"),
            "quantizations='int9' is not one of: fp32, fp16, dynamic, int8, qat_int8",
        ),
        (
            lambda: edgetl.convert("r", quantizations=5),
            "--quantizations=5 must be a list of values, each one of fp32, fp16, dynamic, int8, qat_int8",
        ),
        (
            lambda: edgetl.convert("r", quantisations=("int8",)),
            "unknown argument(s) quantisations; valid: run, quantizations,",
        ),
        (lambda: edgetl.convert("r", keep_float=[1]), "--keep-float: 1 must be a string"),
        (lambda: edgetl.qat("r", epochs="3"), "--epochs='3' must be an integer"),
        (lambda: edgetl.calibrate("r", size=None), "--size must be set (got null)"),
        (lambda: edgetl.parity("r", threads="2"), "--threads='2' must be an integer"),
        (lambda: edgetl.parity("r", junit=Path("x.xml"), models=[3]), "--models: 3 must be a string"),
        (lambda: edgetl.train(data=5, output="x"), "--data=5 must be a string"),
        (lambda: edgetl.train(data="d", output="x", resume="yes"), "resume must be True or False (got 'yes')"),
        (
            lambda: edgetl.train(config={"data": "d"}),
            "config must be a TrainConfig (got dict); or pass keyword arguments",
        ),
        (lambda: edgetl.train(output="x"), "TrainConfig: "),
        (
            lambda: edgetl.train(data="d", output="x", pooling=["avg"]),
            "pooling=['avg'] must be a single value, not a list",
        ),
    ],
    ids=lambda v: "" if callable(v) else v[:28],
)
def test_api_refuses_bad_arguments_with_a_fix(call: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        call()
    assert str(caught.value).startswith(message)


def test_api_takes_a_string_of_variants_as_the_cli_does() -> None:
    from edgetl.api import _config
    from edgetl.config import ConvertConfig, Quantization

    assert _config(ConvertConfig, None, {"run": "r", "quantizations": "int8"}).quantizations == (Quantization.INT8,)
    both = _config(ConvertConfig, None, {"run": "r", "quantizations": "int8, qat-int8", "keep_float": "Conv1"})
    assert both.quantizations == (Quantization.INT8, Quantization.QAT_INT8) and both.keep_float == ("Conv1",)


@pytest.mark.slow
def test_api_convert_with_one_variant_as_a_string_converts_it(tmp_path: Path, tiny_run: Path) -> None:
    run = tmp_path / "r"
    shutil.copytree(tiny_run, run)
    result = edgetl.convert(run, quantizations="fp32")
    assert [v["quantization"] for v in result.to_dict()["variants"]] == ["fp32"] and (
        run / "model_fp32.tflite"
    ).is_file()


# --- 14. leftovers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["runs/first", "new/a/b/run"], ids=["inside-data", "new-parents"])
def test_a_refused_training_leaves_no_folders(tmp_path: Path, output: str) -> None:
    data_dir = tmp_path / "data"
    _folder(data_dir, classes=("a",))  # one class: refused after the output folder was prepared
    target = (data_dir if output.startswith("runs") else tmp_path) / output
    clicheck.fails(clicheck.run("train", data_dir, "-o", target, *TINY), 3)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_dir()) == ["data", "data/a"]


@pytest.mark.parametrize("leftover", [".run.partial", ".run.worker1.partial"])
def test_a_killed_runs_partial_folder_is_reported_with_both_fixes(tmp_path: Path, leftover: str) -> None:
    (tmp_path / leftover / "checkpoint").mkdir(parents=True)
    message = clicheck.fails(clicheck.run("train", _folder(tmp_path / "data"), "-o", tmp_path / "run", *TINY), 3)
    assert message == (
        f"an interrupted run of {tmp_path / 'run'} exists ({leftover}); continue it with `edgetl train --resume "
        f"{tmp_path / 'run'}` (on every host of a cluster), or remove it: rm -r {tmp_path / leftover}"
    )


@pytest.mark.parametrize("other", ["old", "run.x"])
def test_another_outputs_partial_folder_is_named_by_the_next_run(tmp_path: Path, other: str) -> None:
    (tmp_path / f".{other}.partial").mkdir()  # "run.x" is another output, not a worker of "run"
    result = clicheck.run("train", _folder(tmp_path / "data", classes=("a",)), "-o", tmp_path / "run", *TINY)
    assert "found only class 'a'" in clicheck.fails(result, 3)  # the data's own refusal, not the partial folder
    assert (
        f"warning: {tmp_path / f'.{other}.partial'} is an interrupted run of {tmp_path / other}: continue it with "
        f"`edgetl train --resume {tmp_path / other}`, or remove it (rm -r {tmp_path / f'.{other}.partial'})"
    ) in result.stderr
