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
    /* the sums in flight stay at most GRAD_SYNC_IN_FLIGHT (their memory, grad_sync.h); a wait here
       is communication the backward did not hide, like grad_sync_finish's */
    if (dist_outstanding() >= GRAD_SYNC_IN_FLIGHT) {
        double t0 = bp_now();
        dist_wait_oldest(GRAD_SYNC_IN_FLIGHT - 1);
        gs->exposed_s += bp_now() - t0;
    }
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
    gs->exposed_s += bp_now() - t0;
    return gs->exposed_s;
}

size_t grad_sync_largest_bucket(const size_t *ranges, int n_ranges, size_t bucket_floats) {
    size_t pending = 0, largest = 0;
    for (int i = 0; i < n_ranges; i++) {
        pending += ranges[i];
        if (pending >= bucket_floats || i == n_ranges - 1) { /* grad_sync_ready / grad_sync_finish */
            if (pending > largest) largest = pending;
            pending = 0;
        }
    }
    return largest;
}
