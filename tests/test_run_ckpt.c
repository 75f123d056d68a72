/* Unit tests for run_ckpt.c, the training checkpoint: save -> open -> restore gives bit-identical
 * parameters and optimizer state (and the same next step); the configuration rebuilt from
 * config.json is the original resolved one; an older format is refused naming both formats;
 * damage is BP_ERR_CORRUPT and a checkpoint that does not fit the run BP_ERR_MISMATCH; crafted
 * config.json sections (alias bomb, deep nesting, absurd sizes, a big model over a tiny params
 * section, derived keys that disagree, base:) are refused quickly without allocating the model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "model.h"
#include "optim.h"
#include "run_ckpt.h"
#include "testutil.h"
#include "train.h"

/* g_path (testutil.h's) is a genuine checkpoint */
static char g_craft[192]; /* a rewritten one */
static const char VOCAB[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n";

static char *const BASE_SETS[] = {
    "model.preset=bert-tiny", "model.layers=2", "model.hidden=32", "model.heads=2", "model.intermediate=64",
    "model.vocab_size=64", "model.max_position=64",
    "phases=[{seq_len: 16, batch_size: 8, steps: 6}, {seq_len: 32, batch_size: 4, steps: 4, restart_schedule: true}]",
    "training.micro_batch=4", "training.seed=99", "training.run_dir=runs/rc",
};

static void load_cfg(Config *cfg, const char *extra) {
    char *sets[BP_ARRAY_LEN(BASE_SETS) + 1];
    int n = 0;
    for (size_t i = 0; i < BP_ARRAY_LEN(BASE_SETS); i++) sets[n++] = BASE_SETS[i];
    if (extra) sets[n++] = (char *)extra;
    BpError err = {0};
    if (config_load_cli(cfg, NULL, sets, n, 1, &err) != 0) fail_msg("%s", err.msg);
}

static char *json_of(const Config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_write_json(cfg, f);
    fclose(f);
    return buf;
}

/* A model and an optimizer with non-trivial state: initial weights and one LAMB step. */
typedef struct {
    Config cfg;
    Model *model;
    Optimizer *opt;
    double *tensor_sq;
} Run;

static void fill_grads(Run *r, float scale) {
    const ParamTable *t = model_table(r->model);
    float *g = model_grads(r->model);
    for (size_t i = 0; i < t->total; i++) g[i] = scale * sinf(0.37f * (float)i);
}

static void run_step(Run *r, float scale) {
    fill_grads(r, scale);
    const ParamTable *t = model_table(r->model);
    double norm = optim_grad_norm(t, model_grads(r->model), r->tensor_sq);
    optim_step(r->opt, model_params(r->model), model_grads(r->model), 1e-3, norm);
}

static void run_create(Run *r, const char *extra) {
    load_cfg(&r->cfg, extra);
    BpError err = {0};
    r->model = model_create(&r->cfg, r->cfg.model.vocab_size, &err);
    if (!r->model) fail_msg("%s", err.msg);
    r->opt = optim_create(&r->cfg.optimizer, model_table(r->model), &err);
    if (!r->opt) fail_msg("%s", err.msg);
    r->tensor_sq = calloc((size_t)model_table(r->model)->n, sizeof(double));
    assert_non_null(r->tensor_sq);
}

static void run_free(Run *r) {
    optim_free(r->opt);
    model_free(r->model);
    free(r->tensor_sq);
}

static void save(const Run *r, const char *path, long step) {
    RunCkptMeta meta = {.step = step, .elapsed_s = 12.5, .vocab = VOCAB, .vocab_len = strlen(VOCAB)};
    BpError err = {0};
    if (run_ckpt_save(path, &r->cfg, r->model, r->opt, &meta, &err) != 0) fail_msg("%s", err.msg);
}

static int setup(void **state) {
    (void)state;
    if (tu_dir_create("runckpt", "ckpt-00000003.bin") != 0) return -1;
    snprintf(g_craft, sizeof g_craft, "%s/craft.bin", g_dir);
    Run r;
    run_create(&r, NULL);
    model_init_weights(r.model, 5);
    run_step(&r, 1.0f);
    save(&r, g_path, 3);
    run_free(&r);
    return 0;
}

/* ---- round trip ------------------------------------------------------------------------------ */

static void *optim_blob(const Optimizer *o, size_t *n) {
    *n = optim_state_bytes(o);
    void *b = malloc(*n);
    assert_non_null(b);
    optim_state_save(o, b);
    return b;
}

static void test_round_trip(void **state) {
    (void)state;
    Run a, b;
    run_create(&a, NULL);
    model_init_weights(a.model, 5);
    run_step(&a, 1.0f);
    run_step(&a, -0.5f); /* moments of two steps */
    const char *path = tu_path("rt.bin");
    save(&a, path, 7);

    BpError err = {0};
    RunCkpt *ck = run_ckpt_open(path, &err);
    if (!ck) fail_msg("%s", err.msg);
    assert_int_equal(run_ckpt_step(ck), 7);
    assert_true(run_ckpt_elapsed(ck) == 12.5);
    size_t vlen = 0;
    const void *v = run_ckpt_vocab(ck, &vlen);
    assert_int_equal(vlen, strlen(VOCAB));
    assert_memory_equal(v, VOCAB, vlen);

    run_create(&b, NULL); /* zero weights, fresh moments */
    if (run_ckpt_restore_params(ck, b.model, &err) != 0 || run_ckpt_restore_optimizer(ck, b.opt, &err) != 0)
        fail_msg("%s", err.msg);
    run_ckpt_close(ck);
    const ParamTable *t = model_table(a.model);
    assert_memory_equal(model_params(a.model), model_params(b.model), t->total * sizeof(float));
    size_t na, nb;
    void *ba = optim_blob(a.opt, &na), *bb = optim_blob(b.opt, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(ba, bb, na);
    free(ba);
    free(bb);
    /* the restored state continues exactly: one more step on both gives the same bits */
    run_step(&a, 0.25f);
    run_step(&b, 0.25f);
    assert_memory_equal(model_params(a.model), model_params(b.model), t->total * sizeof(float));
    run_free(&a);
    run_free(&b);
}

/* The configuration export rebuilds from config.json is the original resolved one. */
static void test_config_rebuilt(void **state) {
    (void)state;
    Config orig;
    load_cfg(&orig, NULL);
    BpError err = {0};
    RunCkpt *ck = run_ckpt_open(g_path, &err);
    if (!ck) fail_msg("%s", err.msg);
    char *want = json_of(&orig), *got = json_of(run_ckpt_config(ck));
    assert_string_equal(got, want);
    free(want);
    free(got);
    run_ckpt_close(ck);

    const char *out = tu_path("export");
    ExportReport rep;
    if (train_export(g_path, out, &rep, &err) != 0) fail_msg("%s", err.msg);
    assert_int_equal(rep.step, 3);
    ParamTable t = {0};
    assert_int_equal(model_param_table(&orig.model, orig.model.vocab_size, &t, &err), 0);
    long long n = 0;
    for (int i = 0; i < t.n; i++) n += (long long)t.params[i].numel;
    assert_int_equal(rep.tensors, t.n);
    assert_int_equal(rep.parameters, n);
    param_table_free(&t);
    size_t len = 0;
    char *text = (char *)tu_read_bytes(tu_path("export/vocab.txt"), &len);
    assert_string_equal(text, VOCAB);
    free(text);
}

/* ---- crafting checkpoints: a genuine one with one section replaced ---------------------------- */

static void *copy_section(const char *path, const char *name, size_t *len) {
    BpError err = {0};
    CkptFile *f = ckpt_open(path, &err);
    if (!f) fail_msg("%s", err.msg);
    const void *d = ckpt_section(f, name, len);
    assert_non_null(d);
    void *c = malloc(*len + 1);
    assert_non_null(c);
    memcpy(c, d, *len);
    ((char *)c)[*len] = 0;
    ckpt_close(f);
    return c;
}

/* g_craft = g_path with section `name` replaced (or added when absent). */
static void craft(const char *name, const void *data, size_t len) {
    BpError err = {0};
    CkptFile *f = ckpt_open(g_path, &err);
    if (!f) fail_msg("%s", err.msg);
    CkptSection sec[16] = {{0}};
    int n = ckpt_section_count(f), found = 0;
    assert_true(n < 15);
    for (int i = 0; i < n; i++) {
        sec[i].name = ckpt_section_name(f, i);
        sec[i].data = ckpt_section(f, sec[i].name, &sec[i].bytes);
        if (!strcmp(sec[i].name, name)) {
            sec[i].data = data;
            sec[i].bytes = len;
            found = 1;
        }
    }
    if (!found) sec[n++] = (CkptSection){.name = name, .data = data, .bytes = len};
    if (ckpt_write(g_craft, sec, n, &err) != 0) fail_msg("%s", err.msg);
    ckpt_close(f);
}

/* g_craft must be refused with the kind and a message "g_craft: ..." holding want, within a
 * second and without growing the process by 64 MiB. */
static void expect_open_refused(BpErrorKind kind, const char *want) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long rss0 = ru.ru_maxrss;
    double t0 = bp_now();
    BpError err = {0};
    RunCkpt *ck = run_ckpt_open(g_craft, &err);
    double dt = bp_now() - t0;
    getrusage(RUSAGE_SELF, &ru);
    if (ck) {
        run_ckpt_close(ck);
        fail_msg("accepted (expected '%s')", want);
    }
    if (strncmp(err.msg, g_craft, strlen(g_craft)) != 0 || !strstr(err.msg, want))
        fail_msg("message '%s' lacks the path or '%s'", err.msg, want);
    if (err.kind != kind) fail_msg("kind %d, expected %d: %s", err.kind, kind, err.msg);
    if (dt > 1.0) fail_msg("took %.2f s to refuse: %s", dt, err.msg);
    if (ru.ru_maxrss - rss0 > 64 * 1024) fail_msg("grew by %ld KiB to refuse: %s", ru.ru_maxrss - rss0, err.msg);
}

/* the genuine config.json with the first `from` replaced by `to` */
static char *edited_json(const char *from, const char *to) {
    size_t len;
    char *json = copy_section(g_path, "config.json", &len);
    char *at = strstr(json, from);
    if (!at) fail_msg("'%s' not in config.json", from);
    char *out = malloc(len + strlen(to) + 1);
    assert_non_null(out);
    size_t head = (size_t)(at - json);
    memcpy(out, json, head);
    strcpy(out + head, to);
    strcat(out, at + strlen(from));
    free(json);
    return out;
}

static void craft_json(const char *json) { craft("config.json", json, strlen(json)); }

/* ---- formats and kinds ------------------------------------------------------------------------ */

static void test_old_format_refused(void **state) {
    (void)state;
    /* format 1's state: the build tag in the same 16 bytes, then its own fields */
    unsigned char old[64] = {0};
    memcpy(old, "bert_pretrain/1", 15);
    craft("state", old, sizeof old);
    expect_open_refused(BP_ERR_MISMATCH, "checkpoint format 1 (written before format 2 dropped its config.bin "
                                         "section); this build reads format 2. HINT:");
    memcpy(old, "bert_pretrain/3", 15);
    craft("state", old, sizeof old);
    expect_open_refused(BP_ERR_MISMATCH, "checkpoint format 3 (written by a newer build); this build reads format 2");
    memcpy(old, "something else!", 15);
    craft("state", old, sizeof old);
    expect_open_refused(BP_ERR_CORRUPT, "not a training checkpoint");
}

static void test_corrupt_kinds(void **state) {
    (void)state;
    size_t len;
    unsigned char *st = copy_section(g_path, "state", &len);
    assert_int_equal(len, 64);
    int64_t step = 11; /* the run has 10 steps */
    memcpy(st + 16, &step, 8);
    craft("state", st, len);
    expect_open_refused(BP_ERR_CORRUPT, "step 11 is outside its run of 10 steps");
    craft("state", st, 60);
    expect_open_refused(BP_ERR_CORRUPT, "state section has 60 bytes, format 2 has 64");
    free(st);

    float tiny[16] = {0};
    craft("params", tiny, sizeof tiny);
    expect_open_refused(BP_ERR_CORRUPT, "params section has 64 bytes, the model of config.json needs");
    craft("optimizer", tiny, sizeof tiny);
    expect_open_refused(BP_ERR_CORRUPT, "optimizer section has 64 bytes, the state says");
    craft("vocab", "", 0);
    expect_open_refused(BP_ERR_CORRUPT, "no vocab section");

    /* a flipped byte anywhere: the container's CRC */
    size_t flen;
    uint8_t *raw = tu_read_bytes(g_path, &flen);
    raw[flen / 2] ^= 0x10;
    tu_write_bytes(g_craft, raw, flen);
    free(raw);
    expect_open_refused(BP_ERR_CORRUPT, "CRC mismatch");
}

typedef struct {
    int changes, allowed;
    char seen[256];
} Heard;

static void hear(const char *key, const char *old_value, const char *new_value, bool allowed, void *ctx) {
    Heard *h = ctx;
    h->changes++;
    h->allowed += allowed;
    snprintf(h->seen, sizeof h->seen, "%s %s->%s", key, old_value, new_value);
}

static void test_mismatch_kinds(void **state) {
    (void)state;
    BpError err = {0};
    RunCkpt *ck = run_ckpt_open(g_path, &err);
    if (!ck) fail_msg("%s", err.msg);

    Config cfg;
    Heard h = {0, 0, ""};
    load_cfg(&cfg, "training.log_every=5"); /* resume-safe */
    assert_int_equal(run_ckpt_check_resume(ck, &cfg, hear, &h, &err), 0);
    assert_int_equal(h.changes, 1);
    assert_int_equal(h.allowed, 1);
    assert_string_equal(h.seen, "training.log_every 1->5");
    load_cfg(&cfg, "phases.1.micro_batch=2"); /* resume-safe, and changes the derived accumulation */
    assert_int_equal(run_ckpt_check_resume(ck, &cfg, NULL, NULL, &err), 0);

    load_cfg(&cfg, "optimizer.beta1=0.8");
    assert_int_equal(run_ckpt_check_resume(ck, &cfg, NULL, NULL, &err), -1);
    assert_int_equal(err.kind, BP_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "the configuration changed in a way that changes the run: optimizer.beta1 (0.9 -> 0.8)"));

    /* another model shape: refused by the check and by the restore itself */
    Run other;
    run_create(&other, "model.hidden=64");
    assert_int_equal(run_ckpt_check_resume(ck, &other.cfg, NULL, NULL, &err), -1);
    assert_int_equal(err.kind, BP_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "model.hidden (32 -> 64)"));
    assert_int_equal(run_ckpt_restore_params(ck, other.model, &err), -1);
    assert_int_equal(err.kind, BP_ERR_MISMATCH);
    assert_non_null(strstr(err.msg, "the checkpoint's model"));
    run_free(&other);

    /* another optimizer: its state has another size */
    run_create(&other, "optimizer.name=lars");
    assert_int_equal(run_ckpt_restore_optimizer(ck, other.opt, &err), -1);
    assert_int_equal(err.kind, BP_ERR_MISMATCH);
    run_free(&other);
    run_ckpt_close(ck);
}

/* ---- crafted config.json ---------------------------------------------------------------------- */

static void test_crafted_json(void **state) {
    (void)state;
    /* billion laughs */
    const char *bomb = "{resolved: true, a: &a [x, x, x, x, x, x, x, x, x], b: &b [*a, *a, *a, *a, *a, *a, *a, *a],"
                       " c: &c [*b, *b, *b, *b, *b, *b, *b, *b], d: [*c, *c, *c, *c, *c, *c, *c, *c]}";
    craft_json(bomb);
    expect_open_refused(BP_ERR_CORRUPT, "config.json:1:21: YAML anchors (&a) are not supported");
    craft_json("{resolved: true, model: *x}");
    expect_open_refused(BP_ERR_CORRUPT, "YAML aliases (*x) are not supported");

    /* 100000 nested brackets */
    size_t n = 100000;
    char *deep = malloc(2 * n + 1);
    assert_non_null(deep);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = 0;
    craft_json(deep);
    expect_open_refused(BP_ERR_CORRUPT, "YAML nesting deeper than 64 levels");
    free(deep);

    char *j = edited_json("\"layers\": 2", "\"layers\": 1000000");
    craft_json(j);
    free(j);
    expect_open_refused(BP_ERR_CORRUPT, "model.layers = 1000000 is out of range [1, 1024]");

    j = edited_json("\"total_steps\": 10", "\"total_steps\": 11");
    craft_json(j);
    free(j);
    expect_open_refused(BP_ERR_CORRUPT, "config.json is not a resolved configuration: total_steps (11 -> 10)");

    j = edited_json("\"resolved\": true", "\"resolved\": true, \"base\": \"/etc/passwd\"");
    craft_json(j);
    free(j);
    expect_open_refused(BP_ERR_CORRUPT, "base: is not allowed in a resolved configuration");

    craft_json("{\"resolved\": true, \"model\": {\"hidden\": 32}, \"model\": {}}");
    expect_open_refused(BP_ERR_CORRUPT, "duplicate key 'model'");
    craft_json("");
    expect_open_refused(BP_ERR_CORRUPT, "config.json: the file is empty");
    craft_json("{\"model\": {\"hidden\": 32}}");
    expect_open_refused(BP_ERR_CORRUPT, "not a resolved configuration (no top-level resolved: true)");
}

/* A checkpoint written before a key existed lacks it in config.json: accepted when the key changes
 * no result (its default then runs the same run), refused otherwise. */
static void test_added_keys(void **state) {
    (void)state;
    char *j = edited_json("\"recompute_attention\": true,\n", "");
    craft_json(j);
    free(j);
    BpError err = {0};
    RunCkpt *ck = run_ckpt_open(g_craft, &err);
    if (!ck) fail_msg("a config.json without training.recompute_attention refused: %s", err.msg);
    assert_true(run_ckpt_config(ck)->training.recompute_attention);
    run_ckpt_close(ck);
    /* layer_norm_eps at its default, but a key that changes results cannot be missing */
    j = edited_json("\"layer_norm_eps\": 1e-12,\n", "");
    craft_json(j);
    free(j);
    expect_open_refused(BP_ERR_CORRUPT, "config.json is not a resolved configuration: model.layer_norm_eps ((absent) -> 1e-12)");
}

/* hidden 1024 x 200 layers (about 9e8 floats, 3.6 GB) over the genuine tiny params section, with a state
 * that agrees with the big model: refused by the size check, nothing allocated for the model. */
static void test_big_model_tiny_params(void **state) {
    (void)state;
    char *j = edited_json("\"layers\": 2", "\"layers\": 200");
    char *h = strstr(j, "\"hidden\": 32,");
    assert_non_null(h);
    char *j2 = malloc(strlen(j) + 3);
    assert_non_null(j2);
    snprintf(j2, strlen(j) + 3, "%.*s\"hidden\": 1024,%s", (int)(h - j), j, h + strlen("\"hidden\": 32,"));
    free(j);
    j = j2;
    Config big;
    BpError err = {0};
    if (config_load_resolved(&big, j, strlen(j), "big", &err) != 0) fail_msg("%s", err.msg);
    ParamTable t = {0};
    assert_int_equal(model_param_table(&big.model, big.model.vocab_size, &t, &err), 0);
    assert_true(t.total > (size_t)800000000);
    size_t len;
    unsigned char *st = copy_section(g_path, "state", &len);
    int64_t total = (int64_t)t.total;
    int32_t tensors = t.n;
    memcpy(st + 24, &total, 8);
    memcpy(st + 32, &tensors, 4);
    param_table_free(&t);

    /* both sections replaced: the big config and the state that matches it */
    CkptSection sec[8] = {{0}};
    CkptFile *f = ckpt_open(g_path, &err);
    assert_non_null(f);
    int n = ckpt_section_count(f);
    for (int i = 0; i < n; i++) {
        sec[i].name = ckpt_section_name(f, i);
        sec[i].data = ckpt_section(f, sec[i].name, &sec[i].bytes);
        if (!strcmp(sec[i].name, "state")) sec[i].data = st;
        if (!strcmp(sec[i].name, "config.json")) {
            sec[i].data = j;
            sec[i].bytes = strlen(j);
        }
    }
    if (ckpt_write(g_craft, sec, n, &err) != 0) fail_msg("%s", err.msg);
    ckpt_close(f);
    free(st);
    free(j);
    expect_open_refused(BP_ERR_CORRUPT, "params section has");
}

/* A params section with a NaN (CRCs valid: written by a run that diverged, or crafted) is refused at
 * restore as damage, naming the tensor and its first bad element, before the run takes a step. */
static void test_nonfinite_params(void **state) {
    (void)state;
    Run r;
    run_create(&r, NULL);
    const ParamTable *t = model_table(r.model);
    const ParamInfo *p = params_get(t, "bert.encoder.layer.1.attention.output.dense.weight");
    size_t len;
    float *params = (float *)copy_section(g_path, "params", &len);
    params[p->offset + 3 * p->shape[1] + 5] = NAN;
    params[p->offset + 4 * p->shape[1]] = INFINITY;
    craft("params", params, len);
    BpError err = {0};
    RunCkpt *ck = run_ckpt_open(g_craft, &err);
    if (!ck) fail_msg("%s", err.msg);
    assert_int_equal(run_ckpt_restore_params(ck, r.model, &err), -1);
    assert_int_equal(err.kind, BP_ERR_CORRUPT);
    if (!strstr(err.msg, g_craft) ||
        !strstr(err.msg, "tensor 'bert.encoder.layer.1.attention.output.dense.weight' element [3, 5] is nan"))
        fail_msg("message: %s", err.msg);
    run_ckpt_close(ck);
    /* an Inf alone, in a vector */
    free(params);
    params = (float *)copy_section(g_path, "params", &len);
    p = params_get(t, "cls.predictions.bias");
    params[p->offset + 17] = -INFINITY;
    craft("params", params, len);
    ck = run_ckpt_open(g_craft, &err);
    if (!ck) fail_msg("%s", err.msg);
    assert_int_equal(run_ckpt_restore_params(ck, r.model, &err), -1);
    if (!strstr(err.msg, "tensor 'cls.predictions.bias' element [17] is -inf")) fail_msg("message: %s", err.msg);
    run_ckpt_close(ck);
    free(params);
    run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_config_rebuilt),
        cmocka_unit_test(test_old_format_refused),
        cmocka_unit_test(test_corrupt_kinds),
        cmocka_unit_test(test_added_keys),
        cmocka_unit_test(test_mismatch_kinds),
        cmocka_unit_test(test_crafted_json),
        cmocka_unit_test(test_big_model_tiny_params),
        cmocka_unit_test(test_nonfinite_params),
    };
    return cmocka_run_group_tests(tests, setup, tu_dir_teardown);
}
