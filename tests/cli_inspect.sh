#!/usr/bin/env bash
# cli_inspect.sh: end-to-end checks of `onnxq inspect` on the shared models:
# facts each model is known to have, exit codes, and the one-line error
# contract on bad input. Usage: bash cli_inspect.sh <onnxq> <shared-dir>
set -u

ONNXQ=${1:?usage: cli_inspect.sh <path-to-onnxq> <shared-dir>}
SHARED=${2:?usage: cli_inspect.sh <path-to-onnxq> <shared-dir>}
MODELS=$SHARED/models
MNIST8=$MODELS/mnist-8/model.onnx
CNN_PT=$MODELS/cnn_mnist_pytorch/model.onnx
FM_CNN=$MODELS/fmnist/fmnist_cnn.onnx
FM_VIT=$MODELS/fmnist/fmnist_vit.onnx
PPOCR=$MODELS/ppocr_cls/model.onnx
ALL_MODELS=("$MNIST8" "$CNN_PT" "$FM_CNN" "$MODELS/fmnist/fmnist_cnn_bn.onnx" "$FM_VIT"
            "$MODELS/fmnist/fmnist_vit_op14.onnx" "$PPOCR")
NODE_TESTS=$MODELS/onnx-node-tests/onnx-1.12.0

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
passed=0
failed=0

pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "FAIL: $*" >&2
}

[ -x "$ONNXQ" ] || { echo "cli_inspect.sh: $ONNXQ is not executable" >&2; exit 1; }
for m in "${ALL_MODELS[@]}"; do
    [ -f "$m" ] || { echo "cli_inspect.sh: missing shared model $m" >&2; exit 1; }
done

# jget FILE KEY... prints the value at that path of a JSON file, compact
# (numeric keys index arrays); jlen FILE KEY... its length. jq when
# installed, else python3's json module.
if command -v jq >/dev/null 2>&1; then
    jquery() {
        local filter=$1 f=$2
        shift 2
        jq -c "getpath([\$ARGS.positional[] | (tonumber? // .)])$filter" "$f" --args "$@"
    }
    jget() { jquery "" "$@"; }
    jlen() { jquery " | length" "$@"; }
    jvalid() { jq -e . "$1" >/dev/null 2>&1; }
    jvalid_all() { jq -e 'type == "object"' "$@" >/dev/null; }
else
    jquery() {
        python3 - "$@" <<'EOF'
import json, sys
mode, path, keys = sys.argv[1], sys.argv[2], sys.argv[3:]
v = json.load(open(path))
for k in keys:
    if isinstance(v, list):
        v = v[int(k)] if k.lstrip("-").isdigit() and -len(v) <= int(k) < len(v) else None
    elif isinstance(v, dict):
        v = v.get(k)
    else:
        v = None
if mode == "len":
    print(len(v) if isinstance(v, (list, dict, str)) else 0)
else:
    print(json.dumps(v, separators=(",", ":"), ensure_ascii=False))
EOF
    }
    jget() { jquery get "$@"; }
    jlen() { jquery len "$@"; }
    jvalid() { python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" >/dev/null 2>&1; }
    jvalid_all() { python3 -c 'import json,sys; [json.load(open(p)) for p in sys.argv[1:]]' "$@"; }
fi

# expect_eq DESC EXPECTED ACTUAL
expect_eq() {
    if [ "$2" == "$3" ]; then pass; else fail "$1: expected $2, got $3"; fi
}
# expect_json DESC FILE EXPECTED KEY... / expect_len DESC FILE EXPECTED KEY...
expect_json() {
    local desc=$1 f=$2 want=$3
    shift 3
    expect_eq "$desc" "$want" "$(jget "$f" "$@")"
}
expect_len() {
    local desc=$1 f=$2 want=$3
    shift 3
    expect_eq "$desc" "$want" "$(jlen "$f" "$@")"
}
# expect_grep DESC FILE FIXED-STRING
expect_grep() {
    if grep -qF -- "$3" "$2"; then pass; else fail "$1: '$3' not found in output"; fi
}
expect_no_grep() {
    if ! grep -qF -- "$3" "$2"; then pass; else fail "$1: '$3' found in output"; fi
}

# inspect_json MODEL OUT: runs --json; checks exit 0, empty stderr, valid JSON.
inspect_json() {
    "$ONNXQ" inspect --json "$1" >"$2" 2>"$TMP/stderr"
    local rc=$?
    expect_eq "inspect --json $1: exit status" 0 "$rc"
    expect_eq "inspect --json $1: stderr" "" "$(cat "$TMP/stderr")"
    if jvalid "$2"; then pass; else fail "inspect --json $1: output is not valid JSON"; fi
}

# ---- help and usage ---------------------------------------------------------

"$ONNXQ" --help >"$TMP/out" 2>&1
expect_eq "onnxq --help: exit status" 0 $?
expect_grep "onnxq --help" "$TMP/out" "inspect"

"$ONNXQ" inspect --help >"$TMP/out" 2>"$TMP/err"
expect_eq "onnxq inspect --help: exit status" 0 $?
expect_grep "onnxq inspect --help: usage on stdout" "$TMP/out" "usage: onnxq inspect"
expect_eq "onnxq inspect --help: stderr" "" "$(cat "$TMP/err")"

"$ONNXQ" inspect -h >/dev/null 2>&1
expect_eq "onnxq inspect -h: exit status" 0 $?

"$ONNXQ" >/dev/null 2>&1
expect_eq "onnxq with no arguments: exit status" 2 $?
"$ONNXQ" inspect >/dev/null 2>"$TMP/err"
expect_eq "onnxq inspect with no model: exit status" 2 $?
expect_grep "onnxq inspect with no model: message" "$TMP/err" "onnxq:"
"$ONNXQ" inspect --no-such-option "$MNIST8" >/dev/null 2>&1
expect_eq "onnxq inspect --no-such-option: exit status" 2 $?
"$ONNXQ" inspect "$MNIST8" "$CNN_PT" >/dev/null 2>&1
expect_eq "onnxq inspect with two models: exit status" 2 $?

# ---- every shared model, both modes ------------------------------------------

for m in "${ALL_MODELS[@]}"; do
    "$ONNXQ" inspect "$m" >"$TMP/out" 2>"$TMP/err"
    expect_eq "inspect $m: exit status" 0 $?
    expect_eq "inspect $m: stderr" "" "$(cat "$TMP/err")"
    expect_grep "inspect $m: text report" "$TMP/out" "quantizable nodes"
    inspect_json "$m" "$TMP/out.json"
    # The JSON is deterministic: a second run gives the same bytes.
    "$ONNXQ" inspect --json "$m" >"$TMP/again.json" 2>/dev/null
    if cmp -s "$TMP/out.json" "$TMP/again.json"; then pass; else fail "inspect --json $m: output differs between runs"; fi
done

# ---- mnist-8: IR 3, weights listed as inputs ----------------------------------

J=$TMP/mnist8.json
inspect_json "$MNIST8" "$J"
expect_json "mnist-8 ir_version" "$J" 3 ir_version
expect_json "mnist-8 opsets" "$J" '{"ai.onnx":8}' opset_imports
expect_json "mnist-8 producer" "$J" '"CNTK"' producer_name
expect_json "mnist-8 producer version" "$J" '"2.5.1"' producer_version
expect_len "mnist-8 has one real input" "$J" 1 inputs
expect_json "mnist-8 input" "$J" '{"name":"Input3","type":"tensor","dtype":"float","shape":[1,1,28,28]}' inputs 0
expect_json "mnist-8 output" "$J" '{"name":"Plus214_Output_0","type":"tensor","dtype":"float","shape":[1,10]}' outputs 0
expect_len "mnist-8 initializers listed as inputs" "$J" 8 initializer_inputs
expect_json "mnist-8 parameter initializers" "$J" 8 parameters initializers
expect_json "mnist-8 parameter tensors" "$J" 8 parameters tensors
# Independently decoded: 5994 float + 4 int64 values (two Reshape shapes).
expect_json "mnist-8 parameter count" "$J" 5998 parameters count
expect_json "mnist-8 parameter bytes" "$J" 24008 parameters bytes
expect_json "mnist-8 float parameters" "$J" '{"tensors":6,"count":5994,"bytes":23976}' parameters by_dtype float
expect_json "mnist-8 node count" "$J" 12 nodes count
expect_json "mnist-8 ops" "$J" '{"Add":3,"Conv":2,"MatMul":1,"MaxPool":2,"Relu":2,"Reshape":2}' nodes by_op_type
expect_json "mnist-8 Conv count" "$J" 2 quantizable by_op_type Conv count
expect_json "mnist-8 Conv constant weights" "$J" 2 quantizable by_op_type Conv constant_weight_count
# MatMul's weight is a Reshape of an initializer: not constant, but foldable.
expect_json "mnist-8 MatMul weight not a direct constant" "$J" false quantizable by_op_type MatMul nodes 0 constant_weight
expect_json "mnist-8 MatMul weight foldable" "$J" true quantizable by_op_type MatMul nodes 0 foldable_weight
expect_json "mnist-8 MatMul node name" "$J" '"Times212"' quantizable by_op_type MatMul nodes 0 name
expect_json "mnist-8 reshape of the weight is not counted" "$J" 1 quantizable skipped_constant
jget "$J" warnings >"$TMP/w"
expect_grep "mnist-8 (opset 8) opset-10 warning" "$TMP/w" '"code":"opset_below_10"'
expect_grep "mnist-8 (opset 8) per-channel warning" "$TMP/w" '"code":"opset_below_13"'
expect_grep "mnist-8 per-channel warning text" "$TMP/w" "per-channel quantization needs opset >= 13; onnxq will raise the opset"
expect_no_grep "mnist-8 IR 3 inputs are expected, no warning" "$TMP/w" "initializer_inputs"

"$ONNXQ" inspect "$MNIST8" >"$TMP/out" 2>/dev/null
expect_grep "mnist-8 text: IR version" "$TMP/out" "ir_version:  3"
expect_grep "mnist-8 text: input" "$TMP/out" "Input3  float[1,1,28,28]"
expect_grep "mnist-8 text: opsets" "$TMP/out" "ai.onnx 8"
expect_grep "mnist-8 text: per-channel warning" "$TMP/out" "per-channel quantization needs opset >= 13"
expect_no_grep "mnist-8 text: weights are not inputs" "$TMP/out" "Parameter5  float"

# ---- cnn_mnist_pytorch: opset 9 ----------------------------------------------

J=$TMP/cnn_pt.json
inspect_json "$CNN_PT" "$J"
expect_json "cnn_mnist_pytorch default opset" "$J" 9 default_opset
expect_json "cnn_mnist_pytorch ir_version" "$J" 4 ir_version
expect_json "cnn_mnist_pytorch input" "$J" '{"name":"0","type":"tensor","dtype":"float","shape":[1,1,28,28]}' inputs 0
expect_json "cnn_mnist_pytorch Constant nodes" "$J" 1 nodes by_op_type Constant
expect_json "cnn_mnist_pytorch Gemm with constant weights" "$J" 2 quantizable by_op_type Gemm constant_weight_count
jget "$J" warnings >"$TMP/w"
expect_grep "cnn_mnist_pytorch (opset 9) per-channel warning" "$TMP/w" '"code":"opset_below_13"'
expect_grep "cnn_mnist_pytorch (opset 9) opset-10 warning" "$TMP/w" '"code":"opset_below_10"'

# ---- fmnist_cnn: symbolic batch, opset 13 -------------------------------------

J=$TMP/fm_cnn.json
inspect_json "$FM_CNN" "$J"
expect_json "fmnist_cnn input dim 0 is symbolic N" "$J" '"N"' inputs 0 shape 0
expect_json "fmnist_cnn input shape" "$J" '["N",1,28,28]' inputs 0 shape
expect_json "fmnist_cnn output shape" "$J" '["N",10]' outputs 0 shape
expect_json "fmnist_cnn default opset" "$J" 13 default_opset
expect_json "fmnist_cnn Conv count" "$J" 3 nodes by_op_type Conv
expect_json "fmnist_cnn no warnings at opset 13" "$J" '[]' warnings
"$ONNXQ" inspect "$FM_CNN" >"$TMP/out" 2>/dev/null
expect_grep "fmnist_cnn text: symbolic dim" "$TMP/out" "float[N,1,28,28]"

# ---- fmnist_vit ---------------------------------------------------------------

J=$TMP/fm_vit.json
inspect_json "$FM_VIT" "$J"
expect_json "fmnist_vit MatMul nodes" "$J" 12 nodes by_op_type MatMul
expect_json "fmnist_vit quantizable MatMul" "$J" 12 quantizable by_op_type MatMul count
# 8 projections with weights; Q.K^T and attn.V multiply two activations.
expect_json "fmnist_vit MatMul with constant weight" "$J" 8 quantizable by_op_type MatMul constant_weight_count
expect_json "fmnist_vit Constant nodes" "$J" 51 nodes by_op_type Constant
expect_json "fmnist_vit LayerNormalization nodes" "$J" 5 nodes by_op_type LayerNormalization
expect_json "fmnist_vit opset" "$J" 17 default_opset
# The Shape -> Gather -> Unsqueeze -> Concat chains are int64, not quantized.
expect_json "fmnist_vit shape-arithmetic Unsqueeze left out" "$J" null quantizable by_op_type Unsqueeze

# ---- ppocr_cls: all weights in Constant nodes ---------------------------------

J=$TMP/ppocr.json
inspect_json "$PPOCR" "$J"
expect_json "ppocr_cls Constant nodes" "$J" 250 nodes by_op_type Constant
expect_json "ppocr_cls initializers" "$J" 0 parameters initializers
expect_json "ppocr_cls Constant nodes counted as parameters" "$J" 250 parameters constant_nodes
expect_json "ppocr_cls parameter tensors" "$J" 250 parameters tensors
count=$(jget "$J" parameters count)
if [[ "$count" =~ ^[0-9]+$ ]] && [ "$count" -gt 0 ]; then pass; else fail "ppocr_cls parameter count: expected > 0, got $count"; fi
expect_json "ppocr_cls parameter count (independently decoded)" "$J" 133665 parameters count
expect_json "ppocr_cls Conv with constant weights" "$J" 53 quantizable by_op_type Conv constant_weight_count
expect_json "ppocr_cls symbolic dims" "$J" '"p2o.DynamicDimension.0"' inputs 0 shape 0
jget "$J" warnings >"$TMP/w"
expect_grep "ppocr_cls (opset 9) per-channel warning" "$TMP/w" '"code":"opset_below_13"'

# ---- ONNX node tests: subgraphs, quantized models, sweep -----------------------

if [ -d "$NODE_TESTS" ]; then
    J=$TMP/qlinearconv.json
    inspect_json "$NODE_TESTS/test_qlinearconv/model.onnx" "$J"
    jget "$J" warnings >"$TMP/w"
    expect_grep "test_qlinearconv is already quantized" "$TMP/w" '"code":"already_quantized"'
    J=$TMP/dq.json
    inspect_json "$NODE_TESTS/test_dequantizelinear/model.onnx" "$J"
    jget "$J" warnings >"$TMP/w"
    expect_grep "test_dequantizelinear is already quantized" "$TMP/w" '"code":"already_quantized"'
    J=$TMP/if.json
    inspect_json "$NODE_TESTS/test_if/model.onnx" "$J"
    expect_json "test_if main graph nodes" "$J" '{"If":1}' nodes by_op_type
    expect_json "test_if subgraph nodes" "$J" 2 nodes subgraph_count
    expect_json "test_if subgraph Constants are parameters" "$J" 2 parameters constant_nodes

    # Every node-test model inspects cleanly in both modes (the JSON files are
    # validated together at the end: one parser process instead of 524).
    sweep_bad=0
    sweep_n=0
    mkdir -p "$TMP/sweep"
    for m in "$NODE_TESTS"/*/model.onnx; do
        sweep_n=$((sweep_n + 1))
        if ! "$ONNXQ" inspect "$m" >/dev/null 2>"$TMP/err" || [ -s "$TMP/err" ]; then
            sweep_bad=$((sweep_bad + 1))
            echo "  text mode failed on $m: $(cat "$TMP/err")" >&2
        fi
        if ! "$ONNXQ" inspect --json "$m" >"$TMP/sweep/$sweep_n.json" 2>"$TMP/err" || [ -s "$TMP/err" ]; then
            sweep_bad=$((sweep_bad + 1))
            echo "  JSON mode failed on $m: $(cat "$TMP/err")" >&2
        fi
    done
    if ! jvalid_all "$TMP"/sweep/*.json; then
        sweep_bad=$((sweep_bad + 1))
        echo "  invalid JSON among the node-test outputs" >&2
    fi
    if [ "$sweep_n" -gt 0 ] && [ "$sweep_bad" -eq 0 ]; then
        pass
    else
        fail "ONNX node-test sweep: $sweep_bad failures over $sweep_n models"
    fi
else
    echo "note: $NODE_TESTS not found, node-test checks skipped" >&2
fi

# ---- a synthetic model: unknown domain, external data, value_floats, ---------
# ---- an IR-8 input with an initializer; plus one with negative dims

python3 - "$TMP" <<'EOF'
import sys
def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
def f(num, v):  # int -> varint field, bytes/str -> length-delimited field
    if isinstance(v, int):
        return varint(num << 3) + varint(v)
    v = v.encode() if isinstance(v, str) else v
    return varint(num << 3 | 2) + varint(len(v)) + v
def tensor_type(elem, dims):
    shape = b"".join(f(1, f(2, d) if isinstance(d, str) else f(1, d)) for d in dims)
    return f(1, f(1, elem) + f(2, shape))
def value_info(name, elem, dims):
    return f(1, name) + f(2, tensor_type(elem, dims))
def node(op, ins, outs, name, domain="", attrs=b""):
    return (b"".join(f(1, i) for i in ins) + b"".join(f(2, o) for o in outs) + f(3, name) +
            f(4, op) + (f(7, domain) if domain else b"") + attrs)
def model(graph, opsets):
    return f(1, 8) + b"".join(f(8, (f(1, d) if d else b"") + f(2, v)) for d, v in opsets) + \
        f(2, "gen") + f(7, graph)
# W: float [4,4], its 64 bytes in the external file w.bin (the loader checks
# its size; inspect never reads it).
w = f(1, 4) + f(1, 4) + f(2, 1) + f(8, "W") + f(13, f(1, "location") + f(2, "w.bin")) + f(14, 1)
floats = f(1, "value_floats") + f(7, b"\0\0\x80\x3f" * 3) + f(20, 6)
g = (f(1, node("Constant", [], ["C"], "c0", attrs=f(5, floats))) +
     f(1, node("MatMul", ["X", "W"], ["Y"], "mm")) +
     f(1, node("FusedGelu", ["Y"], ["Z"], "gelu", domain="com.microsoft")) +
     f(2, "synthetic") + f(5, w) +
     f(11, value_info("X", 1, ["batch", 4])) + f(11, value_info("W", 1, [4, 4])) +
     f(12, value_info("Z", 1, ["batch", 4])))
open(sys.argv[1] + "/synthetic.onnx", "wb").write(model(g, [("", 13), ("com.microsoft", 1)]))
open(sys.argv[1] + "/w.bin", "wb").write(bytes(64))
bad = f(1, -1) + f(2, 1) + f(8, "B") + f(9, b"")
g = f(1, node("Identity", ["B"], ["O"], "id")) + f(5, bad) + f(12, value_info("O", 1, [1]))
open(sys.argv[1] + "/negative-dims.onnx", "wb").write(model(g, [("", 13)]))
EOF
J=$TMP/synthetic.json
inspect_json "$TMP/synthetic.onnx" "$J"
expect_json "synthetic: ops keyed by domain" "$J" '{"Constant":1,"MatMul":1,"com.microsoft:FusedGelu":1}' nodes by_op_type
expect_json "synthetic: domains" "$J" '{"ai.onnx":2,"com.microsoft":1}' nodes by_domain
expect_json "synthetic: opsets" "$J" '{"ai.onnx":13,"com.microsoft":1}' opset_imports
expect_json "synthetic: W is a weight, not an input" "$J" '["W"]' initializer_inputs
expect_json "synthetic: symbolic input dim" "$J" '["batch",4]' inputs 0 shape
expect_json "synthetic: 16 weights + 3 value_floats" "$J" 19 parameters count
expect_json "synthetic: bytes from dims" "$J" 76 parameters bytes
expect_json "synthetic: external tensors" "$J" 1 parameters external_tensors
expect_json "synthetic: MatMul weight constant" "$J" true quantizable by_op_type MatMul nodes 0 constant_weight
jget "$J" warnings >"$TMP/w"
expect_grep "synthetic: unknown domain warning" "$TMP/w" '"code":"unknown_domain"'
expect_grep "synthetic: unknown domain names the op" "$TMP/w" "FusedGelu"
expect_grep "synthetic: external data warning" "$TMP/w" '"code":"external_data"'
expect_grep "synthetic: IR-8 input with initializer warning" "$TMP/w" '"code":"initializer_inputs"'
expect_no_grep "synthetic: opset 13 needs no opset warning" "$TMP/w" "opset_below"

# ---- hostile strings: invalid UTF-8 and control characters in names --------

# Same-length byte swaps keep the protobuf valid: every "Convolution28" gets
# an invalid UTF-8 byte, every "Plus30" an ESC.
python3 - "$MNIST8" "$TMP/odd-names.onnx" <<'EOF'
import sys
b = open(sys.argv[1], "rb").read()
b = b.replace(b"Convolution28", b"Convolution\xff8").replace(b"Plus30", b"Plus\x1b0")
open(sys.argv[2], "wb").write(b)
EOF
J=$TMP/odd.json
inspect_json "$TMP/odd-names.onnx" "$J"
expect_json "invalid UTF-8 name reported with '?'" "$J" '"Convolution?8"' quantizable by_op_type Conv nodes 0 name
expect_json "control character kept (escaped) in JSON" "$J" '"Plus\u001b0"' quantizable by_op_type Add nodes 0 name
"$ONNXQ" inspect "$TMP/odd-names.onnx" >"$TMP/out" 2>&1
expect_eq "odd names text: exit status" 0 $?
if grep -q $'\x1b' "$TMP/out"; then fail "odd names text: raw ESC byte printed"; else pass; fi
expect_grep "odd names text: ESC shown as '?'" "$TMP/out" "Plus?0"

# ---- bad input: exit 1, exactly one stderr line "onnxq: ...", nothing on stdout

: >"$TMP/empty.onnx"
head -c 4096 /dev/urandom >"$TMP/random.onnx"
size=$(wc -c <"$MNIST8")
head -c $((size / 2)) "$MNIST8" >"$TMP/truncated.onnx"
head -c $((size - 1)) "$MNIST8" >"$TMP/short-by-one.onnx"
printf '\x08\x03' >"$TMP/no-graph.onnx" # a well-formed ModelProto: ir_version 3, no graph

check_bad() {
    local desc=$1 path=$2 mode
    for mode in "" "--json"; do
        # shellcheck disable=SC2086
        "$ONNXQ" inspect $mode "$path" >"$TMP/out" 2>"$TMP/err"
        local rc=$?
        expect_eq "$desc ${mode:-text}: exit status" 1 "$rc"
        expect_eq "$desc ${mode:-text}: stderr line count" 1 "$(wc -l <"$TMP/err" | tr -d ' ')"
        if head -n 1 "$TMP/err" | grep -q '^onnxq: '; then pass; else fail "$desc ${mode:-text}: stderr does not start with 'onnxq: ': $(cat "$TMP/err")"; fi
        expect_grep "$desc ${mode:-text}: the message names the file" "$TMP/err" "$path"
        expect_eq "$desc ${mode:-text}: stdout" "" "$(cat "$TMP/out")"
    done
}
check_bad "missing file" "$TMP/does-not-exist.onnx"
check_bad "empty file" "$TMP/empty.onnx"
check_bad "random bytes" "$TMP/random.onnx"
check_bad "truncated model" "$TMP/truncated.onnx"
check_bad "model short by one byte" "$TMP/short-by-one.onnx"
check_bad "protobuf without a graph" "$TMP/no-graph.onnx"
check_bad "a directory" "$TMP"
check_bad "initializer with negative dims" "$TMP/negative-dims.onnx"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
