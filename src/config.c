/* config.c: YAML -> typed, validated Config (see config.h; every key is documented in
 * configs/README.md).
 *
 * One table (KEYS / PHASE_KEYS) describes every key: its section, type, place in the struct and
 * allowed range. The file loader, --set overrides, config_resolve's range checks and the JSON
 * writer all walk that table, so a key added there is parsed, validated and printed everywhere.
 *
 * The loader reads libyaml's event stream into a small tree (depth-bounded, anchors/aliases and
 * tags refused) and applies it to the Config. Aliases are refused rather than expanded: a config
 * has no use for them and refusing them rules out "billion laughs" expansion. */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

/* enum fields are read and written as int through the table */
_Static_assert(sizeof(GeluKind) == sizeof(int), "enum size");
_Static_assert(sizeof(OptimizerKind) == sizeof(int), "enum size");
_Static_assert(sizeof(LarsForm) == sizeof(int), "enum size");
_Static_assert(sizeof(DecayFrom) == sizeof(int), "enum size");

#define CFG_MAX_DEPTH 64         /* YAML nesting bound: a config needs 3 */
#define CFG_MAX_INCLUDE 8        /* base: chain length bound */
#define CFG_MAX_FILE (1u << 20)  /* a config file over 1 MiB is not a config */
#define CFG_MAX_NODES 100000     /* YAML nodes per document */
#define CFG_DEFAULT_VOCAB 30522  /* BERT's uncased WordPiece vocab */

/* ------------------------------------------------------------------------------------------ */
/* presets and enum names                                                                      */

typedef struct {
    const char *name;
    int layers, hidden, heads;
} Preset;

static const Preset PRESETS[] = {
    {"bert-tiny", 2, 128, 2},    {"bert-mini", 4, 256, 4},    {"bert-small", 4, 512, 8},
    {"bert-medium", 8, 512, 8},  {"bert-base", 12, 768, 12},  {"bert-large", 24, 1024, 16},
};

static const char *const OPT_NAMES[] = {"lamb", "lars", "adam", "adamw"};
static const char *const GELU_NAMES[] = {"erf", "tanh"};
static const char *const LARS_NAMES[] = {"paper", "classic"};
static const char *const DECAY_NAMES[] = {"warmup", "zero"};

const char *config_optimizer_name(OptimizerKind k) {
    return (unsigned)k < BP_ARRAY_LEN(OPT_NAMES) ? OPT_NAMES[k] : "?";
}

static const Preset *find_preset(const char *name) {
    for (size_t i = 0; i < BP_ARRAY_LEN(PRESETS); i++)
        if (strcmp(PRESETS[i].name, name) == 0) return &PRESETS[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* the key table                                                                               */

typedef enum {
    K_INT,      /* int */
    K_LONG,     /* long (derived only) */
    K_U64,      /* uint64_t */
    K_DOUBLE,   /* double, always finite */
    K_BOOL,     /* bool: true | false */
    K_ENUM,     /* int-sized enum, by name */
    K_PRESET,   /* model.preset: a preset name; applies the preset */
    K_STR,      /* plain string (derived "source" only) */
    K_PATH,     /* path, resolved against the naming file's directory; null -> "" */
    K_PATTERNS, /* list of name patterns (char[CFG_MAX_PATTERNS][CFG_PATTERN_LEN]) */
    K_PATHS,    /* list of paths (char[CFG_MAX_INPUTS][CFG_PATH_MAX]) */
} KeyType;

enum {
    F_LO_OPEN = 1,  /* range excludes lo */
    F_HI_OPEN = 2,  /* range excludes hi */
    F_UNSET = 4,    /* -1 is also allowed and means "not set" */
    F_DERIVED = 8,  /* computed by config_resolve: written to JSON, not settable */
    F_NONEMPTY = 16 /* a path that must not be empty */
};

typedef struct {
    const char *section; /* "model", "data", "optimizer", "schedule", "training", "phases", "" */
    const char *name;
    KeyType type;
    size_t off;       /* in Config, or in PhaseConfig for "phases" */
    size_t cap;       /* string capacity (bytes) */
    size_t count_off; /* lists: offset of the int count */
    int max_items;    /* lists */
    double lo, hi;
    unsigned flags;
    const char *const *names; /* enums */
    int n_names;
    int explicit_bit; /* model size keys remember that they were given; -1 otherwise */
} KeyDef;

#define OFF(f) offsetof(Config, f)
#define POFF(f) offsetof(PhaseConfig, f)
#define NUM(sec, nm, ty, field, lo, hi, fl) {sec, nm, ty, OFF(field), 0, 0, 0, lo, hi, fl, NULL, 0, -1}
#define MSIZE(nm, field, bit, hi) {"model", nm, K_INT, OFF(field), 0, 0, 0, 1, hi, 0, NULL, 0, bit}
#define ENUM(sec, nm, field, tab) \
    {sec, nm, K_ENUM, OFF(field), 0, 0, 0, 0, 0, 0, tab, (int)BP_ARRAY_LEN(tab), -1}
#define BOOL(sec, nm, field) {sec, nm, K_BOOL, OFF(field), 0, 0, 0, 0, 0, 0, NULL, 0, -1}
#define PATH(sec, nm, field, fl) \
    {sec, nm, K_PATH, OFF(field), sizeof(((Config *)0)->field), 0, 0, 0, 0, fl, NULL, 0, -1}
#define PNUM(nm, ty, field, lo, hi, fl) {"phases", nm, ty, POFF(field), 0, 0, 0, lo, hi, fl, NULL, 0, -1}

#define IMAX ((double)INT_MAX)

static const KeyDef KEYS[] = {
    {"model", "preset", K_PRESET, OFF(model.preset), sizeof(((Config *)0)->model.preset), 0, 0, 0,
     0, 0, NULL, 0, -1},
    MSIZE("layers", model.layers, 0, 1024),
    MSIZE("hidden", model.hidden, 1, 65536),
    MSIZE("heads", model.heads, 2, 4096),
    MSIZE("intermediate", model.intermediate, 3, 1 << 20),
    NUM("model", "vocab_size", K_INT, model.vocab_size, 0, 1 << 24, 0),
    NUM("model", "max_position", K_INT, model.max_position, 8, 65536, 0),
    NUM("model", "type_vocab_size", K_INT, model.type_vocab_size, 2, 1024, 0),
    NUM("model", "dropout", K_DOUBLE, model.dropout, 0, 1, F_HI_OPEN),
    NUM("model", "attention_dropout", K_DOUBLE, model.attention_dropout, 0, 1, F_HI_OPEN),
    NUM("model", "initializer_range", K_DOUBLE, model.initializer_range, 0, 1, F_LO_OPEN),
    NUM("model", "layer_norm_eps", K_DOUBLE, model.layer_norm_eps, 0, 1, F_LO_OPEN | F_HI_OPEN),
    ENUM("model", "gelu", model.gelu, GELU_NAMES),
    PATH("model", "init_from", model.init_from, 0),

    PATH("data", "vocab", data.vocab, 0),
    {"data", "input", K_PATHS, OFF(data.input), CFG_PATH_MAX, OFF(data.n_input), CFG_MAX_INPUTS, 0,
     0, 0, NULL, 0, -1},
    PATH("data", "train", data.train, 0),
    PATH("data", "eval", data.eval, 0),
    NUM("data", "eval_fraction", K_DOUBLE, data.eval_fraction, 0, 1, F_HI_OPEN),
    NUM("data", "masked_lm_prob", K_DOUBLE, data.masked_lm_prob, 0, 1, F_LO_OPEN | F_HI_OPEN),
    NUM("data", "short_seq_prob", K_DOUBLE, data.short_seq_prob, 0, 1, F_HI_OPEN),
    BOOL("data", "whole_word_mask", data.whole_word_mask),
    BOOL("data", "lowercase", data.lowercase),
    NUM("data", "vocab_size", K_INT, data.vocab_size, 16, 1 << 24, 0),
    NUM("data", "eval_examples", K_INT, data.eval_examples, 1, IMAX, 0),

    ENUM("optimizer", "name", optimizer.name, OPT_NAMES),
    NUM("optimizer", "beta1", K_DOUBLE, optimizer.beta1, 0, 1, F_HI_OPEN),
    NUM("optimizer", "beta2", K_DOUBLE, optimizer.beta2, 0, 1, F_HI_OPEN),
    NUM("optimizer", "epsilon", K_DOUBLE, optimizer.epsilon, 0, 1, F_LO_OPEN | F_HI_OPEN),
    NUM("optimizer", "weight_decay", K_DOUBLE, optimizer.weight_decay, 0, INFINITY, F_HI_OPEN),
    BOOL("optimizer", "bias_correction", optimizer.bias_correction),
    NUM("optimizer", "clip_grad_norm", K_DOUBLE, optimizer.clip_grad_norm, 0, INFINITY, F_HI_OPEN),
    {"optimizer", "exclude_from_weight_decay", K_PATTERNS, OFF(optimizer.exclude_from_weight_decay),
     CFG_PATTERN_LEN, OFF(optimizer.n_exclude_from_weight_decay), CFG_MAX_PATTERNS, 0, 0, 0, NULL,
     0, -1},
    {"optimizer", "exclude_from_layer_adaptation", K_PATTERNS,
     OFF(optimizer.exclude_from_layer_adaptation), CFG_PATTERN_LEN,
     OFF(optimizer.n_exclude_from_layer_adaptation), CFG_MAX_PATTERNS, 0, 0, 0, NULL, 0, -1},
    NUM("optimizer", "gamma_l", K_DOUBLE, optimizer.gamma_l, 0, INFINITY, F_HI_OPEN),
    NUM("optimizer", "gamma_u", K_DOUBLE, optimizer.gamma_u, 0, INFINITY, F_HI_OPEN),
    ENUM("optimizer", "lars_form", optimizer.lars_form, LARS_NAMES),
    NUM("optimizer", "momentum", K_DOUBLE, optimizer.momentum, 0, 1, F_HI_OPEN),
    NUM("optimizer", "eta", K_DOUBLE, optimizer.eta, 0, INFINITY, F_LO_OPEN | F_HI_OPEN),

    NUM("schedule", "lr", K_DOUBLE, schedule.lr, 0, INFINITY, F_LO_OPEN | F_HI_OPEN),
    NUM("schedule", "warmup_steps", K_INT, schedule.warmup_steps, 0, IMAX, F_UNSET),
    NUM("schedule", "warmup_ratio", K_DOUBLE, schedule.warmup_ratio, 0, 1, F_HI_OPEN),
    NUM("schedule", "decay_power", K_DOUBLE, schedule.decay_power, 0, 100, 0),
    NUM("schedule", "end_lr", K_DOUBLE, schedule.end_lr, 0, INFINITY, F_HI_OPEN),
    ENUM("schedule", "decay_from", schedule.decay_from, DECAY_NAMES),

    NUM("training", "micro_batch", K_INT, training.micro_batch, 1, 1 << 20, 0),
    NUM("training", "seed", K_U64, training.seed, 0, 0, 0),
    PATH("training", "run_dir", training.run_dir, F_NONEMPTY),
    NUM("training", "checkpoint_every", K_INT, training.checkpoint_every, 0, IMAX, 0),
    NUM("training", "keep_checkpoints", K_INT, training.keep_checkpoints, 1, 1000000, 0),
    NUM("training", "log_every", K_INT, training.log_every, 1, IMAX, 0),
    NUM("training", "eval_every", K_INT, training.eval_every, 0, IMAX, 0),
    NUM("training", "threads", K_INT, training.threads, 0, 4096, 0),
    NUM("training", "trust_ratio_every", K_INT, training.trust_ratio_every, 0, IMAX, 0),
    BOOL("training", "skip_nonfinite", training.skip_nonfinite),
    NUM("training", "max_memory_gb", K_DOUBLE, training.max_memory_gb, 0, INFINITY, F_HI_OPEN),

    /* top-level values written to the resolved JSON; a file cannot set them */
    {"", "source", K_STR, OFF(source), CFG_PATH_MAX, 0, 0, 0, 0, F_DERIVED, NULL, 0, -1},
    NUM("", "world_size", K_INT, world_size, 1, 1 << 20, F_DERIVED),
    NUM("", "total_steps", K_LONG, total_steps, 0, 0, F_DERIVED),
};

static const KeyDef PHASE_KEYS[] = {
    PNUM("seq_len", K_INT, seq_len, 8, 65536, 0),
    PNUM("batch_size", K_INT, batch_size, 1, IMAX, 0),
    PNUM("steps", K_INT, steps, 1, IMAX, 0),
    PNUM("max_predictions_per_seq", K_INT, max_predictions_per_seq, 0, 65536, 0),
    {"phases", "restart_schedule", K_BOOL, POFF(restart_schedule), 0, 0, 0, 0, 0, 0, NULL, 0, -1},
    PNUM("lr", K_DOUBLE, lr, 0, INFINITY, F_LO_OPEN | F_HI_OPEN | F_UNSET),
    PNUM("warmup_steps", K_INT, warmup_steps, 0, IMAX, F_UNSET),
    PNUM("warmup_ratio", K_DOUBLE, warmup_ratio, 0, 1, F_HI_OPEN | F_UNSET),
    PNUM("accumulation", K_INT, accumulation, 0, 0, F_DERIVED),
    PNUM("first_step", K_LONG, first_step, 0, 0, F_DERIVED),
    PNUM("segment_start", K_LONG, segment_start, 0, 0, F_DERIVED),
    PNUM("segment_steps", K_LONG, segment_steps, 0, 0, F_DERIVED),
    PNUM("segment_warmup", K_LONG, segment_warmup, 0, 0, F_DERIVED),
    PNUM("segment_lr", K_DOUBLE, segment_lr, 0, 0, F_DERIVED),
};

/* the phase keys a file must give */
static const char *const PHASE_REQUIRED[] __attribute__((unused)) = {"seq_len", "batch_size", "steps"};

static const char *const SECTIONS[] __attribute__((unused)) = {"model", "data", "optimizer", "schedule", "training"};

/* ------------------------------------------------------------------------------------------ */
/* defaults                                                                                    */

static void copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static void phase_defaults(PhaseConfig *p) {
    memset(p, 0, sizeof *p);
    p->lr = -1;
    p->warmup_steps = -1;
    p->warmup_ratio = -1;
}

/* Sizes from the preset for every size key not given explicitly; intermediate = 4H unless given. */
static void model_apply_preset(Config *cfg) {
    const Preset *p = find_preset(cfg->model.preset);
    ModelConfig *m = &cfg->model;
    if (p) {
        if (!(cfg->model_explicit & 1u)) m->layers = p->layers;
        if (!(cfg->model_explicit & 2u)) m->hidden = p->hidden;
        if (!(cfg->model_explicit & 4u)) m->heads = p->heads;
    }
    if (!(cfg->model_explicit & 8u) && m->hidden > 0 && m->hidden <= (1 << 20) / 4)
        m->intermediate = 4 * m->hidden;
}

void config_defaults(Config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    ModelConfig *m = &cfg->model;
    copy_str(m->preset, sizeof m->preset, "bert-base");
    m->vocab_size = 0;
    m->max_position = 512;
    m->type_vocab_size = 2;
    m->dropout = 0.1;
    m->attention_dropout = 0.1;
    m->initializer_range = 0.02;
    m->layer_norm_eps = 1e-12;
    m->gelu = GELU_ERF;
    model_apply_preset(cfg);

    DataConfig *d = &cfg->data;
    d->eval_fraction = 0.01;
    d->masked_lm_prob = 0.15;
    d->short_seq_prob = 0.1;
    d->whole_word_mask = false;
    d->lowercase = true;
    d->vocab_size = 8192;
    d->eval_examples = 1024;

    OptimConfig *o = &cfg->optimizer;
    o->name = OPT_LAMB;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->epsilon = 1e-6;
    o->weight_decay = 0.01;
    o->bias_correction = true;
    o->clip_grad_norm = 1.0;
    copy_str(o->exclude_from_weight_decay[0], CFG_PATTERN_LEN, "bias");
    copy_str(o->exclude_from_weight_decay[1], CFG_PATTERN_LEN, "LayerNorm");
    o->n_exclude_from_weight_decay = 2;
    copy_str(o->exclude_from_layer_adaptation[0], CFG_PATTERN_LEN, "bias");
    copy_str(o->exclude_from_layer_adaptation[1], CFG_PATTERN_LEN, "LayerNorm");
    o->n_exclude_from_layer_adaptation = 2;
    o->gamma_l = 0;
    o->gamma_u = 0;
    o->lars_form = LARS_PAPER;
    o->momentum = 0.9;
    o->eta = 0.001;

    ScheduleConfig *s = &cfg->schedule;
    s->lr = 1e-4;
    s->warmup_steps = -1;
    s->warmup_ratio = 0.01;
    s->decay_power = 1.0;
    s->end_lr = 0.0;
    s->decay_from = DECAY_FROM_WARMUP;

    for (int i = 0; i < CFG_MAX_PHASES; i++) phase_defaults(&cfg->phases[i]);
    cfg->n_phases = 0;

    TrainingConfig *t = &cfg->training;
    t->micro_batch = 8;
    t->seed = 12345;
    copy_str(t->run_dir, sizeof t->run_dir, "runs/default");
    t->checkpoint_every = 1000;
    t->keep_checkpoints = 3;
    t->log_every = 1;
    t->eval_every = 0;
    t->threads = 0;
    t->trust_ratio_every = 100;
    t->skip_nonfinite = false;
    t->max_memory_gb = 0;

    cfg->world_size = 1;
    cfg->total_steps = 0;
    cfg->source[0] = 0;
    cfg->model_explicit = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                               */

/* A value quoted in a message: at most 60 bytes, control bytes escaped. */
__attribute__((unused)) static const char *quote_text(const char *s, char *buf, size_t cap) {
    size_t o = 0, i = 0;
    for (; s[i] && o + 8 < cap && i < 60; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        else buf[o++] = (char)c;
    }
    if (s[i] && o + 4 < cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = 0;
    return buf;
}

static void fmt_bound(char *buf, size_t cap, double v, KeyType t) {
    if (isinf(v)) snprintf(buf, cap, "inf");
    else if (t == K_INT || t == K_LONG) snprintf(buf, cap, "%.0f", v);
    else snprintf(buf, cap, "%g", v);
}

/* "[0, 1)" style range text, plus "(or -1 ...)" for keys with an unset value */
static void fmt_range(const KeyDef *k, char *buf, size_t cap) {
    char lo[40], hi[40];
    fmt_bound(lo, sizeof lo, k->lo, k->type);
    fmt_bound(hi, sizeof hi, k->hi, k->type);
    snprintf(buf, cap, "%c%s, %s%c%s", (k->flags & F_LO_OPEN) ? '(' : '[', lo, hi,
             (k->flags & F_HI_OPEN) ? ')' : ']', (k->flags & F_UNSET) ? ", or -1 for unset" : "");
}

static bool in_range(const KeyDef *k, double v) {
    if (k->flags & F_UNSET && v == -1) return true;
    if (!isfinite(v)) return false;
    bool lo_ok = (k->flags & F_LO_OPEN) ? v > k->lo : v >= k->lo;
    bool hi_ok = (k->flags & F_HI_OPEN) ? v < k->hi : v <= k->hi;
    return lo_ok && hi_ok;
}

static void key_fullname(const KeyDef *k, int phase, char *buf, size_t cap) {
    if (phase >= 0) snprintf(buf, cap, "phases[%d].%s", phase, k->name);
    else if (k->section[0]) snprintf(buf, cap, "%s.%s", k->section, k->name);
    else snprintf(buf, cap, "%s", k->name);
}

/* Base address of a key's field: the Config, or the phase. */
__attribute__((unused)) static void *key_field(const KeyDef *k, Config *cfg, PhaseConfig *ph) {
    return (char *)(ph ? (void *)ph : (void *)cfg) + k->off;
}

static double num_value(const KeyDef *k, const void *field) {
    switch (k->type) {
    case K_INT: return *(const int *)field;
    case K_LONG: return (double)*(const long *)field;
    case K_DOUBLE: return *(const double *)field;
    default: return 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* config_resolve                                                                              */

/* Range and value checks of one key as it stands (used for fields set directly in C). */
static int check_key(const KeyDef *k, const Config *cfg, const PhaseConfig *ph, int phase,
                     BpError *err) {
    if (k->flags & F_DERIVED) return 0;
    char name[160], range[128];
    key_fullname(k, phase, name, sizeof name);
    const void *field = (const char *)(ph ? (const void *)ph : (const void *)cfg) + k->off;
    switch (k->type) {
    case K_INT:
    case K_DOUBLE: {
        double v = num_value(k, field);
        if (!in_range(k, v)) {
            fmt_range(k, range, sizeof range);
            return bp_fail_usage(err, "%s = %g is out of range %s", name, v, range);
        }
        return 0;
    }
    case K_ENUM: {
        int v = *(const int *)field;
        if (v < 0 || v >= k->n_names)
            return bp_fail_usage(err, "%s has no valid value (%d)", name, v);
        return 0;
    }
    case K_PRESET:
        if (!find_preset((const char *)field))
            return bp_fail_usage(err, "%s = '%s' is not a preset", name, (const char *)field);
        return 0;
    case K_PATH:
        if ((k->flags & F_NONEMPTY) && !((const char *)field)[0])
            return bp_fail_usage(err, "%s must not be empty", name);
        return 0;
    case K_PATTERNS:
    case K_PATHS: {
        int n = *(const int *)((const char *)cfg + k->count_off);
        if (n < 0 || n > k->max_items)
            return bp_fail_usage(err, "%s has %d entries (at most %d)", name, n, k->max_items);
        for (int i = 0; i < n; i++) {
            const char *item = (const char *)field + (size_t)i * k->cap;
            if (!item[0]) return bp_fail_usage(err, "%s[%d] is empty", name, i);
        }
        return 0;
    }
    default: return 0;
    }
}

/* Lines of a vocab file (id = line number), or 0 when the file does not exist. */
static int count_vocab_lines(const char *path, long *count, BpError *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) {
            *count = 0;
            return 0;
        }
        return bp_fail_usage(err, "data.vocab: cannot open %s: %s", path, strerror(errno));
    }
    char buf[1 << 16];
    long lines = 0;
    int last = '\n';
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; i < n; i++)
            if (buf[i] == '\n') lines++;
        last = (unsigned char)buf[n - 1];
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) return bp_fail_usage(err, "data.vocab: cannot read %s", path);
    if (last != '\n') lines++;
    *count = lines;
    return 0;
}

static long round_half_up(double x) { return (long)floor(x + 0.5); }

int config_resolve(Config *cfg, BpError *err) {
    for (size_t i = 0; i < BP_ARRAY_LEN(KEYS); i++)
        if (check_key(&KEYS[i], cfg, NULL, -1, err)) return -1;
    if (cfg->world_size < 1 || cfg->world_size > (1 << 20))
        return bp_fail_usage(err, "world_size = %d is out of range [1, %d]", cfg->world_size, 1 << 20);

    ModelConfig *m = &cfg->model;
    if (m->hidden % m->heads != 0)
        return bp_fail_usage(err, "model.hidden %d is not divisible by model.heads %d", m->hidden,
                             m->heads);
    OptimConfig *o = &cfg->optimizer;
    if (o->gamma_l > 0 && o->gamma_u > 0 && o->gamma_l > o->gamma_u)
        return bp_fail_usage(err,
                             "optimizer.gamma_l %g is above optimizer.gamma_u %g: the trust ratio "
                             "clamp min(max(z, gamma_l), gamma_u) needs gamma_l <= gamma_u",
                             o->gamma_l, o->gamma_u);

    if (cfg->n_phases < 1)
        return bp_fail_usage(err, "no phases: the config needs at least one entry under phases: "
                                  "(seq_len, batch_size, steps)");
    if (cfg->n_phases > CFG_MAX_PHASES)
        return bp_fail_usage(err, "%d phases: at most %d are supported", cfg->n_phases,
                             CFG_MAX_PHASES);

    long long per_step = (long long)cfg->training.micro_batch * cfg->world_size;
    long total = 0;
    for (int i = 0; i < cfg->n_phases; i++) {
        PhaseConfig *p = &cfg->phases[i];
        for (size_t j = 0; j < BP_ARRAY_LEN(PHASE_KEYS); j++)
            if (check_key(&PHASE_KEYS[j], cfg, p, i, err)) return -1;
        if (p->seq_len > m->max_position)
            return bp_fail_usage(err, "phases[%d]: seq_len %d is above model.max_position %d", i,
                                 p->seq_len, m->max_position);
        if (p->batch_size % per_step != 0)
            return bp_fail_usage(err,
                                 "phases[%d]: batch_size %d is not divisible by training.micro_batch "
                                 "%d x %d rank(s)",
                                 i, p->batch_size, cfg->training.micro_batch, cfg->world_size);
        if (p->max_predictions_per_seq == 0) {
            /* the documented default: the expected number of masked tokens, rounded up */
            double want = ceil(cfg->data.masked_lm_prob * p->seq_len);
            p->max_predictions_per_seq = want < 1 ? 1 : (int)want;
        }
        if (p->max_predictions_per_seq > p->seq_len)
            return bp_fail_usage(err, "phases[%d]: max_predictions_per_seq %d is above seq_len %d",
                                 i, p->max_predictions_per_seq, p->seq_len);
        if (!p->restart_schedule && (p->lr != -1 || p->warmup_steps != -1 || p->warmup_ratio != -1))
            return bp_fail_usage(err,
                                 "phases[%d] sets %s but not restart_schedule: true; a phase without "
                                 "it continues the running schedule, so its own lr/warmup would be "
                                 "ignored. HINT: add restart_schedule: true to re-warm there, or set "
                                 "schedule.%s",
                                 i,
                                 p->lr != -1             ? "lr"
                                 : p->warmup_steps != -1 ? "warmup_steps"
                                                         : "warmup_ratio",
                                 p->lr != -1 ? "lr" : "warmup_steps / schedule.warmup_ratio");
        if (p->warmup_steps != -1 && p->warmup_ratio != -1)
            return bp_fail_usage(err,
                                 "phases[%d] sets both warmup_steps and warmup_ratio: give one", i);
        p->accumulation = (int)(p->batch_size / per_step);
        p->first_step = total;
        total += p->steps;
    }
    cfg->total_steps = total;

    /* schedule segments: phase 0 and every restart_schedule phase start one */
    for (int i = 0; i < cfg->n_phases;) {
        int end = i + 1;
        while (end < cfg->n_phases && !cfg->phases[end].restart_schedule) end++;
        PhaseConfig *head = &cfg->phases[i];
        long seg_steps = 0;
        for (int j = i; j < end; j++) seg_steps += cfg->phases[j].steps;
        double lr = head->lr != -1 ? head->lr : cfg->schedule.lr;
        long warm;
        if (head->warmup_steps != -1) warm = head->warmup_steps;
        else if (head->warmup_ratio != -1) warm = round_half_up(head->warmup_ratio * (double)seg_steps);
        else if (cfg->schedule.warmup_steps != -1) warm = cfg->schedule.warmup_steps;
        else warm = round_half_up(cfg->schedule.warmup_ratio * (double)seg_steps);
        if (warm >= seg_steps)
            return bp_fail_usage(err,
                                 "phases[%d]: warmup of %ld steps is not shorter than its schedule "
                                 "segment (%ld steps, phases[%d..%d]); the decay needs at least one step",
                                 i, warm, seg_steps, i, end - 1);
        if (cfg->schedule.end_lr > lr)
            return bp_fail_usage(err,
                                 "schedule.end_lr %g is above the peak lr %g of the schedule segment "
                                 "starting at phases[%d]",
                                 cfg->schedule.end_lr, lr, i);
        for (int j = i; j < end; j++) {
            PhaseConfig *p = &cfg->phases[j];
            p->segment_start = head->first_step;
            p->segment_steps = seg_steps;
            p->segment_warmup = warm;
            p->segment_lr = lr;
        }
        i = end;
    }

    if (m->vocab_size == 0) {
        long n = 0;
        if (cfg->data.vocab[0] && count_vocab_lines(cfg->data.vocab, &n, err)) return -1;
        if (n == 0) n = CFG_DEFAULT_VOCAB;
        if (n > (1 << 24))
            return bp_fail_usage(err, "data.vocab %s has %ld lines (at most %d)", cfg->data.vocab,
                                 n, 1 << 24);
        m->vocab_size = (int)n;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* not built yet (step 2 onward)                                                               */

int config_load(Config *cfg, const char *path, BpError *err) {
    (void)cfg;
    return bp_fail_usage(err, "%s: config loading is not built yet", path);
}
int config_apply_override(Config *cfg, const char *assignment, BpError *err) {
    (void)cfg;
    return bp_fail_usage(err, "--set %s: overrides are not built yet", assignment);
}
int config_load_cli(Config *cfg, const char *path, char *const *sets, int n_sets, int world_size,
                    BpError *err) {
    config_defaults(cfg);
    if (path && config_load(cfg, path, err)) return -1;
    for (int i = 0; i < n_sets; i++)
        if (config_apply_override(cfg, sets[i], err)) return -1;
    cfg->world_size = world_size;
    return config_resolve(cfg, err);
}
void config_write_json(const Config *cfg, FILE *out) {
    (void)cfg;
    (void)out;
}
void config_write_summary(const Config *cfg, long long n_params, FILE *out) {
    (void)cfg;
    (void)n_params;
    (void)out;
}
