#!/usr/bin/env bash
# cli_run.sh: `onnxq run` as a user runs it: outputs written as .npy, the
# BatchNormalization folding and the Conv fusion it does by default agree
# with the graph run as stored (--no-fold, --no-fuse), and bad input is
# refused with a message.
#   bash cli_run.sh <onnxq> <shared-dir>
set -u
ONNXQ=$1
SHARED=$2
M=$SHARED/models
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
check() { # name, command...
  local name=$1
  shift
  if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $name"; fi
}
# cmp_out A.npy B.npy JS-CONDITION over r = {rows, top1_agreement, max_abs_diff, finite}
cmp_out() {
  node "$HERE/serve_top1.js" "$1" "$2" 0 >"$TMP/cmp.json" &&
    node -e "const r = JSON.parse(require('fs').readFileSync('$TMP/cmp.json')); process.exit(($3) ? 0 : 1)"
}

MODEL=$M/fmnist/fmnist_cnn_bn.onnx
IN=$M/fmnist/calib_input.npy # [N, 1, 28, 28] float32
"$ONNXQ" run "$MODEL" "$IN" -o "$TMP/fold" --time 2 >"$TMP/out.txt" 2>"$TMP/err.txt"
check "run exits 0" test $? -eq 0
check "latency printed" grep -q "latency over 2 runs: median" "$TMP/out.txt"
check "output written" test -s "$TMP/fold/logits.npy"
check "the model's 3 BatchNormalization folded" grep -q "folded 3 BatchNormalization into Conv" "$TMP/err.txt"
"$ONNXQ" run "$MODEL" "$IN" -o "$TMP/asis" --time 2 --no-fold >"$TMP/out2.txt" 2>"$TMP/err2.txt"
check "--no-fold exits 0" test $? -eq 0
check "--no-fold folds nothing" sh -c "! grep -q folded '$TMP/err2.txt'"
check "folded and stored graphs agree" cmp_out "$TMP/asis/logits.npy" "$TMP/fold/logits.npy" \
  "r.finite && r.top1_agreement === 1 && r.max_abs_diff < 1e-3"

# a model without BatchNormalization runs the same either way
"$ONNXQ" run "$M/fmnist/fmnist_cnn.onnx" "$IN" -o "$TMP/plain" >/dev/null 2>"$TMP/err3.txt"
check "plain model runs" test -s "$TMP/plain/logits.npy"
check "plain model: nothing to fold" sh -c "! grep -q folded '$TMP/err3.txt'"

# fusion (on by default): ppocr_cls's Conv -> Relu, Conv -> Add and its
# HardSwish spelled Add/Clip/Mul/Div run inside the Convs; the outputs are
# the unfused graph's (the same float operations in the same order)
PP=$M/ppocr_cls
"$ONNXQ" run "$PP/model.onnx" "$PP/calib_input.npy" -o "$TMP/fused" >/dev/null 2>&1
check "fused run exits 0" test -s "$TMP/fused/softmax_0.tmp_0.npy"
"$ONNXQ" run "$PP/model.onnx" "$PP/calib_input.npy" -o "$TMP/unfused" --no-fuse >/dev/null 2>&1
check "--no-fuse run exits 0" test -s "$TMP/unfused/softmax_0.tmp_0.npy"
check "fused and unfused outputs agree" cmp_out "$TMP/unfused/softmax_0.tmp_0.npy" "$TMP/fused/softmax_0.tmp_0.npy" \
  "r.finite && r.top1_agreement === 1 && r.max_abs_diff < 1e-6"

# --profile: time per op type; every op of the model is listed once, fused
# chains under their joined name
"$ONNXQ" run "$M/fmnist/fmnist_cnn.onnx" "$IN" --time 3 --profile >"$TMP/prof.txt" 2>/dev/null
check "profile exits 0" test $? -eq 0
check "profile header" grep -q "^op  *nodes  *ms/run  *share" "$TMP/prof.txt"
check "profile: 3 Conv+Relu nodes" grep -Eq "^Conv\+Relu +3 +[0-9.]+ +[0-9.]+%" "$TMP/prof.txt"
check "profile: only the Gemm's Relu left on its own" grep -Eq "^Relu +1 " "$TMP/prof.txt"
"$ONNXQ" run "$M/fmnist/fmnist_cnn.onnx" "$IN" --time 3 --profile --no-fuse >"$TMP/prof_nf.txt" 2>/dev/null
check "profile --no-fuse: 3 Conv nodes" grep -Eq "^Conv +3 +[0-9.]+ +[0-9.]+%" "$TMP/prof_nf.txt"
check "profile --no-fuse: 4 Relu on their own" grep -Eq "^Relu +4 " "$TMP/prof_nf.txt"
"$ONNXQ" run "$PP/model.onnx" "$PP/calib_input.npy" --time 2 --profile >"$TMP/prof_pp.txt" 2>/dev/null
check "profile: ppocr's 18 HardSwish chains fused" grep -Eq "^Conv\+Add\+Clip\+Mul\+Div +18 " "$TMP/prof_pp.txt"
check "profile: 2 Gemm nodes" grep -Eq "^Gemm +2 " "$TMP/prof.txt"
check "profile: shares add up to at most 100%" awk '/^$/ { exit } /%$/ { s += $4 } END { exit !(s > 50 && s <= 100.5) }' "$TMP/prof.txt"
# then the slowest nodes, slowest first, each labelled with its op
check "profile: slowest nodes table" grep -q "^slowest nodes  *ms/run  *share" "$TMP/prof.txt"
check "profile: slowest nodes name their op" grep -Eq "\((Conv|Gemm)\) +[0-9.]+ +[0-9.]+%$" "$TMP/prof.txt"
check "profile: slowest nodes in order" awk 'f && /%$/ { v = $(NF-1); if (n++ && v > last + 1e-9) bad = 1; last = v } /^slowest/ { f = 1 } END { exit bad || n < 3 }' "$TMP/prof.txt"

# refusals
"$ONNXQ" run "$MODEL" "$M/ppocr_cls/calib_input.npy" >/dev/null 2>"$TMP/bad.txt"
check "wrong input shape refused" test $? -ne 0
check "refusal names the input" grep -q "input" "$TMP/bad.txt"
"$ONNXQ" run "$TMP/missing.onnx" "$IN" >/dev/null 2>&1
check "missing model refused" test $? -ne 0

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
