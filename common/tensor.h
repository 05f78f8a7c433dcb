/* tensor.h: a dense, contiguous, row-major tensor.
 * Ownership rule: a tensor from oq_tensor_new owns its data and frees it in
 * oq_tensor_free; one from oq_tensor_wrap borrows data that must outlive it. */
#ifndef OQ_TENSOR_H
#define OQ_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "status.h"

#define OQ_MAX_RANK 8

typedef struct oq_tensor {
    oq_dtype dtype;
    int rank;
    int64_t dims[OQ_MAX_RANK];
    size_t count;  /* number of elements */
    size_t nbytes; /* bytes of data */
    void *data;
    bool owns_data;
    char *name;    /* optional, owned; NULL when unnamed */
} oq_tensor;

/* Allocates a zero-filled tensor; rank and dims are validated (non-negative,
 * product and byte size without overflow, at most max_bytes when non-zero). */
oq_status oq_tensor_new(oq_dtype dtype, int rank, const int64_t *dims,
                        size_t max_bytes, oq_tensor **out, oq_error *err);
/* Makes a tensor that borrows data of nbytes; nbytes must match the shape. */
oq_status oq_tensor_wrap(oq_dtype dtype, int rank, const int64_t *dims,
                         void *data, size_t nbytes, oq_tensor **out,
                         oq_error *err);
oq_status oq_tensor_set_name(oq_tensor *t, const char *name, oq_error *err);
void oq_tensor_free(oq_tensor *t);

/* "float[1,3,224,224]" into buf; returns buf. */
const char *oq_tensor_describe(const oq_tensor *t, char *buf, size_t len);

#endif
