/* registry.h: resolves a node's (domain, op_type, opset) to an operator
 * implementation from the op family tables. */
#ifndef OQ_REGISTRY_H
#define OQ_REGISTRY_H

#include "op.h"

/* The entry implementing op_type of domain ("" or "ai.onnx" = default) at
 * opset version, or NULL. *known_op (optional) tells whether any entry has
 * that op_type at all, so errors can say "unsupported opset" vs "unknown op". */
const oq_op *oq_registry_find(const char *domain, const char *op_type, int opset, bool *known_op);

/* Calls fn for every registered entry (for listing support). */
void oq_registry_each(void (*fn)(const oq_op *op, void *ctx), void *ctx);

#endif
