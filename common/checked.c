/* checked.c: out-of-line helpers from checked.h. */
#include "checked.h"

bool oq_dims_count(const int64_t *dims, int n, size_t *count) {
    int64_t c = 1;
    for (int i = 0; i < n; i++) {
        if (dims[i] < 0 || !oq_mul_i64(c, dims[i], &c))
            return false;
    }
    if ((uint64_t)c > SIZE_MAX)
        return false;
    *count = (size_t)c;
    return true;
}
