/* Unit tests for optim.c.
 *
 * 1. Reference match: tests/fixtures/optim/ holds five steps of each optimizer and option, computed
 *    in float64 by scripts/optim_reference.py on a small table with a zero tensor, a zero-gradient
 *    tensor, excluded tensors and odd lengths; per-step lr and gradient scales vary so that clipping
 *    is active on some steps only. Tolerance: see TOL_* below.
 * 2. Thread-count independence: 1, 2 and 3 OpenMP threads give bit-identical parameters, moments
 *    and statistics on tensors that span several chunks.
 * 3. State round trip, and refusal of another kind, layout or size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "kernels.h"
#include "optim.h"
#include "rng.h"

/* Tolerances, |got - ref| <= atol + rtol |ref|. The C update is float32 element-wise: x, m and v are
 * rounded to 24 bits on every step (~6e-8 relative each, a few roundings per step, 5 steps) while
 * the reference carries float64 throughout, so relative errors of a few 1e-7 are expected (the
 * worst seen is printed with BP_TEST_VERBOSE=1). rtol 2e-5 keeps a wide margin over that and still
 * catches any wrong term: a missing bias correction, epsilon or decay term moves values by 1e-3
 * relative or more. atol covers elements that are sums of cancelling terms (a momentum buffer
 * crossing zero carries the float32 rounding of its terms, not of its value): 1e-7 for parameters,
 * which are O(0.01..1); for a moment 1e-6 times the largest |value| of that moment. Norms are
 * double sums of float32 values: same rtol, atol 1e-9. */
#define TOL_RTOL 2e-5
#define TOL_ATOL_X 1e-7
#define TOL_ATOL_MOMENT_REL 1e-6
#define TOL_ATOL_NORM 1e-9

#define STEPS 5
#define MAX_TENSORS 16
#define STATE_HEADER 48 /* the blob header documented in optim.c */

static const char *fixture_dir(void) {
    const char *d = getenv("BP_OPTIM_FIXTURES");
    return d ? d : "tests/fixtures/optim";
}

/* ------------------------------------------------------------------------------------------ */
/* fixture reading: lines of whitespace-separated tokens, the first one a key; '#' = comment    */

typedef struct {
    char **tok;
    size_t n;
} Line;

typedef struct {
    char *text;
    Line *lines;
    size_t n;
} Fixture;

static void fixture_free(Fixture *f) {
    for (size_t i = 0; i < f->n; i++) free(f->lines[i].tok);
    free(f->lines);
    free(f->text);
}

static Fixture fixture_read(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", fixture_dir(), name);
    BpError err = {0};
    Fixture f = {0};
    f.text = bp_read_file(path, NULL, &err);
    if (!f.text) fail_msg("%s (run from the repository root, or set BP_OPTIM_FIXTURES)", err.msg);
    size_t cap = 0;
    char *save = NULL;
    for (char *line = strtok_r(f.text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || line[0] == 0) continue;
        if (f.n == cap) {
            cap = cap ? 2 * cap : 64;
            f.lines = realloc(f.lines, cap * sizeof *f.lines);
            assert_non_null(f.lines);
        }
        Line *l = &f.lines[f.n++];
        size_t tcap = 16;
        l->tok = malloc(tcap * sizeof(char *));
        l->n = 0;
        char *s2 = NULL;
        for (char *t = strtok_r(line, " \t\r", &s2); t; t = strtok_r(NULL, " \t\r", &s2)) {
            if (l->n == tcap) {
                tcap *= 2;
                l->tok = realloc(l->tok, tcap * sizeof(char *));
            }
            l->tok[l->n++] = t;
        }
    }
    return f;
}

/* the k-th line (0-based) whose first token is key */
static const Line *fixture_get(const Fixture *f, const char *key, int k) {
    int want = k;
    for (size_t i = 0; i < f->n; i++)
        if (f->lines[i].n && strcmp(f->lines[i].tok[0], key) == 0 && k-- == 0) return &f->lines[i];
    fail_msg("fixture has no line %d with key '%s'", want, key);
    return NULL;
}

static double tok_num(const Line *l, size_t i) {
    if (i >= l->n) fail_msg("fixture line '%s' has no value %zu", l->tok[0], i);
    char *end;
    double v = strtod(l->tok[i], &end);
    if (*end) fail_msg("fixture line '%s': '%s' is not a number", l->tok[0], l->tok[i]);
    return v;
}

static double fixture_num(const Fixture *f, const char *key) { return tok_num(fixture_get(f, key, 0), 1); }

/* the values of a line, which must be n */
static void line_values(const Line *l, double *out, size_t n) {
    if (l->n != n + 1) fail_msg("fixture line '%s' has %zu values, expected %zu", l->tok[0], l->n - 1, n);
    for (size_t i = 0; i < n; i++) out[i] = tok_num(l, i + 1);
}

/* ------------------------------------------------------------------------------------------ */
/* comparisons                                                                                 */

/* Fails when any |got - ref| > atol + rtol |ref|, naming the worst element (largest error over
 * its allowance). Returns the worst ratio. */
static double check_close(const char *what, const double *got, const double *ref, size_t n,
                          double atol, double rtol) {
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs(got[i] - ref[i]) / (atol + rtol * fabs(ref[i]));
        if (isnan(r)) r = INFINITY; /* a NaN is the worst there is */
        if (r > worst) {
            worst = r;
            wi = i;
        }
    }
    if (getenv("BP_TEST_VERBOSE"))
        printf("  %-34s worst %.3g of tolerance at [%zu] got %.10g ref %.10g\n", what, worst, wi,
               n ? got[wi] : 0, n ? ref[wi] : 0);
    if (worst > 1.0)
        fail_msg("%s: element %zu is %.10g, reference %.10g (|diff| %.3g > atol %g + rtol %g * |ref|)",
                 what, wi, got[wi], ref[wi], fabs(got[wi] - ref[wi]), atol, rtol);
    return worst;
}

static void check_close_f(const char *what, const float *got, const double *ref, size_t n,
                          double atol, double rtol) {
    double *g = malloc(n * sizeof(double) + 1);
    for (size_t i = 0; i < n; i++) g[i] = got[i];
    check_close(what, g, ref, n, atol, rtol);
    free(g);
}

/* ------------------------------------------------------------------------------------------ */
/* the shared inputs                                                                           */

typedef struct {
    ParamTable table;
    ParamInfo params[MAX_TENSORS];
    float *x0;
    float *grads[STEPS];
} Inputs;

static Inputs IN;

static float *floats_of(const Line *l, size_t n) {
    double *d = malloc(n * sizeof(double) + 1);
    line_values(l, d, n);
    float *f = malloc(n * sizeof(float) + 1);
    for (size_t i = 0; i < n; i++) f[i] = (float)d[i]; /* exact: written with %.9g from float32 */
    free(d);
    return f;
}

static int inputs_setup(void **state) {
    (void)state;
    Fixture f = fixture_read("inputs.txt");
    const Line *h = fixture_get(&f, "tensors", 0);
    /* tensors N total T steps S */
    int n = (int)tok_num(h, 1);
    size_t total = (size_t)tok_num(h, 3);
    assert_int_equal((int)tok_num(h, 5), STEPS);
    assert_true(n > 0 && n <= MAX_TENSORS);
    for (int i = 0; i < n; i++) {
        /* tensor NAME ndim d0 d1 offset numel weight_decay layer_adaptation */
        const Line *t = fixture_get(&f, "tensor", i);
        ParamInfo *p = &IN.params[i];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", t->tok[1]);
        p->ndim = (int)tok_num(t, 2);
        p->shape[0] = (size_t)tok_num(t, 3);
        p->shape[1] = (size_t)tok_num(t, 4);
        p->offset = (size_t)tok_num(t, 5);
        p->numel = (size_t)tok_num(t, 6);
        p->weight_decay = tok_num(t, 7) != 0;
        p->layer_adaptation = tok_num(t, 8) != 0;
    }
    IN.table = (ParamTable){IN.params, n, total};
    IN.x0 = floats_of(fixture_get(&f, "x0", 0), total);
    for (int s = 0; s < STEPS; s++) IN.grads[s] = floats_of(fixture_get(&f, "grad", s), total);
    fixture_free(&f);
    return 0;
}

static int inputs_teardown(void **state) {
    (void)state;
    free(IN.x0);
    for (int t = 0; t < STEPS; t++) free(IN.grads[t]);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* 1. reference cases                                                                          */

static OptimConfig case_config(const Fixture *f) {
    Config cfg;
    config_defaults(&cfg);
    OptimConfig oc = cfg.optimizer;
    const char *name = fixture_get(f, "optimizer", 0)->tok[1];
    if (strcmp(name, "lamb") == 0) oc.name = OPT_LAMB;
    else if (strcmp(name, "lars") == 0) oc.name = OPT_LARS;
    else if (strcmp(name, "adam") == 0) oc.name = OPT_ADAM;
    else if (strcmp(name, "adamw") == 0) oc.name = OPT_ADAMW;
    else fail_msg("unknown optimizer '%s'", name);
    oc.lars_form = strcmp(fixture_get(f, "lars_form", 0)->tok[1], "classic") == 0 ? LARS_CLASSIC
                                                                                   : LARS_PAPER;
    oc.beta1 = fixture_num(f, "beta1");
    oc.beta2 = fixture_num(f, "beta2");
    oc.epsilon = fixture_num(f, "epsilon");
    oc.weight_decay = fixture_num(f, "weight_decay");
    oc.bias_correction = fixture_num(f, "bias_correction") != 0;
    oc.clip_grad_norm = fixture_num(f, "clip_grad_norm");
    oc.gamma_l = fixture_num(f, "gamma_l");
    oc.gamma_u = fixture_num(f, "gamma_u");
    oc.momentum = fixture_num(f, "momentum");
    oc.eta = fixture_num(f, "eta");
    return oc;
}

/* the moments, read from the state blob (header, then moment after moment) */
static float *state_moments(const Optimizer *o, size_t *bytes_out) {
    size_t bytes = optim_state_bytes(o);
    unsigned char *blob = malloc(bytes);
    optim_state_save(o, blob);
    *bytes_out = bytes - STATE_HEADER;
    float *m = malloc(bytes - STATE_HEADER + 1);
    memcpy(m, blob + STATE_HEADER, bytes - STATE_HEADER);
    free(blob);
    return m;
}

static void run_reference_case(void **state) {
    const char *cname = *state;
    char file[128];
    snprintf(file, sizeof file, "%s.txt", cname);
    Fixture f = fixture_read(file);
    OptimConfig oc = case_config(&f);
    const ParamTable *t = &IN.table;
    size_t total = t->total;
    int n = t->n;
    BpError err = {0};
    Optimizer *o = optim_create(&oc, t, &err);
    if (!o) fail_msg("optim_create: %s", err.msg);
    bool has_stats = oc.name == OPT_LAMB || oc.name == OPT_LARS;
    assert_true((optim_layer_stats(o) != NULL) == has_stats);

    double lr[STEPS], gn_ref[STEPS];
    line_values(fixture_get(&f, "lr", 0), lr, STEPS);
    line_values(fixture_get(&f, "grad_norm", 0), gn_ref, STEPS);
    float *x = malloc(total * sizeof(float));
    memcpy(x, IN.x0, total * sizeof(float));
    float *gcopy = malloc(total * sizeof(float));
    double *ref = malloc(total * sizeof(double) * 2 + 8);
    double per_tensor[MAX_TENSORS];
    char what[128];

    for (int s = 0; s < STEPS; s++) {
        /* the global norm: both sides sum exact squares in double, only the order differs */
        double gn = optim_grad_norm(t, IN.grads[s], per_tensor);
        snprintf(what, sizeof what, "%s step %d grad norm", cname, s + 1);
        check_close(what, &gn, &gn_ref[s], 1, 0, 1e-12);
        double sum = 0;
        for (int i = 0; i < n; i++) sum += per_tensor[i];
        assert_true(fabs(sqrt(sum) - gn) <= 1e-12 * gn);

        memcpy(gcopy, IN.grads[s], total * sizeof(float));
        optim_step(o, x, IN.grads[s], lr[s], gn);
        assert_memory_equal(gcopy, IN.grads[s], total * sizeof(float)); /* clipping in place? no */
        assert_int_equal(optim_step_count(o), s + 1);

        line_values(fixture_get(&f, "x", s), ref, total);
        snprintf(what, sizeof what, "%s step %d parameters", cname, s + 1);
        check_close_f(what, x, ref, total, TOL_ATOL_X, TOL_RTOL);

        if (has_stats) {
            const OptimLayerStat *st = optim_layer_stats(o);
            double got[3 * MAX_TENSORS];
            line_values(fixture_get(&f, "stats", s), ref, 3 * (size_t)n);
            for (int i = 0; i < n; i++) {
                got[3 * i] = st[i].param_norm;
                got[3 * i + 1] = st[i].update_norm;
                got[3 * i + 2] = st[i].trust_ratio;
            }
            snprintf(what, sizeof what, "%s step %d layer stats", cname, s + 1);
            check_close(what, got, ref, 3 * (size_t)n, TOL_ATOL_NORM, TOL_RTOL);
        }
    }

    size_t mbytes;
    float *mom = state_moments(o, &mbytes);
    size_t n_mom = mbytes / (total * sizeof(float));
    assert_int_equal(n_mom, (oc.name == OPT_LARS) ? 1 : 2);
    for (size_t k = 0; k < n_mom; k++) {
        line_values(fixture_get(&f, "moment", (int)k), ref, total);
        snprintf(what, sizeof what, "%s moment %zu after %d steps", cname, k, STEPS);
        double scale = 0;
        for (size_t i = 0; i < total; i++) scale = fmax(scale, fabs(ref[i]));
        check_close_f(what, mom + k * total, ref, total, TOL_ATOL_MOMENT_REL * scale, TOL_RTOL);
    }
    free(mom);
    free(ref);
    free(gcopy);
    free(x);
    optim_free(o);
    fixture_free(&f);
}

/* The fixtures cover what they claim: clipping active on some steps and not others, phi bounds
 * active, zero norms, excluded tensors. A regenerated fixture that lost a case fails here. */
static void test_fixture_coverage(void **state) {
    (void)state;
    Fixture f = fixture_read("lamb_phi.txt");
    double gn[STEPS];
    line_values(fixture_get(&f, "grad_norm", 0), gn, STEPS);
    double clip = fixture_num(&f, "clip_grad_norm");
    int active = 0;
    for (int s = 0; s < STEPS; s++) active += gn[s] > clip;
    assert_true(active > 0 && active < STEPS);
    double st[3 * MAX_TENSORS];
    int n = IN.table.n;
    line_values(fixture_get(&f, "stats", 0), st, 3 * (size_t)n);
    int lower = 0, upper = 0, zero_x = 0, zero_u = 0, excluded = 0;
    for (int i = 0; i < n; i++) {
        double xn = st[3 * i], un = st[3 * i + 1], r = st[3 * i + 2];
        if (!IN.params[i].layer_adaptation) excluded += r == 1.0;
        else if (xn == 0) zero_x += r == 1.0;
        else if (un == 0) zero_u += r == 1.0;
        else if (xn < fixture_num(&f, "gamma_l")) lower += fabs(r - 0.5 / un) < 1e-12 * r;
        else if (xn > fixture_num(&f, "gamma_u")) upper += fabs(r - 2.0 / un) < 1e-12 * r;
    }
    assert_true(lower && upper && zero_x && zero_u && excluded == 2);
    fixture_free(&f);
}

/* ------------------------------------------------------------------------------------------ */
/* helpers for the self-consistency tests: a bigger random table                               */

typedef struct {
    ParamInfo params[8];
    ParamTable table;
    float *x, *g;
} Big;

/* tensors spanning several chunks, odd lengths, an excluded vector and a zero one */
static void big_make(Big *b, uint64_t seed) {
    const size_t sizes[] = {20000, 8192, 8193, 100, 3, 777, 64};
    const bool excluded[] = {false, false, false, true, false, true, false};
    size_t off = 0;
    int n = (int)(sizeof sizes / sizeof sizes[0]);
    for (int i = 0; i < n; i++) {
        ParamInfo *p = &b->params[i];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "t%d", i);
        p->ndim = 1;
        p->shape[0] = sizes[i];
        p->offset = off;
        p->numel = sizes[i];
        p->weight_decay = p->layer_adaptation = !excluded[i];
        off += (sizes[i] + 15) / 16 * 16;
    }
    b->table = (ParamTable){b->params, n, off};
    b->x = calloc(off, sizeof(float));
    b->g = calloc(off, sizeof(float));
    for (int i = 0; i < n; i++) {
        const ParamInfo *p = &b->params[i];
        for (size_t j = 0; j < p->numel; j++) {
            uint64_t h = rng_hash(seed, RNG_TEST, (uint64_t)i, j);
            if (i != 6) b->x[p->offset + j] = 0.1f * (rng_u01(h) - 0.5f); /* tensor 6 stays 0 */
            b->g[p->offset + j] = 0.01f * (rng_u01(h >> 1) - 0.5f);
        }
    }
}

static void big_free(Big *b) {
    free(b->x);
    free(b->g);
}

static OptimConfig config_for(OptimizerKind k, LarsForm form) {
    Config cfg;
    config_defaults(&cfg);
    OptimConfig oc = cfg.optimizer;
    oc.name = k;
    oc.lars_form = form;
    oc.clip_grad_norm = 0.05; /* active: the gradient norm here is ~0.1 */
    oc.gamma_u = 5.0;
    return oc;
}

static const struct {
    OptimizerKind kind;
    LarsForm form;
} KINDS[] = {{OPT_LAMB, LARS_PAPER},  {OPT_LARS, LARS_PAPER}, {OPT_LARS, LARS_CLASSIC},
             {OPT_ADAM, LARS_PAPER},  {OPT_ADAMW, LARS_PAPER}};

/* k steps on x (gradients varying by step) */
static void run_steps(Optimizer *o, const Big *b, float *x, int first, int k) {
    size_t total = b->table.total;
    float *g = malloc(total * sizeof(float));
    for (int s = first; s < first + k; s++) {
        for (size_t j = 0; j < total; j++) g[j] = b->g[j] * (float)(1 + s % 3);
        optim_step(o, x, g, 1e-3 * (s + 1), optim_grad_norm(&b->table, g, NULL));
    }
    free(g);
}

/* ------------------------------------------------------------------------------------------ */
/* 2. thread-count and x86-64-level independence                                               */

/* Runs every optimizer under each variant v < n that apply(v) sets up (false: the machine cannot
 * run it, skipped) and requires the parameters, state, layer statistics and gradient norm of every
 * variant to equal the first's bit for bit. */
static void check_variants_agree(bool (*apply)(int v), int n) {
    Big b;
    big_make(&b, 7);
    size_t total = b.table.total;
    for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++) {
        OptimConfig oc = config_for(KINDS[k].kind, KINDS[k].form);
        float *x0 = NULL;
        unsigned char *blob0 = NULL;
        OptimLayerStat *stats0 = NULL;
        double norm0 = 0;
        for (int v = 0; v < n; v++) {
            if (!apply(v)) continue;
            BpError err = {0};
            Optimizer *o = optim_create(&oc, &b.table, &err);
            assert_non_null(o);
            float *x = malloc(total * sizeof(float));
            memcpy(x, b.x, total * sizeof(float));
            double norm = optim_grad_norm(&b.table, b.g, NULL);
            run_steps(o, &b, x, 0, 3);
            unsigned char *blob = malloc(optim_state_bytes(o));
            optim_state_save(o, blob);
            OptimLayerStat *stats = calloc((size_t)b.table.n, sizeof(OptimLayerStat));
            if (optim_layer_stats(o)) memcpy(stats, optim_layer_stats(o), (size_t)b.table.n * sizeof(OptimLayerStat));
            if (!x0) {
                x0 = x, blob0 = blob, stats0 = stats, norm0 = norm;
            } else {
                assert_memory_equal(x, x0, total * sizeof(float));
                assert_memory_equal(blob, blob0, optim_state_bytes(o));
                assert_memory_equal(stats, stats0, (size_t)b.table.n * sizeof(OptimLayerStat));
                assert_memory_equal(&norm, &norm0, sizeof(double));
                free(x);
                free(blob);
                free(stats);
            }
            optim_free(o);
        }
        free(x0);
        free(blob0);
        free(stats0);
    }
    big_free(&b);
}

static bool use_threads(int v) {
    omp_set_num_threads(v + 1);
    return true;
}

static void test_thread_count_independence(void **state) {
    (void)state;
    int saved = omp_get_max_threads();
    check_variants_agree(use_threads, 3);
    omp_set_num_threads(saved);
}

/* Every x86-64 level's build of the passes (optim_isa.h) gives the same numbers: ranks on machines
 * of different levels keep identical replicas. Levels this CPU lacks are skipped, visibly. */
static const char *const LEVEL_NAMES[] = {"x86-64", "x86-64-v3", "x86-64-v4"};

static bool use_level(int v) {
    if (kern_set_isa(LEVEL_NAMES[v])) return true;
    printf("SKIP optimizer at %s: this CPU does not run it\n", LEVEL_NAMES[v]);
    return false;
}

static void test_isa_level_independence(void **state) {
    (void)state;
    char saved[16];
    snprintf(saved, sizeof saved, "%s", kern_isa());
    check_variants_agree(use_level, 3);
    assert_true(kern_set_isa(saved));
}

/* Norms over tensors that span several chunks equal a plain serial double sum. */
static void test_multichunk_norms(void **state) {
    (void)state;
    Big b;
    big_make(&b, 11);
    double per[8];
    double gn = optim_grad_norm(&b.table, b.g, per);
    double all = 0;
    for (int i = 0; i < b.table.n; i++) {
        const ParamInfo *p = &b.params[i];
        double s = 0;
        for (size_t j = 0; j < p->numel; j++) s += (double)b.g[p->offset + j] * b.g[p->offset + j];
        assert_true(fabs(per[i] - s) <= 1e-12 * s);
        all += s;
    }
    assert_true(fabs(gn - sqrt(all)) <= 1e-12 * gn);

    OptimConfig oc = config_for(OPT_LAMB, LARS_PAPER);
    BpError err = {0};
    Optimizer *o = optim_create(&oc, &b.table, &err);
    assert_non_null(o);
    float *x = malloc(b.table.total * sizeof(float));
    memcpy(x, b.x, b.table.total * sizeof(float));
    optim_step(o, x, b.g, 1e-3, gn);
    const OptimLayerStat *st = optim_layer_stats(o);
    for (int i = 0; i < b.table.n; i++) {
        const ParamInfo *p = &b.params[i];
        double s = 0;
        for (size_t j = 0; j < p->numel; j++) s += (double)b.x[p->offset + j] * b.x[p->offset + j];
        assert_true(fabs(st[i].param_norm - sqrt(s)) <= 1e-12 * sqrt(s));
        if (!p->layer_adaptation || s == 0) assert_true(st[i].trust_ratio == 1.0);
    }
    free(x);
    optim_free(o);
    big_free(&b);
}

/* ------------------------------------------------------------------------------------------ */
/* 3. state                                                                                    */

static void test_state_round_trip(void **state) {
    (void)state;
    Big b;
    big_make(&b, 3);
    size_t total = b.table.total;
    for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++) {
        OptimConfig oc = config_for(KINDS[k].kind, KINDS[k].form);
        BpError err = {0};
        Optimizer *a = optim_create(&oc, &b.table, &err);
        assert_non_null(a);
        float *xa = malloc(total * sizeof(float)), *xb = malloc(total * sizeof(float));
        memcpy(xa, b.x, total * sizeof(float));
        run_steps(a, &b, xa, 0, 2);
        size_t bytes = optim_state_bytes(a);
        unsigned char *blob = malloc(bytes);
        optim_state_save(a, blob);

        Optimizer *c = optim_create(&oc, &b.table, &err);
        assert_non_null(c);
        assert_int_equal(optim_state_load(c, blob, bytes, &err), 0);
        assert_int_equal(optim_step_count(c), 2);
        memcpy(xb, xa, total * sizeof(float));
        run_steps(a, &b, xa, 2, 3);
        run_steps(c, &b, xb, 2, 3);
        assert_memory_equal(xa, xb, total * sizeof(float));
        unsigned char *ba = malloc(bytes), *bc = malloc(bytes);
        optim_state_save(a, ba);
        optim_state_save(c, bc);
        assert_memory_equal(ba, bc, bytes);
        assert_int_equal(optim_step_count(c), 5);
        free(ba);
        free(bc);
        free(blob);
        free(xa);
        free(xb);
        optim_free(a);
        optim_free(c);
    }
    big_free(&b);
}

/* NVIDIA's phase 2 (reset_optimizer_step): the step count restarts, the moments stay. LAMB and
 * AdamW on one tensor, 2 steps, a reset, one more: the third update must use bias correction with
 * t = 1 on the moments of all three gradients, computed here in double from the update rules of
 * docs/optimizers.md. Weight decay 0.5 lets LAMB's normalised update show the bias correction: with
 * t = 3 instead of 1 the third step moves x by ~1e-3 relative. */
static void test_reset_step_count(void **state) {
    (void)state;
    enum { N = 5 };
    ParamInfo pi;
    memset(&pi, 0, sizeof pi);
    snprintf(pi.name, sizeof pi.name, "w");
    pi.ndim = 1;
    pi.shape[0] = N;
    pi.numel = N;
    pi.weight_decay = pi.layer_adaptation = true;
    ParamTable table = {&pi, 1, 16};
    const OptimizerKind kinds[] = {OPT_LAMB, OPT_ADAMW};
    for (size_t k = 0; k < 2; k++) {
        Config cfg;
        config_defaults(&cfg);
        OptimConfig oc = cfg.optimizer; /* b1 0.9, b2 0.999, eps 1e-6, bias correction */
        oc.name = kinds[k];
        oc.clip_grad_norm = 0;
        oc.weight_decay = 0.5;
        BpError err = {0};
        Optimizer *o = optim_create(&oc, &table, &err);
        assert_non_null(o);
        float x[16] = {0.3f, -0.2f, 0.5f, 0.1f, -0.4f}, g[16] = {0};
        double xr[N], m[N] = {0}, v[N] = {0};
        for (int j = 0; j < N; j++) xr[j] = x[j];
        const double lr = 1e-2;
        for (int s = 0; s < 3; s++) {
            if (s == 2) {
                optim_reset_step_count(o);
                assert_int_equal(optim_step_count(o), 0);
            }
            double t = s == 2 ? 1 : s + 1;
            for (int j = 0; j < N; j++) g[j] = 0.01f * (float)((j + 1) * (s % 2 ? -1 : 1) + s);
            optim_step(o, x, g, lr, optim_grad_norm(&table, g, NULL));
            double u[N], xn = 0, un = 0;
            for (int j = 0; j < N; j++) {
                m[j] = 0.9 * m[j] + 0.1 * g[j];
                v[j] = 0.999 * v[j] + 0.001 * (double)g[j] * g[j];
                double mh = m[j] / (1 - pow(0.9, t)), vh = v[j] / (1 - pow(0.999, t));
                u[j] = mh / (sqrt(vh) + 1e-6) + 0.5 * xr[j];
                xn += xr[j] * xr[j];
                un += u[j] * u[j];
            }
            double ratio = kinds[k] == OPT_LAMB ? sqrt(xn) / sqrt(un) : 1.0;
            for (int j = 0; j < N; j++) xr[j] -= lr * ratio * u[j];
            check_close_f(s == 2 ? "after the reset" : "before the reset", x, xr, N, 1e-7, 2e-5);
        }
        assert_int_equal(optim_step_count(o), 1);
        optim_free(o);
    }
}

static void test_state_refusals(void **state) {
    (void)state;
    Big b;
    big_make(&b, 5);
    BpError err = {0};
    OptimConfig lamb = config_for(OPT_LAMB, LARS_PAPER);
    Optimizer *o = optim_create(&lamb, &b.table, &err);
    assert_non_null(o);
    run_steps(o, &b, b.x, 0, 1);
    size_t bytes = optim_state_bytes(o);
    unsigned char *blob = malloc(bytes);
    optim_state_save(o, blob);

    /* another kind: Adam has the same moments' size, but they mean something else */
    OptimConfig adam = config_for(OPT_ADAM, LARS_PAPER);
    Optimizer *w = optim_create(&adam, &b.table, &err);
    assert_int_equal(optim_state_load(w, blob, bytes, &err), -1);
    assert_non_null(strstr(err.msg, "written by lamb, this run uses adam"));
    assert_int_equal(bp_error_status(&err), BP_EXIT_USAGE);
    optim_free(w);
    OptimConfig lc = config_for(OPT_LARS, LARS_CLASSIC), lp = config_for(OPT_LARS, LARS_PAPER);
    Optimizer *l1 = optim_create(&lc, &b.table, &err), *l2 = optim_create(&lp, &b.table, &err);
    size_t lb = optim_state_bytes(l1);
    unsigned char *lblob = malloc(lb);
    optim_state_save(l1, lblob);
    assert_int_equal(optim_state_load(l2, lblob, lb, &err), -1);
    assert_non_null(strstr(err.msg, "lars (classic form)"));
    free(lblob);
    optim_free(l1);
    optim_free(l2);

    /* another model: one tensor fewer */
    ParamTable smaller = b.table;
    smaller.n--;
    Optimizer *s = optim_create(&lamb, &smaller, &err);
    assert_int_equal(optim_state_load(s, blob, bytes, &err), -1);
    assert_non_null(strstr(err.msg, "another model"));
    optim_free(s);

    /* same count and total, other shapes */
    ParamInfo moved[8];
    memcpy(moved, b.params, sizeof moved);
    moved[3].numel -= 16;
    moved[3].shape[0] -= 16;
    ParamTable shifted = b.table;
    shifted.params = moved;
    Optimizer *sh = optim_create(&lamb, &shifted, &err);
    assert_non_null(sh);
    assert_int_equal(optim_state_load(sh, blob, bytes, &err), -1);
    assert_non_null(strstr(err.msg, "tensor shapes differ"));
    optim_free(sh);

    /* truncated, and not a blob at all */
    Optimizer *same = optim_create(&lamb, &b.table, &err);
    assert_int_equal(optim_state_load(same, blob, bytes - 4, &err), -1);
    assert_non_null(strstr(err.msg, "bytes"));
    assert_int_equal(optim_state_load(same, blob, 10, &err), -1);
    unsigned char junk[64] = "not a state";
    assert_int_equal(optim_state_load(same, junk, sizeof junk, &err), -1);
    assert_non_null(strstr(err.msg, "not an optimizer state"));
    /* a refused load leaves the optimizer as it was */
    assert_int_equal(optim_step_count(same), 0);
    assert_int_equal(optim_state_load(same, blob, bytes, &err), 0);
    assert_int_equal(optim_step_count(same), 1);
    optim_free(same);
    free(blob);
    optim_free(o);
    big_free(&b);
}

/* ------------------------------------------------------------------------------------------ */
/* odds and ends                                                                               */

static void test_create_refuses_overlap(void **state) {
    (void)state;
    ParamInfo p[2] = {0};
    snprintf(p[0].name, sizeof p[0].name, "a");
    snprintf(p[1].name, sizeof p[1].name, "b");
    p[0].numel = 32;
    p[1].offset = 16;
    p[1].numel = 16;
    ParamTable t = {p, 2, 64};
    OptimConfig oc = config_for(OPT_LAMB, LARS_PAPER);
    BpError err = {0};
    assert_null(optim_create(&oc, &t, &err));
    assert_non_null(strstr(err.msg, "tensor 1 (b)"));
    p[1].offset = 48;
    p[1].numel = 17; /* past the end */
    assert_null(optim_create(&oc, &t, &err));
    assert_non_null(strstr(err.msg, "runs past"));
    p[1].numel = 16;
    Optimizer *o = optim_create(&oc, &t, &err);
    assert_non_null(o);
    assert_string_equal(optim_describe(o), "lamb");
    /* statistics read zero before the first step */
    assert_true(optim_layer_stats(o)[1].trust_ratio == 0);
    optim_free(o);
}

/* An empty table is legal (nothing to do) and a step on it does not crash. */
static void test_empty_table(void **state) {
    (void)state;
    ParamTable t = {NULL, 0, 0};
    for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++) {
        OptimConfig oc = config_for(KINDS[k].kind, KINDS[k].form);
        BpError err = {0};
        Optimizer *o = optim_create(&oc, &t, &err);
        assert_non_null(o);
        assert_true(optim_grad_norm(&t, NULL, NULL) == 0);
        optim_step(o, NULL, NULL, 1e-3, 0);
        assert_int_equal(optim_step_count(o), 1);
        optim_free(o);
    }
}

#define CASE(name) {"reference " name, run_reference_case, NULL, NULL, (void *)name}

int main(void) {
    const struct CMUnitTest tests[] = {
        CASE("lamb"),
        CASE("lamb_clip"),
        CASE("lamb_nobc"),
        CASE("lamb_phi"),
        CASE("lars_paper"),
        CASE("lars_paper_phi_clip"),
        CASE("lars_classic"),
        CASE("lars_classic_clip"),
        CASE("adam"),
        CASE("adam_nobc_clip"),
        CASE("adamw"),
        CASE("adamw_nobc_clip"),
        cmocka_unit_test(test_fixture_coverage),
        cmocka_unit_test(test_thread_count_independence),
        cmocka_unit_test(test_isa_level_independence),
        cmocka_unit_test(test_multichunk_norms),
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test(test_reset_step_count),
        cmocka_unit_test(test_state_refusals),
        cmocka_unit_test(test_create_refuses_overlap),
        cmocka_unit_test(test_empty_table),
    };
    return cmocka_run_group_tests(tests, inputs_setup, inputs_teardown);
}
