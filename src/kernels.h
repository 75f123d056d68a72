/* kernels.h: BERT layer kernels as forward/backward pairs over raw float arrays, the sgemm wrapper,
 * counter-based dropout masks and the thread policy. model.c strings them together; the backward
 * math of each pair is in docs/model.md and next to the code in kernels.c.
 *
 * Size letters: N rows (tokens B*T, or gathered predictions), C channels of a row, B examples,
 * T sequence length, A heads, H hidden = A*D, D head width, V vocabulary. Every matrix is row-major
 * with its shape in a comment. Backward kernels ADD into parameter gradients (dW, db, dgamma ...);
 * activation gradients are written (=) unless the comment says "+=".
 *
 * Thread policy. All parallelism is OpenMP; OpenBLAS runs single-threaded (kern_init_threads sets
 * it) and kern_gemm / kern_gemm_many cut each product into a few long blocks of C, each a
 * single-threaded cblas_sgemm, handed to the OpenMP threads. On the 2-core development machine
 * that was as fast as or faster than OpenBLAS's own threads at 15 of the 18 bert-base product
 * shapes (the other three within 3%; docs/performance.md), and it leaves one pool of threads:
 * OpenMP workers spinning after a region never compete with OpenBLAS workers for the cores.
 * OpenBLAS's own threading is not bit-reproducible across thread counts either (its results
 * change with the thread count at every model shape). The blocks depend on the shape and the call
 * site only, never on the thread count, and every reduction runs in a fixed order, so results are
 * bit-identical for any number of threads. The attention kernels call sgemm per (example, head)
 * from inside their OpenMP loop, which is allowed only because OpenBLAS is single-threaded. Call
 * every kernel from outside an OpenMP parallel region.
 *
 * Instruction sets. The binary is built for baseline x86-64; the elementwise math (GELU, softmax,
 * LayerNorm, dropout, cross-entropy) exists in three builds, x86-64-v4 (AVX-512), x86-64-v3 (AVX2,
 * FMA) and x86-64, with the same results bit for bit, and the best one the CPU runs is used
 * (kernels_isa.h). */
#ifndef BP_KERNELS_H
#define BP_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "gemm_cpu.h"

/* Sets the worker thread count (0 = all online cores) for OpenMP and pins OpenBLAS to one thread.
 * Idempotent; model_create calls it with training.threads. Returns the thread count in use. */
int kern_init_threads(int threads);
int kern_threads(void);

/* Picks the x86-64 level whose build of the elementwise kernels runs: the best this CPU runs, or
 * the one the environment's BP_KERNEL_ISA names; a usage error (-1, err set) when that is no level
 * ("x86-64-v4", "x86-64-v3", "x86-64") or one this CPU lacks. The program calls it first thing;
 * without it the first kernel picks the level (and stops on a bad BP_KERNEL_ISA). */
int kern_isa_init(BpError *err);
/* the level in use */
const char *kern_isa(void);
/* Switches to level name; false (nothing changed) when it is not a level or the CPU lacks it.
 * For tests and benchmarks; call outside parallel regions, between steps. */
bool kern_set_isa(const char *name);

/* Matrix products in bf16 from now on (gemm_bf16.h: inputs rounded to bf16, fp32 sums) or in fp32
 * (OpenBLAS). Process-wide like the thread count: model_forward and model_backward set their model's
 * precision on entry. Turn it on only where gemm_cpu_features()->avx512_bf16 holds. Call outside
 * parallel regions. */
void kern_set_bf16(bool on);
/* fp32 products on oneDNN's fp32 matmul instead of OpenBLAS (gemm_cpu.h's fp32 engine rule; needs
 * gemm_dnnl_f32_available). Call outside parallel regions, like kern_set_bf16. */
void kern_set_fp32_onednn(bool on);
bool kern_fp32_onednn(void);
bool kern_bf16(void);

/* Which engine runs the bf16 products (gemm_cpu.h): the rule gemm_bf16_kind_default() unless set
 * here (tests and `bench` compare the two). ONEDNN only where gemm_dnnl_available(). Call outside
 * parallel regions. */
void kern_set_bf16_engine(GemmBf16Kind k);
GemmBf16Kind kern_bf16_engine(void);

/* C (M,N) = alpha * op(A) * op(B) + beta * C, row-major, op = transpose when ta/tb; lda/ldb/ldc are
 * row strides as in cblas. Parallel over the OpenMP threads (see the thread policy). */
void kern_gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* The largest block kern_gemm / kern_gemm_many cut an (M,N,K) product into: its rows and columns. */
void kern_gemm_max_block(int M, int N, int K, int *block_m, int *block_n);
/* With bf16 products on oneDNN: every worker thread's operand copies made at least this large and
 * resident (gemm_dnnl_reserve); nothing otherwise. */
void kern_gemm_reserve(size_t a_elems, size_t b_elems);

/* One single-threaded product in the current precision (kern_set_bf16), as the attention kernels
 * run theirs per (example, head); callable inside a parallel region. */
void kern_gemm_single(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc);

/* FLOP counter, for tests that check the FLOP count against the work actually done: while on,
 * every sgemm call the kernels make (each block of kern_gemm and kern_gemm_many, each attention
 * product) adds its 2 M N K. Off at start. Thread-safe; switch and reset outside parallel regions. */
void kern_flops_enable(bool on);
uint64_t kern_flops_read(void);
void kern_flops_reset(void);

/* One product for kern_gemm_many, the arguments of kern_gemm. */
typedef struct {
    bool ta, tb;
    int M, N, K;
    float alpha;
    const float *A;
    int lda;
    const float *B;
    int ldb;
    float beta;
    float *C;
    int ldc;
} KernGemm;

/* Independent products computed together: every block of every product goes to the threads from
 * one parallel region, largest first. No product may write memory another one reads or writes. A
 * backward pass's weight gradient and input gradient are such a pair: run together, each is cut
 * into fewer, longer blocks than kern_gemm would cut it alone (less re-packing of the operand the
 * blocks share) while the threads stay busy. The cut depends on the shapes and on n >= 2 or not,
 * never on the thread count, so results are bit-identical for any number of threads. */
void kern_gemm_many(const KernGemm *g, int n);

/* Dropout keyed by (seed, step, site, global example index, element index within the example), so
 * a mask does not depend on threads or on how a global batch is split. Each element draws 16 bits
 * (four elements per 64-bit splitmix64 output): it is dropped when the draw < threshold, so the
 * drop probability is threshold / 65536 (p rounded to 1/65536) and kept elements are scaled by
 * 65536 / (65536 - threshold), which keeps the expectation exact. */
typedef struct {
    uint32_t threshold; /* 0 = dropout off */
    float scale;
    uint64_t key;                 /* hash of (seed, step, site) */
    const int64_t *example_index; /* (B) */
    size_t rows_per_example;      /* rows of the kernel's matrix that belong to one example */
} KernDropout;

/* p in [0, 1); p = 0 (or train off: pass p = 0) turns it off. */
KernDropout kern_dropout_make(double p, uint64_t seed, long step, int site,
                              const int64_t *example_index, size_t rows_per_example);
static inline bool kern_dropout_on(const KernDropout *d) { return d && d->threshold; }
/* mult[i] = 0 or scale for elements e0 .. e0+n-1 of example ex (the global index) */
void kern_dropout_row(float *mult, const KernDropout *d, int64_t ex, size_t e0, size_t n);

/* Per-thread scratch memory, planned once by the model. */
typedef struct {
    float *buf;
    size_t per_thread; /* floats */
    int nthreads;
} KernScratch;
/* floats per thread the kernels below need for these sizes */
size_t kern_scratch_floats(int T, int max_C);

/* ---- embeddings: x = dropout(LayerNorm(word[ids] + pos[t] + type[tt])) ---- */
void kern_embed_forward(float *x, float *xhat, float *rstd,           /* (N,H) (N,H) (N) */
                        const int32_t *ids, const int32_t *tt,        /* (N) (N) */
                        const float *word, const float *pos, const float *type, /* (V,H) (P,H) (2,H) */
                        const float *gamma, const float *beta, int B, int T, int H, float eps,
                        const KernDropout *drop, KernScratch *s);
/* dword/dpos/dtype += scatter of de (N,H) */
void kern_embed_backward(float *dword, float *dpos, float *dtype, const float *de,
                         const int32_t *ids, const int32_t *tt, int B, int T, int H);

/* ---- residual + LayerNorm: y = LN(res + dropout(z + zbias)) (res, zbias may be NULL) ---- */
void kern_residual_layernorm_forward(float *y, float *xhat, float *rstd, /* (N,C) (N,C) (N) */
                                     const float *res, const float *z, const float *zbias,
                                     const float *gamma, const float *beta, int N, int C,
                                     float eps, const KernDropout *drop, KernScratch *s);
/* LayerNorm backward with optional dropouts on either side:
 *   dyn = drop_in(dy)                  (embeddings: LN output is dropped)
 *   dr  = rstd * (g*dyn - mean(g*dyn) - xhat * mean(g*dyn*xhat))   written to dr (may alias dy)
 *   dz  = drop_out(dr)                 (residual branch input), only when dz != NULL
 *   dgamma += sum_rows dyn*xhat, dbeta += sum_rows dyn */
void kern_layernorm_backward(float *dr, float *dz, const float *dy, const float *xhat,
                             const float *rstd, const float *gamma, float *dgamma, float *dbeta,
                             int N, int C, const KernDropout *drop_in, const KernDropout *drop_out,
                             KernScratch *s);

/* ---- bias + GELU ---- */
/* f (N,C) += bias (in place: the pre-activation is what backward keeps); g (N,C) = gelu(f) */
void kern_bias_gelu_forward(float *f, float *g, const float *bias, int N, int C, GeluKind kind);
/* dg (N,C) *= gelu'(f); g (N,C) = gelu(f) recomputed when g != NULL (so forward need not keep it) */
void kern_gelu_backward(float *dg, float *g, const float *f, int N, int C, GeluKind kind);

/* g (N,C) = gelu(f): the forward when the bias is already in f (kern_bias_fill + beta 1 sgemm) */
void kern_gelu_forward(float *g, const float *f, int N, int C, GeluKind kind);

/* X (N,C, row stride ldx) += bias (C) */
void kern_bias_add(float *X, int ldx, const float *bias, int N, int C);
/* every row of X (N,C, row stride ldx) = bias (C). Then an sgemm with beta 1 adds the product:
 * y = x W^T + b costs no pass of its own (the fill replaces the zeroing pass beta 0 makes). */
void kern_bias_fill(float *X, int ldx, const float *bias, int N, int C);
/* db (C) += sum over rows of X (N,C, row stride ldx) */
void kern_colsum_add(float *db, const float *X, int ldx, int N, int C);

/* ---- self-attention on qkv (N,3H) = [Q | K | V], heads side by side in each ----
 * S = scale Q K^T + maskbias (-10000 on padded keys, BERT's additive mask), P = softmax(S),
 * ctx (N,H) = dropout(P) V. P (B,A,T,T) is kept for the backward when P != NULL; with P NULL
 * nothing is kept and the backward recomputes it, bit for bit the same (one more Q K^T product per
 * head in the backward, for B*A*T*T floats less memory). */
void kern_attention_forward(float *ctx, float *P, const float *qkv, const int32_t *mask, int B,
                            int T, int H, int A, const KernDropout *drop, KernScratch *s);
/* dqkv (N,3H) written from dctx (N,H); P the forward's kept probabilities, or NULL to recompute
 * them from qkv and mask */
void kern_attention_backward(float *dqkv, const float *dctx, const float *qkv, const float *P,
                             const int32_t *mask, int B, int T, int H, int A, const KernDropout *drop,
                             KernScratch *s);

/* ---- activations saved in bf16 (bf16 products only: the rounding is AVX512-BF16's) ----
 * dst = bf16(src), nearest even, subnormals to zero: what the bf16 engines do to a product's
 * input, so a product of the widened copy equals the product of src. */
void kern_bf16_save(uint16_t *dst, const float *src, size_t n);
/* dst = src widened to fp32 (exact) */
void kern_bf16_load(float *dst, const uint16_t *src, size_t n);

/* ---- rows ---- */
void kern_gather_rows(float *out, const float *X, const int32_t *rows, int M, int C);
/* dX[rows[i]] += dout[i]; rows may repeat */
void kern_scatter_add_rows(float *dX, const float *dout, const int32_t *rows, int M, int C);

/* ---- softmax cross-entropy over V classes ----
 * logits (M,V) += bias; lse[i] = log sum exp logits[i]; loss[i] = lse[i] - logits[i][label[i]];
 * correct[i] = argmax == label (first maximum wins). */
void kern_xent_forward(float *logits, float *lse, double *loss, int32_t *correct,
                       const float *bias, const int32_t *labels, int M, int V);
/* logits -> dlogits in place: scale * (softmax - onehot(label)); dbias (V) += column sums */
void kern_xent_backward(float *logits, const float *lse, const int32_t *labels, float scale,
                        float *dbias, int M, int V);

/* scalar GELU and derivative (the kernels' own approximations), for tests */
float kern_gelu(float x, GeluKind kind);
float kern_gelu_grad(float x, GeluKind kind);

#endif
