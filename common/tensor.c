/* tensor.c: allocation and description of oq_tensor. */
#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"

static oq_status tensor_shape(oq_tensor *t, oq_dtype dtype, int rank,
                              const int64_t *dims, oq_error *err) {
    if (!oq_dtype_valid(dtype) || dtype == OQ_DTYPE_STRING)
        return oq_err(err, OQ_EUNSUPPORTED, "tensor element type %d (%s) is not supported",
                      (int)dtype, oq_dtype_name(dtype));
    if (rank < 0 || rank > OQ_MAX_RANK)
        return oq_err(err, OQ_EUNSUPPORTED, "tensor rank %d is outside 0..%d", rank, OQ_MAX_RANK);
    for (int i = 0; i < rank; i++)
        if (dims[i] < 0)
            return oq_err(err, OQ_EDATA, "tensor dim %d is negative (%lld)", i, (long long)dims[i]);
    size_t count, nbytes;
    if (!oq_dims_count(dims, rank, &count) || !oq_dtype_nbytes(dtype, count, &nbytes))
        return oq_err(err, OQ_ELIMIT, "tensor shape overflows the address space");
    t->dtype = dtype;
    t->rank = rank;
    if (rank > 0)
        memcpy(t->dims, dims, (size_t)rank * sizeof dims[0]);
    t->count = count;
    t->nbytes = nbytes;
    return OQ_OK;
}

oq_status oq_tensor_new(oq_dtype dtype, int rank, const int64_t *dims,
                        size_t max_bytes, oq_tensor **out, oq_error *err) {
    *out = NULL;
    oq_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return oq_err(err, OQ_ENOMEM, "out of memory allocating a tensor");
    oq_status st = tensor_shape(t, dtype, rank, dims, err);
    if (st != OQ_OK) {
        free(t);
        return st;
    }
    if (max_bytes && t->nbytes > max_bytes) {
        size_t n = t->nbytes;
        free(t);
        return oq_err(err, OQ_ELIMIT, "tensor of %zu bytes exceeds the limit of %zu bytes", n, max_bytes);
    }
    t->data = calloc(1, t->nbytes ? t->nbytes : 1);
    if (!t->data) {
        size_t n = t->nbytes;
        free(t);
        return oq_err(err, OQ_ENOMEM, "out of memory allocating %zu tensor bytes", n);
    }
    t->owns_data = true;
    *out = t;
    return OQ_OK;
}

oq_status oq_tensor_wrap(oq_dtype dtype, int rank, const int64_t *dims,
                         void *data, size_t nbytes, oq_tensor **out,
                         oq_error *err) {
    *out = NULL;
    oq_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return oq_err(err, OQ_ENOMEM, "out of memory allocating a tensor");
    oq_status st = tensor_shape(t, dtype, rank, dims, err);
    if (st == OQ_OK && t->nbytes != nbytes)
        st = oq_err(err, OQ_EDATA, "tensor data has %zu bytes, its shape needs %zu", nbytes, t->nbytes);
    if (st != OQ_OK) {
        free(t);
        return st;
    }
    t->data = data;
    *out = t;
    return OQ_OK;
}

oq_status oq_tensor_set_name(oq_tensor *t, const char *name, oq_error *err) {
    char *copy = strdup(name);
    if (!copy)
        return oq_err(err, OQ_ENOMEM, "out of memory naming a tensor");
    free(t->name);
    t->name = copy;
    return OQ_OK;
}

void oq_tensor_free(oq_tensor *t) {
    if (!t)
        return;
    if (t->owns_data)
        free(t->data);
    free(t->name);
    free(t);
}

const char *oq_tensor_describe(const oq_tensor *t, char *buf, size_t len) {
    size_t used = (size_t)snprintf(buf, len, "%s[", oq_dtype_name(t->dtype));
    for (int i = 0; i < t->rank && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? "," : "", (long long)t->dims[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
    return buf;
}
