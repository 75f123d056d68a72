/* Unit tests for schedule.c: exact learning rates of the paper's 32K run (peak 5e-3, 15625 steps,
 * 3125 warmup, phases 14063 + 1562 that continue one schedule), of NVIDIA's 64K/32K mixed-batch
 * run (re-warmup at the second phase, power 0.5), and of the decay_from / end_lr / power options.
 * Configs are built by hand and resolved by config_resolve, so the segment fields come from the
 * real path. Expected values are written out by hand from the formulas in schedule.h; they are
 * compared to within a few ulps (rtol 1e-14) because the program computes the same expression in
 * double in a possibly different order. */
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

/* 64K/32K as NVIDIA ran it: 7038 steps at peak 6e-3 (warmup 2000), then a restart at 4e-3 with
 * 200 warmup steps for 1563 steps; decay power 0.5 */
static void make_mixed(Config *cfg, bool restart) {
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

static void expect_lr(const Config *cfg, long step, double want) {
    double got = schedule_lr(cfg, step);
    if (!(fabs(got - want) <= 1e-14 * fabs(want)))
        fail_msg("lr at step %ld is %.17g, expected %.17g (|diff| %.3g > 1e-14 * |expected|)", step,
                 got, want, fabs(got - want));
}

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
    expect_lr(&cfg, 3125, 5e-3);                  /* end of warmup: the peak */
    expect_lr(&cfg, 9375, 2.5e-3);                /* mid-decay: 6250 of 12500 decay steps */
    expect_lr(&cfg, 14062, 5e-3 * 1563 / 12500);  /* last step of phase 0: 6.252e-4 */
    expect_lr(&cfg, 14063, 5e-3 * 1562 / 12500);  /* first of phase 1 continues: 6.248e-4 */
    expect_lr(&cfg, 15624, 4e-7);                 /* the last step: 5e-3 / 12500 */
    expect_lr(&cfg, 15625, 0.0);                  /* past the end: end_lr */
    assert_int_equal(config_phase_of(&cfg, 0), 0);
    assert_int_equal(config_phase_of(&cfg, 14062), 0);
    assert_int_equal(config_phase_of(&cfg, 14063), 1);
    assert_int_equal(config_phase_of(&cfg, 15624), 1);
    assert_int_equal(config_phase_of(&cfg, 99999), 1);
    assert_int_equal(config_phase_of(&cfg, -5), 0);
}

/* A continuing phase boundary is seamless: after warmup the lr never rises, and no step drops by
 * more than one decay step (peak / 12500). */
static void test_continuing_boundary_is_smooth(void **state) {
    (void)state;
    Config cfg;
    make_32k(&cfg);
    resolve(&cfg);
    double prev = schedule_lr(&cfg, 3125);
    for (long s = 3126; s < 15625; s++) {
        double lr = schedule_lr(&cfg, s);
        assert_true(lr <= prev);
        assert_true(prev - lr <= 5e-3 / 12500 * (1 + 1e-9));
        prev = lr;
    }
}

static void test_mixed_rewarmup(void **state) {
    (void)state;
    Config cfg;
    make_mixed(&cfg, true);
    resolve(&cfg);
    assert_int_equal(cfg.total_steps, 8601);
    expect_lr(&cfg, 0, 0.0);
    expect_lr(&cfg, 1000, 3e-3);                          /* mid-warmup */
    expect_lr(&cfg, 2000, 6e-3);                          /* end of warmup */
    expect_lr(&cfg, 4519, 6e-3 * sqrt(0.5));              /* mid-decay: 2519 of 5038 */
    expect_lr(&cfg, 7037, 6e-3 * sqrt(1.0 / 5038));       /* last step of stage 1 */
    expect_lr(&cfg, 7038, 0.0);                           /* re-warmup from 0 */
    expect_lr(&cfg, 7138, 2e-3);                          /* mid re-warmup */
    expect_lr(&cfg, 7238, 4e-3);                          /* the second peak */
    expect_lr(&cfg, 7919, 4e-3 * sqrt(682.0 / 1363));     /* mid-decay: 681 of 1363 done */
    expect_lr(&cfg, 8600, 4e-3 * sqrt(1.0 / 1363));       /* the last step */
    assert_int_equal(config_phase_of(&cfg, 7037), 0);
    assert_int_equal(config_phase_of(&cfg, 7038), 1);
}

static void test_mixed_without_rewarmup(void **state) {
    (void)state;
    Config cfg;
    make_mixed(&cfg, false);
    resolve(&cfg);
    /* one segment of 8601 steps, 2000 warmup, 6601 decay steps */
    expect_lr(&cfg, 7037, 6e-3 * sqrt(1.0 - 5037.0 / 6601));
    expect_lr(&cfg, 7038, 6e-3 * sqrt(1.0 - 5038.0 / 6601));
    expect_lr(&cfg, 8600, 6e-3 * sqrt(1.0 / 6601));
}

/* The restart's warmup given as a ratio of its own segment: 0.128 * 1563 = 200.06 -> 200 */
static void test_restart_warmup_ratio(void **state) {
    (void)state;
    Config cfg;
    make_mixed(&cfg, true);
    cfg.phases[1].warmup_steps = -1;
    cfg.phases[1].warmup_ratio = 0.128;
    resolve(&cfg);
    assert_int_equal(cfg.phases[1].segment_warmup, 200);
    expect_lr(&cfg, 7238, 4e-3);
}

static void test_decay_from_zero(void **state) {
    (void)state;
    Config cfg;
    make_32k(&cfg);
    cfg.schedule.decay_from = DECAY_FROM_ZERO;
    resolve(&cfg);
    expect_lr(&cfg, 1562, 5e-3 * 1562 / 3125);  /* warmup unchanged */
    expect_lr(&cfg, 3125, 4e-3);                /* (1 - 3125/15625): below the peak, as [bert] */
    expect_lr(&cfg, 9375, 2e-3);                /* (1 - 0.6) */
    expect_lr(&cfg, 15624, 3.2e-7);             /* 5e-3 / 15625 */
}

static void test_end_lr(void **state) {
    (void)state;
    Config cfg;
    make_32k(&cfg);
    cfg.schedule.end_lr = 1e-4;
    resolve(&cfg);
    expect_lr(&cfg, 1562, 5e-3 * 1562 / 3125);       /* warmup still starts at 0 */
    expect_lr(&cfg, 3125, 5e-3);
    expect_lr(&cfg, 9375, 2.55e-3);                  /* 1e-4 + 4.9e-3 / 2 */
    expect_lr(&cfg, 15624, 1e-4 + 4.9e-3 / 12500);
    expect_lr(&cfg, 15625, 1e-4);
}

static void test_power_half(void **state) {
    (void)state;
    Config cfg;
    make_32k(&cfg);
    cfg.schedule.decay_power = 0.5;
    resolve(&cfg);
    expect_lr(&cfg, 3124, 5e-3 * 3124 / 3125);
    expect_lr(&cfg, 9375, 5e-3 * sqrt(0.5));
    expect_lr(&cfg, 15624, 5e-3 * sqrt(1.0 / 12500));
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
        cmocka_unit_test(test_continuing_boundary_is_smooth),
        cmocka_unit_test(test_mixed_rewarmup),
        cmocka_unit_test(test_mixed_without_rewarmup),
        cmocka_unit_test(test_restart_warmup_ratio),
        cmocka_unit_test(test_decay_from_zero),
        cmocka_unit_test(test_end_lr),
        cmocka_unit_test(test_power_half),
        cmocka_unit_test(test_no_warmup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
