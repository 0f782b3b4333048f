#!/usr/bin/env bash
# The CI parity gate on a real run, at edgetl's default thresholds: Debian's Fashion-MNIST photos,
# offline ImageNet MobileNetV2 1.0/96, train (head + fine-tune) -> QAT -> convert fp16, int8 and
# qat-int8 -> `edgetl parity` on all 10,000 images of Fashion-MNIST's own test part (never seen
# in training or calibration), default thresholds and default --inconclusive pass. Exit status =
# the gate's: 0 pass (inconclusive checks are listed as [?] with the images they would need),
# 1 a threshold crossed with evidence, 3 setup error (docs/parity.md, "Exit codes and CI").
# Measured 2026-12-05 on 10,000 photos: fp16, int8 and qat_int8 pass every check but qat_int8's
# per-class drop (shirt 1.3 pt [-0.6, 3.2] vs 3 pt: inconclusive). QAT trained on the labels
# (--distill 0) failed it here (sneaker 5.1 pt [3.0, 7.5]); the default distils from model.keras.
# 2026-12-07, with fidelity judged against the noise floor (±1 grey level): the same verdicts, exit 0
# in 1,678 s under load; int8 changes 1.80% of answers where ±1 grey level changes 2.63% (fp16 0.32%).
#
#   bash scripts/ci_parity.sh            # after scripts/setup.sh
#
# PER_CLASS (train subset, default 200), TEST_PER_CLASS (default 1000, the whole test part),
# WORK (default a temp dir), JUNIT (default $WORK/parity.xml).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/edgetl-parity.XXXXXX")}
start=$SECONDS

"$BIN/edgetl" data fashion-mnist "$WORK/train" --per-class "${PER_CLASS:-200}" -q
"$BIN/edgetl" data fashion-mnist "$WORK/test" --per-class "${TEST_PER_CLASS:-1000}" --part test -q
"$BIN/edgetl" train "$WORK/train" --output "$WORK/run" --image-size 96 --epochs 20 \
    --fine-tune-epochs 6 --fine-tune-layers 60 --fine-tune-learning-rate 1e-4 -q
"$BIN/edgetl" qat "$WORK/run" --epochs 3 -q
"$BIN/edgetl" convert "$WORK/run" --quant fp16,int8,qat-int8 --no-parity -q
rc=0
"$BIN/edgetl" parity "$WORK/run" --data "$WORK/test" --junit "${JUNIT:-$WORK/parity.xml}" || rc=$?
cat "$WORK/run/parity.md"
echo "parity gate: exit $rc in $((SECONDS - start)) s (run folder $WORK/run)"
exit $rc
