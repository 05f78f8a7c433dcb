/* ops_quant.c: the quant operator family (see op.h for the contract). */
#include "op.h"

static const oq_op ops[] = {
    {0},
};

const oq_op_table oq_ops_quant = {ops, 0};
