#!/usr/bin/env bash
# cli_dockerfile.sh: the Dockerfile installs what the binary needs. No
# Docker engine is needed: the runtime stage's apt packages are read from
# the Dockerfile and compared with the Debian packages owning every library
# the onnxq binary links (ldd -> dpkg -S); the build stage must install the
# build packages scripts/setup.sh lists. Plus the image's conventions
# (non-root user, volume, EXPOSE, HEALTHCHECK with a tool that is installed).
# Usage: bash cli_dockerfile.sh <onnxq> <shared-dir>
set -u
ONNXQ=${1:?usage: cli_dockerfile.sh <path-to-onnxq> <shared-dir>}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$HERE/..
DOCKERFILE=${OQ_DOCKERFILE:-$ROOT/Dockerfile}
SETUP=$ROOT/scripts/setup.sh
passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "FAIL: $*" >&2
}
command -v dpkg >/dev/null && command -v ldd >/dev/null || { echo "cli_dockerfile.sh: needs dpkg and ldd" >&2; exit 1; }

# stage_packages N: the packages `apt-get install` names in stage N (1 =
# first FROM), continuation lines joined, options and shell words dropped.
stage_packages() {
    awk -v want="$1" '
        /^FROM / { stage++ }
        stage == want { line = line " " $0 }
        END { print line }' "$DOCKERFILE" | sed 's/\\$//; s/\\ / /g' | tr -s ' \t\\' '\n' |
        awk '/apt-get/ { a = 1; next } a && $0 == "install" { i = 1; next }
             i && ($0 == "&&" || $0 == ";") { a = 0; i = 0; next }
             i && $0 !~ /^-/ && $0 != "" { print }' | sort -u
}
RUNTIME_STAGE=$(grep -c '^FROM ' "$DOCKERFILE")
stage_packages 1 >"${TMPDIR:-/tmp}/oq_build_pkgs.$$"
stage_packages "$RUNTIME_STAGE" >"${TMPDIR:-/tmp}/oq_run_pkgs.$$"
BUILD_PKGS=$(cat "${TMPDIR:-/tmp}/oq_build_pkgs.$$")
RUN_PKGS=$(cat "${TMPDIR:-/tmp}/oq_run_pkgs.$$")
rm -f "${TMPDIR:-/tmp}/oq_build_pkgs.$$" "${TMPDIR:-/tmp}/oq_run_pkgs.$$"
[ -n "$RUN_PKGS" ] && pass || fail "no apt-get install found in the runtime stage"
[ "$RUNTIME_STAGE" -ge 2 ] && pass || fail "the Dockerfile is not multi-stage"
has() { printf '%s\n' $2 | grep -qx -- "$1"; }

# ---- every linked library comes from the runtime stage ---------------------------
# Libraries the binary names itself (DT_NEEDED) must come from a package the
# runtime stage installs by name, or from libc6 (in every image); the ones
# they pull in (gnutls under libmicrohttpd, ...) from the dependency closure
# of those packages (apt-cache depends --recurse, offline).
owner() { # library path -> package, through the usrmerge aliases
    local p=$1 real out
    real=$(readlink -f "$p")
    for cand in "$p" "$real" "/usr$p" "/usr$real" "${p#/usr}" "${real#/usr}"; do
        out=$(dpkg -S "$cand" 2>/dev/null | head -1 | cut -d: -f1)
        [ -n "$out" ] && { echo "$out"; return 0; }
    done
    return 1
}
CLOSURE=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances $RUN_PKGS libc6 2>/dev/null | grep -v '^ ' | grep -v '^<' | sort -u)
[ -n "$CLOSURE" ] && pass || fail "apt-cache depends gave nothing"
NEEDED=$(readelf -d "$ONNXQ" | awk '/\(NEEDED\)/ { gsub(/[][]/, "", $5); print $5 }')
SANITIZED=$(printf '%s\n' $NEEDED | grep -E '^lib(a|ub|l|t)san' || true)
n=0
while read -r soname lib; do
    pkg=$(owner "$lib")
    if [ -z "$pkg" ]; then
        fail "$lib: no Debian package owns it"
        continue
    fi
    case $pkg in libasan* | libubsan* | liblsan* | libtsan*) continue ;; esac # sanitizer builds only
    [ "$pkg" = libstdc++6 ] && [ -n "$SANITIZED" ] && continue # pulled in by libasan
    n=$((n + 1))
    if printf '%s\n' $NEEDED | grep -qx -- "$soname"; then
        if has "$pkg" "$RUN_PKGS" || [ "$pkg" = libc6 ]; then pass; else
            fail "onnxq links $soname ($pkg), which the runtime stage does not install (it installs: $(echo $RUN_PKGS))"
        fi
    elif has "$pkg" "$CLOSURE"; then
        pass
    else
        fail "$soname comes from $pkg, which no runtime-stage package depends on"
    fi
done < <(ldd "$ONNXQ" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }')
[ "$n" -ge 5 ] && pass || fail "only $n linked libraries checked: ldd output not understood"

# ---- the build stage installs the build packages scripts/setup.sh lists -------
SETUP_PKGS=$(sed -n '/^PACKAGES=(/,/^)/p' "$SETUP" | sed '1d;$d; s/#.*//' | tr -s ' \t' '\n' | grep -v '^$')
[ -n "$SETUP_PKGS" ] && pass || fail "no PACKAGES=( ... ) list in scripts/setup.sh"
for p in $SETUP_PKGS; do
    case $p in curl | python3) continue ;; esac # tools of the test suite, not of the build
    if has "$p" "$BUILD_PKGS"; then pass; else fail "setup.sh needs $p; the build stage does not install it"; fi
done

# ---- image conventions ------------------------------------------------------------
last_stage=$(awk -v want="$RUNTIME_STAGE" '/^FROM / { stage++ } stage == want' "$DOCKERFILE")
grep -qE '^FROM debian:bookworm' "$DOCKERFILE" && pass || fail "not based on Debian bookworm"
user=$(printf '%s\n' "$last_stage" | awk '/^USER / { u = $2 } END { print u }')
if [ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ]; then pass; else fail "the runtime stage runs as root"; fi
printf '%s\n' "$last_stage" | grep -q '^VOLUME ' && pass || fail "no VOLUME for the data directory"
printf '%s\n' "$last_stage" | grep -q '^EXPOSE ' && pass || fail "no EXPOSE"
hc=$(printf '%s\n' "$last_stage" | sed -n '/^HEALTHCHECK/,/[^\\]$/p' | tr '\n' ' ')
if [[ "$hc" == *"/healthz"* ]]; then pass; else fail "no HEALTHCHECK on /healthz"; fi
tool=$(printf '%s\n' "$hc" | grep -o 'CMD [a-z]*' | awk '{print $2}')
if [ -n "$tool" ] && has "$tool" "$RUN_PKGS"; then pass; else fail "the HEALTHCHECK runs '$tool', which the runtime stage does not install"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
