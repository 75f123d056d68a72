/* dist.c: the single-process implementation of dist.h (no MPI in this build). */
#include "dist.h"

int dist_rank(void) { return 0; }
int dist_world_size(void) { return 1; }
void dist_allreduce_floats(float *buf, size_t n) {
    (void)buf;
    (void)n;
}
void dist_allreduce_doubles(double *buf, size_t n) {
    (void)buf;
    (void)n;
}
void dist_broadcast_floats(float *buf, size_t n) {
    (void)buf;
    (void)n;
}
