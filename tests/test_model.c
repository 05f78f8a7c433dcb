/* test_model.c: model load/save — lossless round trips over every shared
 * model, tensor .pb files against declared inputs, external data, and
 * hostile bytes (truncation, flips, depth and memory bombs, bad tensors). */
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "model.h"
#include "tensorproto.h"
#include "testutil.h"

static const char *real_models[] = {
    "models/mnist-8/model.onnx",          "models/cnn_mnist_pytorch/model.onnx",
    "models/fmnist/fmnist_cnn.onnx",      "models/fmnist/fmnist_cnn_bn.onnx",
    "models/fmnist/fmnist_vit.onnx",      "models/fmnist/fmnist_vit_op14.onnx",
    "models/ppocr_cls/model.onnx",
};
#define N_REAL (sizeof real_models / sizeof real_models[0])

/* Loads path, saves to a buffer, and checks the bytes are the input's. */
static void check_round_trip(const char *path) {
    size_t len;
    uint8_t *orig = tu_read_file(path, &len);
    ck_assert_msg(orig, "cannot read %s", path);
    oq_error err = {0};
    oq_model *m;
    ck_assert_msg(oq_model_load_file(path, NULL, &m, &err) == OQ_OK, "%s", err.msg);
    uint8_t *out;
    size_t out_len;
    ck_assert_msg(oq_model_save_buffer(m, &out, &out_len, &err) == OQ_OK, "%s", err.msg);
    ck_assert_msg(out_len == len && memcmp(out, orig, len) == 0,
                  "%s: saved bytes differ (%zu vs %zu)", path, out_len, len);
    /* The saved bytes parse back to a message that packs the same again. */
    oq_model *m2;
    ck_assert_msg(oq_model_load_buffer(out, out_len, NULL, &m2, &err) == OQ_OK, "%s", err.msg);
    uint8_t *out2;
    size_t out2_len;
    ck_assert(oq_model_save_buffer(m2, &out2, &out2_len, &err) == OQ_OK);
    ck_assert(out2_len == out_len && memcmp(out2, out, out_len) == 0);
    free(out2);
    oq_model_free(m2);
    free(out);
    oq_model_free(m);
    free(orig);
}

START_TEST(round_trip_real_models) {
    for (size_t i = 0; i < N_REAL; i++)
        check_round_trip(tu_shared_path(real_models[i]));
}
END_TEST

static size_t glob_count(const char *pattern, void (*fn)(const char *)) {
    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0)
        return 0;
    for (size_t i = 0; i < g.gl_pathc; i++)
        fn(g.gl_pathv[i]);
    size_t n = g.gl_pathc;
    globfree(&g);
    return n;
}

START_TEST(round_trip_node_tests_1_12) {
    size_t n = glob_count(tu_shared_path("models/onnx-node-tests/onnx-1.12.0/*/model.onnx"), check_round_trip);
    ck_assert_uint_eq(n, 524);
}
END_TEST

START_TEST(round_trip_node_tests_1_21) {
    size_t n = glob_count(tu_shared_path("models/onnx-node-tests/onnx-1.21.0/*/model.onnx"), check_round_trip);
    ck_assert_uint_eq(n, 806);
}
END_TEST

/* ---- test_data_set .pb files against the declared graph IO ---------- */

static size_t pb_checked;

static bool is_initializer(const Onnx__GraphProto *g, const char *name) {
    for (size_t i = 0; i < g->n_initializer; i++)
        if (g->initializer[i]->name && strcmp(g->initializer[i]->name, name) == 0)
            return true;
    return false;
}

static void check_pb_against(const char *pb, const Onnx__ValueInfoProto *vi) {
    const Onnx__TypeProto *tp = vi->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
        return; /* sequences, maps, optionals: not TensorProto files */
    oq_tensor *t;
    oq_error err = {0};
    oq_status st = oq_tensor_load_pb(pb, 0, &t, &err);
    if (st == OQ_EUNSUPPORTED)
        return; /* string tensors */
    ck_assert_msg(st == OQ_OK, "%s: %s", pb, err.msg);
    const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
    /* onnx 1.12's bfloat16 cast tests store their bfloat16 data as uint16
     * and a rank-1 "like" tensor where rank 2 is declared. */
    bool bf16_quirk = strstr(pb, "BFLOAT16") != NULL;
    ck_assert_msg((int)t->dtype == tt->elem_type || bf16_quirk, "%s: dtype %d, declared %d", pb, t->dtype, tt->elem_type);
    if (tt->shape && !bf16_quirk) {
        ck_assert_msg((size_t)t->rank == tt->shape->n_dim, "%s: rank %d, declared %zu", pb, t->rank,
                      tt->shape->n_dim);
        for (size_t d = 0; d < tt->shape->n_dim; d++) {
            const Onnx__TensorShapeProto__Dimension *dim = tt->shape->dim[d];
            if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
                ck_assert_msg(t->dims[d] == dim->dim_value, "%s: dim %zu is %lld, declared %lld", pb, d,
                              (long long)t->dims[d], (long long)dim->dim_value);
        }
    }
    pb_checked++;
    oq_tensor_free(t);
}

static void check_test_dir(const char *model_path) {
    oq_error err = {0};
    oq_model *m;
    ck_assert_msg(oq_model_load_file(model_path, NULL, &m, &err) == OQ_OK, "%s", err.msg);
    const Onnx__GraphProto *g = oq_model_proto(m)->graph;
    const Onnx__ValueInfoProto *inputs[64];
    size_t n_inputs = 0;
    for (size_t i = 0; i < g->n_input && n_inputs < 64; i++)
        if (!is_initializer(g, g->input[i]->name))
            inputs[n_inputs++] = g->input[i];
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", model_path);
    *strrchr(dir, '/') = '\0';
    for (int set = 0; set < 8; set++) {
        char pb[4200];
        for (size_t i = 0; i < n_inputs; i++) {
            snprintf(pb, sizeof pb, "%s/test_data_set_%d/input_%zu.pb", dir, set, i);
            if (access(pb, R_OK) == 0)
                check_pb_against(pb, inputs[i]);
        }
        for (size_t i = 0; i < g->n_output; i++) {
            snprintf(pb, sizeof pb, "%s/test_data_set_%d/output_%zu.pb", dir, set, i);
            if (access(pb, R_OK) == 0)
                check_pb_against(pb, g->output[i]);
        }
    }
    oq_model_free(m);
}

START_TEST(pb_files_match_declared_io) {
    pb_checked = 0;
    glob_count(tu_shared_path("models/onnx-node-tests/onnx-1.12.0/*/model.onnx"), check_test_dir);
    glob_count(tu_shared_path("models/onnx-node-tests/onnx-1.21.0/*/model.onnx"), check_test_dir);
    for (size_t i = 0; i < N_REAL; i++)
        check_test_dir(tu_shared_path(real_models[i]));
    ck_assert_msg(pb_checked > 3000, "only %zu .pb files checked", pb_checked);
}
END_TEST

/* ---- hostile bytes ------------------------------------------------------- */

START_TEST(truncated_models_fail_cleanly) {
    for (size_t i = 0; i < N_REAL; i++) {
        size_t len;
        uint8_t *buf = tu_read_file(tu_shared_path(real_models[i]), &len);
        ck_assert(buf);
        for (size_t k = 0; k < 64; k++) {
            size_t cut = len * k / 64;
            uint8_t *copy = malloc(cut ? cut : 1); /* exact size: ASan sees any overread */
            memcpy(copy, buf, cut);
            oq_error err = {0};
            oq_model *m = NULL;
            oq_status st = oq_model_load_buffer(copy, cut, NULL, &m, &err);
            ck_assert_msg(st != OQ_OK, "%s cut at %zu loaded", real_models[i], cut);
            ck_assert(m == NULL && err.msg[0]);
            free(copy);
        }
        free(buf);
    }
}
END_TEST

START_TEST(random_and_flipped_bytes_never_crash) {
    srand(12345);
    for (int i = 0; i < 2000; i++) {
        size_t len = (size_t)(rand() % 4096) + 1;
        uint8_t *b = malloc(len);
        for (size_t k = 0; k < len; k++)
            b[k] = (uint8_t)rand();
        oq_error err = {0};
        oq_model *m = NULL;
        if (oq_model_load_buffer(b, len, NULL, &m, &err) == OQ_OK)
            oq_model_free(m);
        else
            ck_assert(err.code != OQ_OK && err.msg[0]);
        free(b);
    }
    for (size_t i = 0; i < N_REAL; i++) {
        size_t len;
        uint8_t *buf = tu_read_file(tu_shared_path(real_models[i]), &len);
        for (int k = 0; k < 150; k++) {
            uint8_t *copy = malloc(len);
            memcpy(copy, buf, len);
            for (int f = 0; f < 1 + k % 4; f++)
                copy[(size_t)rand() % len] ^= (uint8_t)(1u << (rand() % 8));
            oq_error err = {0};
            oq_model *m = NULL;
            if (oq_model_load_buffer(copy, len, NULL, &m, &err) == OQ_OK) {
                uint8_t *out;
                size_t out_len;
                ck_assert(oq_model_save_buffer(m, &out, &out_len, &err) == OQ_OK);
                free(out);
                oq_model_free(m);
            }
            free(copy);
        }
        free(buf);
    }
}
END_TEST

/* Appends a length-delimited field (number, payload) to buf at *n. */
static size_t put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

START_TEST(deep_nesting_is_refused) {
    /* Model.graph > (Graph.node > Node.attribute > Attribute.g)^depth:
     * built inside out, each level wraps the previous bytes. */
    size_t cap = 1 << 20;
    uint8_t *a = malloc(cap), *b = malloc(cap);
    size_t n = 0;
    const int fields[3] = {6, 5, 1}; /* Attribute.g, Node.attribute, Graph.node */
    for (int level = 0; level < 3 * 3000; level++) {
        uint8_t hdr[16];
        size_t h = put_varint(hdr, (uint64_t)fields[level % 3] << 3 | 2);
        h += put_varint(hdr + h, n);
        memcpy(b, hdr, h);
        memcpy(b + h, a, n);
        n += h;
        uint8_t *t = a;
        a = b;
        b = t;
    }
    /* wrap in Model.graph (field 7) */
    uint8_t hdr[16];
    size_t h = put_varint(hdr, 7u << 3 | 2);
    h += put_varint(hdr + h, n);
    memcpy(b, hdr, h);
    memcpy(b + h, a, n);
    n += h;
    oq_error err = {0};
    oq_model *m = NULL;
    ck_assert_int_eq(oq_model_load_buffer(b, n, NULL, &m, &err), OQ_ELIMIT);
    ck_assert_msg(strstr(err.msg, "nest deeper"), "%s", err.msg);
    free(a);
    free(b);
}
END_TEST

START_TEST(memory_budget_stops_tiny_message_floods) {
    /* 1M empty NodeProtos cost ~2 MB on the wire and >100 MB unpacked. */
    size_t nodes = 1000000, glen = nodes * 2;
    uint8_t *buf = malloc(glen + 16);
    size_t n = 0;
    buf[n++] = 7u << 3 | 2;
    n += put_varint(buf + n, glen);
    for (size_t i = 0; i < nodes; i++) {
        buf[n++] = 1u << 3 | 2;
        buf[n++] = 0;
    }
    oq_error err = {0};
    oq_model *m = NULL;
    ck_assert_int_eq(oq_model_load_buffer(buf, n, NULL, &m, &err), OQ_ELIMIT);
    ck_assert_msg(strstr(err.msg, "budget"), "%s", err.msg);
    free(buf);
}
END_TEST

static oq_status load_with_tensor(void (*mutate)(Onnx__TensorProto *, ProtobufCAllocator *),
                                  const char *base_dir, oq_error *err);

START_TEST(fifo_is_refused_without_blocking) {
    char *dir = tu_mkdtemp();
    char path[4200];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    ck_assert(mkfifo(path, 0600) == 0);
    oq_error err = {0};
    oq_model *m = NULL;
    ck_assert_int_eq(oq_model_load_file(path, NULL, &m, &err), OQ_EIO);
    ck_assert_msg(strstr(err.msg, "not a regular file"), "%s", err.msg);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

static void int64_typed(Onnx__TensorProto *tp, ProtobufCAllocator *a) {
    /* 5M small int64 values: 1 byte each on the wire, 8 unpacked. */
    tp->has_raw_data = 0;
    tp->data_type = OQ_DTYPE_INT64;
    tp->dims[0] = 5;
    tp->dims[1] = 1000000;
    tp->n_int64_data = 5000000;
    tp->int64_data = oq_pb_calloc(a, tp->n_int64_data, sizeof(int64_t));
}

START_TEST(typed_int64_data_fits_the_budget) {
    oq_error err = {0};
    ck_assert_msg(load_with_tensor(int64_typed, NULL, &err) == OQ_OK, "%s", err.msg);
}
END_TEST

START_TEST(size_limit_is_enforced) {
    oq_load_opts opts = {.max_bytes = 1000};
    oq_error err = {0};
    oq_model *m = NULL;
    ck_assert_int_eq(oq_model_load_file(tu_shared_path(real_models[0]), &opts, &m, &err), OQ_ELIMIT);
    ck_assert_ptr_null(m);
    oq_error err2 = {0};
    ck_assert_int_eq(oq_model_load_file("/nonexistent/model.onnx", NULL, &m, &err2), OQ_ENOTFOUND);
    oq_error err3 = {0};
    ck_assert_int_eq(oq_model_load_buffer("", 0, NULL, &m, &err3), OQ_EMODEL);
}
END_TEST

/* Builds a one-initializer model, lets mutate() spoil the tensor, and
 * returns the load status of its serialized bytes. */
static oq_status load_with_tensor(void (*mutate)(Onnx__TensorProto *, ProtobufCAllocator *),
                                  const char *base_dir, oq_error *err) {
    oq_model *m;
    ck_assert(oq_model_new(&m, err) == OQ_OK);
    ProtobufCAllocator *a = oq_model_allocator(m);
    Onnx__ModelProto *p = oq_model_proto(m);
    p->opset_import = oq_pb_calloc(a, 1, sizeof(void *));
    p->opset_import[0] = oq_pb_alloc(a, sizeof(Onnx__OperatorSetIdProto));
    onnx__operator_set_id_proto__init(p->opset_import[0]);
    p->opset_import[0]->has_version = 1;
    p->opset_import[0]->version = 13;
    p->n_opset_import = 1;
    int64_t dims[2] = {2, 3};
    oq_tensor *t;
    ck_assert(oq_tensor_new(OQ_DTYPE_FLOAT, 2, dims, 0, &t, err) == OQ_OK);
    Onnx__TensorProto *tp;
    ck_assert(oq_tensor_to_proto(t, "w", a, &tp, err) == OQ_OK);
    oq_tensor_free(t);
    mutate(tp, a);
    p->graph->initializer = oq_pb_calloc(a, 1, sizeof(void *));
    p->graph->initializer[0] = tp;
    p->graph->n_initializer = 1;
    uint8_t *buf;
    size_t len;
    ck_assert(oq_model_save_buffer(m, &buf, &len, err) == OQ_OK);
    oq_model_free(m);
    oq_load_opts opts = {.base_dir = base_dir};
    oq_model *back = NULL;
    oq_status st = oq_model_load_buffer(buf, len, &opts, &back, err);
    oq_model_free(back);
    free(buf);
    return st;
}

static void keep(Onnx__TensorProto *tp, ProtobufCAllocator *a) { (void)tp, (void)a; }
static void negative_dim(Onnx__TensorProto *tp, ProtobufCAllocator *a) { (void)a, tp->dims[0] = -2; }
static void absurd_dims(Onnx__TensorProto *tp, ProtobufCAllocator *a) {
    (void)a;
    tp->dims[0] = (int64_t)1 << 40;
    tp->dims[1] = (int64_t)1 << 40; /* product overflows int64 */
}
static void huge_dims(Onnx__TensorProto *tp, ProtobufCAllocator *a) {
    (void)a;
    tp->dims[0] = (int64_t)1 << 30;
    tp->dims[1] = (int64_t)1 << 30; /* no overflow, but raw_data is 24 bytes */
}
static void short_raw(Onnx__TensorProto *tp, ProtobufCAllocator *a) { (void)a, tp->raw_data.len = 20; }
static void bad_dtype(Onnx__TensorProto *tp, ProtobufCAllocator *a) { (void)a, tp->data_type = 99; }
static void typed_count_wrong(Onnx__TensorProto *tp, ProtobufCAllocator *a) {
    tp->has_raw_data = 0;
    tp->float_data = oq_pb_calloc(a, 5, sizeof(float));
    tp->n_float_data = 5;
}

START_TEST(bad_tensors_are_refused) {
    struct {
        void (*mutate)(Onnx__TensorProto *, ProtobufCAllocator *);
        oq_status want;
        const char *says;
    } cases[] = {
        {keep, OQ_OK, ""},
        {negative_dim, OQ_EMODEL, "negative"},
        {absurd_dims, OQ_EMODEL, "overflows"},
        {huge_dims, OQ_EMODEL, "raw_data has 24 bytes"},
        {short_raw, OQ_EMODEL, "raw_data has 20 bytes"},
        {bad_dtype, OQ_EMODEL, "data_type 99"},
        {typed_count_wrong, OQ_EMODEL, "has 5 float values"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        oq_error err = {0};
        oq_status st = load_with_tensor(cases[i].mutate, NULL, &err);
        ck_assert_msg(st == cases[i].want, "case %zu: status %s: %s", i, oq_status_name(st), err.msg);
        ck_assert_msg(strstr(err.msg, cases[i].says), "case %zu: '%s'", i, err.msg);
        if (st != OQ_OK)
            ck_assert_msg(strstr(err.msg, "'w'"), "case %zu names no tensor: %s", i, err.msg);
    }
}
END_TEST

/* ---- external data --------------------------------------------------- */

static const char *ext_location, *ext_offset, *ext_length;

static void make_external(Onnx__TensorProto *tp, ProtobufCAllocator *a) {
    oq_pb_free(a, tp->raw_data.data);
    tp->raw_data.data = NULL;
    tp->raw_data.len = 0;
    tp->has_raw_data = 0;
    tp->has_data_location = 1;
    tp->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    const char *keys[3] = {"location", "offset", "length"};
    const char *vals[3] = {ext_location, ext_offset, ext_length};
    tp->external_data = oq_pb_calloc(a, 3, sizeof(void *));
    for (int i = 0; i < 3; i++) {
        if (!vals[i])
            continue;
        Onnx__StringStringEntryProto *e = oq_pb_alloc(a, sizeof *e);
        onnx__string_string_entry_proto__init(e);
        e->key = oq_pb_strdup(a, keys[i]);
        e->value = oq_pb_strdup(a, vals[i]);
        tp->external_data[tp->n_external_data++] = e;
    }
}

static void write_bytes(const char *path, size_t n) {
    FILE *f = fopen(path, "wb");
    ck_assert(f);
    for (size_t i = 0; i < n; i++)
        fputc((int)i, f);
    fclose(f);
}

START_TEST(external_data_stays_inside_base_dir) {
    char *dir = tu_mkdtemp();
    char path[4200], sub[4200];
    snprintf(path, sizeof path, "%s/w.bin", dir);
    write_bytes(path, 64);
    snprintf(sub, sizeof sub, "%s/sub", dir);
    mkdir(sub, 0755);
    snprintf(path, sizeof path, "%s/sub/escape", dir);
    ck_assert(symlink("/etc/passwd", path) == 0);
    snprintf(path, sizeof path, "%s/sub/inside", dir);
    ck_assert(symlink("../w.bin", path) == 0);

    struct {
        const char *loc, *off, *len;
        oq_status want;
        const char *says;
    } cases[] = {
        {"w.bin", "0", "24", OQ_OK, ""},
        {"w.bin", "40", "24", OQ_OK, ""},
        {"sub/inside", "8", "24", OQ_OK, ""},
        {"w.bin", "41", "24", OQ_EMODEL, "runs past the end"},
        {"w.bin", "0", "16", OQ_EMODEL, "external data has 16 bytes"},
        {"w.bin", "1000", NULL, OQ_EMODEL, "past the end"},
        {"w.bin", "-1", "24", OQ_EMODEL, "not a number"},
        {"../w.bin", "0", "24", OQ_EMODEL, "without '..'"},
        {"sub/../../etc/passwd", "0", "24", OQ_EMODEL, "without '..'"},
        {"/etc/passwd", "0", "24", OQ_EMODEL, "relative path"},
        {"sub/escape", "0", "24", OQ_EMODEL, "outside the model folder"},
        {"missing.bin", "0", "24", OQ_EMODEL, "missing.bin"},
        {"sub", "0", "24", OQ_EMODEL, "not a regular file"},
        {NULL, "0", "24", OQ_EMODEL, "no location"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ext_location = cases[i].loc;
        ext_offset = cases[i].off;
        ext_length = cases[i].len;
        oq_error err = {0};
        oq_status st = load_with_tensor(make_external, dir, &err);
        ck_assert_msg(st == cases[i].want, "case %zu (%s): %s: %s", i, cases[i].loc ? cases[i].loc : "-",
                      oq_status_name(st), err.msg);
        ck_assert_msg(strstr(err.msg, cases[i].says), "case %zu: '%s'", i, err.msg);
    }
    /* Without a base folder (loaded from memory) external data is refused. */
    ext_location = "w.bin";
    ext_offset = "0";
    ext_length = "24";
    oq_error err = {0};
    ck_assert_int_eq(load_with_tensor(make_external, NULL, &err), OQ_EMODEL);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(save_with_external_data_and_back) {
    const char *src = tu_shared_path("models/fmnist/fmnist_cnn.onnx");
    size_t orig_len;
    uint8_t *orig = tu_read_file(src, &orig_len);
    char *dir = tu_mkdtemp();
    char out[4200], back[4200];
    snprintf(out, sizeof out, "%s/ext.onnx", dir);
    snprintf(back, sizeof back, "%s/inline.onnx", dir);
    oq_error err = {0};
    oq_model *m;
    ck_assert(oq_model_load_file(src, NULL, &m, &err) == OQ_OK);
    oq_save_opts so = {.external_data = "ext.onnx.data", .external_threshold = 1024};
    ck_assert_msg(oq_model_save_file(m, out, &so, &err) == OQ_OK, "%s", err.msg);
    /* The in-memory model is unchanged by an external save. */
    uint8_t *mem;
    size_t mem_len;
    ck_assert(oq_model_save_buffer(m, &mem, &mem_len, &err) == OQ_OK);
    ck_assert(mem_len == orig_len && memcmp(mem, orig, orig_len) == 0);
    free(mem);
    oq_model_free(m);

    struct stat sb;
    ck_assert(stat(out, &sb) == 0);
    ck_assert_msg((size_t)sb.st_size < orig_len / 10, "external model still %lld bytes", (long long)sb.st_size);
    ck_assert(oq_model_load_file(out, NULL, &m, &err) == OQ_OK);
    /* Every big tensor now refers to the file; reading one gives its bytes. */
    Onnx__GraphProto *g = oq_model_proto(m)->graph;
    size_t external = 0;
    for (size_t i = 0; i < g->n_initializer; i++)
        external += oq_tensor_proto_is_external(g->initializer[i]);
    ck_assert_uint_gt(external, 0);
    /* Saving inline pulls the data back: the original bytes again. */
    ck_assert_msg(oq_model_save_file(m, back, NULL, &err) == OQ_OK, "%s", err.msg);
    size_t back_len;
    uint8_t *back_bytes = tu_read_file(back, &back_len);
    ck_assert(back_len == orig_len && memcmp(back_bytes, orig, orig_len) == 0);
    /* So does internalizing in memory. */
    ck_assert(oq_model_internalize(m, &err) == OQ_OK);
    ck_assert(oq_model_save_buffer(m, &mem, &mem_len, &err) == OQ_OK);
    ck_assert(mem_len == orig_len && memcmp(mem, orig, orig_len) == 0);
    free(mem);
    free(back_bytes);
    oq_model_free(m);
    free(orig);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(unknown_fields_survive) {
    size_t len;
    uint8_t *orig = tu_read_file(tu_shared_path(real_models[2]), &len);
    /* Append field 1000 (varint 7) and field 1001 (bytes "hi") at top level. */
    uint8_t extra[32];
    size_t n = put_varint(extra, 1000u << 3 | 0);
    extra[n++] = 7;
    n += put_varint(extra + n, 1001u << 3 | 2);
    extra[n++] = 2;
    extra[n++] = 'h';
    extra[n++] = 'i';
    uint8_t *buf = malloc(len + n);
    memcpy(buf, orig, len);
    memcpy(buf + len, extra, n);
    oq_error err = {0};
    oq_model *m;
    ck_assert(oq_model_load_buffer(buf, len + n, NULL, &m, &err) == OQ_OK);
    ck_assert_uint_eq(oq_model_proto(m)->base.n_unknown_fields, 2);
    uint8_t *out;
    size_t out_len;
    ck_assert(oq_model_save_buffer(m, &out, &out_len, &err) == OQ_OK);
    ck_assert(out_len == len + n && memcmp(out, buf, out_len) == 0);
    free(out);
    oq_model_free(m);
    free(buf);
    free(orig);
}
END_TEST

START_TEST(wire_errors_name_the_place) {
    size_t len;
    uint8_t *orig = tu_read_file(tu_shared_path(real_models[0]), &len);
    oq_error err = {0};
    oq_model *m = NULL;
    ck_assert(oq_model_load_buffer(orig, len / 2, NULL, &m, &err) != OQ_OK);
    ck_assert_msg(strstr(err.msg, "model.graph") && strstr(err.msg, "at byte"), "%s", err.msg);
    free(orig);
}
END_TEST

int main(void) {
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, round_trip_real_models);
    tcase_add_test(tc, round_trip_node_tests_1_12);
    tcase_add_test(tc, round_trip_node_tests_1_21);
    tcase_add_test(tc, pb_files_match_declared_io);
    tcase_add_test(tc, truncated_models_fail_cleanly);
    tcase_add_test(tc, random_and_flipped_bytes_never_crash);
    tcase_add_test(tc, deep_nesting_is_refused);
    tcase_add_test(tc, memory_budget_stops_tiny_message_floods);
    tcase_add_test(tc, size_limit_is_enforced);
    tcase_add_test(tc, fifo_is_refused_without_blocking);
    tcase_add_test(tc, typed_int64_data_fits_the_budget);
    tcase_add_test(tc, bad_tensors_are_refused);
    tcase_add_test(tc, external_data_stays_inside_base_dir);
    tcase_add_test(tc, save_with_external_data_and_back);
    tcase_add_test(tc, unknown_fields_survive);
    tcase_add_test(tc, wire_errors_name_the_place);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
