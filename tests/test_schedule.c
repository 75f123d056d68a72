/* Unit tests for schedule.c: exact learning rates of the paper's 32K run (peak 5e-3, 15625 steps,
 * 3125 warmup, phases 14063 + 1562 that continue one schedule) in the form of google-research/bert's
 * create_optimizer, of NVIDIA's 64K/32K mixed-batch run in PolyWarmUpScheduler's form (a new
 * segment at stage 2, power 0.5), and of the decay_from / end_lr / power options. Configs are built
 * by hand and resolved by config_resolve, so the segment fields come from the real path. Expected
 * values are written out by hand, or computed by the two reference formulas transcribed below from
 * their sources (not from schedule.c); they are compared to within a few ulps (rtol 1e-14) because
 * the program computes the same expression in double in a possibly different order. */
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

static void add_phase(Config *cfg, int seq_len, int batch, int steps) {
    PhaseConfig *p = &cfg->phases[cfg->n_phases++];
    p->seq_len = seq_len;
    p->batch_size = batch;
    p->steps = steps;
}

static void resolve(Config *cfg) {
    BpError err = {0};
    if (config_resolve(cfg, &err)) fail_msg("config_resolve: %s", err.msg);
}

/* 32K: peak 5e-3, warmup ratio 0.2 of 15625 = 3125 steps, phases 14063 (seq 128) + 1562 (512) */
static void make_32k(Config *cfg) {
    config_defaults(cfg);
    cfg->schedule.lr = 5e-3;
    cfg->schedule.warmup_steps = -1;
    cfg->schedule.warmup_ratio = 0.2;
    add_phase(cfg, 128, 32768, 14063);
    add_phase(cfg, 512, 32768, 1562);
}

/* The 64K/32K run in NVIDIA's form, with stage 1 of s1 steps (peak 6e-3, warmup ratio 0.2843) and
 * stage 2 of s2 steps (peak 4e-3, ratio 0.128), a new segment; decay power 0.5 */
static void make_nvidia(Config *cfg, int s1, int s2) {
    config_defaults(cfg);
    cfg->schedule.form = SCHEDULE_NVIDIA;
    cfg->schedule.lr = 6e-3;
    cfg->schedule.warmup_ratio = 0.2843;
    cfg->schedule.decay_power = 0.5;
    add_phase(cfg, 128, 65536, s1);
    add_phase(cfg, 512, 32768, s2);
    cfg->phases[1].restart_schedule = true;
    cfg->phases[1].lr = 4e-3;
    cfg->phases[1].warmup_ratio = 0.128;
    cfg->phases[1].reset_optimizer_step = true;
}

/* The same stages in the bert form, warmup in steps (2000, and 200 at a restart) */
static void make_bert_mixed(Config *cfg, bool restart) {
    config_defaults(cfg);
    cfg->schedule.lr = 6e-3;
    cfg->schedule.warmup_steps = 2000;
    cfg->schedule.decay_power = 0.5;
    add_phase(cfg, 128, 65536, 7038);
    add_phase(cfg, 512, 32768, 1563);
    if (restart) {
        cfg->phases[1].restart_schedule = true;
        cfg->phases[1].lr = 4e-3;
        cfg->phases[1].warmup_steps = 200;
    }
}

/* google-research/bert optimization.py, create_optimizer (ALBERT's adds poly_power): the lr of the
 * update made at global_step (0 for the first) is tf.train.polynomial_decay(init_lr, global_step,
 * num_train_steps, end_learning_rate=0, power, cycle=False), i.e. init_lr * (1 - min(global_step,
 * num_train_steps) / num_train_steps)^power, replaced while global_step < num_warmup_steps by
 * init_lr * global_step / num_warmup_steps. (1 - x / n is written (n - x) / n: the same number
 * without the cancellation near the end.) */
static double bert_reference(double init_lr, long num_train_steps, long num_warmup_steps, double power,
                             long global_step) {
    long capped = global_step < num_train_steps ? global_step : num_train_steps;
    double lr = init_lr * pow((double)(num_train_steps - capped) / (double)num_train_steps, power);
    if (num_warmup_steps && global_step < num_warmup_steps)
        lr = init_lr * ((double)global_step / (double)num_warmup_steps);
    return lr;
}

/* NVIDIA DeepLearningExamples PyTorch/LanguageModeling/BERT schedulers.py, PolyWarmUpScheduler:
 * step(), called before the optimizer's update, sets last_epoch = param_group['step'] + 1 (the
 * optimizer's step count, 0 before its first update and reset to 0 at phase 2), and get_lr() gives
 * progress = last_epoch / total_steps, base_lr * progress / warmup while progress < warmup, else
 * base_lr * (1 - progress)^degree. */
static double nvidia_reference(double base_lr, double warmup, long total_steps, double degree,
                               long optimizer_step) {
    long last_epoch = optimizer_step + 1;
    double progress = (double)last_epoch / (double)total_steps;
    if (progress < warmup) return base_lr * progress / warmup;
    return base_lr * pow((double)(total_steps - last_epoch) / (double)total_steps, degree);
}

static void expect_lr(const Config *cfg, long step, double want) {
    double got = schedule_lr(cfg, step);
    if (!(fabs(got - want) <= 1e-14 * fabs(want)))
        fail_msg("lr at step %ld is %.17g, expected %.17g (|diff| %.3g > 1e-14 * |expected|)", step,
                 got, want, fabs(got - want));
}

/* Every step of the 32K run, the paper config's form, against create_optimizer */
static void test_32k(void **state) {
    (void)state;
    Config cfg;
    make_32k(&cfg);
    resolve(&cfg);
    assert_int_equal(cfg.total_steps, 15625);
    assert_int_equal(cfg.phases[0].segment_warmup, 3125);
    expect_lr(&cfg, 0, 0.0);                      /* the first update uses lr 0 */
    expect_lr(&cfg, 1, 5e-3 / 3125);              /* 1.6e-6 */
    expect_lr(&cfg, 1562, 5e-3 * 1562 / 3125);    /* mid-warmup: 2.4992e-3 */
    expect_lr(&cfg, 3124, 5e-3 * 3124 / 3125);    /* last warmup step: 4.9984e-3 */
    expect_lr(&cfg, 3125, 4e-3);                  /* first after warmup: 5e-3 * (1 - 3125/15625) */
    expect_lr(&cfg, 9375, 2e-3);                  /* 5e-3 * (1 - 0.6) */
    expect_lr(&cfg, 14062, 5e-3 * 1563 / 15625);  /* last step of phase 0: 5.0016e-4 */
    expect_lr(&cfg, 14063, 5e-3 * 1562 / 15625);  /* first of phase 1 continues: 4.9984e-4 */
    expect_lr(&cfg, 15624, 3.2e-7);               /* the last step: 5e-3 / 15625 */
    expect_lr(&cfg, 15625, 0.0);                  /* past the end: end_lr */
    for (long s = 0; s <= 15626; s++) expect_lr(&cfg, s, bert_reference(5e-3, 15625, 3125, 1.0, s));
    assert_int_equal(config_phase_of(&cfg, 0), 0);
    assert_int_equal(config_phase_of(&cfg, 14062), 0);
    assert_int_equal(config_phase_of(&cfg, 14063), 1);
    assert_int_equal(config_phase_of(&cfg, 15624), 1);
    assert_int_equal(config_phase_of(&cfg, 99999), 1);
    assert_int_equal(config_phase_of(&cfg, -5), 0);
}

/* The option kept from before: the decay measured from the end of warmup, peak at step W */
static void test_decay_from_warmup(void **state) {
    (void)state;
    Config cfg;
    make_32k(&cfg);
    cfg.schedule.decay_from = DECAY_FROM_WARMUP;
    resolve(&cfg);
    expect_lr(&cfg, 0, 0.0);
    expect_lr(&cfg, 3124, 5e-3 * 3124 / 3125);    /* warmup unchanged */
    expect_lr(&cfg, 3125, 5e-3);                  /* end of warmup: the peak */
    expect_lr(&cfg, 9375, 2.5e-3);                /* mid-decay: 6250 of 12500 decay steps */
    expect_lr(&cfg, 14062, 5e-3 * 1563 / 12500);  /* last step of phase 0: 6.252e-4 */
    expect_lr(&cfg, 14063, 5e-3 * 1562 / 12500);  /* first of phase 1 continues: 6.248e-4 */
    expect_lr(&cfg, 15624, 4e-7);                 /* the last step: 5e-3 / 12500 */
    expect_lr(&cfg, 15625, 0.0);
}

/* A continuing phase boundary is seamless: after warmup the lr never rises, and no step drops by
 * more than one decay step (peak / 15625). */
static void test_continuing_boundary_is_smooth(void **state) {
    (void)state;
    Config cfg;
    make_32k(&cfg);
    resolve(&cfg);
    double prev = schedule_lr(&cfg, 3125);
    for (long s = 3126; s < 15625; s++) {
        double lr = schedule_lr(&cfg, s);
        assert_true(lr <= prev);
        assert_true(prev - lr <= 5e-3 / 15625 * (1 + 1e-9));
        prev = lr;
    }
}

/* configs/64k_32k.yaml's schedule (the paper's 7037 + 1562 steps) against PolyWarmUpScheduler, with
 * the optimizer's step count reset at stage 2: hand values at every boundary, then every step */
static void test_nvidia_mixed(void **state) {
    (void)state;
    Config cfg;
    make_nvidia(&cfg, 7037, 1562);
    resolve(&cfg);
    assert_int_equal(cfg.total_steps, 8599);
    assert_int_equal(cfg.phases[0].segment_warmup, 2000); /* 0.2843 * 7037 = 2000.66 */
    assert_int_equal(cfg.phases[1].segment_warmup, 199);  /* 0.128 * 1562 = 199.94 */
    expect_lr(&cfg, 0, 6e-3 * (1.0 / 7037) / 0.2843);      /* the first update is not at 0 */
    expect_lr(&cfg, 1999, 6e-3 * (2000.0 / 7037) / 0.2843); /* last below the ratio: 5.998e-3 */
    expect_lr(&cfg, 2000, 6e-3 * sqrt(5036.0 / 7037));      /* first after warmup: 5.0757e-3 */
    expect_lr(&cfg, 7035, 6e-3 * sqrt(1.0 / 7037));
    expect_lr(&cfg, 7036, 0.0);                             /* stage 1's last update: progress 1 */
    expect_lr(&cfg, 7037, 4e-3 * (1.0 / 1562) / 0.128);     /* stage 2 starts again from t = 1 */
    expect_lr(&cfg, 7235, 4e-3 * (199.0 / 1562) / 0.128);
    expect_lr(&cfg, 7236, 4e-3 * sqrt(1362.0 / 1562));
    expect_lr(&cfg, 8597, 4e-3 * sqrt(1.0 / 1562));
    expect_lr(&cfg, 8598, 0.0);
    expect_lr(&cfg, 8599, 0.0);                             /* past the end: end_lr */
    for (long s = 0; s < 7037; s++) expect_lr(&cfg, s, nvidia_reference(6e-3, 0.2843, 7037, 0.5, s));
    for (long s = 7037; s < 8599; s++)
        expect_lr(&cfg, s, nvidia_reference(4e-3, 0.128, 1562, 0.5, s - 7037));
    assert_true(cfg.phases[1].reset_optimizer_step && !cfg.phases[0].reset_optimizer_step);
}

/* NVIDIA's own step counts, 7038 + 1563: warmups of 2000 and 200 updates */
static void test_nvidia_own_steps(void **state) {
    (void)state;
    Config cfg;
    make_nvidia(&cfg, 7038, 1563);
    resolve(&cfg);
    assert_int_equal(cfg.phases[0].segment_warmup, 2000); /* 0.2843 * 7038 = 2000.94 */
    assert_int_equal(cfg.phases[1].segment_warmup, 200);  /* 0.128 * 1563 = 200.06 */
    expect_lr(&cfg, 2000, 6e-3 * sqrt(5037.0 / 7038));
    expect_lr(&cfg, 7038 + 199, 4e-3 * (200.0 / 1563) / 0.128);
    expect_lr(&cfg, 7038 + 200, 4e-3 * sqrt(1362.0 / 1563));
    for (long s = 0; s < 7038; s++) expect_lr(&cfg, s, nvidia_reference(6e-3, 0.2843, 7038, 0.5, s));
    for (long s = 7038; s < 8601; s++)
        expect_lr(&cfg, s, nvidia_reference(4e-3, 0.128, 1563, 0.5, s - 7038));
}

/* The nvidia form takes its warmup as a ratio and decays from step 0; anything else is refused */
static void test_nvidia_refusals(void **state) {
    (void)state;
    Config cfg;
    BpError err = {0};
    make_nvidia(&cfg, 7037, 1562);
    cfg.phases[1].warmup_ratio = -1;
    cfg.phases[1].warmup_steps = 200;
    assert_int_equal(config_resolve(&cfg, &err), -1);
    assert_non_null(strstr(err.msg, "phases[1]: schedule.form nvidia takes its warmup as a ratio"));
    make_nvidia(&cfg, 7037, 1562);
    cfg.schedule.warmup_steps = 2000;
    assert_int_equal(config_resolve(&cfg, &err), -1);
    assert_non_null(strstr(err.msg, "phases[0]: schedule.form nvidia takes its warmup as a ratio"));
    make_nvidia(&cfg, 7037, 1562);
    cfg.schedule.decay_from = DECAY_FROM_WARMUP;
    assert_int_equal(config_resolve(&cfg, &err), -1);
    assert_non_null(strstr(err.msg, "decay_from: warmup does not apply to it"));
}

/* No warmup in the nvidia form: the first update already decays, from progress 1/S */
static void test_nvidia_no_warmup(void **state) {
    (void)state;
    Config cfg;
    make_nvidia(&cfg, 100, 10);
    cfg.schedule.warmup_ratio = 0;
    resolve(&cfg);
    assert_int_equal(cfg.phases[0].segment_warmup, 0);
    expect_lr(&cfg, 0, 6e-3 * sqrt(0.99));
    expect_lr(&cfg, 99, 0.0);
}

/* The bert form with a restart at stage 2: each segment decays from its own step 0 */
static void test_bert_rewarmup(void **state) {
    (void)state;
    Config cfg;
    make_bert_mixed(&cfg, true);
    resolve(&cfg);
    assert_int_equal(cfg.total_steps, 8601);
    expect_lr(&cfg, 0, 0.0);
    expect_lr(&cfg, 1000, 3e-3);                          /* mid-warmup */
    expect_lr(&cfg, 2000, 6e-3 * sqrt(5038.0 / 7038));    /* first after warmup */
    expect_lr(&cfg, 7037, 6e-3 * sqrt(1.0 / 7038));       /* last step of stage 1 */
    expect_lr(&cfg, 7038, 0.0);                           /* re-warmup from 0 */
    expect_lr(&cfg, 7138, 2e-3);                          /* mid re-warmup */
    expect_lr(&cfg, 7238, 4e-3 * sqrt(1363.0 / 1563));    /* first after the second warmup */
    expect_lr(&cfg, 8600, 4e-3 * sqrt(1.0 / 1563));       /* the last step */
    for (long s = 0; s < 7038; s++) expect_lr(&cfg, s, bert_reference(6e-3, 7038, 2000, 0.5, s));
    for (long s = 7038; s < 8601; s++) expect_lr(&cfg, s, bert_reference(4e-3, 1563, 200, 0.5, s - 7038));
    assert_int_equal(config_phase_of(&cfg, 7037), 0);
    assert_int_equal(config_phase_of(&cfg, 7038), 1);
}

static void test_bert_without_rewarmup(void **state) {
    (void)state;
    Config cfg;
    make_bert_mixed(&cfg, false);
    resolve(&cfg);
    /* one segment of 8601 steps, 2000 warmup, decay from step 0 */
    expect_lr(&cfg, 7037, 6e-3 * sqrt(1564.0 / 8601));
    expect_lr(&cfg, 7038, 6e-3 * sqrt(1563.0 / 8601));
    expect_lr(&cfg, 8600, 6e-3 * sqrt(1.0 / 8601));
}

/* The restart's warmup given as a ratio of its own segment: 0.128 * 1563 = 200.06 -> 200 */
static void test_restart_warmup_ratio(void **state) {
    (void)state;
    Config cfg;
    make_bert_mixed(&cfg, true);
    cfg.phases[1].warmup_steps = -1;
    cfg.phases[1].warmup_ratio = 0.128;
    resolve(&cfg);
    assert_int_equal(cfg.phases[1].segment_warmup, 200);
    expect_lr(&cfg, 7238, 4e-3 * sqrt(1363.0 / 1563));
}

static void test_end_lr(void **state) {
    (void)state;
    Config cfg;
    make_32k(&cfg);
    cfg.schedule.end_lr = 1e-4;
    resolve(&cfg);
    expect_lr(&cfg, 1562, 5e-3 * 1562 / 3125);       /* warmup still starts at 0 */
    expect_lr(&cfg, 3125, 1e-4 + 4.9e-3 * 0.8);
    expect_lr(&cfg, 9375, 1e-4 + 4.9e-3 * 0.4);
    expect_lr(&cfg, 15624, 1e-4 + 4.9e-3 / 15625);
    expect_lr(&cfg, 15625, 1e-4);
}

static void test_power_half(void **state) {
    (void)state;
    Config cfg;
    make_32k(&cfg);
    cfg.schedule.decay_power = 0.5;
    resolve(&cfg);
    expect_lr(&cfg, 3124, 5e-3 * 3124 / 3125);
    expect_lr(&cfg, 9375, 5e-3 * sqrt(0.4));
    expect_lr(&cfg, 15624, 5e-3 * sqrt(1.0 / 15625));
}

static void test_no_warmup(void **state) {
    (void)state;
    Config cfg;
    make_32k(&cfg);
    cfg.schedule.warmup_steps = 0;
    resolve(&cfg);
    expect_lr(&cfg, 0, 5e-3);  /* the peak at once */
    expect_lr(&cfg, 7812, 5e-3 * (1 - 7812.0 / 15625));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_32k),
        cmocka_unit_test(test_decay_from_warmup),
        cmocka_unit_test(test_continuing_boundary_is_smooth),
        cmocka_unit_test(test_nvidia_mixed),
        cmocka_unit_test(test_nvidia_own_steps),
        cmocka_unit_test(test_nvidia_refusals),
        cmocka_unit_test(test_nvidia_no_warmup),
        cmocka_unit_test(test_bert_rewarmup),
        cmocka_unit_test(test_bert_without_rewarmup),
        cmocka_unit_test(test_restart_warmup_ratio),
        cmocka_unit_test(test_end_lr),
        cmocka_unit_test(test_power_half),
        cmocka_unit_test(test_no_warmup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
