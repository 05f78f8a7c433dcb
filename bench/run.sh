#!/usr/bin/env bash
# Latency of onnxq vs ONNX Runtime on the same models and inputs, batch 1 and
# 32, 1 and 2 threads; prints ratios (onnxq / ORT: below 1 means onnxq is faster).
#   bench/run.sh [RUNS]            (after scripts/setup.sh; generates models once)
# Needs: build/cli/onnxq, tools/ort (npm, set up by scripts/setup.sh), and for
# the ResNet-50/BERT-base shaped models Debian python3-onnx + python3-numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20}
SHARED=${OQ_SHARED_DIR:-../shared}
ONNXQ=${ONNXQ:-build/cli/onnxq}
WORK=${BENCH_DIR:-/tmp/onnxq-bench}
mkdir -p "$WORK"
if [ ! -f "$WORK/resnet50.onnx" ] || [ ! -f "$WORK/bert_base.onnx" ]; then
  /usr/bin/python3 bench/gen_models.py "$WORK" >/dev/null
fi

# name | model | per-sample shape (batch first, replaced) | batches
MODELS=(
  "mnist-8|$SHARED/models/mnist-8/model.onnx|1,1,28,28|1"
  "cnn_mnist_pytorch|$SHARED/models/cnn_mnist_pytorch/model.onnx|1,1,28,28|1"
  "fmnist_cnn|$SHARED/models/fmnist/fmnist_cnn.onnx|1,1,28,28|1 32"
  "fmnist_cnn_bn|$SHARED/models/fmnist/fmnist_cnn_bn.onnx|1,1,28,28|1 32"
  "fmnist_vit|$SHARED/models/fmnist/fmnist_vit.onnx|1,1,28,28|1 32"
  "fmnist_vit_op14|$SHARED/models/fmnist/fmnist_vit_op14.onnx|1,1,28,28|1 32"
  "ppocr_cls|$SHARED/models/ppocr_cls/model.onnx|1,3,48,192|1 32"
  "resnet50|$WORK/resnet50.onnx|1,3,224,224|1 32"
  "bert_base|$WORK/bert_base.onnx|1,128,768|1 32"
)

printf "%-18s %5s %7s %12s %12s %7s\n" model batch threads onnxq_ms ort_ms ratio
for entry in "${MODELS[@]}"; do
  IFS='|' read -r name model shape batches <<<"$entry"
  for b in $batches; do
    in="$WORK/${name}_b$b.npy"
    [ -f "$in" ] || node bench/make_input.js "$in" "$b,${shape#*,}"
    for t in 1 2; do
      runs=$RUNS
      [ "$b" -gt 1 ] && [ "$name" = resnet50 -o "$name" = bert_base ] && runs=3
      ours=$("$ONNXQ" run "$model" "$in" --time "$runs" --threads "$t" 2>/dev/null | sed -n 's/.*median \([0-9.]*\) ms.*/\1/p')
      ort=$(node bench/ort_bench.js "$model" "$in" "$runs" "$t" | sed -n 's/.*"median_ms":\([0-9.e+-]*\).*/\1/p')
      ratio=$(awk -v a="$ours" -v b="$ort" 'BEGIN { printf "%.2f", a / b }')
      printf "%-18s %5s %7s %12.3f %12.3f %7s\n" "$name" "$b" "$t" "$ours" "$ort" "$ratio"
    done
  done
done
