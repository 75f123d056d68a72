/* dist.h: data-parallel communication over Open MPI.
 *
 * One binary serves both cases: started by mpirun (Open MPI's launcher puts OMPI_COMM_WORLD_SIZE in
 * every rank's environment), dist_init starts MPI and the calls below communicate; started without
 * it, dist_init does nothing and every call is the identity of a world of one rank. Only commands
 * that communicate (training, the allreduce benchmark) call dist_init; tokenize, vocab, prepare...
 * never start MPI. MPI is called from the main thread only (MPI_THREAD_FUNNELED): the OpenMP
 * workers never communicate.
 *
 * Sums are MPI_SUM reductions: for a fixed number of ranks and fixed buffer sizes Open MPI picks the
 * same algorithm, so the order of the additions, hence the result, is the same on every run and on
 * every rank (float addition is commutative, and the ring and tree algorithms hand each rank the
 * same sums). A different number of ranks adds in another order: results agree to rounding. */
#ifndef BP_DIST_H
#define BP_DIST_H

#include <stdbool.h>
#include <stddef.h>

#include "common.h"

/* Starts MPI when this process was launched by mpirun, else nothing (one rank). Idempotent. */
int dist_init(BpError *err);
/* MPI_Finalize when dist_init started MPI (idempotent): every exit path of a command that called
 * dist_init goes through it or through dist_abort. */
void dist_finalize(void);
/* Ends every rank of the job at once with this exit status (MPI_Abort): for a failure only this
 * rank has seen, when the others may wait in a collective forever. With one rank: exit(status). */
_Noreturn void dist_abort(int status);
bool dist_active(void); /* MPI started (by dist_init) */

int dist_rank(void);
int dist_world_size(void);
/* In-place sums across ranks (identity with one rank). */
void dist_allreduce_floats(float *buf, size_t n);
void dist_allreduce_doubles(double *buf, size_t n);
/* true on every rank when any rank passes true (a collective: every rank must call it) */
bool dist_any(bool mine);
/* Rank 0's buffer to every rank (identity with one rank). */
void dist_broadcast_floats(float *buf, size_t n);
void dist_broadcast_doubles(double *buf, size_t n);
void dist_broadcast_bytes(void *buf, size_t n);
/* The pieces of a buffer cut by bounds (world + 1 offsets in elements, bounds[0] = 0, rank r owning
 * [bounds[r], bounds[r + 1])), for the sharded optimizer (optim.h):
 *   dist_allgather_floats  every rank's own piece to every rank, in place
 *   dist_scatter_floats    rank 0's `all` cut into the pieces, each rank's into `mine`
 * Offsets and pieces must fit MPI's int counts (dist_fits_int); identity / a copy with one rank. */
bool dist_fits_int(size_t n);
void dist_allgather_floats(float *buf, const size_t *bounds);
void dist_scatter_floats(const float *all, float *mine, const size_t *bounds);
/* Blocking point-to-point messages of at most INT_MAX floats (ranks of a world > 1). */
void dist_send_floats(const float *buf, size_t n, int to);
void dist_recv_floats(float *buf, size_t n, int from);
/* Non-blocking sums (MPI_Iallreduce) for overlapping the gradient reduction with the backward:
 * dist_iallreduce_floats starts one, dist_progress lets MPI move the outstanding ones along (Open
 * MPI's non-blocking collectives advance only inside MPI calls), dist_wait_oldest waits for the
 * oldest until at most `keep` are outstanding (dist_outstanding counts them), dist_wait_all returns
 * when all are complete. A buffer must not be touched until its sum is. Identity with one rank.
 * Each outstanding sum holds a temporary of its message's size inside Open MPI (libnbc): what
 * bounds that memory is how many are outstanding (grad_sync.h). */
void dist_iallreduce_floats(float *buf, size_t n);
void dist_progress(void);
int dist_outstanding(void);
void dist_wait_oldest(int keep);
void dist_wait_all(void);

#endif
