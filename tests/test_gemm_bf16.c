/* tests/test_gemm_bf16.c: the bf16 GEMM (gemm_bf16.h) against a float64 product of the
 * bf16-rounded inputs in every transpose case, its independence from the thread count and from how
 * kern_gemm cuts it, round to nearest even, the precision resolution and the OpenBLAS core choice
 * (gemm_cpu.h). Paths this CPU lacks are skipped with a printed reason. */
#include "gemm_check.h"

static bool have_bf16(const char *what) {
    if (gemm_cpu_features()->avx512_bf16) return true;
    printf("SKIP %s: this CPU has no AVX512-BF16 (or BP_CPU_NO_BF16 is set)\n", what);
    return false;
}

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

static void test_gemm_bf16_cases(void **st) {
    (void)st;
    if (!have_bf16("gemm_bf16 (AVX512-BF16 micro-kernels)")) return;
    gc_check_cases(gemm_bf16, "gemm_bf16");
}

static void test_bf16_cuts(void **st) {
    (void)st;
    if (!have_bf16("gemm_bf16 cut vs uncut")) return;
    gc_check_cuts(gemm_bf16, "gemm_bf16");
    gc_check_cuts_k(gemm_bf16, "gemm_bf16", 4500);
}

/* kern_gemm_many in bf16 (our engine) cuts and threads the products like fp32 */
static void test_bf16_threads_and_cuts(void **st) {
    (void)st;
    if (!have_bf16("bf16 thread-count independence")) return;
    gc_check_threads(GEMM_BF16_OWN, gemm_bf16);
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
    assert_true(e.bf16); /* which bf16 engine: tests/test_gemm_dnnl.c */
    assert_int_equal(gemm_engine_resolve(PRECISION_BF16, &none, &e, &err), -1);
    assert_int_equal(err.kind, BP_ERR_USAGE);
    assert_non_null(strstr(err.msg, "AVX512-BF16"));
}

static void test_amx(void **st) {
    (void)st;
    const GemmCpu *c = gemm_cpu_features();
    printf("SKIP AMX-BF16 path: %s\n", c->amx_present ? "AMX present: served by oneDNN (tests/test_gemm_dnnl.c)"
                                                       : "this CPU has no AMX (oneDNN would use it where present)");
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
        cmocka_unit_test(test_bf16_cuts), cmocka_unit_test(test_bf16_threads_and_cuts), cmocka_unit_test(test_engine_resolve),
        cmocka_unit_test(test_amx), cmocka_unit_test(test_openblas_core_fix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
