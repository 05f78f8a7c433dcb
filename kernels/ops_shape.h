/* ops_shape.h: internal to the shape family (ops_shape*.c). The table in
 * ops_shape.c lists entry points defined in the sibling files; the helpers
 * below read shape-like inputs and move elements by byte size. */
#ifndef OQ_OPS_SHAPE_H
#define OQ_OPS_SHAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "op.h"

/* memcpy that tolerates n == 0 with NULL pointers (zero-size tensors). */
static inline void oq_shape_copy(void *dst, const void *src, size_t n) {
    if (n)
        memcpy(dst, src, n);
}

/* Bytes per element of t; EUNSUPPORTED naming the node for strings and
 * sub-byte types, which cannot be moved by byte copies. */
oq_status oq_shape_elem_size(const oq_node_ctx *ctx, const oq_tensor *t, const char *what,
                             size_t *es, oq_error *err);
/* Reads an int64 (or, when allow_i32, int32) scalar or 1-D tensor of at most
 * max values into vals; *n receives the count. */
oq_status oq_shape_read_ints(const oq_node_ctx *ctx, const oq_tensor *t, const char *what,
                             bool allow_i32, int64_t *vals, int max, int *n, oq_error *err);
/* Normalises n axes against rank (negative counts from the end), rejecting
 * out-of-range values and repeats. */
oq_status oq_shape_norm_axes(const oq_node_ctx *ctx, const char *what, const int64_t *axes,
                             int n, int rank, int *out, oq_error *err);
/* Stores v converted to dtype at dst (numeric types and bool; integers are
 * rounded to nearest and saturated). False for other types. */
bool oq_shape_store_f64(oq_dtype dtype, void *dst, double v);
/* Fills count elements of es bytes at dst with the element at elem. */
void oq_shape_fill(void *dst, const void *elem, size_t es, size_t count);
/* Frees a malloc'd op state (release for ops whose state is one block). */
void oq_shape_free_state(void *state);

/* ---- entry points defined in ops_shape_move.c -------------------------- */
/* Transposes x (perm validated) into out; exposed so the unit tests can
 * compare its fast paths with a plain loop. */
void oq_shape_transpose_bytes(oq_pool *pool, const oq_tensor *x, const int *perm, void *out,
                              size_t es);
oq_status oq_shape_transpose_prepare(oq_node_ctx *ctx, oq_error *err);
oq_status oq_shape_transpose_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                   oq_error *err);
oq_status oq_shape_transpose_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                 oq_error *err);
oq_status oq_shape_concat_prepare(oq_node_ctx *ctx, oq_error *err);
oq_status oq_shape_concat_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                oq_error *err);
oq_status oq_shape_concat_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err);
oq_status oq_shape_split_prepare(oq_node_ctx *ctx, oq_error *err);
oq_status oq_shape_split_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                               oq_error *err);
oq_status oq_shape_split_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err);
oq_status oq_shape_slice_prepare(oq_node_ctx *ctx, oq_error *err);
oq_status oq_shape_slice_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                               oq_error *err);
oq_status oq_shape_slice_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err);

/* ---- entry points defined in ops_shape_index.c ------------------------- */
oq_status oq_shape_gather_prepare(oq_node_ctx *ctx, oq_error *err);
oq_status oq_shape_gather_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                oq_error *err);
oq_status oq_shape_gather_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err);
oq_status oq_shape_gather_elements_infer(oq_node_ctx *ctx, const oq_tensor *const *in,
                                         oq_tensor *out, oq_error *err);
oq_status oq_shape_gather_elements_run(oq_node_ctx *ctx, const oq_tensor *const *in,
                                       oq_tensor *out, oq_error *err);
oq_status oq_shape_scatter_nd_prepare(oq_node_ctx *ctx, oq_error *err);
oq_status oq_shape_scatter_nd_infer(oq_node_ctx *ctx, const oq_tensor *const *in,
                                    oq_tensor *out, oq_error *err);
oq_status oq_shape_scatter_nd_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                  oq_error *err);
oq_status oq_shape_pad_prepare(oq_node_ctx *ctx, oq_error *err);
oq_status oq_shape_pad_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                             oq_error *err);
oq_status oq_shape_pad_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                           oq_error *err);

/* ---- entry points defined in ops_shape_resize.c ------------------------ */
oq_status oq_shape_resize_prepare(oq_node_ctx *ctx, oq_error *err);
oq_status oq_shape_upsample_prepare(oq_node_ctx *ctx, oq_error *err);
oq_status oq_shape_resize_infer(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                                oq_error *err);
oq_status oq_shape_resize_run(oq_node_ctx *ctx, const oq_tensor *const *in, oq_tensor *out,
                              oq_error *err);

#endif
