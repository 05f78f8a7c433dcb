#!/usr/bin/env bash
# cli_quantize.sh: `onnxq quantize` from the command line, as a user runs it:
# a model, calibration data, labels and a report; and its refusals.
#   bash cli_quantize.sh <onnxq> <shared-dir>
set -u
ONNXQ=$1
SHARED=$2
M=$SHARED/models
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
check() { # name, command...
  local name=$1
  shift
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name"; fi
}
json() { # file, python expression over r
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$1"
}

# mnist-8 (IR 3, opset 8) with labels: accuracy before and after.
"$ONNXQ" quantize "$M/mnist-8/model.onnx" -o "$TMP/m8.onnx" --calib "$M/mnist-8/calib_input.npy" \
  --labels "$M/data/mnist/mnist_labels.npy" --report "$TMP/m8.json" >"$TMP/out.txt" 2>"$TMP/err.txt"
check "quantize exits 0" test $? -eq 0
check "summary printed" grep -q "top-1 agreement" "$TMP/out.txt"
check "model written" test -s "$TMP/m8.onnx"
check "model inspects" sh -c "'$ONNXQ' inspect '$TMP/m8.onnx' >/dev/null"
check "model has QuantizeLinear" sh -c "'$ONNXQ' inspect '$TMP/m8.onnx' | grep -q QuantizeLinear"
check "opset raised to 13" json "$TMP/m8.json" "r['prepare']['opset_before'] == 8 and r['prepare']['opset_after'] == 13"
check "measured on calibration data, said so" json "$TMP/m8.json" \
  "r['evaluation']['dataset'] == 'calibration' and 'note' in r['evaluation']"
check "accuracy with labels" json "$TMP/m8.json" \
  "r['evaluation']['outputs'][0]['fp32_accuracy'] > 0.95 and r['evaluation']['outputs'][0]['int8_accuracy'] > 0.95"
check "sqnr and cosine" json "$TMP/m8.json" \
  "r['evaluation']['outputs'][0]['sqnr_db'] > 20 and r['evaluation']['outputs'][0]['cosine'] > 0.99"
check "per-layer entries" json "$TMP/m8.json" "len(r['evaluation']['layers']) > 5"
check "size shrank" json "$TMP/m8.json" "r['model']['size_ratio'] < 0.6"
check "decisions with reasons" json "$TMP/m8.json" \
  "r['nodes']['quantized'] > 0 and all('reason' in d for d in r['nodes']['decisions'])"
check "calibration samples" json "$TMP/m8.json" "r['calibration']['samples'] == 500"

# Options and exclusions reach the report; dynamic mode needs no calibration.
"$ONNXQ" quantize "$M/fmnist/fmnist_cnn.onnx" -o "$TMP/c.onnx" --calib "$M/fmnist/calib_input.npy" \
  --samples 100 --eval-samples 100 --method percentile --per-tensor --exclude-op-types Gemm \
  --report "$TMP/c.json" >/dev/null 2>&1
check "options run" test $? -eq 0
check "options recorded" json "$TMP/c.json" \
  "r['config']['method'] == 'percentile' and r['config']['per_channel'] is False and r['calibration']['samples'] == 100"
check "excluded Gemm reported" json "$TMP/c.json" \
  "any(d['op_type'] == 'Gemm' and not d['quantized'] for d in r['nodes']['decisions'])"
"$ONNXQ" quantize "$M/fmnist/fmnist_cnn.onnx" -o "$TMP/d.onnx" --mode dynamic --calib "$M/fmnist/calib_input.npy" \
  --eval-samples 50 >/dev/null 2>&1
check "dynamic mode" test $? -eq 0
"$ONNXQ" quantize "$M/fmnist/fmnist_cnn.onnx" -o "$TMP/e.onnx" --calib "$M/fmnist/calib_input.npy" \
  --samples 50 --external-data >/dev/null 2>&1
check "external data written" test -s "$TMP/e.onnx.data"
check "external model runs" sh -c "'$ONNXQ' run '$TMP/e.onnx' '$M/fmnist/fmnist_cnn/test_data_set_0/input_0.pb' >/dev/null"

# Refusals: one clear line, non-zero status, no output file.
expect_fail() { # name, status, pattern, command...
  local name=$1 want=$2 pattern=$3
  shift 3
  "$@" >/dev/null 2>"$TMP/err.txt"
  local got=$?
  if [ "$got" -eq "$want" ] && grep -q -- "$pattern" "$TMP/err.txt"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: $name (status $got, stderr: $(head -c 300 "$TMP/err.txt"))"
  fi
}
expect_fail "unknown config key" 2 "config.bogus" \
  "$ONNXQ" quantize "$M/mnist-8/model.onnx" -o "$TMP/x.onnx" --calib "$M/mnist-8/calib_input.npy" --config '{"bogus":1}'
expect_fail "bad method" 2 "config.method" \
  "$ONNXQ" quantize "$M/mnist-8/model.onnx" -o "$TMP/x.onnx" --calib "$M/mnist-8/calib_input.npy" --method magic
expect_fail "bad JSON" 2 "config" \
  "$ONNXQ" quantize "$M/mnist-8/model.onnx" -o "$TMP/x.onnx" --calib "$M/mnist-8/calib_input.npy" --config '{'
expect_fail "missing model" 1 "onnxq:" \
  "$ONNXQ" quantize "$TMP/none.onnx" -o "$TMP/x.onnx" --calib "$M/mnist-8/calib_input.npy"
expect_fail "static without calibration" 1 "calibration" \
  "$ONNXQ" quantize "$M/mnist-8/model.onnx" -o "$TMP/x.onnx"
expect_fail "calibration of the wrong shape" 1 "onnxq:" \
  "$ONNXQ" quantize "$M/mnist-8/model.onnx" -o "$TMP/x.onnx" --calib "$M/ppocr_cls/calib_input.npy"
expect_fail "already quantized" 1 "already contains" \
  "$ONNXQ" quantize "$TMP/m8.onnx" -o "$TMP/x.onnx" --calib "$M/mnist-8/calib_input.npy"
check "no output after refusals" test ! -e "$TMP/x.onnx"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
