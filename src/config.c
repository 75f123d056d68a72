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
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "schedule.h"

/* enum fields are read and written as int through the table */
_Static_assert(sizeof(GeluKind) == sizeof(int), "enum size");
_Static_assert(sizeof(PrecisionKind) == sizeof(int), "enum size");
_Static_assert(sizeof(OptimizerKind) == sizeof(int), "enum size");
_Static_assert(sizeof(LarsForm) == sizeof(int), "enum size");
_Static_assert(sizeof(DecayFrom) == sizeof(int), "enum size");
_Static_assert(sizeof(ScheduleForm) == sizeof(int), "enum size");

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
static const char *const PRECISION_NAMES[] = {"auto", "fp32", "bf16"};
static const char *const LARS_NAMES[] = {"paper", "classic"};
static const char *const DECAY_NAMES[] = {"warmup", "zero"};
static const char *const FORM_NAMES[] = {"bert", "nvidia"};
static const char *const INPUT_FORMAT_NAMES[] = {"lines", "documents_per_line", "jsonl"}; /* TextFormat */

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
    F_NONEMPTY = 16, /* a path that must not be empty */
    /* may change when a run resumes without changing its results: logging, checkpointing, threads,
       evaluation, paths only `prepare` or a fresh start reads. A micro-batch (and the accumulation
       derived from it) too: examples and dropout are keyed by global example index, so only the
       order of the floating-point gradient sums changes. */
    F_RESUME_SAFE = 32,
    /* derived (a file cannot set it) but an input of config_resolve, not computed by it: a resolved
       JSON carries it back (source, world_size) */
    F_RESOLVE_INPUT = 64
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
#define BOOL(sec, nm, field, fl) {sec, nm, K_BOOL, OFF(field), 0, 0, 0, 0, 0, fl, NULL, 0, -1}
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
    PATH("model", "init_from", model.init_from, F_RESUME_SAFE),

    PATH("data", "vocab", data.vocab, 0),
    {"data", "input", K_PATHS, OFF(data.input), CFG_PATH_MAX, OFF(data.n_input), CFG_MAX_INPUTS, 0,
     0, F_RESUME_SAFE, NULL, 0, -1},
    PATH("data", "train", data.train, 0),
    PATH("data", "eval", data.eval, F_RESUME_SAFE),
    NUM("data", "eval_fraction", K_DOUBLE, data.eval_fraction, 0, 1, F_HI_OPEN | F_RESUME_SAFE),
    NUM("data", "masked_lm_prob", K_DOUBLE, data.masked_lm_prob, 0, 1, F_LO_OPEN | F_HI_OPEN),
    NUM("data", "short_seq_prob", K_DOUBLE, data.short_seq_prob, 0, 1, F_HI_OPEN),
    BOOL("data", "whole_word_mask", data.whole_word_mask, 0),
    BOOL("data", "lowercase", data.lowercase, 0),
    NUM("data", "vocab_size", K_INT, data.vocab_size, 16, 1 << 24, F_RESUME_SAFE),
    NUM("data", "eval_examples", K_INT, data.eval_examples, 1, IMAX, F_RESUME_SAFE),
    ENUM("data", "input_format", data.input_format, INPUT_FORMAT_NAMES),
    {"data", "jsonl_field", K_STR, OFF(data.jsonl_field), sizeof(((Config *)0)->data.jsonl_field), 0, 0, 0, 0,
     F_NONEMPTY | F_RESUME_SAFE, NULL, 0, -1},
    NUM("data", "max_bad_records", K_DOUBLE, data.max_bad_records, 0, 1, F_RESUME_SAFE),
    NUM("data", "vocab_sample_mb", K_DOUBLE, data.vocab_sample_mb, 0, 1e9, F_RESUME_SAFE),

    ENUM("optimizer", "name", optimizer.name, OPT_NAMES),
    NUM("optimizer", "beta1", K_DOUBLE, optimizer.beta1, 0, 1, F_HI_OPEN),
    NUM("optimizer", "beta2", K_DOUBLE, optimizer.beta2, 0, 1, F_HI_OPEN),
    NUM("optimizer", "epsilon", K_DOUBLE, optimizer.epsilon, 0, 1, F_LO_OPEN | F_HI_OPEN),
    NUM("optimizer", "weight_decay", K_DOUBLE, optimizer.weight_decay, 0, 10, 0),
    BOOL("optimizer", "bias_correction", optimizer.bias_correction, 0),
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

    NUM("schedule", "lr", K_DOUBLE, schedule.lr, 0, 1000, F_LO_OPEN),
    NUM("schedule", "warmup_steps", K_INT, schedule.warmup_steps, 0, IMAX, F_UNSET),
    NUM("schedule", "warmup_ratio", K_DOUBLE, schedule.warmup_ratio, 0, 1, F_HI_OPEN),
    NUM("schedule", "decay_power", K_DOUBLE, schedule.decay_power, 0, 100, 0),
    NUM("schedule", "end_lr", K_DOUBLE, schedule.end_lr, 0, 1000, 0),
    ENUM("schedule", "decay_from", schedule.decay_from, DECAY_NAMES),
    ENUM("schedule", "form", schedule.form, FORM_NAMES),

    NUM("training", "micro_batch", K_INT, training.micro_batch, 1, 1 << 20, F_RESUME_SAFE),
    NUM("training", "seed", K_U64, training.seed, 0, 0, 0),
    PATH("training", "run_dir", training.run_dir, F_NONEMPTY | F_RESUME_SAFE),
    NUM("training", "checkpoint_every", K_INT, training.checkpoint_every, 0, IMAX, F_RESUME_SAFE),
    NUM("training", "keep_checkpoints", K_INT, training.keep_checkpoints, 1, 1000000, F_RESUME_SAFE),
    NUM("training", "log_every", K_INT, training.log_every, 1, IMAX, F_RESUME_SAFE),
    NUM("training", "eval_every", K_INT, training.eval_every, 0, IMAX, F_RESUME_SAFE),
    NUM("training", "threads", K_INT, training.threads, 0, 4096, F_RESUME_SAFE),
    ENUM("training", "precision", training.precision, PRECISION_NAMES),
    NUM("training", "trust_ratio_every", K_INT, training.trust_ratio_every, 0, IMAX, F_RESUME_SAFE),
    BOOL("training", "skip_nonfinite", training.skip_nonfinite, F_RESUME_SAFE),
    BOOL("training", "shard_optimizer", training.shard_optimizer, F_RESUME_SAFE),
    BOOL("training", "recompute_attention", training.recompute_attention, F_RESUME_SAFE),
    NUM("training", "max_memory_gb", K_DOUBLE, training.max_memory_gb, 0, 1e6, F_RESUME_SAFE),

    /* top-level values written to the resolved JSON; a file cannot set them */
    {"", "source", K_STR, OFF(source), CFG_PATH_MAX, 0, 0, 0, 0, F_DERIVED | F_RESOLVE_INPUT | F_RESUME_SAFE,
     NULL, 0, -1},
    NUM("", "world_size", K_INT, world_size, 1, 1 << 20, F_DERIVED | F_RESOLVE_INPUT | F_RESUME_SAFE),
    NUM("", "total_steps", K_LONG, total_steps, 0, 0, F_DERIVED),
};

static const KeyDef PHASE_KEYS[] = {
    PNUM("seq_len", K_INT, seq_len, 8, 65536, 0),
    PNUM("batch_size", K_INT, batch_size, 1, IMAX, 0),
    PNUM("steps", K_INT, steps, 1, IMAX, 0),
    PNUM("max_predictions_per_seq", K_INT, max_predictions_per_seq, 0, 65536, 0),
    PNUM("micro_batch", K_INT, micro_batch, 0, 1 << 20, F_RESUME_SAFE),
    {"phases", "restart_schedule", K_BOOL, POFF(restart_schedule), 0, 0, 0, 0, 0, 0, NULL, 0, -1},
    PNUM("lr", K_DOUBLE, lr, 0, 1000, F_LO_OPEN | F_UNSET),
    PNUM("warmup_steps", K_INT, warmup_steps, 0, IMAX, F_UNSET),
    PNUM("warmup_ratio", K_DOUBLE, warmup_ratio, 0, 1, F_HI_OPEN | F_UNSET),
    {"phases", "reset_optimizer_step", K_BOOL, POFF(reset_optimizer_step), 0, 0, 0, 0, 0, 0, NULL, 0, -1},
    PNUM("accumulation", K_INT, accumulation, 0, 0, F_DERIVED | F_RESUME_SAFE),
    PNUM("first_step", K_LONG, first_step, 0, 0, F_DERIVED),
    PNUM("segment_start", K_LONG, segment_start, 0, 0, F_DERIVED),
    PNUM("segment_steps", K_LONG, segment_steps, 0, 0, F_DERIVED),
    PNUM("segment_warmup", K_LONG, segment_warmup, 0, 0, F_DERIVED),
    PNUM("segment_lr", K_DOUBLE, segment_lr, 0, 0, F_DERIVED),
};

/* the phase keys a file must give */
static const char *const PHASE_REQUIRED[] = {"seq_len", "batch_size", "steps"};

static const char *const SECTIONS[] = {"model", "data", "optimizer", "schedule", "training"};

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
    d->input_format = 0; /* TEXT_FORMAT_LINES */
    snprintf(d->jsonl_field, sizeof d->jsonl_field, "text");
    d->max_bad_records = 0.001;
    d->vocab_sample_mb = 0;

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
    s->decay_from = DECAY_FROM_ZERO;
    s->form = SCHEDULE_BERT;

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
    t->precision = PRECISION_FP32;
    t->trust_ratio_every = 100;
    t->skip_nonfinite = false;
    t->shard_optimizer = false;
    t->recompute_attention = true;
    t->max_memory_gb = 0;

    cfg->world_size = 1;
    cfg->total_steps = 0;
    cfg->source[0] = 0;
    cfg->model_explicit = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                               */

/* A value quoted in a message: at most 60 bytes, control bytes escaped. */
static const char *quote_text(const char *s, char *buf, size_t cap) {
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
static void *key_field(const KeyDef *k, Config *cfg, PhaseConfig *ph) {
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
    case K_STR:
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
    /* O_NONBLOCK: a FIFO must be refused, not waited on for a writer */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) {
            *count = 0;
            return 0;
        }
        return bp_fail_usage(err, "data.vocab: cannot open %s: %s", path, strerror(errno));
    }
    struct stat st;
    FILE *f = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || !(f = fdopen(fd, "rb"))) {
        close(fd);
        return bp_fail_usage(err, "data.vocab: %s is not a regular file", path);
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

/* The warmup of the schedule segment that phase i heads (seg_steps steps): W, the steps t < W that
 * warm up, and for form nvidia the share r. The head phase's warmup wins over the schedule
 * section's, steps over a ratio. Form bert rounds a ratio half up; form nvidia keeps r, as NVIDIA's
 * warmup_proportion, and W counts the steps whose progress (t + 1) / S is below it. */
static int segment_warmup(const Config *cfg, int i, long seg_steps, long *warm, double *ratio,
                          BpError *err) {
    const PhaseConfig *head = &cfg->phases[i];
    const ScheduleConfig *s = &cfg->schedule;
    long steps = -1;
    double r = -1;
    if (head->warmup_steps != -1) steps = head->warmup_steps;
    else if (head->warmup_ratio != -1) r = head->warmup_ratio;
    else if (s->warmup_steps != -1) steps = s->warmup_steps;
    else r = s->warmup_ratio;
    *ratio = 0;
    if (s->form == SCHEDULE_BERT) {
        *warm = steps != -1 ? steps : round_half_up(r * (double)seg_steps);
        return 0;
    }
    if (s->decay_from == DECAY_FROM_WARMUP)
        return bp_fail_usage(err, "schedule.form nvidia decays from step 0 (progress (t + 1) / S); "
                                  "decay_from: warmup does not apply to it");
    if (steps != -1)
        return bp_fail_usage(err, "phases[%d]: schedule.form nvidia takes its warmup as a ratio "
                                  "(warmup_ratio, PolyWarmUpScheduler's warmup_proportion), not "
                                  "warmup_steps", i);
    long w = (long)floor(r * (double)seg_steps);
    while (w > 0 && !((double)w / (double)seg_steps < r)) w--;
    while ((double)(w + 1) / (double)seg_steps < r) w++;
    *warm = w;
    *ratio = r;
    return 0;
}

/* The held-out set must not be the training set: the same path, or two paths to one file (a link,
 * "./x" and "x"), would report a training loss as the eval loss. */
static int check_eval_not_train(const DataConfig *d, BpError *err) {
    if (!d->eval[0] || !d->train[0]) return 0;
    struct stat a, b;
    bool same = strcmp(d->eval, d->train) == 0 ||
                (stat(d->eval, &a) == 0 && stat(d->train, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino);
    if (!same) return 0;
    return bp_fail_usage(err,
                         "data.eval and data.train are the same file (%s): evaluation would measure the "
                         "training data. HINT: point data.eval at the eval shard `prepare` wrote, or set "
                         "data.eval: \"\" to train without evaluation",
                         d->eval);
}

int config_resolve(Config *cfg, BpError *err) {
    for (size_t i = 0; i < BP_ARRAY_LEN(KEYS); i++)
        if (check_key(&KEYS[i], cfg, NULL, -1, err)) return -1;
    if (check_eval_not_train(&cfg->data, err)) return -1;
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

    long total = 0;
    for (int i = 0; i < cfg->n_phases; i++) {
        PhaseConfig *p = &cfg->phases[i];
        for (size_t j = 0; j < BP_ARRAY_LEN(PHASE_KEYS); j++)
            if (check_key(&PHASE_KEYS[j], cfg, p, i, err)) return -1;
        if (p->seq_len > m->max_position)
            return bp_fail_usage(err, "phases[%d]: seq_len %d is above model.max_position %d", i,
                                 p->seq_len, m->max_position);
        bool own_micro = p->micro_batch > 0;
        if (!own_micro) p->micro_batch = cfg->training.micro_batch;
        long long per_step = (long long)p->micro_batch * cfg->world_size;
        if (p->batch_size % per_step != 0) {
            char which[48];
            if (own_micro)
                snprintf(which, sizeof which, "phases[%d].micro_batch", i);
            else
                snprintf(which, sizeof which, "training.micro_batch");
            return bp_fail_usage(err, "phases[%d]: batch_size %d is not divisible by %s %d x %d rank(s)",
                                 i, p->batch_size, which, p->micro_batch, cfg->world_size);
        }
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
        double lr = head->lr != -1 ? head->lr : cfg->schedule.lr, ratio = 0;
        long warm = 0;
        if (segment_warmup(cfg, i, seg_steps, &warm, &ratio, err)) return -1;
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
            p->segment_warmup_ratio = ratio;
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
/* the YAML tree: libyaml events -> nodes                                                      */

typedef enum { N_SCALAR, N_MAP, N_SEQ } NodeKind;

typedef struct YNode {
    NodeKind kind;
    char *text; /* scalars: the value, NUL-terminated */
    size_t len; /* scalars: bytes (differs from strlen when the value holds a NUL) */
    bool plain; /* scalars: unquoted (only a plain null/~/empty means "no value") */
    int line, col; /* 1-based start */
    struct YNode **kids; /* mapping: key, value, key, value, ...; sequence: items */
    size_t n, cap;
} YNode;

static void ynode_free(YNode *n) {
    if (!n) return;
    /* depth is bounded by CFG_MAX_DEPTH, so recursion is bounded too */
    for (size_t i = 0; i < n->n; i++) ynode_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

static const char *kind_word(const YNode *n) {
    return n->kind == N_MAP ? "a mapping" : n->kind == N_SEQ ? "a list" : "a scalar";
}

static bool is_null(const YNode *n) {
    return n->kind == N_SCALAR && n->plain &&
           (n->len == 0 || strcmp(n->text, "null") == 0 || strcmp(n->text, "~") == 0 ||
            strcmp(n->text, "Null") == 0 || strcmp(n->text, "NULL") == 0);
}

/* Where values come from: a file (messages say file:line:col) or one --set (messages say it). */
typedef struct {
    const char *file;   /* display path, or NULL for an override */
    const char *set;    /* the override text */
    const char *dir;    /* relative paths are joined to it; NULL or "" = as written */
    bool resolved;      /* a resolved JSON: derived keys accepted and ignored, paths as written */
} Src;

static int vfail_at(const Src *s, int line, int col, BpError *err, const char *fmt, va_list ap) {
    char msg[BP_ERR_LEN];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (s->file) {
        if (line > 0) return bp_fail_usage(err, "%s:%d:%d: %s", s->file, line, col, msg);
        return bp_fail_usage(err, "%s: %s", s->file, msg);
    }
    char q[256];
    return bp_fail_usage(err, "--set %s: %s", quote_text(s->set, q, sizeof q), msg);
}

static int fail_at(const Src *s, const YNode *n, BpError *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(const Src *s, const YNode *n, BpError *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail_at(s, n ? n->line : 0, n ? n->col : 0, err, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail_pos(const Src *s, int line, int col, BpError *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail_pos(const Src *s, int line, int col, BpError *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail_at(s, line, col, err, fmt, ap);
    va_end(ap);
    return -1;
}

static YNode *ynode_new(NodeKind kind, const yaml_mark_t *mark) {
    YNode *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->kind = kind;
    n->line = (int)(mark->line < INT_MAX ? mark->line + 1 : INT_MAX);
    n->col = (int)(mark->column < INT_MAX ? mark->column + 1 : INT_MAX);
    return n;
}

static int ynode_add(YNode *parent, YNode *kid) {
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? 2 * parent->cap : 8;
        YNode **k = realloc(parent->kids, cap * sizeof *k);
        if (!k) return -1;
        parent->kids = k;
        parent->cap = cap;
    }
    parent->kids[parent->n++] = kid;
    return 0;
}

/* 1-based line and column of a byte offset (libyaml's reader errors give only the offset). */
static void offset_to_pos(const char *buf, size_t len, size_t off, int *line, int *col) {
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (buf[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)buf[i] & 0xC0) != 0x80) {
            c++;
        }
        if (l == INT_MAX || c == INT_MAX) break;
    }
    *line = l;
    *col = c;
}

static int syntax_error(const Src *s, const yaml_parser_t *p, const char *buf, size_t len,
                        BpError *err) {
    const char *what = p->problem ? p->problem : "cannot parse";
    if (p->error == YAML_MEMORY_ERROR) return bp_fail(err, "out of memory parsing YAML");
    if (p->error == YAML_READER_ERROR) {
        int line, col;
        offset_to_pos(buf, len, p->problem_offset, &line, &col);
        if (p->problem_value != -1)
            return fail_pos(s, line, col, err, "invalid input: %s (byte 0x%02x)", what,
                            (unsigned)p->problem_value & 0xffu);
        return fail_pos(s, line, col, err, "invalid input: %s", what);
    }
    int line = (int)(p->problem_mark.line < INT_MAX ? p->problem_mark.line + 1 : INT_MAX);
    int col = (int)(p->problem_mark.column < INT_MAX ? p->problem_mark.column + 1 : INT_MAX);
    if (p->context && s->file)
        return fail_pos(s, line, col, err, "YAML syntax error: %s %s (from line %zu)", what,
                        p->context, (size_t)p->context_mark.line + 1);
    if (p->context) return fail_pos(s, line, col, err, "YAML syntax error: %s %s", what, p->context);
    return fail_pos(s, line, col, err, "YAML syntax error: %s", what);
}

/* Parses one YAML document into a tree. *root = NULL for an empty stream. Anchors, aliases and
 * tags are refused; nesting deeper than CFG_MAX_DEPTH is refused as it opens. */
static int yaml_to_tree(const Src *s, const char *buf, size_t len, YNode **root, BpError *err) {
    *root = NULL;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) return bp_fail(err, "out of memory starting libyaml");
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
    YNode *stack[CFG_MAX_DEPTH + 1];
    int depth = 0, docs = 0, rc = 0;
    size_t nodes = 0;
    bool done = false;
    while (!done && rc == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = syntax_error(s, &parser, buf, len, err);
            break;
        }
        int line = (int)(ev.start_mark.line < INT_MAX ? ev.start_mark.line + 1 : INT_MAX);
        int col = (int)(ev.start_mark.column < INT_MAX ? ev.start_mark.column + 1 : INT_MAX);
        char q[96];
        const yaml_char_t *anchor = NULL, *tag = NULL;
        NodeKind kind = N_SCALAR;
        bool opens = false;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT: done = true; break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1)
                rc = fail_pos(s, line, col, err,
                              "a second YAML document ('---'): a config holds exactly one");
            break;
        case YAML_ALIAS_EVENT:
            rc = fail_pos(s, line, col, err,
                          "YAML aliases (*%s) are not supported: write the value out in full",
                          quote_text((const char *)ev.data.alias.anchor, q, sizeof q));
            break;
        case YAML_SCALAR_EVENT:
            anchor = ev.data.scalar.anchor;
            tag = ev.data.scalar.tag;
            opens = true;
            break;
        case YAML_SEQUENCE_START_EVENT:
            anchor = ev.data.sequence_start.anchor;
            tag = ev.data.sequence_start.tag;
            kind = N_SEQ;
            opens = true;
            break;
        case YAML_MAPPING_START_EVENT:
            anchor = ev.data.mapping_start.anchor;
            tag = ev.data.mapping_start.tag;
            kind = N_MAP;
            opens = true;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT: depth--; break;
        default: break;
        }
        if (rc == 0 && opens) {
            if (anchor)
                rc = fail_pos(s, line, col, err,
                              "YAML anchors (&%s) are not supported: write the value out in full",
                              quote_text((const char *)anchor, q, sizeof q));
            else if (tag)
                rc = fail_pos(s, line, col, err, "YAML tags (%s) are not supported",
                              quote_text((const char *)tag, q, sizeof q));
            else if (kind != N_SCALAR && depth >= CFG_MAX_DEPTH)
                rc = fail_pos(s, line, col, err, "YAML nesting deeper than %d levels", CFG_MAX_DEPTH);
            else if (++nodes > CFG_MAX_NODES)
                rc = fail_pos(s, line, col, err, "more than %d YAML values: not a config",
                              CFG_MAX_NODES);
            else if (depth == 0 && *root)
                rc = fail_pos(s, line, col, err, "more than one top-level value");
        }
        if (rc == 0 && opens) {
            YNode *n = ynode_new(kind, &ev.start_mark);
            if (n && kind == N_SCALAR) {
                n->len = ev.data.scalar.length;
                n->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
                n->text = malloc(n->len + 1);
                if (n->text) {
                    memcpy(n->text, ev.data.scalar.value, n->len);
                    n->text[n->len] = 0;
                }
            }
            if (!n || (kind == N_SCALAR && !n->text)) {
                ynode_free(n);
                rc = bp_fail(err, "out of memory reading YAML");
            } else if (depth == 0) {
                *root = n;
            } else if (ynode_add(stack[depth - 1], n)) {
                ynode_free(n);
                rc = bp_fail(err, "out of memory reading YAML");
            }
            if (rc == 0 && kind != N_SCALAR) stack[depth++] = n;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    if (rc) {
        ynode_free(*root);
        *root = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* scalars -> values                                                                           */

static bool all_digits(const char *p) {
    if (!*p) return false;
    for (; *p; p++)
        if (*p < '0' || *p > '9') return false;
    return true;
}

/* 0 ok, 1 not an integer, 2 too large for long long */
static int parse_ll(const char *t, long long *out) {
    const char *p = t + (*t == '+' || *t == '-');
    if (!all_digits(p)) return 1;
    errno = 0;
    long long v = strtoll(t, NULL, 10);
    if (errno == ERANGE) return 2;
    *out = v;
    return 0;
}

/* 0 ok, 1 not a decimal number, 2 overflow/underflow; nan, inf and hex floats are not numbers */
static int parse_num(const char *t, double *out) {
    const char *p = t + (*t == '+' || *t == '-');
    size_t digits = 0;
    while (*p >= '0' && *p <= '9') p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') p++, digits++;
    }
    if (digits == 0) return 1;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += (*p == '+' || *p == '-');
        if (!all_digits(p)) return 1;
    } else if (*p) {
        return 1;
    }
    errno = 0;
    double v = strtod(t, NULL);
    if (errno == ERANGE || !isfinite(v)) return 2;
    *out = v;
    return 0;
}

static void join_names(const char *const *names, int n, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? ", " : "", names[i]);
}

/* Lexical clean-up of a joined path: drops "." and empty segments and folds "dir/..". */
static void clean_path(char *path) {
    bool abs = path[0] == '/';
    char *segs[CFG_PATH_MAX / 2 + 1]; /* at most one segment per two bytes */
    int n = 0;
    char *save = NULL;
    char tmp[CFG_PATH_MAX];
    copy_str(tmp, sizeof tmp, path);
    for (char *t = strtok_r(tmp, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (strcmp(t, ".") == 0) continue;
        if (strcmp(t, "..") == 0 && n > 0 && strcmp(segs[n - 1], "..") != 0) {
            n--;
            continue;
        }
        if (strcmp(t, "..") == 0 && n == 0 && abs) continue;
        if (n < (int)BP_ARRAY_LEN(segs)) segs[n++] = t;
    }
    size_t o = 0;
    if (abs) path[o++] = '/';
    for (int i = 0; i < n; i++) {
        size_t l = strlen(segs[i]);
        if (i) path[o++] = '/';
        memcpy(path + o, segs[i], l);
        o += l;
    }
    if (o == 0) path[o++] = '.';
    path[o] = 0;
}

/* dir/path (path as written when absolute or when dir is empty); -1 when it does not fit */
static int join_path(const char *dir, const char *path, char *out, size_t cap) {
    int n;
    if (!dir || !dir[0] || path[0] == '/') n = snprintf(out, cap, "%s", path);
    else n = snprintf(out, cap, "%s/%s", dir, path);
    if (n < 0 || (size_t)n >= cap) return -1;
    clean_path(out);
    return 0;
}

static void dir_of(const char *path, char *out, size_t cap) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        out[0] = 0;
        return;
    }
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= cap) n = cap - 1;
    memcpy(out, path, n);
    out[n] = 0;
}

static const char *describe(const KeyDef *k, char *buf, size_t cap) {
    switch (k->type) {
    case K_INT:
    case K_LONG: return "an integer";
    case K_U64: return "a non-negative integer";
    case K_DOUBLE: return "a number";
    case K_BOOL: return "true or false";
    case K_ENUM: {
        char names[256];
        join_names(k->names, k->n_names, names, sizeof names);
        snprintf(buf, cap, "one of %s", names);
        return buf;
    }
    case K_PRESET: return "a preset name";
    case K_PATH: return "a path";
    case K_PATTERNS: return "a list of name patterns";
    case K_PATHS: return "a list of paths";
    default: return "a string";
    }
}

/* One item string -> path or pattern slot. */
static int set_string_item(const Src *s, const KeyDef *k, const char *name, const YNode *v,
                           char *dst, size_t cap, bool is_path, BpError *err) {
    char q[96];
    if (v->kind != N_SCALAR)
        return fail_at(s, v, err, "%s must be %s, got %s", name, is_path ? "a path" : "a string",
                       kind_word(v));
    if (strlen(v->text) != v->len) return fail_at(s, v, err, "%s contains a NUL byte", name);
    if (is_path) {
        if (is_null(v) || v->len == 0) { /* "" and null both mean "no path" */
            dst[0] = 0;
            return 0;
        }
        const char *dir = s->resolved ? NULL : s->dir;
        if (join_path(dir, v->text, dst, cap))
            return fail_at(s, v, err, "%s is longer than %zu bytes: '%s'", name, cap - 1,
                           quote_text(v->text, q, sizeof q));
        return 0;
    }
    (void)k;
    if (v->len == 0) return fail_at(s, v, err, "%s must not be empty", name);
    if (v->len >= cap)
        return fail_at(s, v, err, "%s is longer than %zu bytes: '%s'", name, cap - 1,
                       quote_text(v->text, q, sizeof q));
    memcpy(dst, v->text, v->len + 1);
    return 0;
}

/* Sets one key from a node, validating it like the table says. ph != NULL for phase keys. */
static int set_value(const Src *s, Config *cfg, const KeyDef *k, PhaseConfig *ph, int phase,
                     const YNode *v, BpError *err) {
    char name[160], q[96], range[128], desc[300];
    key_fullname(k, phase, name, sizeof name);
    if (k->flags & F_DERIVED) {
        if (!s->resolved) return fail_at(s, v, err, "%s is derived by config_resolve and cannot be set", name);
        if (!(k->flags & F_RESOLVE_INPUT)) return 0; /* recomputed by config_resolve */
    }
    void *field = key_field(k, cfg, ph);

    if (k->type == K_PATTERNS || k->type == K_PATHS) {
        int *count = (int *)((char *)cfg + k->count_off);
        if (is_null(v)) {
            *count = 0;
            return 0;
        }
        if (v->kind != N_SEQ)
            return fail_at(s, v, err, "%s must be %s, got %s", name, describe(k, desc, sizeof desc),
                           kind_word(v));
        if (v->n > (size_t)k->max_items)
            return fail_at(s, v, err, "%s has %zu entries (at most %d)", name, v->n, k->max_items);
        for (size_t i = 0; i < v->n; i++) {
            char item[200];
            snprintf(item, sizeof item, "%s[%zu]", name, i);
            if (set_string_item(s, k, item, v->kids[i], (char *)field + i * k->cap, k->cap,
                                k->type == K_PATHS, err))
                return -1;
            if (k->type == K_PATHS && !((char *)field + i * k->cap)[0])
                return fail_at(s, v->kids[i], err, "%s must not be empty", item);
        }
        *count = (int)v->n;
        return 0;
    }

    if (v->kind != N_SCALAR)
        return fail_at(s, v, err, "%s must be %s, got %s", name, describe(k, desc, sizeof desc),
                       kind_word(v));
    if (strlen(v->text) != v->len) return fail_at(s, v, err, "%s contains a NUL byte", name);
    const char *t = v->text;
    quote_text(t, q, sizeof q);

    switch (k->type) {
    case K_INT: {
        long long x = 0;
        int r = parse_ll(t, &x);
        if (r == 1) return fail_at(s, v, err, "%s must be an integer, got '%s'", name, q);
        if (r == 2 || !in_range(k, (double)x)) {
            fmt_range(k, range, sizeof range);
            return fail_at(s, v, err, "%s = %s is out of range %s", name, q, range);
        }
        *(int *)field = (int)x;
        break;
    }
    case K_U64: {
        if (!all_digits(t)) return fail_at(s, v, err, "%s must be a non-negative integer, got '%s'", name, q);
        errno = 0;
        unsigned long long x = strtoull(t, NULL, 10);
        if (errno == ERANGE)
            return fail_at(s, v, err, "%s = %s is out of range [0, %llu]", name, q, ULLONG_MAX);
        *(uint64_t *)field = (uint64_t)x;
        break;
    }
    case K_DOUBLE: {
        double x = 0;
        int r = parse_num(t, &x);
        if (r == 1) return fail_at(s, v, err, "%s must be a number, got '%s'", name, q);
        if (r == 2 || !in_range(k, x)) {
            fmt_range(k, range, sizeof range);
            return fail_at(s, v, err, "%s = %s is out of range %s", name, q, range);
        }
        *(double *)field = x;
        break;
    }
    case K_BOOL:
        if (strcmp(t, "true") == 0) *(bool *)field = true;
        else if (strcmp(t, "false") == 0) *(bool *)field = false;
        else return fail_at(s, v, err, "%s must be true or false, got '%s'", name, q);
        break;
    case K_ENUM: {
        int found = -1;
        for (int i = 0; i < k->n_names; i++)
            if (strcmp(t, k->names[i]) == 0) found = i;
        if (found < 0)
            return fail_at(s, v, err, "%s must be %s, got '%s'", name, describe(k, desc, sizeof desc), q);
        *(int *)field = found;
        break;
    }
    case K_PRESET: {
        if (!find_preset(t)) {
            const char *names[BP_ARRAY_LEN(PRESETS)];
            for (size_t i = 0; i < BP_ARRAY_LEN(PRESETS); i++) names[i] = PRESETS[i].name;
            char list[256];
            join_names(names, (int)BP_ARRAY_LEN(PRESETS), list, sizeof list);
            return fail_at(s, v, err, "%s must be one of %s, got '%s'", name, list, q);
        }
        copy_str((char *)field, k->cap, t);
        break;
    }
    case K_PATH:
        if (set_string_item(s, k, name, v, (char *)field, k->cap, true, err)) return -1;
        break;
    case K_STR:
        if (v->len >= k->cap)
            return fail_at(s, v, err, "%s is longer than %zu bytes: '%s'", name, k->cap - 1, q);
        memcpy(field, t, v->len + 1);
        break;
    default: return fail_at(s, v, err, "%s cannot be set", name);
    }
    if (k->explicit_bit >= 0) cfg->model_explicit |= 1u << k->explicit_bit;
    if (!ph && strcmp(k->section, "model") == 0) model_apply_preset(cfg);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* keys: lookup and "did you mean"                                                             */

static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return SIZE_MAX;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* " (did you mean 'x'?)" for a close candidate, else " (known keys: ...)" */
static void suggest(const char *bad, const char *const *cands, int n, char *out, size_t cap) {
    size_t best = SIZE_MAX;
    int bi = -1;
    for (int i = 0; i < n; i++) {
        size_t d = edit_distance(bad, cands[i]);
        if (d < best) best = d, bi = i;
    }
    size_t len = strlen(bad);
    size_t limit = len / 3 > 2 ? len / 3 : 2;
    if (bi >= 0 && best <= limit) {
        snprintf(out, cap, " (did you mean '%s'?)", cands[bi]);
        return;
    }
    char list[700];
    join_names(cands, n, list, sizeof list);
    snprintf(out, cap, " (known keys: %s)", list);
}

static const KeyDef *find_key(const KeyDef *tab, size_t n, const char *section, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(tab[i].section, section) == 0 && strcmp(tab[i].name, name) == 0) return &tab[i];
    return NULL;
}

static int section_keys(const KeyDef *tab, size_t n, const char *section, const char **out) {
    int c = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(tab[i].section, section) == 0 && !(tab[i].flags & F_DERIVED)) out[c++] = tab[i].name;
    return c;
}

static int unknown_key(const Src *s, const YNode *kn, const char *prefix, const KeyDef *tab,
                       size_t ntab, const char *section, BpError *err) {
    const char *cands[64];
    int n = section_keys(tab, ntab, section, cands);
    char hint[800], q[96];
    suggest(kn->text, cands, n, hint, sizeof hint);
    return fail_at(s, kn, err, "unknown key '%s%s'%s", prefix, quote_text(kn->text, q, sizeof q), hint);
}

/* Mapping keys must be plain strings, each given once. */
static int check_map_key(const Src *s, const YNode *map, size_t i, const char *prefix, BpError *err) {
    const YNode *kn = map->kids[i];
    char q[96];
    if (kn->kind != N_SCALAR)
        return fail_at(s, kn, err, "%s: a key must be a plain name, got %s", prefix[0] ? prefix : "top level",
                       kind_word(kn));
    if (strlen(kn->text) != kn->len) return fail_at(s, kn, err, "a key contains a NUL byte");
    for (size_t j = 0; j < i; j += 2) {
        const YNode *other = map->kids[j];
        if (other->kind == N_SCALAR && strcmp(other->text, kn->text) == 0)
            return fail_at(s, kn, err, "duplicate key '%s%s' (first given at line %d)", prefix,
                           quote_text(kn->text, q, sizeof q), other->line);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* sections and phases                                                                         */

static int apply_section(const Src *s, Config *cfg, const char *section, const YNode *v,
                         BpError *err) {
    if (is_null(v)) return 0;
    if (v->kind != N_MAP)
        return fail_at(s, v, err, "%s must be a mapping of keys, got %s", section, kind_word(v));
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.", section);
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const YNode *kn = v->kids[i];
        /* unknown keys first: a hostile mapping then fails at its first stray key */
        if (kn->kind == N_SCALAR && !find_key(KEYS, BP_ARRAY_LEN(KEYS), section, kn->text))
            return unknown_key(s, kn, prefix, KEYS, BP_ARRAY_LEN(KEYS), section, err);
        if (check_map_key(s, v, i, prefix, err)) return -1;
        const KeyDef *k = find_key(KEYS, BP_ARRAY_LEN(KEYS), section, kn->text);
        if (set_value(s, cfg, k, NULL, -1, v->kids[i + 1], err)) return -1;
    }
    return 0;
}

static int apply_phase(const Src *s, Config *cfg, int idx, const YNode *v, bool fresh,
                       BpError *err) {
    char prefix[32];
    snprintf(prefix, sizeof prefix, "phases[%d].", idx);
    if (v->kind != N_MAP)
        return fail_at(s, v, err, "phases[%d] must be a mapping (seq_len, batch_size, steps, ...), got %s",
                       idx, kind_word(v));
    PhaseConfig *p = &cfg->phases[idx];
    if (fresh) phase_defaults(p);
    bool given[BP_ARRAY_LEN(PHASE_KEYS)] = {0};
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const YNode *kn = v->kids[i];
        if (kn->kind == N_SCALAR && !find_key(PHASE_KEYS, BP_ARRAY_LEN(PHASE_KEYS), "phases", kn->text))
            return unknown_key(s, kn, prefix, PHASE_KEYS, BP_ARRAY_LEN(PHASE_KEYS), "phases", err);
        if (check_map_key(s, v, i, prefix, err)) return -1;
        const KeyDef *k = find_key(PHASE_KEYS, BP_ARRAY_LEN(PHASE_KEYS), "phases", kn->text);
        given[k - PHASE_KEYS] = true;
        if (set_value(s, cfg, k, p, idx, v->kids[i + 1], err)) return -1;
    }
    if (fresh)
        for (size_t r = 0; r < BP_ARRAY_LEN(PHASE_REQUIRED); r++) {
            const KeyDef *k = find_key(PHASE_KEYS, BP_ARRAY_LEN(PHASE_KEYS), "phases", PHASE_REQUIRED[r]);
            if (!given[k - PHASE_KEYS])
                return fail_at(s, v, err, "phases[%d] has no %s (every phase needs seq_len, batch_size and steps)",
                               idx, PHASE_REQUIRED[r]);
        }
    return 0;
}

/* A phases: list replaces every phase given before (by a base file, say). */
static int apply_phases(const Src *s, Config *cfg, const YNode *v, BpError *err) {
    if (is_null(v)) {
        cfg->n_phases = 0;
        return 0;
    }
    if (v->kind != N_SEQ)
        return fail_at(s, v, err, "phases must be a list of mappings, got %s", kind_word(v));
    if (v->n > CFG_MAX_PHASES)
        return fail_at(s, v->kids[CFG_MAX_PHASES], err, "phases: at most %d phases are supported",
                       CFG_MAX_PHASES);
    for (int i = 0; i < CFG_MAX_PHASES; i++) phase_defaults(&cfg->phases[i]);
    cfg->n_phases = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (apply_phase(s, cfg, (int)i, v->kids[i], true, err)) return -1;
        cfg->n_phases = (int)i + 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* files and includes                                                                          */

static const char *const TOP_KEYS[] = {"base", "resolved", "model", "data", "optimizer",
                                       "schedule", "phases", "training", "source", "world_size",
                                       "total_steps"};

typedef struct {
    char real[CFG_MAX_INCLUDE + 2][CFG_PATH_MAX]; /* canonical paths, for cycle detection */
    char shown[CFG_MAX_INCLUDE + 2][CFG_PATH_MAX]; /* as named, for messages */
    int n;
} IncludeChain;

/* Reads a config file (a regular file of at most CFG_MAX_FILE bytes). Message without location. */
static char *read_config_file(const char *path, size_t *len, char *why, size_t cap) {
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(why, cap, "%s", strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, cap, "not a regular file");
        return NULL;
    }
    if ((unsigned long long)st.st_size > CFG_MAX_FILE) {
        snprintf(why, cap, "%lld bytes, more than the %u a config may have", (long long)st.st_size,
                 CFG_MAX_FILE);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, cap, "%s", strerror(errno));
        return NULL;
    }
    size_t want = (size_t)st.st_size;
    char *buf = malloc(want + 2);
    if (!buf) {
        fclose(f);
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    size_t n = fread(buf, 1, want + 1, f);
    bool bad = ferror(f);
    fclose(f);
    if (bad || n > want) {
        free(buf);
        snprintf(why, cap, bad ? "read error" : "file grew beyond the size limit while reading");
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static int load_file(Config *cfg, const char *path, IncludeChain *chain, const Src *includer,
                     const YNode *at, BpError *err);

static int apply_root(Config *cfg, const Src *s, const YNode *root, IncludeChain *chain,
                      BpError *err) {
    if (!root) return fail_pos(s, 0, 0, err, "the file is empty: a config is a mapping with sections "
                                             "model, data, optimizer, schedule, phases, training");
    if (root->kind != N_MAP)
        return fail_at(s, root, err, "the top level must be a mapping of sections (model, data, "
                                     "optimizer, schedule, phases, training), got %s",
                       kind_word(root));
    const YNode *base = NULL;
    Src src = *s;
    /* first pass: every key known and given once; find base: and resolved: */
    for (size_t i = 0; i + 1 < root->n; i += 2) {
        const YNode *kn = root->kids[i];
        bool known = false;
        for (size_t j = 0; kn->kind == N_SCALAR && j < BP_ARRAY_LEN(TOP_KEYS); j++)
            known |= strcmp(kn->text, TOP_KEYS[j]) == 0;
        if (kn->kind == N_SCALAR && !known) {
            char hint[800], q[96];
            suggest(kn->text, TOP_KEYS, 8, hint, sizeof hint);
            return fail_at(s, kn, err, "unknown key '%s'%s", quote_text(kn->text, q, sizeof q), hint);
        }
        if (check_map_key(s, root, i, "", err)) return -1;
        const YNode *v = root->kids[i + 1];
        if (strcmp(kn->text, "base") == 0) {
            base = v;
        } else if (strcmp(kn->text, "resolved") == 0) {
            if (v->kind != N_SCALAR || (strcmp(v->text, "true") && strcmp(v->text, "false")))
                return fail_at(s, v, err, "resolved must be true or false");
            src.resolved = strcmp(v->text, "true") == 0;
        }
    }
    if (base && !chain)
        return fail_at(s, base, err, "base: is not allowed in a resolved configuration (it names another "
                                     "file; a resolved configuration is complete)");
    if (base) {
        if (base->kind != N_SCALAR || is_null(base) || base->len == 0 || strlen(base->text) != base->len)
            return fail_at(s, base, err, "base must be the path of another config, got %s",
                           base->kind == N_SCALAR ? "no path" : kind_word(base));
        char path[CFG_PATH_MAX], q[96];
        if (join_path(s->dir, base->text, path, sizeof path))
            return fail_at(s, base, err, "base path is too long: '%s'", quote_text(base->text, q, sizeof q));
        if (load_file(cfg, path, chain, s, base, err)) return -1;
    }
    for (size_t i = 0; i + 1 < root->n; i += 2) {
        const char *key = root->kids[i]->text;
        const YNode *v = root->kids[i + 1];
        int rc = 0;
        if (strcmp(key, "base") == 0 || strcmp(key, "resolved") == 0) continue;
        if (strcmp(key, "phases") == 0) {
            rc = apply_phases(&src, cfg, v, err);
        } else {
            const KeyDef *k = find_key(KEYS, BP_ARRAY_LEN(KEYS), "", key);
            if (k) rc = set_value(&src, cfg, k, NULL, -1, v, err);
            else rc = apply_section(&src, cfg, key, v, err);
        }
        if (rc) return -1;
    }
    return 0;
}

static int load_file(Config *cfg, const char *path, IncludeChain *chain, const Src *includer,
                     const YNode *at, BpError *err) {
    char why[256];
    if (chain->n > CFG_MAX_INCLUDE)
        return fail_at(includer, at, err, "base: includes nest deeper than %d files (%s)",
                       CFG_MAX_INCLUDE, path);
    char real[PATH_MAX];
    size_t len = 0;
    char *buf = read_config_file(path, &len, why, sizeof why);
    if (!buf) {
        if (includer)
            return fail_at(includer, at, err, "base file %s cannot be read: %s", path, why);
        return bp_fail_usage(err, "%s: cannot read the config: %s", path, why);
    }
    if (!realpath(path, real)) copy_str(real, sizeof real, path);
    for (int i = 0; i < chain->n; i++)
        if (strcmp(chain->real[i], real) == 0) {
            char cycle[BP_ERR_LEN];
            size_t o = 0;
            for (int j = i; j < chain->n && o < sizeof cycle; j++)
                o += (size_t)snprintf(cycle + o, sizeof cycle - o, "%s -> ", chain->shown[j]);
            if (o < sizeof cycle) snprintf(cycle + o, sizeof cycle - o, "%s", path);
            free(buf);
            return fail_at(includer, at, err, "base: include cycle: %s", cycle);
        }
    copy_str(chain->real[chain->n], CFG_PATH_MAX, real);
    copy_str(chain->shown[chain->n], CFG_PATH_MAX, path);
    chain->n++;

    char dir[CFG_PATH_MAX];
    dir_of(path, dir, sizeof dir);
    Src s = {.file = path, .set = NULL, .dir = dir, .resolved = false};
    YNode *root = NULL;
    int rc = yaml_to_tree(&s, buf, len, &root, err);
    if (rc == 0) rc = apply_root(cfg, &s, root, chain, err);
    ynode_free(root);
    free(buf);
    chain->n--;
    return rc;
}

int config_load(Config *cfg, const char *path, BpError *err) {
    config_defaults(cfg);
    if (!path || !path[0]) return bp_fail_usage(err, "no config file given");
    IncludeChain *chain = calloc(1, sizeof *chain);
    if (!chain) return bp_fail(err, "out of memory loading %s", path);
    int rc = load_file(cfg, path, chain, NULL, NULL, err);
    free(chain);
    if (rc) return -1;
    copy_str(cfg->source, sizeof cfg->source, path);
    return 0;
}

/* true when the top level of a parsed document says `resolved: true` */
static bool says_resolved(const YNode *root) {
    if (!root || root->kind != N_MAP) return false;
    for (size_t i = 0; i + 1 < root->n; i += 2) {
        const YNode *k = root->kids[i], *v = root->kids[i + 1];
        if (k->kind == N_SCALAR && strcmp(k->text, "resolved") == 0)
            return v->kind == N_SCALAR && strcmp(v->text, "true") == 0;
    }
    return false;
}

int config_load_resolved(Config *cfg, const char *text, size_t len, const char *what, BpError *err) {
    config_defaults(cfg);
    Src s = {.file = what, .set = NULL, .dir = NULL, .resolved = true};
    if (len > CFG_MAX_FILE)
        return fail_pos(&s, 0, 0, err, "%zu bytes, more than the %u a config may have", len, CFG_MAX_FILE);
    YNode *root = NULL;
    int rc = yaml_to_tree(&s, text, len, &root, err);
    if (rc == 0 && root && !says_resolved(root))
        rc = fail_at(&s, root, err, "not a resolved configuration (no top-level resolved: true)");
    /* no include chain: apply_root refuses base: */
    if (rc == 0) rc = apply_root(cfg, &s, root, NULL, err);
    ynode_free(root);
    if (rc) return -1;
    /* config_resolve would otherwise count the lines of data.vocab: a resolved configuration already
       holds the count, and reading a file it names is no part of loading it */
    if (cfg->model.vocab_size == 0)
        return fail_pos(&s, 0, 0, err, "model.vocab_size is 0: a resolved configuration gives the vocab size");
    if (config_resolve(cfg, err)) {
        bp_err_prefix(err, "%s", what);
        return -1;
    }
    return 0;
}

bool config_key_resume_safe(const char *key) {
    const char *dot = strchr(key, '.');
    if (!dot) {
        const KeyDef *k = find_key(KEYS, BP_ARRAY_LEN(KEYS), "", key);
        return k && (k->flags & F_RESUME_SAFE);
    }
    char section[16];
    size_t n = (size_t)(dot - key);
    if (n >= sizeof section) return false;
    memcpy(section, key, n);
    section[n] = 0;
    const KeyDef *k;
    if (strcmp(section, "phases") == 0) { /* phases.N.name */
        const char *p = dot + 1;
        if (*p < '0' || *p > '9') return false;
        while (*p >= '0' && *p <= '9') p++;
        if (*p != '.') return false;
        k = find_key(PHASE_KEYS, BP_ARRAY_LEN(PHASE_KEYS), "phases", p + 1);
    } else {
        k = find_key(KEYS, BP_ARRAY_LEN(KEYS), section, dot + 1);
    }
    return k && (k->flags & F_RESUME_SAFE);
}

/* ------------------------------------------------------------------------------------------ */
/* --set overrides                                                                             */

int config_apply_override(Config *cfg, const char *assignment, BpError *err) {
    Src s = {.file = NULL, .set = assignment, .dir = NULL, .resolved = false};
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return fail_pos(&s, 0, 0, err, "expected section.key=value (e.g. optimizer.beta1=0.9)");
    size_t klen = (size_t)(eq - assignment);
    char key[256];
    if (klen >= sizeof key) return fail_pos(&s, 0, 0, err, "the key is too long");
    memcpy(key, assignment, klen);
    key[klen] = 0;
    /* phases[N].key is accepted as a spelling of phases.N.key */
    for (char *p = key; *p; p++)
        if (*p == '[') *p = '.';
    char *rb;
    while ((rb = strstr(key, "]")) != NULL) memmove(rb, rb + 1, strlen(rb));

    const char *value = eq + 1;
    size_t vlen = strlen(value);
    YNode *v = NULL;
    if (yaml_to_tree(&s, value, vlen, &v, err)) return -1;
    if (!v) {
        yaml_mark_t m = {0, 0, 0};
        v = ynode_new(N_SCALAR, &m);
        if (v) v->text = calloc(1, 1);
        if (!v || !v->text) {
            ynode_free(v);
            return bp_fail(err, "out of memory");
        }
        v->plain = true;
    }
    /* node positions inside a one-line value mean nothing: messages name the --set instead */
    v->line = 0;

    YNode kn = {.kind = N_SCALAR, .plain = true};
    int rc = 0;
    char *dot = strchr(key, '.');
    char *rest = dot ? dot + 1 : NULL;
    if (dot) *dot = 0;
    kn.text = key;
    kn.len = strlen(key);
    bool section = false;
    for (size_t i = 0; i < BP_ARRAY_LEN(SECTIONS); i++) section |= strcmp(key, SECTIONS[i]) == 0;

    if (strcmp(key, "base") == 0 || strcmp(key, "resolved") == 0) {
        rc = fail_pos(&s, 0, 0, err, "%s cannot be set with --set", key);
    } else if (section && !rest && (is_null(v) || (v->kind == N_MAP && v->n == 0))) {
        /* in a file an empty section is a template with its keys commented out; on the command
         * line it is a typo for section.key=value that would otherwise change nothing, silently */
        rc = fail_pos(&s, 0, 0, err,
                      "%s sets no key. HINT: --set %s.KEY=VALUE sets one key, --set '%s={KEY: VALUE, ...}' "
                      "several",
                      key, key, key);
    } else if (section && !rest) {
        rc = apply_section(&s, cfg, key, v, err);
    } else if (section) {
        const KeyDef *k = find_key(KEYS, BP_ARRAY_LEN(KEYS), key, rest);
        if (!k) {
            char prefix[300];
            snprintf(prefix, sizeof prefix, "%s.", key);
            kn.text = rest;
            kn.len = strlen(rest);
            rc = unknown_key(&s, &kn, prefix, KEYS, BP_ARRAY_LEN(KEYS), key, err);
        } else {
            rc = set_value(&s, cfg, k, NULL, -1, v, err);
        }
    } else if (strcmp(key, "phases") == 0 && !rest) {
        rc = apply_phases(&s, cfg, v, err);
    } else if (strcmp(key, "phases") == 0) {
        char *dot2 = strchr(rest, '.');
        char *pkey = dot2 ? dot2 + 1 : NULL;
        if (dot2) *dot2 = 0;
        long long idx = -1;
        if (parse_ll(rest, &idx) || idx < 0) {
            rc = fail_pos(&s, 0, 0, err, "phases.N.key needs a phase number N, got '%s'", rest);
        } else if (idx >= cfg->n_phases) {
            rc = fail_pos(&s, 0, 0, err, "phase %lld does not exist: the config has %d phase(s), "
                                         "numbered from 0",
                          idx, cfg->n_phases);
        } else if (!pkey) {
            rc = apply_phase(&s, cfg, (int)idx, v, false, err);
        } else {
            const KeyDef *k = find_key(PHASE_KEYS, BP_ARRAY_LEN(PHASE_KEYS), "phases", pkey);
            if (!k) {
                char prefix[80];
                snprintf(prefix, sizeof prefix, "phases[%d].", (int)idx);
                kn.text = pkey;
                kn.len = strlen(pkey);
                rc = unknown_key(&s, &kn, prefix, PHASE_KEYS, BP_ARRAY_LEN(PHASE_KEYS), "phases", err);
            } else {
                rc = set_value(&s, cfg, k, &cfg->phases[idx], (int)idx, v, err);
            }
        }
    } else if (find_key(KEYS, BP_ARRAY_LEN(KEYS), "", key)) {
        rc = fail_pos(&s, 0, 0, err, "%s is derived by the program and cannot be set", key);
    } else {
        char hint[800], q[96];
        suggest(key, TOP_KEYS + 2, 6, hint, sizeof hint);
        rc = fail_pos(&s, 0, 0, err, "unknown section '%s'%s", quote_text(key, q, sizeof q), hint);
    }
    ynode_free(v);
    return rc;
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

/* ------------------------------------------------------------------------------------------ */
/* JSON and the summary                                                                        */

static void json_string(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c < 0x20 || c == 0x7f) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
    fputc('"', out);
}

/* Shortest text that reads back as the same double. */
static void json_double(FILE *out, double v) {
    if (!isfinite(v)) {
        fputs("null", out);
        return;
    }
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    fputs(buf, out);
}

static void json_value(FILE *out, const KeyDef *k, const Config *cfg, const PhaseConfig *ph) {
    const char *field = (const char *)(ph ? (const void *)ph : (const void *)cfg) + k->off;
    switch (k->type) {
    case K_INT: fprintf(out, "%d", *(const int *)field); break;
    case K_LONG: fprintf(out, "%ld", *(const long *)field); break;
    case K_U64: fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)field); break;
    case K_DOUBLE: json_double(out, *(const double *)field); break;
    case K_BOOL: fputs(*(const bool *)field ? "true" : "false", out); break;
    case K_ENUM: {
        int v = *(const int *)field;
        if (v >= 0 && v < k->n_names) json_string(out, k->names[v]);
        else fputs("null", out);
        break;
    }
    case K_PATTERNS:
    case K_PATHS: {
        int n = *(const int *)((const char *)cfg + k->count_off);
        fputc('[', out);
        for (int i = 0; i < n && i < k->max_items; i++) {
            if (i) fputs(", ", out);
            json_string(out, field + (size_t)i * k->cap);
        }
        fputc(']', out);
        break;
    }
    default: json_string(out, field); break;
    }
}

void config_write_json(const Config *cfg, FILE *out) {
    fputs("{\n  \"resolved\": true", out);
    for (size_t i = 0; i < BP_ARRAY_LEN(KEYS); i++) {
        if (KEYS[i].section[0]) continue;
        fprintf(out, ",\n  \"%s\": ", KEYS[i].name);
        json_value(out, &KEYS[i], cfg, NULL);
    }
    static const char *const ORDER[] = {"model", "data", "optimizer", "schedule", "phases", "training"};
    for (size_t s = 0; s < BP_ARRAY_LEN(ORDER); s++) {
        fprintf(out, ",\n  \"%s\": ", ORDER[s]);
        if (strcmp(ORDER[s], "phases") == 0) {
            fputc('[', out);
            for (int p = 0; p < cfg->n_phases && p < CFG_MAX_PHASES; p++) {
                fprintf(out, "%s\n    {", p ? "," : "");
                for (size_t j = 0; j < BP_ARRAY_LEN(PHASE_KEYS); j++) {
                    fprintf(out, "%s\"%s\": ", j ? ", " : "", PHASE_KEYS[j].name);
                    json_value(out, &PHASE_KEYS[j], cfg, &cfg->phases[p]);
                }
                fputc('}', out);
            }
            fputs(cfg->n_phases > 0 ? "\n  ]" : "]", out);
            continue;
        }
        fputc('{', out);
        bool first = true;
        for (size_t i = 0; i < BP_ARRAY_LEN(KEYS); i++) {
            if (strcmp(KEYS[i].section, ORDER[s]) != 0) continue;
            fprintf(out, "%s\n    \"%s\": ", first ? "" : ",", KEYS[i].name);
            json_value(out, &KEYS[i], cfg, NULL);
            first = false;
        }
        fputs("\n  }", out);
    }
    fputs("\n}\n", out);
}

static const char *schedule_words(const Config *cfg) {
    if (cfg->schedule.form == SCHEDULE_NVIDIA)
        return "NVIDIA's form: progress (t + 1) / S from step 0, warmup while it is below the ratio";
    return cfg->schedule.decay_from == DECAY_FROM_ZERO ? "decay measured from step 0"
                                                       : "decay from the end of warmup";
}

/* The lr where the schedule's shape shows: each segment's first step, its first step after warmup,
 * its last step; and where the optimizer's step count restarts. */
static void write_schedule_points(const Config *cfg, FILE *out) {
    for (int i = 0; i < cfg->n_phases && i < CFG_MAX_PHASES; i++) {
        const PhaseConfig *p = &cfg->phases[i];
        if (p->segment_start == p->first_step) {
            long s0 = p->segment_start, sw = s0 + p->segment_warmup, s1 = s0 + p->segment_steps - 1;
            fprintf(out, "lr         step %ld: %.6g, step %ld (first after warmup): %.6g, step %ld (last of "
                         "the segment): %.6g\n",
                    s0, schedule_lr(cfg, s0), sw, schedule_lr(cfg, sw), s1, schedule_lr(cfg, s1));
        }
        if (p->reset_optimizer_step)
            fprintf(out, "optimizer  step count restarts at step %ld (phases[%d]): bias correction from t = 1, "
                         "moments kept\n",
                    p->first_step, i);
    }
}

void config_write_summary(const Config *cfg, long long n_params, FILE *out) {
    const ModelConfig *m = &cfg->model;
    const OptimConfig *o = &cfg->optimizer;
    fprintf(out, "config     %s (%d rank%s)\n", cfg->source[0] ? cfg->source : "(defaults)",
            cfg->world_size, cfg->world_size == 1 ? "" : "s");
    fprintf(out, "model      %s: L=%d H=%d A=%d I=%d, vocab %d, max_position %d, gelu %s, ",
            m->preset, m->layers, m->hidden, m->heads, m->intermediate, m->vocab_size,
            m->max_position, (unsigned)m->gelu < 2 ? GELU_NAMES[m->gelu] : "?");
    if (n_params >= 0) fprintf(out, "%lld parameters (%.1fM)\n", n_params, (double)n_params / 1e6);
    else fprintf(out, "parameters not counted\n");
    fprintf(out, "optimizer  %s: beta1 %g beta2 %g epsilon %g weight_decay %g clip_grad_norm %g%s",
            config_optimizer_name(o->name), o->beta1, o->beta2, o->epsilon, o->weight_decay,
            o->clip_grad_norm, o->bias_correction ? "" : ", no bias correction");
    if (o->name == OPT_LARS)
        fprintf(out, ", lars_form %s", (unsigned)o->lars_form < 2 ? LARS_NAMES[o->lars_form] : "?");
    if (o->gamma_l > 0 || o->gamma_u > 0) fprintf(out, ", trust clamp [%g, %g]", o->gamma_l, o->gamma_u);
    fputc('\n', out);
    fprintf(out, "schedule   linear warmup from 0, then polynomial decay (power %g) to %g, %s\n",
            cfg->schedule.decay_power, cfg->schedule.end_lr, schedule_words(cfg));
    fprintf(out, "phase  seq_len  global batch = micro x accum x ranks      steps  first step  "
                 "max_pred  peak lr      warmup  re-warm\n");
    for (int i = 0; i < cfg->n_phases && i < CFG_MAX_PHASES; i++) {
        const PhaseConfig *p = &cfg->phases[i];
        char batch[96];
        snprintf(batch, sizeof batch, "%d = %d x %d x %d", p->batch_size, p->micro_batch,
                 p->accumulation, cfg->world_size);
        bool starts = p->segment_start == p->first_step;
        char warm[40];
        if (starts) snprintf(warm, sizeof warm, "%ld", p->segment_warmup);
        else snprintf(warm, sizeof warm, "(cont.)");
        fprintf(out, "%-5d  %-7d  %-37s  %7d  %10ld  %8d  %-10.4g  %7s  %s\n", i, p->seq_len, batch,
                p->steps, p->first_step, p->max_predictions_per_seq, p->segment_lr, warm,
                i > 0 && starts ? "yes" : "no");
    }
    write_schedule_points(cfg, out);
    long long seqs = 0;
    for (int i = 0; i < cfg->n_phases && i < CFG_MAX_PHASES; i++)
        seqs += (long long)cfg->phases[i].batch_size * cfg->phases[i].steps;
    fprintf(out, "total      %ld optimizer steps, %lld sequences\n", cfg->total_steps, seqs);
}

int config_phase_of(const Config *cfg, long step) {
    int i = 0;
    while (i + 1 < cfg->n_phases && step >= cfg->phases[i + 1].first_step) i++;
    return i;
}
