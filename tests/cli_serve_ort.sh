#!/usr/bin/env bash
# cli_serve_ort.sh: the daemon's results are real models: fmnist_cnn is
# quantized through POST /v1/jobs (poll, download) and through the
# synchronous POST /v1/quantize, and both INT8 models are run in ONNX
# Runtime and compared with the FP32 model (top-1 agreement on rows the
# calibration did not see). Also POST /v1/inspect against `onnxq inspect`.
# Usage: bash cli_serve_ort.sh <onnxq> <shared-dir>
set -u
ONNXQ=${1:?usage: cli_serve_ort.sh <path-to-onnxq> <shared-dir>}
SHARED=${2:?usage: cli_serve_ort.sh <path-to-onnxq> <shared-dir>}
HERE=$(cd "$(dirname "$0")" && pwd)
ORT=$HERE/../tools/ort/ort_tool.js
MODEL=$SHARED/models/fmnist/fmnist_cnn.onnx
CALIB=$SHARED/models/fmnist/calib_input.npy
CALIB_ROWS=200 # rows 200.. of calib_input.npy are held out
CONFIG="{\"mode\":\"static\",\"max_samples\":$CALIB_ROWS}"
JOB_TIMEOUT=${OQ_SERVE_JOB_TIMEOUT:-120}
. "$HERE/serve_lib.sh"

command -v node >/dev/null && [ -d "$HERE/../tools/ort/node_modules/onnxruntime-node" ] ||
    { echo "cli_serve_ort.sh: node and tools/ort/node_modules (scripts/setup.sh) are required" >&2; exit 1; }

# ort_check DESC MODEL: runs MODEL in ONNX Runtime over calib_input.npy and
# compares with the FP32 outputs.
ort_check() {
    local desc=$1 m=$2
    if ! node "$ORT" run "$m" "$CALIB" 100 "$TMP/out.npy" 2>"$TMP/ort.err"; then
        fail "$desc: ONNX Runtime cannot run it: $(head -c 300 "$TMP/ort.err")"
        return
    fi
    pass
    node "$HERE/serve_top1.js" "$TMP/ref.npy" "$TMP/out.npy" "$CALIB_ROWS" >"$TMP/cmp.json"
    expect_eq "$desc: outputs finite" true "$(jfield "$TMP/cmp.json" finite)"
    local agree
    agree=$(jfield "$TMP/cmp.json" top1_agreement)
    if awk -v a="$agree" 'BEGIN { exit !(a >= 0.97) }'; then pass; else fail "$desc: top-1 agreement with FP32 $agree < 0.97"; fi
    echo "$desc: $(cat "$TMP/cmp.json")"
}

node "$ORT" run "$MODEL" "$CALIB" 100 "$TMP/ref.npy" || { echo "cli_serve_ort.sh: FP32 reference run failed" >&2; exit 1; }

start_daemon a --data-dir "$TMP/data" --workers 1
A=$URL

# ---- POST /v1/jobs, poll, download, run in ORT --------------------------------
req "POST /v1/jobs" 202 -F model=@"$MODEL" -F calibration=@"$CALIB" -F "config=$CONFIG" "$A/v1/jobs"
ID=$(jfield "$TMP/body" id)
expect_eq "/v1/jobs: final state" succeeded "$(wait_job "$A" "$ID")"
req "GET model" 200 "$A/v1/jobs/$ID/model"
cp "$TMP/body" "$TMP/jobs.int8.onnx"
ort_check "/v1/jobs model" "$TMP/jobs.int8.onnx"

# ---- POST /v1/quantize: the model in the answer --------------------------------
code=$(curl -s -D "$TMP/qh" -o "$TMP/sync.int8.onnx" -w '%{http_code}' --max-time 120 \
    -F model=@"$MODEL" -F calibration=@"$CALIB" -F "config=$CONFIG" "$A/v1/quantize")
expect_eq "/v1/quantize: status" 200 "$code"
expect_grep "/v1/quantize: content type" "$TMP/qh" "Content-Type: application/octet-stream"
expect_grep "/v1/quantize: attachment" "$TMP/qh" 'Content-Disposition: attachment; filename="model.int8.onnx"'
QID=$(grep -i '^X-Onnxq-Job-Id:' "$TMP/qh" | tr -d '\r' | awk '{print $2}')
if [[ "$QID" =~ ^[0-9a-f]{32}$ ]]; then pass; else fail "/v1/quantize: no X-Onnxq-Job-Id ($QID)"; fi
expect_grep "/v1/quantize: job url header" "$TMP/qh" "X-Onnxq-Job-Url: /v1/jobs/$QID"
ort_check "/v1/quantize model" "$TMP/sync.int8.onnx"
req "/v1/quantize: its job is listed" 200 "$A/v1/jobs/$QID"
expect_eq "/v1/quantize: job succeeded" succeeded "$(jfield "$TMP/body" state)"
req "/v1/quantize: report downloadable" 200 "$A/v1/jobs/$QID/report"
outs=$(jfield "$TMP/body" evaluation outputs)
if [ -n "$outs" ] && [ "$outs" != null ] && [ "$outs" != "[]" ]; then pass; else fail "/v1/quantize: report has no evaluation"; fi
req "/v1/quantize: same bytes as GET model" 200 "$A/v1/jobs/$QID/model"
if cmp -s "$TMP/body" "$TMP/sync.int8.onnx"; then pass; else fail "/v1/quantize: answer differs from /model"; fi
[ -e "$TMP/data/jobs/$QID/upload" ] && fail "uploads kept after the job ended" || pass

# ---- /v1/quantize failures carry the job's error and status -------------------
head -c 4096 /dev/urandom >"$TMP/random.onnx"
req_error "/v1/quantize: invalid model" 422 EMODEL -F model=@"$TMP/random.onnx" -F calibration=@"$CALIB" "$A/v1/quantize"
# The quantizer reports a shape mismatch as EINVAL (400), naming the input.
req_error "/v1/quantize: calibration for another model" 400 EINVAL -F model=@"$MODEL" \
    -F calibration=@"$SHARED/models/ppocr_cls/calib_input.npy" -F "config=$CONFIG" "$A/v1/quantize"
expect_grep "/v1/quantize: mismatch names the input" "$TMP/body" "input 'input'"
req_error "/v1/quantize: bad config" 400 EINVAL -F model=@"$MODEL" -F 'config={"mode":"nope"}' "$A/v1/quantize"
req_error "/v1/quantize: GET" 405 EMETHOD "$A/v1/quantize"

# ---- POST /v1/inspect -----------------------------------------------------------
req "/v1/inspect: good model" 200 -F model=@"$MODEL" "$A/v1/inspect"
cp "$TMP/body" "$TMP/inspect.json"
expect_eq "/v1/inspect: ir_version" 7 "$(jfield "$TMP/inspect.json" ir_version)"
expect_eq "/v1/inspect: default_opset" 13 "$(jfield "$TMP/inspect.json" default_opset)"
expect_eq "/v1/inspect: input name" input "$(jfield "$TMP/inspect.json" inputs 0 name)"
expect_eq "/v1/inspect: Conv count" 3 "$(jfield "$TMP/inspect.json" nodes by_op_type Conv)"
"$ONNXQ" inspect --json "$MODEL" >"$TMP/cli.json"
if [ "$(jq -S . "$TMP/inspect.json")" == "$(jq -S . "$TMP/cli.json")" ]; then pass; else fail "/v1/inspect differs from onnxq inspect --json"; fi
req_error "/v1/inspect: garbage" 422 EMODEL -F model=@"$TMP/random.onnx" "$A/v1/inspect"
expect_no_grep "/v1/inspect: no server path in the error" "$TMP/body" "$TMP"
req_error "/v1/inspect: no model field" 400 EINVAL -F other=@"$MODEL" "$A/v1/inspect"
req_error "/v1/inspect: not multipart" 415 EMEDIATYPE --data-binary @"$MODEL" "$A/v1/inspect"
left=$(find "$TMP/data/tmp" -mindepth 1 | wc -l)
expect_eq "/v1/inspect: temp files removed" 0 "$left"

stop_daemon "$PID"
expect_eq "SIGTERM: exit status" 0 "$STOP_RC"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
