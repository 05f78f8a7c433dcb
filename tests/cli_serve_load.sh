#!/usr/bin/env bash
# cli_serve_load.sh: the daemon under concurrent and misbehaving clients:
# 4 jobs at once on 2 workers, a full queue (429 + Retry-After), clients
# that hang up mid-upload or while waiting on /v1/quantize, a client
# streaming far more than a rejected request is worth (cut off), and the
# connection limit, idle timeout and header size limit.
# Usage: bash cli_serve_load.sh <onnxq> <shared-dir>
set -u
ONNXQ=${1:?usage: cli_serve_load.sh <path-to-onnxq> <shared-dir>}
SHARED=${2:?usage: cli_serve_load.sh <path-to-onnxq> <shared-dir>}
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$SHARED/models/fmnist/fmnist_cnn.onnx
CALIB=$SHARED/models/fmnist/calib_input.npy
SLOW=$SHARED/models/ppocr_cls/model.onnx # a few seconds per job: long enough to act during it
SLOW_CALIB=$SHARED/models/ppocr_cls/calib_input.npy
SLOW_CONFIG='{"mode":"static","threads":1}'
CONFIG='{"mode":"static","max_samples":100}'
JOB_TIMEOUT=${OQ_SERVE_JOB_TIMEOUT:-180}
. "$HERE/serve_lib.sh"

# job_dirs DATA: job folders on disk.
job_dirs() { find "$1/jobs" -mindepth 1 -maxdepth 1 -type d | wc -l; }
# wait_running URL ID: until the job is running (bounded).
wait_running() {
    for _ in $(seq 1 $((JOB_TIMEOUT * 10))); do
        curl -s -o "$TMP/run.json" "$1/v1/jobs/$2"
        [ "$(jfield "$TMP/run.json" state)" = running ] && return 0
        sleep 0.1
    done
    return 1
}

# ---- 4 jobs submitted at once, 2 workers: all succeed ------------------------
start_daemon a --data-dir "$TMP/a" --workers 2 --max-queue 8
A=$URL
CURLS=()
for i in 1 2 3 4; do
    curl -s -o "$TMP/sub$i.json" -w '%{http_code}' -F model=@"$MODEL" -F calibration=@"$CALIB" \
        -F "config=$CONFIG" "$A/v1/jobs" >"$TMP/code$i" &
    CURLS+=($!)
done
wait "${CURLS[@]}" # not a bare wait: the daemon is a child too
for i in 1 2 3 4; do
    expect_eq "concurrent submit $i: status" 202 "$(cat "$TMP/code$i")"
    expect_eq "concurrent job $i: final state" succeeded "$(wait_job "$A" "$(jfield "$TMP/sub$i.json" id)")"
done
req "list after 4 jobs" 200 "$A/v1/jobs"
expect_eq "4 jobs listed" 4 "$(jq '.jobs | length' "$TMP/body")"
# Never more than 2 running: count overlapping [started, finished) intervals.
jq -r '.jobs[] | "\(.started) 1\n\(.finished) -1"' "$TMP/body" | sort | awk '{ c += $2; if (c > m) m = c } END { print m }' >"$TMP/peak"
expect_eq "at most 2 jobs ran at once" 2 "$(cat "$TMP/peak")"
stop_daemon "$PID"
expect_eq "a: exit status" 0 "$STOP_RC"

# ---- a full queue: 429 with Retry-After and the JSON error -------------------
start_daemon b --data-dir "$TMP/b" --workers 1 --max-queue 1 --idle-timeout 30
B=$URL
req "slow job" 202 -F model=@"$SLOW" -F calibration=@"$SLOW_CALIB" -F "config=$SLOW_CONFIG" "$B/v1/jobs"
RUN=$(jfield "$TMP/body" id)
wait_running "$B" "$RUN" && pass || fail "slow job never ran"
req "queued job" 202 -F model=@"$MODEL" -F calibration=@"$CALIB" -F "config=$CONFIG" "$B/v1/jobs"
QUEUED=$(jfield "$TMP/body" id)
req_error "queue full: /v1/jobs" 429 EBUSY -D "$TMP/h429" -F model=@"$MODEL" -F calibration=@"$CALIB" "$B/v1/jobs"
expect_grep "429 has Retry-After" "$TMP/h429" "Retry-After: "
req_error "queue full: /v1/quantize" 429 EBUSY -F model=@"$MODEL" -F calibration=@"$CALIB" "$B/v1/quantize"
expect_eq "refused jobs leave no folders" 2 "$(job_dirs "$TMP/b")"
req "cancel the queued job" 200 -X DELETE "$B/v1/jobs/$QUEUED"
expect_eq "cancelled" cancelled "$(jfield "$TMP/body" state)"

# ---- a client hangs up while waiting on /v1/quantize --------------------------
curl -s -o /dev/null --max-time 1 -F model=@"$SLOW" -F calibration=@"$SLOW_CALIB" \
    -F "config=$SLOW_CONFIG" "$B/v1/quantize"
expect_eq "impatient client: curl timed out" 28 $?
healthy "$B" && pass || fail "daemon unhealthy after a client left /v1/quantize"
req "list" 200 "$B/v1/jobs"
ABANDONED=$(jq -r --arg a "$RUN" --arg b "$QUEUED" '[.jobs[] | select(.id != $a and .id != $b)][0].id' "$TMP/body")
if [[ "$ABANDONED" =~ ^[0-9a-f]{32}$ ]]; then pass; else fail "abandoned /v1/quantize job not listed"; fi
expect_eq "abandoned job still runs to the end" succeeded "$(wait_job "$B" "$ABANDONED")"
expect_eq "first slow job" succeeded "$(wait_job "$B" "$RUN")"
req "abandoned job's model still downloadable" 200 "$B/v1/jobs/$ABANDONED/model"
wait_for "abandoned request logged as aborted" 10 grep -q "path=\"/v1/quantize\".*job=$ABANDONED aborted=1" "$TMP/b.log"

# ---- a client hangs up in the middle of an upload -----------------------------
head -c $((16 * 1024 * 1024)) /dev/urandom >"$TMP/big.onnx"
curl -s -o /dev/null --limit-rate 2M --max-time 1 -F model=@"$TMP/big.onnx" -F calibration=@"$CALIB" "$B/v1/jobs"
expect_eq "mid-upload hang-up: curl timed out" 28 $?
curl -s -o /dev/null --limit-rate 2M --max-time 1 -F model=@"$TMP/big.onnx" "$B/v1/inspect"
expect_eq "mid-upload hang-up (inspect): curl timed out" 28 $?
wait_for "mid-upload: the reserved folder is removed" 10 test "$(job_dirs "$TMP/b")" -eq 3
wait_for "mid-upload: inspect scratch removed" 10 test "$(find "$TMP/b/tmp" -mindepth 1 | wc -l)" -eq 0
healthy "$B" && pass || fail "daemon unhealthy after a mid-upload hang-up"
left=$(find "$TMP/b/jobs" -name 'upload' -o -name '*.tmp.*' | wc -l)
expect_eq "no uploads or temp files after the jobs ended" 0 "$left"

# ---- a rejected request streaming far too much is cut off -----------------------
# 415 is decided from the headers; without "Expect: 100-continue" the client
# sends its body anyway: the daemon reads at most a few MiB of it.
head -c $((256 * 1024 * 1024)) /dev/zero | curl -s -o /dev/null --max-time 60 -X POST -T - -H 'Expect:' \
    -H 'Content-Type: application/octet-stream' "$B/v1/jobs"
rc=$?
if [ "$rc" -ne 28 ]; then pass; else fail "discard cap: the 256 MiB upload was read until the timeout"; fi
wait_for "discard cap: logged" 10 grep -q 'path="/v1/jobs".*cut=discard-limit' "$TMP/b.log"
bytes=$(grep 'cut=discard-limit' "$TMP/b.log" | tail -1 | grep -o 'bytes_in=[0-9]*' | cut -d= -f2)
if [ -n "$bytes" ] && [ "$bytes" -lt $((32 * 1024 * 1024)) ]; then pass; else fail "discard cap: read $bytes bytes"; fi
healthy "$B" && pass || fail "daemon unhealthy after the discard cap"
stop_daemon "$PID"
expect_eq "b: exit status" 0 "$STOP_RC"

# ---- connection limit, idle timeout, header size ------------------------------
start_daemon c --data-dir "$TMP/c" --max-connections 2 --idle-timeout 2 --max-header-bytes 8K
C=$URL
PORT=${C##*:}
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
exec 4<>"/dev/tcp/127.0.0.1/$PORT"
sleep 0.3
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$C/healthz")
if [ "$code" != 200 ]; then pass; else fail "--max-connections 2: a third connection was served"; fi
# The idle ones are closed after --idle-timeout: then there is room again.
wait_for "idle connections closed, service back" 10 healthy "$C"
exec 3<&- 4<&-
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "X-Big: $(head -c 12000 /dev/zero | tr '\0' a)" "$C/healthz")
if [ "$code" -ge 400 ] && [ "$code" -lt 500 ]; then pass; else fail "header over --max-header-bytes: status $code"; fi
healthy "$C" && pass || fail "daemon unhealthy after an oversized header"
stop_daemon "$PID"
expect_eq "c: exit status" 0 "$STOP_RC"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
