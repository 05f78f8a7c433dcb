/* alloc.c: the budgeted protobuf-c allocator. Each block carries a small
 * header with its size so frees can return budget. */
#include "alloc.h"

#include <stdlib.h>
#include <string.h>

#include "checked.h"

/* 16 bytes keeps the user pointer aligned for any scalar type. */
typedef union {
    size_t size;
    max_align_t align;
} block_header;

static void *budget_alloc(void *data, size_t size) {
    oq_budget_alloc *a = data;
    size_t total;
    if (!oq_add_size(size, sizeof(block_header), &total))
        return NULL;
    if (a->limit && (total > a->limit || a->used > a->limit - total)) {
        a->exceeded = true;
        return NULL;
    }
    block_header *h = malloc(total);
    if (!h)
        return NULL;
    h->size = total;
    a->used += total;
    if (a->used > a->peak)
        a->peak = a->used;
    return h + 1;
}

static void budget_free(void *data, void *p) {
    if (!p)
        return;
    oq_budget_alloc *a = data;
    block_header *h = (block_header *)p - 1;
    a->used -= h->size;
    free(h);
}

void oq_budget_alloc_init(oq_budget_alloc *a, size_t limit) {
    memset(a, 0, sizeof *a);
    a->base.alloc = budget_alloc;
    a->base.free = budget_free;
    a->base.allocator_data = a;
    a->limit = limit;
}

void *oq_pb_alloc(ProtobufCAllocator *a, size_t size) {
    return a->alloc(a->allocator_data, size ? size : 1);
}

void *oq_pb_calloc(ProtobufCAllocator *a, size_t n, size_t size) {
    size_t total;
    if (!oq_mul_size(n, size, &total))
        return NULL;
    void *p = oq_pb_alloc(a, total);
    if (p)
        memset(p, 0, total ? total : 1);
    return p;
}

void oq_pb_free(ProtobufCAllocator *a, void *p) {
    if (p)
        a->free(a->allocator_data, p);
}

char *oq_pb_strdup(ProtobufCAllocator *a, const char *s) {
    size_t n = strlen(s) + 1;
    char *p = oq_pb_alloc(a, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

bool oq_pb_array_grow(ProtobufCAllocator *a, void ***arr, size_t n) {
    /* Every array in a model came from a budget allocator, whose header
     * records the block size: reuse spare capacity, else double, so a
     * sequence of inserts stays linear. */
    if (*arr) {
        const block_header *h = (const block_header *)(void *)*arr - 1;
        size_t capacity = (h->size - sizeof *h) / sizeof(void *);
        if (n + 1 <= capacity)
            return true;
    }
    size_t want;
    if (!oq_mul_size(n, 2, &want) || !oq_add_size(want, 4, &want))
        return false;
    void **grown = oq_pb_calloc(a, want, sizeof(void *));
    if (!grown)
        return false;
    if (n)
        memcpy(grown, *arr, n * sizeof(void *));
    oq_pb_free(a, *arr);
    *arr = grown;
    return true;
}
