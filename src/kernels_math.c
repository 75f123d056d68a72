/* kernels_math.c: the layer kernels' elementwise math (contracts in kernels.h, the math in
 * docs/model.md), built once per x86-64 level (-DBP_LEVEL)
 * (kernels_isa.h says why and how the levels agree bit for bit).
 *
 * Parallel loops are `omp parallel for` over rows, or over column blocks where a kernel
 * accumulates into a vector shared by all rows (so that no two threads write one element and each
 * column is summed over the rows in order). No result depends on which thread computes it or on
 * how many threads there are: a forward and backward are bit-identical for any thread count
 * (tests/test_model.c test_threads; the trainer's resume tests rely on it). */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels_isa.h"
#include "rng.h"

#ifndef BP_LEVEL
#error "kernels_math.c is built once per x86-64 level with -DBP_LEVEL=<level> (Makefile)"
#endif

/* ---------------------------------------------------------------------------------------------
 * Vectorizable float exp and erf. glibc's expf/erff are scalar calls that gcc cannot vectorize
 * without -ffast-math (which style.md rules out for these paths), and the softmaxes and GELUs
 * evaluate them hundreds of millions of times per step. Both are written branch-free so gcc
 * vectorizes the loops that call them; tests/test_kernels.c bounds their error against libm.
 * Their polynomials step by K_MADD, a fused multiply-add (one rounding per Horner step): one
 * instruction at the levels with FMA, glibc's correctly rounded fmaf at baseline x86-64, so every
 * level computes the same numbers (ISO C mode never contracts a * b + c by itself). */
#define K_MADD(a, b, c) fmaf((a), (b), (c))

/* ---------------------------------------------------------------------------------------------
 * Sums in a fixed order, the same at every vector width: element j goes to lane j % 16 (floats) or
 * j % 8 (doubles), and the lanes are folded pairwise. The lanes are gcc vector types, which each
 * level lowers to its own registers (one zmm, two ymm or four xmm) with the same per-lane
 * arithmetic; plain arrays of lanes were left unvectorised in places (scalar adds, measured), and
 * `omp simd reduction` would let each level order a sum its own way. */
#define FLANES 16
#define DLANES 8
typedef float vf16 __attribute__((vector_size(FLANES * sizeof(float))));
typedef double vd8 __attribute__((vector_size(DLANES * sizeof(double))));

/* (vector types travel by pointer: by value, their ABI would differ between the levels) */
static inline void load_vf16(vf16 *v, const float *x) { memcpy(v, x, sizeof *v); }

static inline void widen_vd8(vd8 *v, const float *x) {
    for (int l = 0; l < DLANES; l++) (*v)[l] = (double)x[l];
}

static inline float fold_f16(const vf16 *a) {
    float p[8];
    for (int l = 0; l < 8; l++) p[l] = (*a)[l] + (*a)[l + 8];
    return ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
}

static inline double fold_d8(const vd8 *a) {
    return (((*a)[0] + (*a)[4]) + ((*a)[1] + (*a)[5])) + (((*a)[2] + (*a)[6]) + ((*a)[3] + (*a)[7]));
}

/* sum of x[0..n) */
static inline float sum_f(const float *x, int n) {
    vf16 acc = {0};
    int j = 0;
    for (; j + FLANES <= n; j += FLANES) {
        vf16 v;
        load_vf16(&v, x + j);
        acc += v;
    }
    for (; j < n; j++) acc[j % FLANES] += x[j];
    return fold_f16(&acc);
}

/* sum of x[0..n) in double */
static inline double sum_d(const float *x, int n) {
    vd8 acc = {0};
    int j = 0;
    for (; j + DLANES <= n; j += DLANES) {
        vd8 v;
        widen_vd8(&v, x + j);
        acc += v;
    }
    for (; j < n; j++) acc[j % DLANES] += x[j];
    return fold_d8(&acc);
}

/* *sum = sum of x[j], *dot = sum of x[j] * y[j], in one pass (the same lanes as sum_f and dot_f) */
static inline void sum_and_dot_f(const float *x, const float *y, int n, float *sum, float *dot) {
    vf16 as = {0}, ad = {0};
    int j = 0;
    for (; j + FLANES <= n; j += FLANES) {
        vf16 v, w;
        load_vf16(&v, x + j);
        load_vf16(&w, y + j);
        as += v;
        ad += v * w;
    }
    for (; j < n; j++) {
        as[j % FLANES] += x[j];
        ad[j % FLANES] += x[j] * y[j];
    }
    *sum = fold_f16(&as);
    *dot = fold_f16(&ad);
}

/* sum of x[j] * y[j] */
static inline float dot_f(const float *x, const float *y, int n) {
    vf16 acc = {0};
    int j = 0;
    for (; j + FLANES <= n; j += FLANES) {
        vf16 v, w;
        load_vf16(&v, x + j);
        load_vf16(&w, y + j);
        acc += v * w;
    }
    for (; j < n; j++) acc[j % FLANES] += x[j] * y[j];
    return fold_f16(&acc);
}

/* e^x: x = n ln2 + r, |r| <= ln2/2, e^r by its degree-6 Taylor polynomial (truncation error
 * r^7/5040 < 1.3e-7 relative), 2^n built in the exponent bits. Below -87.3 the result is 0 (as the
 * exact value is below FLT_MIN there), so masked softmax entries come out exactly 0.
 * n is read from t's bits, not converted from float: t = 1.5 * 2^23 + n has the bits of 1.5 * 2^23
 * plus n. Converting a NaN to int is undefined behaviour (x86 gives INT_MIN, which was then
 * shifted while negative); in unsigned arithmetic a NaN only makes a meaningless scale, and the NaN
 * reaches the result through r and p. +Inf is clamped to hi (result Inf), -Inf gives 0. */
static inline float k_exp(float x) {
    const float hi = 88.3762626647949f, lo = -87.3365447505531f;
    float xc = x > hi ? hi : (x < lo ? lo : x);
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = xc * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = xc - n * 0.693145751953125f; /* ln2 split in a high part exact in float ... */
    r = r - n * 1.428606765330187e-06f;    /* ... and the low remainder */
    float p = 1.0f / 720.0f;
    p = K_MADD(p, r, 1.0f / 120.0f);
    p = K_MADD(p, r, 1.0f / 24.0f);
    p = K_MADD(p, r, 1.0f / 6.0f);
    p = K_MADD(p, r, 0.5f);
    p = K_MADD(p, r, 1.0f);
    p = K_MADD(p, r, 1.0f);
    uint32_t tbits;
    memcpy(&tbits, &t, sizeof tbits);
    uint32_t bits = (tbits - 0x4B400000u + 127u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale;
    return x < lo ? 0.0f : y;
}

/* 1 + erf(z), without the cancellation of forming erf first: erfc(|z|) from the Chebyshev-fitted
 * form of Numerical Recipes (erfc(a) = t exp(-a^2 + poly(t)), t = 1/(1 + a/2), fractional error
 * < 1.2e-7 for all a >= 0); then 1 + erf(z) = erfc(|z|) for z < 0 and 2 - erfc(z) otherwise. In
 * GELU's negative tail 1 + erf is tiny and this keeps it to relative accuracy. */
static inline float k_one_plus_erf(float z) {
    float a = fabsf(z);
    float t = 1.0f / (1.0f + 0.5f * a);
    float p = 0.17087277f;
    p = K_MADD(p, t, -0.82215223f);
    p = K_MADD(p, t, 1.48851587f);
    p = K_MADD(p, t, -1.13520398f);
    p = K_MADD(p, t, 0.27886807f);
    p = K_MADD(p, t, -0.18628806f);
    p = K_MADD(p, t, 0.09678418f);
    p = K_MADD(p, t, 0.37409196f);
    p = K_MADD(p, t, 1.00002368f);
    p = K_MADD(p, t, -1.26551223f);
    float erfc = t * k_exp(-a * a + p);
    return z < 0.0f ? erfc : 2.0f - erfc;
}

#define GELU_SQRT1_2 0.70710678118654752f
#define GELU_INV_SQRT_2PI 0.39894228040143268f
#define GELU_K 0.79788456080286536f /* sqrt(2/pi) */
#define GELU_C 0.044715f

/* erf form: gelu(x) = x Phi(x), Phi(x) = (1 + erf(x/sqrt2))/2; gelu'(x) = Phi(x) + x phi(x).
 * tanh form: gelu(x) = x (1 + tanh u)/2, u = k (x + c x^3). Written with s = sigmoid(2u), since
 * 1 + tanh u = 2s, 1 - tanh^2 u = 4 s (1 - s) and 1 - s = e s with e = exp(-2u): no difference of
 * nearly equal numbers in either tail (1 - tanh^2 formed from a rounded tanh loses everything
 * there), so gelu(x) = x s and gelu'(x) = s + 2 x s (1 - s) k (1 + 3 c x^2). */
static inline float k_gelu(float x, GeluKind kind) {
    /* the same operations as k_gelu_grad's *g: backward recomputes G bit for bit */
    if (kind == GELU_TANH) {
        float e = k_exp(-2.0f * GELU_K * (x + GELU_C * x * x * x));
        return x * (1.0f / (1.0f + e));
    }
    return x * (0.5f * k_one_plus_erf(x * GELU_SQRT1_2));
}

/* derivative; *g (when g != NULL) receives gelu(x) from the same intermediate values */
static inline float k_gelu_grad(float x, GeluKind kind, float *g) {
    if (kind == GELU_TANH) {
        float e = k_exp(-2.0f * GELU_K * (x + GELU_C * x * x * x));
        float s = 1.0f / (1.0f + e);
        if (g) *g = x * s;
        return s + 2.0f * x * s * (e * s) * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
    }
    float phi2 = 0.5f * k_one_plus_erf(x * GELU_SQRT1_2);
    if (g) *g = x * phi2;
    return phi2 + x * GELU_INV_SQRT_2PI * k_exp(-0.5f * x * x);
}


static void dropout_row(float *mult, const KernDropout *d, int64_t ex, size_t e0, size_t n) {
    const uint64_t golden = 0x9E3779B97F4A7C15ull;
    uint64_t kex = rng_mix(d->key ^ rng_mix((uint64_t)ex));
    const uint32_t thr = d->threshold;
    const float sc = d->scale;
    size_t i = 0;
    /* head: elements before the next multiple of 4 */
    while (i < n && ((e0 + i) & 3)) {
        size_t e = e0 + i;
        uint64_t h = rng_mix(kex + (uint64_t)(e >> 2) * golden);
        uint32_t bits = (uint32_t)(h >> (16 * (e & 3))) & 0xFFFFu;
        mult[i++] = bits >= thr ? sc : 0.0f;
    }
    size_t nw = (n - i) / 4, w = 0;
    uint64_t w0 = (uint64_t)((e0 + i) >> 2);
    float *m = mult + i;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* 8 hashes at a time, read back as 32 16-bit fields: on a little-endian machine field 4k + l of
       the array is bits [16l, 16l + 16) of hash k, exactly element 4k + l's bits below; so both
       loops vectorise as straight lanes (the per-hash form stored its 4 results one by one) */
    for (; w + 8 <= nw; w += 8) {
        uint64_t h[8];
        for (int k = 0; k < 8; k++) h[k] = rng_mix(kex + (w0 + w + (uint64_t)k) * golden);
        uint16_t bits[32];
        memcpy(bits, h, sizeof bits);
        for (int j = 0; j < 32; j++) m[4 * w + j] = bits[j] >= thr ? sc : 0.0f;
    }
#endif
    for (; w < nw; w++) {
        uint64_t h = rng_mix(kex + (w0 + w) * golden);
        for (int l = 0; l < 4; l++) m[4 * w + l] = ((uint32_t)(h >> (16 * l)) & 0xFFFFu) >= thr ? sc : 0.0f;
    }
    for (i += 4 * nw; i < n; i++) {
        size_t e = e0 + i;
        uint64_t h = rng_mix(kex + (uint64_t)(e >> 2) * golden);
        uint32_t bits = (uint32_t)(h >> (16 * (e & 3))) & 0xFFFFu;
        mult[i] = bits >= thr ? sc : 0.0f;
    }
}

/* the mask row for row n of a (N,C) matrix */
static inline void dropout_row_of(float *mult, const KernDropout *d, size_t n, size_t C) {
    size_t rpe = d->rows_per_example;
    dropout_row(mult, d, d->example_index[n / rpe], (n % rpe) * C, C);
}


/* ---------------------------------------------------------------------------------------------
 * LayerNorm rows: statistics in double (a row mixes values of very different size after the
 * residual sum, and double costs nothing at these row lengths). */

/* in: r (C) (may equal xhat); out: xhat, y; returns rstd */
static inline float ln_row(float *y, float *xhat, const float *r, const float *gamma,
                           const float *beta, int C, float eps) {
    double mean = sum_d(r, C) / C;
    vd8 sq = {0};
    int j = 0;
    for (; j + DLANES <= C; j += DLANES) {
        vd8 dlt;
        widen_vd8(&dlt, r + j);
        dlt -= mean;
        sq += dlt * dlt;
    }
    for (; j < C; j++) {
        double dlt = (double)r[j] - mean;
        sq[j % DLANES] += dlt * dlt;
    }
    double var = fold_d8(&sq) / C;
    float rstd = (float)(1.0 / sqrt(var + (double)eps));
    float meanf = (float)mean;
    for (j = 0; j < C; j++) {
        float xh = (r[j] - meanf) * rstd;
        xhat[j] = xh;
        y[j] = xh * gamma[j] + beta[j];
    }
    return rstd;
}

static void embed_forward(float *x, float *xhat, float *rstd, const int32_t *ids, const int32_t *tt,
                          const float *word, const float *pos, const float *type, const float *gamma,
                          const float *beta, int B, int T, int H, float eps, const KernDropout *drop,
                          KernScratch *s) {
    size_t N = (size_t)B * T;
    bool dr = kern_dropout_on(drop);
#pragma omp parallel num_threads(s->nthreads) if (kern_par(N * (size_t)H))
    {
        float *mult = kern_scratch_of(s, omp_get_thread_num());
#pragma omp for schedule(static)
        for (size_t n = 0; n < N; n++) {
            size_t t = n % (size_t)T;
            const float *w = word + (size_t)ids[n] * H, *p = pos + t * H, *ty = type + (size_t)tt[n] * H;
            float *xh = xhat + n * H, *y = x + n * H;
            for (int j = 0; j < H; j++) xh[j] = w[j] + p[j] + ty[j];
            rstd[n] = ln_row(y, xh, xh, gamma, beta, H, eps);
            if (dr) {
                dropout_row_of(mult, drop, n, (size_t)H);
                for (int j = 0; j < H; j++) y[j] *= mult[j];
            }
        }
    }
}

/* Scatter-add of the embedding-sum gradient: e = word[id] + pos[t] + type[tt], so each table row
 * receives the sum of de over the tokens that read it. Threads own column blocks: no two write the
 * same element, whatever ids repeat. */
static void embed_backward(float *dword, float *dpos, float *dtype, const float *de,
                           const int32_t *ids, const int32_t *tt, int B, int T, int H) {
    size_t N = (size_t)B * T;
    const int CB = 32;
    int nblk = (H + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (kern_par(N * (size_t)H))
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * CB, c1 = c0 + CB > H ? H : c0 + CB;
        for (size_t n = 0; n < N; n++) {
            size_t t = n % (size_t)T;
            const float *g = de + n * H;
            float *w = dword + (size_t)ids[n] * H, *p = dpos + t * H, *ty = dtype + (size_t)tt[n] * H;
            for (int j = c0; j < c1; j++) {
                w[j] += g[j];
                p[j] += g[j];
                ty[j] += g[j];
            }
        }
    }
}

static void residual_layernorm_forward(float *y, float *xhat, float *rstd, const float *res,
                                       const float *z, const float *zbias, const float *gamma,
                                       const float *beta, int N, int C, float eps,
                                       const KernDropout *drop, KernScratch *s) {
    bool dr = kern_dropout_on(drop);
#pragma omp parallel num_threads(s->nthreads) if (kern_par((size_t)N * C))
    {
        float *mult = kern_scratch_of(s, omp_get_thread_num());
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            size_t o = (size_t)n * C;
            float *r = xhat + o;
            const float *zr = z + o;
            for (int j = 0; j < C; j++) r[j] = zr[j] + (zbias ? zbias[j] : 0.0f);
            if (dr) {
                dropout_row_of(mult, drop, (size_t)n, (size_t)C);
                for (int j = 0; j < C; j++) r[j] *= mult[j];
            }
            if (res)
                for (int j = 0; j < C; j++) r[j] += res[o + j];
            rstd[n] = ln_row(y + o, r, r, gamma, beta, C, eps);
        }
    }
}

/* LayerNorm backward. y = g*xhat + b, xhat = (r - mu) * rstd. With gy = g*dy:
 *   dr = rstd * (gy - mean(gy) - xhat * mean(gy * xhat))
 * (the two means are the gradients through mu and through rstd), dg += dy*xhat, db += dy.
 * dg and db come first, in a pass over column blocks (each column summed over the rows in order, in
 * double, whatever the thread count), because dr may overwrite dy. */
static void layernorm_backward(float *dr, float *dz, const float *dy, const float *xhat,
                               const float *rstd, const float *gamma, float *dgamma, float *dbeta,
                               int N, int C, const KernDropout *drop_in, const KernDropout *drop_out,
                               KernScratch *s) {
    bool din = kern_dropout_on(drop_in), dout = kern_dropout_on(drop_out);
    enum { CB = 64 };
    int nblk = (C + CB - 1) / CB;
#pragma omp parallel num_threads(s->nthreads) if (kern_par((size_t)N * C))
    {
        float *sc = kern_scratch_of(s, omp_get_thread_num());
        float *mult = sc, *gy = sc + C; /* gy = gamma * drop_in(dy), a row */
#pragma omp for schedule(static)
        for (int blk = 0; blk < nblk; blk++) {
            int c0 = blk * CB, w = C - c0 < CB ? C - c0 : CB;
            double pg[CB] = {0}, pb[CB] = {0};
            for (int n = 0; n < N; n++) {
                const float *d = dy + (size_t)n * C + c0, *xh = xhat + (size_t)n * C + c0;
                if (din) {
                    size_t rpe = drop_in->rows_per_example;
                    dropout_row(mult, drop_in, drop_in->example_index[(size_t)n / rpe],
                                ((size_t)n % rpe) * C + c0, (size_t)w);
                    for (int j = 0; j < w; j++) {
                        float v = d[j] * mult[j];
                        pg[j] += (double)(v * xh[j]);
                        pb[j] += (double)v;
                    }
                } else {
                    for (int j = 0; j < w; j++) {
                        pg[j] += (double)(d[j] * xh[j]);
                        pb[j] += (double)d[j];
                    }
                }
            }
            for (int j = 0; j < w; j++) {
                dgamma[c0 + j] += (float)pg[j];
                dbeta[c0 + j] += (float)pb[j];
            }
        }
        /* the implicit barrier above: every dy read before any dr (which may alias it) is written */
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            size_t o = (size_t)n * C;
            const float *xh = xhat + o;
            if (din) {
                dropout_row_of(mult, drop_in, (size_t)n, (size_t)C);
                for (int j = 0; j < C; j++) gy[j] = gamma[j] * (dy[o + j] * mult[j]);
            } else {
                for (int j = 0; j < C; j++) gy[j] = gamma[j] * dy[o + j];
            }
            float a, bsum;
            sum_and_dot_f(gy, xh, C, &a, &bsum);
            a /= (float)C;
            bsum /= (float)C;
            float rs = rstd[n];
            for (int j = 0; j < C; j++) dr[o + j] = rs * (gy[j] - a - xh[j] * bsum);
            if (dz) {
                if (dout) {
                    dropout_row_of(mult, drop_out, (size_t)n, (size_t)C);
                    for (int j = 0; j < C; j++) dz[o + j] = dr[o + j] * mult[j];
                } else if (dz != dr) {
                    memcpy(dz + o, dr + o, sizeof(float) * (size_t)C);
                }
            }
        }
    }
}

/* --------------------------------------------------------------------------------------------- */

static void bias_gelu_forward(float *f, float *g, const float *bias, int N, int C, GeluKind kind) {
#pragma omp parallel for schedule(static) if (kern_par((size_t)N * C * 8))
    for (int n = 0; n < N; n++) {
        float *fr = f + (size_t)n * C, *gr = g + (size_t)n * C;
        if (kind == GELU_TANH) {
            for (int j = 0; j < C; j++) {
                float x = fr[j] + bias[j];
                fr[j] = x;
                gr[j] = k_gelu(x, GELU_TANH);
            }
        } else {
            for (int j = 0; j < C; j++) {
                float x = fr[j] + bias[j];
                fr[j] = x;
                gr[j] = k_gelu(x, GELU_ERF);
            }
        }
    }
}

static void gelu_forward(float *g, const float *f, int N, int C, GeluKind kind) {
#pragma omp parallel for schedule(static) if (kern_par((size_t)N * C * 8))
    for (int n = 0; n < N; n++) {
        const float *fr = f + (size_t)n * C;
        float *gr = g + (size_t)n * C;
        if (kind == GELU_TANH)
            for (int j = 0; j < C; j++) gr[j] = k_gelu(fr[j], GELU_TANH);
        else
            for (int j = 0; j < C; j++) gr[j] = k_gelu(fr[j], GELU_ERF);
    }
}

static void gelu_backward(float *dg, float *g, const float *f, int N, int C, GeluKind kind) {
#pragma omp parallel for schedule(static) if (kern_par((size_t)N * C * 8))
    for (int n = 0; n < N; n++) {
        size_t o = (size_t)n * C;
        const float *fr = f + o;
        float *dr = dg + o;
        if (g) {
            float *gr = g + o;
            if (kind == GELU_TANH)
                for (int j = 0; j < C; j++) dr[j] *= k_gelu_grad(fr[j], GELU_TANH, &gr[j]);
            else
                for (int j = 0; j < C; j++) dr[j] *= k_gelu_grad(fr[j], GELU_ERF, &gr[j]);
        } else {
            if (kind == GELU_TANH)
                for (int j = 0; j < C; j++) dr[j] *= k_gelu_grad(fr[j], GELU_TANH, NULL);
            else
                for (int j = 0; j < C; j++) dr[j] *= k_gelu_grad(fr[j], GELU_ERF, NULL);
        }
    }
}

static void colsum_add(float *db, const float *X, int ldx, int N, int C) {
    enum { CB = 64 };
    int nblk = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (kern_par((size_t)N * C))
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * CB, w = C - c0 < CB ? C - c0 : CB;
        double acc[CB] = {0};
        for (int n = 0; n < N; n++) {
            const float *r = X + (size_t)n * ldx + c0;
            for (int j = 0; j < w; j++) acc[j] += r[j];
        }
        for (int j = 0; j < w; j++) db[c0 + j] += (float)acc[j];
    }
}

/* ---------------------------------------------------------------------------------------------
 * attention */

/* row[j] += add[j] for j < n; returns the row's largest value (the first pass of a softmax) */
static inline float add_row_max(float *row, const float *add, int n) {
    float mx = -INFINITY;
    /* a maximum is the same in any order (NaN never wins a >; +0 and -0 give the same softmax) */
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < n; j++) {
        float v = row[j] + add[j];
        row[j] = v;
        mx = v > mx ? v : mx;
    }
    return mx;
}

/* BERT's additive mask for example b's keys as a row of 0 / -10000 */
static void mask_bias_row(float *mbias, const int32_t *mask_b, int T) {
    for (int j = 0; j < T; j++) mbias[j] = mask_b[j] ? 0.0f : -10000.0f;
}

/* One head's probabilities, S (T,T) = softmax(scale Q K^T + mbias) row by row. The forward and,
 * when the probabilities are not kept, the backward both call this on the same Q and K, so the
 * backward's P is the forward's bit for bit (one single-threaded product of the same shape on the
 * same inputs, then the same row operations). */
static void attention_probs_head(float *S, const float *Q, const float *K, int ld, const float *mbias, int T,
                                 int D, float scale) {
    kern_gemm_single(false, true, T, T, D, scale, Q, ld, K, ld, 0.0f, S, T);
    for (int i = 0; i < T; i++) {
        float *row = S + (size_t)i * T;
        float mx = add_row_max(row, mbias, T);
        for (int j = 0; j < T; j++) row[j] = k_exp(row[j] - mx);
        float inv = 1.0f / sum_f(row, T);
        for (int j = 0; j < T; j++) row[j] *= inv;
    }
}

static void attention_forward(float *ctx, float *P, const float *qkv, const int32_t *mask, int B,
                              int T, int H, int A, const KernDropout *drop, KernScratch *s) {
    int D = H / A, H3 = 3 * H;
    float scale = 1.0f / sqrtf((float)D);
    bool dr = kern_dropout_on(drop);
    size_t TT = (size_t)T * T;
#pragma omp parallel num_threads(s->nthreads) if (kern_par((size_t)B * A * T * T * D))
    {
        /* scratch: the dropout multipliers, the mask row, the probabilities when P is not kept */
        float *sc = kern_scratch_of(s, omp_get_thread_num());
        float *Pd = sc, *mbias = sc + TT, *Ph = mbias + T;
        int b_prev = -1;
#pragma omp for schedule(dynamic, 1)
        for (int bh = 0; bh < B * A; bh++) {
            int b = bh / A, h = bh % A;
            const float *Q = qkv + (size_t)b * T * H3 + (size_t)h * D;
            const float *K = Q + H, *V = Q + 2 * H;
            float *S = P ? P + (size_t)bh * TT : Ph;
            if (b != b_prev) { /* once per example */
                mask_bias_row(mbias, mask + (size_t)b * T, T);
                b_prev = b;
            }
            attention_probs_head(S, Q, K, H3, mbias, T, D, scale);
            if (dr) {
                /* the head's dropout multipliers, elements (h, i, j) of the example: one call */
                dropout_row(Pd, drop, drop->example_index[b], (size_t)h * TT, TT);
                for (size_t k = 0; k < TT; k++) Pd[k] *= S[k];
            }
            /* ctx_bh (T,D) = dropout(P) V */
            kern_gemm_single(false, false, T, D, T, 1.0f, dr ? Pd : S, T, V, H3, 0.0f, ctx + (size_t)b * T * H + (size_t)h * D, H);
        }
    }
}

/* Attention backward for one (example, head), with P' = dropout(P) = P*m:
 *   dV = P'^T dC          dP' = dC V^T          dP = dP' * m
 *   dS = P * (dP - rowsum(P * dP))      (softmax backward; the additive mask is a constant)
 *   dQ = scale dS K       dK = scale dS^T Q
 * P NULL: P is recomputed from Q, K and the mask first (attention_probs_head, the forward's code). */
static void attention_backward(float *dqkv, const float *dctx, const float *qkv, const float *P,
                               const int32_t *mask, int B, int T, int H, int A, const KernDropout *drop,
                               KernScratch *s) {
    int D = H / A, H3 = 3 * H;
    float scale = 1.0f / sqrtf((float)D);
    bool dr = kern_dropout_on(drop);
    size_t TT = (size_t)T * T;
#pragma omp parallel num_threads(s->nthreads) if (kern_par((size_t)B * A * T * T * D))
    {
        float *sc = kern_scratch_of(s, omp_get_thread_num());
        float *Pd = sc, *dS = sc + TT, *mask_tt = dS + TT, *Ph = mask_tt + TT, *mbias = Ph + TT;
        int b_prev = -1;
#pragma omp for schedule(dynamic, 1)
        for (int bh = 0; bh < B * A; bh++) {
            int b = bh / A, h = bh % A;
            size_t qo = (size_t)b * T * H3 + (size_t)h * D;
            const float *Q = qkv + qo, *K = Q + H, *V = Q + 2 * H;
            float *dQ = dqkv + qo, *dK = dQ + H, *dV = dQ + 2 * H;
            const float *dC = dctx + (size_t)b * T * H + (size_t)h * D;
            const float *S = P ? P + (size_t)bh * TT : Ph;
            if (!P) {
                if (b != b_prev) {
                    mask_bias_row(mbias, mask + (size_t)b * T, T);
                    b_prev = b;
                }
                attention_probs_head(Ph, Q, K, H3, mbias, T, D, scale);
            }
            if (dr) {
                /* the (h, i, j) multipliers are contiguous for one head: one call makes them all,
                   kept for dP below (regenerating them costs a hash per 4 elements) */
                dropout_row(mask_tt, drop, drop->example_index[b], (size_t)h * TT, TT);
                for (size_t k = 0; k < TT; k++) Pd[k] = S[k] * mask_tt[k];
            }
            /* dV (T,D) = P'^T dC */
            kern_gemm_single(true, false, T, D, T, 1.0f, dr ? Pd : S, T, dC, H, 0.0f, dV, H3);
            /* dP' (T,T) = dC V^T */
            kern_gemm_single(false, true, T, T, D, 1.0f, dC, H, V, H3, 0.0f, dS, T);
            for (int i = 0; i < T; i++) {
                float *d = dS + (size_t)i * T;
                const float *pr = S + (size_t)i * T;
                if (dr) {
                    const float *mr = mask_tt + (size_t)i * T;
                    for (int j = 0; j < T; j++) d[j] *= mr[j];
                }
                float dot = dot_f(pr, d, T);
                for (int j = 0; j < T; j++) d[j] = pr[j] * (d[j] - dot);
            }
            /* dQ (T,D) = scale dS K ; dK (T,D) = scale dS^T Q */
            kern_gemm_single(false, false, T, D, T, scale, dS, T, K, H3, 0.0f, dQ, H3);
            kern_gemm_single(true, false, T, D, T, scale, dS, T, Q, H3, 0.0f, dK, H3);
        }
    }
}

/* --------------------------------------------------------------------------------------------- */

static void xent_forward(float *logits, float *lse, double *loss, int32_t *correct,
                         const float *bias, const int32_t *labels, int M, int V) {
#pragma omp parallel for schedule(static) if (kern_par((size_t)M * V * 4))
    for (int i = 0; i < M; i++) {
        float *l = logits + (size_t)i * V;
        /* max first, then the first index holding it: both vectorise (a running argmax does not) */
        float mx = add_row_max(l, bias, V);
        int arg = V;
        /* a minimum: the same in any order */
#pragma omp simd reduction(min : arg)
        for (int j = 0; j < V; j++)
            if (l[j] == mx && j < arg) arg = j;
        if (arg == V) arg = 0; /* every logit NaN */
        /* sum in float lanes of one row block, accumulated in double across blocks */
        double sum = 0.0;
        enum { BLK = 1024 };
        for (int j0 = 0; j0 < V; j0 += BLK) {
            int j1 = j0 + BLK < V ? j0 + BLK : V;
            float e[BLK];
            for (int j = j0; j < j1; j++) e[j - j0] = k_exp(l[j] - mx);
            sum += sum_f(e, j1 - j0);
        }
        double ls = (double)mx + log(sum);
        lse[i] = (float)ls;
        loss[i] = ls - (double)l[labels[i]];
        correct[i] = arg == labels[i];
    }
}

/* d logits = scale * (softmax(l) - onehot(label)), softmax(l)_j = exp(l_j - lse). Threads own
 * column blocks so the bias gradient (the column sum) needs no reduction across threads. */
static void xent_backward(float *logits, const float *lse, const int32_t *labels, float scale,
                          float *dbias, int M, int V) {
    enum { CB = 512 };
    int nblk = (V + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (kern_par((size_t)M * V * 4))
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * CB, w = V - c0 < CB ? V - c0 : CB;
        double acc[CB] = {0};
        for (int i = 0; i < M; i++) {
            float *l = logits + (size_t)i * V + c0;
            float ls = lse[i];
            for (int j = 0; j < w; j++) {
                float d = scale * k_exp(l[j] - ls);
                l[j] = d;
                acc[j] += d;
            }
            int lab = labels[i] - c0;
            if (lab >= 0 && lab < w) {
                l[lab] -= scale;
                acc[lab] -= scale;
            }
        }
        for (int j = 0; j < w; j++) dbias[c0 + j] += (float)acc[j];
    }
}

/* dX[rows[i]] += dout[i]: threads own column blocks, so repeated rows need no reduction */
static void scatter_add_rows(float *dX, const float *dout, const int32_t *rows, int M, int C) {
    enum { CB = 32 };
    int nblk = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (kern_par((size_t)M * C))
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * CB, c1 = c0 + CB > C ? C : c0 + CB;
        for (int i = 0; i < M; i++) {
            float *d = dX + (size_t)rows[i] * C;
            const float *g = dout + (size_t)i * C;
            for (int j = c0; j < c1; j++) d[j] += g[j];
        }
    }
}

/* --------------------------------------------------------------------------------------------- */

static float gelu(float x, GeluKind kind) { return k_gelu(x, kind); }
static float gelu_grad(float x, GeluKind kind) { return k_gelu_grad(x, kind, NULL); }

#define KERN_MATH_ENTRY(name, params, args) .name = name,
const KernMathOps BP_LEVEL_TABLE(kern_math) = {KERN_MATH_PROCS(KERN_MATH_ENTRY) KERN_MATH_FUNCS(KERN_MATH_ENTRY)};
