/* ops_reduce.c: the reduce operator family (see op.h for the contract). */
#include "op.h"

static const oq_op ops[] = {
    {0},
};

const oq_op_table oq_ops_reduce = {ops, 0};
