#!/usr/bin/env bash
# Device-side check without TensorFlow (issue #5): build the wheel with pip (as README's install
# section says), install edgetl[edge] from it into a fresh venv, prove TensorFlow is not there and
# that the train commands say which extra is missing (issue #20), then run edge-classify on a
# synthetic video and on the golden images (tests/golden) and require the golden answers. Prints
# what it measured, cold start included.
#
#   scripts/ci_edge_only.sh
#
# Environment:
#   PYTHON         interpreter the fresh venv is made from (default python3)
#   EDGE_CI_KEEP=1 keep the work directory (venv, outputs, logs) even when the check passes
#
# Needs the package index (pip install, with pip's default build isolation). Exit 0 when every
# check passes, 1 on the first failure (its log is printed), 2 on a usage error.
set -euo pipefail

case "${1:-}" in
    "") ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "usage: $0" >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
GOLDEN=$REPO/tests/golden
MODEL=$GOLDEN/golden_int8.tflite
VIDEO_FRAMES=48
WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgetl-edge-ci.XXXXXX")
KEEP=${EDGE_CI_KEEP:-0}
trap '[ "$KEEP" = 1 ] || rm -rf "$WORK"' EXIT
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
START=$SECONDS
MEASURED=()

log() { printf '[edge-ci] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; log "work directory kept: $WORK"; KEEP=1; exit 1; }
measured() { MEASURED+=("$(printf '%-28s %s' "$1" "$2")"); }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# pip builds in the source tree (build/, *.egg-info): build from a snapshot so the checkout stays clean.
log "snapshot of $REPO (pyproject, README, packages)"
mkdir -p "$WORK/src" "$WORK/run"
(cd "$REPO" && tar --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md LICENSE edge_runtime toolchain calibration) | tar -xf - -C "$WORK/src"

log "pip wheel --no-deps (the README's wheel for a Pi)"
t=$(now)
"$PYTHON" -m pip wheel --disable-pip-version-check --no-deps -w "$WORK/dist" "$WORK/src" >"$WORK/wheel.log" 2>&1 || { tail -30 "$WORK/wheel.log" >&2; die "building the wheel failed"; }
WHEEL=$(ls "$WORK"/dist/edgetl-*-py3-none-any.whl)
"$PYTHON" - "$WHEEL" <<'EOF' || die "the wheel lacks its licence or metadata"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
meta = zipfile.ZipFile(sys.argv[1]).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "no LICENSE in the wheel"
assert "License-Expression: MIT" in meta and "Provides-Extra: edge" in meta and "Provides-Extra: train" in meta, meta[:600]
print(f"[edge-ci] wheel: {sys.argv[1].rsplit('/', 1)[-1]}, {len(names)} files, LICENSE + License-Expression: MIT", file=sys.stderr)
EOF
measured "wheel build" "$(since "$t") s"

log "fresh venv from $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
t=$(now)
"$PYTHON" -m venv "$WORK/venv" || die "python -m venv failed"
PY=$WORK/venv/bin/python
log "pip install 'edgetl[edge] @ file://...whl' (a minute or two)"
"$PY" -m pip install --disable-pip-version-check "edgetl[edge] @ file://$WHEEL" >"$WORK/pip.log" 2>&1 || { tail -30 "$WORK/pip.log" >&2; die "pip install edgetl[edge] from the wheel failed"; }
measured "venv + install" "$(since "$t") s"

# Every venv command runs in an empty folder: the checkout must not shadow the installed package.
cd "$WORK/run"
log "no TensorFlow in the venv"
if "$PY" -c "import tensorflow" >"$WORK/tf.log" 2>&1; then die "import tensorflow succeeded in the edge-only venv"; fi
grep -q "ModuleNotFoundError: No module named 'tensorflow'" "$WORK/tf.log" || { cat "$WORK/tf.log" >&2; die "import tensorflow failed, but not for lack of the module"; }
"$PY" -m pip list --format=freeze --disable-pip-version-check >"$WORK/packages.txt"
if grep -iE '^(tensorflow|tf[-_]keras|keras|tensorflow[-_].*|tf[-_]nightly)==' "$WORK/packages.txt"; then die "the edge extra pulled a TensorFlow package (above)"; fi
"$PY" - "$WORK/venv" <<'EOF' || die "edge_runtime is not the installed copy, or its dependencies do not import"
import sys
import ai_edge_litert, cv2, numpy, edgetl.runtime
assert edgetl.runtime.__file__.startswith(sys.argv[1]), edgetl.runtime.__file__
print(f"[edge-ci] installed: edge_runtime {edgetl.runtime.__version__}, numpy {numpy.__version__}, opencv {cv2.__version__}, "
      f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}", file=sys.stderr)
EOF
log "train commands without the train extra: one Error line, exit 3"
for cmd in "train $WORK/run -o $WORK/run/x" "qat $WORK/run" "convert $WORK/run" "parity $WORK/run"; do
    rc=0
    # shellcheck disable=SC2086 - cmd is a word list
    "$WORK/venv/bin/edgetl" $cmd >"$WORK/extra.out" 2>"$WORK/extra.err" || rc=$?
    [ "$rc" = 3 ] || { cat "$WORK/extra.err" >&2; die "edgetl $cmd exited $rc, not 3"; }
    [ "$(wc -l <"$WORK/extra.err")" = 1 ] && grep -q '^Error: tensorflow is not installed: .*pip install "edgetl\[train\]"' "$WORK/extra.err" \
        || { cat "$WORK/extra.err" >&2; die "edgetl $cmd did not print one Error line naming the train extra"; }
    [ ! -s "$WORK/extra.out" ] || die "edgetl $cmd wrote to stdout"
done
"$WORK/venv/bin/edge-classify" --help >/dev/null || die "edge-classify --help failed"

measured "packages in venv" "$(wc -l <"$WORK/packages.txt") ($(grep -ciE '^(numpy|opencv-python-headless|ai-edge-litert)==' "$WORK/packages.txt") of them numpy/opencv/litert)"

log "cold start: import edgetl.runtime + Classifier(golden model), 3 fresh processes"
COLD=()
for i in 1 2 3; do
    t=$(now)
    "$PY" -c "import sys; from edgetl.runtime import Classifier, ClassifierOptions; Classifier(ClassifierOptions(model_path=sys.argv[1]))" "$MODEL" 2>>"$WORK/cold.log" \
        || { cat "$WORK/cold.log" >&2; die "Classifier(golden model) failed"; }
    COLD+=("$(since "$t")")
done
measured "cold start (import+load)" "${COLD[0]} s first, ${COLD[1]} s, ${COLD[2]} s"
t=$(now)
"$PY" -c "import edgetl.runtime" || die "import edgetl.runtime failed"
measured "import edgetl.runtime" "$(since "$t") s"

log "synthetic video ($VIDEO_FRAMES frames, MJPG) made with the venv's cv2"
"$PY" - "$WORK/clip.avi" "$VIDEO_FRAMES" <<'EOF' || die "could not write the synthetic video"
import sys
import cv2, numpy as np
path, frames = sys.argv[1], int(sys.argv[2])
writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
assert writer.isOpened(), "no MJPG writer"
rng = np.random.default_rng(0)
for i in range(frames):
    frame = np.full((240, 320, 3), 70, np.uint8)
    frame[:, :, i % 3] = 190  # blue, green, red in turn (BGR order)
    writer.write(np.clip(frame + rng.normal(0, 20, frame.shape), 0, 255).astype(np.uint8))
writer.release()
EOF

log "edge-classify --video (headless)"
rc=0
"$WORK/venv/bin/edge-classify" --model "$MODEL" --video "$WORK/clip.avi" --headless --top-k 1 --summary-json "$WORK/video.json" \
    >"$WORK/video.jsonl" 2>"$WORK/video.log" || rc=$?
[ "$rc" = 0 ] || { cat "$WORK/video.log" >&2; die "edge-classify --video exited $rc"; }
"$PY" - "$WORK/video.jsonl" "$WORK/video.json" "$VIDEO_FRAMES" <<'EOF' || die "video output is wrong"
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
summary, frames = json.load(open(sys.argv[2])), int(sys.argv[3])
assert len(lines) == frames == summary["frames"], f"{len(lines)} JSON lines, summary {summary['frames']}, written {frames}"
assert [line["frame"] for line in lines] == list(range(frames)), "frames out of order"
want = ["blue", "green", "red"] * (frames // 3)
got = [line["top_k"][0]["label"] for line in lines]
assert got == want, f"labels {got[:6]}... want {want[:6]}..."
print(f"[edge-ci] video: {frames} lines, labels as drawn, {summary['fps']} FPS, mean {summary['mean_ms']} ms/frame", file=sys.stderr)
EOF
measured "video" "$(grep -o '"fps": [0-9.]*' "$WORK/video.json" | cut -d' ' -f2) FPS over $VIDEO_FRAMES frames (320x240)"

log "edge-classify --image tests/golden (headless)"
rc=0
"$WORK/venv/bin/edge-classify" --model "$MODEL" --image "$GOLDEN" --headless --top-k 4 >"$WORK/golden.jsonl" 2>"$WORK/golden.log" || rc=$?
[ "$rc" = 0 ] || { cat "$WORK/golden.log" >&2; die "edge-classify --image exited $rc"; }
"$PY" - "$WORK/golden.jsonl" "$GOLDEN/expected.json" <<'EOF' || die "golden answers differ"
import json, os, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
expected = json.load(open(sys.argv[2]))["images"]
assert len(lines) == len(expected), f"{len(lines)} JSON lines for {len(expected)} golden images"
worst = 0.0
for line in lines:
    want = expected[os.path.basename(line["source"])]
    assert line["top_k"][0]["label"] == want["top1"], f"{line['source']}: top-1 {line['top_k'][0]['label']}, golden {want['top1']}"
    for c in line["top_k"]:
        worst = max(worst, abs(c["score"] - want["scores"][c["index"]]))
assert worst <= 0.01, f"a score differs from the golden one by {worst:.4f} > 0.01"
print(f"[edge-ci] golden: {len(lines)}/{len(expected)} top-1 equal, max score diff {worst:.4f}", file=sys.stderr)
EOF
measured "golden images" "$(wc -l <"$WORK/golden.jsonl") lines, top-1 all equal"

log "edge-classify benchmark (the wheel's venv, no TensorFlow)"
rc=0
"$WORK/venv/bin/edge-classify" benchmark "$MODEL" --threads 1,2 --runs 50 --warmup 5 --seconds 5 >"$WORK/benchmark.txt" \
    2>"$WORK/benchmark.log" || rc=$?
[ "$rc" = 0 ] || { cat "$WORK/benchmark.log" >&2; die "edge-classify benchmark exited $rc"; }
cat "$WORK/benchmark.txt" >&2
measured "benchmark" "$(grep -c '^| golden_int8' "$WORK/benchmark.txt") rows (1 and 2 threads), table above"

measured "wall time" "$((SECONDS - START)) s"
log "PASS"
printf '%s\n' "${MEASURED[@]}"
