/* inspect.c: builds the model summary described in inspect.h from the
 * protobuf structs alone: IO, opsets, op counts, parameter sizes computed
 * from dims (no data decoded), quantizable nodes, and the warnings that
 * matter before quantizing. */
#include "inspect.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "dtype.h"
#include "tensorproto.h"

/* The loader's wire check bounds message nesting already; this guards
 * models built or edited in memory, whose subgraphs recurse here. */
#define MAX_GRAPH_DEPTH 64

typedef enum { KIND_WEIGHTED, KIND_ELEMENTWISE, KIND_ACTIVATION, KIND_POOL, KIND_DATA } quant_kind;

static const char *const kind_names[] = {
    [KIND_WEIGHTED] = "weighted",
    [KIND_ELEMENTWISE] = "elementwise",
    [KIND_ACTIVATION] = "activation",
    [KIND_POOL] = "pool",
    [KIND_DATA] = "data_movement",
};

/* Op types with an integer kernel in ONNX Runtime's QDQ path: the ops of
 * onnxruntime/python/tools/quantization/registry.py (QDQRegistry and
 * QLinearOpsRegistry) whose DQ -> op -> Q pattern ORT runs as the integer
 * form named here. Relu and Clip are left out on purpose: they fold into
 * the producer's output scale rather than getting a kernel of their own.
 * "8-bit" forms are the same op run on int8/uint8 data. */
static const struct {
    const char *op;
    quant_kind kind;
    const char *integer_form;
} quant_table[] = {
    {"Conv", KIND_WEIGHTED, "QLinearConv"},
    {"ConvTranspose", KIND_WEIGHTED, "com.microsoft:QLinearConvTranspose"},
    {"Gemm", KIND_WEIGHTED, "com.microsoft:QGemm"},
    {"MatMul", KIND_WEIGHTED, "QLinearMatMul"},
    {"Add", KIND_ELEMENTWISE, "com.microsoft:QLinearAdd"},
    {"Mul", KIND_ELEMENTWISE, "com.microsoft:QLinearMul"},
    {"Sigmoid", KIND_ACTIVATION, "com.microsoft:QLinearSigmoid"},
    {"LeakyRelu", KIND_ACTIVATION, "com.microsoft:QLinearLeakyRelu"},
    {"Softmax", KIND_ACTIVATION, "com.microsoft:QLinearSoftmax"},
    {"GlobalAveragePool", KIND_POOL, "com.microsoft:QLinearGlobalAveragePool"},
    {"AveragePool", KIND_POOL, "com.microsoft:QLinearAveragePool"},
    {"MaxPool", KIND_POOL, "MaxPool 8-bit"},
    {"Concat", KIND_DATA, "com.microsoft:QLinearConcat"},
    {"Where", KIND_DATA, "com.microsoft:QLinearWhere"},
    {"Resize", KIND_DATA, "Resize 8-bit"},
    {"Split", KIND_DATA, "Split 8-bit"},
    {"Transpose", KIND_DATA, "Transpose 8-bit"},
    {"Reshape", KIND_DATA, "Reshape 8-bit"},
    {"Squeeze", KIND_DATA, "Squeeze 8-bit"},
    {"Unsqueeze", KIND_DATA, "Unsqueeze 8-bit"},
    {"Gather", KIND_DATA, "Gather 8-bit"},
};
#define QUANT_TABLE_LEN (sizeof quant_table / sizeof quant_table[0])

/* Ops whose presence means the model was quantized already (ONNX's own
 * and ONNX Runtime's com.microsoft integer ops). QLinear* is matched by
 * prefix. */
static const char *const quantized_ops[] = {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
    "ConvInteger", "QGemm", "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
};

typedef struct {
    int64_t tensors, count, bytes;
} dtype_stats;

typedef struct {
    oq_error *err;
    oq_status st; /* first failure; later steps become no-ops */
    dtype_stats by_dtype[OQ_DTYPE_COUNT];
    int64_t tensors, count, bytes;
    int64_t initializers, constant_nodes, external, sub_nodes, quantized;
    json_t *main_ops;      /* op key -> n, main graph */
    json_t *sub_ops;       /* op key -> n, subgraphs */
    json_t *domains;       /* domain -> n, all graphs */
    json_t *unknown;       /* domain -> {op: n} for domains onnxq does not know */
    json_t *quantized_ops; /* op -> n */
} ictx;

/* ---- small helpers -------------------------------------------------------- */

static void fail_nomem(ictx *c) {
    if (c->st == OQ_OK)
        c->st = oq_err(c->err, OQ_ENOMEM, "out of memory building the model summary");
}

static const char *str_or_empty(const char *s) { return s ? s : ""; }

static bool is_default_domain(const char *d) {
    return !d || !*d || strcmp(d, "ai.onnx") == 0;
}

/* onnxq's kernels implement the ONNX operator set only. */
static bool is_known_domain(const char *d) { return is_default_domain(d); }

static bool is_quantized_op(const char *op) {
    if (strncmp(op, "QLinear", 7) == 0)
        return true;
    for (size_t i = 0; i < sizeof quantized_ops / sizeof quantized_ops[0]; i++)
        if (strcmp(op, quantized_ops[i]) == 0)
            return true;
    return false;
}

/* Length of the strict UTF-8 sequence at s (what jansson accepts: no
 * overlongs, surrogates or code points past U+10FFFF), 0 if invalid. */
static size_t utf8_seq(const unsigned char *s) {
    unsigned char b = s[0];
    size_t n;
    uint32_t cp;
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF) {
        n = 2;
        cp = b & 0x1Fu;
    } else if (b >= 0xE0 && b <= 0xEF) {
        n = 3;
        cp = b & 0x0Fu;
    } else if (b >= 0xF0 && b <= 0xF4) {
        n = 4;
        cp = b & 0x07u;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) /* also stops at the terminating NUL */
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* protobuf-c does not check UTF-8 and jansson refuses invalid strings, so
 * model strings pass through here: returns s itself when valid, else a
 * copy with each bad byte replaced by '?' stored in *tmp (caller frees).
 * NULL only when out of memory. */
static const char *clean_utf8(ictx *c, const char *s, char **tmp) {
    *tmp = NULL;
    if (!s)
        return "";
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, n;
    while (p[i] && (n = utf8_seq(p + i)) != 0)
        i += n;
    if (!p[i])
        return s;
    char *out = malloc(strlen(s) + 1); /* never longer: one '?' per bad byte */
    if (!out) {
        fail_nomem(c);
        return NULL;
    }
    size_t o = 0;
    for (i = 0; p[i];) {
        n = utf8_seq(p + i);
        if (n) {
            memcpy(out + o, p + i, n);
            o += n;
            i += n;
        } else {
            out[o++] = '?';
            i++;
        }
    }
    out[o] = '\0';
    *tmp = out;
    return out;
}

static json_t *jstr(ictx *c, const char *s) {
    char *tmp;
    const char *v = clean_utf8(c, s, &tmp);
    json_t *j = v ? json_string(v) : NULL;
    free(tmp);
    if (!j)
        fail_nomem(c);
    return j;
}

static json_t *jint(ictx *c, int64_t v) {
    json_t *j = json_integer((json_int_t)v);
    if (!j)
        fail_nomem(c);
    return j;
}

static json_t *jobj(ictx *c) {
    json_t *j = json_object();
    if (!j)
        fail_nomem(c);
    return j;
}

static json_t *jarr(ictx *c) {
    json_t *j = json_array();
    if (!j)
        fail_nomem(c);
    return j;
}

/* Steals v (jansson's _new convention), also on failure. key must be
 * valid UTF-8: a literal or a string that went through clean_utf8. */
static void put(ictx *c, json_t *obj, const char *key, json_t *v) {
    if (!v || json_object_set_new(obj, key, v) != 0)
        fail_nomem(c);
}

static void append(ictx *c, json_t *arr, json_t *v) {
    if (!v || json_array_append_new(arr, v) != 0)
        fail_nomem(c);
}

/* obj[key] += by, creating the entry; key is taken from the model. */
static void bump(ictx *c, json_t *obj, const char *raw_key, int64_t by) {
    char *tmp;
    const char *key = clean_utf8(c, raw_key, &tmp);
    if (!key || !obj) {
        free(tmp);
        return;
    }
    json_t *v = json_object_get(obj, key);
    if (v)
        json_integer_set(v, json_integer_value(v) + by);
    else
        put(c, obj, key, jint(c, by));
    free(tmp);
}

/* "domain:op" for non-default domains so equal op names stay apart. */
static char *op_key(ictx *c, const Onnx__NodeProto *n) {
    const char *op = str_or_empty(n->op_type);
    const char *dom = is_default_domain(n->domain) ? NULL : n->domain;
    size_t len = strlen(op), total;
    if (dom && (!oq_add_size(len, strlen(dom), &total) || !oq_add_size(total, 2, &total))) {
        fail_nomem(c);
        return NULL;
    }
    if (!dom)
        total = len + 1;
    char *key = malloc(total);
    if (!key) {
        fail_nomem(c);
        return NULL;
    }
    if (dom)
        snprintf(key, total, "%s:%s", dom, op);
    else
        memcpy(key, op, total);
    return key;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A copy of obj with its keys in byte order, so output does not depend on
 * the order nodes appear in. */
static json_t *sorted_copy(ictx *c, json_t *obj) {
    json_t *out = jobj(c);
    size_t n = json_object_size(obj), bytes;
    if (!out || n == 0)
        return out;
    const char **keys = oq_mul_size(n, sizeof *keys, &bytes) ? malloc(bytes) : NULL;
    if (!keys) {
        json_decref(out);
        fail_nomem(c);
        return NULL;
    }
    size_t i = 0;
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) keys[i++] = key;
    qsort(keys, n, sizeof *keys, cmp_str);
    for (i = 0; i < n; i++)
        if (json_object_set(out, keys[i], json_object_get(obj, keys[i])) != 0)
            fail_nomem(c);
    free(keys);
    return out;
}

/* A name set on a jansson object: keys are used as given (never dumped). */
static void set_add(ictx *c, json_t *set, const char *name) {
    if (set && name && *name && json_object_set_new_nocheck(set, name, json_true()) != 0)
        fail_nomem(c);
}

static bool set_has(json_t *set, const char *name) {
    return name && *name && json_object_get(set, name) != NULL;
}

/* ---- parameters ----------------------------------------------------------- */

static void add_values(ictx *c, int dtype, int64_t count, int64_t bytes, const char *what,
                       const char *name) {
    dtype_stats *s = &c->by_dtype[dtype];
    if (!oq_add_i64(s->tensors, 1, &s->tensors) || !oq_add_i64(s->count, count, &s->count) ||
        !oq_add_i64(s->bytes, bytes, &s->bytes) || !oq_add_i64(c->tensors, 1, &c->tensors) ||
        !oq_add_i64(c->count, count, &c->count) || !oq_add_i64(c->bytes, bytes, &c->bytes)) {
        if (c->st == OQ_OK)
            c->st = oq_err(c->err, OQ_EMODEL, "%s '%s': parameter totals overflow", what, name);
    }
}

/* Sizes one tensor from its dims and data type; its data is not read. */
static void add_tensor(ictx *c, const Onnx__TensorProto *tp, const char *what, const char *owner) {
    if (!tp || c->st != OQ_OK)
        return;
    const char *name = tp->name && *tp->name ? tp->name : owner && *owner ? owner : "<unnamed>";
    int dt = tp->has_data_type ? tp->data_type : OQ_DTYPE_UNDEFINED;
    if (!oq_dtype_valid(dt)) {
        c->st = oq_err(c->err, OQ_EMODEL, "%s '%s': invalid data_type %d", what, name, dt);
        return;
    }
    int64_t count = 1;
    for (size_t i = 0; i < tp->n_dims; i++) {
        if (tp->dims[i] < 0) {
            c->st = oq_err(c->err, OQ_EMODEL, "%s '%s': dims[%zu] is negative (%lld)", what, name, i,
                           (long long)tp->dims[i]);
            return;
        }
        if (!oq_mul_i64(count, tp->dims[i], &count)) {
            c->st = oq_err(c->err, OQ_EMODEL, "%s '%s': the product of its dims overflows", what, name);
            return;
        }
    }
    int64_t bytes = 0;
    if (dt == OQ_DTYPE_STRING) {
        for (size_t i = 0; i < tp->n_string_data; i++)
            if (tp->string_data[i].len > (size_t)INT64_MAX ||
                !oq_add_i64(bytes, (int64_t)tp->string_data[i].len, &bytes)) {
                c->st = oq_err(c->err, OQ_EMODEL, "%s '%s': string sizes overflow", what, name);
                return;
            }
    } else {
        size_t nb;
        if ((uint64_t)count > SIZE_MAX || !oq_dtype_nbytes((oq_dtype)dt, (size_t)count, &nb) ||
            nb > (size_t)INT64_MAX) {
            c->st = oq_err(c->err, OQ_EMODEL, "%s '%s': byte size overflows", what, name);
            return;
        }
        bytes = (int64_t)nb;
    }
    if (oq_tensor_proto_is_external(tp))
        c->external++;
    add_values(c, dt, count, bytes, what, name);
}

static void add_sparse(ictx *c, const Onnx__SparseTensorProto *sp, const char *what,
                       const char *owner) {
    if (!sp)
        return;
    add_tensor(c, sp->values, what, owner);
    add_tensor(c, sp->indices, what, owner);
}

/* A Constant node's value, whichever of its attributes (ONNX Constant-13)
 * holds it. */
static void add_constant(ictx *c, const Onnx__NodeProto *n) {
    const char *owner = n->name && *n->name ? n->name
                        : n->n_output > 0    ? n->output[0]
                                             : "<unnamed>";
    for (size_t i = 0; i < n->n_attribute && c->st == OQ_OK; i++) {
        const Onnx__AttributeProto *at = n->attribute[i];
        const char *an = str_or_empty(at->name);
        if (strcmp(an, "value") == 0) {
            add_tensor(c, at->t, "Constant node", owner);
        } else if (strcmp(an, "sparse_value") == 0) {
            add_sparse(c, at->sparse_tensor, "Constant node", owner);
        } else if (strcmp(an, "value_float") == 0) {
            add_values(c, OQ_DTYPE_FLOAT, 1, 4, "Constant node", owner);
        } else if (strcmp(an, "value_floats") == 0) {
            add_values(c, OQ_DTYPE_FLOAT, (int64_t)at->n_floats, (int64_t)at->n_floats * 4,
                       "Constant node", owner);
        } else if (strcmp(an, "value_int") == 0) {
            add_values(c, OQ_DTYPE_INT64, 1, 8, "Constant node", owner);
        } else if (strcmp(an, "value_ints") == 0) {
            add_values(c, OQ_DTYPE_INT64, (int64_t)at->n_ints, (int64_t)at->n_ints * 8,
                       "Constant node", owner);
        } else if (strcmp(an, "value_string") == 0) {
            add_values(c, OQ_DTYPE_STRING, 1, (int64_t)at->s.len, "Constant node", owner);
        } else if (strcmp(an, "value_strings") == 0) {
            int64_t bytes = 0;
            for (size_t k = 0; k < at->n_strings; k++)
                bytes += (int64_t)at->strings[k].len; /* bounded by the 2 GiB model */
            add_values(c, OQ_DTYPE_STRING, (int64_t)at->n_strings, bytes, "Constant node", owner);
        }
    }
}

/* ---- graph walk ----------------------------------------------------------- */

/* Counts nodes, parameters, domains and quantized ops of g and, through
 * node attributes, of every subgraph below it. */
static void scan_graph(ictx *c, const Onnx__GraphProto *g, int depth) {
    if (!g || c->st != OQ_OK)
        return;
    if (depth > MAX_GRAPH_DEPTH) {
        c->st = oq_err(c->err, OQ_ELIMIT, "graph '%s': subgraphs nest deeper than %d levels",
                       str_or_empty(g->name), MAX_GRAPH_DEPTH);
        return;
    }
    for (size_t i = 0; i < g->n_initializer; i++) {
        add_tensor(c, g->initializer[i], "initializer", NULL);
        c->initializers++;
    }
    for (size_t i = 0; i < g->n_sparse_initializer; i++) {
        add_sparse(c, g->sparse_initializer[i], "sparse initializer", NULL);
        c->initializers++;
    }
    for (size_t i = 0; i < g->n_node && c->st == OQ_OK; i++) {
        const Onnx__NodeProto *n = g->node[i];
        const char *op = str_or_empty(n->op_type);
        char *key = op_key(c, n);
        if (!key)
            return;
        bump(c, depth == 0 ? c->main_ops : c->sub_ops, key, 1);
        free(key);
        if (depth > 0)
            c->sub_nodes++;
        bump(c, c->domains, is_default_domain(n->domain) ? "ai.onnx" : n->domain, 1);
        if (is_default_domain(n->domain) && strcmp(op, "Constant") == 0) {
            c->constant_nodes++;
            add_constant(c, n);
        }
        if (is_quantized_op(op)) {
            c->quantized++;
            bump(c, c->quantized_ops, op, 1);
        }
        if (!is_known_domain(n->domain)) {
            char *tmp;
            const char *dom = clean_utf8(c, n->domain, &tmp);
            json_t *ops = dom ? json_object_get(c->unknown, dom) : NULL;
            if (dom && !ops) {
                put(c, c->unknown, dom, jobj(c));
                ops = json_object_get(c->unknown, dom); /* NULL if put failed */
            }
            bump(c, ops, op, 1);
            free(tmp);
        }
        for (size_t k = 0; k < n->n_attribute; k++) {
            const Onnx__AttributeProto *at = n->attribute[k];
            scan_graph(c, at->g, depth + 1);
            for (size_t j = 0; j < at->n_graphs; j++)
                scan_graph(c, at->graphs[j], depth + 1);
        }
    }
}

/* ---- sections ------------------------------------------------------------- */

static json_t *shape_json(ictx *c, const Onnx__TensorShapeProto *shape) {
    if (!shape)
        return json_null();
    json_t *dims = jarr(c);
    for (size_t i = 0; dims && i < shape->n_dim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = shape->dim[i];
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
            append(c, dims, jint(c, d->dim_value));
        else if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
                 d->dim_param && *d->dim_param)
            append(c, dims, jstr(c, d->dim_param));
        else
            append(c, dims, json_null());
    }
    return dims;
}

static json_t *value_info_json(ictx *c, const Onnx__ValueInfoProto *vi) {
    json_t *o = jobj(c);
    const Onnx__TypeProto *t = vi->type;
    const char *type = "unknown";
    bool has_elem = false;
    int elem = 0;
    const Onnx__TensorShapeProto *shape = NULL;
    if (t) {
        switch (t->value_case) {
        case ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE:
            type = "tensor";
            if (t->tensor_type) {
                has_elem = t->tensor_type->has_elem_type;
                elem = t->tensor_type->elem_type;
                shape = t->tensor_type->shape;
            }
            break;
        case ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE:
            type = "sparse_tensor";
            if (t->sparse_tensor_type) {
                has_elem = t->sparse_tensor_type->has_elem_type;
                elem = t->sparse_tensor_type->elem_type;
                shape = t->sparse_tensor_type->shape;
            }
            break;
        case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE:
            type = "sequence";
            break;
        case ONNX__TYPE_PROTO__VALUE_MAP_TYPE:
            type = "map";
            break;
        case ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE:
            type = "optional";
            break;
        default:
            break;
        }
    }
    put(c, o, "name", jstr(c, vi->name));
    put(c, o, "type", jstr(c, type));
    put(c, o, "dtype", has_elem && oq_dtype_valid(elem) ? jstr(c, oq_dtype_name(elem)) : json_null());
    put(c, o, "shape", shape_json(c, shape));
    return o;
}

/* Inputs minus those backed by an initializer; returns how many were. */
static int64_t io_section(ictx *c, json_t *root, const Onnx__GraphProto *g, json_t *inits) {
    json_t *inputs = jarr(c), *outputs = jarr(c), *init_inputs = jarr(c);
    int64_t n_init_inputs = 0;
    for (size_t i = 0; i < g->n_input; i++) {
        if (set_has(inits, g->input[i]->name)) {
            append(c, init_inputs, jstr(c, g->input[i]->name));
            n_init_inputs++;
        } else {
            append(c, inputs, value_info_json(c, g->input[i]));
        }
    }
    for (size_t i = 0; i < g->n_output; i++)
        append(c, outputs, value_info_json(c, g->output[i]));
    put(c, root, "inputs", inputs);
    put(c, root, "outputs", outputs);
    put(c, root, "initializer_inputs", init_inputs);
    return n_init_inputs;
}

static void nodes_section(ictx *c, json_t *root, const Onnx__ModelProto *mp) {
    json_t *nodes = jobj(c);
    put(c, nodes, "count", jint(c, (int64_t)mp->graph->n_node));
    put(c, nodes, "by_op_type", sorted_copy(c, c->main_ops));
    put(c, nodes, "by_domain", sorted_copy(c, c->domains));
    put(c, nodes, "subgraph_count", jint(c, c->sub_nodes));
    put(c, nodes, "subgraph_by_op_type", sorted_copy(c, c->sub_ops));
    put(c, nodes, "local_functions", jint(c, (int64_t)mp->n_functions));
    put(c, root, "nodes", nodes);
}

static void parameters_section(ictx *c, json_t *root) {
    json_t *p = jobj(c), *by = jobj(c);
    put(c, p, "count", jint(c, c->count));
    put(c, p, "bytes", jint(c, c->bytes));
    put(c, p, "tensors", jint(c, c->tensors));
    put(c, p, "initializers", jint(c, c->initializers));
    put(c, p, "constant_nodes", jint(c, c->constant_nodes));
    put(c, p, "external_tensors", jint(c, c->external));
    /* Entries in ONNX data-type order: float first, as readers expect. */
    for (int dt = 1; dt < OQ_DTYPE_COUNT; dt++) {
        const dtype_stats *s = &c->by_dtype[dt];
        if (!s->tensors)
            continue;
        json_t *e = jobj(c);
        put(c, e, "tensors", jint(c, s->tensors));
        put(c, e, "count", jint(c, s->count));
        put(c, e, "bytes", jint(c, s->bytes));
        put(c, by, oq_dtype_name(dt), e);
    }
    put(c, p, "by_dtype", by);
    put(c, root, "parameters", p);
}

static int quant_index(const char *op) {
    for (size_t i = 0; i < QUANT_TABLE_LEN; i++)
        if (strcmp(op, quant_table[i].op) == 0)
            return (int)i;
    return -1;
}

/* Ops whose output differs between runs even on constant inputs. */
static bool is_random_op(const char *op) {
    return strncmp(op, "Random", 6) == 0 || strcmp(op, "Multinomial") == 0 ||
           strcmp(op, "Bernoulli") == 0;
}

/* Element-type classes: quantization only touches float tensors, and a
 * PyTorch export is full of int64 shape arithmetic (Shape -> Gather ->
 * Unsqueeze -> Concat) that uses the same op types. */
enum { VT_UNKNOWN = 0, VT_FLOAT = 1, VT_OTHER = 2 };

static int dtype_class(int dt) {
    switch (dt) {
    case OQ_DTYPE_UNDEFINED:
        return VT_UNKNOWN;
    case OQ_DTYPE_FLOAT:
    case OQ_DTYPE_FLOAT16:
    case OQ_DTYPE_DOUBLE:
    case OQ_DTYPE_BFLOAT16:
        return VT_FLOAT;
    default:
        return oq_dtype_valid(dt) ? VT_OTHER : VT_UNKNOWN;
    }
}

static bool op_in(const char *op, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(op, list[i]) == 0)
            return true;
    return false;
}

/* Ops whose every output is integer or bool, whatever their inputs. */
static const char *const non_float_ops[] = {
    "Shape", "Size", "NonZero", "ArgMax", "ArgMin", "Equal", "Less", "LessOrEqual",
    "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf",
    "NonMaxSuppression", "BitShift",
};
/* Ops whose output 0 has the element type of their data inputs. */
static const char *const same_type_ops[] = {
    "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split",
    "Expand", "Tile", "Gather", "GatherElements", "GatherND", "Concat", "Pad", "Add", "Sub",
    "Mul", "Div", "Neg", "Abs", "Min", "Max", "Mod", "Sum", "Mean", "Relu", "Clip", "Sign",
    "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean", "CumSum", "Range",
    "ScatterND", "ScatterElements", "Dropout", "DepthToSpace", "SpaceToDepth", "Compress",
    "Trilu", "TopK", "Unique", "MaxPool", "Resize", "ReverseSequence",
};

static int class_of(json_t *types, const char *name) {
    return name && *name ? (int)json_integer_value(json_object_get(types, name)) : VT_UNKNOWN;
}

static void set_class(ictx *c, json_t *types, const char *name, int cls) {
    if (!types || !name || !*name || cls == VT_UNKNOWN || class_of(types, name) != VT_UNKNOWN)
        return; /* the first (declared) type wins */
    json_t *v = json_integer(cls);
    if (!v || json_object_set_new_nocheck(types, name, v) != 0)
        fail_nomem(c);
}

static const Onnx__AttributeProto *find_attr(const Onnx__NodeProto *n, const char *name) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (strcmp(str_or_empty(n->attribute[i]->name), name) == 0)
            return n->attribute[i];
    return NULL;
}

/* The element-type class of output k of node n (ONNX operator specs). */
static int output_class(json_t *types, const Onnx__NodeProto *n, size_t k) {
    const char *op = str_or_empty(n->op_type);
    if (!is_default_domain(n->domain))
        return VT_UNKNOWN;
    if (op_in(op, non_float_ops, sizeof non_float_ops / sizeof non_float_ops[0]))
        return VT_OTHER;
    if (strcmp(op, "Cast") == 0) {
        const Onnx__AttributeProto *to = find_attr(n, "to");
        return to && to->has_i && to->i >= 0 && to->i < OQ_DTYPE_COUNT ? dtype_class((int)to->i)
                                                                     : VT_UNKNOWN;
    }
    if (strcmp(op, "CastLike") == 0)
        return n->n_input > 1 ? class_of(types, n->input[1]) : VT_UNKNOWN;
    if (strcmp(op, "ConstantOfShape") == 0) {
        const Onnx__AttributeProto *v = find_attr(n, "value");
        return v && v->t && v->t->has_data_type ? dtype_class(v->t->data_type) : VT_FLOAT;
    }
    if (strcmp(op, "Where") == 0) {
        int cls = n->n_input > 1 ? class_of(types, n->input[1]) : VT_UNKNOWN;
        return cls != VT_UNKNOWN || n->n_input < 3 ? cls : class_of(types, n->input[2]);
    }
    /* Indices outputs: TopK's and MaxPool's second, Unique's others. */
    if (k > 0 && (strcmp(op, "TopK") == 0 || strcmp(op, "MaxPool") == 0 ||
                  strcmp(op, "Unique") == 0))
        return VT_OTHER;
    if (k > 0 && strcmp(op, "Split") != 0)
        return VT_UNKNOWN;
    if (!op_in(op, same_type_ops, sizeof same_type_ops / sizeof same_type_ops[0]))
        return VT_UNKNOWN;
    for (size_t i = 0; i < n->n_input; i++) {
        int cls = class_of(types, n->input[i]);
        if (cls != VT_UNKNOWN)
            return cls;
        if (strcmp(op, "Concat") != 0 && strcmp(op, "Sum") != 0 && strcmp(op, "Mean") != 0 &&
            strcmp(op, "Min") != 0 && strcmp(op, "Max") != 0)
            break; /* only variadic ops may look past input 0 */
    }
    return VT_UNKNOWN;
}

static void declare_types(ictx *c, json_t *types, Onnx__ValueInfoProto **vis, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const Onnx__TypeProto *t = vis[i]->type;
        if (t && t->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE && t->tensor_type &&
            t->tensor_type->has_elem_type)
            set_class(c, types, vis[i]->name, dtype_class(t->tensor_type->elem_type));
    }
}

/* What the main graph's values are: `consts` = initializers and Constant
 * outputs; `folds` = values computed from constants only (mnist-8 feeds
 * MatMul a Reshape of an initializer); `types` = element-type class where
 * declared or derivable. One pass in node order, which ONNX requires to be
 * topological; an unsorted graph only loses marks. */
static void analyse_values(ictx *c, const Onnx__GraphProto *g, json_t *consts, json_t *folds,
                           json_t *types) {
    declare_types(c, types, g->input, g->n_input);
    declare_types(c, types, g->value_info, g->n_value_info);
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *tp = g->initializer[i];
        set_add(c, consts, tp->name);
        set_class(c, types, tp->name, tp->has_data_type ? dtype_class(tp->data_type) : VT_UNKNOWN);
    }
    for (size_t i = 0; i < g->n_node && c->st == OQ_OK; i++) {
        const Onnx__NodeProto *n = g->node[i];
        const char *op = str_or_empty(n->op_type);
        if (is_default_domain(n->domain) && strcmp(op, "Constant") == 0) {
            const Onnx__AttributeProto *at = n->n_attribute ? n->attribute[0] : NULL;
            const char *an = at ? str_or_empty(at->name) : "";
            int cls = VT_UNKNOWN;
            if (at && at->t && at->t->has_data_type)
                cls = dtype_class(at->t->data_type);
            else if (strncmp(an, "value_float", 11) == 0)
                cls = VT_FLOAT;
            else if (strncmp(an, "value_int", 9) == 0 || strncmp(an, "value_string", 12) == 0)
                cls = VT_OTHER;
            for (size_t k = 0; k < n->n_output; k++) {
                set_add(c, consts, n->output[k]);
                set_class(c, types, n->output[k], cls);
            }
            continue;
        }
        bool folds_here = is_default_domain(n->domain) && !is_random_op(op) && n->n_input > 0;
        for (size_t k = 0; folds_here && k < n->n_attribute; k++)
            if (n->attribute[k]->g || n->attribute[k]->n_graphs)
                folds_here = false; /* a body may read outer, non-constant values */
        for (size_t k = 0; folds_here && k < n->n_input; k++) {
            const char *in = n->input[k];
            if (*in && !set_has(consts, in) && !set_has(folds, in))
                folds_here = false;
        }
        for (size_t k = 0; k < n->n_output; k++) {
            if (folds_here)
                set_add(c, folds, n->output[k]);
            set_class(c, types, n->output[k], output_class(types, n, k));
        }
    }
}

/* Returns the number of quantizable nodes. Nodes of a quantizable op type
 * are left out when they only compute constants (folded before quantizing)
 * or when their data input is known not to be float (shape arithmetic). */
static int64_t quantizable_section(ictx *c, json_t *root, const Onnx__GraphProto *g) {
    json_t *consts = jobj(c), *folds = jobj(c), *types = jobj(c);
    analyse_values(c, g, consts, folds, types);

    json_t *lists[QUANT_TABLE_LEN] = {0};
    int64_t counts[QUANT_TABLE_LEN] = {0}, constant[QUANT_TABLE_LEN] = {0},
            foldable[QUANT_TABLE_LEN] = {0}, total = 0, skip_const = 0, skip_int = 0;
    for (size_t i = 0; i < g->n_node && c->st == OQ_OK; i++) {
        const Onnx__NodeProto *n = g->node[i];
        if (!is_default_domain(n->domain))
            continue;
        const char *op = str_or_empty(n->op_type);
        int q = quant_index(op);
        if (q < 0)
            continue;
        if (n->n_output > 0 && set_has(folds, n->output[0])) {
            skip_const++;
            continue;
        }
        size_t data_in = strcmp(op, "Where") == 0 ? 1 : 0;
        if (n->n_input > data_in && class_of(types, n->input[data_in]) == VT_OTHER) {
            skip_int++;
            continue;
        }
        if (!lists[q])
            lists[q] = jarr(c);
        json_t *e = jobj(c);
        put(c, e, "index", jint(c, (int64_t)i));
        put(c, e, "name", n->name && *n->name ? jstr(c, n->name) : json_null());
        if (quant_table[q].kind == KIND_WEIGHTED) {
            const char *w = n->n_input > 1 ? n->input[1] : NULL;
            bool is_const = set_has(consts, w), folds_to = is_const || set_has(folds, w);
            constant[q] += is_const;
            foldable[q] += folds_to;
            put(c, e, "constant_weight", json_boolean(is_const));
            put(c, e, "foldable_weight", json_boolean(folds_to));
        } else {
            put(c, e, "constant_weight", json_null());
            put(c, e, "foldable_weight", json_null());
        }
        append(c, lists[q], e);
        counts[q]++;
        total++;
    }

    json_t *qz = jobj(c), *by = jobj(c);
    put(c, qz, "count", jint(c, total));
    put(c, qz, "skipped_constant", jint(c, skip_const));
    put(c, qz, "skipped_non_float", jint(c, skip_int));
    for (size_t q = 0; q < QUANT_TABLE_LEN; q++) {
        if (!lists[q])
            continue;
        json_t *e = jobj(c);
        put(c, e, "kind", jstr(c, kind_names[quant_table[q].kind]));
        put(c, e, "integer_form", jstr(c, quant_table[q].integer_form));
        put(c, e, "count", jint(c, counts[q]));
        put(c, e, "constant_weight_count",
            quant_table[q].kind == KIND_WEIGHTED ? jint(c, constant[q]) : json_null());
        put(c, e, "foldable_weight_count",
            quant_table[q].kind == KIND_WEIGHTED ? jint(c, foldable[q]) : json_null());
        put(c, e, "nodes", lists[q]); /* steals, also on failure */
        lists[q] = NULL;
        put(c, by, quant_table[q].op, e);
    }
    for (size_t q = 0; q < QUANT_TABLE_LEN; q++)
        json_decref(lists[q]);
    put(c, qz, "by_op_type", by);
    put(c, root, "quantizable", qz);
    json_decref(consts);
    json_decref(folds);
    json_decref(types);
    return total;
}

static void warn(ictx *c, json_t *warnings, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void warn(ictx *c, json_t *warnings, const char *code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *w = jobj(c);
    put(c, w, "code", jstr(c, code));
    put(c, w, "message", jstr(c, msg));
    append(c, warnings, w);
}

/* "A 2, B 1" from an {op: n} object, truncated to fit buf. */
static const char *ops_list(json_t *ops, char *buf, size_t len) {
    size_t used = 0;
    const char *key;
    json_t *v;
    buf[0] = '\0';
    json_object_foreach(ops, key, v) {
        int n = snprintf(buf + used, len - used, "%s%s %lld", used ? ", " : "", key,
                         (long long)json_integer_value(v));
        if (n < 0 || (size_t)n >= len - used) {
            buf[used] = '\0';
            snprintf(buf + used, len - used, "%s...", used ? ", " : "");
            break;
        }
        used += (size_t)n;
    }
    return buf;
}

static void warnings_section(ictx *c, json_t *root, const Onnx__ModelProto *mp,
                             bool has_default, int64_t default_opset, int64_t init_inputs,
                             int64_t quantizable) {
    json_t *w = jarr(c);
    char list[512];
    if (!has_default)
        warn(c, w, "no_default_opset",
             "the model imports no opset for the default domain (ai.onnx)");
    /* QuantizeLinear/DequantizeLinear were added in opset 10; their axis
     * attribute (per-channel scales) in opset 13. */
    if (has_default && default_opset < 10)
        warn(c, w, "opset_below_10",
             "default-domain opset %lld < 10: QuantizeLinear/DequantizeLinear need opset >= 10",
             (long long)default_opset);
    if (has_default && default_opset < 13)
        warn(c, w, "opset_below_13",
             "default-domain opset %lld < 13: per-channel quantization needs opset >= 13; "
             "onnxq will raise the opset",
             (long long)default_opset);
    if (c->quantized > 0) {
        json_t *sorted = sorted_copy(c, c->quantized_ops);
        warn(c, w, "already_quantized", "model already contains %lld quantized node(s) (%s): already quantized",
             (long long)c->quantized, sorted ? ops_list(sorted, list, sizeof list) : "");
        json_decref(sorted);
    }
    json_t *unknown = sorted_copy(c, c->unknown);
    const char *dom;
    json_t *ops;
    json_object_foreach(unknown, dom, ops) {
        int64_t n = 0;
        const char *k;
        json_t *v;
        json_object_foreach(ops, k, v) n += json_integer_value(v);
        json_t *sorted = sorted_copy(c, ops);
        warn(c, w, "unknown_domain", "%lld node(s) use domain '%s' (%s), which onnxq does not know",
             (long long)n, dom, sorted ? ops_list(sorted, list, sizeof list) : "");
        json_decref(sorted);
    }
    json_decref(unknown);
    if (c->external > 0)
        warn(c, w, "external_data", "%lld tensor(s) keep their data in external files",
             (long long)c->external);
    if (init_inputs > 0 && mp->has_ir_version && mp->ir_version >= 4)
        warn(c, w, "initializer_inputs",
             "%lld graph input(s) also have an initializer (an overridable default); "
             "they are reported as weights, not inputs",
             (long long)init_inputs);
    if (quantizable == 0)
        warn(c, w, "no_quantizable_nodes", "no node has an op type onnxq quantizes");
    put(c, root, "warnings", w);
}

/* ---- entry point ---------------------------------------------------------- */

oq_status oq_inspect_model(oq_model *m, json_t **out, oq_error *err) {
    *out = NULL;
    Onnx__ModelProto *mp = m ? oq_model_proto(m) : NULL;
    if (!mp || !mp->graph)
        return oq_err(err, OQ_EINVAL, "inspect: no model or the model has no graph");
    const Onnx__GraphProto *g = mp->graph;

    ictx c = {.err = err};
    c.main_ops = jobj(&c);
    c.sub_ops = jobj(&c);
    c.domains = jobj(&c);
    c.unknown = jobj(&c);
    c.quantized_ops = jobj(&c);
    json_t *inits = jobj(&c), *root = jobj(&c);
    for (size_t i = 0; i < g->n_initializer; i++)
        set_add(&c, inits, g->initializer[i]->name);

    put(&c, root, "ir_version", mp->has_ir_version ? jint(&c, mp->ir_version) : json_null());
    put(&c, root, "producer_name", jstr(&c, mp->producer_name));
    put(&c, root, "producer_version", jstr(&c, mp->producer_version));
    put(&c, root, "model_domain", jstr(&c, mp->domain));
    put(&c, root, "graph_name", jstr(&c, g->name));
    put(&c, root, "model_version", mp->has_model_version ? jint(&c, mp->model_version) : json_null());

    json_t *opsets = jobj(&c);
    int64_t default_opset = 0;
    bool has_default = false;
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        const char *dom = is_default_domain(o->domain) ? "ai.onnx" : o->domain;
        int64_t version = o->has_version ? o->version : 0;
        char *tmp;
        const char *key = clean_utf8(&c, dom, &tmp);
        if (key && !json_object_get(opsets, key)) {
            put(&c, opsets, key, jint(&c, version));
            if (is_default_domain(o->domain)) {
                default_opset = version;
                has_default = true;
            }
        }
        free(tmp);
    }
    put(&c, root, "opset_imports", opsets);
    put(&c, root, "default_opset", has_default ? jint(&c, default_opset) : json_null());

    int64_t init_inputs = io_section(&c, root, g, inits);
    scan_graph(&c, g, 0);
    nodes_section(&c, root, mp);
    parameters_section(&c, root);
    int64_t quantizable = quantizable_section(&c, root, g);
    warnings_section(&c, root, mp, has_default, default_opset, init_inputs, quantizable);

    json_decref(inits);
    json_decref(c.main_ops);
    json_decref(c.sub_ops);
    json_decref(c.domains);
    json_decref(c.unknown);
    json_decref(c.quantized_ops);
    if (c.st != OQ_OK) {
        json_decref(root);
        return c.st;
    }
    *out = root;
    return OQ_OK;
}
