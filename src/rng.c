/* rng.c: the non-inline part of the counter-based generator (see rng.h). */
#include "rng.h"

#include <math.h>

double rng_next_normal(RngStream *s) {
    /* 1 - u keeps the log argument in (0, 1] */
    double u1 = 1.0 - rng_next_u01d(s);
    double u2 = rng_next_u01d(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
