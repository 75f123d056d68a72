/* optim_math.c: the elementwise passes of LAMB, LARS, Adam and AdamW over one chunk (the math in
 * docs/optimizers.md), built once per x86-64 level (optim_isa.h). */
#include <math.h>

#include "optim_isa.h"

#ifndef BP_LEVEL
#error "optim_math.c is built once per x86-64 level with -DBP_LEVEL=<level> (Makefile)"
#endif

#define LANES 8

/* ------------------------------------------------------------------------------------------ */
/* sums of squares: LANES double accumulators indexed by position within the chunk, combined   */
/* in a fixed order, so a sum depends only on the values (not on addresses, threads or the     */
/* vector width the compiler picked)                                                           */

/* adds x[j]^2 to lane j % LANES; callers pass sub-blocks that start at a multiple of LANES
 * within their chunk, so the lane is the position in the chunk mod LANES */
static void lanes_sumsq(double *restrict lanes, const float *restrict x, size_t n) {
    size_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) lanes[l] += (double)x[j + l] * x[j + l];
    for (; j < n; j++) lanes[j % LANES] += (double)x[j] * x[j];
}

static double fold_lanes(const double *a) {
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

static double sumsq_chunk(const float *x, size_t n) {
    double s[LANES] = {0};
    lanes_sumsq(s, x, n);
    return fold_lanes(s);
}

/* ------------------------------------------------------------------------------------------ */
/* element kernels over one chunk. Each loop is a plain element-wise loop the compiler          */
/* vectorises; sums of squares re-read what a loop just wrote from cache (SUB floats at a      */
/* time), which costs no memory traffic. Pass 2 recomputes exactly the u of pass 1 (the same   */
/* float operations; no contraction into FMA under -std=c11).                                  */

/* floats per sub-block: u is staged here between the update and its sum of squares */
#define SUB 512

/* u = m^/(sqrt(v^) + eps) + wd x from the updated moments */
static inline float lamb_u(const Coef *k, float wd, float x, float m, float v) {
    return (m * k->c1) / (sqrtf(v * k->c2) + k->eps) + wd * x;
}

/* LAMB pass 1: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2; out = {||x||^2, ||u||^2} of the chunk
 * (x before the update); with apply (ratio 1 by configuration) also x -= a u. apply is a literal
 * at both call sites of this inline body, so each gets a loop without the branch. */
static inline void lamb_pass1_body(const Coef *k, float wd, const int apply, float a,
                                   float *restrict x, const float *restrict g, float *restrict m,
                                   float *restrict v, size_t n, double *out) {
    double sx[LANES] = {0}, su[LANES] = {0};
    float ubuf[SUB];
    for (size_t b = 0; b < n; b += SUB) {
        size_t len = n - b < SUB ? n - b : SUB;
        float *xb = x + b, *mb = m + b, *vb = v + b;
        const float *gb = g + b;
        lanes_sumsq(sx, xb, len);
        for (size_t j = 0; j < len; j++) {
            float gg = gb[j] * k->s;
            float mm = k->b1 * mb[j] + k->omb1 * gg;
            float vv = k->b2 * vb[j] + k->omb2 * (gg * gg);
            mb[j] = mm;
            vb[j] = vv;
            float u = lamb_u(k, wd, xb[j], mm, vv);
            ubuf[j] = u;
            if (apply) xb[j] = xb[j] - a * u;
        }
        lanes_sumsq(su, ubuf, len);
    }
    out[0] = fold_lanes(sx);
    out[1] = fold_lanes(su);
}

static void lamb_pass1(const Coef *k, float wd, int apply, float a, float *x, const float *g,
                       float *m, float *v, size_t n, double *out) {
    if (apply) lamb_pass1_body(k, wd, 1, a, x, g, m, v, n, out);
    else lamb_pass1_body(k, wd, 0, a, x, g, m, v, n, out);
}

/* LAMB pass 2: x -= a u with a = lr * ratio */
static void lamb_pass2(const Coef *k, float wd, float a, float *restrict x, const float *restrict m,
                       const float *restrict v, size_t n) {
    for (size_t j = 0; j < n; j++) x[j] = x[j] - a * lamb_u(k, wd, x[j], m[j], v[j]);
}

/* LARS (paper) pass 1: m = b1 m + (1 - b1)(g + wd x); out = {||x||^2, ||m||^2}; with apply,
 * x -= a m. */
static inline void larsp_pass1_body(const Coef *k, float wd, const int apply, float a,
                                    float *restrict x, const float *restrict g, float *restrict m,
                                    size_t n, double *out) {
    double sx[LANES] = {0}, sm[LANES] = {0};
    for (size_t b = 0; b < n; b += SUB) {
        size_t len = n - b < SUB ? n - b : SUB;
        float *xb = x + b, *mb = m + b;
        const float *gb = g + b;
        lanes_sumsq(sx, xb, len);
        for (size_t j = 0; j < len; j++) {
            float mm = k->b1 * mb[j] + k->omb1 * (gb[j] * k->s + wd * xb[j]);
            mb[j] = mm;
            if (apply) xb[j] = xb[j] - a * mm;
        }
        lanes_sumsq(sm, mb, len);
    }
    out[0] = fold_lanes(sx);
    out[1] = fold_lanes(sm);
}

static void larsp_pass1(const Coef *k, float wd, int apply, float a, float *x, const float *g,
                        float *m, size_t n, double *out) {
    if (apply) larsp_pass1_body(k, wd, 1, a, x, g, m, n, out);
    else larsp_pass1_body(k, wd, 0, a, x, g, m, n, out);
}

static void larsp_pass2(float a, float *restrict x, const float *restrict m, size_t n) {
    for (size_t j = 0; j < n; j++) x[j] = x[j] - a * m[j];
}

/* LARS (classic) update: vel = momentum vel + a (g + wd x); x -= vel, with a = lr * local_lr. */
static void larsc_update(const Coef *k, float wd, float a, float *restrict x,
                         const float *restrict g, float *restrict vel, size_t n) {
    for (size_t j = 0; j < n; j++) {
        float nv = k->mom * vel[j] + a * (g[j] * k->s + wd * x[j]);
        vel[j] = nv;
        x[j] = x[j] - nv;
    }
}

/* Adam (wd2 = L2 weight decay added to g) and AdamW (wdd = decoupled decay added to the update);
 * the other one is 0, which adds exactly nothing. */
static void adam_update(const Coef *k, float wd2, float wdd, float a, float *restrict x,
                        const float *restrict g, float *restrict m, float *restrict v, size_t n) {
    for (size_t j = 0; j < n; j++) {
        float xx = x[j];
        float gg = g[j] * k->s + wd2 * xx;
        float mm = k->b1 * m[j] + k->omb1 * gg;
        float vv = k->b2 * v[j] + k->omb2 * (gg * gg);
        m[j] = mm;
        v[j] = vv;
        x[j] = xx - a * ((mm * k->c1) / (sqrtf(vv * k->c2) + k->eps) + wdd * xx);
    }
}

const OptimMathOps BP_LEVEL_TABLE(optim_math) = {sumsq_chunk, lamb_pass1, lamb_pass2, larsp_pass1,
                                                 larsp_pass2, larsc_update, adam_update};
