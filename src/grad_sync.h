/* grad_sync.h: the gradient sum of a data-parallel step, overlapped with the backward.
 *
 * The trainer hands grad_sync_ready to model_set_grad_ready for the step's LAST micro-batch (the
 * earlier ones only accumulate locally). Each range the backward finishes joins a pending bucket;
 * a bucket of at least bucket_floats starts its non-blocking sum (dist_iallreduce_floats) at once,
 * a smaller one waits for the next range; in between, MPI is given a chance to make progress.
 * grad_sync_finish starts what is left and waits: its wait is the communication the backward did
 * not hide (exposed time).
 *
 * Determinism: the buckets are a function of the model's shape and bucket_floats alone (never of
 * timing), and each bucket is one MPI_SUM over the ranks' buffers; so the result does not depend on
 * how much of the communication overlapped, and runs with the same number of ranks are
 * bit-identical.
 *
 * Memory: Open MPI keeps a temporary the size of each outstanding sum (measured: with every bucket
 * of a 4-layer hidden-512 model in flight a rank's peak RSS rose by up to 40 MB of its 50 MB of
 * gradients, and by how much depended on timing). So at most GRAD_SYNC_IN_FLIGHT sums are
 * outstanding: a bucket ready while that many are waits for the oldest (counted as exposed time).
 * Two keep the link busy (one finishing while the next starts) and bound the temporaries by two of
 * the largest bucket, which the memory plan counts (grad_sync_largest_bucket). */
#ifndef BP_GRAD_SYNC_H
#define BP_GRAD_SYNC_H

#include <stddef.h>

typedef struct {
    float *grads;
    size_t bucket_floats;
    size_t pending_first, pending_count; /* finished ranges not yet being summed */
    int buckets;                         /* started this step */
    double exposed_s;                    /* waited this step (grad_sync_finish) */
} GradSync;

/* Default bucket: 512 Ki floats (2 MiB), about a bert-mini encoder layer; bert-base's layers
 * (7M floats) are one bucket each. */
#define GRAD_SYNC_BUCKET_FLOATS ((size_t)1 << 19)
#define GRAD_SYNC_IN_FLIGHT 2

void grad_sync_begin(GradSync *gs, float *grads, size_t bucket_floats);
/* ModelGradReady: ranges must arrive contiguous and downwards, as model_backward gives them */
void grad_sync_ready(void *gs, size_t first, size_t count);
/* Starts the last bucket and waits for every sum; returns the seconds waited this step (here and
 * for a free place among the sums in flight). */
double grad_sync_finish(GradSync *gs);
/* The largest bucket that ranges of these sizes, given in the backward's order, make. */
size_t grad_sync_largest_bucket(const size_t *ranges, int n_ranges, size_t bucket_floats);

#endif
