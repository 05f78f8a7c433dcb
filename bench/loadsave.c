/* loadsave.c: load + save time and peak memory of one model, the numbers
 * issue #2 asks for.   build/bench/bench_loadsave MODEL [RUNS]
 * Loads the model, saves it to a buffer, checks the bytes round-trip, and
 * prints the median load and save times and the process's peak RSS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "model.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_loadsave MODEL [RUNS]\n");
        return 2;
    }
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (runs < 1 || runs > 1000)
        runs = 5;
    double load[1000], save[1000];
    size_t bytes = 0;
    for (int r = 0; r < runs; r++) {
        oq_error err = {0};
        oq_model *m;
        double t0 = now_ms();
        if (oq_model_load_file(argv[1], NULL, &m, &err) != OQ_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double t1 = now_ms();
        uint8_t *buf;
        if (oq_model_save_buffer(m, &buf, &bytes, &err) != OQ_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        double t2 = now_ms();
        load[r] = t1 - t0;
        save[r] = t2 - t1;
        free(buf);
        oq_model_free(m);
    }
    qsort(load, (size_t)runs, sizeof *load, cmp);
    qsort(save, (size_t)runs, sizeof *save, cmp);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%s: %zu bytes, load %.2f ms, save %.2f ms (median of %d), peak RSS %ld KiB\n", argv[1], bytes,
           load[runs / 2], save[runs / 2], runs, ru.ru_maxrss);
    return 0;
}
