/* kernels_isa.h: the layer kernels built once per x86-64 instruction-set level (internal to
 * kernels.c and kernels_math.c).
 *
 * The binary is compiled for baseline x86-64, so that it runs on every x86-64 CPU (a cluster of
 * mixed machines shares one build). The elementwise math that decides the speed of a step outside
 * the matrix products (GELU, softmax, LayerNorm, dropout, cross-entropy) is in src/kernels_math.c,
 * which the Makefile compiles three times: -march=x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA) and
 * x86-64 (SSE2). Each build exports one table of its functions; kernels.c picks the best table the
 * CPU runs (gemm_cpu_features) once, and its public kern_* functions call through it.
 *
 * The three builds give the same results bit for bit: every sum is over fixed lanes in a fixed
 * order (no `omp simd reduction`, whose order follows the vector width), every multiply-add of the
 * exp/erf polynomials is an fmaf (one instruction where the level has FMA, glibc's correctly
 * rounded fmaf below it), and the rest is elementwise IEEE arithmetic, which vector width does not
 * change. tests/test_kernels.c checks it for every level the machine runs. */
#ifndef BP_KERNELS_ISA_H
#define BP_KERNELS_ISA_H

#include "kernels.h"

/* The functions each level provides, as X(name, parameters, arguments): kern_<name> is the public
 * entry (kernels.h), the levels' own copies are static in kernels_math.c. */
#define KERN_MATH_PROCS(X)                                                                              \
    X(dropout_row, (float *mult, const KernDropout *d, int64_t ex, size_t e0, size_t n),                \
      (mult, d, ex, e0, n))                                                                             \
    X(embed_forward,                                                                                    \
      (float *x, float *xhat, float *rstd, const int32_t *ids, const int32_t *tt, const float *word,    \
       const float *pos, const float *type, const float *gamma, const float *beta, int B, int T, int H, \
       float eps, const KernDropout *drop, KernScratch *s),                                             \
      (x, xhat, rstd, ids, tt, word, pos, type, gamma, beta, B, T, H, eps, drop, s))                    \
    X(residual_layernorm_forward,                                                                       \
      (float *y, float *xhat, float *rstd, const float *res, const float *z, const float *zbias,        \
       const float *gamma, const float *beta, int N, int C, float eps, const KernDropout *drop,         \
       KernScratch *s),                                                                                 \
      (y, xhat, rstd, res, z, zbias, gamma, beta, N, C, eps, drop, s))                                  \
    X(layernorm_backward,                                                                               \
      (float *dr, float *dz, const float *dy, const float *xhat, const float *rstd, const float *gamma, \
       float *dgamma, float *dbeta, int N, int C, const KernDropout *drop_in,                           \
       const KernDropout *drop_out, KernScratch *s),                                                    \
      (dr, dz, dy, xhat, rstd, gamma, dgamma, dbeta, N, C, drop_in, drop_out, s))                       \
    X(bias_gelu_forward, (float *f, float *g, const float *bias, int N, int C, GeluKind kind),          \
      (f, g, bias, N, C, kind))                                                                         \
    X(gelu_forward, (float *g, const float *f, int N, int C, GeluKind kind), (g, f, N, C, kind))        \
    X(gelu_backward, (float *dg, float *g, const float *f, int N, int C, GeluKind kind),                \
      (dg, g, f, N, C, kind))                                                                           \
    X(colsum_add, (float *db, const float *X, int ldx, int N, int C), (db, X, ldx, N, C))               \
    X(embed_backward,                                                                                   \
      (float *dword, float *dpos, float *dtype, const float *de, const int32_t *ids, const int32_t *tt, \
       int B, int T, int H),                                                                            \
      (dword, dpos, dtype, de, ids, tt, B, T, H))                                                       \
    X(scatter_add_rows, (float *dX, const float *dout, const int32_t *rows, int M, int C),              \
      (dX, dout, rows, M, C))                                                                           \
    X(attention_forward,                                                                                \
      (float *ctx, float *P, const float *qkv, const int32_t *mask, int B, int T, int H, int A,          \
       const KernDropout *drop, KernScratch *s),                                                        \
      (ctx, P, qkv, mask, B, T, H, A, drop, s))                                                         \
    X(attention_backward,                                                                               \
      (float *dqkv, const float *dctx, const float *qkv, const float *P, const int32_t *mask, int B,    \
       int T, int H, int A, const KernDropout *drop, KernScratch *s),                                   \
      (dqkv, dctx, qkv, P, mask, B, T, H, A, drop, s))                                                  \
    X(xent_forward,                                                                                     \
      (float *logits, float *lse, double *loss, int32_t *correct, const float *bias,                    \
       const int32_t *labels, int M, int V),                                                            \
      (logits, lse, loss, correct, bias, labels, M, V))                                                 \
    X(xent_backward,                                                                                    \
      (float *logits, const float *lse, const int32_t *labels, float scale, float *dbias, int M, int V), \
      (logits, lse, labels, scale, dbias, M, V))

/* the same, for the two that return a value */
#define KERN_MATH_FUNCS(X)                                                                              \
    X(gelu, (float x, GeluKind kind), (x, kind))                                                        \
    X(gelu_grad, (float x, GeluKind kind), (x, kind))

typedef struct {
#define KERN_MATH_PROC_PTR(name, params, args) void(*name) params;
#define KERN_MATH_FUNC_PTR(name, params, args) float(*name) params;
    KERN_MATH_PROCS(KERN_MATH_PROC_PTR)
    KERN_MATH_FUNCS(KERN_MATH_FUNC_PTR)
#undef KERN_MATH_PROC_PTR
#undef KERN_MATH_FUNC_PTR
} KernMathOps;

/* one per build of kernels_math.c */
extern const KernMathOps kern_math_x86_64_v4, kern_math_x86_64_v3, kern_math_x86_64;

/* A level build is compiled with -DBP_LEVEL=x86_64_v4 (or x86_64_v3, x86_64): BP_LEVEL_TABLE(base)
 * names its table base_x86_64_v4 ... */
#define BP_LEVEL_CAT2(a, b) a##_##b
#define BP_LEVEL_CAT(a, b) BP_LEVEL_CAT2(a, b)
#define BP_LEVEL_TABLE(base) BP_LEVEL_CAT(base, BP_LEVEL)

/* the level in use: 0 x86-64-v4, 1 x86-64-v3, 2 x86-64 (kern_isa names it) */
int kern_isa_level(void);

/* Fork/join costs microseconds, and more on a busy machine; below this many elements of work a
 * loop runs on the calling thread. */
static inline bool kern_par(size_t work) { return work >= ((size_t)1 << 15); }

static inline float *kern_scratch_of(KernScratch *s, int id) { return s->buf + (size_t)id * s->per_thread; }

#endif
