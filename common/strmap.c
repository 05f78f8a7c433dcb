/* strmap.c: string -> int map with linear probing, a power-of-two table
 * kept at most half full (doubling on growth) and backward-shift deletion,
 * so there are no tombstones to clean up. */
#include "strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"

typedef struct {
    const char *key; /* NULL marks an empty slot */
    uint64_t hash;
    int value;
} strmap_slot;

struct oq_strmap {
    strmap_slot *slots;
    size_t cap;   /* power of two */
    size_t count;
    uint64_t seed;
    oq_strmap_keys keys;
};

#define STRMAP_MIN_CAP 16

/* murmur3's finaliser: spreads every input bit over the low bits we mask. */
static uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

/* FNV-1a from a per-map seed. Names come from untrusted models: the seed
 * (from ASLR'd addresses) keeps precomputed colliding name sets from
 * turning lookups quadratic. Not a cryptographic defence. */
static uint64_t strmap_hash(const oq_strmap *m, const char *s) {
    uint64_t h = m->seed ^ UINT64_C(0xcbf29ce484222325);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= UINT64_C(0x100000001b3);
    }
    return mix64(h);
}

static oq_status strmap_alloc_slots(size_t cap, strmap_slot **out, oq_error *err) {
    size_t bytes;
    if (!oq_mul_size(cap, sizeof(strmap_slot), &bytes))
        return oq_err(err, OQ_ELIMIT, "string map of %zu slots is too large", cap);
    strmap_slot *s = calloc(1, bytes);
    if (!s)
        return oq_err(err, OQ_ENOMEM, "out of memory for a string map of %zu slots", cap);
    *out = s;
    return OQ_OK;
}

oq_status oq_strmap_new(oq_strmap_keys keys, size_t expected, oq_strmap **out, oq_error *err) {
    *out = NULL;
    size_t cap = STRMAP_MIN_CAP;
    /* Room for `expected` entries at load <= 1/2. */
    while (cap / 2 < expected) {
        if (cap > SIZE_MAX / 2)
            return oq_err(err, OQ_ELIMIT, "string map for %zu entries is too large", expected);
        cap *= 2;
    }
    oq_strmap *m = calloc(1, sizeof *m);
    if (!m)
        return oq_err(err, OQ_ENOMEM, "out of memory for a string map");
    oq_status st = strmap_alloc_slots(cap, &m->slots, err);
    if (st != OQ_OK) {
        free(m);
        return st;
    }
    static const char seed_anchor = 0;
    m->seed = mix64((uint64_t)(uintptr_t)m ^ ((uint64_t)(uintptr_t)&seed_anchor << 17));
    m->cap = cap;
    m->keys = keys;
    *out = m;
    return OQ_OK;
}

void oq_strmap_free(oq_strmap *m) {
    if (!m)
        return;
    if (m->keys == OQ_STRMAP_COPY) {
        for (size_t i = 0; i < m->cap; i++)
            free((char *)m->slots[i].key);
    }
    free(m->slots);
    free(m);
}

/* Index of key's slot, or of the empty slot where it would go. */
static size_t strmap_probe(const oq_strmap *m, const char *key, uint64_t hash) {
    size_t mask = m->cap - 1;
    size_t i = (size_t)hash & mask;
    while (m->slots[i].key) {
        if (m->slots[i].hash == hash && strcmp(m->slots[i].key, key) == 0)
            return i;
        i = (i + 1) & mask;
    }
    return i;
}

static oq_status strmap_grow(oq_strmap *m, oq_error *err) {
    if (m->cap > SIZE_MAX / 2)
        return oq_err(err, OQ_ELIMIT, "string map of %zu entries cannot grow", m->count);
    size_t cap = m->cap * 2;
    strmap_slot *slots = NULL;
    oq_status st = strmap_alloc_slots(cap, &slots, err);
    if (st != OQ_OK)
        return st;
    strmap_slot *old = m->slots;
    size_t old_cap = m->cap;
    m->slots = slots;
    m->cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].key)
            m->slots[strmap_probe(m, old[i].key, old[i].hash)] = old[i];
    }
    free(old);
    return OQ_OK;
}

/* Finds or inserts key; *slot is its slot, *inserted whether it is new. */
static oq_status strmap_upsert(oq_strmap *m, const char *key, int value, size_t *slot,
                               bool *inserted, oq_error *err) {
    if (!key)
        return oq_err(err, OQ_EINVAL, "string map key is NULL");
    uint64_t hash = strmap_hash(m, key);
    size_t i = strmap_probe(m, key, hash);
    if (m->slots[i].key) {
        *slot = i;
        *inserted = false;
        return OQ_OK;
    }
    /* Keep the load at most 1/2 so probe runs stay short. */
    if ((m->count + 1) > m->cap / 2) {
        oq_status st = strmap_grow(m, err);
        if (st != OQ_OK)
            return st;
        i = strmap_probe(m, key, hash);
    }
    const char *stored = key;
    if (m->keys == OQ_STRMAP_COPY) {
        char *copy = strdup(key);
        if (!copy)
            return oq_err(err, OQ_ENOMEM, "out of memory for a string map key");
        stored = copy;
    }
    m->slots[i].key = stored;
    m->slots[i].hash = hash;
    m->slots[i].value = value;
    m->count++;
    *slot = i;
    *inserted = true;
    return OQ_OK;
}

oq_status oq_strmap_put(oq_strmap *m, const char *key, int value, oq_error *err) {
    size_t i;
    bool inserted;
    oq_status st = strmap_upsert(m, key, value, &i, &inserted, err);
    if (st == OQ_OK)
        m->slots[i].value = value;
    return st;
}

oq_status oq_strmap_add(oq_strmap *m, const char *key, int value, bool *inserted,
                        int *value_out, oq_error *err) {
    size_t i;
    bool ins = false;
    oq_status st = strmap_upsert(m, key, value, &i, &ins, err);
    if (inserted)
        *inserted = ins;
    if (st == OQ_OK && value_out)
        *value_out = m->slots[i].value;
    return st;
}

bool oq_strmap_get(const oq_strmap *m, const char *key, int *value) {
    if (!m || !key)
        return false;
    size_t i = strmap_probe(m, key, strmap_hash(m, key));
    if (!m->slots[i].key)
        return false;
    if (value)
        *value = m->slots[i].value;
    return true;
}

const char *oq_strmap_key(const oq_strmap *m, const char *key) {
    if (!m || !key)
        return NULL;
    return m->slots[strmap_probe(m, key, strmap_hash(m, key))].key;
}

bool oq_strmap_remove(oq_strmap *m, const char *key) {
    if (!m || !key)
        return false;
    size_t mask = m->cap - 1;
    size_t i = strmap_probe(m, key, strmap_hash(m, key));
    if (!m->slots[i].key)
        return false;
    if (m->keys == OQ_STRMAP_COPY)
        free((char *)m->slots[i].key);
    /* Backward shift: pull later entries of the run into the hole unless
     * their home slot lies cyclically in (hole, j], where they already sit
     * as early as they can. */
    size_t hole = i;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!m->slots[j].key)
            break;
        size_t home = (size_t)m->slots[j].hash & mask;
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].key = NULL;
    m->count--;
    return true;
}

size_t oq_strmap_count(const oq_strmap *m) {
    return m ? m->count : 0;
}

bool oq_strmap_next(const oq_strmap *m, size_t *iter, const char **key, int *value) {
    if (!m)
        return false;
    for (size_t i = *iter; i < m->cap; i++) {
        if (m->slots[i].key) {
            if (key)
                *key = m->slots[i].key;
            if (value)
                *value = m->slots[i].value;
            *iter = i + 1;
            return true;
        }
    }
    *iter = m->cap;
    return false;
}
