/* threadpool.h: a fixed pool of worker threads for parallel loops inside
 * kernels. A loop splits [0, n) into one contiguous chunk per thread (the
 * caller's thread takes a chunk too) and returns when all are done. */
#ifndef OQ_THREADPOOL_H
#define OQ_THREADPOOL_H

#include <stddef.h>

#include "status.h"

typedef struct oq_pool oq_pool;

/* fn processes [begin, end) of a loop; ctx is the caller's. */
typedef void (*oq_range_fn)(void *ctx, size_t begin, size_t end);

/* threads = 0 means one per online core. */
oq_status oq_pool_new(int threads, oq_pool **out, oq_error *err);
void oq_pool_free(oq_pool *p);
int oq_pool_threads(const oq_pool *p); /* 1 for a NULL pool */

/* Runs fn over [0, n) split across the pool's threads. Chunks are at least
 * min_chunk long, so small loops stay on the calling thread. NULL pool runs
 * everything on the caller. Not re-entrant: a kernel must not nest loops. */
void oq_parallel_for(oq_pool *p, size_t n, size_t min_chunk, oq_range_fn fn, void *ctx);

#endif
