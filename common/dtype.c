/* dtype.c: element type names and sizes. */
#include "dtype.h"

#include <string.h>

#include "checked.h"

static const struct {
    const char *name;
    unsigned char bits;
} dtype_table[OQ_DTYPE_COUNT] = {
    [OQ_DTYPE_UNDEFINED] = {"undefined", 0},
    [OQ_DTYPE_FLOAT] = {"float", 32},
    [OQ_DTYPE_UINT8] = {"uint8", 8},
    [OQ_DTYPE_INT8] = {"int8", 8},
    [OQ_DTYPE_UINT16] = {"uint16", 16},
    [OQ_DTYPE_INT16] = {"int16", 16},
    [OQ_DTYPE_INT32] = {"int32", 32},
    [OQ_DTYPE_INT64] = {"int64", 64},
    [OQ_DTYPE_STRING] = {"string", 0},
    [OQ_DTYPE_BOOL] = {"bool", 8},
    [OQ_DTYPE_FLOAT16] = {"float16", 16},
    [OQ_DTYPE_DOUBLE] = {"double", 64},
    [OQ_DTYPE_UINT32] = {"uint32", 32},
    [OQ_DTYPE_UINT64] = {"uint64", 64},
    [OQ_DTYPE_COMPLEX64] = {"complex64", 64},
    [OQ_DTYPE_COMPLEX128] = {"complex128", 128},
    [OQ_DTYPE_BFLOAT16] = {"bfloat16", 16},
    [OQ_DTYPE_FLOAT8E4M3FN] = {"float8e4m3fn", 8},
    [OQ_DTYPE_FLOAT8E4M3FNUZ] = {"float8e4m3fnuz", 8},
    [OQ_DTYPE_FLOAT8E5M2] = {"float8e5m2", 8},
    [OQ_DTYPE_FLOAT8E5M2FNUZ] = {"float8e5m2fnuz", 8},
    [OQ_DTYPE_UINT4] = {"uint4", 4},
    [OQ_DTYPE_INT4] = {"int4", 4},
};

bool oq_dtype_valid(int dtype) {
    return dtype > OQ_DTYPE_UNDEFINED && dtype < OQ_DTYPE_COUNT;
}

const char *oq_dtype_name(int dtype) {
    return (dtype >= 0 && dtype < OQ_DTYPE_COUNT) ? dtype_table[dtype].name : "?";
}

oq_dtype oq_dtype_from_name(const char *name) {
    for (int i = 1; i < OQ_DTYPE_COUNT; i++)
        if (strcmp(dtype_table[i].name, name) == 0)
            return (oq_dtype)i;
    return OQ_DTYPE_UNDEFINED;
}

size_t oq_dtype_bits(oq_dtype dtype) {
    return oq_dtype_valid(dtype) ? dtype_table[dtype].bits : 0;
}

size_t oq_dtype_size(oq_dtype dtype) {
    size_t bits = oq_dtype_bits(dtype);
    return bits % 8 == 0 ? bits / 8 : 0;
}

bool oq_dtype_nbytes(oq_dtype dtype, size_t count, size_t *nbytes) {
    size_t bits = oq_dtype_bits(dtype);
    if (bits == 0)
        return false;
    if (bits == 4) {
        *nbytes = count / 2 + count % 2;
        return true;
    }
    return oq_mul_size(count, bits / 8, nbytes);
}
