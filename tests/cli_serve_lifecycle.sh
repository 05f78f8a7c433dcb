#!/usr/bin/env bash
# cli_serve_lifecycle.sh: the daemon's life on one data directory: kill -9
# during a job and restart (the job is failed with a reason, nothing
# half-written is served, no temp files); SIGTERM during a job (it
# completes within the grace period, POSTs get 503 while draining, exit 0);
# SIGTERM with no grace (the running job is stopped and recorded failed, the
# queued one stays queued and runs after the restart); the job TTL.
# Usage: bash cli_serve_lifecycle.sh <onnxq> <shared-dir>
set -u
ONNXQ=${1:?usage: cli_serve_lifecycle.sh <path-to-onnxq> <shared-dir>}
SHARED=${2:?usage: cli_serve_lifecycle.sh <path-to-onnxq> <shared-dir>}
HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=$SHARED/models/fmnist/fmnist_cnn.onnx
CALIB=$SHARED/models/fmnist/calib_input.npy
CONFIG='{"mode":"static","max_samples":100}'
SLOW=$SHARED/models/ppocr_cls/model.onnx
SLOW_CALIB=$SHARED/models/ppocr_cls/calib_input.npy
SLOW_CONFIG='{"mode":"static","threads":1}'
JOB_TIMEOUT=${OQ_SERVE_JOB_TIMEOUT:-180}
. "$HERE/serve_lib.sh"

wait_running() {
    for _ in $(seq 1 $((JOB_TIMEOUT * 20))); do
        curl -s -o "$TMP/run.json" "$1/v1/jobs/$2"
        [ "$(jfield "$TMP/run.json" state)" = running ] && return 0
        sleep 0.05
    done
    return 1
}

# ---- kill -9 during a running job, restart ----------------------------------
DATA=$TMP/data
start_daemon a --data-dir "$DATA" --workers 1
A=$URL
req "slow job" 202 -F model=@"$SLOW" -F calibration=@"$SLOW_CALIB" -F "config=$SLOW_CONFIG" "$A/v1/jobs"
K=$(jfield "$TMP/body" id)
req "queued behind it" 202 -F model=@"$MODEL" -F calibration=@"$CALIB" -F "config=$CONFIG" "$A/v1/jobs"
KQ=$(jfield "$TMP/body" id)
wait_running "$A" "$K" && pass || fail "slow job never ran"
# While it runs, GET shows the stage and the calibration samples done of
# total (ppocr_cls calibration data: 64 samples). Calibration takes ~0.4 s
# in a release build: poll fast, save what was seen, kill, then check.
calibrating=0
for _ in $(seq 1 3000); do
    curl -s -o "$TMP/run.json" "$A/v1/jobs/$K"
    [ "$(jq -r '[.timings.stages[] | select(.name == "calibrate")][0].done // 0' "$TMP/run.json")" -ge 1 ] &&
        { calibrating=1; break; }
    sleep 0.02
done
curl -s -o "$TMP/q.json" "$A/v1/jobs/$KQ"
kill -KILL "$PID"
wait "$PID" 2>/dev/null
expect_eq "running job: calibration seen under way" 1 "$calibrating"
expect_eq "running job: state" running "$(jfield "$TMP/run.json" state)"
expect_eq "running job: calibration total" 64 "$(stage_field "$TMP/run.json" calibrate total)"
pycheck "running job: stage, progress and timings agree" \
    'f[0]["stage"] != "calibrate" or (f[0]["progress"]["total"] == 64 and 1 <= f[0]["progress"]["done"] <= 64)' "$TMP/run.json"
pycheck "running job: run_s runs, stages so far in order" \
    'f[0]["timings"]["run_s"] > 0 and [s["name"] for s in f[0]["timings"]["stages"]][:3] == ["load", "prepare", "calibrate"]' "$TMP/run.json"
pycheck "queued job: no run yet" \
    'f[0]["state"] == "queued" and f[0]["timings"]["run_s"] is None and f[0]["timings"]["stages"] == [] and f[0]["timings"]["queued_s"] > 0' "$TMP/q.json"
# What a crash in the middle of an atomic write leaves behind.
printf 'half' >"$DATA/jobs/$K/model.int8.onnx.tmp.AbC123"
printf 'half' >"$DATA/jobs/$K/model.int8.onnx"
start_daemon a2 --data-dir "$DATA" --workers 1
A=$URL
req "after kill -9: the job" 200 "$A/v1/jobs/$K"
expect_eq "after kill -9: failed" failed "$(jfield "$TMP/body" state)"
expect_eq "after kill -9: reason" "interrupted by a restart" "$(jfield "$TMP/body" error message)"
curl -s -o "$TMP/m.txt" "$A/metrics"
expect_eq "after kill -9: a run this process did not make is not observed" 0 \
    "$(metric "$TMP/m.txt" 'onnxq_job_duration_seconds_count{state="failed"}')"
code=$(curl -s -o "$TMP/body" -w '%{http_code}' "$A/v1/jobs/$K/model")
if [ "$code" = 404 ] || [ "$code" = 409 ]; then pass; else fail "after kill -9: /model answered $code"; fi
expect_no_grep "after kill -9: the half-written model is not served" "$TMP/body" "half"
left=$(find "$DATA/jobs/$K" -name '*.tmp.*' -o -name 'model.int8.onnx' -o -name upload | wc -l)
expect_eq "after kill -9: temp files, partial model and upload removed" 0 "$left"
expect_eq "after kill -9: the queued job runs after the restart" succeeded "$(wait_job "$A" "$KQ")"
expect_grep "log: queued job taken up again" "$TMP/a2.log" "job=$KQ msg=\"queued again\""

# ---- SIGTERM during a job: it completes, POSTs get 503, exit 0 ---------------
req "slow job before SIGTERM" 202 -F model=@"$SLOW" -F calibration=@"$SLOW_CALIB" -F "config=$SLOW_CONFIG" "$A/v1/jobs"
T=$(jfield "$TMP/body" id)
wait_running "$A" "$T" && pass || fail "slow job never ran"
kill -TERM "$PID"
wait_for "drain logged" 10 grep -q "event=drain" "$TMP/a2.log"
req_error "draining: POST /v1/jobs" 503 EUNAVAILABLE -D "$TMP/h503" -F model=@"$MODEL" -F calibration=@"$CALIB" "$A/v1/jobs"
expect_grep "503 has Retry-After" "$TMP/h503" "Retry-After: "
req_error "draining: /readyz" 503 EUNAVAILABLE "$A/readyz"
req "draining: jobs can still be polled" 200 "$A/v1/jobs/$T"
stop_daemon "$PID" # already signalled: waits for the exit
expect_eq "SIGTERM during a job: exit status" 0 "$STOP_RC"
expect_grep "log: the drain" "$TMP/a2.log" "event=drain running=1"
expect_grep "log: the job finished during the drain" "$TMP/a2.log" "job=$T state=succeeded"
expect_grep "log: stopped" "$TMP/a2.log" 'event=stop msg="stopped"'

# ---- SIGTERM with --grace 0: running job stopped, queued job kept ------------
start_daemon b --data-dir "$DATA" --workers 1 --grace 0
A=$URL
req "after restart: the job finished in the drain" 200 "$A/v1/jobs/$T"
expect_eq "after restart: it succeeded" succeeded "$(jfield "$TMP/body" state)"
req "after restart: its model" 200 "$A/v1/jobs/$T/model"
req "slow job" 202 -F model=@"$SLOW" -F calibration=@"$SLOW_CALIB" -F "config=$SLOW_CONFIG" "$A/v1/jobs"
G=$(jfield "$TMP/body" id)
wait_running "$A" "$G" && pass || fail "slow job never ran"
req "queued behind it" 202 -F model=@"$MODEL" -F calibration=@"$CALIB" -F "config=$CONFIG" "$A/v1/jobs"
GQ=$(jfield "$TMP/body" id)
# A /v1/quantize client waiting on a queued job is answered 503 at shutdown.
curl -s -o "$TMP/sync.json" -w '%{http_code}' --max-time 120 -F model=@"$MODEL" -F calibration=@"$CALIB" \
    -F "config=$CONFIG" "$A/v1/quantize" >"$TMP/sync.code" &
SYNC=$!
wait_for "sync job queued" 10 sh -c "curl -s '$A/v1/jobs' | jq -e '[.jobs[] | select(.state == \"queued\")] | length == 2' >/dev/null"
stop_daemon "$PID"
expect_eq "--grace 0: exit status" 0 "$STOP_RC"
wait "$SYNC"
expect_eq "--grace 0: waiting /v1/quantize answered" 503 "$(cat "$TMP/sync.code")"
expect_eq "--grace 0: its error code" EUNAVAILABLE "$(jfield "$TMP/sync.json" error code)"
expect_grep "log: grace over" "$TMP/b.log" "grace period over"
start_daemon c --data-dir "$DATA" --workers 1
A=$URL
req "stopped job" 200 "$A/v1/jobs/$G"
expect_eq "stopped job: failed" failed "$(jfield "$TMP/body" state)"
msg=$(jfield "$TMP/body" error message)
if [[ "$msg" == "server shutting down"* ]]; then pass; else fail "stopped job: reason '$msg'"; fi
expect_eq "queued job kept and run after restart" succeeded "$(wait_job "$A" "$GQ")"
# Cancelling: a run stopped by DELETE is observed as cancelled in the
# duration histogram; a job cancelled while queued never ran and is not.
req "cancel: slow job" 202 -F model=@"$SLOW" -F calibration=@"$SLOW_CALIB" -F "config=$SLOW_CONFIG" "$A/v1/jobs"
CR=$(jfield "$TMP/body" id)
wait_running "$A" "$CR" && pass || fail "cancel: slow job never ran"
req "cancel: queued behind it" 202 -F model=@"$MODEL" -F calibration=@"$CALIB" -F "config=$CONFIG" "$A/v1/jobs"
CQ=$(jfield "$TMP/body" id)
req "cancel: DELETE the queued job" 200 -X DELETE "$A/v1/jobs/$CQ"
req "cancel: DELETE the running job" 202 -X DELETE "$A/v1/jobs/$CR"
expect_eq "cancel: the run ends cancelled" cancelled "$(wait_job "$A" "$CR")"
req "cancel: metrics" 200 "$A/metrics"
check_metrics "$TMP/body" >"$TMP/check.out" && pass || fail "cancel: metrics format: $(cat "$TMP/check.out")"
expect_eq "cancel: both jobs cancelled" 2 "$(metric "$TMP/body" 'onnxq_jobs{state="cancelled"}')"
expect_eq "cancel: one cancelled run observed" 1 "$(metric "$TMP/body" 'onnxq_job_duration_seconds_count{state="cancelled"}')"
grep -q " event=job job=$CR state=cancelled ms=[0-9]* code=ECANCELLED" "$TMP/c.log" && pass ||
    fail "cancel: log line of the cancelled run"
grep -q " event=job job=$CQ state=cancelled code=ECANCELLED" "$TMP/c.log" && pass ||
    fail "cancel: log line of the cancelled queued job (no ms: it never ran)"
check_log "$TMP/c.log"
stop_daemon "$PID"
expect_eq "c: exit status" 0 "$STOP_RC"
# the shutdown is logged in the same format as everything else
check_log "$TMP/c.log"
expect_grep "c: shutdown logged" "$TMP/c.log" ' event=stop msg="stopped"'


# ---- TTL: finished jobs expire --------------------------------------------------
start_daemon d --data-dir "$TMP/ttl" --workers 1 --job-ttl 1
A=$URL
req "ttl job" 202 -F model=@"$MODEL" -F calibration=@"$CALIB" -F "config=$CONFIG" "$A/v1/jobs"
E=$(jfield "$TMP/body" id)
expect_eq "ttl job: succeeded" succeeded "$(wait_job "$A" "$E")"
gone() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$A/v1/jobs/$E")" = 404 ]; }
wait_for "ttl 1 s: the job disappears" 10 gone
req "ttl: list empty" 200 "$A/v1/jobs"
expect_eq "ttl: nothing listed" "[]" "$(jfield "$TMP/body" jobs)"
[ -e "$TMP/ttl/jobs/$E" ] && fail "ttl: the job folder remains" || pass
expect_grep "log: expiry" "$TMP/d.log" "job=$E state=succeeded msg=\"expired"
stop_daemon "$PID"
# Leftovers: jobs that expired while the daemon was down go at startup.
start_daemon e --data-dir "$DATA" --workers 1 --job-ttl 1
A=$URL
req "startup sweep: list" 200 "$A/v1/jobs"
expect_eq "startup sweep: old jobs removed" "[]" "$(jfield "$TMP/body" jobs)"
stop_daemon "$PID"
# --job-ttl 0 keeps jobs forever.
start_daemon f --data-dir "$TMP/keep" --workers 1 --job-ttl 0
A=$URL
req "ttl 0 job" 202 -F model=@"$MODEL" -F calibration=@"$CALIB" -F "config=$CONFIG" "$A/v1/jobs"
E=$(jfield "$TMP/body" id)
expect_eq "ttl 0: succeeded" succeeded "$(wait_job "$A" "$E")"
sleep 1.5
req "ttl 0: still there" 200 "$A/v1/jobs/$E"
stop_daemon "$PID"
expect_eq "f: exit status" 0 "$STOP_RC"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
