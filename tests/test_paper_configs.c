/* The LAMB paper's BERT-Large table as configs: loads configs/{512,1k,...,32k,64k_32k}.yaml through
 * config_load_cli (as `bert_pretrain CONFIG --dry-run` does) and checks every number of the table
 * (docs/paper_table.md says which version of the paper each comes from): global batch, steps per
 * phase, peak lr, warmup steps, accumulation, and the schedule's form: the table rows decay from
 * step 0 as google-research/bert's create_optimizer, 64k_32k follows NVIDIA's PolyWarmUpScheduler. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "schedule.h"

typedef struct {
    const char *file;
    int batch;
    long steps;          /* 15625 * 32768 / batch */
    long phase1, phase2; /* 9/10 at seq 128, 1/10 at seq 512 */
    double lr_exponent;  /* peak lr = 5 / (2^e * 10^3) */
    double printed_lr;   /* as the paper's table prints it */
} Row;

static const Row ROWS[] = {
    {"configs/512.yaml", 512, 1000000, 900000, 100000, 3.0, 6.25e-4},
    {"configs/1k.yaml", 1024, 500000, 450000, 50000, 2.5, 8.839e-4},
    {"configs/2k.yaml", 2048, 250000, 225000, 25000, 2.0, 1.25e-3},
    {"configs/4k.yaml", 4096, 125000, 112500, 12500, 1.5, 1.768e-3},
    {"configs/8k.yaml", 8192, 62500, 56250, 6250, 1.0, 2.5e-3},
    {"configs/16k.yaml", 16384, 31250, 28125, 3125, 0.5, 3.536e-3},
    {"configs/32k.yaml", 32768, 15625, 14063, 1562, 0.0, 5e-3},
};

static void close_to(double got, double want, double atol, double rtol, const char *what) {
    double tol = atol + rtol * fabs(want);
    if (!(fabs(got - want) <= tol)) {
        fprintf(stderr, "%s: got %.17g, want %.17g (|diff| %.3g > tol %.3g)\n", what, got, want,
                fabs(got - want), tol);
        fail();
    }
}

static void load(Config *c, const char *file, int world_size) {
    BpError err = {0};
    if (config_load_cli(c, file, NULL, 0, world_size, &err) != 0) {
        fprintf(stderr, "%s: %s\n", file, err.msg);
        fail();
    }
}

static void check_common(const Config *c) {
    assert_string_equal(c->model.preset, "bert-large");
    assert_int_equal(c->model.layers, 24);
    assert_int_equal(c->model.hidden, 1024);
    assert_int_equal(c->model.heads, 16);
    assert_int_equal(c->model.intermediate, 4096);
    assert_int_equal(c->optimizer.name, OPT_LAMB);
    assert_true(c->optimizer.beta1 == 0.9 && c->optimizer.beta2 == 0.999);
    assert_true(c->optimizer.epsilon == 1e-6 && c->optimizer.weight_decay == 0.01);
    assert_true(c->optimizer.bias_correction);
    assert_true(c->optimizer.clip_grad_norm == 1.0);
    assert_int_equal(c->optimizer.n_exclude_from_weight_decay, 2);
    assert_string_equal(c->optimizer.exclude_from_weight_decay[0], "bias");
    assert_string_equal(c->optimizer.exclude_from_weight_decay[1], "LayerNorm");
    assert_int_equal(c->optimizer.n_exclude_from_layer_adaptation, 2);
    assert_string_equal(c->optimizer.exclude_from_layer_adaptation[0], "bias");
    assert_string_equal(c->optimizer.exclude_from_layer_adaptation[1], "LayerNorm");
    assert_true(c->schedule.end_lr == 0.0);
    assert_int_equal(c->schedule.decay_from, DECAY_FROM_ZERO);
    assert_int_equal(c->n_phases, 2);
    assert_int_equal(c->phases[0].seq_len, 128);
    assert_int_equal(c->phases[0].max_predictions_per_seq, 20);
    assert_int_equal(c->phases[1].seq_len, 512);
    assert_int_equal(c->phases[1].max_predictions_per_seq, 80);
    /* the base's paths resolve relative to configs/common/, i.e. to data/ at the repo root */
    assert_string_equal(c->data.vocab, "data/wiki_books/vocab.txt");
    assert_string_equal(c->data.train, "data/wiki_books/shards/train");
}

static void test_table_rows(void **state) {
    (void)state;
    for (size_t r = 0; r < sizeof ROWS / sizeof ROWS[0]; r++) {
        const Row *w = &ROWS[r];
        Config c;
        load(&c, w->file, 1);
        fprintf(stderr, "checking %s\n", w->file);
        check_common(&c);
        assert_int_equal(c.schedule.decay_power, 1);
        assert_int_equal(w->steps, 15625L * 32768 / w->batch);
        assert_int_equal(c.total_steps, w->steps);
        /* the rounding rule the configs state: phase 1 = 0.9 * steps rounded half up */
        assert_int_equal(w->phase1, (long)floor(0.9 * (double)w->steps + 0.5));
        for (int p = 0; p < 2; p++) {
            const PhaseConfig *ph = &c.phases[p];
            assert_int_equal(ph->batch_size, w->batch);
            assert_int_equal(ph->steps, p == 0 ? w->phase1 : w->phase2);
            /* micro-batch 32 at seq 128, training.micro_batch (8) at seq 512 */
            assert_int_equal(ph->micro_batch, p == 0 ? 32 : c.training.micro_batch);
            assert_int_equal(ph->accumulation, w->batch / ph->micro_batch);
            assert_int_equal(ph->first_step, p == 0 ? 0 : w->phase1);
            /* one schedule over both phases: 3125 warmup steps at every batch size */
            assert_false(ph->restart_schedule);
            assert_int_equal(ph->segment_start, 0);
            assert_int_equal(ph->segment_steps, w->steps);
            assert_int_equal(ph->segment_warmup, 3125);
            close_to(ph->segment_lr, 5.0 / (pow(2.0, w->lr_exponent) * 1e3), 0, 1e-12, w->file);
            close_to(ph->segment_lr, w->printed_lr, 0, 5e-4, w->file);
        }
        close_to(c.schedule.warmup_ratio * (double)w->steps, 3125, 1e-6, 0, "warmup ratio x steps");
        assert_int_equal(c.schedule.form, SCHEDULE_BERT);
        /* the decay runs from step 0: right after warmup the lr is peak * (1 - 3125 / steps) */
        double peak = c.phases[0].segment_lr;
        close_to(schedule_lr(&c, 3124), peak * 3124 / 3125, 0, 1e-14, "last warmup step");
        close_to(schedule_lr(&c, 3125), peak * (double)(w->steps - 3125) / (double)w->steps, 0, 1e-14,
                 "first step after warmup");
        char run_dir[64];
        snprintf(run_dir, sizeof run_dir, "runs/%.*s", (int)(strlen(w->file) - 13), w->file + 8);
        assert_string_equal(c.training.run_dir, run_dir);
    }
}

static void test_32k_headline(void **state) {
    (void)state;
    Config c;
    load(&c, "configs/32k.yaml", 1);
    assert_int_equal(c.phases[0].steps, 14063);
    assert_int_equal(c.phases[1].steps, 1562);
    assert_int_equal(c.phases[0].batch_size, 32768);
    assert_int_equal(c.phases[1].batch_size, 32768);
    assert_true(c.phases[0].segment_lr == 5e-3);
    assert_int_equal(c.phases[0].segment_warmup, 3125);
    close_to(schedule_lr(&c, 3125), 4e-3, 0, 1e-14, "32K: lr right after warmup");
    assert_int_equal(c.model.vocab_size, 30522);
    /* the micro-batch divides the global batch on any power-of-two number of ranks up to 4096 */
    load(&c, "configs/32k.yaml", 64);
    assert_int_equal(c.phases[0].accumulation, 32768 / (32 * 64));
    assert_int_equal(c.phases[1].accumulation, 32768 / (c.training.micro_batch * 64));
}

static void test_64k_32k(void **state) {
    (void)state;
    Config c;
    load(&c, "configs/64k_32k.yaml", 1);
    check_common(&c);
    assert_int_equal(c.total_steps, 8599);
    const PhaseConfig *s1 = &c.phases[0], *s2 = &c.phases[1];
    assert_int_equal(s1->batch_size, 65536);
    assert_int_equal(s1->steps, 7037);
    assert_int_equal(s2->batch_size, 32768);
    assert_int_equal(s2->steps, 1562);
    assert_int_equal(s1->accumulation, 65536 / 32);
    assert_int_equal(s2->accumulation, 32768 / c.training.micro_batch);
    /* NVIDIA's form: PolyWarmUpScheduler per stage, warmup as a proportion */
    assert_int_equal(c.schedule.form, SCHEDULE_NVIDIA);
    assert_true(c.schedule.decay_power == 0.5);
    /* stage 1: its own segment, 6e-3, warmup_proportion 0.2843: 2000 updates below it */
    assert_int_equal(s1->segment_start, 0);
    assert_int_equal(s1->segment_steps, 7037);
    assert_true(s1->segment_warmup_ratio == 0.2843);
    assert_int_equal(s1->segment_warmup, 2000);
    assert_true(s1->segment_lr == 6e-3);
    assert_false(s1->reset_optimizer_step);
    /* stage 2 re-warms: 4e-3, proportion 0.128 of its 1562 steps (199 updates), and the optimizer's
     * step count restarts there */
    assert_true(s2->restart_schedule);
    assert_true(s2->reset_optimizer_step);
    assert_int_equal(s2->first_step, 7037);
    assert_int_equal(s2->segment_start, 7037);
    assert_int_equal(s2->segment_steps, 1562);
    assert_true(s2->segment_warmup_ratio == 0.128);
    assert_int_equal(s2->segment_warmup, 199);
    assert_true(s2->segment_lr == 4e-3);
    /* right after stage 1's warmup: 6e-3 * (1 - 2001/7037)^0.5 = 5.0757e-3, not the peak */
    close_to(schedule_lr(&c, 2000), 6e-3 * sqrt(5036.0 / 7037), 0, 1e-14, "64K/32K: after warmup");
    close_to(schedule_lr(&c, 7037), 4e-3 * (1.0 / 1562) / 0.128, 0, 1e-14, "64K/32K: stage 2's first");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_rows),
        cmocka_unit_test(test_32k_headline),
        cmocka_unit_test(test_64k_32k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
