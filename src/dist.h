/* dist.h: data-parallel communication. This build is single-process (world size 1): the calls are
 * the points where an MPI build will allreduce gradients and statistics and broadcast the initial
 * parameters, so the trainer is already written for several ranks. */
#ifndef BP_DIST_H
#define BP_DIST_H

#include <stddef.h>

int dist_rank(void);
int dist_world_size(void);
/* In-place sums across ranks (identity with one rank). */
void dist_allreduce_floats(float *buf, size_t n);
void dist_allreduce_doubles(double *buf, size_t n);
/* Rank 0's buffer to every rank (identity with one rank). */
void dist_broadcast_floats(float *buf, size_t n);

#endif
