/* testutil.c: shared test helpers. */
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edit.h"
#include "tensorfile.h"

const char *tu_shared_dir(void) {
    const char *env = getenv("OQ_SHARED_DIR");
    return env && *env ? env : OQ_SHARED_DEFAULT;
}

const char *tu_shared_path(const char *rel) {
    static char bufs[8][4096];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 4096, "%s/%s", tu_shared_dir(), rel);
    return b;
}

uint8_t *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long n = ftell(f);
    rewind(f);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf)
        *len = (size_t)n;
    return buf;
}

char *tu_mkdtemp(void) {
    char tmpl[] = "/tmp/oqtest.XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tu_rmtree(const char *dir) {
    if (dir)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int tu_run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}


const tu_model_info tu_models[] = {
    {"mnist-8", "models/mnist-8/model.onnx", "models/mnist-8/eval_ref_fp32.npy", 1, 0.999},
    {"cnn_mnist_pytorch", "models/cnn_mnist_pytorch/model.onnx",
     "models/cnn_mnist_pytorch/eval_ref_fp32.npy", 1, 0.999},
    {"fmnist_cnn", "models/fmnist/fmnist_cnn.onnx", "models/fmnist/eval_ref_fp32_fmnist_cnn.npy", 100, 0.993},
    {"fmnist_cnn_bn", "models/fmnist/fmnist_cnn_bn.onnx", "models/fmnist/eval_ref_fp32_fmnist_cnn_bn.npy", 100,
     0.993},
    {"fmnist_vit", "models/fmnist/fmnist_vit.onnx", "models/fmnist/eval_ref_fp32_fmnist_vit.npy", 100, 0.990},
    {"fmnist_vit_op14", "models/fmnist/fmnist_vit_op14.onnx", "models/fmnist/eval_ref_fp32_fmnist_vit_op14.npy",
     100, 0.977},
    {"ppocr_cls", "models/ppocr_cls/model.onnx", "models/ppocr_cls/eval_ref_fp32.npy", 16, 0.980},
};
const size_t tu_model_count = sizeof tu_models / sizeof tu_models[0];

static oq_tensor *load_npy(const char *rel) {
    oq_tensor *t = NULL;
    oq_error err = {0};
    if (oq_npy_load(tu_shared_path(rel), NULL, &t, &err) != OQ_OK)
        ck_abort_msg("%s", err.msg);
    return t;
}

oq_tensor *tu_tensor_new(oq_dtype dt, int rank, const int64_t *dims) {
    oq_tensor *t = NULL;
    oq_error err = {0};
    if (oq_tensor_new(dt, rank, dims, 0, &t, &err) != OQ_OK)
        ck_abort_msg("%s", err.msg);
    return t;
}

static oq_tensor *new_f32(int rank, const int64_t *dims) {
    return tu_tensor_new(OQ_DTYPE_FLOAT, rank, dims);
}

void tu_eval_set(const tu_model_info *mi, oq_tensor **x, oq_tensor **labels, oq_tensor **ref) {
    const char *key = mi->key;
    bool mnist = strstr(key, "mnist") && !strstr(key, "fmnist");
    bool fmnist = strstr(key, "fmnist") != NULL;
    if (ref)
        *ref = load_npy(mi->ref);
    if (mnist) {
        /* calibration = first 500 of the shuffled set, evaluation = the rest */
        if (x) {
            oq_tensor *u = load_npy("models/data/mnist/mnist_u8.npy");
            int64_t n = u->dims[0] - 500, dims[4] = {n, 1, 28, 28};
            oq_tensor *t = new_f32(4, dims);
            const uint8_t *src = (const uint8_t *)u->data + 500 * 784;
            float *dst = t->data;
            bool normalise = strcmp(key, "cnn_mnist_pytorch") == 0;
            for (size_t i = 0; i < t->count; i++) {
                float v = (float)src[i] / 255.0f;
                dst[i] = normalise ? (v - 0.1307f) / 0.3081f : v;
            }
            oq_tensor_free(u);
            *x = t;
        }
        if (labels) {
            oq_tensor *l = load_npy("models/data/mnist/mnist_labels.npy");
            int64_t dims[1] = {l->dims[0] - 500};
            oq_tensor *owned = NULL;
            oq_error err = {0};
            if (oq_tensor_new(l->dtype, 1, dims, 0, &owned, &err) != OQ_OK)
                ck_abort_msg("%s", err.msg);
            memcpy(owned->data, (const int64_t *)l->data + 500, owned->nbytes);
            oq_tensor_free(l);
            *labels = owned;
        }
    } else if (fmnist) {
        if (x) {
            oq_tensor *u = load_npy("models/data/fashion_mnist/fashion_mnist_test_u8.npy");
            int64_t dims[4] = {u->dims[0], 1, 28, 28};
            oq_tensor *t = new_f32(4, dims);
            const uint8_t *src = u->data;
            float *dst = t->data;
            for (size_t i = 0; i < t->count; i++)
                dst[i] = (float)src[i] / 255.0f;
            oq_tensor_free(u);
            *x = t;
        }
        if (labels)
            *labels = load_npy("models/data/fashion_mnist/fashion_mnist_test_labels.npy");
    } else { /* ppocr_cls: NHWC uint8 text lines -> NCHW, (v/255 - 0.5)/0.5 */
        if (x) {
            oq_tensor *u = load_npy("models/data/textlines/textline_eval_u8.npy");
            int64_t n = u->dims[0], h = u->dims[1], w = u->dims[2], c = u->dims[3];
            int64_t dims[4] = {n, c, h, w};
            oq_tensor *t = new_f32(4, dims);
            const uint8_t *src = u->data;
            float *dst = t->data;
            for (int64_t i = 0; i < n; i++)
                for (int64_t y = 0; y < h; y++)
                    for (int64_t xx = 0; xx < w; xx++)
                        for (int64_t ch = 0; ch < c; ch++) {
                            float v = (float)src[((i * h + y) * w + xx) * c + ch];
                            dst[((i * c + ch) * h + y) * w + xx] = (v / 255.0f - 0.5f) / 0.5f;
                        }
            oq_tensor_free(u);
            *x = t;
        }
        if (labels)
            *labels = load_npy("models/data/textlines/textline_eval_labels.npy");
    }
}

oq_tensor *tu_calib_set(const tu_model_info *mi) {
    char rel[512];
    snprintf(rel, sizeof rel, "%s", mi->model);
    *strrchr(rel, '/') = '\0';
    strncat(rel, "/calib_input.npy", sizeof rel - strlen(rel) - 1);
    return load_npy(rel);
}

oq_tensor *tu_rows(const oq_tensor *t, int64_t start, int64_t n) {
    int64_t dims[OQ_MAX_RANK];
    memcpy(dims, t->dims, sizeof dims);
    dims[0] = n;
    size_t row = t->dims[0] ? t->nbytes / (size_t)t->dims[0] : 0;
    oq_tensor *v = NULL;
    oq_error err = {0};
    if (oq_tensor_wrap(t->dtype, t->rank, dims, (uint8_t *)t->data + (size_t)start * row, (size_t)n * row, &v,
                       &err) != OQ_OK)
        ck_abort_msg("%s", err.msg);
    return v;
}

int tu_sanitized(void) {
#if defined(__SANITIZE_ADDRESS__)
    return 1;
#else
    return 0;
#endif
}

/* ---- small models built in memory ---------------------------------------- */

/* The IR version of the ONNX release that introduced the opset. */
static int64_t ir_for(int opset) {
    return opset <= 8 ? 3 : opset <= 11 ? opset - 5 : 7;
}

oq_model *tu_model_new(int opset) {
    oq_error err = {0};
    oq_model *m = NULL;
    ck_assert_msg(oq_model_new(&m, &err) == OQ_OK, "%s", err.msg);
    ck_assert_msg(oq_edit_set_opset(m, "", opset, &err) == OQ_OK, "%s", err.msg);
    oq_model_proto(m)->ir_version = ir_for(opset);
    return m;
}

Onnx__GraphProto *tu_model_graph(oq_model *m) {
    return oq_model_proto(m)->graph;
}

void tu_model_input_f(oq_model *m, const char *name, int rank, const int64_t *dims) {
    oq_error err = {0};
    ck_assert_msg(oq_edit_add_graph_input(m, tu_model_graph(m), name, OQ_DTYPE_FLOAT, rank, dims, &err) == OQ_OK,
                  "input %s: %s", name, err.msg);
}

void tu_model_output(oq_model *m, const char *name, int elem) {
    oq_error err = {0};
    ck_assert_msg(oq_edit_add_graph_output(m, tu_model_graph(m), name, elem, -1, NULL, &err) == OQ_OK,
                  "output %s: %s", name, err.msg);
}

Onnx__NodeProto *tu_model_node_in(oq_model *m, Onnx__GraphProto *g, const char *op, const char *name,
                                  const char *const *in, size_t nin, const char *const *out, size_t nout) {
    oq_error err = {0};
    Onnx__NodeProto *n = NULL;
    ck_assert_msg(oq_edit_insert_node(m, g, OQ_EDIT_APPEND, op, NULL, name, in, nin, out, nout, &n, &err) ==
                      OQ_OK,
                  "node %s: %s", name, err.msg);
    return n;
}

Onnx__NodeProto *tu_model_node(oq_model *m, const char *op, const char *name, const char *const *in,
                               size_t nin, const char *const *out, size_t nout) {
    return tu_model_node_in(m, tu_model_graph(m), op, name, in, nin, out, nout);
}

void tu_model_attr_int(oq_model *m, Onnx__NodeProto *n, const char *k, int64_t v) {
    oq_error err = {0};
    ck_assert_msg(oq_edit_set_attr_int(m, n, k, v, &err) == OQ_OK, "%s", err.msg);
}

void tu_model_attr_ints(oq_model *m, Onnx__NodeProto *n, const char *k, const int64_t *v, size_t c) {
    oq_error err = {0};
    ck_assert_msg(oq_edit_set_attr_ints(m, n, k, v, c, &err) == OQ_OK, "%s", err.msg);
}

void tu_model_attr_float(oq_model *m, Onnx__NodeProto *n, const char *k, float v) {
    oq_error err = {0};
    ck_assert_msg(oq_edit_set_attr_float(m, n, k, v, &err) == OQ_OK, "%s", err.msg);
}

void tu_model_attr_floats(oq_model *m, Onnx__NodeProto *n, const char *k, const float *v, size_t c) {
    oq_error err = {0};
    ck_assert_msg(oq_edit_set_attr_floats(m, n, k, v, c, &err) == OQ_OK, "%s", err.msg);
}

void tu_model_attr_str(oq_model *m, Onnx__NodeProto *n, const char *k, const char *v) {
    oq_error err = {0};
    ck_assert_msg(oq_edit_set_attr_string(m, n, k, v, &err) == OQ_OK, "%s", err.msg);
}

void tu_model_init_f(oq_model *m, Onnx__GraphProto *g, const char *name, int rank, const int64_t *dims,
                     const float *v) {
    oq_error err = {0};
    oq_tensor *t = tu_tensor_new(OQ_DTYPE_FLOAT, rank, dims);
    if (t->nbytes)
        memcpy(t->data, v, t->nbytes);
    ck_assert_msg(oq_edit_add_initializer(m, g, name, t, &err) == OQ_OK, "initializer %s: %s", name, err.msg);
    oq_tensor_free(t);
}
