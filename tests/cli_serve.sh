#!/usr/bin/env bash
# cli_serve.sh: end-to-end checks of `onnxq serve`: starts the real daemon on
# an ephemeral loopback port with a temporary data dir and drives it with
# curl: a quantize job to success and its downloads, the error contract
# (400/404/405/413/415/422/401), metrics, restart recovery, SIGTERM.
# Helpers: serve_lib.sh. The other cli_serve_*.sh scripts cover the rest.
# Usage: bash cli_serve.sh <onnxq> <shared-dir>
set -u

ONNXQ=${1:?usage: cli_serve.sh <path-to-onnxq> <shared-dir>}
SHARED=${2:?usage: cli_serve.sh <path-to-onnxq> <shared-dir>}
MODEL=$SHARED/models/fmnist/fmnist_cnn.onnx
CALIB=$SHARED/models/fmnist/calib_input.npy
CONFIG='{"mode":"static","max_samples":200}'
JOB_TIMEOUT=${OQ_SERVE_JOB_TIMEOUT:-120}

[ -x "$ONNXQ" ] || { echo "cli_serve.sh: $ONNXQ is not executable" >&2; exit 1; }
for f in "$MODEL" "$CALIB"; do
    [ -f "$f" ] || { echo "cli_serve.sh: missing shared file $f" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "cli_serve.sh: curl is required" >&2; exit 1; }

. "$(dirname "$0")/serve_lib.sh"

DATA=$TMP/data
start_daemon a --data-dir "$DATA" --max-upload 8M --workers 1
A_PID=$PID
A=$URL
expect_grep "log: first line" "$TMP/a.log" "listening on 127.0.0.1:"

# ---- health, version, routing ------------------------------------------------
req "GET /healthz" 200 "$A/healthz"
expect_eq "/healthz body" ok "$(jfield "$TMP/body" status)"
req "GET /readyz" 200 "$A/readyz"
req "GET /v1/version" 200 "$A/v1/version"
expect_eq "/v1/version name" onnxq "$(jfield "$TMP/body" name)"
req_error "unknown route" 404 ENOTFOUND "$A/v2/nothing"
req_error "unknown job id" 404 ENOTFOUND "$A/v1/jobs/0123456789abcdef0123456789abcdef"
req_error "malformed job id" 404 ENOTFOUND "$A/v1/jobs/..%2F..%2Fetc"
req_error "unknown job's model" 404 ENOTFOUND "$A/v1/jobs/0123456789abcdef0123456789abcdef/model"
req_error "PUT /v1/jobs" 405 EMETHOD -X PUT "$A/v1/jobs"

# ---- rejected submissions: nothing is queued, nothing stays on disk ------------
req_error "bad config JSON" 400 EINVAL -F model=@"$MODEL" -F calibration=@"$CALIB" -F 'config={"mode":' "$A/v1/jobs"
expect_eq "bad config JSON: detail" config "$(jfield "$TMP/body" error detail)"
req_error "unknown config key" 400 EINVAL -F model=@"$MODEL" -F calibration=@"$CALIB" \
    -F 'config={"mode":"static","no_such_key":1}' "$A/v1/jobs"
expect_grep "unknown config key: named" "$TMP/body" "no_such_key"
expect_eq "unknown config key: detail" config.no_such_key "$(jfield "$TMP/body" error detail)"
req_error "config not an object" 400 EINVAL -F model=@"$MODEL" -F calibration=@"$CALIB" -F 'config=[1]' "$A/v1/jobs"
req_error "missing model field" 400 EINVAL -F calibration=@"$CALIB" -F "config=$CONFIG" "$A/v1/jobs"
expect_eq "missing model: detail" model "$(jfield "$TMP/body" error detail)"
req_error "static without calibration" 422 EDATA -F model=@"$MODEL" -F "config=$CONFIG" "$A/v1/jobs"
req_error "unknown form field" 400 EINVAL -F model=@"$MODEL" -F weights=@"$CALIB" "$A/v1/jobs"
expect_eq "unknown form field: detail names it" weights "$(jfield "$TMP/body" error detail)"
expect_grep "unknown form field: message names it" "$TMP/body" "'weights'"
req_error "unknown form field (/v1/quantize)" 400 EINVAL -F model=@"$MODEL" -F "config=$CONFIG" \
    -F calibration=@"$CALIB" -F 'mode=static' "$A/v1/quantize"
expect_eq "unknown form field (/v1/quantize): detail" mode "$(jfield "$TMP/body" error detail)"
req_error "unknown form field (/v1/inspect)" 400 EINVAL -F model=@"$MODEL" -F calibration=@"$CALIB" "$A/v1/inspect"
expect_eq "unknown form field (/v1/inspect): detail" calibration "$(jfield "$TMP/body" error detail)"
req_error "unknown config key (/v1/quantize)" 400 EINVAL -F model=@"$MODEL" -F calibration=@"$CALIB" \
    -F 'config={"mode":"static","perchannel":true}' "$A/v1/quantize"
expect_eq "unknown config key: detail is its path" config.perchannel "$(jfield "$TMP/body" error detail)"
req_error "unknown nested config key" 400 EINVAL -F model=@"$MODEL" -F calibration=@"$CALIB" \
    -F 'config={"mode":"static","overrides":[{"tensor":"x","bits":4}]}' "$A/v1/jobs"
expect_eq "unknown nested config key: detail" "config.overrides[0].bits" "$(jfield "$TMP/body" error detail)"
req_error "bad config value" 400 EINVAL -F model=@"$MODEL" -F calibration=@"$CALIB" \
    -F 'config={"mode":"static","per_channel":"yes"}' "$A/v1/jobs"
expect_eq "bad config value: detail" config.per_channel "$(jfield "$TMP/body" error detail)"
req_error "model given twice" 400 EINVAL -F model=@"$MODEL" -F model=@"$MODEL" "$A/v1/jobs"
req_error "not multipart" 415 EMEDIATYPE -H 'Content-Type: application/json' --data '{}' "$A/v1/jobs"
head -c $((9 * 1024 * 1024)) /dev/zero >"$TMP/big.bin"
req_error "upload over --max-upload (Content-Length)" 413 ELIMIT -F model=@"$TMP/big.bin" "$A/v1/jobs"
req_error "upload over --max-upload (chunked, while streaming)" 413 ELIMIT -H 'Transfer-Encoding: chunked' \
    -F model=@"$TMP/big.bin" "$A/v1/jobs"
printf -- '--XYZ\r\nContent-Disposition: form-data; name="model"; filename="m"\r\n\r\nabc' >"$TMP/trunc.body"
req_error "truncated multipart body" 400 EINVAL -H 'Content-Type: multipart/form-data; boundary=XYZ' \
    --data-binary @"$TMP/trunc.body" "$A/v1/jobs"
left=$(find "$DATA/jobs" -mindepth 1 -maxdepth 1 | wc -l)
expect_eq "rejected uploads leave no job folders" 0 "$left"
req "GET /v1/jobs (empty)" 200 "$A/v1/jobs"
expect_eq "no jobs listed" "[]" "$(jfield "$TMP/body" jobs)"

# ---- a job that fails: the error is reported, no server path leaks -----------
head -c 4096 /dev/urandom >"$TMP/random.onnx"
req "POST a random-bytes model" 202 -F model=@"$TMP/random.onnx" -F calibration=@"$CALIB" "$A/v1/jobs"
BAD=$(jfield "$TMP/body" id)
expect_eq "failed job: final state" failed "$(wait_job "$A" "$BAD")"
code=$(jfield "$TMP/job.json" error code)
if [ -n "$code" ] && [ "$code" != null ]; then pass; else fail "failed job: no error code"; fi
expect_no_grep "failed job: message hides the data dir" "$TMP/job.json" "$DATA"
req_error "model of a failed job" 409 EINVAL "$A/v1/jobs/$BAD/model"
req "DELETE a finished job" 204 -X DELETE "$A/v1/jobs/$BAD"
req_error "deleted job is gone" 404 ENOTFOUND "$A/v1/jobs/$BAD"
[ -e "$DATA/jobs/$BAD" ] && fail "deleted job's folder remains" || pass

# ---- /metrics before the real job: the format checker can fail ----------------
req "GET /metrics (before)" 200 "$A/metrics"
cp "$TMP/body" "$TMP/m0"
check_metrics "$TMP/m0" >"$TMP/check.out" && pass || fail "metrics (before) format: $(cat "$TMP/check.out")"
expect_eq "histogram: the failed run observed" 1 "$(metric "$TMP/m0" 'onnxq_job_duration_seconds_count{state="failed"}')"
expect_eq "histogram: nothing succeeded yet" 0 "$(metric "$TMP/m0" 'onnxq_job_duration_seconds_count{state="succeeded"}')"
# Broken copies must be caught: a non-cumulative bucket, a family without
# TYPE, +Inf != _count, a malformed sample line.
sed 's/^\(onnxq_job_duration_seconds_bucket{state="failed",le="3600"}\) 1$/\1 0/' "$TMP/m0" >"$TMP/mbad1"
cp "$TMP/m0" "$TMP/mbad2" && echo 'onnxq_stray 1' >>"$TMP/mbad2"
sed 's/^\(onnxq_job_duration_seconds_count{state="failed"}\) 1$/\1 2/' "$TMP/m0" >"$TMP/mbad3"
sed 's/^onnxq_queue_depth 0$/onnxq_queue_depth{state=queued} 0/' "$TMP/m0" >"$TMP/mbad4"
for b in 1 2 3 4; do
    if cmp -s "$TMP/m0" "$TMP/mbad$b"; then fail "metrics checker self-test $b: the edit did not apply"
    elif check_metrics "$TMP/mbad$b" >/dev/null; then fail "metrics checker self-test $b: a broken file passed"
    else pass; fi
done

# ---- the real thing: quantize fmnist_cnn -------------------------------------
req "POST /v1/jobs fmnist_cnn" 202 -F model=@"$MODEL" -F calibration=@"$CALIB" -F "config=$CONFIG" "$A/v1/jobs"
UPLOAD=$(($(stat -c %s "$MODEL") + $(stat -c %s "$CALIB")))
ID=$(jfield "$TMP/body" id)
expect_eq "202 state" queued "$(jfield "$TMP/body" state)"
expect_eq "202 url" "/v1/jobs/$ID" "$(jfield "$TMP/body" url)"
if [[ "$ID" =~ ^[0-9a-f]{32}$ ]]; then pass; else fail "job id is not 32 hex digits: $ID"; fi
state=$(wait_job "$A" "$ID")
expect_eq "fmnist_cnn job: final state" succeeded "$state"
[ "$state" = succeeded ] || cat "$TMP/job.json" >&2
expect_eq "job progress done == total" "$(jfield "$TMP/job.json" progress total)" "$(jfield "$TMP/job.json" progress done)"
for k in created started finished; do
    if [[ "$(jfield "$TMP/job.json" "$k")" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$ ]]; then pass; else fail "job $k is not ISO-8601"; fi
done
cp "$TMP/job.json" "$TMP/done.json"
expect_eq "timings: the stages, in order" "load prepare calibrate rewrite evaluate save" \
    "$(python3 -c 'import json,sys; print(*[s["name"] for s in json.load(open(sys.argv[1]))["timings"]["stages"]])' "$TMP/done.json")"
expect_eq "timings: calibration samples done" 200 "$(stage_field "$TMP/done.json" calibrate done)"
expect_eq "timings: calibration samples total (max_samples)" 200 "$(stage_field "$TMP/done.json" calibrate total)"
expect_eq "timings: files loaded (model + calibration)" "2 2" \
    "$(stage_field "$TMP/done.json" load done) $(stage_field "$TMP/done.json" load total)"
pycheck "timings: run_s > 0 and queued_s >= 0" 'f[0]["timings"]["run_s"] > 0 and f[0]["timings"]["queued_s"] >= 0' "$TMP/done.json"
pycheck "timings: stage times add up to at most run_s" \
    'sum(s["seconds"] for s in f[0]["timings"]["stages"]) <= f[0]["timings"]["run_s"] + 0.0015' "$TMP/done.json"
req "GET model" 200 -D "$TMP/headers" "$A/v1/jobs/$ID/model"
cp "$TMP/body" "$TMP/model.int8.onnx"
expect_grep "model content type" "$TMP/headers" "application/octet-stream"
"$ONNXQ" inspect --json "$TMP/model.int8.onnx" >"$TMP/inspect.json" 2>"$TMP/inspect.err"
expect_eq "downloaded model: onnxq inspect exit status" 0 $?
expect_grep "downloaded model has QuantizeLinear" "$TMP/inspect.json" '"QuantizeLinear"'
req "GET report" 200 "$A/v1/jobs/$ID/report"
outs=$(jfield "$TMP/body" evaluation outputs)
if [ -n "$outs" ] && [ "$outs" != null ] && [ "$outs" != "[]" ]; then pass; else fail "report has no evaluation.outputs"; fi
req "GET /v1/jobs" 200 "$A/v1/jobs"
expect_eq "list holds the job" "$ID" "$(jfield "$TMP/body" jobs 0 id)"
REPORT_SIZE=$(stat -c %s "$TMP/body")
MODEL_SIZE=$(stat -c %s "$TMP/model.int8.onnx")
req "GET /metrics" 200 "$A/metrics"
cp "$TMP/body" "$TMP/m1"
check_metrics "$TMP/m1" >"$TMP/check.out" && pass || fail "metrics format: $(cat "$TMP/check.out")"
for fam in "onnxq_http_requests_total counter" "onnxq_jobs gauge" "onnxq_queue_depth gauge" \
    "onnxq_job_duration_seconds histogram" "onnxq_job_stage_seconds_total counter" \
    "onnxq_http_received_bytes_total counter" "onnxq_http_sent_bytes_total counter"; do
    expect_grep "metrics: TYPE ${fam% *}" "$TMP/m1" "# TYPE $fam"
    expect_grep "metrics: HELP ${fam% *}" "$TMP/m1" "# HELP ${fam% *} "
done
expect_grep "metrics: requests" "$TMP/m1" "onnxq_http_requests_total{"
expect_grep "metrics: 413s counted" "$TMP/m1" 'code="413"'
expect_grep "metrics: succeeded jobs" "$TMP/m1" 'onnxq_jobs{state="succeeded"} 1'
expect_grep "metrics: queue depth" "$TMP/m1" "onnxq_queue_depth 0"
# The histogram after one succeeded run of run_s seconds (from the job view):
# count +1, each bucket 1 exactly when le >= run_s, the sum is run_s.
H='onnxq_job_duration_seconds'
expect_eq "histogram: succeeded count +1" 1 "$(metric "$TMP/m1" "${H}_count{state=\"succeeded\"}")"
expect_eq "histogram: +Inf bucket" 1 "$(metric "$TMP/m1" "${H}_bucket{state=\"succeeded\",le=\"+Inf\"}")"
expect_eq "histogram: failed count unchanged" 1 "$(metric "$TMP/m1" "${H}_count{state=\"failed\"}")"
RUN_S=$(jfield "$TMP/done.json" timings run_s)
wrong=$(grep "^${H}_bucket{state=\"succeeded\",le=\"[0-9.]*\"}" "$TMP/m1" |
    awk -v r="$RUN_S" '{ match($0, /le="[0-9.]+"/); le = substr($0, RSTART + 4, RLENGTH - 5) + 0;
                         want = (le >= r + 0) ? 1 : 0; if ($2 + 0 != want) print }')
n=$(grep -c "^${H}_bucket{state=\"succeeded\",le=\"[0-9.]*\"}" "$TMP/m1")
expect_eq "histogram: 14 finite buckets" 14 "$n"
expect_eq "histogram: the run lands in the buckets with le >= run_s ($RUN_S s)" "" "$wrong"
sum=$(metric "$TMP/m1" "${H}_sum{state=\"succeeded\"}")
pycheck "histogram: sum $sum == run_s $RUN_S" "abs($sum - $RUN_S) < 1e-6"
cal=$(metric "$TMP/m1" 'onnxq_job_stage_seconds_total{stage="calibrate"}')
pycheck "stage seconds: calibrate $cal == the job's" "abs($cal - $(stage_field "$TMP/done.json" calibrate seconds)) < 1e-6"
# Bytes: the upload counted in, the downloads counted out.
in0=$(metric "$TMP/m0" onnxq_http_received_bytes_total)
in1=$(metric "$TMP/m1" onnxq_http_received_bytes_total)
out0=$(metric "$TMP/m0" onnxq_http_sent_bytes_total)
out1=$(metric "$TMP/m1" onnxq_http_sent_bytes_total)
if [ $((in1 - in0)) -ge "$UPLOAD" ]; then pass; else fail "bytes in grew by $((in1 - in0)) < upload $UPLOAD"; fi
if [ $((out1 - out0)) -ge $((MODEL_SIZE + REPORT_SIZE)) ]; then pass; else
    fail "bytes out grew by $((out1 - out0)) < model $MODEL_SIZE + report $REPORT_SIZE"; fi
curl -s -I -o /dev/null "$A/v1/jobs/$ID/model"
# Counters move when a request completes, just before its log line: wait
# for the lines of the HEAD and of both /metrics so m2 sees them.
settled() { grep -q "method=HEAD path=\"/v1/jobs/$ID/model\"" "$TMP/a.log" &&
    [ "$(grep -c 'path="/metrics"' "$TMP/a.log")" = 2 ]; }
wait_for "HEAD and /metrics logged" 5 settled
curl -s -o "$TMP/m2" "$A/metrics"
expect_eq "HEAD of the model: no body bytes counted" "$out1" \
    "$(($(metric "$TMP/m2" onnxq_http_sent_bytes_total) - $(stat -c %s "$TMP/m1")))"

# ---- structured logs: one line per request and per job state change ------------
check_log "$TMP/a.log"
# Every answered request is one line: the last /metrics saw S requests; S
# plus the two since (HEAD, /metrics) lines are logged.
S=$(awk '/^onnxq_http_requests_total\{/ { s += $2 } END { print s }' "$TMP/m2")
logged() { [ "$(grep -c ' event=request ' "$TMP/a.log")" = $((S + 1)) ]; }
wait_for "log: one line per request ($((S + 1)))" 5 logged
expect_grep "log: request line" "$TMP/a.log" "event=request method=POST path=\"/v1/jobs\" route=\"/v1/jobs\" status=202"
expect_eq "log: the job's state changes" "queued running succeeded" \
    "$(grep " event=job job=$ID state=" "$TMP/a.log" | grep -v ' stage=' | grep -o ' state=[a-z]*' | cut -d= -f2 | xargs)"
expect_eq "log: its stage changes" "load prepare calibrate rewrite evaluate save" \
    "$(grep " event=job job=$ID state=running stage=" "$TMP/a.log" | grep -o ' stage=[a-z]*' | cut -d= -f2 | xargs)"
grep -q " event=job job=$ID state=succeeded ms=[0-9]*$" "$TMP/a.log" && pass || fail "log: the end of the run has its ms"
expect_grep "log: the failed job's line has code and msg" "$TMP/a.log" " event=job job=$BAD state=failed ms="

stop_daemon "$A_PID"
expect_eq "SIGTERM: exit status" 0 "$STOP_RC"

# ---- restart on the same data dir ---------------------------------------------
# A job.json left "running" by a crashed process must come back failed.
GHOST=ffffffffffffffffffffffffffffffff
mkdir -p "$DATA/jobs/$GHOST/upload"
sed -e "s/$ID/$GHOST/g" -e 's/"state": "succeeded"/"state": "running"/' "$DATA/jobs/$ID/job.json" \
    >"$DATA/jobs/$GHOST/job.json"
start_daemon b --data-dir "$DATA"
B_PID=$PID
B=$URL
req "after restart: GET job" 200 "$B/v1/jobs/$ID"
expect_eq "after restart: still succeeded" succeeded "$(jfield "$TMP/body" state)"
cp "$TMP/body" "$TMP/restarted.json"
expect_eq "after restart: calibration progress kept" "200 200" \
    "$(stage_field "$TMP/restarted.json" calibrate done) $(stage_field "$TMP/restarted.json" calibrate total)"
pycheck "after restart: timings kept" 'f[0]["timings"]["run_s"] == f[1]["timings"]["run_s"] and [s["seconds"] for s in f[0]["timings"]["stages"]] == [s["seconds"] for s in f[1]["timings"]["stages"]]' \
    "$TMP/restarted.json" "$TMP/done.json"
req "after restart: GET model" 200 "$B/v1/jobs/$ID/model"
if cmp -s "$TMP/body" "$TMP/model.int8.onnx"; then pass; else fail "after restart: model differs"; fi
req "after restart: list" 200 "$B/v1/jobs"
expect_grep "after restart: job listed" "$TMP/body" "$ID"
req "after restart: interrupted job" 200 "$B/v1/jobs/$GHOST"
expect_eq "interrupted job: failed" failed "$(jfield "$TMP/body" state)"
expect_eq "interrupted job: reason" "interrupted by a restart" "$(jfield "$TMP/body" error message)"
stop_daemon "$B_PID"
expect_eq "SIGTERM after restart: exit status" 0 "$STOP_RC"

# ---- bearer token -------------------------------------------------------------
printf 's3cret-token\n' >"$TMP/token"
start_daemon c --data-dir "$TMP/data-c" --token-file "$TMP/token"
C_PID=$PID
C=$URL
req "token: /healthz stays open" 200 "$C/healthz"
req_error "token: missing" 401 EAUTH "$C/v1/jobs"
req_error "token: wrong" 401 EAUTH -H 'Authorization: Bearer s3cret-tokex' "$C/v1/jobs"
req_error "token: prefix of the right one" 401 EAUTH -H 'Authorization: Bearer s3cret' "$C/v1/jobs"
req_error "token: POST without it" 401 EAUTH -F model=@"$MODEL" -F calibration=@"$CALIB" "$C/v1/jobs"
req_error "token: unknown route hidden" 401 EAUTH "$C/nothing"
req "token: right one" 200 -H 'Authorization: Bearer s3cret-token' "$C/v1/jobs"
left=$(find "$TMP/data-c/jobs" -mindepth 1 -maxdepth 1 | wc -l)
expect_eq "token: unauthenticated upload stored nothing" 0 "$left"
stop_daemon "$C_PID"
expect_eq "token daemon: SIGTERM: exit status" 0 "$STOP_RC"

"$ONNXQ" serve --data-dir "$TMP/d" --listen nonsense >/dev/null 2>"$TMP/err"
expect_eq "bad --listen: exit status" 1 $?
"$ONNXQ" serve --data-dir "$TMP/d" --workers 0 >/dev/null 2>&1
expect_eq "--workers 0: exit status" 2 $?

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
