#!/usr/bin/env python3
"""Write edgetl's third dataset, *colour objects*, as class-folder PNGs: colour pictures whose test part
shows objects, drawing styles and backgrounds that never appear in training.

Fashion-MNIST and Animal-MNIST are grey 28-px silhouettes. A camera sees colour scenes, so this set is
built from the colour pictures the package registries ship:

- the objects: the emoji artwork of four vendors from the npm packages ``emoji-datasource-{apple,google,
  twitter,facebook}`` 16.0.0 (64x64 RGBA PNGs, with each emoji's Unicode category in ``emoji.json``; the
  package data is MIT, the artwork is each vendor's: Google's Noto Apache-2.0, Twitter's Twemoji CC-BY 4.0,
  Apple's and Facebook's proprietary, so nothing here is committed or redistributed: the script fetches the
  pinned tarballs with ``npm pack`` and checks their sha256);
- the backgrounds: the colour photographs inside the scikit-image wheel (PyPI ``scikit-image`` 0.26.0,
  BSD/CC0: astronaut, coffee, chelsea, hubble_deep_field, immunohistochemistry for training; rocket,
  motorcycle_left, motorcycle_right, retina for testing), each file's sha256 checked; the wheel is read,
  never installed.

Eight classes, the emoji categories: activities, animals & nature, food & drink, objects, people & body,
smileys & emotion, symbols, travel & places (flags and components left out). Each emoji (by code point,
skin-tone variants not used) belongs to exactly one part by a fixed seeded split (``--split-seed``, 40% of
each category to test). Training pictures are the Apple and Google artwork of the training emoji on
training photos; test pictures are the Twitter and Facebook artwork of the *other* emoji on the *other*
photos. So the test asks for generalisation three ways at once: new objects, new drawing styles, new
scenes. Each picture: a random crop of a photo (random scale and flip) as a ``--size`` square canvas, the
emoji scaled to 35-75% of the canvas, rotated by up to 20 degrees, alpha-composited at a random place.
``--views N`` writes N pictures of each emoji and vendor (other crop, place, size and turn), e.g. to get a
test part of about 3,900 pictures for the gate study; views of one emoji are not independent samples of
"new objects", so accuracy claims on this set count emoji x vendor pairs, not views. Every random choice is
seeded by (split seed, part, view, emoji, vendor), so the same arguments write the same bytes.

What it lacks: the objects are drawings, not photographs of real things; the backgrounds come from only
five and four photographs; a category is a loose notion for some emoji (a "symbols" heart vs a
"smileys & emotion" heart), which caps the reachable accuracy well below 100%.

Usage:
    python scripts/colour_emoji.py OUT --part train
    python scripts/colour_emoji.py OUT_TEST --part test --views 3
    (--per-class N keeps at most N pictures per class, seeded by --seed; --cache DIR or $EDGETL_DATA_CACHE sets
     the cache folder of the downloaded artwork.)
Prints one JSON line {class: count, ...} on stdout; exit 1 with one "Error: ..." line on bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

EMOJI_VERSION = "16.0.0"
EMOJI_SHA256 = {
    "apple": "b34d1665e136f163b0d4433318df151895b785186e8c729b2211b43017945075",
    "google": "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    "twitter": "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
    "facebook": "017038cf5a4e7fcf03dd9133cbed43d4c281c4b3ce7b927c7160261b92b8821e",
}
SKIMAGE = "scikit-image==0.26.0"
BACKGROUNDS = {
    "train": {
        "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
        "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    },
    "test": {
        "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
        "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
        "motorcycle_right.png": "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
        "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    },
}
CLASSES = {
    "Activities": "activities",
    "Animals & Nature": "animals_nature",
    "Food & Drink": "food_drink",
    "Objects": "objects",
    "People & Body": "people_body",
    "Smileys & Emotion": "smileys_emotion",
    "Symbols": "symbols",
    "Travel & Places": "travel_places",
}
VENDORS = {"train": ("apple", "google"), "test": ("twitter", "facebook")}
TEST_FRACTION = 0.4


class DataError(Exception):
    """Bad input or a missing/odd package: reported as one line, exit 1."""


def default_cache() -> Path:
    root = os.environ.get("EDGETL_DATA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgetl", "datasets"
    )
    return Path(root) / f"colour-emoji-{EMOJI_VERSION}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch_emoji(vendor: str, cache: Path) -> Path:
    """``cache/<vendor>/`` holding emoji.json and img/<vendor>/64/*.png from the pinned, checked npm tarball."""
    target = cache / vendor
    if (target / "emoji.json").exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        package = f"emoji-datasource-{vendor}@{EMOJI_VERSION}"
        result = subprocess.run(["npm", "pack", "--silent", package], cwd=tmp, capture_output=True, text=True)
        tgz = Path(tmp) / f"emoji-datasource-{vendor}-{EMOJI_VERSION}.tgz"
        if result.returncode != 0 or not tgz.exists():
            raise DataError(f"could not fetch {package} with npm pack: {result.stderr.strip()[-300:]}")
        digest = _sha256(tgz.read_bytes())
        if digest != EMOJI_SHA256[vendor]:
            raise DataError(f"{tgz.name} has sha256 {digest}, expected {EMOJI_SHA256[vendor]}")
        staging = Path(tempfile.mkdtemp(prefix=f".{vendor}.", dir=cache))
        prefix = f"package/img/{vendor}/64/"
        with tarfile.open(tgz) as archive:
            for member in archive.getmembers():
                name = member.name
                if not member.isfile() or not (name == "package/emoji.json" or name.startswith(prefix)):
                    continue
                leaf = Path(name).name
                if "/" in leaf or leaf.startswith("."):
                    continue
                data = archive.extractfile(member).read()
                (staging / ("emoji.json" if leaf == "emoji.json" else leaf)).write_bytes(data)
        os.replace(staging, target)
    return target


def _fetch_backgrounds(cache: Path) -> Path:
    """``cache/backgrounds/`` with the nine photographs, each sha256-checked, read from the scikit-image wheel."""
    target = cache / "backgrounds"
    wanted = {name: digest for part in BACKGROUNDS.values() for name, digest in part.items()}
    if all((target / name).exists() for name in wanted):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            "-d",
            tmp,
            SKIMAGE,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("scikit_image-*.whl"))
        if result.returncode != 0 or not wheels:
            raise DataError(f"could not download {SKIMAGE} from PyPI: {result.stderr.strip()[-300:]}")
        staging = Path(tempfile.mkdtemp(prefix=".backgrounds.", dir=cache))
        with zipfile.ZipFile(wheels[0]) as archive:
            for name, digest in wanted.items():
                data = archive.read(f"skimage/data/{name}")
                if _sha256(data) != digest:
                    raise DataError(f"skimage/data/{name} has sha256 {_sha256(data)}, expected {digest}")
                (staging / name).write_bytes(data)
        os.replace(staging, target)
    return target


def emoji_parts(meta: list[dict], split_seed: int) -> dict[str, dict[str, list[dict]]]:
    """{part: {class: [emoji]}}: each category's emoji split once, by code point, with a fixed seed."""
    parts: dict[str, dict[str, list[dict]]] = {"train": {}, "test": {}}
    for index, (category, name) in enumerate(CLASSES.items()):
        members = sorted((e for e in meta if e.get("category") == category), key=lambda e: e["unified"])
        order = np.random.default_rng([split_seed, index]).permutation(len(members))
        n_test = int(round(TEST_FRACTION * len(members)))
        parts["test"][name] = [members[i] for i in order[:n_test]]
        parts["train"][name] = [members[i] for i in order[n_test:]]
    return parts


def _background(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.3, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def compose(emoji_rgba: np.ndarray, photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB picture: the emoji scaled, rotated and alpha-composited at a random place on a photo crop."""
    import cv2

    canvas = _background(photo, size, rng).astype(np.float32)
    side = max(8, int(size * rng.uniform(0.35, 0.75)))
    art = cv2.resize(emoji_rgba, (side, side), interpolation=cv2.INTER_CUBIC if side > 64 else cv2.INTER_AREA)
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-20, 20)), 1.0)
    art = cv2.warpAffine(art, turn, (side, side), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0)).astype(np.float32)
    y, x = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
    alpha = art[:, :, 3:4] / 255.0
    region = canvas[y : y + side, x : x + side]
    canvas[y : y + side, x : x + side] = alpha * art[:, :, :3] + (1 - alpha) * region
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _read_rgb(path: Path, flags: int) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), flags)
    if image is None:
        raise DataError(f"could not decode {path}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def build(args: argparse.Namespace) -> dict[str, int]:
    import cv2

    output = Path(args.output)
    if output.exists():
        raise DataError(f"{output} already exists; remove it or choose another folder")
    if args.per_class < 0:
        raise DataError("--per-class must be >= 0 (0 = every picture of the part)")
    if not 1 <= args.views <= 16:
        raise DataError("--views must be between 1 and 16, e.g. 3")
    if not 32 <= args.size <= 512:
        raise DataError("--size must be between 32 and 512 pixels, e.g. 128")
    cache = Path(args.cache) if args.cache else default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    vendors = VENDORS[args.part]
    folders = {vendor: _fetch_emoji(vendor, cache) for vendor in vendors}
    backgrounds = _fetch_backgrounds(cache)
    photos = [_read_rgb(backgrounds / name, cv2.IMREAD_COLOR) for name in sorted(BACKGROUNDS[args.part])]
    meta = json.loads((folders[vendors[0]] / "emoji.json").read_text(encoding="utf-8"))
    parts = emoji_parts(meta, args.split_seed)[args.part]
    part_code = 0 if args.part == "train" else 1
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    counts: dict[str, int] = {}
    try:
        for name, members in parts.items():
            jobs = [
                (e, v, k)
                for e in members
                for v in vendors
                if e.get(f"has_img_{v}") and (folders[v] / e["image"]).exists()
                for k in range(args.views)
            ]
            if args.per_class:
                keep = np.random.default_rng([args.seed, len(name)] + list(name.encode())).permutation(len(jobs))
                jobs = [jobs[i] for i in sorted(keep[: args.per_class].tolist())]
            (tmp / name).mkdir()
            for emoji, vendor, view in jobs:
                code = [int(c, 16) for c in emoji["unified"].split("-")]
                rng = np.random.default_rng([args.split_seed, part_code, vendors.index(vendor), view, *code])
                art = _read_rgb(folders[vendor] / emoji["image"], cv2.IMREAD_UNCHANGED)
                if art.ndim != 3 or art.shape[2] != 4:
                    art = np.dstack([art[:, :, :3], np.full(art.shape[:2], 255, np.uint8)])
                picture = compose(art, photos[int(rng.integers(0, len(photos)))], args.size, rng)
                ok, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                if not ok:
                    raise DataError(f"could not encode {emoji['unified']}")
                (tmp / name / f"{args.part}_{vendor}_{emoji['unified'].lower()}_v{view}.png").write_bytes(png.tobytes())
            counts[name] = len(jobs)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="folder to create (must not exist)")
    parser.add_argument("--part", choices=("train", "test"), default="train")
    parser.add_argument("--per-class", type=int, default=0, help="at most N pictures per class (0 = all)")
    parser.add_argument("--seed", type=int, default=0, help="which pictures --per-class keeps")
    parser.add_argument("--split-seed", type=int, default=0, help="which emoji go to test (same for both parts)")
    parser.add_argument(
        "--views", type=int, default=1, help="pictures per emoji and vendor, each on another crop and place (default 1)"
    )
    parser.add_argument("--size", type=int, default=128, help="canvas side in pixels (default 128)")
    parser.add_argument(
        "--cache", help="cache folder of the downloaded artwork (default $EDGETL_DATA_CACHE or ~/.cache)"
    )
    args = parser.parse_args(argv)
    try:
        counts = build(args)
    except (DataError, OSError, KeyError, ValueError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
