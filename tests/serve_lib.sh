# serve_lib.sh: helpers shared by the cli_serve*.sh scripts (sourced, not a
# test itself): a temp dir, pass/fail counters, JSON field access, starting
# the real daemon on an ephemeral loopback port and stopping it.
# The sourcing script sets ONNXQ and SHARED first.
TMP=$(mktemp -d)
PIDS=()
declare -A LOGS
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "FAIL: $*" >&2
}
expect_eq() {
    if [ "$2" == "$3" ]; then pass; else fail "$1: expected '$2', got '$3'"; fi
}
expect_grep() {
    if grep -qF -- "$3" "$2"; then pass; else fail "$1: '$3' not found in $(head -c 400 "$2")"; fi
}
expect_no_grep() {
    if ! grep -qF -- "$3" "$2"; then pass; else fail "$1: '$3' found"; fi
}

# jfield FILE KEY... : the value at that path, raw strings (jq, else python3).
if command -v jq >/dev/null 2>&1; then
    jfield() {
        local f=$1
        shift
        jq -r "getpath([\$ARGS.positional[] | (tonumber? // .)]) | if type == \"string\" then . else tojson end" \
            "$f" --args "$@" 2>/dev/null
    }
else
    jfield() {
        python3 - "$@" <<'PY' 2>/dev/null
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2:]:
    v = v[int(k)] if isinstance(v, list) else (v.get(k) if isinstance(v, dict) else None)
print(v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))
PY
    }
fi

# start_daemon NAME ARGS...: sets PID and URL; waits (bounded) for the
# "listening on" line, which carries the port chosen by the kernel.
start_daemon() {
    local name=$1
    shift
    "$ONNXQ" serve --listen 127.0.0.1:0 "$@" 2>"$TMP/$name.log" &
    PID=$!
    PIDS+=("$PID")
    LOGS[$PID]=$TMP/$name.log
    local port=""
    for _ in $(seq 1 100); do
        port=$(head -n 1 "$TMP/$name.log" | grep -o 'listening on 127\.0\.0\.1:[0-9]*' | cut -d: -f2)
        [ -n "$port" ] && break
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "$0: daemon $name did not start:" >&2
        cat "$TMP/$name.log" >&2
        exit 1
    fi
    URL=http://127.0.0.1:$port
    # The first line is logged before recovery and MHD start: wait for /healthz.
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "$URL/healthz" && break
        sleep 0.1
    done
}

# stop_daemon PID: SIGTERM, bounded wait; the exit status in STOP_RC (run
# in this shell, not in $(...): only the parent can wait for it).
stop_daemon() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 600); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        STOP_RC=timeout
        return
    fi
    wait "$pid"
    STOP_RC=$?
    # Sanitizer builds: a report in the daemon's log fails the test.
    if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "${LOGS[$pid]}"; then
        fail "sanitizer report in ${LOGS[$pid]##*/}:"
        grep -E -A12 'ERROR: (Address|Leak)Sanitizer|runtime error:' "${LOGS[$pid]}" | head -40 >&2
    fi
}

# req DESC EXPECTED-STATUS CURL-ARGS...: body in $TMP/body.
req() {
    local desc=$1 want=$2
    shift 2
    local got
    got=$(curl -s -o "$TMP/body" -w '%{http_code}' --max-time 60 "$@")
    expect_eq "$desc: HTTP status" "$want" "$got"
}
# req_error DESC STATUS CODE CURL-ARGS...: the JSON error contract.
req_error() {
    local desc=$1 want=$2 code=$3
    shift 3
    req "$desc" "$want" "$@"
    expect_eq "$desc: error code" "$code" "$(jfield "$TMP/body" error code)"
    local msg
    msg=$(jfield "$TMP/body" error message)
    if [ -n "$msg" ] && [ "$msg" != null ]; then pass; else fail "$desc: no error message"; fi
    [ "$(jfield "$TMP/body" error detail)" != null ] && pass || fail "$desc: no error detail"
}

# wait_job URL ID: polls until the job leaves queued/running (bounded).
wait_job() {
    local state=""
    for _ in $(seq 1 $((JOB_TIMEOUT * 4))); do
        curl -s -o "$TMP/job.json" --max-time 10 "$1/v1/jobs/$2"
        state=$(jfield "$TMP/job.json" state)
        [ "$state" != queued ] && [ "$state" != running ] && break
        sleep 0.25
    done
    echo "$state"
}

# wait_for DESC SECONDS CMD...: polls CMD every 0.1 s until it succeeds (bounded).
wait_for() {
    local desc=$1 secs=$2
    shift 2
    for _ in $(seq 1 $((secs * 10))); do
        "$@" && { pass; return 0; }
        sleep 0.1
    done
    fail "$desc: not within ${secs}s"
    return 1
}

# healthy URL: the daemon answers /healthz.
healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1/healthz")" = 200 ]; }
