/* prepare.h: makes a float model ready for QDQ insertion without changing
 * what it computes: Constant-node weights become initializers, Conv +
 * BatchNormalization pairs fold into one Conv, and the default-domain opset
 * is raised (converting the nodes whose semantics changed) so that
 * QuantizeLinear/DequantizeLinear (opset 10) with per-axis scales (13) fit. */
#ifndef OQ_PREPARE_H
#define OQ_PREPARE_H

#include <stdbool.h>

#include "config.h"
#include "model.h"
#include "status.h"

typedef struct {
    int constants_to_initializers; /* Constant nodes turned into initializers */
    int batchnorms_folded;         /* BatchNormalization nodes folded into Conv */
    int opset_before, opset_after; /* default-domain opset */
    int nodes_converted;           /* nodes rewritten for the new opset */
    int existing_quantize;         /* QuantizeLinear/DequantizeLinear/QLinear* found */
} oq_prepare_result;

/* Counts nodes that are already quantized (QuantizeLinear, DequantizeLinear,
 * DynamicQuantizeLinear, QLinear*, *Integer) in every graph. */
int oq_count_quantized_nodes(oq_model *m);

/* Runs the steps above on the main graph in place. A model that already
 * holds quantized nodes (quantization-aware training) is refused with
 * EUNSUPPORTED saying how many, so it is never quantized twice. An op whose
 * conversion to opset `target_opset` onnxq does not know is EUNSUPPORTED
 * naming the node. target_opset 0 = 13. The result stays a valid model. */
oq_status oq_prepare_model(oq_model *m, int target_opset, oq_prepare_result *res, oq_error *err);

/* The individual steps (oq_prepare_model runs them in this order). */
oq_status oq_constants_to_initializers(oq_model *m, int *moved, oq_error *err);
oq_status oq_fold_batchnorm(oq_model *m, int *folded, oq_error *err);
oq_status oq_upgrade_opset(oq_model *m, int target_opset, int *converted, oq_error *err);

#endif
