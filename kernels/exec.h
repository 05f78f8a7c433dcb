/* exec.h: the CPU executor. A plan is built once per model (topological
 * order, operator resolution, attribute checks, constant folding, buffer
 * lifetimes) and then run for many inputs. Every tensor a run produces is
 * shown to an optional observer as it appears, and released after its last
 * consumer, so statistics can stream without keeping activations. */
#ifndef OQ_EXEC_H
#define OQ_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "status.h"
#include "tensor.h"

typedef struct oq_plan oq_plan;

typedef struct {
    int threads;             /* worker threads; 0 = one per core */
    size_t max_tensor_bytes; /* largest tensor a run may create; 0 = 4 GiB */
    bool fold_constants;     /* evaluate constant subgraphs at plan time (default on via
                                oq_plan_opts_default) */
    const volatile int *abort_flag; /* when non-NULL and set, runs stop between nodes (ECANCELLED) */
    /* Run element-wise successors of a Conv (Relu, Clip, residual Add,
     * HardSwish and its Add/Clip/Div/Mul spelling, ...) inside it, when the
     * intermediate tensors have no other reader: one pass over memory
     * instead of one per node. The observer then never sees the fused-away
     * intermediates, so calibration leaves it off (the default). */
    bool fuse;
} oq_plan_opts;

oq_plan_opts oq_plan_opts_default(void);

/* Called for every graph input and every node output as it is produced.
 * The tensor is borrowed for the duration of the call. Returning non-OK
 * stops the run with that status. */
typedef oq_status (*oq_observer_fn)(void *ctx, const char *name, const oq_tensor *t,
                                    oq_error *err);

/* The model must outlive the plan. Errors name the node, op and opset
 * (unsupported ops are found here, not halfway through a run). */
oq_status oq_plan_new(oq_model *m, const oq_plan_opts *opts, oq_plan **out, oq_error *err);
void oq_plan_free(oq_plan *p);

/* Real inputs (graph inputs minus initializers) and outputs, in graph order. */
int oq_plan_input_count(const oq_plan *p);
const char *oq_plan_input_name(const oq_plan *p, int i);
/* Declared element type of input i (0 when unknown). */
int oq_plan_input_dtype(const oq_plan *p, int i);
/* The declared first dimension of input i when it is a fixed number (the
 * model's batch is fixed), else -1. */
int64_t oq_plan_input_batch(const oq_plan *p, int i);
int oq_plan_output_count(const oq_plan *p);
const char *oq_plan_output_name(const oq_plan *p, int i);

/* Runs the plan. inputs[i] feeds real input i (dtype must match; shape must
 * fit the declared dims). outputs receives oq_plan_output_count new tensors
 * the caller frees with oq_tensor_free. observer may be NULL. */
oq_status oq_plan_run(oq_plan *p, const oq_tensor *const *inputs, int n_inputs,
                      oq_tensor **outputs, oq_observer_fn observer, void *observer_ctx,
                      oq_error *err);

/* Values the plan computed once while folding constants (outputs of nodes
 * whose inputs are all constant), with the index of the node in the main
 * graph that produced them; for rewriting such nodes into initializers. */
typedef oq_status (*oq_folded_fn)(void *ctx, const char *name, int node, const oq_tensor *t,
                                  oq_error *err);
oq_status oq_plan_each_folded(const oq_plan *p, oq_folded_fn fn, void *ctx, oq_error *err);

/* With opts.fuse: the node (index in the model's main graph) whose step
 * runs `node` inside it, or -1 when node runs on its own. A fused step may
 * still run unfused when a run's shapes do not allow it (a residual that
 * broadcasts). */
int oq_plan_fused_into(const oq_plan *p, int node);

/* Bytes currently held by the plan's buffer pool (for memory tests). */
size_t oq_plan_pool_bytes(const oq_plan *p);

#endif
