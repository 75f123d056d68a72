/* Tests of the FLOP count (model_gemm_shapes, model_flops_per_example) against the FLOPs the step
 * actually hands to the GEMM (kernels.c's counter, which adds 2 M N K at every sgemm call), and a
 * smoke test of bench_run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "kernels.h"
#include "model.h"

static Config small_config(int layers, int hidden, int heads, int intermediate) {
    Config cfg;
    config_defaults(&cfg);
    ModelConfig *mc = &cfg.model;
    mc->layers = layers;
    mc->hidden = hidden;
    mc->heads = heads;
    mc->intermediate = intermediate;
    mc->max_position = 128;
    mc->type_vocab_size = 2;
    mc->dropout = 0.1;
    mc->attention_dropout = 0.1;
    return cfg;
}

/* sum of 2 M N K count over the shapes, in integers (every count is a whole number) */
static uint64_t shapes_flops(const ModelConfig *mc, int V, int B, int T, int R) {
    ModelGemmShape g[MODEL_MAX_GEMM_SHAPES];
    int n = model_gemm_shapes(mc, V, B, T, R, g);
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        assert_true(g[i].count >= 1 && g[i].count == floor(g[i].count));
        sum += 2 * (uint64_t)g[i].M * (uint64_t)g[i].N * (uint64_t)g[i].K * (uint64_t)g[i].count;
    }
    return sum;
}

/* FLOPs counted in one forward + backward of a random batch, every prediction slot real, no
 * padding */
static uint64_t counted_flops(const Config *cfg, int V, int B, int T, int P) {
    BpError err = {0};
    Model *m = model_create(cfg, V, &err);
    if (!m) fail_msg("model_create: %s", err.msg);
    Batch b;
    if (batch_alloc(&b, B, T, P, &err)) fail_msg("batch_alloc: %s", err.msg);
    model_init_weights(m, 7);
    model_fill_random_batch(&b, V, cfg->model.type_vocab_size, false, true, 7, 0);
    assert_int_equal(batch_count_predictions(&b), (long)B * P);
    ForwardArgs fa = {true, 7, 1, 0.0, 0.0};
    ModelStats st;
    kern_flops_reset();
    kern_flops_enable(true);
    model_zero_grad(m);
    if (model_forward(m, &b, &fa, &st, &err)) fail_msg("model_forward: %s", err.msg);
    model_backward(m);
    kern_flops_enable(false);
    uint64_t n = kern_flops_read();
    batch_free(&b);
    model_free(m);
    return n;
}

static void check_shape(int layers, int hidden, int heads, int intermediate, int V, int B, int T, int P) {
    Config cfg = small_config(layers, hidden, heads, intermediate);
    uint64_t counted = counted_flops(&cfg, V, B, T, P);
    /* The model runs the MLM head on its padded rows and, recomputing the attention probabilities
       (the default), one more Q K^T (T,T,D) per (layer, example, head) in the backward; the
       listed FLOPs count the useful work: the real rows, no recompute. */
    assert_true(cfg.training.recompute_attention);
    uint64_t recompute = (uint64_t)layers * B * heads * 2 * T * T * (hidden / heads);
    uint64_t run = shapes_flops(&cfg.model, V, B, T, model_mlm_product_rows(B * P)) + recompute;
    uint64_t listed = shapes_flops(&cfg.model, V, B, T, B * P);
    double per_example = model_flops_per_example(&cfg.model, V, T, P);
    if (counted != run || per_example * B != (double)listed)
        fail_msg("L%d H%d A%d I%d V%d B%d T%d P%d: counted %llu, model_gemm_shapes %llu at the padded rows (%llu "
                 "at the real ones), model_flops_per_example * B %.17g",
                 layers, hidden, heads, intermediate, V, B, T, P, (unsigned long long)counted,
                 (unsigned long long)run, (unsigned long long)listed, per_example * B);
}

static void test_counted_equals_listed(void **state) {
    (void)state;
    check_shape(2, 16, 2, 32, 50, 3, 12, 4);      /* tiny: fused qkv (16*16 = 256) */
    check_shape(2, 18, 3, 40, 61, 2, 9, 3);       /* 18*18 = 324, not a multiple of 16: three products */
    check_shape(1, 10, 2, 24, 37, 4, 7, 6);       /* non-fused again, P = T - 1 */
    check_shape(1, 64, 4, 256, 300, 4, 64, 10);   /* N = 256 rows: kern_gemm cuts products in blocks */
    check_shape(3, 32, 4, 64, 2000, 2, 40, 6);    /* a vocabulary that dominates */
}

static void test_counter_off(void **state) {
    (void)state;
    Config cfg = small_config(1, 16, 2, 32);
    kern_flops_reset();
    assert_true(counted_flops(&cfg, 50, 2, 8, 3) > 0);
    /* off: a second model's forward + backward adds nothing */
    uint64_t before = kern_flops_read();
    BpError err = {0};
    Model *m = model_create(&cfg, 50, &err);
    Batch b;
    assert_non_null(m);
    assert_int_equal(batch_alloc(&b, 2, 8, 3, &err), 0);
    model_fill_random_batch(&b, 50, 2, false, true, 3, 0);
    ForwardArgs fa = {false, 3, 1, 0.0, 0.0};
    ModelStats st;
    assert_int_equal(model_forward(m, &b, &fa, &st, &err), 0);
    model_backward(m);
    assert_true(kern_flops_read() == before);
    kern_flops_reset();
    assert_true(kern_flops_read() == 0);
    batch_free(&b);
    model_free(m);
}

static void test_bench_smoke(void **state) {
    (void)state;
    Config cfg = small_config(2, 16, 2, 32);
    BenchOptions o = {.vocab_size = 50, .seq = 12, .batch = 3, .predictions = 0, .steps = 3, .warmup = 1,
                      .sgemm = true};
    BenchResult r;
    BpError err = {0};
    if (bench_run(&cfg, &o, &r, &err)) fail_msg("bench_run: %s", err.msg);
    assert_int_equal(r.predictions, 2); /* round(0.15 * 12) */
    assert_int_equal(r.steps, 3);
    assert_int_equal(r.warmup, 1);
    assert_true(r.threads >= 1);
    double lo = 1e30, hi = 0;
    for (int s = 0; s < r.warmup + r.steps; s++) {
        assert_true(r.step_s[s] > 0 && r.forward_s[s] > 0 && r.backward_s[s] > 0 && r.optimizer_s[s] > 0);
        double parts = r.forward_s[s] + r.backward_s[s] + r.optimizer_s[s];
        assert_true(fabs(parts - r.step_s[s]) <= 1e-9 + 1e-9 * r.step_s[s]);
        assert_true(r.rss_mib[s] > 0);
        if (s >= r.warmup) {
            lo = fmin(lo, r.step_s[s]);
            hi = fmax(hi, r.step_s[s]);
        }
    }
    assert_true(r.median_step_s >= lo && r.median_step_s <= hi);
    double tps = 3.0 * 12.0 / r.median_step_s;
    assert_true(fabs(r.tokens_per_s - tps) <= 1e-9 * tps);
    assert_true(r.flops_per_step == model_flops_per_example(&cfg.model, 50, 12, 2) * 3);
    double gf = r.flops_per_step / r.median_step_s / 1e9;
    assert_true(fabs(r.gflops - gf) <= 1e-9 * gf && r.gflops_fwd_bwd >= r.gflops);
    assert_true(r.peak_rss_mib > 0 && r.others_cpu <= 1);
    assert_true(r.sgemm_measured && r.sgemm_gflops > 0 && r.kern_gemm_gflops > 0 && r.ratio > 0);
    assert_true(r.sgemm_gflops >= r.kern_gemm_gflops * (1 - 1e-12)); /* best per shape includes kern_gemm */
    ModelGemmShape g[MODEL_MAX_GEMM_SHAPES];
    assert_int_equal(r.n_rates, model_gemm_shapes(&cfg.model, 50, 3, 12, 6, g));
    int batched = 0;
    for (int i = 0; i < r.n_rates; i++) {
        assert_string_equal(r.rates[i].shape.what, g[i].what);
        assert_true(r.rates[i].kern_gflops > 0);
        assert_true(r.rates[i].batched ? r.rates[i].openblas_gflops == 0 : r.rates[i].openblas_gflops > 0);
        batched += r.rates[i].batched;
    }
    assert_int_equal(batched, 6); /* the attention products, one per (example, head) */
    assert_true(r.attention_gflops > 0);
    bench_result_free(&r);
    assert_null(r.step_s);

    /* out-of-range options are usage errors, nothing allocated */
    o.predictions = 12;
    assert_int_equal(bench_run(&cfg, &o, &r, &err), -1);
    assert_int_equal(err.kind, BP_ERR_USAGE);
    o.predictions = 0;
    o.seq = 129;
    assert_int_equal(bench_run(&cfg, &o, &r, &err), -1);
    assert_int_equal(err.kind, BP_ERR_USAGE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counted_equals_listed),
        cmocka_unit_test(test_counter_off),
        cmocka_unit_test(test_bench_smoke),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
