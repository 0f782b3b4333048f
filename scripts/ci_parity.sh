#!/usr/bin/env bash
# The CI parity gate on a real run: Debian's Fashion-MNIST photos, offline ImageNet MobileNetV2
# 1.0/96, train (head + fine-tune) -> convert fp16 + int8 -> `edgetl parity` on all 10,000 images
# of Fashion-MNIST's own test part (never seen in training or calibration). Exit status = the gate's.
#
# Why all 10,000: agreement and per-class drop are counts of a few dozen flipped answers. On
# 2,000 images (200 per class) one run's int8 agreement has a binomial sd of 0.27 pt and a
# class's drop moves by a point or two between two equally good models; on 10,000 the sd is
# 0.12 pt, and the extra images cost ~25 s per parity call.
#
# fp16 is gated at parity's default thresholds (0.5 pt drop, 99% agreement, 2 pt per class).
# int8 (post-training, full-integer, calibrated GPTQ rounding) is gated at the default drop and
# per-class drop and at a regression threshold for agreement, INT8_GATE below: measured 2026-12
# on 10,000 images, drop -0.12 pt, agreement 98.38% (nearest rounding: 95.06%), worst class 1.4 pt.
# The remaining 1.62% is int8 activation noise this model amplifies (float weights with int8
# activations alone agree 98.55%, see README); the gate still fails a broken int8 (wrong
# calibration, contract mismatch, nearest rounding).
#
#   bash scripts/ci_parity.sh            # after scripts/setup.sh
#
# PER_CLASS (train subset, default 200), TEST_PER_CLASS (default 1000, the whole test part),
# WORK (default a temp dir), INT8_GATE (default "--max-drop 0.5 --min-agreement 0.975 --max-class-drop 2").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/edgetl-parity.XXXXXX")}
export TF_CPP_MIN_LOG_LEVEL=3
start=$SECONDS

"$BIN/edgetl" data fashion-mnist "$WORK/train" --per-class "${PER_CLASS:-200}"
"$BIN/edgetl" data fashion-mnist "$WORK/test" --per-class "${TEST_PER_CLASS:-1000}" --part test
"$BIN/edgetl" train "$WORK/train" --output "$WORK/run" --image-size 96 --epochs 20 \
    --fine-tune-epochs 6 --fine-tune-layers 60 --fine-tune-learning-rate 1e-4 -q
"$BIN/edgetl" convert "$WORK/run" --quant fp16,int8 --no-parity -q
INT8_GATE=${INT8_GATE:---max-drop 0.5 --min-agreement 0.975 --max-class-drop 2}
rc=0
"$BIN/edgetl" parity "$WORK/run" --data "$WORK/test" --models model_fp16.tflite --junit "$WORK/parity_fp16.xml" || rc=1
cat "$WORK/run/parity.md"
# shellcheck disable=SC2086 - INT8_GATE is a list of options
"$BIN/edgetl" parity "$WORK/run" --data "$WORK/test" --models model_int8.tflite --junit "$WORK/parity_int8.xml" $INT8_GATE || rc=1
cat "$WORK/run/parity.md"
echo "parity gate: exit $rc in $((SECONDS - start)) s (run folder $WORK/run)"
exit $rc
