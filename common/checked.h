/* checked.h: overflow-checked size arithmetic. Every size derived from
 * input (dims, counts, lengths) goes through these before reaching malloc. */
#ifndef OQ_CHECKED_H
#define OQ_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Each returns true on success and stores the result; false on overflow. */
static inline bool oq_mul_size(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool oq_add_size(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}
static inline bool oq_mul_i64(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool oq_add_i64(int64_t a, int64_t b, int64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Product of n non-negative dims as an element count; false if any dim is
 * negative or the product overflows int64 or size_t. */
bool oq_dims_count(const int64_t *dims, int n, size_t *count);

#endif
