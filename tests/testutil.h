/* testutil.h: helpers shared by the Check suites. */
#ifndef OQ_TESTUTIL_H
#define OQ_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "onnx.pb-c.h"
#include "tensor.h"

/* The shared models/data folder: $OQ_SHARED_DIR, else ../shared beside the repo. */
const char *tu_shared_dir(void);
/* tu_shared_dir() + "/" + rel into a static rotating buffer. */
const char *tu_shared_path(const char *rel);
/* Reads a whole file into a malloc'd buffer; NULL on failure. */
uint8_t *tu_read_file(const char *path, size_t *len);
/* A fresh empty temporary folder (removed by tu_rmtree). */
char *tu_mkdtemp(void);
void tu_rmtree(const char *dir);
/* Runs a suite, prints results, returns the process exit status. */
int tu_run_suite(Suite *s);

/* One shared model with its evaluation data, preprocessed exactly as
 * models/generators/make_eval_sets.py does. */
typedef struct {
    const char *key;        /* "mnist-8", "fmnist_vit", ... */
    const char *model;      /* path relative to the shared dir */
    const char *ref;        /* eval_ref_fp32*.npy, relative */
    int batch;              /* batch the reference was computed with (1 = fixed-batch model) */
    double min_top1_int8;   /* issue #4's bar for INT8 vs FP32 top-1 agreement */
} tu_model_info;

extern const tu_model_info tu_models[];
extern const size_t tu_model_count;

/* Builds the evaluation inputs [N, ...] (float32) and loads labels [N]
 * (int64) and the FP32 reference outputs [N, classes]. Any out may be NULL. */
void tu_eval_set(const tu_model_info *mi, oq_tensor **x, oq_tensor **labels, oq_tensor **ref);
/* Calibration inputs (the ready-made calib_input.npy of the model's folder). */
oq_tensor *tu_calib_set(const tu_model_info *mi);
/* A view of rows [start, start+n) of t (first axis), borrowing t's data. */
oq_tensor *tu_rows(const oq_tensor *t, int64_t start, int64_t n);
/* True when built with AddressSanitizer (tests shorten heavy loops). */
int tu_sanitized(void);

/* ---- small models built in memory ---------------------------------------- */

/* Argument pairs (array, count) for the builders below. */
#define TU_LIST(...)                                                                               \
    (const char *const[]){__VA_ARGS__},                                                            \
        sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)
#define TU_NONE NULL, 0
#define TU_I64S(...) (const int64_t[]){__VA_ARGS__}, sizeof((const int64_t[]){__VA_ARGS__}) / 8
#define TU_F32S(...) (const float[]){__VA_ARGS__}, sizeof((const float[]){__VA_ARGS__}) / 4

/* A new zero-filled tensor (the test aborts on failure). */
oq_tensor *tu_tensor_new(oq_dtype dt, int rank, const int64_t *dims);
/* An empty model importing the default domain at `opset`, with an IR
 * version that opset may appear in. Every builder aborts the test on failure. */
oq_model *tu_model_new(int opset);
Onnx__GraphProto *tu_model_graph(oq_model *m);
/* A float graph input of the given shape (rank -1: unknown). */
void tu_model_input_f(oq_model *m, const char *name, int rank, const int64_t *dims);
/* A graph output of element type elem (OQ_DTYPE_*), shape unknown. */
void tu_model_output(oq_model *m, const char *name, int elem);
/* Appends a default-domain node to g (or the main graph). */
Onnx__NodeProto *tu_model_node_in(oq_model *m, Onnx__GraphProto *g, const char *op, const char *name,
                                  const char *const *in, size_t nin, const char *const *out, size_t nout);
Onnx__NodeProto *tu_model_node(oq_model *m, const char *op, const char *name, const char *const *in,
                               size_t nin, const char *const *out, size_t nout);
void tu_model_attr_int(oq_model *m, Onnx__NodeProto *n, const char *k, int64_t v);
void tu_model_attr_ints(oq_model *m, Onnx__NodeProto *n, const char *k, const int64_t *v, size_t c);
void tu_model_attr_float(oq_model *m, Onnx__NodeProto *n, const char *k, float v);
void tu_model_attr_floats(oq_model *m, Onnx__NodeProto *n, const char *k, const float *v, size_t c);
void tu_model_attr_str(oq_model *m, Onnx__NodeProto *n, const char *k, const char *v);
/* A float initializer of g holding v (count from dims). */
void tu_model_init_f(oq_model *m, Onnx__GraphProto *g, const char *name, int rank, const int64_t *dims,
                     const float *v);

#endif
