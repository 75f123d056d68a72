/* Unit tests for config.c: defaults, the YAML loader and every error class with its exact message,
 * presets, includes, --set overrides, config_resolve (derived fields, schedule segments, cross-key
 * checks), the resolved JSON (read back by the loader) and the --dry-run summary.
 * Runs from the repo root (tests/run_tests.sh cd's there): fixtures under tests/fixtures/config/,
 * scratch files in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "config_diff.h"
#include "testutil.h"

#define FIX "tests/fixtures/config/"

static int setup(void **state) {
    (void)state;
    return tu_dir_create("config", NULL);
}

/* Writes text as g_dir/name; returns the path (tu_path's). */
static const char *tmp_write(const char *name, const char *text) {
    const char *p = tu_path(name);
    tu_write_bytes(p, text, strlen(text));
    return p;
}

static const char *ONE_PHASE = "phases:\n  - {seq_len: 128, batch_size: 64, steps: 100}\n";

static void load_ok(Config *c, const char *path) {
    BpError err = {0};
    if (config_load(c, path, &err) != 0) {
        fprintf(stderr, "unexpected error: %s\n", err.msg);
        fail();
    }
}

static void load_text_ok(Config *c, const char *text) { load_ok(c, tmp_write("ok.yaml", text)); }

static void resolve_ok(Config *c) {
    BpError err = {0};
    if (config_resolve(c, &err) != 0) {
        fprintf(stderr, "unexpected error: %s\n", err.msg);
        fail();
    }
}

static void set_ok(Config *c, const char *assignment) {
    BpError err = {0};
    if (config_apply_override(c, assignment, &err) != 0) {
        fprintf(stderr, "unexpected error: %s\n", err.msg);
        fail();
    }
}

/* The file fails to load with "PATH" + tail as its message, exit status 2. */
static void expect_load_error(const char *text, const char *tail) {
    const char *path = tmp_write("bad.yaml", text);
    Config c;
    BpError err = {0};
    assert_int_equal(config_load(&c, path, &err), -1);
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
    char want[BP_ERR_LEN];
    snprintf(want, sizeof want, "%s%s", path, tail);
    assert_string_equal(err.msg, want);
}

/* A one-phase config loads, then the override fails with exactly msg. */
static void expect_set_error(const char *assignment, const char *msg) {
    Config c;
    load_text_ok(&c, ONE_PHASE);
    BpError err = {0};
    assert_int_equal(config_apply_override(&c, assignment, &err), -1);
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
    assert_string_equal(err.msg, msg);
}

static void expect_resolve_error(Config *c, const char *msg) {
    BpError err = {0};
    if (config_resolve(c, &err) != -1) {
        fprintf(stderr, "resolve passed, expected: %s\n", msg);
        fail();
    }
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
    assert_string_equal(err.msg, msg);
}

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

/* ------------------------------------------------------------------------------------------ */

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
    assert_string_equal(c.model.init_from, "");
    assert_int_equal(c.optimizer.name, OPT_LAMB);
    assert_true(c.optimizer.beta1 == 0.9 && c.optimizer.beta2 == 0.999);
    assert_true(c.optimizer.epsilon == 1e-6 && c.optimizer.weight_decay == 0.01);
    assert_true(c.optimizer.bias_correction);
    assert_true(c.optimizer.clip_grad_norm == 1.0);
    assert_int_equal(c.optimizer.n_exclude_from_weight_decay, 2);
    assert_string_equal(c.optimizer.exclude_from_weight_decay[0], "bias");
    assert_string_equal(c.optimizer.exclude_from_weight_decay[1], "LayerNorm");
    assert_int_equal(c.optimizer.n_exclude_from_layer_adaptation, 2);
    assert_string_equal(c.optimizer.exclude_from_layer_adaptation[0], "bias");
    assert_string_equal(c.optimizer.exclude_from_layer_adaptation[1], "LayerNorm");
    assert_true(c.optimizer.gamma_l == 0 && c.optimizer.gamma_u == 0);
    assert_int_equal(c.optimizer.lars_form, LARS_PAPER);
    assert_true(c.optimizer.momentum == 0.9 && c.optimizer.eta == 0.001);
    assert_true(c.schedule.lr == 1e-4 && c.schedule.warmup_ratio == 0.01);
    assert_int_equal(c.schedule.warmup_steps, -1);
    assert_true(c.schedule.decay_power == 1.0 && c.schedule.end_lr == 0.0);
    assert_int_equal(c.schedule.decay_from, DECAY_FROM_ZERO);
    assert_int_equal(c.schedule.form, SCHEDULE_BERT);
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
    for (int i = 0; i < CFG_MAX_PHASES; i++)
        assert_true(c.phases[i].lr == -1 && c.phases[i].warmup_steps == -1 &&
                    c.phases[i].warmup_ratio == -1 && !c.phases[i].restart_schedule);
    assert_string_equal(config_optimizer_name(OPT_ADAMW), "adamw");
}

/* The layout of issue 2, every key given. */
static void test_load_full_layout(void **state) {
    (void)state;
    Config c;
    load_text_ok(&c,
                 "model: {preset: bert-large, dropout: 0.1, gelu: tanh, init_from: null}\n"
                 "data: {vocab: v.txt, input: [a.txt, b.txt.gz], train: shards/train,\n"
                 "       eval: shards/eval, eval_fraction: 0.02, masked_lm_prob: 0.2,\n"
                 "       short_seq_prob: 0.0, whole_word_mask: true}\n"
                 "optimizer: {name: lars, beta1: 0.8, beta2: 0.99, epsilon: 1.0e-8, weight_decay: 0,\n"
                 "            bias_correction: false, clip_grad_norm: 0,\n"
                 "            exclude_from_weight_decay: [bias],\n"
                 "            exclude_from_layer_adaptation: [],\n"
                 "            gamma_l: 0.5, gamma_u: 10, lars_form: classic, momentum: 0.95, eta: 0.002}\n"
                 "schedule: {lr: 5.0e-3, warmup_ratio: 0.2, decay_power: 0.5, end_lr: 1e-5,\n"
                 "           decay_from: zero}\n"
                 "phases:\n"
                 "  - {seq_len: 128, batch_size: 32768, steps: 14063, max_predictions_per_seq: 20}\n"
                 "  - seq_len: 512\n"
                 "    batch_size: 32768\n"
                 "    steps: 1562\n"
                 "    max_predictions_per_seq: 80\n"
                 "training: {micro_batch: 16, seed: 18446744073709551615, run_dir: /abs/runs,\n"
                 "           checkpoint_every: 100, keep_checkpoints: 5, log_every: 10,\n"
                 "           eval_every: 500, threads: 2, trust_ratio_every: 0,\n"
                 "           skip_nonfinite: true, max_memory_gb: 20.5}\n");
    assert_string_equal(c.model.preset, "bert-large");
    assert_int_equal(c.model.layers, 24);
    assert_int_equal(c.model.gelu, GELU_TANH);
    assert_string_equal(c.model.init_from, "");
    assert_string_equal(c.data.vocab, tu_path("v.txt"));
    assert_int_equal(c.data.n_input, 2);
    assert_string_equal(c.data.input[1], tu_path("b.txt.gz"));
    assert_true(c.data.eval_fraction == 0.02 && c.data.masked_lm_prob == 0.2);
    assert_true(c.data.short_seq_prob == 0.0 && c.data.whole_word_mask);
    assert_int_equal(c.optimizer.name, OPT_LARS);
    assert_true(c.optimizer.beta1 == 0.8 && c.optimizer.beta2 == 0.99);
    assert_true(c.optimizer.epsilon == 1e-8 && c.optimizer.weight_decay == 0);
    assert_false(c.optimizer.bias_correction);
    assert_int_equal(c.optimizer.n_exclude_from_weight_decay, 1);
    assert_int_equal(c.optimizer.n_exclude_from_layer_adaptation, 0);
    assert_true(c.optimizer.gamma_l == 0.5 && c.optimizer.gamma_u == 10);
    assert_int_equal(c.optimizer.lars_form, LARS_CLASSIC);
    assert_true(c.optimizer.momentum == 0.95 && c.optimizer.eta == 0.002);
    assert_true(c.schedule.lr == 5e-3 && c.schedule.decay_power == 0.5);
    assert_true(c.schedule.end_lr == 1e-5);
    assert_int_equal(c.schedule.decay_from, DECAY_FROM_ZERO);
    assert_int_equal(c.n_phases, 2);
    assert_int_equal(c.phases[1].steps, 1562);
    assert_int_equal(c.training.micro_batch, 16);
    assert_true(c.training.seed == UINT64_MAX);
    assert_string_equal(c.training.run_dir, "/abs/runs");
    assert_true(c.training.skip_nonfinite);
    assert_true(c.training.max_memory_gb == 20.5);
    assert_int_equal(c.training.threads, 2);
    resolve_ok(&c);
    assert_int_equal(c.phases[0].accumulation, 2048);
    assert_int_equal(c.total_steps, 15625);
    assert_string_equal(c.source, tmp_write("ok.yaml", "")); /* same path as loaded */
}

static void test_presets(void **state) {
    (void)state;
    static const struct {
        const char *name;
        int l, h, a;
    } P[] = {{"bert-tiny", 2, 128, 2},   {"bert-mini", 4, 256, 4},   {"bert-small", 4, 512, 8},
             {"bert-medium", 8, 512, 8}, {"bert-base", 12, 768, 12}, {"bert-large", 24, 1024, 16}};
    for (size_t i = 0; i < sizeof P / sizeof P[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "model: {preset: %s}\n%s", P[i].name, ONE_PHASE);
        Config c;
        load_text_ok(&c, text);
        assert_int_equal(c.model.layers, P[i].l);
        assert_int_equal(c.model.hidden, P[i].h);
        assert_int_equal(c.model.heads, P[i].a);
        assert_int_equal(c.model.intermediate, 4 * P[i].h);
        resolve_ok(&c);
    }
    /* explicit keys win over the preset whatever their order in the file */
    Config c;
    load_text_ok(&c, "model:\n  layers: 3\n  preset: bert-large\n  heads: 8\n");
    assert_int_equal(c.model.layers, 3);
    assert_int_equal(c.model.hidden, 1024);
    assert_int_equal(c.model.heads, 8);
    assert_int_equal(c.model.intermediate, 4096);
    /* intermediate follows an explicit hidden (4H) unless it is given too */
    load_text_ok(&c, "model: {hidden: 64, heads: 2}\n");
    assert_int_equal(c.model.layers, 12);
    assert_int_equal(c.model.intermediate, 256);
    load_text_ok(&c, "model: {intermediate: 100, preset: bert-tiny}\n");
    assert_int_equal(c.model.intermediate, 100);
    assert_int_equal(c.model.hidden, 128);
    /* --set model.preset keeps what the file gave explicitly */
    load_text_ok(&c, "model: {preset: bert-base, layers: 6}\n");
    set_ok(&c, "model.preset=bert-tiny");
    assert_int_equal(c.model.layers, 6);
    assert_int_equal(c.model.hidden, 128);
    assert_int_equal(c.model.heads, 2);
    assert_int_equal(c.model.intermediate, 512);
}

static void test_includes_relative_paths(void **state) {
    (void)state;
    Config c;
    load_ok(&c, FIX "include/top.yaml");
    /* top.yaml's keys win over base.yaml's; base.yaml's remain where top.yaml is silent */
    assert_int_equal(c.optimizer.name, OPT_ADAMW);
    assert_true(c.optimizer.beta1 == 0.8);
    assert_true(c.schedule.lr == 2e-3);
    /* bert-mini from top.yaml, but hidden 512 given explicitly by base.yaml, heads 8 by top.yaml */
    assert_string_equal(c.model.preset, "bert-mini");
    assert_int_equal(c.model.layers, 4);
    assert_int_equal(c.model.hidden, 512);
    assert_int_equal(c.model.heads, 8);
    assert_int_equal(c.model.intermediate, 2048);
    /* each path is relative to the file that names it */
    assert_string_equal(c.data.vocab, FIX "include/vocab.txt");
    assert_int_equal(c.data.n_input, 3);
    assert_string_equal(c.data.input[0], FIX "include/corpus.txt");
    assert_string_equal(c.data.input[1], "/abs/other.txt");
    assert_string_equal(c.data.input[2], FIX "include/common/y.txt");
    assert_string_equal(c.data.train, FIX "include/shards/train");
    assert_string_equal(c.data.eval, FIX "include/common/shards/eval");
    assert_string_equal(c.training.run_dir, FIX "runs/base");
    /* top.yaml's phases replace base.yaml's */
    assert_int_equal(c.n_phases, 2);
    assert_int_equal(c.phases[0].seq_len, 128);
    assert_string_equal(c.source, FIX "include/top.yaml");
    /* model.vocab_size 0: counted from data.vocab (7 lines, the last without a newline) */
    resolve_ok(&c);
    assert_int_equal(c.model.vocab_size, 7);
    assert_int_equal(c.phases[0].accumulation, 8);
}

static void test_include_errors(void **state) {
    (void)state;
    Config c;
    BpError err = {0};
    assert_int_equal(config_load(&c, FIX "cycle/a.yaml", &err), -1);
    assert_string_equal(err.msg, FIX "cycle/b.yaml:2:7: base: include cycle: " FIX "cycle/a.yaml -> " FIX
                                 "cycle/b.yaml -> " FIX "cycle/a.yaml");
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
    assert_int_equal(config_load(&c, FIX "missing_base.yaml", &err), -1);
    assert_string_equal(err.msg, FIX "missing_base.yaml:3:7: base file " FIX
                                 "missing/nope.yaml cannot be read: No such file or directory");
    assert_int_equal(config_load(&c, FIX "nope.yaml", &err), -1);
    assert_string_equal(err.msg, FIX "nope.yaml: cannot read the config: No such file or directory");
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);

    /* a chain of 8 bases loads; 9 is refused */
    char text[64], name[32];
    for (int i = 0; i <= 9; i++) {
        snprintf(name, sizeof name, "chain%d.yaml", i);
        if (i < 9) snprintf(text, sizeof text, "base: chain%d.yaml\n", i + 1);
        else snprintf(text, sizeof text, "model: {layers: 7}\n");
        tmp_write(name, text);
    }
    load_ok(&c, tmp_write("top8.yaml", "base: chain2.yaml\n"));
    assert_int_equal(c.model.layers, 7);
    const char *top9 = tmp_write("top9.yaml", "base: chain1.yaml\n");
    assert_int_equal(config_load(&c, top9, &err), -1);
    char want[BP_ERR_LEN];
    snprintf(want, sizeof want, "%s/chain8.yaml:1:7: base: includes nest deeper than 8 files (%s/chain9.yaml)",
             g_dir, g_dir);
    assert_string_equal(err.msg, want);
    /* a file that names itself */
    const char *self = tmp_write("self.yaml", "base: ./self.yaml\n");
    assert_int_equal(config_load(&c, self, &err), -1);
    snprintf(want, sizeof want, "%s:1:7: base: include cycle: %s -> %s", self, self, self);
    assert_string_equal(err.msg, want);
}

/* Every error class of the loader, with its exact message. */
static void test_load_errors(void **state) {
    (void)state;
    expect_load_error("optimizer:\n  beta1: 0.9\n  beta_1: 0.8\n",
                      ":3:3: unknown key 'optimizer.beta_1' (did you mean 'beta1'?)");
    expect_load_error("schedule: {peak: 1}\n",
                      ":1:12: unknown key 'schedule.peak' (known keys: lr, warmup_steps, "
                      "warmup_ratio, decay_power, end_lr, decay_from, form)");
    expect_load_error("optimzer: {}\n", ":1:1: unknown key 'optimzer' (did you mean 'optimizer'?)");
    expect_load_error("phases:\n  - {seq_len: 128, batch_size: 8, steps: 1, seqlen: 3}\n",
                      ":2:45: unknown key 'phases[0].seqlen' (did you mean 'seq_len'?)");
    expect_load_error("optimizer:\n  beta1: 1.5\n", ":2:10: optimizer.beta1 = 1.5 is out of range [0, 1)");
    expect_load_error("optimizer: {beta2: -0.1}\n",
                      ":1:20: optimizer.beta2 = -0.1 is out of range [0, 1)");
    expect_load_error("schedule: {lr: 0}\n", ":1:16: schedule.lr = 0 is out of range (0, 1000]");
    expect_load_error("schedule: {warmup_steps: -2}\n",
                      ":1:26: schedule.warmup_steps = -2 is out of range [0, 2147483647], or -1 for unset");
    expect_load_error("phases:\n  - {seq_len: 128, batch_size: 8, steps: 1}\n  - {seq_len: abc}\n",
                      ":3:15: phases[1].seq_len must be an integer, got 'abc'");
    expect_load_error("model: {hidden: 7.5}\n", ":1:17: model.hidden must be an integer, got '7.5'");
    expect_load_error("optimizer: {epsilon: 1e-6x}\n",
                      ":1:22: optimizer.epsilon must be a number, got '1e-6x'");
    expect_load_error("optimizer: {epsilon: .nan}\n",
                      ":1:22: optimizer.epsilon must be a number, got '.nan'");
    expect_load_error("data: {lowercase: yes}\n",
                      ":1:19: data.lowercase must be true or false, got 'yes'");
    expect_load_error("data: {lowercase: True}\n",
                      ":1:19: data.lowercase must be true or false, got 'True'");
    expect_load_error("optimizer: {name: sgd}\n",
                      ":1:19: optimizer.name must be one of lamb, lars, adam, adamw, got 'sgd'");
    expect_load_error("model: {gelu: relu}\n", ":1:15: model.gelu must be one of erf, tanh, got 'relu'");
    expect_load_error("optimizer: {lars_form: Paper}\n",
                      ":1:24: optimizer.lars_form must be one of paper, classic, got 'Paper'");
    expect_load_error("schedule: {decay_from: end}\n",
                      ":1:24: schedule.decay_from must be one of warmup, zero, got 'end'");
    expect_load_error("model: {preset: bert-huge}\n",
                      ":1:17: model.preset must be one of bert-tiny, bert-mini, bert-small, "
                      "bert-medium, bert-base, bert-large, got 'bert-huge'");
    expect_load_error("model:\n  hidden: 12\n  hidden: 13\n",
                      ":3:3: duplicate key 'model.hidden' (first given at line 2)");
    expect_load_error("model: {}\nmodel: {}\n", ":2:1: duplicate key 'model' (first given at line 1)");
    expect_load_error("model:\n  hidden: {a: 1}\n", ":2:11: model.hidden must be an integer, got a mapping");
    expect_load_error("data: {vocab: [a]}\n", ":1:15: data.vocab must be a path, got a list");
    expect_load_error("model: 3\n", ":1:8: model must be a mapping of keys, got a scalar");
    expect_load_error("training: [1]\n", ":1:11: training must be a mapping of keys, got a list");
    expect_load_error("data: {input: corpus.txt}\n", ":1:15: data.input must be a list of paths, got a scalar");
    expect_load_error("phases: {seq_len: 128}\n", ":1:9: phases must be a list of mappings, got a mapping");
    expect_load_error("phases: [128]\n",
                      ":1:10: phases[0] must be a mapping (seq_len, batch_size, steps, ...), got a scalar");
    expect_load_error("phases:\n  - {seq_len: 128, batch_size: 256}\n",
                      ":2:5: phases[0] has no steps (every phase needs seq_len, batch_size and steps)");
    expect_load_error("phases: [{accumulation: 4}]\n",
                      ":1:25: phases[0].accumulation is derived by config_resolve and cannot be set");
    expect_load_error("total_steps: 5\n", ":1:14: total_steps is derived by config_resolve and cannot be set");
    expect_load_error("optimizer: {exclude_from_weight_decay: [bias, '']}\n",
                      ":1:47: optimizer.exclude_from_weight_decay[1] must not be empty");
    expect_load_error("optimizer: {exclude_from_weight_decay: [[bias]]}\n",
                      ":1:41: optimizer.exclude_from_weight_decay[0] must be a string, got a list");
    expect_load_error("base: [a.yaml]\n", ":1:7: base must be the path of another config, got a list");
    /* YAML syntax errors carry libyaml's position */
    expect_load_error("model: [1, 2\n",
                      ":2:1: YAML syntax error: did not find expected ',' or ']' while parsing a flow "
                      "sequence (from line 1)");
    expect_load_error("model:\n  hidden: 1\n   x: 2\n",
                      ":3:5: YAML syntax error: mapping values are not allowed in this context");
    expect_load_error("model: {gelu: \"erf}\n",
                      ":2:1: YAML syntax error: found unexpected end of stream while scanning a quoted "
                      "scalar (from line 1)");
    /* anchors, aliases and tags are refused */
    expect_load_error("model: &m {layers: 2}\n",
                      ":1:8: YAML anchors (&m) are not supported: write the value out in full");
    expect_load_error("model: {layers: *x}\n",
                      ":1:17: YAML aliases (*x) are not supported: write the value out in full");
    expect_load_error("model: {layers: !!int 2}\n",
                      ":1:17: YAML tags (tag:yaml.org,2002:int) are not supported");
    /* huge numbers are range errors */
    expect_load_error("phases: [{seq_len: 128, batch_size: 8, steps: 99999999999999999999}]\n",
                      ":1:47: phases[0].steps = 99999999999999999999 is out of range [1, 2147483647]");
    expect_load_error("schedule: {lr: 1e400}\n", ":1:16: schedule.lr = 1e400 is out of range (0, 1000]");
    expect_load_error("schedule: {lr: 1e-400}\n", ":1:16: schedule.lr = 1e-400 is out of range (0, 1000]");
    expect_load_error("training: {seed: 18446744073709551616}\n",
                      ":1:18: training.seed = 18446744073709551616 is out of range [0, 18446744073709551615]");
    expect_load_error("training: {seed: -1}\n",
                      ":1:18: training.seed must be a non-negative integer, got '-1'");
    /* the file's top level */
    expect_load_error("", ": the file is empty: a config is a mapping with sections model, data, "
                          "optimizer, schedule, phases, training");
    expect_load_error("# only a comment\n", ": the file is empty: a config is a mapping with sections "
                                           "model, data, optimizer, schedule, phases, training");
    expect_load_error("hello\n", ":1:1: the top level must be a mapping of sections (model, data, "
                                 "optimizer, schedule, phases, training), got a scalar");
    expect_load_error("- a\n- b\n", ":1:1: the top level must be a mapping of sections (model, data, "
                                    "optimizer, schedule, phases, training), got a list");
    expect_load_error("model: {}\n---\nmodel: {}\n",
                      ":2:1: a second YAML document ('---'): a config holds exactly one");
    expect_load_error("model: {layers: \"1\\02\"}\n", ":1:17: model.layers contains a NUL byte");
    expect_load_error("model:\n  preset: \xff\n", ":2:11: invalid input: invalid leading UTF-8 octet (byte 0xff)");
}

static void test_load_accepts(void **state) {
    (void)state;
    Config c;
    /* an empty section, an explicit null path, an empty list, a quoted number, comments, block
       and flow styles mixed, keys in any order */
    load_text_ok(&c, "# comment\nmodel:\ndata: {vocab: ~, input: []}  # trailing\n"
                     "optimizer:\n  exclude_from_layer_adaptation: []\n  beta1: '0.5'\n"
                     "training: {seed: 0, run_dir: \"runs/x y\"}\n");
    assert_string_equal(c.data.vocab, "");
    assert_int_equal(c.data.n_input, 0);
    assert_int_equal(c.optimizer.n_exclude_from_layer_adaptation, 0);
    assert_int_equal(c.optimizer.n_exclude_from_weight_decay, 2);
    assert_true(c.optimizer.beta1 == 0.5);
    assert_int_equal(c.training.seed, 0);
    assert_string_equal(c.training.run_dir, tu_path("runs/x y"));
    /* integers in other spellings are not integers; a number may be an integer */
    load_text_ok(&c, "optimizer: {clip_grad_norm: 2, weight_decay: +1.5E-2}\nmodel: {layers: +3}\n");
    assert_true(c.optimizer.clip_grad_norm == 2.0 && c.optimizer.weight_decay == 0.015);
    assert_int_equal(c.model.layers, 3);
    /* the loader starts from the defaults, whatever the Config held */
    memset(&c, 0x5a, sizeof c);
    load_text_ok(&c, ONE_PHASE);
    assert_int_equal(c.training.micro_batch, 8);
    assert_int_equal(c.n_phases, 1);
    assert_int_equal(c.phases[0].lr, -1);
    resolve_ok(&c);
}

static void test_overrides(void **state) {
    (void)state;
    Config c;
    load_text_ok(&c, "phases:\n  - {seq_len: 128, batch_size: 64, steps: 100}\n"
                     "  - {seq_len: 256, batch_size: 64, steps: 10}\n");
    set_ok(&c, "optimizer.beta1=0.5");
    assert_true(c.optimizer.beta1 == 0.5);
    set_ok(&c, "optimizer.name=adam");
    assert_int_equal(c.optimizer.name, OPT_ADAM);
    set_ok(&c, "phases.1.seq_len=512");
    assert_int_equal(c.phases[1].seq_len, 512);
    set_ok(&c, "phases[0].steps=7");
    assert_int_equal(c.phases[0].steps, 7);
    set_ok(&c, "phases.1={restart_schedule: true, lr: 1e-3}");
    assert_true(c.phases[1].restart_schedule && c.phases[1].lr == 1e-3);
    assert_int_equal(c.phases[1].seq_len, 512); /* a phase mapping updates, it does not replace */
    set_ok(&c, "data.input=[x.txt, /y.txt]");
    assert_int_equal(c.data.n_input, 2);
    assert_string_equal(c.data.input[0], "x.txt"); /* relative to the working directory */
    set_ok(&c, "data.vocab=./a/../v.txt");
    assert_string_equal(c.data.vocab, "v.txt");
    set_ok(&c, "model.init_from=");
    assert_string_equal(c.model.init_from, "");
    set_ok(&c, "training={micro_batch: 4, seed: 7}");
    assert_int_equal(c.training.micro_batch, 4);
    assert_int_equal(c.training.seed, 7);
    set_ok(&c, "training.skip_nonfinite=true");
    assert_true(c.training.skip_nonfinite);
    set_ok(&c, "model.heads=4");
    set_ok(&c, "model.hidden=256");
    assert_int_equal(c.model.intermediate, 1024);
    resolve_ok(&c);
    assert_int_equal(c.phases[1].segment_start, 7);
    /* replacing the whole list */
    set_ok(&c, "phases=[{seq_len: 64, batch_size: 8, steps: 3}]");
    assert_int_equal(c.n_phases, 1);
    assert_int_equal(c.phases[0].seq_len, 64);
    assert_int_equal(c.phases[1].seq_len, 0);

    expect_set_error("optimizer.beta1=2", "--set optimizer.beta1=2: optimizer.beta1 = 2 is out of range [0, 1)");
    expect_set_error("optimizer.beta_1=0.9",
                     "--set optimizer.beta_1=0.9: unknown key 'optimizer.beta_1' (did you mean 'beta1'?)");
    expect_set_error("optimzer.beta1=0.9",
                     "--set optimzer.beta1=0.9: unknown section 'optimzer' (did you mean 'optimizer'?)");
    expect_set_error("phases.0.seq_len=abc",
                     "--set phases.0.seq_len=abc: phases[0].seq_len must be an integer, got 'abc'");
    expect_set_error("phases.1.steps=5",
                     "--set phases.1.steps=5: phase 1 does not exist: the config has 1 phase(s), numbered from 0");
    expect_set_error("phases.x.steps=5", "--set phases.x.steps=5: phases.N.key needs a phase number N, got 'x'");
    expect_set_error("phases.0.step=5",
                     "--set phases.0.step=5: unknown key 'phases[0].step' (did you mean 'steps'?)");
    expect_set_error("model.hidden", "--set model.hidden: expected section.key=value (e.g. optimizer.beta1=0.9)");
    expect_set_error("=3", "--set =3: expected section.key=value (e.g. optimizer.beta1=0.9)");
    expect_set_error("model.hidden={a: 1}", "--set model.hidden={a: 1}: model.hidden must be an integer, got a mapping");
    expect_set_error("model.layers=[", "--set model.layers=[: YAML syntax error: did not find expected node "
                                       "content while parsing a flow node");
    expect_set_error("model.layers=*a", "--set model.layers=*a: YAML aliases (*a) are not supported: write "
                                        "the value out in full");
    expect_set_error("data.whole_word_mask=yes",
                     "--set data.whole_word_mask=yes: data.whole_word_mask must be true or false, got 'yes'");
    expect_set_error("base=x.yaml", "--set base=x.yaml: base cannot be set with --set");
    expect_set_error("world_size=4", "--set world_size=4: world_size is derived by the program and cannot be set");
    expect_set_error("phases.0.first_step=4",
                     "--set phases.0.first_step=4: phases[0].first_step is derived by config_resolve and cannot be set");
    expect_set_error("model.layers.x=1",
                     "--set model.layers.x=1: unknown key 'model.layers.x' (did you mean 'layers'?)");

    /* config_load_cli: defaults + file + overrides in order + world size + resolve */
    const char *path = tmp_write("cli.yaml", ONE_PHASE);
    char *sets[] = {"training.micro_batch=4", "training.micro_batch=2", "schedule.lr=3e-4"};
    BpError err = {0};
    assert_int_equal(config_load_cli(&c, path, sets, 3, 4, &err), 0);
    assert_int_equal(c.training.micro_batch, 2);
    assert_int_equal(c.world_size, 4);
    assert_int_equal(c.phases[0].accumulation, 8);
    assert_true(c.phases[0].segment_lr == 3e-4);
    char *bad[] = {"schedule.lr=-1"};
    assert_int_equal(config_load_cli(&c, path, bad, 1, 1, &err), -1);
    assert_string_equal(err.msg, "--set schedule.lr=-1: schedule.lr = -1 is out of range (0, 1000]");
    assert_int_equal(config_load_cli(&c, path, NULL, 0, 3, &err), -1);
    assert_string_equal(err.msg, "phases[0]: batch_size 64 is not divisible by training.micro_batch 8 x 3 rank(s)");
}

static void test_resolve_errors(void **state) {
    (void)state;
    Config c;
    config_defaults(&c);
    expect_resolve_error(&c, "no phases: the config needs at least one entry under phases: "
                             "(seq_len, batch_size, steps)");
#define RESOLVE_ERR(stmt, msg)        \
    do {                              \
        two_phase_config(&c);         \
        stmt;                         \
        expect_resolve_error(&c, msg); \
    } while (0)
    RESOLVE_ERR(c.model.heads = 7, "model.hidden 768 is not divisible by model.heads 7");
    RESOLVE_ERR(c.phases[1].seq_len = 1024, "phases[1]: seq_len 1024 is above model.max_position 512");
    RESOLVE_ERR(c.phases[0].seq_len = 4, "phases[0].seq_len = 4 is out of range [8, 65536]");
    RESOLVE_ERR(c.phases[0].batch_size = 1004,
                "phases[0]: batch_size 1004 is not divisible by training.micro_batch 8 x 1 rank(s)");
    RESOLVE_ERR(c.world_size = 3,
                "phases[0]: batch_size 32768 is not divisible by training.micro_batch 8 x 3 rank(s)");
    RESOLVE_ERR(c.phases[1].micro_batch = 24,
                "phases[1]: batch_size 32768 is not divisible by phases[1].micro_batch 24 x 1 rank(s)");
    RESOLVE_ERR(c.phases[0].micro_batch = -1, "phases[0].micro_batch = -1 is out of range [0, 1048576]");
    RESOLVE_ERR(c.world_size = 0, "world_size = 0 is out of range [1, 1048576]");
    RESOLVE_ERR(c.phases[1].max_predictions_per_seq = 513,
                "phases[1]: max_predictions_per_seq 513 is above seq_len 512");
    RESOLVE_ERR(c.phases[1].steps = 0, "phases[1].steps = 0 is out of range [1, 2147483647]");
    RESOLVE_ERR(c.schedule.lr = 0, "schedule.lr = 0 is out of range (0, 1000]");
    RESOLVE_ERR(c.schedule.lr = NAN, "schedule.lr = nan is out of range (0, 1000]");
    RESOLVE_ERR(c.schedule.lr = INFINITY, "schedule.lr = inf is out of range (0, 1000]");
    RESOLVE_ERR(c.schedule.warmup_steps = 15625,
                "phases[0]: warmup of 15625 steps is not shorter than its schedule segment (15625 "
                "steps, phases[0..1]); the decay needs at least one step");
    RESOLVE_ERR(c.optimizer.beta1 = 1.0, "optimizer.beta1 = 1 is out of range [0, 1)");
    RESOLVE_ERR(c.optimizer.beta2 = -0.5, "optimizer.beta2 = -0.5 is out of range [0, 1)");
    RESOLVE_ERR(c.optimizer.epsilon = 0, "optimizer.epsilon = 0 is out of range (0, 1)");
    RESOLVE_ERR(c.optimizer.weight_decay = -1e-3, "optimizer.weight_decay = -0.001 is out of range [0, 10]");
    RESOLVE_ERR(c.model.dropout = 1.0, "model.dropout = 1 is out of range [0, 1)");
    RESOLVE_ERR(c.model.attention_dropout = -0.1, "model.attention_dropout = -0.1 is out of range [0, 1)");
    RESOLVE_ERR(c.data.masked_lm_prob = 0, "data.masked_lm_prob = 0 is out of range (0, 1)");
    RESOLVE_ERR(c.data.short_seq_prob = 1, "data.short_seq_prob = 1 is out of range [0, 1)");
    RESOLVE_ERR(c.data.eval_fraction = 1, "data.eval_fraction = 1 is out of range [0, 1)");
    RESOLVE_ERR((c.optimizer.gamma_l = 2, c.optimizer.gamma_u = 1),
                "optimizer.gamma_l 2 is above optimizer.gamma_u 1: the trust ratio clamp "
                "min(max(z, gamma_l), gamma_u) needs gamma_l <= gamma_u");
    RESOLVE_ERR(c.training.keep_checkpoints = 0, "training.keep_checkpoints = 0 is out of range [1, 1000000]");
    RESOLVE_ERR(c.training.micro_batch = 0, "training.micro_batch = 0 is out of range [1, 1048576]");
    RESOLVE_ERR(c.training.run_dir[0] = 0, "training.run_dir must not be empty");
    RESOLVE_ERR(c.model.gelu = (GeluKind)5, "model.gelu has no valid value (5)");
    RESOLVE_ERR(strcpy(c.model.preset, "bert-xl"), "model.preset = 'bert-xl' is not a preset");
    RESOLVE_ERR(c.phases[1].lr = 1e-3,
                "phases[1] sets lr but not restart_schedule: true; a phase without it continues the "
                "running schedule, so its own lr/warmup would be ignored. HINT: add "
                "restart_schedule: true to re-warm there, or set schedule.lr");
    RESOLVE_ERR(c.phases[1].warmup_steps = 10,
                "phases[1] sets warmup_steps but not restart_schedule: true; a phase without it "
                "continues the running schedule, so its own lr/warmup would be ignored. HINT: add "
                "restart_schedule: true to re-warm there, or set schedule.warmup_steps / "
                "schedule.warmup_ratio");
    RESOLVE_ERR((c.phases[1].restart_schedule = true, c.phases[1].warmup_steps = 10,
                 c.phases[1].warmup_ratio = 0.1),
                "phases[1] sets both warmup_steps and warmup_ratio: give one");
    RESOLVE_ERR((c.phases[1].restart_schedule = true, c.phases[1].lr = 1e-3, c.schedule.end_lr = 2e-3),
                "schedule.end_lr 0.002 is above the peak lr 0.001 of the schedule segment starting at phases[1]");
    RESOLVE_ERR(c.n_phases = 9, "9 phases: at most 8 are supported");
#undef RESOLVE_ERR
}

static void test_schedule_segments(void **state) {
    (void)state;
    Config c;
    /* one schedule over both phases */
    two_phase_config(&c);
    resolve_ok(&c);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(c.phases[i].segment_start, 0);
        assert_int_equal(c.phases[i].segment_steps, 15625);
        assert_int_equal(c.phases[i].segment_warmup, 3125);
        assert_true(c.phases[i].segment_lr == 5e-3);
    }
    assert_int_equal(c.phases[1].first_step, 14063);
    assert_int_equal(c.total_steps, 15625);

    /* four phases, a restart at phase 2 with its own lr and warmup ratio */
    config_defaults(&c);
    c.n_phases = 4;
    int steps[4] = {100, 50, 40, 10};
    for (int i = 0; i < 4; i++) {
        c.phases[i].seq_len = 128;
        c.phases[i].batch_size = 64;
        c.phases[i].steps = steps[i];
    }
    c.schedule.lr = 1e-3;
    c.schedule.warmup_steps = 15;
    c.phases[2].restart_schedule = true;
    c.phases[2].lr = 5e-4;
    c.phases[2].warmup_ratio = 0.25;
    resolve_ok(&c);
    long first[4] = {0, 100, 150, 190};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(c.phases[i].first_step, first[i]);
        assert_int_equal(c.phases[i].accumulation, 8);
        /* the default max_predictions_per_seq: ceil(0.15 * 128) */
        assert_int_equal(c.phases[i].max_predictions_per_seq, 20);
    }
    assert_int_equal(c.phases[1].segment_start, 0);
    assert_int_equal(c.phases[1].segment_steps, 150);
    assert_int_equal(c.phases[1].segment_warmup, 15);
    assert_true(c.phases[1].segment_lr == 1e-3);
    assert_int_equal(c.phases[3].segment_start, 150);
    assert_int_equal(c.phases[3].segment_steps, 50);
    assert_int_equal(c.phases[3].segment_warmup, 13); /* 0.25 * 50 = 12.5, rounded half up */
    assert_true(c.phases[3].segment_lr == 5e-4);
    assert_int_equal(c.total_steps, 200);

    /* a restart without its own values falls back to the schedule section's */
    c.phases[2].lr = -1;
    c.phases[2].warmup_ratio = -1;
    c.schedule.warmup_steps = -1;
    c.schedule.warmup_ratio = 0.1;
    resolve_ok(&c);
    assert_int_equal(c.phases[0].segment_warmup, 15);
    assert_int_equal(c.phases[2].segment_warmup, 5);
    assert_true(c.phases[2].segment_lr == 1e-3);
    /* warmup 0 is allowed (decay from the first step) */
    c.schedule.warmup_ratio = 0;
    resolve_ok(&c);
    assert_int_equal(c.phases[2].segment_warmup, 0);
}

/* The resolved JSON names every key and reads back (config_load) to the same values. */
static void test_json_round_trip(void **state) {
    (void)state;
    Config c;
    load_ok(&c, FIX "include/top.yaml");
    set_ok(&c, "phases.1={restart_schedule: true, lr: 1.5e-3, warmup_steps: 3}");
    set_ok(&c, "training.seed=18446744073709551615");
    set_ok(&c, "schedule.end_lr=1e-7");
    resolve_ok(&c);
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    assert_non_null(mem);
    config_write_json(&c, mem);
    fclose(mem);
    static const char *const want[] = {
        "\"resolved\": true", "\"total_steps\": 120", "\"preset\": \"bert-mini\"", "\"hidden\": 512",
        "\"vocab_size\": 7", "\"gelu\": \"erf\"", "\"name\": \"adamw\"", "\"beta1\": 0.8",
        "\"epsilon\": 1e-06", "\"end_lr\": 1e-07", "\"lars_form\": \"paper\"",
        "\"decay_from\": \"zero\"", "\"seed\": 18446744073709551615",
        "\"exclude_from_weight_decay\": [\"bias\", \"LayerNorm\"]",
        "\"vocab\": \"" FIX "include/vocab.txt\"", "\"accumulation\": 8", "\"first_step\": 100",
        "\"segment_start\": 100", "\"segment_warmup\": 3", "\"segment_lr\": 0.0015",
        "\"max_memory_gb\": 0", "\"world_size\": 1"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!strstr(text, want[i])) {
            fprintf(stderr, "JSON lacks %s:\n%s", want[i], text);
            fail();
        }
    }
    /* read it back from another directory: paths stay as written (resolved: true) */
    const char *path = tmp_write("resolved.json", text);
    Config back;
    load_ok(&back, path);
    resolve_ok(&back);
    char *text2 = NULL;
    size_t len2 = 0;
    mem = open_memstream(&text2, &len2);
    config_write_json(&back, mem);
    fclose(mem);
    /* identical except for "source" */
    char *s1 = strstr(text, "\"world_size\""), *s2 = strstr(text2, "\"world_size\"");
    assert_non_null(s1);
    assert_non_null(s2);
    assert_string_equal(s1, s2);
    free(text);
    free(text2);
}

/* config_load_resolved (a checkpoint's config.json) gives back the same resolved configuration,
 * source and world size included, and refuses what a config file may have but a resolved one not. */
static void test_load_resolved(void **state) {
    (void)state;
    Config c, back;
    load_ok(&c, FIX "include/top.yaml");
    set_ok(&c, "phases.1={restart_schedule: true, lr: 1.5e-3, warmup_steps: 3}");
    set_ok(&c, "data.input=[a.txt, \"b c.txt\"]");
    c.world_size = 2;
    resolve_ok(&c);
    char *text = NULL, *text2 = NULL;
    size_t len = 0, len2 = 0;
    FILE *mem = open_memstream(&text, &len);
    config_write_json(&c, mem);
    fclose(mem);
    BpError err = {0};
    if (config_load_resolved(&back, text, len, "x.json", &err) != 0) fail_msg("%s", err.msg);
    mem = open_memstream(&text2, &len2);
    config_write_json(&back, mem);
    fclose(mem);
    assert_string_equal(text2, text);
    assert_int_equal(back.world_size, 2);
    assert_string_equal(back.source, c.source);
    free(text2);
    free(text);

    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"{\"model\": {\"hidden\": 64}}", "x.json:1:1: not a resolved configuration (no top-level resolved: true)"},
        {"{\"resolved\": true, \"base\": \"other.yaml\"}", "x.json:1:28: base: is not allowed in a resolved configuration"},
        {"{\"resolved\": true, \"model\": {\"vocab_size\": 0}}",
         "x.json: model.vocab_size is 0: a resolved configuration gives the vocab size"},
        {"{\"resolved\": true, \"model\": {\"vocab_size\": 9}}", "x.json: no phases"},
    };
    for (size_t i = 0; i < BP_ARRAY_LEN(bad); i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(config_load_resolved(&back, bad[i].text, strlen(bad[i].text), "x.json", &err), -1);
        if (strncmp(err.msg, bad[i].msg, strlen(bad[i].msg)) != 0) fail_msg("'%s' lacks '%s'", err.msg, bad[i].msg);
    }
}

/* The resume-safe flag of the key table, by flattened JSON key. */
static void test_resume_safe_keys(void **state) {
    (void)state;
    static const char *const safe[] = {"training.log_every", "training.threads", "training.run_dir",
                                       "training.micro_batch", "data.eval", "data.input", "model.init_from",
                                       "phases.0.micro_batch", "phases.12.accumulation", "world_size", "source"};
    static const char *const unsafe[] = {"model.hidden", "optimizer.beta1", "training.seed", "phases.0.seq_len",
                                         "phases.x.micro_batch", "phases.0", "total_steps", "resolved",
                                         "data.masked_lm_prob", "nonsense.key", ""};
    for (size_t i = 0; i < BP_ARRAY_LEN(safe); i++)
        if (!config_key_resume_safe(safe[i])) fail_msg("%s should be resume-safe", safe[i]);
    for (size_t i = 0; i < BP_ARRAY_LEN(unsafe); i++)
        if (config_key_resume_safe(unsafe[i])) fail_msg("%s should not be resume-safe", unsafe[i]);
}

typedef struct {
    int n;
    char log[512];
} DiffLog;

static void log_diff(const char *key, const char *old_value, const char *new_value, void *ctx) {
    DiffLog *d = ctx;
    size_t used = strlen(d->log);
    snprintf(d->log + used, sizeof d->log - used, "%s%s:%s>%s", d->n++ ? " " : "", key, old_value, new_value);
}

/* config_json_diff: flattened keys, lists of scalars as one value, hostile text refused, linear. */
static void test_json_diff(void **state) {
    (void)state;
    DiffLog d = {0, ""};
    BpError err = {0};
    const char *a = "{\"m\": {\"h\": 32, \"x\": [\"bias\", \"LayerNorm\"]}, \"p\": [{\"s\": 1}, {\"s\": 2}], \"gone\": 1}";
    const char *b = "{\"m\": {\"h\": 64, \"x\": [\"bias\"]}, \"p\": [{\"s\": 1}, {\"s\": 3}], \"new\": 2}";
    assert_int_equal(config_json_diff(a, b, log_diff, &d, &err), 5);
    assert_string_equal(d.log, "m.h:32>64 m.x:[bias, LayerNorm]>[bias] p.1.s:2>3 gone:1>(absent) new:(absent)>2");

    char deep[202];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    deep[200] = 0;
    const char *const hostile[] = {"{a: &x [1, 2], b: *x}", "{a: *x}", deep, "{a: [1, 2"};
    for (size_t i = 0; i < BP_ARRAY_LEN(hostile); i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(config_json_diff(hostile[i], b, log_diff, &d, &err), -1);
        assert_int_equal(err.kind, BP_ERR_CORRUPT);
    }
    /* a key given twice would hide a change behind its twin: refused on either side (fuzzing) */
    const char *twice[] = {"{\"a\": 1, \"a\": 2}", "{\"a.b\": 1, \"a\": {\"b\": 2}}"};
    for (size_t i = 0; i < BP_ARRAY_LEN(twice); i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(config_json_diff(twice[i], "{\"a\": 1}", log_diff, &d, &err), -1);
        assert_int_equal(err.kind, BP_ERR_CORRUPT);
        assert_int_equal(config_json_diff("{\"a\": 1}", twice[i], log_diff, &d, &err), -1);
    }
    deep[64] = 0; /* 32 levels are within the bound */
    memset(deep, '[', 32);
    memset(deep + 32, ']', 32);
    assert_true(config_json_diff(deep, deep, log_diff, &d, &err) == 0);

    /* 200000 keys on each side, all different: linear takes well under a second (a few under the
       sanitizers); a quadratic comparison (2e10 key comparisons) takes minutes */
    size_t n = 200000, cap = n * 24 + 16;
    char *x = malloc(cap), *y = malloc(cap);
    assert_non_null(x);
    assert_non_null(y);
    size_t ox = (size_t)snprintf(x, cap, "{"), oy = (size_t)snprintf(y, cap, "{");
    for (size_t i = 0; i < n; i++) {
        ox += (size_t)snprintf(x + ox, cap - ox, "%s\"k%zu\": %zu", i ? ", " : "", i, i);
        oy += (size_t)snprintf(y + oy, cap - oy, "%s\"k%zu\": %zu", i ? ", " : "", n - 1 - i, i);
    }
    snprintf(x + ox, cap - ox, "}");
    snprintf(y + oy, cap - oy, "}");
    DiffLog quiet = {0, ""};
    double t0 = bp_now();
    int differ = config_json_diff(x, y, log_diff, &quiet, &err);
    double dt = bp_now() - t0;
    assert_int_equal(differ, (int)n); /* y[k_j] = n - 1 - j != j for even n */
    if (dt > 15.0) fail_msg("diff of %zu keys took %.2f s", n, dt);
    free(x);
    free(y);
}

static void test_summary(void **state) {
    (void)state;
    Config c;
    BpError err = {0};
    assert_int_equal(config_load_cli(&c, "configs/64k_32k.yaml", NULL, 0, 1, &err), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    config_write_summary(&c, 335141930, mem);
    fclose(mem);
    static const char *const want[] = {
        "configs/64k_32k.yaml", "bert-large: L=24 H=1024 A=16 I=4096, vocab 30522",
        "335141930 parameters (335.1M)", "optimizer  lamb", "power 0.5",
        "65536 = 32 x 2048 x 1", "32768 = 8 x 4096 x 1", "8599 optimizer steps"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i])) {
            fprintf(stderr, "summary lacks '%s':\n%s", want[i], text);
            fail();
        }
    /* phase lines: phase, seq_len, batch, steps, first step, max_pred, peak lr, warmup, re-warm */
    assert_non_null(strstr(text, "  7037           0        20  0.006          2000  no\n"));
    assert_non_null(strstr(text, "  1562        7037        80  0.004           199  yes\n"));
    free(text);
}

/* configs/README.md has a table row for every key the JSON names. */
static void test_readme_documents_every_key(void **state) {
    (void)state;
    Config c;
    two_phase_config(&c);
    resolve_ok(&c);
    char *json = NULL, *readme = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&json, &len);
    config_write_json(&c, mem);
    fclose(mem);
    FILE *f = fopen("configs/README.md", "rb");
    assert_non_null(f);
    readme = calloc(1, 1 << 17);
    assert_non_null(readme);
    assert_true(fread(readme, 1, (1 << 17) - 1, f) > 0);
    fclose(f);
    int keys = 0;
    for (char *p = json; (p = strchr(p, '"')) != NULL;) {
        char *end = strchr(p + 1, '"');
        assert_non_null(end);
        if (end[1] == ':') {
            char row[96];
            snprintf(row, sizeof row, "| `%.*s` |", (int)(end - p - 1), p + 1);
            bool top = strncmp(p + 1, "resolved", 8) == 0 || strncmp(p + 1, "source", 6) == 0 ||
                       strncmp(p + 1, "world_size", 10) == 0 || strncmp(p + 1, "total_steps", 11) == 0;
            static const char *const SECTIONS[] = {"\"model\"", "\"data\"", "\"optimizer\"",
                                                   "\"schedule\"", "\"phases\"", "\"training\""};
            bool section = false;
            for (size_t i = 0; i < sizeof SECTIONS / sizeof SECTIONS[0]; i++)
                section |= strncmp(p, SECTIONS[i], strlen(SECTIONS[i])) == 0 && end - p + 1 == (long)strlen(SECTIONS[i]);
            if (!top && !section && !strstr(readme, row)) {
                fprintf(stderr, "configs/README.md has no row %s\n", row);
                fail();
            }
            keys++;
        }
        p = end + 1;
    }
    assert_true(keys > 60);
    free(json);
    free(readme);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_load_full_layout),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_includes_relative_paths),
        cmocka_unit_test(test_include_errors),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_accepts),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_resolve_errors),
        cmocka_unit_test(test_schedule_segments),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_load_resolved),
        cmocka_unit_test(test_resume_safe_keys),
        cmocka_unit_test(test_json_diff),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_readme_documents_every_key),
    };
    return cmocka_run_group_tests(tests, setup, tu_dir_teardown);
}
