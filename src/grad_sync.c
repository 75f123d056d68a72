/* grad_sync.c: bucketed, overlapped gradient sums (see grad_sync.h). */
#include "grad_sync.h"

#include "common.h"
#include "dist.h"

void grad_sync_begin(GradSync *gs, float *grads, size_t bucket_floats) {
    gs->grads = grads;
    gs->bucket_floats = bucket_floats > 0 ? bucket_floats : 1;
    gs->pending_first = gs->pending_count = 0;
    gs->buckets = 0;
    gs->exposed_s = 0;
}

static void start_pending(GradSync *gs) {
    if (gs->pending_count == 0) return;
    dist_iallreduce_floats(gs->grads + gs->pending_first, gs->pending_count);
    gs->buckets++;
    gs->pending_count = 0;
}

void grad_sync_ready(void *ctx, size_t first, size_t count) {
    GradSync *gs = ctx;
    BP_ASSERT(gs->pending_count == 0 || first + count == gs->pending_first,
              "gradient range [%zu, %zu) does not end where the pending bucket starts (%zu)", first,
              first + count, gs->pending_first);
    gs->pending_first = first;
    gs->pending_count += count;
    if (gs->pending_count >= gs->bucket_floats) start_pending(gs);
    dist_progress();
}

double grad_sync_finish(GradSync *gs) {
    start_pending(gs);
    double t0 = bp_now();
    dist_wait_all();
    gs->exposed_s = bp_now() - t0;
    return gs->exposed_s;
}
