/* gemm_check.h: the checks both bf16 GEMM engines must pass (tests/test_gemm_bf16.c for ours,
 * tests/test_gemm_dnnl.c for oneDNN's): the contract of gemm_bf16.h against a float64 product of
 * the bf16-rounded inputs, and independence of each element from how the product is cut and
 * threaded. Included by one test program each (static definitions). */
#ifndef BP_TEST_GEMM_CHECK_H
#define BP_TEST_GEMM_CHECK_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_bf16.h"
#include "gemm_cpu.h"
#include "kernels.h"

/* the signature of gemm_bf16 and gemm_dnnl */
typedef void (*GemmFn)(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                       int ldb, float beta, float *C, int ldc);

static float gc_rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 11) / 9007199254740992.0 - 0.5) * 4.0f;
}

static double gc_rb(float x) { return gemm_bf16_to_float(gemm_bf16_from_float(x)); }
static inline double gc_fp32(float x) { return x; }

/* C = alpha op(A) op(B) + beta C against float64 over the rounded inputs, leading dimensions wider
 * than the rows. The only error left is fp32 accumulation: each of the K partial sums rounds once
 * (2^-24 relative), so |error| <= (K + 2) 2^-24 (sum_k |a_k b_k| + |beta c|); a wrong rounding of
 * the inputs (2^-8 relative each) or a lost term lies far outside. beta 0 starts from a C of NaN
 * (never read). The worst element is printed on a failure. */
static void gc_check_case(GemmFn f, const char *name, double (*in)(float), bool ta, bool tb, int M, int N, int K,
                          float alpha, float beta) {
    uint64_t s = (uint64_t)(M * 131 + N * 17 + K + ta * 7 + tb * 3);
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
    float *A = malloc(sizeof(float) * (size_t)(ta ? K : M) * lda), *B = malloc(sizeof(float) * (size_t)(tb ? N : K) * ldb);
    float *C = malloc(sizeof(float) * (size_t)M * ldc), *C0 = malloc(sizeof(float) * (size_t)M * ldc);
    for (size_t i = 0; i < (size_t)(ta ? K : M) * lda; i++) A[i] = gc_rnd(&s);
    for (size_t i = 0; i < (size_t)(tb ? N : K) * ldb; i++) B[i] = gc_rnd(&s);
    for (size_t i = 0; i < (size_t)M * ldc; i++) C[i] = C0[i] = beta == 0.0f ? NAN : gc_rnd(&s);
    f(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double worst = 0, worst_tol = 0;
    int wi = -1, wj = -1;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double p = in(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                           in(tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                ref += p;
                mag += fabs(p);
            }
            ref *= alpha;
            mag *= fabs(alpha);
            if (beta != 0.0f) {
                ref += (double)beta * C0[(size_t)i * ldc + j];
                mag += fabs((double)beta * C0[(size_t)i * ldc + j]);
            }
            double tol = (K + 2) * 0x1p-24 * mag + 1e-30, e = fabs(C[(size_t)i * ldc + j] - ref);
            if (!(e <= tol) && (wi < 0 || e / tol > worst / worst_tol)) {
                worst = e, worst_tol = tol, wi = i, wj = j;
            }
        }
    if (wi >= 0)
        fail_msg("%s %c%c %dx%dx%d alpha %g beta %g: C[%d][%d] error %.3g > bound %.3g", name, ta ? 'T' : 'N',
                 tb ? 'T' : 'N', M, N, K, alpha, beta, wi, wj, worst, worst_tol);
    for (int i = 0; i < M; i++) /* the padding beyond N in each row of C is never written */
        for (int j = N; j < ldc; j++)
            assert_memory_equal(&C[(size_t)i * ldc + j], &C0[(size_t)i * ldc + j], sizeof(float));
    free(A), free(B), free(C), free(C0);
}

/* odd shapes, every transpose case, beta 0 / 1 / other, alpha 1 / other; in: what the engine does
 * to its inputs (gc_rb: rounds them to bf16; gc_fp32: nothing, an fp32 GEMM) */
static void gc_check_cases_in(GemmFn f, const char *name, double (*in)(float)) {
    /* the last K is over gemm_dnnl's 4096-long chunks of K (two whole, one partial) */
    static const int shapes[][3] = {{1, 1, 1}, {7, 70, 33}, {67, 129, 300}, {200, 65, 513}, {13, 1030, 31},
                                    {5, 40, 9000}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int t = 0; t < 4; t++) {
            gc_check_case(f, name, in, t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, 0.0f);
            gc_check_case(f, name, in, t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 0.5f, 0.75f);
            gc_check_case(f, name, in, t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 0.125f, 1.0f);
        }
}

static void gc_check_cases(GemmFn f, const char *name) { gc_check_cases_in(f, name, gc_rb); }

/* Each element of C is the same sum whatever block of C a call computes: the product in one call
 * equals it computed in row blocks and in column blocks (pieces of 16 k + a remainder, as kern_gemm
 * cuts, and odd pieces), bit for bit, in every transpose case, with beta 0 and 1, at this K. Our
 * AVX512-BF16 kernel holds it at any K; oneDNN's brgemm only below K 512 (it blocks K by the shape
 * of C: measured at K 512 ... 8192, every transpose case, fp32 and bf16 but bf16 at 1024), which is
 * why kern_gemm's cut is a function of the shape alone: the thread count changes no result either
 * way. */
static void gc_check_cuts_k(GemmFn f, const char *name, int K) {
    enum { M = 300, N = 310 }; /* every cut point below lies inside both */
    static const int cuts[][4] = {{0, 144, 288, -1}, {0, 37, 101, 250}};
    uint64_t s = 11;
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * N * K), *C0 = malloc(sizeof(float) * M * N),
          *C1 = malloc(sizeof(float) * M * N), *C2 = malloc(sizeof(float) * M * N);
    for (int i = 0; i < M * K; i++) A[i] = gc_rnd(&s);
    for (int i = 0; i < N * K; i++) B[i] = gc_rnd(&s);
    for (int i = 0; i < M * N; i++) C0[i] = gc_rnd(&s);
    for (int t = 0; t < 8; t++) {
        bool ta = t & 1, tb = t & 2;
        float beta = (t & 4) ? 1.0f : 0.0f;
        int lda = ta ? M : K, ldb = tb ? K : N;
        memcpy(C1, C0, sizeof(float) * M * N);
        f(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, beta, C1, N);
        for (size_t c = 0; c < sizeof cuts / sizeof *cuts; c++)
            for (int by_rows = 0; by_rows < 2; by_rows++) {
                memcpy(C2, C0, sizeof(float) * M * N);
                int len = by_rows ? M : N;
                for (int p = 0; p < 4; p++) {
                    int a0 = cuts[c][p], a1 = p + 1 < 4 && cuts[c][p + 1] >= 0 ? cuts[c][p + 1] : len;
                    if (a0 < 0) break;
                    if (by_rows)
                        f(ta, tb, a1 - a0, N, K, 0.5f, ta ? A + a0 : A + (size_t)a0 * lda, lda, B, ldb, beta,
                          C2 + (size_t)a0 * N, N);
                    else
                        f(ta, tb, M, a1 - a0, K, 0.5f, A, lda, tb ? B + (size_t)a0 * ldb : B + a0, ldb, beta, C2 + a0,
                          N);
                }
                for (int i = 0; i < M * N; i++)
                    if (memcmp(&C1[i], &C2[i], sizeof(float)) != 0)
                        fail_msg("%s %c%c beta %g cut %s at %d,%d,%d,%d: C[%d][%d] %.9g uncut, %.9g cut", name,
                                 ta ? 'T' : 'N', tb ? 'T' : 'N', beta, by_rows ? "rows" : "columns", cuts[c][0],
                                 cuts[c][1], cuts[c][2], cuts[c][3], i / N, i % N, C1[i], C2[i]);
            }
    }
    free(A), free(B), free(C0), free(C1), free(C2);
}

static void gc_check_cuts(GemmFn f, const char *name) { gc_check_cuts_k(f, name, 333); }

/* kern_gemm on engine `kind` cuts and threads the products as in fp32: results bit-identical for 1
 * and 2 threads and equal to one uncut call of f. */
static void gc_check_threads(GemmBf16Kind kind, GemmFn f) {
    enum { M = 1100, N = 300, K = 200 };
    uint64_t s = 5;
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * N * K);
    float *C1 = calloc((size_t)M * N, sizeof(float)), *C2 = calloc((size_t)M * N, sizeof(float)),
          *C3 = calloc((size_t)M * N, sizeof(float));
    for (int i = 0; i < M * K; i++) A[i] = gc_rnd(&s);
    for (int i = 0; i < N * K; i++) B[i] = gc_rnd(&s);
    int saved = kern_threads();
    GemmBf16Kind saved_kind = kern_bf16_engine();
    kern_set_bf16_engine(kind);
    kern_set_bf16(true);
    kern_init_threads(1);
    kern_gemm(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C1, N);
    kern_init_threads(2);
    kern_gemm(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C2, N);
    kern_set_bf16(false);
    kern_set_bf16_engine(saved_kind);
    kern_init_threads(saved);
    f(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C3, N);
    assert_memory_equal(C1, C2, sizeof(float) * M * N);
    assert_memory_equal(C1, C3, sizeof(float) * M * N);
    free(A), free(B), free(C1), free(C2), free(C3);
}

#endif
