/* dtype.h: element types. Values equal ONNX TensorProto.DataType numbers so
 * they cross the wire format without a mapping table. */
#ifndef OQ_DTYPE_H
#define OQ_DTYPE_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    OQ_DTYPE_UNDEFINED = 0,
    OQ_DTYPE_FLOAT = 1,
    OQ_DTYPE_UINT8 = 2,
    OQ_DTYPE_INT8 = 3,
    OQ_DTYPE_UINT16 = 4,
    OQ_DTYPE_INT16 = 5,
    OQ_DTYPE_INT32 = 6,
    OQ_DTYPE_INT64 = 7,
    OQ_DTYPE_STRING = 8,
    OQ_DTYPE_BOOL = 9,
    OQ_DTYPE_FLOAT16 = 10,
    OQ_DTYPE_DOUBLE = 11,
    OQ_DTYPE_UINT32 = 12,
    OQ_DTYPE_UINT64 = 13,
    OQ_DTYPE_COMPLEX64 = 14,
    OQ_DTYPE_COMPLEX128 = 15,
    OQ_DTYPE_BFLOAT16 = 16,
    OQ_DTYPE_FLOAT8E4M3FN = 17,
    OQ_DTYPE_FLOAT8E4M3FNUZ = 18,
    OQ_DTYPE_FLOAT8E5M2 = 19,
    OQ_DTYPE_FLOAT8E5M2FNUZ = 20,
    OQ_DTYPE_UINT4 = 21,
    OQ_DTYPE_INT4 = 22,
    OQ_DTYPE_COUNT
} oq_dtype;

/* Lower-case ONNX name ("float", "int8", ...); "?" for unknown values. */
const char *oq_dtype_name(int dtype);
/* Parses a name as printed by oq_dtype_name; OQ_DTYPE_UNDEFINED if unknown. */
oq_dtype oq_dtype_from_name(const char *name);
bool oq_dtype_valid(int dtype);
/* Bits per element (4 for int4/uint4); 0 for undefined and string. */
size_t oq_dtype_bits(oq_dtype dtype);
/* Bytes per element for byte-addressable fixed-size types; 0 otherwise. */
size_t oq_dtype_size(oq_dtype dtype);
/* Bytes needed to hold count elements (int4 packs two per byte); false on
 * overflow or for types without a fixed size (string). */
bool oq_dtype_nbytes(oq_dtype dtype, size_t count, size_t *nbytes);

#endif
