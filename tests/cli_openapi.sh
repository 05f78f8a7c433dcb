#!/usr/bin/env bash
# cli_openapi.sh: docs/openapi.yaml and the server cannot drift. The routes
# come from the server's own table (route_names in server/http.c), their
# methods from the running daemon (the Allow header of a 405), and each
# (path, method) must be in the OpenAPI file, and each documented one must
# exist in the server. Every error code the HTTP layer uses must be named.
# Usage: bash cli_openapi.sh <onnxq> <shared-dir>
set -u
ONNXQ=${1:?usage: cli_openapi.sh <path-to-onnxq> <shared-dir>}
SHARED=${2:?usage: cli_openapi.sh <path-to-onnxq> <shared-dir>}
HERE=$(cd "$(dirname "$0")" && pwd)
SPEC=${OQ_OPENAPI:-$HERE/../docs/openapi.yaml}
SRC=$HERE/../server/http.c
. "$HERE/serve_lib.sh"
[ -f "$SPEC" ] || { echo "cli_openapi.sh: $SPEC missing" >&2; exit 1; }

ROUTES=$(sed -n '/route_names\[OQ_ROUTE_COUNT\] = {/,/};/p' "$SRC" | grep -o '"[^"]*"' | tr -d '"' | grep -v '^unknown$')
[ "$(echo "$ROUTES" | wc -l)" -ge 10 ] && pass || fail "route table not found in $SRC"

# spec_pairs: "PATH METHOD" for every operation in the spec (indentation-based:
# paths at 2 spaces, methods at 4).
spec_pairs() {
    awk '/^paths:/ { p = 1; next } /^[a-z]/ { p = 0 }
         p && /^  \/[^ ]*:$/ { path = $1; sub(/:$/, "", path) }
         p && /^    (get|post|put|delete|patch|head|options):/ { m = $1; sub(/:$/, "", m); print path, toupper(m) }' "$SPEC"
}
spec_pairs >"$TMP/spec_pairs"
[ -s "$TMP/spec_pairs" ] && pass || fail "no operations found in $SPEC"

start_daemon a --data-dir "$TMP/data"
A=$URL
: >"$TMP/server_pairs"
for r in $ROUTES; do
    path=${r//\{id\}/0123456789abcdef0123456789abcdef}
    curl -s -o "$TMP/body" -D "$TMP/h" -X PATCH "$A$path" >/dev/null
    allow=$(grep -i '^Allow:' "$TMP/h" | cut -d: -f2- | tr ',\r' '  ')
    if [ -n "$allow" ]; then pass; else fail "$r: no Allow header on a 405"; fi
    for m in $allow; do
        [ "$m" = HEAD ] && continue # every GET also takes HEAD
        echo "$r $m" >>"$TMP/server_pairs"
        grep -qx "$r $m" "$TMP/spec_pairs" && pass || fail "$m $r is served but not in docs/openapi.yaml"
    done
done
while read -r path m; do
    grep -qx "$path $m" "$TMP/server_pairs" && pass || fail "$m $path is in docs/openapi.yaml but the server does not serve it"
done <"$TMP/spec_pairs"
stop_daemon "$PID"

# Every error code the HTTP layer produces is documented.
for code in $(sed -n '/define OQ_REFUSALS/,/^$/p' "$SRC" | grep -o '"E[A-Z]*"' | tr -d '"'); do
    grep -q "$code" "$SPEC" && pass || fail "error code $code not in docs/openapi.yaml"
done
# It parses as YAML, when a parser is at hand.
if python3 -c 'import yaml' 2>/dev/null; then
    python3 -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); assert d["openapi"].startswith("3.0")' "$SPEC" &&
        pass || fail "docs/openapi.yaml does not parse as OpenAPI 3.0 YAML"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
