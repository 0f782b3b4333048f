#!/usr/bin/env bash
# Proof that edgetl's .tflite files carry standard metadata: MediaPipe Tasks' ImageClassifier, in a venv
# with only `mediapipe`, names every class of the int8 and fp32 models exactly as labels.txt does.
#
#   bash scripts/check_mediapipe.sh [RUN]
#
# RUN: a converted run folder (model_int8.tflite, model_fp32.tflite, labels.txt, splits/). Without it,
# a real tiny run is made first: `edgetl data fashion-mnist` (PER_CLASS, default 20), `edgetl train`
# (MobileNetV2 0.35/96, no pretrained weights, 2 head epochs, no fine-tuning: only the names are checked), `edgetl convert
# --quant fp32,int8`. MP_VENV (default ${TMPDIR:-/tmp}/edgetl-mediapipe) is created with
# `pip install mediapipe` when missing; VENV is edgetl's venv (default .venv). Prints MediaPipe's answer as
# JSON; exit 1 when a name differs, 2 on bad arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
MP_VENV=${MP_VENV:-${TMPDIR:-/tmp}/edgetl-mediapipe}
export TF_CPP_MIN_LOG_LEVEL=3
start=$SECONDS

if [ ! -x "$MP_VENV/bin/python" ] || ! "$MP_VENV/bin/python" -c "import mediapipe" 2>/dev/null; then
  echo "[check_mediapipe] creating $MP_VENV with only mediapipe" >&2
  python3 -m venv "$MP_VENV"
  "$MP_VENV/bin/pip" install -q mediapipe 2>&1 | grep -v -E "^WARNING: Location|ignored: it is neither" >&2 || true
  "$MP_VENV/bin/python" -c "import mediapipe" || { echo "Error: pip install mediapipe failed in $MP_VENV" >&2; exit 2; }
fi

RUN=${1:-}
WORK=
if [ -z "$RUN" ]; then
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/edgetl-mediapipe-run.XXXXXX")
  RUN=$WORK/run
  echo "[check_mediapipe] a tiny real run in $WORK" >&2
  "$BIN/edgetl" data fashion-mnist "$WORK/data" --per-class "${PER_CLASS:-20}" -q >&2
  "$BIN/edgetl" train "$WORK/data" --output "$RUN" --alpha 0.35 --image-size 96 --weights none --epochs 2 --fine-tune-epochs 0 -q >&2
  "$BIN/edgetl" convert "$RUN" --quant fp32,int8 --no-parity -q >&2
fi
[ -d "$RUN" ] || { echo "Error: $RUN is not a run folder; pass a folder written by edgetl convert" >&2; exit 2; }
# A held-out photo of the run (split files hold paths relative to the run's recorded data root).
IMAGE=$("$BIN/python" -c 'import sys; from edgetl.data import load_split; print(load_split(sys.argv[1], "test")[1][0].ref)' "$RUN" 2>/dev/null || true)
[ -f "$IMAGE" ] || { echo "Error: no test image in $RUN/splits/test.csv; pass a run folder written by edgetl train" >&2; exit 2; }

rc=0
"$MP_VENV/bin/python" scripts/check_mediapipe.py "$RUN/labels.txt" "$IMAGE" "$RUN/model_int8.tflite" "$RUN/model_fp32.tflite" || rc=$?
version=$("$MP_VENV/bin/python" -c "import importlib.metadata as m; print(m.version('mediapipe'))")
echo "[check_mediapipe] mediapipe $version: exit $rc in $((SECONDS - start)) s" >&2
if [ -n "${WORK:-}" ]; then
  if [ "$rc" = 0 ]; then rm -rf "$WORK"; else echo "[check_mediapipe] run kept in $WORK" >&2; fi
fi
exit $rc
