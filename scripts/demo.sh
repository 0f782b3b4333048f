#!/usr/bin/env bash
# The main job, end to end and offline: real Fashion-MNIST photos, real ImageNet MobileNetV2
# weights, train -> convert (fp32/fp16/dynamic/int8) -> parity gate. Prints the run folder.
# PER_CLASS, IMAGE_SIZE, EPOCHS and RUN override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BIN=${VENV:-.venv}/bin
PER_CLASS=${PER_CLASS:-300}
DATA=data/fashion-mnist-$PER_CLASS
RUN=${RUN:-runs/fashion-mnist-$(date +%Y%m%d-%H%M%S)}

[ -d "$DATA" ] || "$BIN/edgetl" data fashion-mnist "$DATA" --per-class "$PER_CLASS"
"$BIN/edgetl" train "$DATA" --output "$RUN" --image-size "${IMAGE_SIZE:-96}" --epochs "${EPOCHS:-20}"
"$BIN/edgetl" convert "$RUN" --no-parity
"$BIN/edgetl" parity "$RUN"
echo "$RUN"
