"""Mutate a valid model, its metadata, its label zip and its card; run each through edge-classify (#28).

``python tests/fuzz_models.py SEED COUNT SECONDS WORKDIR`` writes one JSON line per
case to stdout: ``{"case", "kind", "code", "problem"}``, where ``problem`` is
empty when the case met the device contract (a documented exit code, at most one
``edge-classify: error:`` line, no traceback). A signal exit or a hang shows as
this process dying or overrunning: tests/test_fuzz.py runs it in a child with a
deadline. Cases are drawn from ``random.Random(SEED)``: the same seed gives the
same cases. No TensorFlow.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

GOLDEN = Path(__file__).resolve().parent / "golden"
EXIT_CODES = {0, 2, 3, 4, 5}


def _flip(rng: random.Random, data: bytes, start: int = 0, end: int = -1) -> bytes:
    out = bytearray(data)
    end = len(out) if end < 0 else end
    for _ in range(rng.choice((1, 1, 1, 2, 4, 16))):
        out[rng.randrange(start, end)] = rng.randrange(256)
    return bytes(out)


def _mutate_bytes(rng: random.Random, data: bytes, start: int = 0, end: int = -1) -> bytes:
    end = len(data) if end < 0 else end
    how = rng.random()
    if how < 0.7:
        return _flip(rng, data, start, end)
    cut = rng.randrange(start, end)
    if how < 0.85:
        return data[:cut]  # truncated
    width = rng.randrange(1, 64)
    return data[:cut] + data[cut : cut + width] * rng.randrange(2, 50) + data[cut:]  # a repeated run


WEIRD = [None, 0, -1, 1e308, -1e308, math.nan, math.inf, "", "x" * 10000, [], {}, [1, 2, 3], True, 2**70, "NaN"]


def _mutate_card(rng: random.Random, card: dict[str, Any]) -> dict[str, Any]:
    card = json.loads(json.dumps(card))
    for _ in range(rng.choice((1, 1, 2, 3))):
        path: list[Any] = []
        node: Any = card
        while isinstance(node, (dict, list)) and node and rng.random() < 0.7:
            key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            path.append(key)
            node = node[key]
        if not path:
            key = rng.choice(list(card))
            path, node = [key], card[key]
        parent = card
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(WEIRD)
    return card


def cases(seed: int, workdir: Path) -> Any:
    """Endless seeded cases: (kind, model bytes, card dict or None)."""
    from edgetl.runtime import metadata
    from edgetl.runtime.model_card import load_card

    rng = random.Random(seed)
    model = (GOLDEN / "golden_int8.tflite").read_bytes()
    card = json.loads((GOLDEN / "golden_int8.json").read_text())
    embedded = metadata.embed(model, load_card(GOLDEN / "golden_int8.json"), "int8")
    zip_at = embedded.rfind(b"PK\x03\x04")
    meta_at = embedded.find(b"M001") - 4
    kinds: list[tuple[str, Callable[[], tuple[bytes, Any]]]] = [
        ("model-bytes", lambda: (_mutate_bytes(rng, model), card)),
        ("metadata", lambda: (_flip(rng, embedded, meta_at, meta_at + 600), None)),
        ("labels-zip", lambda: (_mutate_bytes(rng, embedded, zip_at), None)),
        ("tflite-with-metadata", lambda: (_mutate_bytes(rng, embedded, 0, zip_at), None)),
        ("card", lambda: (model, _mutate_card(rng, card))),
    ]
    while True:
        kind, make = rng.choice(kinds)
        data, this_card = make()
        if this_card is not None and kind != "card":
            this_card = {**this_card, "model_sha256": _sha(data)}  # the card came with the file: it matches
        yield kind, data, this_card


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def run_case(workdir: Path, index: int, data: bytes, card: Any) -> tuple[int, str]:
    """edge-classify on one case, in this process; (exit code, problem or "")."""
    from edgetl.runtime.__main__ import main

    model = workdir / f"case{index}.tflite"
    model.write_bytes(data)
    if card is not None:
        model.with_suffix(".json").write_text(json.dumps(card, allow_nan=True))
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(["--model", str(model), "--image", str(GOLDEN / "00_blue.png"), "--headless"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - the contract: nothing escapes as a traceback
        return -1, f"uncaught {type(exc).__name__}: {exc}"[:300]
    finally:
        model.unlink(missing_ok=True)
        model.with_suffix(".json").unlink(missing_ok=True)
    text = err.getvalue()
    errors = [line for line in text.splitlines() if line.startswith("edge-classify: error:")]
    if code not in EXIT_CODES:
        return code, f"exit {code}: {text[-300:]}"
    if "Traceback" in text or len(errors) > 1 or (code != 0 and not errors and code != 4):
        return code, f"contract: {text[-300:]}"
    return code, ""


def main(argv: list[str]) -> int:
    seed, count, seconds, workdir = int(argv[0]), int(argv[1]), float(argv[2]), Path(argv[3])
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + seconds
    for index, (kind, data, card) in enumerate(cases(seed, workdir)):
        if index >= count or time.monotonic() > deadline:
            break
        print(json.dumps({"case": index, "kind": kind, "state": "start"}), flush=True)
        code, problem = run_case(workdir, index, data, card)
        print(json.dumps({"case": index, "kind": kind, "code": code, "problem": problem}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
