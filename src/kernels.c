/* kernels.c: BERT layer kernels (see kernels.h for the contracts, docs/model.md for the math): the
 * threads, the matrix products (cut into blocks, dispatched to the precision's engine), the choice
 * of the x86-64 level whose build of kernels_math.c runs the elementwise math (kernels_isa.h), and
 * the memory-bound passes that gain nothing from wider vectors.
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
#include "gemm_cpu.h"
#include "gemm_dnnl.h"
#include "kernels_isa.h"
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
 * The x86-64 level of the elementwise math (kernels_isa.h): the best the CPU runs, unless
 * BP_KERNEL_ISA names one (for tests and comparisons; a level the CPU lacks is an error). */

typedef struct {
    const char *name;
    const KernMathOps *ops;
} KernLevel;

static const KernLevel LEVELS[] = {
    {"x86-64-v4", &kern_math_x86_64_v4},
    {"x86-64-v3", &kern_math_x86_64_v3},
    {"x86-64", &kern_math_x86_64},
};

static bool level_runs(int i) {
    const GemmCpu *cpu = gemm_cpu_features();
    return i == 0 ? cpu->x86_64_v4 : i == 1 ? cpu->x86_64_v3 : true;
}

static _Atomic(const KernLevel *) g_level;

/* the level BP_KERNEL_ISA names, or the best this CPU runs; NULL with err set when the variable names
   no level or one the CPU lacks */
static const KernLevel *level_pick(BpError *err) {
    int best = 0;
    while (!level_runs(best)) best++;
    const char *want = getenv("BP_KERNEL_ISA");
    if (!want || !*want) return &LEVELS[best];
    for (int i = 0; i < (int)BP_ARRAY_LEN(LEVELS); i++) {
        if (strcmp(want, LEVELS[i].name) != 0) continue;
        if (level_runs(i)) return &LEVELS[i];
        bp_fail_usage(err, "BP_KERNEL_ISA=%s: this CPU does not run %s (it runs %s)", want, want, LEVELS[best].name);
        return NULL;
    }
    bp_fail_usage(err, "BP_KERNEL_ISA=%s: not a level; use x86-64-v4, x86-64-v3 or x86-64", want);
    return NULL;
}

static _Atomic(const KernLevel *) g_level;

int kern_isa_init(BpError *err) {
    const KernLevel *l = level_pick(err);
    if (!l) return -1;
    atomic_store(&g_level, l);
    return 0;
}

static inline const KernMathOps *math(void) {
    const KernLevel *l = atomic_load_explicit(&g_level, memory_order_acquire);
    if (!l) { /* first use without kern_isa_init: every thread that races here picks the same level */
        BpError err = {0};
        l = level_pick(&err);
        BP_ASSERT(l, "%s", err.msg);
        atomic_store_explicit(&g_level, l, memory_order_release);
    }
    return l->ops;
}

const char *kern_isa(void) {
    math();
    return atomic_load(&g_level)->name;
}

int kern_isa_level(void) {
    math();
    return (int)(atomic_load(&g_level) - LEVELS);
}

bool kern_set_isa(const char *name) {
    for (int i = 0; i < (int)BP_ARRAY_LEN(LEVELS); i++)
        if (!strcmp(name, LEVELS[i].name) && level_runs(i)) {
            atomic_store(&g_level, &LEVELS[i]);
            return true;
        }
    return false;
}

#define KERN_MATH_PROC_ENTRY(name, params, args) \
    void kern_##name params { math()->name args; }
#define KERN_MATH_FUNC_ENTRY(name, params, args) \
    float kern_##name params { return math()->name args; }
KERN_MATH_PROCS(KERN_MATH_PROC_ENTRY)
KERN_MATH_FUNCS(KERN_MATH_FUNC_ENTRY)

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

/* scratch layout per thread: floats, even offsets so doubles fit (buf is 64-byte aligned) */
size_t kern_scratch_floats(int T, int max_C) {
    size_t t = (size_t)T, c = (size_t)max_C;
    /* attention backward: P', dS, the (T,T) dropout mask, P when recomputed and the mask row */
    size_t attn = 4 * t * t + t;
    size_t rows = 2 * c; /* a dropout-multiplier row and a masked-gradient row */
    size_t need = attn > rows ? attn : rows;
    return (need + 16) / 16 * 16;
}

void kern_bias_add(float *X, int ldx, const float *bias, int N, int C) {
#pragma omp parallel for schedule(static) if (kern_par((size_t)N * C))
    for (int n = 0; n < N; n++) {
        float *r = X + (size_t)n * ldx;
        for (int j = 0; j < C; j++) r[j] += bias[j];
    }
}

void kern_bias_fill(float *X, int ldx, const float *bias, int N, int C) {
#pragma omp parallel for schedule(static) if (kern_par((size_t)N * C))
    for (int n = 0; n < N; n++) memcpy(X + (size_t)n * ldx, bias, sizeof(float) * (size_t)C);
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
#pragma omp parallel for schedule(static) if (kern_par((size_t)M * C))
    for (int i = 0; i < M; i++) memcpy(out + (size_t)i * C, X + (size_t)rows[i] * C, sizeof(float) * (size_t)C);
}
