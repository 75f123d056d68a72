/* optim_isa.h: the optimizers' elementwise passes, built once per x86-64 level like the layer
 * kernels (kernels_isa.h; internal to optim.c and optim_math.c). The optimizer is replicated on
 * every rank of a data-parallel run, so the levels must agree bit for bit, or machines of different
 * levels in one run would drift apart: every sum is over fixed lanes in a fixed order and the rest
 * is elementwise IEEE arithmetic (sqrtf is exact; ISO C mode never fuses a multiply-add). */
#ifndef BP_OPTIM_ISA_H
#define BP_OPTIM_ISA_H

#include <stddef.h>

#include "kernels_isa.h"

/* Per-step float constants of the element-wise math. */
typedef struct {
    float b1, omb1; /* beta1, 1 - beta1 */
    float b2, omb2; /* beta2, 1 - beta2 */
    float c1, c2;   /* 1/(1 - beta1^t), 1/(1 - beta2^t), or 1 without bias correction */
    float eps;
    float s;        /* clip scale: clip/||g|| when clipping is active, else 1 */
    float mom;      /* classic LARS momentum */
} Coef;

/* The passes over one chunk (optim.c's header comment has the layout): x parameters, g gradient,
 * m, v moments, n floats; out receives the chunk's two sums of squares. */
typedef struct {
    double (*sumsq_chunk)(const float *x, size_t n);
    void (*lamb_pass1)(const Coef *k, float wd, int apply, float a, float *x, const float *g, float *m,
                       float *v, size_t n, double *out);
    void (*lamb_pass2)(const Coef *k, float wd, float a, float *x, const float *m, const float *v, size_t n);
    void (*larsp_pass1)(const Coef *k, float wd, int apply, float a, float *x, const float *g, float *m,
                        size_t n, double *out);
    void (*larsp_pass2)(float a, float *x, const float *m, size_t n);
    void (*larsc_update)(const Coef *k, float wd, float a, float *x, const float *g, float *vel, size_t n);
    void (*adam_update)(const Coef *k, float wd2, float wdd, float a, float *x, const float *g, float *m,
                        float *v, size_t n);
} OptimMathOps;

extern const OptimMathOps optim_math_x86_64_v4, optim_math_x86_64_v3, optim_math_x86_64;

#endif
