/* testutil.h: helpers shared by the Check suites. */
#ifndef OQ_TESTUTIL_H
#define OQ_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

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

#endif

#include "tensor.h"

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
