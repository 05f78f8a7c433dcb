/* registry.c: the list of op families and lookup by (domain, op, opset).
 * Lookups happen once per node when a plan is built, so a linear scan over
 * a few hundred entries costs nothing at run time. */
#include "registry.h"

#include <string.h>

static const oq_op_table *const families[] = {
    &oq_ops_elementwise, &oq_ops_shape, &oq_ops_nn, &oq_ops_reduce, &oq_ops_quant,
};

static bool same_domain(const char *a, const char *b) {
    if (!a || strcmp(a, "ai.onnx") == 0)
        a = "";
    if (!b || strcmp(b, "ai.onnx") == 0)
        b = "";
    return strcmp(a, b) == 0;
}

const oq_op *oq_registry_find(const char *domain, const char *op_type, int opset, bool *known_op) {
    if (known_op)
        *known_op = false;
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        const oq_op_table *t = families[f];
        for (size_t i = 0; i < t->count; i++) {
            const oq_op *op = &t->ops[i];
            if (!op->op_type || strcmp(op->op_type, op_type) != 0 || !same_domain(op->domain, domain))
                continue;
            if (known_op)
                *known_op = true;
            if (opset >= op->since_version && opset <= op->until_version)
                return op;
        }
    }
    return NULL;
}

void oq_registry_each(void (*fn)(const oq_op *op, void *ctx), void *ctx) {
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++)
        for (size_t i = 0; i < families[f]->count; i++)
            fn(&families[f]->ops[i], ctx);
}
