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

# check_metrics FILE: the Prometheus text format (0.0.4) of a /metrics
# answer, checked independently of the server's code: every sample line is
# `name{label="value",...} number`, every family has one HELP and one TYPE
# line before its samples, counters end in _total, and every histogram
# series has increasing le bounds, cumulative (non-decreasing) buckets, a
# +Inf bucket equal to its _count, and a _sum. Prints each problem; fails
# when there is one.
check_metrics() {
    python3 - "$1" <<'PY'
import math, re, sys
name_re = r'[a-zA-Z_:][a-zA-Z0-9_:]*'
label_re = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
sample = re.compile(r'^(%s)(\{(?:%s(?:,%s)*)?\})? ([-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+|Inf|NaN))$'
                    % (name_re, label_re, label_re))
bad, types, helps, seen, hist = [], {}, set(), set(), {}
for n, line in enumerate(open(sys.argv[1]).read().split('\n'), 1):
    if line == '':
        continue
    if line.startswith('#'):
        m = re.match(r'^# (HELP|TYPE) (%s) (.+)$' % name_re, line)
        if not m:
            bad.append('line %d: malformed comment: %s' % (n, line)); continue
        kind, fam, rest = m.groups()
        if fam in seen:
            bad.append('line %d: %s %s after its samples' % (n, kind, fam))
        if kind == 'HELP':
            if fam in helps: bad.append('line %d: second HELP for %s' % (n, fam))
            helps.add(fam)
        else:
            if fam in types: bad.append('line %d: second TYPE for %s' % (n, fam))
            if rest not in ('counter', 'gauge', 'histogram', 'summary', 'untyped'):
                bad.append('line %d: unknown type %s' % (n, rest))
            if rest == 'counter' and not fam.endswith('_total'):
                bad.append('line %d: counter %s does not end in _total' % (n, fam))
            types[fam] = rest
        continue
    m = sample.match(line)
    if not m:
        bad.append('line %d: not a sample line: %s' % (n, line)); continue
    name, labels, value = m.group(1), m.group(2) or '', float(m.group(3))
    fam = name
    for suf in ('_bucket', '_sum', '_count'):
        if name.endswith(suf) and types.get(name[:-len(suf)]) == 'histogram':
            fam = name[:-len(suf)]
    if fam not in types:
        bad.append('line %d: %s has no TYPE line before it' % (n, name)); continue
    if fam not in helps:
        bad.append('line %d: %s has no HELP line' % (n, fam))
    seen.add(fam)
    if types[fam] == 'counter' and not value >= 0:
        bad.append('line %d: counter below 0' % n)
    if types[fam] == 'histogram':
        pairs = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels)
        le = [v for k, v in pairs if k == 'le']
        key = (fam, tuple((k, v) for k, v in pairs if k != 'le'))
        h = hist.setdefault(key, {'b': [], 'sum': None, 'count': None})
        if name.endswith('_bucket'):
            if len(le) != 1: bad.append('line %d: bucket without le' % n); continue
            h['b'].append((float(le[0].replace('+Inf', 'inf')), value))
        elif name.endswith('_sum'): h['sum'] = value
        else: h['count'] = value
for (fam, labels), h in hist.items():
    what = '%s%s' % (fam, dict(labels))
    b = h['b']
    if not b or b[-1][0] != math.inf: bad.append('%s: no +Inf bucket last' % what); continue
    if any(b[i][0] >= b[i + 1][0] for i in range(len(b) - 1)): bad.append('%s: le bounds not increasing' % what)
    if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)): bad.append('%s: buckets not cumulative' % what)
    if h['count'] is None or h['count'] != b[-1][1]: bad.append('%s: +Inf bucket != _count' % what)
    if h['sum'] is None or h['sum'] < 0: bad.append('%s: no _sum' % what)
for m in bad:
    print(m)
sys.exit(1 if bad else 0)
PY
}

# metric FILE SERIES: the value of one sample line (name and labels exactly
# as written), or "" when absent.
metric() {
    awk -v s="$2" 'substr($0, 1, length(s) + 1) == s " " { print substr($0, length(s) + 2); exit }' "$1"
}

# check_log FILE: every line is a structured log line: ts=<ISO-8601> then
# event=<word>, then key=value pairs whose values are bare words or quoted.
check_log() {
    local badl
    badl=$(grep -Ev '^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z event=[a-z]+( [a-z_]+=("[^"]*"|[^ "]+))*$' "$1")
    if [ -z "$badl" ]; then pass; else fail "log lines not in the key=value format: $(echo "$badl" | head -3)"; fi
}

# stage_field FILE NAME KEY: a key of the job's timings.stages entry NAME.
stage_field() {
    python3 - "$@" <<'PY' 2>/dev/null
import json, sys
j = json.load(open(sys.argv[1]))
print(next((s[sys.argv[3]] for s in j["timings"]["stages"] if s["name"] == sys.argv[2]), ""))
PY
}

# pycheck DESC EXPR FILE...: passes when the python expression is true
# (files are read as JSON into f[0], f[1], ...).
pycheck() {
    local desc=$1 expr=$2
    shift 2
    if python3 -c "import json, sys; f = [json.load(open(a)) for a in sys.argv[1:]]; sys.exit(0 if ($expr) else 1)" "$@"; then
        pass
    else
        fail "$desc"
    fi
}
