/* run_ckpt.c: the training checkpoint's sections, their validation and restore (see run_ckpt.h).
 *
 * Validation order at open gives the most useful message first and never trusts a size before it
 * is checked: the container (checkpoint.c: magic, CRCs, bounds), the state section's format tag
 * (an older format is named as such, not as damage), config.json through the config loader (so a
 * hostile text meets the same bounds as a hostile config file), then every size against the model
 * that config describes, computed from the parameter table alone (no weights allocated). */
#include "run_ckpt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "config_diff.h"

#define STATE_TAG_PREFIX "bert_pretrain/"

/* The "state" section, little-endian as the host writes it (the whole file assumes that: the
 * parameters are raw float32). */
typedef struct {
    char tag[16];             /* "bert_pretrain/2": STATE_TAG_PREFIX + RUN_CKPT_FORMAT, NUL-padded */
    int64_t step;             /* optimizer steps done */
    int64_t total_floats;     /* ParamTable.total */
    int32_t n_tensors;        /* ParamTable.n */
    int32_t vocab_size;
    uint64_t seed;            /* training.seed */
    double elapsed_s;         /* training wall time over all sessions */
    uint64_t optimizer_bytes; /* size of the "optimizer" section */
} RunCkptState;
_Static_assert(sizeof(RunCkptState) == 64, "the state section is 64 bytes without padding");

struct RunCkpt {
    CkptFile *file;
    char path[4096];
    RunCkptState state;
    Config cfg;        /* rebuilt from config.json */
    char *config_json; /* config_write_json(cfg): equal to the stored text (checked at open) */
    ParamTable table;  /* of cfg's model: what the params section must hold */
    const void *params, *optimizer, *vocab;
    size_t vocab_len;
};

/* ---- saving ----------------------------------------------------------------------------------- */

static char *config_text(const Config *cfg, BpError *err) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        bp_fail(err, "out of memory writing the configuration");
        return NULL;
    }
    config_write_json(cfg, f);
    fclose(f);
    return buf;
}


int run_ckpt_save(const char *path, const Config *cfg, Model *model, const Optimizer *opt,
                  const RunCkptMeta *meta, BpError *err) {
    const ParamTable *t = model_table(model);
    RunCkptState st;
    memset(&st, 0, sizeof st);
    snprintf(st.tag, sizeof st.tag, STATE_TAG_PREFIX "%d", RUN_CKPT_FORMAT);
    st.step = meta->step;
    st.total_floats = (int64_t)t->total;
    st.n_tensors = t->n;
    st.vocab_size = model_config(model)->vocab_size;
    st.seed = cfg->training.seed;
    st.elapsed_s = meta->elapsed_s;
    st.optimizer_bytes = optim_state_bytes(opt);
    char *json = config_text(cfg, err);
    /* the optimizer state goes to the file piece by piece, never copied whole (sharded: received from
       the other ranks, which call optim_state_send meanwhile) */
    OptimStateStream *stream = json ? optim_state_stream_open(opt, err) : NULL;
    int rc = -1;
    if (stream) {
        CkptSection sec[] = {
            {.name = "state", .data = &st, .bytes = sizeof st},
            {.name = "config.json", .data = json, .bytes = strlen(json)},
            {.name = "params", .data = model_params(model), .bytes = t->total * sizeof(float)},
            {.name = "optimizer", .bytes = st.optimizer_bytes, .next = optim_state_stream_next, .ctx = stream},
            {.name = "vocab", .data = meta->vocab, .bytes = meta->vocab_len},
        };
        rc = ckpt_write(path, sec, (int)BP_ARRAY_LEN(sec), err);
    }
    optim_state_stream_close(stream);
    free(json);
    return rc;
}

/* ---- opening ---------------------------------------------------------------------------------- */

/* The format a state section says it has: its tag is STATE_TAG_PREFIX + a number (format 1 wrote
 * "bert_pretrain/1" in the same place). -1 when it has no such tag. */
static long state_format(const void *data, size_t bytes) {
    char tag[sizeof(((RunCkptState *)0)->tag) + 1] = {0};
    if (bytes < sizeof tag - 1) return -1;
    memcpy(tag, data, sizeof tag - 1);
    size_t plen = strlen(STATE_TAG_PREFIX);
    if (strncmp(tag, STATE_TAG_PREFIX, plen) != 0) return -1;
    long v = 0;
    const char *p = tag + plen;
    if (*p < '1' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9'; p++) v = v * 10 + (*p - '0');
    return *p ? -1 : v;
}

static int open_state(RunCkpt *ck, BpError *err) {
    size_t bytes = 0;
    const void *data = ckpt_section(ck->file, "state", &bytes);
    long format = data ? state_format(data, bytes) : -1;
    if (format < 0)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "not a training checkpoint (no state section tagged %sN)",
                            STATE_TAG_PREFIX);
    if (format == 1)
        return bp_fail_kind(err, BP_ERR_MISMATCH,
                            "checkpoint format 1 (written before format %d dropped its config.bin "
                            "section); this build reads format %d. HINT: export it with the build that "
                            "wrote it and start a new run from the weights (model.init_from), or start "
                            "a new run directory",
                            RUN_CKPT_FORMAT, RUN_CKPT_FORMAT);
    if (format != RUN_CKPT_FORMAT)
        return bp_fail_kind(err, BP_ERR_MISMATCH,
                            "checkpoint format %ld (written by a newer build); this build reads format %d",
                            format, RUN_CKPT_FORMAT);
    if (bytes != sizeof ck->state)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "state section has %zu bytes, format %d has %zu", bytes,
                            RUN_CKPT_FORMAT, sizeof ck->state);
    memcpy(&ck->state, data, sizeof ck->state);
    return 0;
}

typedef struct {
    char first[512];
    int count;
} Differences;

static void note_difference(const char *key, const char *old_value, const char *new_value, void *ctx) {
    Differences *d = ctx;
    if (d->count++ == 0) snprintf(d->first, sizeof d->first, "%s (%s -> %s)", key, old_value, new_value);
}

/* A key added to the program after a checkpoint was written is absent from its config.json and
 * takes its default when loaded. That is accepted for a key that changes no result (resume-safe,
 * e.g. training.recompute_attention): the checkpoint's run is the same run whatever its value.
 * Any other difference means the text is not a resolved configuration. */
static void note_corruption(const char *key, const char *old_value, const char *new_value, void *ctx) {
    if (strcmp(old_value, "(absent)") == 0 && config_key_resume_safe(key)) return;
    note_difference(key, old_value, new_value, ctx);
}

/* config.json: loaded with the config file's rules, and its derived keys must be what resolving
 * it gives (a stored total_steps or accumulation that disagrees is not a resolved config). */
static int open_config(RunCkpt *ck, BpError *err) {
    size_t bytes = 0;
    const char *json = ckpt_section(ck->file, "config.json", &bytes);
    if (!json) return bp_fail_kind(err, BP_ERR_CORRUPT, "no config.json section");
    if (config_load_resolved(&ck->cfg, json, bytes, "config.json", err) != 0) {
        err->kind = BP_ERR_CORRUPT;
        return -1;
    }
    ck->config_json = config_text(&ck->cfg, err);
    if (!ck->config_json) return -1;
    char *stored = strndup(json, bytes);
    if (!stored) return bp_fail(err, "out of memory reading config.json");
    Differences d = {.count = 0};
    int n = strcmp(stored, ck->config_json) ? config_json_diff(stored, ck->config_json, note_corruption, &d, err) : 0;
    free(stored);
    if (n < 0) return -1;
    if (d.count > 0) return bp_fail_kind(err, BP_ERR_CORRUPT, "config.json is not a resolved configuration: %s", d.first);
    return 0;
}

/* Every size and field of the state against the configuration and the sections. */
static int open_sizes(RunCkpt *ck, BpError *err) {
    const RunCkptState *st = &ck->state;
    const Config *cfg = &ck->cfg;
    if (st->vocab_size != cfg->model.vocab_size)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "state says vocab %d, config.json says %d", (int)st->vocab_size,
                            cfg->model.vocab_size);
    if (st->seed != cfg->training.seed)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "state says seed %llu, config.json says %llu",
                            (unsigned long long)st->seed, (unsigned long long)cfg->training.seed);
    if (st->step < 0 || st->step > cfg->total_steps)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "step %lld is outside its run of %ld steps", (long long)st->step,
                            cfg->total_steps);
    if (!isfinite(st->elapsed_s) || st->elapsed_s < 0)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "elapsed time %g is not a duration", st->elapsed_s);
    if (model_param_table(&cfg->model, cfg->model.vocab_size, &ck->table, err) != 0) {
        err->kind = BP_ERR_CORRUPT;
        return -1;
    }
    const ParamTable *t = &ck->table;
    if (st->n_tensors != t->n || st->total_floats < 0 || (uint64_t)st->total_floats != t->total)
        return bp_fail_kind(err, BP_ERR_CORRUPT,
                            "state says %d tensors / %lld floats, the model of config.json has %d / %zu",
                            (int)st->n_tensors, (long long)st->total_floats, t->n, t->total);
    size_t bytes = 0;
    ck->params = ckpt_section(ck->file, "params", &bytes);
    if (!ck->params || bytes != t->total * sizeof(float))
        return bp_fail_kind(err, BP_ERR_CORRUPT,
                            "params section has %zu bytes, the model of config.json needs %zu (%zu floats)",
                            ck->params ? bytes : 0, t->total * sizeof(float), t->total);
    ck->optimizer = ckpt_section(ck->file, "optimizer", &bytes);
    if (!ck->optimizer || bytes == 0 || bytes != st->optimizer_bytes)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "optimizer section has %zu bytes, the state says %llu",
                            ck->optimizer ? bytes : 0, (unsigned long long)st->optimizer_bytes);
    ck->vocab = ckpt_section(ck->file, "vocab", &ck->vocab_len);
    if (!ck->vocab || ck->vocab_len == 0) return bp_fail_kind(err, BP_ERR_CORRUPT, "no vocab section");
    return 0;
}

RunCkpt *run_ckpt_open(const char *path, BpError *err) {
    RunCkpt *ck = bp_calloc(1, sizeof *ck, "a checkpoint", err);
    if (!ck) return NULL;
    snprintf(ck->path, sizeof ck->path, "%s", path);
    ck->file = ckpt_open(path, err); /* its messages name the path already */
    if (!ck->file) {
        run_ckpt_close(ck);
        return NULL;
    }
    if (open_state(ck, err) != 0 || open_config(ck, err) != 0 || open_sizes(ck, err) != 0) {
        bp_err_prefix(err, "%s", path);
        run_ckpt_close(ck);
        return NULL;
    }
    return ck;
}

void run_ckpt_close(RunCkpt *ck) {
    if (!ck) return;
    ckpt_close(ck->file);
    free(ck->config_json);
    param_table_free(&ck->table);
    free(ck);
}

const char *run_ckpt_path(const RunCkpt *ck) { return ck->path; }
long run_ckpt_step(const RunCkpt *ck) { return (long)ck->state.step; }
double run_ckpt_elapsed(const RunCkpt *ck) { return ck->state.elapsed_s; }
const Config *run_ckpt_config(const RunCkpt *ck) { return &ck->cfg; }

const void *run_ckpt_vocab(const RunCkpt *ck, size_t *len) {
    *len = ck->vocab_len;
    return ck->vocab;
}

/* ---- resume and restore ----------------------------------------------------------------------- */

typedef struct {
    RunCkptChangeFn fn;
    void *ctx;
    int refused;
    char first_refused[512];
} ResumeCheck;

static void judge_change(const char *key, const char *old_value, const char *new_value, void *ctx) {
    ResumeCheck *rc = ctx;
    bool allowed = config_key_resume_safe(key);
    if (rc->fn) rc->fn(key, old_value, new_value, allowed, rc->ctx);
    if (!allowed && rc->refused++ == 0)
        snprintf(rc->first_refused, sizeof rc->first_refused, "%s (%s -> %s)", key, old_value, new_value);
}

int run_ckpt_check_resume(const RunCkpt *ck, const Config *cfg, RunCkptChangeFn fn, void *ctx,
                          BpError *err) {
    ResumeCheck rc = {.fn = fn, .ctx = ctx, .refused = 0};
    char *json = config_text(cfg, err);
    if (!json) return -1;
    int n = config_json_diff(ck->config_json, json, judge_change, &rc, err);
    free(json);
    if (n < 0) {
        bp_err_prefix(err, "%s", ck->path);
        return -1;
    }
    if (rc.refused == 0) return 0;
    char more[48] = "";
    if (rc.refused > 1) snprintf(more, sizeof more, " and %d more", rc.refused - 1);
    return bp_fail_kind(err, BP_ERR_MISMATCH,
                        "%s: the configuration changed in a way that changes the run: %s%s. HINT: resume "
                        "with the original settings, or start a new run directory",
                        ck->path, rc.first_refused, more);
}

/* The model's parameter table must be the checkpoint's: same tensors, shapes and offsets. */
static int same_shape(const RunCkpt *ck, const Model *model, BpError *err) {
    const ParamTable *a = &ck->table, *b = model_table(model);
    int differ = a->n != b->n || a->total != b->total ? 0 : -1;
    for (int i = 0; differ < 0 && i < a->n; i++) {
        const ParamInfo *p = &a->params[i], *q = &b->params[i];
        if (strcmp(p->name, q->name) || p->ndim != q->ndim || p->shape[0] != q->shape[0] ||
            p->shape[1] != q->shape[1] || p->offset != q->offset)
            differ = i;
    }
    if (differ < 0) return 0;
    return bp_fail_kind(err, BP_ERR_MISMATCH,
                        "%s: the checkpoint's model (%d tensors, %zu floats, vocab %d) differs from this "
                        "run's (%d tensors, %zu floats, vocab %d)%s%s",
                        ck->path, a->n, a->total, (int)ck->state.vocab_size, b->n, b->total,
                        model_config(model)->vocab_size, a->n == b->n ? " at tensor " : "",
                        a->n == b->n ? a->params[differ].name : "");
}

int run_ckpt_restore_params(const RunCkpt *ck, Model *model, BpError *err) {
    if (same_shape(ck, model, err) != 0) return -1;
    memcpy(model_params(model), ck->params, ck->table.total * sizeof(float));
    /* checked in the model's aligned copy: the section itself may sit at any offset of the file */
    if (model_check_finite(&ck->table, model_params(model), ck->path, err) != 0) return -1;
    return 0;
}

const void *run_ckpt_optimizer_state(const RunCkpt *ck) { return ck->optimizer; }

int run_ckpt_restore_optimizer(const RunCkpt *ck, Optimizer *opt, BpError *err) {
    size_t want = optim_state_bytes(opt);
    if (ck->state.optimizer_bytes != want)
        return bp_fail_kind(err, BP_ERR_MISMATCH,
                            "%s: optimizer state of %llu bytes, this run's optimizer (%s) keeps %zu", ck->path,
                            (unsigned long long)ck->state.optimizer_bytes, optim_describe(opt), want);
    if (optim_state_load(opt, ck->optimizer, want, err) != 0) {
        /* another optimizer or layout is a mismatch; anything else in the blob is damage */
        err->kind = err->kind == BP_ERR_USAGE ? BP_ERR_MISMATCH : BP_ERR_CORRUPT;
        bp_err_prefix(err, "%s", ck->path);
        return -1;
    }
    return 0;
}

Model *run_ckpt_model(const RunCkpt *ck, const Config *cfg, BpError *err) {
    Config *merged = bp_malloc(sizeof *merged, "the configuration", err);
    if (!merged) return NULL;
    *merged = cfg ? *cfg : ck->cfg;
    merged->model = ck->cfg.model;
    Model *model = model_create(merged, ck->cfg.model.vocab_size, err);
    free(merged);
    if (model && run_ckpt_restore_params(ck, model, err) != 0) {
        model_free(model);
        return NULL;
    }
    return model;
}
