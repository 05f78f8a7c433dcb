/* alloc.h: a ProtobufCAllocator that enforces a memory budget.
 * protobuf-c sizes its allocations from the input, so an unpack of hostile
 * bytes must fail cleanly once it has used more than the caller allowed. */
#ifndef OQ_ALLOC_H
#define OQ_ALLOC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    ProtobufCAllocator base; /* must stay first: protobuf-c sees only this */
    size_t used;             /* bytes currently allocated (headers included) */
    size_t peak;
    size_t limit;            /* 0 = unlimited */
    bool exceeded;           /* an allocation was refused for the budget */
} oq_budget_alloc;

/* Initialises a; the struct must not move while allocations are live. */
void oq_budget_alloc_init(oq_budget_alloc *a, size_t limit);

/* Allocation helpers for code that edits protobuf-c messages, so everything
 * in a model is freed by the same allocator. */
void *oq_pb_alloc(ProtobufCAllocator *a, size_t size);
void *oq_pb_calloc(ProtobufCAllocator *a, size_t n, size_t size);
void oq_pb_free(ProtobufCAllocator *a, void *p);
char *oq_pb_strdup(ProtobufCAllocator *a, const char *s);
/* Makes room for one more entry in a pointer array of n entries allocated
 * by a budget allocator (capacity doubles); false on ENOMEM. */
bool oq_pb_array_grow(ProtobufCAllocator *a, void ***arr, size_t n);

#endif
