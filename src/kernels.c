/* kernels.c: BERT layer kernels (see kernels.h for the contracts, docs/model.md for the math).
 *
 * Parallel loops are `omp parallel for` over rows, or over column blocks where a kernel
 * accumulates into a vector shared by all rows (so that no two threads write one element and each
 * column is summed over the rows in order). No result depends on which thread computes it or on
 * how many threads there are: a forward and backward are bit-identical for any thread count
 * (tests/test_model.c test_threads; the trainer's resume tests rely on it). */
#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gemm_bf16.h"
#include "gemm_dnnl.h"
#include "rng.h"

static int g_threads = 0;

int kern_init_threads(int threads) {
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    omp_set_num_threads(threads);
    openblas_set_num_threads(1);
    g_threads = threads;
    return threads;
}

int kern_threads(void) {
    if (g_threads == 0) kern_init_threads(0);
    return g_threads;
}

/* ---------------------------------------------------------------------------------------------
 * Vectorizable float exp and erf. glibc's expf/erff are scalar calls that gcc cannot vectorize
 * without -ffast-math (which style.md rules out for these paths), and the softmaxes and GELUs
 * evaluate them hundreds of millions of times per step. Both are written branch-free so gcc
 * vectorizes the loops that call them; tests/test_kernels.c bounds their error against libm.
 * Their polynomials step by K_MADD: a fused multiply-add where the build's target has one (ISO C
 * mode never contracts a * b + c by itself), which halves the instructions of each Horner step and
 * rounds once instead of twice; a multiply and an add elsewhere (fmaf would be a library call). */
#ifdef __FMA__
#define K_MADD(a, b, c) fmaf((a), (b), (c))
#else
#define K_MADD(a, b, c) ((a) * (b) + (c))
#endif

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

float kern_gelu(float x, GeluKind kind) { return k_gelu(x, kind); }
float kern_gelu_grad(float x, GeluKind kind) { return k_gelu_grad(x, kind, NULL); }

/* --------------------------------------------------------------------------------------------- */

/* The FLOP counter (kernels.h). Every sgemm of the kernels goes through gemm1, so counting there
 * sees what the GEMM is actually asked to do, block by block; the blocks of one product sum to its
 * 2 M N K exactly (integers). Atomic, since gemm1 runs inside OpenMP loops; when off it costs one
 * relaxed load per call (a few thousand calls per step). */
static atomic_bool g_flops_on;
static atomic_uint_fast64_t g_flops;

void kern_flops_enable(bool on) { atomic_store(&g_flops_on, on); }
uint64_t kern_flops_read(void) { return (uint64_t)atomic_load(&g_flops); }
void kern_flops_reset(void) { atomic_store(&g_flops, 0); }

static bool g_bf16;
static int g_bf16_kind = -1; /* GemmBf16Kind; -1 until set or first needed: then the rule */
void kern_set_bf16(bool on) {
    if (on && g_bf16_kind < 0) g_bf16_kind = (int)gemm_bf16_kind_default();
    g_bf16 = on;
}
bool kern_bf16(void) { return g_bf16; }
void kern_set_bf16_engine(GemmBf16Kind k) { g_bf16_kind = (int)k; }
GemmBf16Kind kern_bf16_engine(void) {
    if (g_bf16_kind < 0) g_bf16_kind = (int)gemm_bf16_kind_default();
    return (GemmBf16Kind)g_bf16_kind;
}

static bool g_fp32_onednn;
void kern_set_fp32_onednn(bool on) { g_fp32_onednn = on; }
bool kern_fp32_onednn(void) { return g_fp32_onednn; }

static inline void gemm1(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                         const float *B, int ldb, float beta, float *C, int ldc) {
    if (atomic_load_explicit(&g_flops_on, memory_order_relaxed))
        atomic_fetch_add_explicit(&g_flops, 2 * (uint_fast64_t)M * (uint_fast64_t)N * (uint_fast64_t)K,
                                  memory_order_relaxed);
    if (g_bf16) {
        if (g_bf16_kind == GEMM_BF16_ONEDNN)
            gemm_dnnl(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        else
            gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (g_fp32_onednn) {
        gemm_dnnl_f32(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N,
                K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void kern_gemm_single(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc) {
    gemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* How kern_gemm cuts the longer side of C: a function of the shape alone, never of the thread
 * count, because OpenBLAS's result for an element depends on the block it is computed in (tested:
 * most splits change some bits). The same calls then run whether one thread or many take them, and
 * training is bit-identical for any thread count.
 *
 * Each block packs the operand it shares with the other blocks again (OpenBLAS packs both operands
 * per call), which costs in proportion to blocks / length: measured single-threaded at bert-base
 * shapes (N = 2048 tokens), 2 blocks cost 0.3% over one call, 4 cost 2%, 8 cost 4.5% (up to 13% on
 * the decoder's input gradient, K = 30522). So blocks are long: a power of two of them, each at
 * least GEMM_MIN_BLOCK long (balanced on 1, 2, 4, 8 ... threads). kern_gemm_many keeps the threads
 * busy by running independent products (a weight gradient beside an input gradient) side by side;
 * a product alone (kern_gemm) is also cut in two from 256 up, so that two threads share it. The
 * cut is a function of the shape and of the call (alone or with others), fixed by the code. */
#define GEMM_MIN_BLOCK 1024
#define GEMM_MAX_BLOCKS 64
/* below this many FLOPs a product is not worth a fork/join */
#define GEMM_MIN_PAR_FLOPS 1e6

static int gemm_blocks(int len, bool alone) {
    int n = alone && len >= 256 ? 2 : 1;
    while (n < GEMM_MAX_BLOCKS && len / (2 * n) >= GEMM_MIN_BLOCK) n *= 2;
    return n;
}

typedef struct {
    int g;      /* product */
    int a0, a1; /* rows (split_m) or columns of C */
    double flops;
} GemmBlock;

static void gemm_block_run(const KernGemm *g, const GemmBlock *b) {
    bool split_m = g->M >= g->N;
    int a0 = b->a0, n = b->a1 - b->a0;
    if (split_m) {
        const float *Ab = g->ta ? g->A + a0 : g->A + (size_t)a0 * g->lda;
        gemm1(g->ta, g->tb, n, g->N, g->K, g->alpha, Ab, g->lda, g->B, g->ldb, g->beta,
              g->C + (size_t)a0 * g->ldc, g->ldc);
    } else {
        const float *Bb = g->tb ? g->B + (size_t)a0 * g->ldb : g->B + a0;
        gemm1(g->ta, g->tb, g->M, n, g->K, g->alpha, g->A, g->lda, Bb, g->ldb, g->beta, g->C + a0,
              g->ldc);
    }
}

/* blocks of product g appended to out (at most GEMM_MAX_BLOCKS); returns the count */
static int gemm_cut(const KernGemm *g, int gi, bool alone, GemmBlock *out) {
    if (g->M <= 0 || g->N <= 0) return 0;
    bool split_m = g->M >= g->N;
    int len = split_m ? g->M : g->N;
    double flops = 2.0 * g->M * g->N * g->K;
    int nch = flops < GEMM_MIN_PAR_FLOPS ? 1 : gemm_blocks(len, alone);
    int chunk = (len + nch - 1) / nch;
    chunk = (chunk + 15) / 16 * 16;
    int k = 0;
    for (int a0 = 0; a0 < len; a0 += chunk) {
        int a1 = a0 + chunk > len ? len : a0 + chunk;
        out[k++] = (GemmBlock){gi, a0, a1, flops * (a1 - a0) / len};
    }
    return k;
}

static int cmp_block(const void *x, const void *y) {
    const GemmBlock *a = x, *b = y;
    if (a->flops != b->flops) return a->flops < b->flops ? 1 : -1;
    return a->g != b->g ? a->g - b->g : a->a0 - b->a0;
}

static void gemm_run_blocks(const KernGemm *g, GemmBlock *blk, int nb, double total) {
    if (nb == 1 || total < GEMM_MIN_PAR_FLOPS) {
        for (int b = 0; b < nb; b++) gemm_block_run(&g[blk[b].g], &blk[b]);
        return;
    }
    /* largest first, so the last blocks handed out are short (which products run where does not
       change any result: each block's C is written by its own call) */
    qsort(blk, (size_t)nb, sizeof *blk, cmp_block);
    /* dynamic: a thread the OS preempts on a shared machine delays only its own block */
#pragma omp parallel for num_threads(kern_threads()) schedule(dynamic, 1)
    for (int b = 0; b < nb; b++) gemm_block_run(&g[blk[b].g], &blk[b]);
}

void kern_gemm_many(const KernGemm *g, int n) {
    enum { CAP = 4 * GEMM_MAX_BLOCKS };
    GemmBlock blk[CAP];
    int nb = 0;
    double total = 0;
    for (int i = 0; i < n; i++) {
        if (nb + GEMM_MAX_BLOCKS > CAP) { /* more products than one list holds: run these first */
            gemm_run_blocks(g, blk, nb, total);
            nb = 0;
            total = 0;
        }
        nb += gemm_cut(&g[i], i, n == 1, blk + nb);
        total += 2.0 * g[i].M * g[i].N * g[i].K;
    }
    if (nb) gemm_run_blocks(g, blk, nb, total);
}

void kern_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    KernGemm g = {ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
    kern_gemm_many(&g, 1);
}

void kern_gemm_max_block(int M, int N, int K, int *block_m, int *block_n) {
    /* with others (alone false) a product is cut into no more blocks than alone: the larger ones */
    KernGemm g = {.M = M, .N = N, .K = K};
    GemmBlock blk[GEMM_MAX_BLOCKS];
    int nb = gemm_cut(&g, 0, false, blk), longest = 0;
    for (int b = 0; b < nb; b++)
        if (blk[b].a1 - blk[b].a0 > longest) longest = blk[b].a1 - blk[b].a0;
    bool split_m = M >= N;
    *block_m = split_m ? longest : M;
    *block_n = split_m ? N : longest;
}

void kern_gemm_reserve(size_t a_elems, size_t b_elems) {
    if (!g_bf16 || g_bf16_kind != GEMM_BF16_ONEDNN) return;
#pragma omp parallel num_threads(kern_threads())
    gemm_dnnl_reserve(a_elems, b_elems);
}

/* ---------------------------------------------------------------------------------------------
 * dropout */

KernDropout kern_dropout_make(double p, uint64_t seed, long step, int site,
                              const int64_t *example_index, size_t rows_per_example) {
    KernDropout d = {0, 1.0f, 0, example_index, rows_per_example ? rows_per_example : 1};
    if (!(p > 0.0)) return d;
    long thr = lround(p * 65536.0);
    if (thr < 1) thr = 1;
    if (thr > 65535) thr = 65535;
    d.threshold = (uint32_t)thr;
    d.scale = (float)(65536.0 / (65536.0 - (double)thr));
    d.key = rng_hash(seed, RNG_DROPOUT, (uint64_t)step, (uint64_t)site);
    return d;
}

void kern_dropout_row(float *mult, const KernDropout *d, int64_t ex, size_t e0, size_t n) {
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
    kern_dropout_row(mult, d, d->example_index[n / rpe], (n % rpe) * C, C);
}

/* scratch layout per thread: floats, even offsets so doubles fit (buf is 64-byte aligned) */
size_t kern_scratch_floats(int T, int max_C) {
    size_t t = (size_t)T, c = (size_t)max_C;
    /* attention backward: P', dS, the (T,T) dropout mask, P when recomputed and the mask row */
    size_t attn = 4 * t * t + t;
    size_t rows = 2 * c; /* a dropout-multiplier row and a masked-gradient row */
    size_t need = attn > rows ? attn : rows;
    return (need + 16) / 16 * 16;
}

/* Fork/join costs microseconds, and more on a busy machine; below this many elements of work a
 * loop runs on the calling thread. */
static inline bool par(size_t work) { return work >= ((size_t)1 << 15); }

static inline float *scratch_of(KernScratch *s, int id) { return s->buf + (size_t)id * s->per_thread; }

/* ---------------------------------------------------------------------------------------------
 * LayerNorm rows: statistics in double (a row mixes values of very different size after the
 * residual sum, and double costs nothing at these row lengths). */

/* in: r (C) (may equal xhat); out: xhat, y; returns rstd */
static inline float ln_row(float *y, float *xhat, const float *r, const float *gamma,
                           const float *beta, int C, float eps) {
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < C; j++) sum += r[j];
    double mean = sum / C;
    double var = 0.0;
#pragma omp simd reduction(+ : var)
    for (int j = 0; j < C; j++) {
        double dlt = (double)r[j] - mean;
        var += dlt * dlt;
    }
    var /= C;
    float rstd = (float)(1.0 / sqrt(var + (double)eps));
    float meanf = (float)mean;
    for (int j = 0; j < C; j++) {
        float xh = (r[j] - meanf) * rstd;
        xhat[j] = xh;
        y[j] = xh * gamma[j] + beta[j];
    }
    return rstd;
}

void kern_embed_forward(float *x, float *xhat, float *rstd, const int32_t *ids, const int32_t *tt,
                        const float *word, const float *pos, const float *type, const float *gamma,
                        const float *beta, int B, int T, int H, float eps, const KernDropout *drop,
                        KernScratch *s) {
    size_t N = (size_t)B * T;
    bool dr = kern_dropout_on(drop);
#pragma omp parallel num_threads(s->nthreads) if (par(N * (size_t)H))
    {
        float *mult = scratch_of(s, omp_get_thread_num());
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
void kern_embed_backward(float *dword, float *dpos, float *dtype, const float *de,
                         const int32_t *ids, const int32_t *tt, int B, int T, int H) {
    size_t N = (size_t)B * T;
    const int CB = 32;
    int nblk = (H + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (par(N * (size_t)H))
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

void kern_residual_layernorm_forward(float *y, float *xhat, float *rstd, const float *res,
                                     const float *z, const float *zbias, const float *gamma,
                                     const float *beta, int N, int C, float eps,
                                     const KernDropout *drop, KernScratch *s) {
    bool dr = kern_dropout_on(drop);
#pragma omp parallel num_threads(s->nthreads) if (par((size_t)N * C))
    {
        float *mult = scratch_of(s, omp_get_thread_num());
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
void kern_layernorm_backward(float *dr, float *dz, const float *dy, const float *xhat,
                             const float *rstd, const float *gamma, float *dgamma, float *dbeta,
                             int N, int C, const KernDropout *drop_in, const KernDropout *drop_out,
                             KernScratch *s) {
    bool din = kern_dropout_on(drop_in), dout = kern_dropout_on(drop_out);
    enum { CB = 64 };
    int nblk = (C + CB - 1) / CB;
#pragma omp parallel num_threads(s->nthreads) if (par((size_t)N * C))
    {
        float *sc = scratch_of(s, omp_get_thread_num());
        float *mult = sc, *dyn = sc + C;
#pragma omp for schedule(static)
        for (int blk = 0; blk < nblk; blk++) {
            int c0 = blk * CB, w = C - c0 < CB ? C - c0 : CB;
            double pg[CB] = {0}, pb[CB] = {0};
            for (int n = 0; n < N; n++) {
                const float *d = dy + (size_t)n * C + c0, *xh = xhat + (size_t)n * C + c0;
                if (din) {
                    size_t rpe = drop_in->rows_per_example;
                    kern_dropout_row(mult, drop_in, drop_in->example_index[(size_t)n / rpe],
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
                for (int j = 0; j < C; j++) dyn[j] = dy[o + j] * mult[j];
            } else {
                memcpy(dyn, dy + o, sizeof(float) * (size_t)C);
            }
            float a = 0.0f, bsum = 0.0f;
#pragma omp simd reduction(+ : a, bsum)
            for (int j = 0; j < C; j++) {
                float gy = gamma[j] * dyn[j];
                a += gy;
                bsum += gy * xh[j];
            }
            a /= (float)C;
            bsum /= (float)C;
            float rs = rstd[n];
            for (int j = 0; j < C; j++) dr[o + j] = rs * (gamma[j] * dyn[j] - a - xh[j] * bsum);
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

void kern_bias_gelu_forward(float *f, float *g, const float *bias, int N, int C, GeluKind kind) {
#pragma omp parallel for schedule(static) if (par((size_t)N * C * 8))
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

void kern_gelu_forward(float *g, const float *f, int N, int C, GeluKind kind) {
#pragma omp parallel for schedule(static) if (par((size_t)N * C * 8))
    for (int n = 0; n < N; n++) {
        const float *fr = f + (size_t)n * C;
        float *gr = g + (size_t)n * C;
        if (kind == GELU_TANH)
            for (int j = 0; j < C; j++) gr[j] = k_gelu(fr[j], GELU_TANH);
        else
            for (int j = 0; j < C; j++) gr[j] = k_gelu(fr[j], GELU_ERF);
    }
}

void kern_gelu_backward(float *dg, float *g, const float *f, int N, int C, GeluKind kind) {
#pragma omp parallel for schedule(static) if (par((size_t)N * C * 8))
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

void kern_bias_add(float *X, int ldx, const float *bias, int N, int C) {
#pragma omp parallel for schedule(static) if (par((size_t)N * C))
    for (int n = 0; n < N; n++) {
        float *r = X + (size_t)n * ldx;
        for (int j = 0; j < C; j++) r[j] += bias[j];
    }
}

void kern_bias_fill(float *X, int ldx, const float *bias, int N, int C) {
#pragma omp parallel for schedule(static) if (par((size_t)N * C))
    for (int n = 0; n < N; n++) memcpy(X + (size_t)n * ldx, bias, sizeof(float) * (size_t)C);
}

void kern_colsum_add(float *db, const float *X, int ldx, int N, int C) {
    enum { CB = 64 };
    int nblk = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (par((size_t)N * C))
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
    gemm1(false, true, T, T, D, scale, Q, ld, K, ld, 0.0f, S, T);
    for (int i = 0; i < T; i++) {
        float *row = S + (size_t)i * T;
        float mx = add_row_max(row, mbias, T);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < T; j++) {
            float e = k_exp(row[j] - mx);
            row[j] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < T; j++) row[j] *= inv;
    }
}

void kern_attention_forward(float *ctx, float *P, const float *qkv, const int32_t *mask, int B,
                            int T, int H, int A, const KernDropout *drop, KernScratch *s) {
    int D = H / A, H3 = 3 * H;
    float scale = 1.0f / sqrtf((float)D);
    bool dr = kern_dropout_on(drop);
    size_t TT = (size_t)T * T;
#pragma omp parallel num_threads(s->nthreads) if (par((size_t)B * A * T * T * D))
    {
        /* scratch: the dropout multipliers, the mask row, the probabilities when P is not kept */
        float *sc = scratch_of(s, omp_get_thread_num());
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
                kern_dropout_row(Pd, drop, drop->example_index[b], (size_t)h * TT, TT);
                for (size_t k = 0; k < TT; k++) Pd[k] *= S[k];
            }
            /* ctx_bh (T,D) = dropout(P) V */
            gemm1(false, false, T, D, T, 1.0f, dr ? Pd : S, T, V, H3, 0.0f, ctx + (size_t)b * T * H + (size_t)h * D, H);
        }
    }
}

/* Attention backward for one (example, head), with P' = dropout(P) = P*m:
 *   dV = P'^T dC          dP' = dC V^T          dP = dP' * m
 *   dS = P * (dP - rowsum(P * dP))      (softmax backward; the additive mask is a constant)
 *   dQ = scale dS K       dK = scale dS^T Q
 * P NULL: P is recomputed from Q, K and the mask first (attention_probs_head, the forward's code). */
void kern_attention_backward(float *dqkv, const float *dctx, const float *qkv, const float *P,
                             const int32_t *mask, int B, int T, int H, int A, const KernDropout *drop,
                             KernScratch *s) {
    int D = H / A, H3 = 3 * H;
    float scale = 1.0f / sqrtf((float)D);
    bool dr = kern_dropout_on(drop);
    size_t TT = (size_t)T * T;
#pragma omp parallel num_threads(s->nthreads) if (par((size_t)B * A * T * T * D))
    {
        float *sc = scratch_of(s, omp_get_thread_num());
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
                kern_dropout_row(mask_tt, drop, drop->example_index[b], (size_t)h * TT, TT);
                for (size_t k = 0; k < TT; k++) Pd[k] = S[k] * mask_tt[k];
            }
            /* dV (T,D) = P'^T dC */
            gemm1(true, false, T, D, T, 1.0f, dr ? Pd : S, T, dC, H, 0.0f, dV, H3);
            /* dP' (T,T) = dC V^T */
            gemm1(false, true, T, T, D, 1.0f, dC, H, V, H3, 0.0f, dS, T);
            for (int i = 0; i < T; i++) {
                float *d = dS + (size_t)i * T;
                const float *pr = S + (size_t)i * T;
                if (dr) {
                    const float *mr = mask_tt + (size_t)i * T;
                    for (int j = 0; j < T; j++) d[j] *= mr[j];
                }
                float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                for (int j = 0; j < T; j++) dot += pr[j] * d[j];
                for (int j = 0; j < T; j++) d[j] = pr[j] * (d[j] - dot);
            }
            /* dQ (T,D) = scale dS K ; dK (T,D) = scale dS^T Q */
            gemm1(false, false, T, D, T, scale, dS, T, K, H3, 0.0f, dQ, H3);
            gemm1(true, false, T, D, T, scale, dS, T, Q, H3, 0.0f, dK, H3);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * bf16 copies of activations: memory-bound passes, cut in fixed chunks */

#define BF16_CHUNK ((size_t)1 << 16)

void kern_bf16_save(uint16_t *dst, const float *src, size_t n) {
    long nc = (long)((n + BF16_CHUNK - 1) / BF16_CHUNK);
#pragma omp parallel for schedule(static) if (nc > 1)
    for (long c = 0; c < nc; c++) {
        size_t a = (size_t)c * BF16_CHUNK, len = n - a < BF16_CHUNK ? n - a : BF16_CHUNK;
        gemm_bf16_round(dst + a, src + a, len);
    }
}

void kern_bf16_load(float *dst, const uint16_t *src, size_t n) {
    long nc = (long)((n + BF16_CHUNK - 1) / BF16_CHUNK);
#pragma omp parallel for schedule(static) if (nc > 1)
    for (long c = 0; c < nc; c++) {
        size_t a = (size_t)c * BF16_CHUNK, len = n - a < BF16_CHUNK ? n - a : BF16_CHUNK;
        uint32_t *d = (uint32_t *)(void *)(dst + a);
        const uint16_t *s = src + a;
#pragma omp simd
        for (size_t i = 0; i < len; i++) d[i] = (uint32_t)s[i] << 16;
    }
}

/* --------------------------------------------------------------------------------------------- */

void kern_gather_rows(float *out, const float *X, const int32_t *rows, int M, int C) {
#pragma omp parallel for schedule(static) if (par((size_t)M * C))
    for (int i = 0; i < M; i++) memcpy(out + (size_t)i * C, X + (size_t)rows[i] * C, sizeof(float) * (size_t)C);
}

void kern_scatter_add_rows(float *dX, const float *dout, const int32_t *rows, int M, int C) {
    enum { CB = 32 };
    int nblk = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (par((size_t)M * C))
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

void kern_xent_forward(float *logits, float *lse, double *loss, int32_t *correct,
                       const float *bias, const int32_t *labels, int M, int V) {
#pragma omp parallel for schedule(static) if (par((size_t)M * V * 4))
    for (int i = 0; i < M; i++) {
        float *l = logits + (size_t)i * V;
        /* max first, then the first index holding it: both vectorise (a running argmax does not) */
        float mx = add_row_max(l, bias, V);
        int arg = V;
#pragma omp simd reduction(min : arg)
        for (int j = 0; j < V; j++)
            if (l[j] == mx && j < arg) arg = j;
        if (arg == V) arg = 0; /* every logit NaN */
        /* sum in float lanes of one row block, accumulated in double across blocks */
        double sum = 0.0;
        enum { BLK = 1024 };
        for (int j0 = 0; j0 < V; j0 += BLK) {
            int j1 = j0 + BLK < V ? j0 + BLK : V;
            float part = 0.0f;
#pragma omp simd reduction(+ : part)
            for (int j = j0; j < j1; j++) part += k_exp(l[j] - mx);
            sum += part;
        }
        double ls = (double)mx + log(sum);
        lse[i] = (float)ls;
        loss[i] = ls - (double)l[labels[i]];
        correct[i] = arg == labels[i];
    }
}

/* d logits = scale * (softmax(l) - onehot(label)), softmax(l)_j = exp(l_j - lse). Threads own
 * column blocks so the bias gradient (the column sum) needs no reduction across threads. */
void kern_xent_backward(float *logits, const float *lse, const int32_t *labels, float scale,
                        float *dbias, int M, int V) {
    enum { CB = 512 };
    int nblk = (V + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (par((size_t)M * V * 4))
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
