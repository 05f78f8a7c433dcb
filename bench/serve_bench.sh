#!/usr/bin/env bash
# serve_bench.sh: the daemon's figures for issue #5: /healthz under a
# 64-connection wrk load, alone and while quantize jobs run; upload
# throughput of a ~100 MB model on loopback; the daemon's peak RSS (VmHWM,
# reset between phases through /proc/PID/clear_refs) in each phase.
#   bench/serve_bench.sh            (after scripts/setup.sh; needs wrk, curl, jq)
# Env: ONNXQ (default build/cli/onnxq), OQ_SHARED_DIR (../shared),
# BENCH_DIR (/tmp/onnxq-bench; the 102 MB resnet50.onnx of gen_models.py is
# used when present, else a 100 MB file of random bytes), JOBS (4).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${OQ_SHARED_DIR:-../shared}
ONNXQ=${ONNXQ:-build/cli/onnxq}
WORK=${BENCH_DIR:-/tmp/onnxq-bench}
JOBS=${JOBS:-4}
for t in wrk curl jq; do command -v $t >/dev/null || { echo "serve_bench.sh: $t is required (apt-get install $t)" >&2; exit 1; }; done
mkdir -p "$WORK"
BIG=$WORK/resnet50.onnx
if [ ! -f "$BIG" ]; then
  BIG=$WORK/random100m.onnx
  [ -f "$BIG" ] || head -c $((100 * 1024 * 1024)) /dev/urandom >"$BIG"
fi
SLOW=$SHARED/models/ppocr_cls/model.onnx
SLOW_CALIB=$SHARED/models/ppocr_cls/calib_input.npy
DATA=$(mktemp -d)
LOG=$DATA/serve.log
"$ONNXQ" serve --listen 127.0.0.1:0 --data-dir "$DATA/d" --workers "$JOBS" --max-queue 64 2>"$LOG" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do
  PORT=$(head -n 1 "$LOG" | grep -o 'listening on 127\.0\.0\.1:[0-9]*' | cut -d: -f2 || true)
  [ -n "$PORT" ] && break
  sleep 0.1
done
URL=http://127.0.0.1:$PORT
until curl -sf -o /dev/null "$URL/healthz"; do sleep 0.1; done

# Peak RSS of a phase: VmRSS sampled every 10 ms by a background loop
# (/proc/PID/clear_refs cannot reset VmHWM on every kernel).
rss_start() {
  ( m=0; while kill -0 "$PID" 2>/dev/null; do
      r=$(awk '/VmRSS/ { print $2 }' "/proc/$PID/status" 2>/dev/null || echo 0)
      [ "${r:-0}" -gt "$m" ] && { m=$r; echo "$m" >"$DATA/rss"; }
      sleep 0.01
    done ) &
  SAMPLER=$!
}
rss_stop() { kill "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null || true; awk '{ printf "%.1f MiB", $1 / 1024 }' "$DATA/rss"; rm -f "$DATA/rss"; }
hwm() { awk '/VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$PID/status"; }
# wrk_line: requests/s, p50, p99, errors from `wrk --latency` output.
wrk_line() {
  awk '/Requests\/sec/ { rps = $2 } /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 }
       /Socket errors/ { err = $0 } /Non-2xx/ { non2 = $NF }
       END { printf "%s req/s, p50 %s, p99 %s, errors: %s%s\n", rps, p50, p99,
             err == "" ? "none" : err, non2 == "" ? "" : ", non-2xx " non2 }' "$1"
}

echo "onnxq serve benchmark: $(nproc) cores, $(uname -r), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
echo "daemon RSS at start: $(awk '/VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$PID/status")"

# ---- /healthz alone ---------------------------------------------------------
rss_start
wrk -t2 -c64 -d10s --latency "$URL/healthz" >"$DATA/wrk1.txt"
echo "1. /healthz, wrk -t2 -c64 -d10s, idle daemon: $(wrk_line "$DATA/wrk1.txt"); peak RSS $(rss_stop)"

# ---- upload throughput (fresh daemon: nothing else in its heap yet) -----------
# Static mode without calibration is refused only once the body has been
# streamed to disk: pure upload cost (the reserved folder is then removed).
upload() { # FILE -> "HTTP MB/s seconds"
  curl -s -o /dev/null -w '%{http_code} %{speed_upload} %{time_total}' -F model=@"$1" \
    -F 'config={"mode":"static"}' "$URL/v1/jobs" | awk '{ printf "HTTP %s, %.1f MB/s, %.2f s", $1, $2 / 1e6, $3 }'
}
SMALL=$DATA/small10m.onnx
head -c $((10 * 1024 * 1024)) "$BIG" >"$SMALL"
rss_start
echo "2. upload of 10 MiB to POST /v1/jobs (streamed to disk, then 422): $(upload "$SMALL"); peak RSS $(rss_stop)"
for i in 1 2 3; do
  rss_start
  echo "   upload of $(basename "$BIG") ($(stat -c %s "$BIG") bytes), run $i: $(upload "$BIG"); peak RSS $(rss_stop)"
done
rss_start
out=$(curl -s -o /dev/null -w '%{http_code} %{speed_upload} %{time_total}' -F model=@"$BIG" "$URL/v1/inspect")
echo "$out" | awk '{ printf "   POST /v1/inspect (upload + parse in memory): HTTP %s, %.1f MB/s, %.2f s", $1, $2 / 1e6, $3 }'
echo "; peak RSS $(rss_stop)"

# ---- /healthz while jobs run ----------------------------------------------------
# Enough ppocr_cls jobs (threads 1 each) that $JOBS run during the whole wrk window.
for i in $(seq 1 $((JOBS * 6))); do
  curl -sf -o /dev/null -F model=@"$SLOW" -F calibration=@"$SLOW_CALIB" -F 'config={"mode":"static","threads":1}' "$URL/v1/jobs"
done
sleep 1
running_before=$(curl -s "$URL/v1/jobs" | jq '[.jobs[] | select(.state == "running")] | length')
rss_start
wrk -t2 -c64 -d10s --latency "$URL/healthz" >"$DATA/wrk2.txt"
peak=$(rss_stop)
running_after=$(curl -s "$URL/v1/jobs" | jq '[.jobs[] | select(.state == "running")] | length')
echo "3. /healthz, wrk -t2 -c64 -d10s, $running_before jobs running at start, $running_after at end: $(wrk_line "$DATA/wrk2.txt"); peak RSS $peak"
while [ "$(curl -s "$URL/v1/jobs" | jq '[.jobs[] | select(.state == "running" or .state == "queued")] | length')" != 0 ]; do sleep 0.5; done
echo "   jobs: $(curl -s "$URL/v1/jobs" | jq -c '[.jobs[].state] | group_by(.) | map({(.[0]): length}) | add'); daemon VmHWM over the whole run $(hwm)"
