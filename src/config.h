/* config.h: the typed, validated configuration (YAML -> Config), presets, includes, overrides.
 *
 * Every key has a default; configs/README.md documents each one. Loading never silently changes
 * what the user asked: unknown keys, wrong types, out-of-range values and impossible combinations
 * are errors naming file:line:column and the key (BpError.status = 2).
 *
 * After config_load / config_apply_override the caller runs config_resolve, which fills the derived
 * fields (model sizes from the preset, per-phase accumulation, schedule segments) and validates
 * every cross-key constraint. All modules read only resolved configs. */
#ifndef BP_CONFIG_H
#define BP_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common.h"

#define CFG_PATH_MAX 1024
#define CFG_MAX_INPUTS 64
#define CFG_MAX_PATTERNS 16
#define CFG_PATTERN_LEN 64
#define CFG_MAX_PHASES 8

typedef enum { GELU_ERF = 0, GELU_TANH = 1 } GeluKind;
/* matrix-product precision (docs/mixed_precision.md); auto = bf16 where the CPU has native bf16 */
typedef enum { PRECISION_AUTO = 0, PRECISION_FP32 = 1, PRECISION_BF16 = 2 } PrecisionKind;

typedef struct {
    char preset[32];          /* bert-tiny|bert-mini|bert-small|bert-medium|bert-base|bert-large */
    int layers;               /* L */
    int hidden;               /* H */
    int heads;                /* A; H % A == 0 */
    int intermediate;         /* FFN width, 4H in every preset */
    int vocab_size;           /* 0 = take it from data.vocab when the model is built */
    int max_position;         /* 512 */
    int type_vocab_size;      /* 2 */
    double dropout;           /* hidden dropout, 0.1 */
    double attention_dropout; /* attention-probability dropout, 0.1 */
    double initializer_range; /* truncated-normal std, 0.02 */
    double layer_norm_eps;    /* 1e-12 */
    GeluKind gelu;            /* erf (exact, default) or tanh */
    char init_from[CFG_PATH_MAX]; /* "" = random init; else a safetensors file to start from */
} ModelConfig;

typedef struct {
    char vocab[CFG_PATH_MAX];
    char input[CFG_MAX_INPUTS][CFG_PATH_MAX]; /* text files (.txt or .gz) for prepare */
    int n_input;
    char train[CFG_PATH_MAX]; /* train shard path */
    char eval[CFG_PATH_MAX];  /* eval shard path */
    double eval_fraction;     /* share of documents held out, 0.01 */
    double masked_lm_prob;    /* 0.15 */
    double short_seq_prob;    /* 0.1 */
    bool whole_word_mask;     /* false */
    bool lowercase;           /* uncased vocab: lower-case + strip accents, true */
    int vocab_size;           /* size of a vocab built by `prepare` when data.vocab is missing, 8192 */
    int eval_examples;        /* held-out examples per evaluation, 1024 */
    int input_format;         /* TextFormat (textfile.h): lines | documents_per_line | jsonl */
    char jsonl_field[64];     /* jsonl: the record's text field, "text" */
    double max_bad_records;   /* share of jsonl records that may be bad before prepare fails, 0.001 */
    double vocab_sample_mb;   /* vocab builder: MB of the inputs to learn from (0 = all), 0 */
} DataConfig;

typedef enum { OPT_LAMB = 0, OPT_LARS = 1, OPT_ADAM = 2, OPT_ADAMW = 3 } OptimizerKind;
typedef enum { LARS_PAPER = 0, LARS_CLASSIC = 1 } LarsForm;

typedef struct {
    OptimizerKind name;
    double beta1, beta2, epsilon, weight_decay;
    bool bias_correction;
    double clip_grad_norm; /* global L2 clip before the update, 0 = off */
    char exclude_from_weight_decay[CFG_MAX_PATTERNS][CFG_PATTERN_LEN];
    int n_exclude_from_weight_decay;
    char exclude_from_layer_adaptation[CFG_MAX_PATTERNS][CFG_PATTERN_LEN];
    int n_exclude_from_layer_adaptation;
    double gamma_l, gamma_u; /* phi(z) = min(max(z, gamma_l), gamma_u); 0 = that bound off */
    LarsForm lars_form;      /* paper (Alg. 1, default) or classic (You et al. 2017) */
    double momentum;         /* classic LARS momentum, 0.9 */
    double eta;              /* classic LARS trust coefficient, 0.001 */
} OptimConfig;

typedef enum { DECAY_FROM_WARMUP = 0, DECAY_FROM_ZERO = 1 } DecayFrom;
/* bert: google-research/bert's create_optimizer (lr of update t + 1 from step t); nvidia: NVIDIA's
 * PyTorch PolyWarmUpScheduler (from progress (t + 1) / S, warmup as a ratio). schedule.h. */
typedef enum { SCHEDULE_BERT = 0, SCHEDULE_NVIDIA = 1 } ScheduleForm;

typedef struct {
    double lr;           /* peak learning rate */
    int warmup_steps;    /* -1 = use warmup_ratio */
    double warmup_ratio; /* share of the schedule's steps */
    double decay_power;  /* 1.0 */
    double end_lr;       /* 0.0 */
    DecayFrom decay_from; /* zero (default, [bert]): (1 - t/total)^power, or from the warmup's end */
    ScheduleForm form;    /* bert (default) or nvidia */
} ScheduleConfig;

typedef struct {
    /* as written */
    int seq_len, batch_size, steps, max_predictions_per_seq;
    int micro_batch;       /* examples per forward/backward in this phase; 0 = training.micro_batch
                              (config_resolve fills in the value used). A long-sequence phase needs a
                              smaller one than a short-sequence phase. */
    bool restart_schedule; /* start a new warmup + decay here (re-warmup) */
    double lr;             /* only with restart_schedule; -1 = schedule.lr */
    int warmup_steps;      /* only with restart_schedule; -1 = from warmup_ratio */
    double warmup_ratio;   /* only with restart_schedule; -1 = schedule.warmup_ratio */
    bool reset_optimizer_step; /* the optimizer's step count (bias correction's t) restarts at this
                                  phase's first step, the moments kept, as NVIDIA's phase 2 */
    /* derived by config_resolve */
    int accumulation;      /* batch_size / (phase micro_batch * world_size) */
    long first_step;       /* global step at which the phase starts */
    long segment_start;    /* global step at which its schedule segment starts */
    long segment_steps;    /* steps of the whole segment (this phase and the following ones
                              up to the next restart) */
    long segment_warmup;   /* warmup steps of the segment */
    double segment_lr;     /* peak lr of the segment */
    double segment_warmup_ratio; /* form nvidia: the warmup share r of the segment (not in the JSON:
                                    recomputed from the keys it comes from) */
} PhaseConfig;

typedef struct {
    int micro_batch;
    uint64_t seed;
    char run_dir[CFG_PATH_MAX];
    int checkpoint_every; /* optimizer steps; 0 = only at phase ends and on signals */
    int keep_checkpoints;
    int log_every;
    int eval_every;        /* 0 = only at the end */
    int threads;           /* 0 = all cores */
    PrecisionKind precision; /* fp32 (default) | bf16 | auto */
    int trust_ratio_every; /* log LAMB/LARS per-layer trust ratios every K steps, 0 = never */
    bool skip_nonfinite;   /* skip a step with NaN/Inf instead of stopping */
    bool shard_optimizer;  /* ZeRO stage 1: each MPI rank keeps 1/N of the optimizer state */
    bool recompute_attention; /* backward recomputes the attention probabilities (less memory) */
    double max_memory_gb;  /* refuse to start above this estimate; 0 = the machine's memory */
} TrainingConfig;

typedef struct {
    ModelConfig model;
    DataConfig data;
    OptimConfig optimizer;
    ScheduleConfig schedule;
    PhaseConfig phases[CFG_MAX_PHASES];
    int n_phases;
    TrainingConfig training;
    int world_size;      /* MPI ranks (1 without MPI); set before config_resolve */
    long total_steps;    /* derived: sum of phase steps */
    char source[CFG_PATH_MAX]; /* the file it was loaded from, "" for defaults */
    /* appended: loader bookkeeping, not a setting. Bits (1 << k) for model.layers, hidden, heads,
       intermediate (k = 0..3) that a file or --set gave explicitly, so that a preset named later
       (in a file that includes this one, or by --set model.preset) keeps them. */
    unsigned model_explicit;
} Config;

/* Defaults for every key (preset bert-base, no phases). */
void config_defaults(Config *cfg);
/* Loads a YAML file (following `base:` includes, paths relative to the including file) on top of
 * the defaults. */
int config_load(Config *cfg, const char *path, BpError *err);
/* Applies one "section.key=value" override, validated like the file (value parsed as YAML). */
int config_apply_override(Config *cfg, const char *assignment, BpError *err);
/* Rebuilds a Config from a resolved configuration (config_write_json's text, e.g. a checkpoint's
 * config.json) with the file loader's rules: parsed by libyaml (JSON is YAML), anchors, aliases and
 * tags refused, nesting and size bounded, every key known and in range, `base:` refused (a resolved
 * config names no other file), derived keys recomputed by config_resolve, which it runs. `what`
 * names the text in messages ("what:line:col: ..."). 0, or -1 with err filled (BP_ERR_USAGE). */
int config_load_resolved(Config *cfg, const char *text, size_t len, const char *what, BpError *err);
/* Whether a flattened key of the resolved JSON ("training.log_every", "phases.1.micro_batch",
 * "world_size") may change when a run resumes without changing its results. Unknown keys: false. */
bool config_key_resume_safe(const char *key);
/* Fills derived fields and checks cross-key constraints. */
int config_resolve(Config *cfg, BpError *err);
/* The resolved config as JSON (every default filled in, phases expanded). */
void config_write_json(const Config *cfg, FILE *out);
/* Human summary for --dry-run (parameter count given by the caller, who owns the model). */
void config_write_summary(const Config *cfg, long long n_params, FILE *out);

/* The phase a 0-based global optimizer step belongs to (the last phase for steps past the end, the
 * first for negative ones). The schedule, the data stream and the trainer all use this one. */
int config_phase_of(const Config *cfg, long step);

/* Names for enums, for messages and JSON. */
const char *config_optimizer_name(OptimizerKind k);

/* appended: the one entry point subcommands use: defaults, then the file (path may be NULL for
 * defaults only), then each "--set" assignment in order, then world_size, then config_resolve. */
int config_load_cli(Config *cfg, const char *path, char *const *sets, int n_sets, int world_size,
                    BpError *err);

#endif
