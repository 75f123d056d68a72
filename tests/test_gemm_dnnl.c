/* tests/test_gemm_dnnl.c: the bf16 GEMM on oneDNN (gemm_dnnl.h) against a float64 product of the
 * bf16-rounded inputs (every transpose case, odd shapes, alpha and beta, wide leading dimensions),
 * each element independent of how the product is cut and of the thread count, oneDNN staying on
 * the calling thread (its OpenMP threads never start, inside or outside our parallel loops), and
 * the engine rule. Skipped with a printed reason where the CPU has no bf16 or the build no oneDNN. */
#include <omp.h>
#include <time.h>

#include "gemm_check.h"
#include "gemm_dnnl.h"
#include "model.h"

static bool have_dnnl(const char *what) {
    if (!gemm_cpu_features()->avx512_bf16) {
        printf("SKIP %s: this CPU has no AVX512-BF16 (or BP_CPU_NO_BF16 is set)\n", what);
        return false;
    }
    if (!gemm_dnnl_available()) {
        printf("SKIP %s: %s\n", what, gemm_dnnl_impl());
        return false;
    }
    return true;
}

static double cpu_s(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Runs first, before any parallel region has left OpenMP workers spinning: with OpenMP allowed 2
 * threads, a 1 GFLOP product burns CPU on the calling thread only (a oneDNN running on 2 threads
 * would put about half of it on another), and the thread count is given back afterwards. */
static void test_dnnl_single_threaded(void **st) {
    (void)st;
    if (!have_dnnl("oneDNN stays on the calling thread")) return;
    enum { M = 512, N = 1024, K = 1024 };
    float *A = calloc((size_t)M * K, sizeof(float)), *B = calloc((size_t)K * N, sizeof(float)),
          *C = calloc((size_t)M * N, sizeof(float));
    for (int i = 0; i < M * K; i++) A[i] = (float)(i % 7) - 3;
    for (int i = 0; i < K * N; i++) B[i] = (float)(i % 5) - 2;
    int saved = omp_get_max_threads();
    omp_set_num_threads(2);
    /* The first call creates the primitive. Then some other thread of the process burns a fixed
       ~0.09 s of CPU within the first ~0.2 s (measured on a quiet Zen 5: the same 0.09 s after 40 or
       1500 products, and with OMP_WAIT_POLICY=passive), which would swamp 4 products of ~3 ms each:
       the timing starts after 0.3 s of products. A oneDNN on 2 threads doubles the ratio for good. */
    double w0 = cpu_s(CLOCK_MONOTONIC);
    do gemm_dnnl(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    while (cpu_s(CLOCK_MONOTONIC) - w0 < 0.3);
    double p0 = cpu_s(CLOCK_PROCESS_CPUTIME_ID), t0 = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    for (int r = 0; r < 4; r++) gemm_dnnl(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    double proc = cpu_s(CLOCK_PROCESS_CPUTIME_ID) - p0, thr = cpu_s(CLOCK_THREAD_CPUTIME_ID) - t0;
    printf("oneDNN 4 x %dx%dx%d: process CPU %.3f s, calling thread %.3f s\n", M, N, K, proc, thr);
    assert_int_equal(omp_get_max_threads(), 2);
    if (proc > 1.2 * thr + 0.01) fail_msg("oneDNN used other threads: process CPU %.3f s, caller %.3f s", proc, thr);
    omp_set_num_threads(saved);
    free(A), free(B), free(C);
}

static void test_dnnl_cases(void **st) {
    (void)st;
    if (!have_dnnl("gemm_dnnl against float64")) return;
    gc_check_cases(gemm_dnnl, "gemm_dnnl");
}

static void test_dnnl_cuts(void **st) {
    (void)st;
    if (!have_dnnl("gemm_dnnl cut vs uncut")) return;
    gc_check_cuts(gemm_dnnl, "gemm_dnnl");
}

static void test_dnnl_threads(void **st) {
    (void)st;
    if (!have_dnnl("oneDNN through kern_gemm, 1 vs 2 threads")) return;
    gc_check_threads(GEMM_BF16_ONEDNN, gemm_dnnl);
}

/* Called from both threads of a parallel region at once (each thread its own primitives and
 * copies), as the attention kernels call it: each result equals the serial one, and each thread's
 * OpenMP thread count is what it was. */
static void test_dnnl_inside_parallel(void **st) {
    (void)st;
    if (!have_dnnl("gemm_dnnl inside a parallel region")) return;
    enum { M = 128, N = 96, K = 64, P = 8 };
    uint64_t s = 3;
    float *A = malloc(sizeof(float) * P * M * K), *B = malloc(sizeof(float) * P * K * N),
          *C1 = malloc(sizeof(float) * P * M * N), *C2 = malloc(sizeof(float) * P * M * N);
    for (int i = 0; i < P * M * K; i++) A[i] = gc_rnd(&s);
    for (int i = 0; i < P * K * N; i++) B[i] = gc_rnd(&s);
    for (int p = 0; p < P; p++)
        gemm_dnnl(false, true, M, N, K, 0.125f, A + p * M * K, K, B + p * K * N, K, 0.0f, C1 + p * M * N, N);
    int changed = 0;
#pragma omp parallel for num_threads(2) schedule(dynamic, 1) reduction(+ : changed)
    for (int p = 0; p < P; p++) {
        int before = omp_get_max_threads();
        gemm_dnnl(false, true, M, N, K, 0.125f, A + p * M * K, K, B + p * K * N, K, 0.0f, C2 + p * M * N, N);
        changed += omp_get_max_threads() != before;
    }
    assert_int_equal(changed, 0);
    assert_memory_equal(C1, C2, sizeof(float) * P * M * N);
    free(A), free(B), free(C1), free(C2);
}

/* A whole forward and backward pass in bf16 (dropout on, every kernel on its parallel path: the
 * attention products run per (example, head) inside the parallel loop, the dense ones cut by
 * kern_gemm_many): loss and gradients bit-identical on 1 and 2 threads, on each engine. */
static void model_threads(GemmBf16Kind kind, bool fp32_onednn) {
    Config cfg;
    config_defaults(&cfg);
    cfg.training.precision = fp32_onednn ? PRECISION_FP32 : PRECISION_BF16;
    ModelConfig *mc = &cfg.model;
    mc->layers = 1, mc->hidden = 64, mc->heads = 4, mc->intermediate = 128, mc->max_position = 64;
    mc->type_vocab_size = 2, mc->dropout = 0.1, mc->attention_dropout = 0.1;
    BpError err = {0};
    Model *m = model_create(&cfg, 300, &err);
    assert_non_null(m);
    if (fp32_onednn) model_set_fp32_onednn(m, true);
    else model_set_bf16_engine(m, kind);
    model_init_weights(m, 3);
    size_t n = model_table(m)->total;
    Batch b;
    assert_int_equal(batch_alloc(&b, 8, 64, 10, &err), 0);
    model_fill_random_batch(&b, 300, 2, true, false, 8, 50);
    float *g1 = malloc(n * sizeof(float));
    double loss1 = 0;
    int saved = kern_threads();
    for (int threads = 1; threads <= 2; threads++) {
        kern_init_threads(threads);
        ForwardArgs fa = {true, 7, 0, 0.0, 0.0};
        ModelStats st;
        model_zero_grad(m);
        assert_int_equal(model_forward(m, &b, &fa, &st, &err), 0);
        model_backward(m);
        if (threads == 1) {
            loss1 = st.loss;
            memcpy(g1, model_grads(m), n * sizeof(float));
        } else {
            assert_true(st.loss == loss1);
            for (size_t i = 0; i < n; i++)
                if (memcmp(&g1[i], &model_grads(m)[i], sizeof(float)) != 0)
                    fail_msg("%s: gradient %zu is %.9g on 1 thread, %.9g on 2", model_engine(m)->isa, i, g1[i],
                             model_grads(m)[i]);
        }
    }
    kern_init_threads(saved);
    free(g1);
    batch_free(&b);
    model_free(m);
}

static void test_model_threads(void **st) {
    (void)st;
    if (!have_dnnl("bf16 model on oneDNN, 1 vs 2 threads")) return;
    model_threads(GEMM_BF16_ONEDNN, false);
    model_threads(GEMM_BF16_OWN, false);
}

/* ---- the fp32 engine on oneDNN (gemm_dnnl_f32) ---- */

static bool have_dnnl_f32(const char *what) {
    if (!gemm_dnnl_f32_available()) {
        printf("SKIP %s: %s (or no AVX-512 on this CPU)\n", what, gemm_dnnl_f32_impl());
        return false;
    }
    return true;
}

/* against float64 of the fp32 inputs: only fp32 accumulation error, (K + 2) 2^-24 sum |a_k b_k| */
static void test_dnnl_f32_cases(void **st) {
    (void)st;
    if (!have_dnnl_f32("gemm_dnnl_f32 against float64")) return;
    gc_check_cases_in(gemm_dnnl_f32, "gemm_dnnl_f32", gc_fp32);
}

static void test_dnnl_f32_cuts(void **st) {
    (void)st;
    if (!have_dnnl_f32("gemm_dnnl_f32 cut vs uncut")) return;
    gc_check_cuts(gemm_dnnl_f32, "gemm_dnnl_f32");
}

/* kern_gemm on the fp32 oneDNN engine: bit-identical on 1 and 2 threads and to one uncut call; and
 * the same product through OpenBLAS agrees to fp32 rounding (another order of the same sums) */
static void test_dnnl_f32_threads(void **st) {
    (void)st;
    if (!have_dnnl_f32("oneDNN fp32 through kern_gemm, 1 vs 2 threads")) return;
    enum { M = 1100, N = 300, K = 200 };
    uint64_t s = 5;
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * N * K);
    float *C[4];
    for (int i = 0; i < 4; i++) C[i] = calloc((size_t)M * N, sizeof(float));
    for (int i = 0; i < M * K; i++) A[i] = gc_rnd(&s);
    for (int i = 0; i < N * K; i++) B[i] = gc_rnd(&s);
    int saved = kern_threads();
    bool saved_engine = kern_fp32_onednn(), saved_bf16 = kern_bf16();
    kern_set_bf16(false); /* a model of an earlier test may have left the bf16 products on */
    kern_set_fp32_onednn(true);
    kern_init_threads(1);
    kern_gemm(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C[0], N);
    kern_init_threads(2);
    kern_gemm(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C[1], N);
    kern_set_fp32_onednn(false);
    kern_gemm(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C[3], N);
    kern_set_fp32_onednn(saved_engine);
    kern_set_bf16(saved_bf16);
    kern_init_threads(saved);
    gemm_dnnl_f32(false, true, M, N, K, 1.0f, A, K, B, K, 0.0f, C[2], N);
    assert_memory_equal(C[0], C[1], sizeof(float) * M * N);
    assert_memory_equal(C[0], C[2], sizeof(float) * M * N);
    double worst = 0;
    for (int i = 0; i < M * N; i++) { /* |terms| <= 4, K = 200: each sum within K 2^-24 * 800 */
        double e = fabs((double)C[0][i] - C[3][i]);
        if (e > worst) worst = e;
    }
    if (worst > 2.0 * K * 0x1p-24 * 4.0 * K) fail_msg("oneDNN vs OpenBLAS fp32: largest difference %.3g", worst);
    for (int i = 0; i < 4; i++) free(C[i]);
    free(A), free(B);
}

static void test_model_threads_f32(void **st) {
    (void)st;
    if (!have_dnnl_f32("fp32 model on oneDNN, 1 vs 2 threads")) return;
    model_threads(GEMM_BF16_OWN, true);
}

/* oneDNN fp32 where OpenBLAS runs a core without AVX-512 kernels on an AVX-512 CPU, OpenBLAS
 * elsewhere; the resolved engine says which */
static void test_fp32_rule(void **st) {
    (void)st;
    GemmCpu zen = {.avx2_fma = true, .avx512 = true, .avx512_bf16 = true}, avx2 = {.avx2_fma = true};
    assert_true(gemm_fp32_onednn_for(&zen, "Haswell", true));
    assert_true(gemm_fp32_onednn_for(&zen, "Zen", true));
    assert_true(gemm_fp32_onednn_for(&zen, "Prescott", true));
    assert_false(gemm_fp32_onednn_for(&zen, "SkylakeX", true));
    assert_false(gemm_fp32_onednn_for(&zen, "Cooperlake", true));
    assert_false(gemm_fp32_onednn_for(&zen, "SapphireRapids", true));
    assert_false(gemm_fp32_onednn_for(&zen, "Haswell", false));
    assert_false(gemm_fp32_onednn_for(&avx2, "Haswell", true));
    GemmEngine e;
    BpError err = {0};
    assert_int_equal(gemm_engine_resolve(PRECISION_FP32, gemm_cpu_features(), &e, &err), 0);
    bool want = gemm_fp32_onednn_for(gemm_cpu_features(), gemm_openblas_core(), gemm_dnnl_f32_available());
    assert_int_equal(e.fp32_onednn, want);
    assert_non_null(strstr(e.isa, want ? "oneDNN" : "OpenBLAS"));
    printf("fp32 engine here: %s (%s)\n", e.isa, e.why);
}

/* oneDNN wherever it serves bf16, ours elsewhere; the resolved engine says which */
static void test_dnnl_rule(void **st) {
    (void)st;
    GemmCpu zen = {.avx2_fma = true, .avx512 = true, .avx512_bf16 = true},
            spr = {.avx2_fma = true, .avx512 = true, .avx512_bf16 = true, .amx_bf16 = true, .amx_present = true},
            none = {.avx2_fma = true};
    assert_int_equal(gemm_bf16_kind_for(&zen, true), GEMM_BF16_ONEDNN);
    assert_int_equal(gemm_bf16_kind_for(&spr, true), GEMM_BF16_ONEDNN);
    assert_int_equal(gemm_bf16_kind_for(&zen, false), GEMM_BF16_OWN);
    assert_int_equal(gemm_bf16_kind_for(&spr, false), GEMM_BF16_OWN);
    assert_int_equal(gemm_bf16_kind_for(&none, true), GEMM_BF16_OWN);
    GemmEngine e;
    BpError err = {0};
    assert_int_equal(gemm_engine_resolve(PRECISION_BF16, &zen, &e, &err), 0);
    bool dnnl = gemm_dnnl_available();
    assert_int_equal(e.bf16_kind, dnnl ? GEMM_BF16_ONEDNN : GEMM_BF16_OWN);
    assert_non_null(strstr(e.isa, dnnl ? "oneDNN" : "avx512-bf16"));
    printf("bf16 engine here: %s (%s)\n", e.isa, e.why);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dnnl_single_threaded), cmocka_unit_test(test_dnnl_cases),
        cmocka_unit_test(test_dnnl_cuts),            cmocka_unit_test(test_dnnl_threads),
        cmocka_unit_test(test_dnnl_inside_parallel), cmocka_unit_test(test_model_threads),
        cmocka_unit_test(test_dnnl_rule),
        cmocka_unit_test(test_dnnl_f32_cases),       cmocka_unit_test(test_dnnl_f32_cuts),
        cmocka_unit_test(test_dnnl_f32_threads),     cmocka_unit_test(test_model_threads_f32),
        cmocka_unit_test(test_fp32_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
