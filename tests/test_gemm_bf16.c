/* tests/test_gemm_bf16.c: the bf16 GEMM (gemm_bf16.h) against a float64 product of the
 * bf16-rounded inputs in every transpose case, its independence from the thread count and from how
 * kern_gemm cuts it, round to nearest even, the precision resolution and the OpenBLAS core choice
 * (gemm_cpu.h). Paths this CPU lacks are skipped with a printed reason. */
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

static bool have_bf16(const char *what) {
    if (gemm_cpu_features()->avx512_bf16) return true;
    printf("SKIP %s: this CPU has no AVX512-BF16 (or BP_CPU_NO_BF16 is set)\n", what);
    return false;
}

static float rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 11) / 9007199254740992.0 - 0.5) * 4.0f;
}

static double rb(float x) { return gemm_bf16_to_float(gemm_bf16_from_float(x)); }

static void test_round_nearest_even(void **st) {
    (void)st;
    assert_int_equal(gemm_bf16_from_float(1.0f), 0x3f80);
    assert_int_equal(gemm_bf16_from_float(1.0f + 0x1p-8f), 0x3f80);       /* tie: to even (down) */
    assert_int_equal(gemm_bf16_from_float(1.0f + 3 * 0x1p-8f), 0x3f82);   /* tie: to even (up) */
    assert_int_equal(gemm_bf16_from_float(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81); /* above the tie */
    assert_int_equal(gemm_bf16_from_float(-2.0f), 0xc000);
    assert_int_equal(gemm_bf16_from_float(INFINITY), 0x7f80);
    assert_true(isnan(gemm_bf16_to_float(gemm_bf16_from_float(NAN))));
    assert_int_equal(gemm_bf16_from_float(3.4e38f), 0x7f80); /* rounds past the largest bf16 */
}

/* C = alpha op(A) op(B) + beta C against float64 over the rounded inputs. The only error left is
 * fp32 accumulation: each of the K partial sums rounds once (2^-24 relative), so
 * |error| <= (K + 2) 2^-24 (sum_k |a_k b_k| + |beta c|); a wrong rounding of the inputs (2^-8
 * relative each) or a lost term lies far outside. The worst element is printed on a failure. */
static void check_case(bool ta, bool tb, int M, int N, int K, float alpha, float beta) {
    uint64_t s = (uint64_t)(M * 131 + N * 17 + K + ta * 7 + tb * 3);
    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
    float *A = malloc(sizeof(float) * (size_t)(ta ? K : M) * lda), *B = malloc(sizeof(float) * (size_t)(tb ? N : K) * ldb);
    float *C = malloc(sizeof(float) * (size_t)M * ldc), *C0 = malloc(sizeof(float) * (size_t)M * ldc);
    for (size_t i = 0; i < (size_t)(ta ? K : M) * lda; i++) A[i] = rnd(&s);
    for (size_t i = 0; i < (size_t)(tb ? N : K) * ldb; i++) B[i] = rnd(&s);
    for (size_t i = 0; i < (size_t)M * ldc; i++) C[i] = C0[i] = beta == 0.0f ? NAN : rnd(&s);
    gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double worst = 0, worst_tol = 0;
    int wi = -1, wj = -1;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double p = rb(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                           rb(tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
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
        fail_msg("gemm_bf16 %c%c %dx%dx%d alpha %g beta %g: C[%d][%d] error %.3g > bound %.3g", ta ? 'T' : 'N',
                 tb ? 'T' : 'N', M, N, K, alpha, beta, wi, wj, worst, worst_tol);
    for (int i = 0; i < M; i++) /* the padding beyond N in each row of C is never written */
        for (int j = N; j < ldc; j++)
            assert_memory_equal(&C[(size_t)i * ldc + j], &C0[(size_t)i * ldc + j], sizeof(float));
    free(A), free(B), free(C), free(C0);
}

static void test_gemm_bf16_cases(void **st) {
    (void)st;
    if (!have_bf16("gemm_bf16 (AVX512-BF16 micro-kernels)")) return;
    static const int shapes[][3] = {{1, 1, 1}, {7, 70, 33}, {67, 129, 300}, {200, 65, 513}, {13, 1030, 31}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int t = 0; t < 4; t++) {
            check_case(t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, 0.0f);
            check_case(t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 0.5f, 0.75f);
        }
}

/* kern_gemm_many in bf16 cuts and threads the products like fp32: results bit-identical for 1 and
 * 2 threads and equal to one uncut gemm_bf16 call (each element is the same sum wherever it lies). */
static void test_bf16_threads_and_cuts(void **st) {
    (void)st;
    if (!have_bf16("bf16 thread-count independence")) return;
    enum { M = 1100, N = 300, K = 200 };
    uint64_t s = 5;
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * N * K);
    float *C1 = calloc((size_t)M * N, sizeof(float)), *C2 = calloc((size_t)M * N, sizeof(float)),
          *C3 = calloc((size_t)M * N, sizeof(float));
    for (int i = 0; i < M * K; i++) A[i] = rnd(&s);
    for (int i = 0; i < N * K; i++) B[i] = rnd(&s);
    int saved = kern_threads();
    kern_set_bf16(true);
    kern_init_threads(1);
    kern_gemm(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C1, N);
    kern_init_threads(2);
    kern_gemm(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C2, N);
    kern_set_bf16(false);
    kern_init_threads(saved);
    gemm_bf16(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C3, N);
    assert_memory_equal(C1, C2, sizeof(float) * M * N);
    assert_memory_equal(C1, C3, sizeof(float) * M * N);
    free(A), free(B), free(C1), free(C2), free(C3);
}

static void test_engine_resolve(void **st) {
    (void)st;
    GemmCpu none = {0}, zen = {.avx2_fma = true, .avx512 = true, .avx512_bf16 = true};
    GemmEngine e;
    BpError err = {0};
    assert_int_equal(gemm_engine_resolve(PRECISION_AUTO, &none, &e, &err), 0);
    assert_false(e.bf16);
    assert_int_equal(gemm_engine_resolve(PRECISION_FP32, &zen, &e, &err), 0);
    assert_false(e.bf16);
    assert_int_equal(gemm_engine_resolve(PRECISION_AUTO, &zen, &e, &err), 0);
    assert_true(e.bf16);
    assert_string_equal(e.isa, "avx512-bf16");
    assert_int_equal(gemm_engine_resolve(PRECISION_BF16, &none, &e, &err), -1);
    assert_int_equal(err.kind, BP_ERR_USAGE);
    assert_non_null(strstr(err.msg, "AVX512-BF16"));
}

static void test_amx(void **st) {
    (void)st;
    const GemmCpu *c = gemm_cpu_features();
    printf("SKIP AMX-BF16 path: %s\n", c->amx_present ? "AMX present, but there is no AMX kernel yet (AVX512-BF16 runs)"
                                                       : "this CPU has no AMX");
}

static void test_openblas_core_fix(void **st) {
    (void)st;
    GemmCpu avx2 = {.avx2_fma = true}, skx = {.avx2_fma = true, .avx512 = true},
            cpx = {.avx2_fma = true, .avx512 = true, .avx512_bf16 = true}, old = {0};
    assert_string_equal(gemm_openblas_core_fix("Prescott", NULL, &avx2), "Haswell");
    assert_string_equal(gemm_openblas_core_fix("Prescott", NULL, &skx), "SkylakeX");
    assert_string_equal(gemm_openblas_core_fix("Nehalem", NULL, &cpx), "Cooperlake");
    assert_null(gemm_openblas_core_fix("Prescott", "Prescott", &cpx)); /* never overrides a setting */
    assert_null(gemm_openblas_core_fix("Haswell", NULL, &cpx));        /* not a fallback */
    assert_null(gemm_openblas_core_fix("Prescott", NULL, &old));       /* nothing better exists */
    assert_true(gemm_sgemm_selftest() < 1e-5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_nearest_even), cmocka_unit_test(test_gemm_bf16_cases),
        cmocka_unit_test(test_bf16_threads_and_cuts), cmocka_unit_test(test_engine_resolve),
        cmocka_unit_test(test_amx), cmocka_unit_test(test_openblas_core_fix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
