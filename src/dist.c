/* dist.c: dist.h over Open MPI. Every MPI call of the program is in this file. */
#include "dist.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static bool started, finished;
static int rank_id, world = 1;

/* MPI counts are int: larger buffers go in slices of this many elements. */
#define DIST_SLICE ((size_t)1 << 30)

/* Open MPI's launcher (mpirun / orterun) sets this in every rank's environment. */
static bool launched_by_mpirun(void) { return getenv("OMPI_COMM_WORLD_SIZE") != NULL; }

int dist_init(BpError *err) {
    if (started || !launched_by_mpirun()) return 0;
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return bp_fail(err, "MPI_Init_thread failed");
    started = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_id);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (provided < MPI_THREAD_FUNNELED) {
        dist_finalize();
        return bp_fail(err, "this MPI library does not support MPI_THREAD_FUNNELED (OpenMP threads per rank)");
    }
    return 0;
}

void dist_finalize(void) {
    if (!started || finished) return;
    dist_wait_all();
    MPI_Finalize();
    finished = true;
}

_Noreturn void dist_abort(int status) {
    if (started && !finished) MPI_Abort(MPI_COMM_WORLD, status);
    exit(status);
}

bool dist_active(void) { return started && !finished; }
int dist_rank(void) { return dist_active() ? rank_id : 0; }
int dist_world_size(void) { return dist_active() ? world : 1; }

static void allreduce(void *buf, size_t n, MPI_Datatype type, size_t elem) {
    if (world == 1 || !dist_active()) return;
    for (size_t at = 0; at < n; at += DIST_SLICE) {
        size_t len = n - at < DIST_SLICE ? n - at : DIST_SLICE;
        MPI_Allreduce(MPI_IN_PLACE, (char *)buf + at * elem, (int)len, type, MPI_SUM, MPI_COMM_WORLD);
    }
}

void dist_allreduce_floats(float *buf, size_t n) { allreduce(buf, n, MPI_FLOAT, sizeof(float)); }
void dist_allreduce_doubles(double *buf, size_t n) { allreduce(buf, n, MPI_DOUBLE, sizeof(double)); }

bool dist_any(bool mine) {
    int v = mine ? 1 : 0;
    if (world > 1 && dist_active()) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return v != 0;
}

static void broadcast(void *buf, size_t n, MPI_Datatype type, size_t elem) {
    if (world == 1 || !dist_active()) return;
    for (size_t at = 0; at < n; at += DIST_SLICE) {
        size_t len = n - at < DIST_SLICE ? n - at : DIST_SLICE;
        MPI_Bcast((char *)buf + at * elem, (int)len, type, 0, MPI_COMM_WORLD);
    }
}

void dist_broadcast_floats(float *buf, size_t n) { broadcast(buf, n, MPI_FLOAT, sizeof(float)); }
void dist_broadcast_doubles(double *buf, size_t n) { broadcast(buf, n, MPI_DOUBLE, sizeof(double)); }
void dist_broadcast_bytes(void *buf, size_t n) { broadcast(buf, n, MPI_BYTE, 1); }

/* ---- pieces of a buffer (the sharded optimizer) ---------------------------------------------- */

bool dist_fits_int(size_t n) { return n <= (size_t)INT_MAX; }

/* MPI's counts and displacements of the pieces; the table holds one entry per rank. */
static void piece_counts(const size_t *bounds, int **counts, int **displs) {
    static int *c, *d;
    static int n;
    if (n < world) {
        free(c);
        free(d);
        c = malloc((size_t)world * sizeof *c);
        d = malloc((size_t)world * sizeof *d);
        if (!c || !d) dist_abort(1); /* a few bytes per rank: nothing sensible is left to do */
        n = world;
    }
    for (int r = 0; r < world; r++) {
        BP_ASSERT(bounds[r] <= bounds[r + 1] && dist_fits_int(bounds[r + 1]), "piece %d: [%zu, %zu)", r,
                  bounds[r], bounds[r + 1]);
        c[r] = (int)(bounds[r + 1] - bounds[r]);
        d[r] = (int)bounds[r];
    }
    *counts = c;
    *displs = d;
}

void dist_allgather_floats(float *buf, const size_t *bounds) {
    if (world == 1 || !dist_active()) return;
    int *counts, *displs;
    piece_counts(bounds, &counts, &displs);
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, MPI_FLOAT, MPI_COMM_WORLD);
}

void dist_scatter_floats(const float *all, float *mine, const size_t *bounds) {
    if (world == 1 || !dist_active()) {
        memcpy(mine, all, (bounds[1] - bounds[0]) * sizeof(float));
        return;
    }
    int *counts, *displs;
    piece_counts(bounds, &counts, &displs);
    MPI_Scatterv(all, counts, displs, MPI_FLOAT, mine, counts[rank_id], MPI_FLOAT, 0, MPI_COMM_WORLD);
}

void dist_send_floats(const float *buf, size_t n, int to) {
    BP_ASSERT(dist_active() && world > 1 && dist_fits_int(n), "send of %zu floats in a world of %d", n, world);
    MPI_Send(buf, (int)n, MPI_FLOAT, to, 0, MPI_COMM_WORLD);
}

void dist_recv_floats(float *buf, size_t n, int from) {
    BP_ASSERT(dist_active() && world > 1 && dist_fits_int(n), "receive of %zu floats in a world of %d", n, world);
    MPI_Recv(buf, (int)n, MPI_FLOAT, from, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

/* ---- non-blocking sums ------------------------------------------------------------------------ */

/* Outstanding requests, oldest first: [first_request, n_requests). One per bucket of a step (a few
 * dozen), so a fixed table is enough. */
#define DIST_MAX_REQUESTS 4096
static MPI_Request requests[DIST_MAX_REQUESTS];
static int first_request, n_requests;

void dist_iallreduce_floats(float *buf, size_t n) {
    if (world == 1 || !dist_active()) return;
    for (size_t at = 0; at < n; at += DIST_SLICE) {
        size_t len = n - at < DIST_SLICE ? n - at : DIST_SLICE;
        if (n_requests == DIST_MAX_REQUESTS) dist_wait_all();
        MPI_Iallreduce(MPI_IN_PLACE, buf + at, (int)len, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD,
                       &requests[n_requests++]);
    }
}

int dist_outstanding(void) { return n_requests - first_request; }

void dist_progress(void) {
    if (dist_outstanding() == 0) return;
    int done = 0;
    MPI_Testall(dist_outstanding(), requests + first_request, &done, MPI_STATUSES_IGNORE);
    if (done) first_request = n_requests = 0;
}

void dist_wait_oldest(int keep) {
    while (dist_outstanding() > keep) MPI_Wait(&requests[first_request++], MPI_STATUS_IGNORE);
    if (dist_outstanding() == 0) first_request = n_requests = 0;
}

void dist_wait_all(void) { dist_wait_oldest(0); }
