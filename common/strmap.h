/* strmap.h: a small open-addressing hash map from C strings to int.
 * Used to index names (values, nodes) of a model, so its sizes are checked
 * and it fails with ENOMEM/ELIMIT instead of aborting. */
#ifndef OQ_STRMAP_H
#define OQ_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

typedef struct oq_strmap oq_strmap;

/* Key ownership, chosen once per map:
 * OQ_STRMAP_BORROW: the map stores the caller's pointers; every key must
 *   stay alive and unchanged while it is in the map (e.g. names inside a
 *   protobuf message the map indexes).
 * OQ_STRMAP_COPY: the map keeps its own copy of each key, freed when the
 *   entry is removed or the map is freed. */
typedef enum {
    OQ_STRMAP_BORROW = 0,
    OQ_STRMAP_COPY = 1,
} oq_strmap_keys;

/* A new empty map sized for about `expected` entries (0 = small). */
oq_status oq_strmap_new(oq_strmap_keys keys, size_t expected, oq_strmap **out, oq_error *err);
void oq_strmap_free(oq_strmap *m); /* NULL is a no-op */

/* Inserts key or overwrites its value. */
oq_status oq_strmap_put(oq_strmap *m, const char *key, int value, oq_error *err);
/* Inserts key only if absent. *inserted says which happened; either way
 * *value_out (optional) receives the value now stored for key. */
oq_status oq_strmap_add(oq_strmap *m, const char *key, int value, bool *inserted,
                        int *value_out, oq_error *err);
/* True and *value (optional) set when key is present. */
bool oq_strmap_get(const oq_strmap *m, const char *key, int *value);
/* The map's stored key equal to key (its own copy under OQ_STRMAP_COPY),
 * or NULL when absent. Valid until the entry is removed or the map freed. */
const char *oq_strmap_key(const oq_strmap *m, const char *key);
/* Removes key; false when it was absent. */
bool oq_strmap_remove(oq_strmap *m, const char *key);
size_t oq_strmap_count(const oq_strmap *m);

/* Iteration: start with *iter = 0; each call yields one entry and returns
 * false at the end. The order is unspecified (hashes are seeded per map) and
 * inserting or removing during iteration invalidates it. */
bool oq_strmap_next(const oq_strmap *m, size_t *iter, const char **key, int *value);

#endif
