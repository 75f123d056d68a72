/* optim.h: LAMB, LARS (the LAMB paper's Algorithm 1 and the classic trust-coefficient form), Adam
 * and AdamW over the parameter table, global gradient-norm clipping, per-layer statistics and the
 * optimizer state for checkpoints. docs/optimizers.md gives the math as implemented and the source
 * of every choice.
 *
 * A "layer" is one tensor of the ParamTable. Its weight_decay flag says whether weight decay applies
 * to it; its layer_adaptation flag whether LAMB/LARS scale its update by a trust ratio (ratio 1
 * otherwise). Moments are float32, one contiguous buffer of table->total floats per moment;
 * element-wise math is float32, every norm is accumulated in double.
 *
 * Determinism: the work is split into fixed chunks of each tensor (independent of the thread
 * count); each chunk's partial sums are accumulated in a fixed lane order and combined in chunk
 * order, so a step gives bit-identical results with any number of OpenMP threads. */
#ifndef BP_OPTIM_H
#define BP_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "common.h"
#include "config.h"
#include "params.h"

typedef struct Optimizer Optimizer;

/* Allocates the optimizer and its zeroed moments for the tensors of table (copied: the table may
 * be freed afterwards; its weight_decay / layer_adaptation flags are read here). Moments: LAMB,
 * Adam, AdamW keep m and v; LARS (paper) keeps m; LARS (classic) keeps the velocity. */
Optimizer *optim_create(const OptimConfig *oc, const ParamTable *table, BpError *err);
/* ZeRO stage 1 (training.shard_optimizer): shard `shard` of n_shards keeps and updates the moments
 * of about 1/n_shards of the floats (whole chunks, cut by optim_create_shard alone from the table),
 * so each rank holds 1/N of the optimizer state. optim_step is then a collective over the n_shards
 * ranks of dist.h (n_shards must be dist_world_size()): each rank updates its floats, the chunks'
 * partial sums of squares are summed across ranks (each comes from one rank, zeros elsewhere:
 * exact) so every per-tensor norm, trust ratio and statistic is the unsharded one, bit for bit, and
 * the updated parameters are gathered to every rank. optim_create is optim_create_shard(.., 0, 1). */
Optimizer *optim_create_shard(const OptimConfig *oc, const ParamTable *table, int shard, int n_shards,
                              BpError *err);
bool optim_sharded(const Optimizer *o);
/* Seconds the last optim_step spent communicating (sharded: summing the partial sums, gathering the
 * parameters; nothing overlaps them, so all of it is exposed). 0 unsharded. */
double optim_comm_seconds(const Optimizer *o);
void optim_free(Optimizer *o);

/* Global L2 norm of the gradients over the whole table, accumulated in double. If per_tensor_sq is
 * non-NULL it receives each tensor's squared norm (table->n entries), so that the caller can name
 * the first non-finite tensor. Thread-count independent like the step. */
double optim_grad_norm(const ParamTable *t, const float *grads, double *per_tensor_sq);

/* One update of params (table->total floats) with learning rate lr. grad_norm is the value
 * optim_grad_norm returned; when grad_norm > clip_grad_norm > 0 the gradients are scaled by
 * clip_grad_norm / grad_norm inside the update pass (grads itself is not written). The caller must
 * not step with a non-finite grad_norm. The step counter (bias correction's t) increments first. */
void optim_step(Optimizer *o, float *params, const float *grads, double lr, double grad_norm);

/* Per-tensor figures of the last step, before the update:
 *   param_norm   ||x||
 *   update_norm  the norm the trust ratio divides by: LAMB ||r + wd x||, LARS paper ||m||,
 *                LARS classic ||g|| (g after clipping)
 *   trust_ratio  the factor applied to lr: LAMB / LARS paper phi(||x||)/update_norm (1 when a norm
 *                is 0 or the tensor is excluded from adaptation), LARS classic local_lr. */
typedef struct {
    double param_norm, update_norm, trust_ratio;
} OptimLayerStat;

/* table->n entries for LAMB and LARS (zeros before the first step); NULL for Adam and AdamW. */
const OptimLayerStat *optim_layer_stats(const Optimizer *o);
long optim_step_count(const Optimizer *o);
/* Restarts the step count at 0, the moments kept: the next step is t = 1 for bias correction, as
 * NVIDIA's BERT recipe does at its phase 2 (phases[i].reset_optimizer_step). */
void optim_reset_step_count(Optimizer *o);
/* "lamb", "lars (paper form)", "lars (classic form)", "adam", "adamw" */
const char *optim_describe(const Optimizer *o);

/* State for checkpoints: a self-describing blob (magic, version, optimizer kind, moment count,
 * tensor-layout CRC, tensor count, total, step count, then the moments as float32 in host byte
 * order). load refuses a blob of another kind, tensor layout or size with a message saying which;
 * the per-layer statistics read zero after a load. */
/* The blob is the same whether the optimizer is sharded or not (a checkpoint resumes with or
 * without sharding, on any number of ranks):
 *   optim_state_bytes  the whole state's size, on every shard
 *   optim_state_save   the blob into dst (unsharded only: a sharded state is streamed, below)
 *   optim_state_load   validates the blob and takes this shard's part of it (local)
 *   optim_state_share  sharded: a collective after rank 0 alone loaded root_state (its blob; NULL on
 *                      the other ranks): the step count and every rank's part of the moments from it.
 *                      Nothing to do unsharded. */
size_t optim_state_bytes(const Optimizer *o);
void optim_state_save(const Optimizer *o, void *dst);
int optim_state_load(Optimizer *o, const void *src, size_t bytes, BpError *err);
void optim_state_share(Optimizer *o, const void *root_state);
/* The blob of optim_state_save handed out piece by piece, without a copy of the whole state (a
 * checkpoint section, checkpoint.h's next): on rank 0, open a stream and pull pieces until
 * optim_state_bytes add up; with a sharded optimizer the other ranks call optim_state_send at the
 * same time, and rank 0 receives their parts in order (4 MiB messages into one buffer). */
typedef struct OptimStateStream OptimStateStream;
OptimStateStream *optim_state_stream_open(const Optimizer *o, BpError *err);
const void *optim_state_stream_next(void *stream, size_t *len); /* NULL past the end */
void optim_state_stream_close(OptimStateStream *st);            /* NULL is fine */
void optim_state_send(const Optimizer *o);                      /* ranks > 0 of a sharded optimizer */

/* Memory-bandwidth benchmark at a given size (bert-base: ~110e6 floats). Builds a table shaped like
 * BERT's (768-wide matrices, bias/LayerNorm vectors excluded from decay and adaptation), times
 * optim_grad_norm, an in-place axpy and one step of each optimizer (best of 5, a memcpy of the same
 * size timed before each run). Rows: "axpy in place", "grad norm", "lamb", "lars (paper)",
 * "lars (classic)", "adam", "adamw". */
#define OPTIM_BENCH_ROWS 7

typedef struct {
    const char *name;   /* static string */
    double ms;          /* best time */
    int bytes_per_elem; /* bytes the operation must move per float */
    double gb_s;        /* bytes_per_elem x floats / time */
    double share;       /* gb_s over the copy's rate (2 x buffer bytes / copy time); can exceed 1 */
} OptimBenchRow;

typedef struct {
    size_t floats; /* the table's total (n_floats rounded to its layout) */
    int tensors, threads, reps;
    OptimBenchRow copy; /* "memcpy": the reference rate (share 1) */
    OptimBenchRow rows[OPTIM_BENCH_ROWS];
} OptimBench;

/* Fills out; returns 0, or -1 with err set when the buffers cannot be allocated. */
int optim_bench(size_t n_floats, OptimBench *out, BpError *err);
/* the row of that name ("memcpy" included); a name it does not have is a programmer error */
const OptimBenchRow *optim_bench_row(const OptimBench *b, const char *name);
/* the table: a header line, then operation, ms, bytes/elem, GB/s and share of copy per row */
void optim_bench_print(const OptimBench *b, FILE *out);

#endif
