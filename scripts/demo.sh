#!/usr/bin/env bash
# The main job, end to end and offline: real Fashion-MNIST photos, real ImageNet MobileNetV2
# weights, train -> QAT -> convert (fp16, int8, qat-int8) -> parity on all 10,000 photos of
# Fashion-MNIST's own test part, through the code the Pi runs. Prints the verdict honestly
# (with 95% intervals) and the run folder.
# PER_CLASS, TEST_PER_CLASS, IMAGE_SIZE, EPOCHS, QAT_EPOCHS and RUN override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BIN=${VENV:-.venv}/bin
PER_CLASS=${PER_CLASS:-300}
TEST_PER_CLASS=${TEST_PER_CLASS:-1000}
DATA=data/fashion-mnist-$PER_CLASS
TEST=data/fashion-mnist-test-$TEST_PER_CLASS
RUN=${RUN:-runs/fashion-mnist-$(date +%Y%m%d-%H%M%S)}

[ -d "$DATA" ] || "$BIN/edgetl" data fashion-mnist "$DATA" --per-class "$PER_CLASS"
[ -d "$TEST" ] || "$BIN/edgetl" data fashion-mnist "$TEST" --per-class "$TEST_PER_CLASS" --part test
"$BIN/edgetl" train "$DATA" --output "$RUN" --image-size "${IMAGE_SIZE:-96}" --epochs "${EPOCHS:-20}" \
    --fine-tune-epochs "${FINE_TUNE_EPOCHS:-6}" --fine-tune-layers 60 --fine-tune-learning-rate 1e-4
"$BIN/edgetl" qat "$RUN" --epochs "${QAT_EPOCHS:-3}"
"$BIN/edgetl" convert "$RUN" --quant fp16,int8,qat-int8 --no-parity
# The gate's verdict is part of the result, not a failure of the demo: it is printed with
# its reasons, and the demo still ends with the run folder. CI gates on `edgetl parity`'s exit code.
rc=0
"$BIN/edgetl" parity "$RUN" --data "$TEST" || rc=$?
cat "$RUN/parity.md"
# One line per variant: its verdict and, for a failure or an inconclusive check, what to do.
"$BIN/python" - "$RUN/parity.json" <<'PY' >&2
import json, sys

report = json.load(open(sys.argv[1]))
advice = {
    "top-1 drop": "measurably less accurate than model.keras",
    "agreement": "its answers differ from the model it was converted from",
    "per-class drop": "one class lost accuracy against model.keras",
    "preprocessing contract": "its card disagrees with how the model was trained",
    "input tensor": "the device builds a different input tensor than training",
}
fix = {
    "int8": "try more calibration images (edgetl convert RUN --quant int8 --calib-size 600) or deploy model_qat_int8.tflite if it passes",
    "qat_int8": "QAT moved accuracy between classes: deploy model_int8.tflite if it passes, or re-run `edgetl qat` distilled (--distill 1, the default) with fewer --epochs or a lower --learning-rate",
    "fp16": "fp16 should be near-exact: check the conversion",
    "dynamic": "deploy int8 or fp16 instead",
}
for name in report["models"]:
    checks = [c for c in report["checks"] if c["model"] == name]
    failed = [c for c in checks if c["verdict"] == "fail"]
    unsure = [c for c in checks if c["verdict"] == "inconclusive"]
    if failed:
        why = "; ".join(f"{advice.get(c['name'], c['name'])} ({c['detail'].split(' (')[0]})" for c in failed)
        print(f"  {name}: FAIL: {why}. {fix.get(name, '')}")
    elif unsure:
        names = ", ".join(c["name"] for c in unsure)
        print(f"  {name}: inconclusive ({names}): the 95% interval straddles the threshold, no evidence it is crossed")
    else:
        print(f"  {name}: PASS")
PY
case $rc in
  0) verdict="PASS (exit 0): no variant is measurably worse than its source on $((TEST_PER_CLASS * 10)) held-out photos" ;;
  1) verdict="FAIL (exit 1): a variant is measurably worse (lines above, $RUN/parity.md); deploy one that passes" ;;
  *) verdict="ERROR (exit $rc): see the Error: line above" ;;
esac
echo "parity gate: $verdict" >&2
echo "report: $RUN/report.html (one page: data, training, test, variants side by side, which file to deploy)" >&2
echo "$RUN"
