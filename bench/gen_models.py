#!/usr/bin/python3
"""Writes benchmark models with random weights (speed only, not accuracy):
  resnet50.onnx  ResNet-50 v1.5 shape: 224x224 input, bottleneck blocks 3-4-6-3,
                 Conv+BatchNorm folded into Conv (as exporters emit), Relu, Add,
                 MaxPool, GlobalAveragePool, Gemm. Batch dim symbolic.
  bert_base.onnx BERT-base encoder shape: 12 layers, hidden 768, 12 heads, FFN 3072,
                 sequence 128, MatMul/Add/Softmax/LayerNormalization(opset 17)/Erf-GELU.
Needs Debian python3-onnx and python3-numpy:  /usr/bin/python3 bench/gen_models.py OUTDIR
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
nodes, inits = [], []
counter = [0]


def name(prefix):
    counter[0] += 1
    return f"{prefix}_{counter[0]}"


def const(arr, prefix="w"):
    n = name(prefix)
    inits.append(numpy_helper.from_array(arr.astype(np.float32), n))
    return n


def op(op_type, inputs, **attrs):
    out = name(op_type.lower())
    nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
    return out


def conv(x, cin, cout, k, stride=1, relu=True):
    w = const(rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k)))
    b = const(rng.standard_normal(cout) * 0.01)
    y = op("Conv", [x, w, b], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
    return op("Relu", [y]) if relu else y


def bottleneck(x, cin, mid, cout, stride):
    y = conv(x, cin, mid, 1)
    y = conv(y, mid, mid, 3, stride)
    y = conv(y, mid, cout, 1, relu=False)
    sc = conv(x, cin, cout, 1, stride, relu=False) if (stride != 1 or cin != cout) else x
    return op("Relu", [op("Add", [y, sc])])


def resnet50(path):
    nodes.clear(), inits.clear()
    x = conv("input", 3, 64, 7, 2)
    x = op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for mid, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            x = bottleneck(x, cin, mid, mid * 4, stride if i == 0 else 1)
            cin = mid * 4
    x = op("GlobalAveragePool", [x])
    x = op("Flatten", [x], axis=1)
    w = const(rng.standard_normal((1000, 2048)) * 0.02)
    b = const(np.zeros(1000))
    nodes.append(helper.make_node("Gemm", [x, w, b], ["logits"], transB=1))
    g = helper.make_graph(nodes, "resnet50",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
    save(g, path, 13)


def layernorm(x, hidden):
    s = const(np.ones(hidden))
    b = const(np.zeros(hidden))
    return op("LayerNormalization", [x, s, b], axis=-1, epsilon=1e-12)


def bert_base(path, layers=12, hidden=768, heads=12, ffn=3072, seq=128):
    nodes.clear(), inits.clear()
    dh = hidden // heads
    x = "hidden_in"
    shp = name("shape")
    inits.append(numpy_helper.from_array(np.array([0, seq, heads, dh], dtype=np.int64), shp))
    shm = name("shape")
    inits.append(numpy_helper.from_array(np.array([0, seq, hidden], dtype=np.int64), shm))
    scale = const(np.array(1.0 / np.sqrt(dh)))
    half, one, sqrt2 = const(np.array(0.5)), const(np.array(1.0)), const(np.array(np.sqrt(2.0)))
    for _ in range(layers):
        def proj(inp, i, o):
            return op("Add", [op("MatMul", [inp, const(rng.standard_normal((i, o)) * 0.02)]), const(np.zeros(o))])
        heads_of = lambda t: op("Transpose", [op("Reshape", [t, shp])], perm=[0, 2, 1, 3])
        q, k, v = (heads_of(proj(x, hidden, hidden)) for _ in range(3))
        kt = op("Transpose", [k], perm=[0, 1, 3, 2])
        att = op("Softmax", [op("Mul", [op("MatMul", [q, kt]), scale])], axis=-1)
        ctx = op("Reshape", [op("Transpose", [op("MatMul", [att, v])], perm=[0, 2, 1, 3]), shm])
        x = layernorm(op("Add", [proj(ctx, hidden, hidden), x]), hidden)
        h = proj(x, hidden, ffn)
        gelu = op("Mul", [op("Mul", [h, half]), op("Add", [op("Erf", [op("Div", [h, sqrt2])]), one])])
        x = layernorm(op("Add", [proj(gelu, ffn, hidden), x]), hidden)
    nodes.append(helper.make_node("Identity", [x], ["hidden_out"]))
    g = helper.make_graph(nodes, "bert_base",
                          [helper.make_tensor_value_info("hidden_in", TensorProto.FLOAT, ["N", seq, hidden])],
                          [helper.make_tensor_value_info("hidden_out", TensorProto.FLOAT, ["N", seq, hidden])],
                          inits)
    save(g, path, 17)


def save(g, path, opset):
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="onnxq-bench")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "bench/models"
    os.makedirs(out, exist_ok=True)
    resnet50(os.path.join(out, "resnet50.onnx"))
    bert_base(os.path.join(out, "bert_base.onnx"))
