/* constfold.h: turns nodes of the main graph whose inputs are all constant
 * (e.g. mnist-8's Reshape of a weight, PyTorch's shape arithmetic on
 * initializers) into initializers, so weights reach Conv/Gemm/MatMul
 * directly and can be quantized, and drops initializers nothing reads. */
#ifndef OQ_CONSTFOLD_H
#define OQ_CONSTFOLD_H

#include "model.h"
#include "status.h"

/* Folds in place; *folded (optional) counts the nodes replaced. Nodes whose
 * folded output would be much larger than their inputs (ConstantOfShape,
 * Expand, Tile of large shapes) are left alone. */
oq_status oq_fold_constant_nodes(oq_model *m, int *folded, oq_error *err);

#endif
