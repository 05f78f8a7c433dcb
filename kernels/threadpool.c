/* threadpool.c: persistent workers woken per parallel loop. Each loop is
 * split into one chunk per thread; the caller runs chunk 0 itself. Workers
 * and the caller spin briefly before sleeping: models run hundreds of small
 * loops per inference and a futex wake costs tens of microseconds. */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

/* About 20-50 us of polling before falling back to the condition variable. */
#define SPIN_ITERATIONS 4000

struct oq_pool {
    int threads;              /* including the caller */
    pthread_t *workers;       /* threads - 1 */
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_ulong generation;  /* bumped per loop so workers see new work */
    atomic_int pending;       /* workers still running the current loop */
    atomic_int stopping;
    /* the current loop: written before generation is bumped (release) */
    oq_range_fn fn;
    void *ctx;
    size_t n, chunk;
};

typedef struct {
    oq_pool *pool;
    int index; /* 1..threads-1 */
} worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void run_chunk(oq_pool *p, int index) {
    size_t begin = (size_t)index * p->chunk;
    if (begin >= p->n)
        return;
    size_t end = begin + p->chunk < p->n ? begin + p->chunk : p->n;
    p->fn(p->ctx, begin, end);
}

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    oq_pool *p = wa->pool;
    int index = wa->index;
    free(wa);
    unsigned long seen = 0;
    for (;;) {
        /* Spin first, then sleep until the generation moves on. */
        int spins = 0;
        while (atomic_load_explicit(&p->generation, memory_order_acquire) == seen &&
               !atomic_load_explicit(&p->stopping, memory_order_relaxed) && spins++ < SPIN_ITERATIONS)
            cpu_relax();
        if (atomic_load_explicit(&p->generation, memory_order_acquire) == seen &&
            !atomic_load(&p->stopping)) {
            pthread_mutex_lock(&p->mu);
            while (!atomic_load(&p->stopping) && atomic_load(&p->generation) == seen)
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stopping))
            break;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        run_chunk(p, index);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

oq_status oq_pool_new(int threads, oq_pool **out, oq_error *err) {
    *out = NULL;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    if (threads > 256)
        threads = 256;
    oq_pool *p = calloc(1, sizeof *p);
    if (!p)
        return oq_err(err, OQ_ENOMEM, "out of memory creating a thread pool");
    p->threads = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stopping, 0);
    if (threads > 1) {
        p->workers = calloc((size_t)threads - 1, sizeof *p->workers);
        if (!p->workers) {
            oq_pool_free(p);
            return oq_err(err, OQ_ENOMEM, "out of memory creating a thread pool");
        }
    }
    for (int i = 1; i < threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) {
            wa->pool = p;
            wa->index = i;
        }
        if (!wa || pthread_create(&p->workers[i - 1], NULL, worker_main, wa) != 0) {
            free(wa);
            oq_pool_free(p);
            return oq_err(err, OQ_ENOMEM, "cannot start worker thread %d", i);
        }
        p->threads++;
    }
    *out = p;
    return OQ_OK;
}

void oq_pool_free(oq_pool *p) {
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stopping, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->threads - 1; i++)
        pthread_join(p->workers[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->workers);
    free(p);
}

int oq_pool_threads(const oq_pool *p) { return p ? p->threads : 1; }

void oq_parallel_for(oq_pool *p, size_t n, size_t min_chunk, oq_range_fn fn, void *ctx) {
    if (n == 0)
        return;
    if (min_chunk == 0)
        min_chunk = 1;
    size_t threads = p ? (size_t)p->threads : 1;
    size_t max_by_size = (n + min_chunk - 1) / min_chunk;
    if (threads > max_by_size)
        threads = max_by_size;
    if (threads <= 1) {
        fn(ctx, 0, n);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = (n + threads - 1) / threads;
    /* Every worker wakes; those past the last chunk find nothing to do. */
    atomic_store_explicit(&p->pending, p->threads - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_chunk(p, 0);
    for (int spins = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0 && spins < SPIN_ITERATIONS;
         spins++)
        cpu_relax();
    if (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending) > 0)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
