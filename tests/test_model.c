/* Unit tests for model.c, model_io.c and gradcheck.c: parameter table and tensor kinds, init,
 * gradient check (both GELU forms, dropout off and on), the micro-batch / thread / padding
 * invariants, activation planning, backward without forward, safetensors round trip and load
 * errors, the HF config. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gemm_dnnl.h"
#include "gradcheck.h"
#include "kernels.h"
#include "model.h"
#include "safetensors.h"
#include "testutil.h"

enum { TV = 50 }; /* tiny vocabulary */

static Config tiny_config(GeluKind gelu, double dropout) {
    Config cfg;
    config_defaults(&cfg);
    ModelConfig *mc = &cfg.model;
    mc->layers = 2;
    mc->hidden = 16;
    mc->heads = 2;
    mc->intermediate = 32;
    mc->max_position = 16;
    mc->type_vocab_size = 2;
    mc->dropout = dropout;
    mc->attention_dropout = dropout;
    mc->gelu = gelu;
    return cfg;
}

static Model *tiny_model(GeluKind gelu, double dropout, uint64_t seed) {
    Config cfg = tiny_config(gelu, dropout);
    BpError err = {0};
    Model *m = model_create(&cfg, TV, &err);
    if (!m) fail_msg("model_create: %s", err.msg);
    model_init_weights(m, seed);
    return m;
}

static void random_batch(Batch *b, int B, int T, int P, uint64_t seed, int64_t first) {
    BpError err = {0};
    assert_int_equal(batch_alloc(b, B, T, P, &err), 0);
    model_fill_random_batch(b, TV, 2, true, false, seed, first);
}

/* atol + rtol*|ref| over n floats; prints the worst element on failure */
static void assert_close(const char *what, const float *got, const float *ref, size_t n, double atol,
                         double rtol) {
    size_t worst = 0;
    double worst_excess = -1.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]), lim = atol + rtol * fabs((double)ref[i]);
        if (!(e <= lim) && e - lim > worst_excess) {
            worst_excess = e - lim;
            worst = i;
        }
    }
    if (worst_excess >= 0)
        fail_msg("%s: element %zu is %.9g, expected %.9g (atol %g rtol %g)", what, worst, got[worst],
                 ref[worst], atol, rtol);
}

static void test_param_table(void **state) {
    (void)state;
    Config cfg = tiny_config(GELU_ERF, 0.1);
    BpError err = {0};
    ParamTable t;
    assert_int_equal(model_param_table(&cfg.model, TV, &t, &err), 0);
    assert_int_equal(t.n, 5 + 2 * 16 + 2 + 4 + 1 + 2);
    size_t count = 0, end = 0;
    for (int i = 0; i < t.n; i++) {
        assert_int_equal(t.params[i].offset % 16, 0);
        assert_true(t.params[i].offset >= end);
        end = t.params[i].offset + t.params[i].numel;
        count += t.params[i].numel;
    }
    assert_true(t.total >= end && t.total % 16 == 0);
    int q = params_find(&t, "bert.encoder.layer.1.attention.self.query.weight");
    int k = params_find(&t, "bert.encoder.layer.1.attention.self.key.weight");
    int v = params_find(&t, "bert.encoder.layer.1.attention.self.value.weight");
    assert_true(q >= 0 && k >= 0 && v >= 0);
    assert_int_equal(t.params[k].offset, t.params[q].offset + 16 * 16);
    assert_int_equal(t.params[v].offset, t.params[q].offset + 2 * 16 * 16);
    int f1 = params_find(&t, "bert.encoder.layer.0.intermediate.dense.weight");
    assert_int_equal(t.params[f1].shape[0], 32); /* (out, in) */
    assert_int_equal(t.params[f1].shape[1], 16);
    assert_int_equal(params_find(&t, "cls.predictions.decoder.weight"), -1);
    int word = params_find(&t, "bert.embeddings.word_embeddings.weight");
    assert_int_equal(t.params[word].shape[0], TV);
    /* V*H + 16*H + 2*H + 2H + L*(4H^2 + 4H + 2H + I*H + I + H*I + H + 2H) + H^2+H + H^2+H + 2H + V + 2H + 2 */
    size_t H = 16, I = 32, V = TV, L = 2;
    size_t want = V * H + 16 * H + 2 * H + 2 * H + L * (4 * H * H + 4 * H + 2 * H + 2 * I * H + I + H + 2 * H) +
                  2 * (H * H + H) + 2 * H + V + 2 * H + 2;
    assert_int_equal(count, want);
    param_table_free(&t);

    /* exclusion flags come from the config's patterns */
    Model *m = model_create(&cfg, TV, &err);
    assert_non_null(m);
    const ParamTable *mt = model_table(m);
    for (int i = 0; i < mt->n; i++) {
        bool excluded = strstr(mt->params[i].name, "bias") || strstr(mt->params[i].name, "LayerNorm");
        assert_int_equal(mt->params[i].weight_decay, !excluded);
        assert_int_equal(mt->params[i].layer_adaptation, !excluded);
    }
    /* the kinds come from the same list as the names: gains are the LayerNorm weights, biases the
       .bias tensors (LayerNorm shifts included), everything else a weight */
    for (int i = 0; i < mt->n; i++) {
        const char *name = mt->params[i].name;
        size_t len = strlen(name);
        ModelTensorKind want = strstr(name, "LayerNorm.weight")       ? MODEL_TENSOR_GAIN
                               : !strcmp(name + len - 5, ".bias") ? MODEL_TENSOR_BIAS
                                                                   : MODEL_TENSOR_WEIGHT;
        assert_int_equal(model_tensor_kind(m, i), want);
    }
    /* the table of a model and model_param_table's are the same, entry for entry */
    ParamTable again;
    assert_int_equal(model_param_table(&cfg.model, TV, &again, &err), 0);
    assert_int_equal(again.n, mt->n);
    assert_int_equal(again.total, mt->total);
    for (int i = 0; i < mt->n; i++) {
        assert_string_equal(again.params[i].name, mt->params[i].name);
        assert_int_equal(again.params[i].offset, mt->params[i].offset);
        assert_int_equal(again.params[i].numel, mt->params[i].numel);
    }
    param_table_free(&again);
    model_free(m);

    /* invalid shapes are usage errors */
    cfg.model.heads = 3;
    assert_int_equal(model_param_table(&cfg.model, TV, &t, &err), -1);
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
    assert_non_null(strstr(err.msg, "model.heads"));
}

static void test_init(void **state) {
    (void)state;
    Model *a = tiny_model(GELU_ERF, 0.1, 42), *b = tiny_model(GELU_ERF, 0.1, 42), *c = tiny_model(GELU_ERF, 0.1, 43);
    const ParamTable *t = model_table(a);
    assert_memory_equal(model_params(a), model_params(b), t->total * sizeof(float));
    assert_memory_not_equal(model_params(a), model_params(c), t->total * sizeof(float));
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->params[i];
        const float *w = model_params(a) + p->offset;
        double sum = 0, sq = 0;
        for (size_t k = 0; k < p->numel; k++) {
            sum += w[k];
            sq += (double)w[k] * w[k];
        }
        if (strstr(p->name, "LayerNorm.weight")) {
            for (size_t k = 0; k < p->numel; k++) assert_true(w[k] == 1.0f);
        } else if (strstr(p->name, ".weight")) {
            for (size_t k = 0; k < p->numel; k++) assert_true(fabsf(w[k]) <= 0.04f + 1e-7f);
            if (p->numel >= 512) {
                /* truncated at 2 std: std = 0.02 * 0.8796 */
                double sd = sqrt(sq / p->numel - (sum / p->numel) * (sum / p->numel));
                assert_true(fabs(sd - 0.02 * 0.8796) < 0.002);
            }
        } else {
            for (size_t k = 0; k < p->numel; k++) assert_true(w[k] == 0.0f);
        }
    }
    model_free(a);
    model_free(b);
    model_free(c);
}

static void run_gradcheck(GeluKind gelu, bool dropout) {
    Model *m = tiny_model(gelu, 0.1, 1);
    Batch b;
    random_batch(&b, 3, 8, 3, 7, 100);
    /* fp32 model: eps 1e-2 keeps the loss rounding noise (~1e-7 * loss / eps) near 1e-5 while the
       O(eps^2) truncation stays below it (see gradcheck.c for the full argument) */
    GradcheckOpts o = {1e-2, 1e-4, 1e-2, 4, true, 3, dropout};
    BpError err = {0};
    GradcheckReport rep;
    int fails = model_gradcheck(m, &b, &o, &rep, &err);
    if (fails < 0) fail_msg("gradcheck (%s, dropout %d): %s", gelu ? "tanh" : "erf", dropout, err.msg);
    for (int i = 0; i < rep.n_rows; i++)
        if (!rep.rows[i].pass)
            print_error("FAIL %s: %d checked, max abs err %.3e, max rel err %.3e\n", rep.rows[i].name,
                        rep.rows[i].checked, rep.rows[i].max_abs, rep.rows[i].max_rel);
    if (fails != 0) fail_msg("gradcheck (%s, dropout %d): %d failures", gelu ? "tanh" : "erf", dropout, fails);
    /* a row per tensor in table order, each with its largest element and 4 samples (fewer only
       for the 2-float NSP bias), then the random direction */
    const ParamTable *t = model_table(m);
    assert_int_equal(rep.n_rows, t->n + 1);
    for (int i = 0; i < t->n; i++) {
        assert_string_equal(rep.rows[i].name, t->params[i].name);
        assert_int_equal(rep.rows[i].checked, 1 + (t->params[i].numel < 4 ? (int)t->params[i].numel : 4));
    }
    assert_non_null(strstr(rep.rows[t->n].name, "random direction"));
    assert_int_equal(rep.rows[t->n].checked, 1);
    model_gradcheck_report_free(&rep);
    batch_free(&b);
    model_free(m);
}

static void test_gradcheck_erf(void **state) { (void)state; run_gradcheck(GELU_ERF, false); }
static void test_gradcheck_tanh(void **state) { (void)state; run_gradcheck(GELU_TANH, false); }
static void test_gradcheck_dropout(void **state) { (void)state; run_gradcheck(GELU_ERF, true); }

static void fwd_bwd(Model *m, const Batch *b, bool train, double mlm_den, double nsp_den, ModelStats *st) {
    ForwardArgs fa = {train, 99, 5, mlm_den, nsp_den};
    BpError err = {0};
    if (model_forward(m, b, &fa, st, &err)) fail_msg("forward: %s", err.msg);
    model_backward(m);
}

/* copies examples [from, from+n) of src into dst (allocated here) */
static void slice_batch(Batch *dst, const Batch *src, int from, int n) {
    BpError err = {0};
    int T = src->T, P = src->P;
    assert_int_equal(batch_alloc(dst, n, T, P, &err), 0);
    memcpy(dst->input_ids, src->input_ids + (size_t)from * T, sizeof(int32_t) * (size_t)n * T);
    memcpy(dst->token_type_ids, src->token_type_ids + (size_t)from * T, sizeof(int32_t) * (size_t)n * T);
    memcpy(dst->attention_mask, src->attention_mask + (size_t)from * T, sizeof(int32_t) * (size_t)n * T);
    memcpy(dst->masked_lm_positions, src->masked_lm_positions + (size_t)from * P, sizeof(int32_t) * (size_t)n * P);
    memcpy(dst->masked_lm_ids, src->masked_lm_ids + (size_t)from * P, sizeof(int32_t) * (size_t)n * P);
    memcpy(dst->masked_lm_weights, src->masked_lm_weights + (size_t)from * P, sizeof(int32_t) * (size_t)n * P);
    memcpy(dst->next_sentence_labels, src->next_sentence_labels + from, sizeof(int32_t) * (size_t)n);
    memcpy(dst->example_index, src->example_index + from, sizeof(int64_t) * (size_t)n);
}

/* One global batch of 4 = two micro-batches of 2 (global denominators): same loss and gradient,
 * with dropout on (masks keyed by the global example index). */
static void test_microbatch_split(void **state) {
    (void)state;
    Model *m = tiny_model(GELU_ERF, 0.1, 5);
    const ParamTable *t = model_table(m);
    Batch g, h1, h2;
    random_batch(&g, 4, 12, 4, 11, 1000);
    slice_batch(&h1, &g, 0, 2);
    slice_batch(&h2, &g, 2, 2);
    double mlm_den = (double)batch_count_predictions(&g), nsp_den = 4;
    ModelStats s, s1, s2;
    model_zero_grad(m);
    fwd_bwd(m, &g, true, mlm_den, nsp_den, &s);
    float *gfull = malloc(t->total * sizeof(float));
    memcpy(gfull, model_grads(m), t->total * sizeof(float));
    model_zero_grad(m);
    fwd_bwd(m, &h1, true, mlm_den, nsp_den, &s1);
    fwd_bwd(m, &h2, true, mlm_den, nsp_den, &s2);
    assert_true(fabs(s.loss - (s1.loss + s2.loss)) <= 1e-5 * fabs(s.loss));
    assert_true(fabs(s.mlm_loss - (s1.mlm_loss + s2.mlm_loss)) <= 1e-5 * fabs(s.mlm_loss));
    assert_int_equal(s.mlm_count, s1.mlm_count + s2.mlm_count);
    assert_int_equal(s.mlm_correct, s1.mlm_correct + s2.mlm_correct);
    assert_int_equal(s.nsp_correct, s1.nsp_correct + s2.nsp_correct);
    assert_close("split gradient", model_grads(m), gfull, t->total, 1e-6, 1e-4);
    /* and the dropout really was on: the train loss differs from the eval loss */
    ModelStats se;
    model_zero_grad(m);
    fwd_bwd(m, &g, false, mlm_den, nsp_den, &se);
    assert_true(fabs(se.loss - s.loss) > 1e-6);
    free(gfull);
    batch_free(&g);
    batch_free(&h1);
    batch_free(&h2);
    model_free(m);
}

/* train off (or dropout 0) is exactly repeatable, and equals a dropout-0 model bit for bit */
static void test_repeatable(void **state) {
    (void)state;
    Model *a = tiny_model(GELU_TANH, 0.1, 9), *z = tiny_model(GELU_TANH, 0.0, 9);
    const ParamTable *t = model_table(a);
    Batch b;
    random_batch(&b, 3, 10, 3, 4, 0);
    ModelStats s1, s2, s3;
    model_zero_grad(a);
    fwd_bwd(a, &b, false, 0, 0, &s1);
    float *g1 = malloc(t->total * sizeof(float));
    memcpy(g1, model_grads(a), t->total * sizeof(float));
    model_zero_grad(a);
    fwd_bwd(a, &b, false, 0, 0, &s2);
    assert_true(s1.loss == s2.loss);
    assert_memory_equal(g1, model_grads(a), t->total * sizeof(float));
    model_zero_grad(z);
    fwd_bwd(z, &b, true, 0, 0, &s3);
    assert_true(s1.loss == s3.loss);
    assert_memory_equal(g1, model_grads(z), t->total * sizeof(float));
    /* train on with the same (seed, step) is repeatable too */
    fwd_bwd(a, &b, true, 0, 0, &s1);
    fwd_bwd(a, &b, true, 0, 0, &s2);
    assert_true(s1.loss == s2.loss);
    free(g1);
    batch_free(&b);
    model_free(a);
    model_free(z);
}

/* one thread vs several: bit-identical loss and gradients (same dropout masks, sgemm blocks fixed
 * by the shape, reductions in a fixed order). Sizes large enough that every kernel takes its
 * parallel path (the tiny models above run serially). */
static void test_threads(void **state) {
    (void)state;
    Config cfg = tiny_config(GELU_ERF, 0.1);
    cfg.model.layers = 1;
    cfg.model.hidden = 64;
    cfg.model.heads = 4;
    cfg.model.intermediate = 128;
    cfg.model.max_position = 64;
    BpError err = {0};
    Model *m = model_create(&cfg, 300, &err);
    assert_non_null(m);
    model_init_weights(m, 3);
    const ParamTable *t = model_table(m);
    Batch b;
    assert_int_equal(batch_alloc(&b, 8, 64, 10, &err), 0);
    model_fill_random_batch(&b, 300, 2, true, false, 8, 50);
    ModelStats s1, s2;
    int nt = kern_threads();
    kern_init_threads(1);
    model_zero_grad(m);
    fwd_bwd(m, &b, true, 0, 0, &s1);
    float *g1 = malloc(t->total * sizeof(float));
    memcpy(g1, model_grads(m), t->total * sizeof(float));
    for (int threads = 2; threads <= 3; threads++) {
        kern_init_threads(threads);
        model_zero_grad(m);
        fwd_bwd(m, &b, true, 0, 0, &s2);
        assert_true(s1.loss == s2.loss);
        assert_close("gradient with more threads", model_grads(m), g1, t->total, 0.0, 0.0);
    }
    kern_init_threads(nt);
    free(g1);
    batch_free(&b);
    model_free(m);
}

/* Every x86-64 level's build of the elementwise kernels (kernels_isa.h) gives the same loss and
 * gradients bit for bit, with dropout on, both GELU forms, sequences longer than a vector (the
 * lanes' remainders) and a vocabulary that is not a multiple of 16. Levels this CPU lacks are
 * skipped, visibly. */
static void test_isa_levels(void **state) {
    (void)state;
    static const char *const LEVEL_NAMES[] = {"x86-64", "x86-64-v3", "x86-64-v4"};
    char saved[16];
    snprintf(saved, sizeof saved, "%s", kern_isa());
    for (int gk = 0; gk < 2; gk++) {
        Config cfg = tiny_config(gk ? GELU_TANH : GELU_ERF, 0.1);
        cfg.model.hidden = 40; /* LayerNorm rows of 2.5 vectors of 16 */
        cfg.model.heads = 2;
        cfg.model.intermediate = 72;
        cfg.model.max_position = 64;
        BpError err = {0};
        Model *m = model_create(&cfg, 301, &err);
        assert_non_null(m);
        model_init_weights(m, 5);
        const ParamTable *t = model_table(m);
        Batch b;
        assert_int_equal(batch_alloc(&b, 3, 37, 6, &err), 0);
        model_fill_random_batch(&b, 301, 2, true, false, 11, 0);
        float *g0 = NULL;
        ModelStats s0 = {0}, s;
        for (int v = 0; v < 3; v++) {
            if (!kern_set_isa(LEVEL_NAMES[v])) {
                printf("SKIP kernels at %s: this CPU does not run it\n", LEVEL_NAMES[v]);
                continue;
            }
            model_zero_grad(m);
            fwd_bwd(m, &b, true, 0, 0, &s);
            if (!g0) {
                g0 = malloc(t->total * sizeof(float));
                memcpy(g0, model_grads(m), t->total * sizeof(float));
                s0 = s;
                continue;
            }
            if (s.loss != s0.loss || s.mlm_loss != s0.mlm_loss || s.nsp_loss != s0.nsp_loss)
                fail_msg("%s: loss %.17g (mlm %.17g, nsp %.17g) vs %s %.17g (%.17g, %.17g)", LEVEL_NAMES[v], s.loss,
                         s.mlm_loss, s.nsp_loss, LEVEL_NAMES[0], s0.loss, s0.mlm_loss, s0.nsp_loss);
            assert_close(LEVEL_NAMES[v], model_grads(m), g0, t->total, 0.0, 0.0);
        }
        free(g0);
        batch_free(&b);
        model_free(m);
    }
    assert_true(kern_set_isa(saved));
}

/* padded tokens and unused prediction slots do not change anything */
static void test_padding_ignored(void **state) {
    (void)state;
    Model *m = tiny_model(GELU_ERF, 0.0, 3);
    const ParamTable *t = model_table(m);
    Batch b;
    random_batch(&b, 3, 12, 4, 8, 0);
    ModelStats s1, s2;
    model_zero_grad(m);
    fwd_bwd(m, &b, false, 0, 0, &s1);
    float *g1 = malloc(t->total * sizeof(float));
    memcpy(g1, model_grads(m), t->total * sizeof(float));
    int changed = 0;
    for (int i = 0; i < b.B * b.T; i++)
        if (!b.attention_mask[i]) b.input_ids[i] = 7, b.token_type_ids[i] = 1, changed++;
    for (int i = 0; i < b.B * b.P; i++)
        if (!b.masked_lm_weights[i]) b.masked_lm_positions[i] = 3, b.masked_lm_ids[i] = 9, changed++;
    assert_true(changed > 4);
    model_zero_grad(m);
    fwd_bwd(m, &b, false, 0, 0, &s2);
    assert_true(fabs(s1.loss - s2.loss) <= 1e-7 * s1.loss);
    /* padded keys get probability exactly 0 and padded rows reach no loss, so no gradient reaches
       the embedding rows the padded tokens now read: every gradient stays */
    assert_close("gradient with changed padding", model_grads(m), g1, t->total, 1e-7, 1e-5);
    free(g1);
    batch_free(&b);
    model_free(m);
}

/* One engine: every activation storage (bf16 copies where the products are bf16, probabilities
 * kept or recomputed) gives the loss, the logits and every gradient of the fully kept fp32 storage
 * bit for bit, with dropout and padding, at sizes where every kernel runs in parallel; and the
 * plan shrinks by what is no longer kept. */
static void check_storages(const char *engine, bool bf16, int bf16_kind, int fp32_onednn) {
    Config cfg = tiny_config(GELU_ERF, 0.1);
    cfg.model.hidden = 64;
    cfg.model.heads = 4;
    cfg.model.intermediate = 128;
    cfg.model.max_position = 64;
    cfg.training.precision = bf16 ? PRECISION_BF16 : PRECISION_FP32;
    BpError err = {0};
    Model *m = model_create(&cfg, 300, &err);
    if (!m) fail_msg("model_create: %s", err.msg);
    if (bf16_kind >= 0) model_set_bf16_engine(m, (GemmBf16Kind)bf16_kind);
    if (fp32_onednn >= 0) model_set_fp32_onednn(m, fp32_onednn);
    model_init_weights(m, 3);
    const ParamTable *t = model_table(m);
    const ModelConfig *mc = model_config(m);
    int B = 6, T = 64, P = 10;
    Batch b;
    assert_int_equal(batch_alloc(&b, B, T, P, &err), 0);
    model_fill_random_batch(&b, 300, 2, true, false, 8, 50);
    ModelActStorage kept = {false, false};
    size_t kept_bytes = model_activation_bytes(mc, 300, B, T, P, kept);
    model_set_act_storage(m, kept);
    ModelStats s0, s1;
    model_zero_grad(m);
    fwd_bwd(m, &b, true, 0, 0, &s0);
    int rows = model_mlm_rows(m);
    float *g0 = malloc(t->total * sizeof(float)), *l0 = malloc(sizeof(float) * (size_t)rows * 300);
    memcpy(g0, model_grads(m), t->total * sizeof(float));
    /* backward turned the logits into their gradient: compare the forward's logits separately */
    ForwardArgs fa = {true, 99, 5, 0, 0};
    assert_int_equal(model_forward(m, &b, &fa, &s1, &err), 0);
    memcpy(l0, model_mlm_logits(m), sizeof(float) * (size_t)rows * 300);
    model_backward(m);
    for (int k = 1; k < 4; k++) {
        ModelActStorage st = {(k & 2) != 0, (k & 1) != 0};
        if (st.bf16 && !bf16) continue;
        char what[160];
        snprintf(what, sizeof what, "%s, storage bf16 %d recompute %d: gradient vs all kept in fp32", engine,
                 st.bf16, st.recompute_attention);
        model_set_act_storage(m, st);
        assert_int_equal(model_forward(m, &b, &fa, &s1, &err), 0);
        assert_true(s1.loss == s0.loss);
        assert_memory_equal(model_mlm_logits(m), l0, sizeof(float) * (size_t)rows * 300);
        model_backward(m);
        model_zero_grad(m);
        fwd_bwd(m, &b, true, 0, 0, &s1);
        assert_true(s1.loss == s0.loss);
        assert_close(what, model_grads(m), g0, t->total, 0.0, 0.0);
        /* the plan: the probabilities (B*A*T*T floats a layer) gone when recomputed; with bf16,
           6 floats a token and layer (qkv, context, attn_out, out) and the embeddings' output in
           half the bytes, the last layer's output in none (no layer reads it), plus one shared
           fp32 set of the four (the output doubling as the embeddings'): saved 12 L N H - 20 N H */
        double L = mc->layers, N = (double)B * T, H = mc->hidden;
        double want = (st.recompute_attention ? 4.0 * L * B * mc->heads * T * T : 0.0) +
                      (st.bf16 ? 12.0 * L * N * H - 20.0 * N * H : 0.0);
        size_t bytes = model_activation_bytes(mc, 300, B, T, P, st);
        double saved = (double)kept_bytes - (double)bytes;
        if (!(bytes < kept_bytes) || fabs(saved - want) > 64.0 * 64)
            fail_msg("%s: plan %zu bytes, %zu kept: saved %.0f, expected about %.0f", what, bytes, kept_bytes, saved, want);
    }
    printf("activation storages on %s: bit-identical\n", engine);
    free(g0);
    free(l0);
    batch_free(&b);
    model_free(m);
}

static void test_act_storage(void **state) {
    (void)state;
    check_storages("fp32 (the rule's engine)", false, -1, -1);
    check_storages("fp32 on OpenBLAS", false, -1, 0);
    if (gemm_dnnl_f32_available()) check_storages("fp32 on oneDNN", false, -1, 1);
    else printf("SKIP activation storages with fp32 on oneDNN: not available here\n");
    if (!gemm_cpu_features()->avx512_bf16) {
        printf("SKIP activation storages in bf16: this CPU has no AVX512-BF16 (or BP_CPU_NO_BF16 is set)\n");
        return;
    }
    check_storages("bf16 on ours", true, GEMM_BF16_OWN, -1);
    if (gemm_bf16_kind_usable(GEMM_BF16_ONEDNN)) check_storages("bf16 on oneDNN", true, GEMM_BF16_ONEDNN, -1);
    else printf("SKIP activation storages in bf16 on oneDNN: not available here\n");
}

/* a model planned large runs smaller batches without re-planning and gives the results of a model
 * planned exactly */
static void test_plan(void **state) {
    (void)state;
    BpError err = {0};
    Model *a = tiny_model(GELU_ERF, 0.1, 3), *b = tiny_model(GELU_ERF, 0.1, 3);
    const ParamTable *t = model_table(a);
    assert_int_equal(model_plan(a, 6, 16, 5, &err), 0);
    Batch x;
    random_batch(&x, 3, 10, 3, 2, 0);
    ModelStats sa, sb;
    model_zero_grad(a);
    model_zero_grad(b);
    fwd_bwd(a, &x, true, 0, 0, &sa);
    fwd_bwd(b, &x, true, 0, 0, &sb);
    assert_true(sa.loss == sb.loss);
    assert_memory_equal(model_grads(a), model_grads(b), t->total * sizeof(float));
    size_t bytes = model_activation_bytes(model_config(a), TV, 6, 16, 5, model_get_act_storage(a));
    assert_true(bytes > (size_t)6 * 16 * 16 * 4 * 10);
    /* a sequence longer than max_position is refused */
    Batch y;
    random_batch(&y, 1, 17, 2, 2, 0);
    ForwardArgs fa = {false, 0, 0, 0, 0};
    assert_int_equal(model_forward(a, &y, &fa, &sa, &err), -1);
    assert_non_null(strstr(err.msg, "max_position"));
    /* token ids outside the vocabulary are refused */
    x.input_ids[3] = TV;
    assert_int_equal(model_forward(a, &x, &fa, &sa, &err), -1);
    assert_non_null(strstr(err.msg, "input_ids"));
    batch_free(&x);
    batch_free(&y);
    model_free(a);
    model_free(b);
}

static void test_stats_and_logits(void **state) {
    (void)state;
    Model *m = tiny_model(GELU_ERF, 0.0, 3);
    Batch b;
    random_batch(&b, 3, 8, 4, 5, 0);
    ModelStats st;
    fwd_bwd(m, &b, false, 0, 0, &st);
    long real = batch_count_predictions(&b);
    assert_int_equal(st.mlm_count, real);
    assert_int_equal(st.nsp_count, 3);
    assert_true(fabs(st.loss - st.mlm_loss - st.nsp_loss) < 1e-12);
    /* a near-uniform model at init: MLM loss ~ log V, NSP ~ log 2 */
    assert_true(fabs(st.mlm_loss - log(TV)) < 0.2);
    assert_true(fabs(st.nsp_loss - log(2)) < 0.1);
    ForwardArgs fa = {false, 0, 0, 0, 0};
    BpError err = {0};
    assert_int_equal(model_forward(m, &b, &fa, &st, &err), 0);
    assert_int_equal(model_mlm_rows(m), real);
    const int32_t *slots = model_mlm_slots(m);
    for (int r = 0; r < real; r++) assert_true(b.masked_lm_weights[slots[r]] != 0);
    batch_free(&b);
    model_free(m);
}

static int setup_scratch(void **state) {
    (void)state;
    return tu_dir_create("model", "model.safetensors");
}

static void test_safetensors_roundtrip(void **state) {
    (void)state;
    const char *path = g_path, *cfgpath = tu_path("config.json");
    BpError err = {0};
    Model *a = tiny_model(GELU_TANH, 0.1, 21), *b = tiny_model(GELU_TANH, 0.1, 22);
    const ParamTable *t = model_table(a);
    if (model_save_safetensors(a, path, &err)) fail_msg("save: %s", err.msg);
    if (model_load_safetensors(b, path, &err)) fail_msg("load: %s", err.msg);
    assert_memory_equal(model_params(a), model_params(b), t->total * sizeof(float));
    /* shape inference */
    ModelConfig mc;
    memset(&mc, 0, sizeof mc);
    int V = 0;
    assert_int_equal(model_config_from_safetensors(path, 2, &mc, &V, &err), 0);
    assert_int_equal(mc.layers, 2);
    assert_int_equal(mc.hidden, 16);
    assert_int_equal(mc.intermediate, 32);
    assert_int_equal(mc.max_position, 16);
    assert_int_equal(V, TV);
    /* HF config */
    assert_int_equal(model_write_hf_config(a, cfgpath, &err), 0);
    size_t json_len;
    char *json = (char *)tu_read_bytes(cfgpath, &json_len);
    assert_non_null(strstr(json, "\"BertForPreTraining\""));
    assert_non_null(strstr(json, "\"hidden_act\": \"gelu_new\""));
    assert_non_null(strstr(json, "\"num_attention_heads\": 2"));
    free(json);

    /* a tensor of the wrong shape, a missing one, an untied decoder: clear errors */
    const char *wname = "bert.encoder.layer.1.output.dense.weight";
    StEntry e[64];
    int n = 0;
    for (int i = 0; i < t->n && n < 64; i++) {
        const ParamInfo *p = &t->params[i];
        e[n] = (StEntry){p->name, ST_F32, p->ndim, {p->shape[0], p->shape[1]}, model_params(a) + p->offset};
        if (!strcmp(p->name, wname)) e[n].shape[0] = 8;
        n++;
    }
    assert_int_equal(st_write(path, e, n, &err), 0);
    assert_int_equal(model_load_safetensors(b, path, &err), -1);
    assert_non_null(strstr(err.msg, wname));
    assert_non_null(strstr(err.msg, "shape (8, 32)"));
    assert_non_null(strstr(err.msg, path));
    for (int i = 0; i < n; i++)
        if (!strcmp(e[i].name, wname)) e[i] = e[--n];
    assert_int_equal(st_write(path, e, n, &err), 0);
    assert_int_equal(model_load_safetensors(b, path, &err), -1);
    assert_non_null(strstr(err.msg, "missing"));
    assert_non_null(strstr(err.msg, wname));
    /* with the decoder present and equal: accepted; differing: refused */
    n = 0;
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->params[i];
        e[n++] = (StEntry){p->name, ST_F32, p->ndim, {p->shape[0], p->shape[1]}, model_params(a) + p->offset};
    }
    const float *word = model_param(a, "bert.embeddings.word_embeddings.weight");
    e[n++] = (StEntry){"cls.predictions.decoder.weight", ST_F32, 2, {TV, 16}, word};
    int64_t pos_ids[16];
    for (int i = 0; i < 16; i++) pos_ids[i] = i;
    e[n++] = (StEntry){"bert.embeddings.position_ids", ST_I64, 2, {1, 16}, pos_ids};
    assert_int_equal(st_write(path, e, n, &err), 0);
    if (model_load_safetensors(b, path, &err)) fail_msg("load with decoder: %s", err.msg);
    float *other = malloc(sizeof(float) * TV * 16);
    memcpy(other, word, sizeof(float) * TV * 16);
    other[5] += 1.0f;
    e[n - 2].data = other;
    assert_int_equal(st_write(path, e, n, &err), 0);
    assert_int_equal(model_load_safetensors(b, path, &err), -1);
    assert_non_null(strstr(err.msg, "cls.predictions.decoder.weight"));
    free(other);
    /* a NaN or Inf in the weights: refused at load, naming the tensor and the first bad element */
    n = 0;
    float *bad = malloc(sizeof(float) * t->total);
    memcpy(bad, model_params(a), sizeof(float) * t->total);
    const ParamInfo *pw = params_get(t, wname);
    bad[pw->offset + 2 * pw->shape[1] + 7] = INFINITY;
    bad[pw->offset + 3 * pw->shape[1]] = NAN;
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->params[i];
        e[n++] = (StEntry){p->name, ST_F32, p->ndim, {p->shape[0], p->shape[1]}, bad + p->offset};
    }
    assert_int_equal(st_write(path, e, n, &err), 0);
    memcpy(model_params(b), model_params(a), sizeof(float) * t->total);
    assert_int_equal(model_load_safetensors(b, path, &err), -1);
    assert_int_equal(err.kind, BP_ERR_CORRUPT);
    if (!strstr(err.msg, path) || !strstr(err.msg, "tensor 'bert.encoder.layer.1.output.dense.weight' element [2, 7] is inf"))
        fail_msg("message: %s", err.msg);
    assert_memory_equal(model_params(a), model_params(b), t->total * sizeof(float)); /* untouched */
    free(bad);
    /* a model with another shape refuses the file, naming the tensor */
    Config big = tiny_config(GELU_ERF, 0.1);
    big.model.hidden = 32;
    Model *c = model_create(&big, TV, &err);
    assert_non_null(c);
    assert_int_equal(model_load_safetensors(c, path, &err), -1);
    assert_non_null(strstr(err.msg, "bert.embeddings.word_embeddings.weight"));
    model_free(c);
    model_free(a);
    model_free(b);
}

/* model_backward without a model_forward before it (and a second backward after one) is a
 * programmer error: the process aborts instead of returning a wrong gradient silently */
static void expect_abort(void (*what)(void)) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(3);
        what();
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

static void backward_without_forward(void) {
    Model *m = tiny_model(GELU_ERF, 0.0, 1);
    model_backward(m);
}

static void second_backward(void) {
    Model *m = tiny_model(GELU_ERF, 0.0, 1);
    Batch b;
    random_batch(&b, 2, 8, 3, 1, 0);
    ModelStats st;
    fwd_bwd(m, &b, false, 0, 0, &st);
    model_backward(m);
}

static void test_backward_needs_forward(void **state) {
    (void)state;
    expect_abort(backward_without_forward);
    expect_abort(second_backward);
}

static void test_flops(void **state) {
    (void)state;
    Config cfg;
    config_defaults(&cfg);
    cfg.model.layers = 4;
    cfg.model.hidden = 256;
    cfg.model.heads = 4;
    cfg.model.intermediate = 1024;
    /* torch_bert.py's count for bert-mini at T 128, P 19 */
    double H = 256, I = 1024, T = 128, V = 30522;
    double per_tok = 4 * (2 * H * 3 * H + 2 * H * H + 4 * H * I + 4 * T * H);
    double want = 3 * (T * per_tok + 19 * (2 * H * H + 2 * H * V) + 2 * H * H);
    assert_true(fabs(model_flops_per_example(&cfg.model, 30522, 128, 19) - want) < 1e-6 * want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_table),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_gradcheck_erf),
        cmocka_unit_test(test_gradcheck_tanh),
        cmocka_unit_test(test_gradcheck_dropout),
        cmocka_unit_test(test_microbatch_split),
        cmocka_unit_test(test_repeatable),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_isa_levels),
        cmocka_unit_test(test_padding_ignored),
        cmocka_unit_test(test_plan),
        cmocka_unit_test(test_act_storage),
        cmocka_unit_test(test_stats_and_logits),
        cmocka_unit_test_setup_teardown(test_safetensors_roundtrip, setup_scratch, tu_dir_teardown),
        cmocka_unit_test(test_backward_needs_forward),
        cmocka_unit_test(test_flops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
