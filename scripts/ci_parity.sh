#!/usr/bin/env bash
# The CI parity gate on a real run: Debian's Fashion-MNIST photos, offline ImageNet MobileNetV2
# 1.0, train -> convert fp16 + int8 -> `edgetl parity` at its default thresholds on 1,000 images of
# Fashion-MNIST's own test part (never seen in training or calibration). Exit status = the gate's.
#
#   bash scripts/ci_parity.sh            # after scripts/setup.sh
#
# PER_CLASS (train subset, default 200), TEST_PER_CLASS (default 100), WORK (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/edgetl-parity.XXXXXX")}
export TF_CPP_MIN_LOG_LEVEL=3
start=$SECONDS

"$BIN/edgetl" data fashion-mnist "$WORK/train" --per-class "${PER_CLASS:-200}"
"$BIN/edgetl" data fashion-mnist "$WORK/test" --per-class "${TEST_PER_CLASS:-100}" --part test
"$BIN/edgetl" train "$WORK/train" --output "$WORK/run" --image-size 96 --epochs 20 \
    --fine-tune-epochs 6 --fine-tune-layers 60 --fine-tune-learning-rate 1e-4 -q
"$BIN/edgetl" convert "$WORK/run" --quant fp16,int8 --no-parity -q
rc=0
"$BIN/edgetl" parity "$WORK/run" --data "$WORK/test" --junit "$WORK/parity.xml" || rc=$?
cat "$WORK/run/parity.md"
echo "parity gate: exit $rc in $((SECONDS - start)) s (run folder $WORK/run)"
exit $rc
