/* train.c: the training loop, evaluation, checkpoints and resume (see train.h). */
#include "train.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "checkpoint.h"
#include "config_diff.h"
#include "dist.h"
#include "kernels.h"
#include "log.h"
#include "model.h"
#include "optim.h"
#include "schedule.h"
#include "tokenizer.h"

/* ---- checkpoint layout ---------------------------------------------------------------------- */

/* Sections: "state" (CkptState), "config.json" (resolved config, for humans and the resume check),
 * "config.bin" (the Config struct of this build, for eval/export), "params", "optimizer" (the
 * optimizer's own blob), "vocab" (vocab.txt, so an export is self-contained). */
#define CKPT_BUILD_TAG "bert_pretrain/1"

typedef struct {
    char build[16];
    int64_t step;         /* optimizer steps done */
    int64_t total_floats; /* ParamTable.total */
    int32_t n_tensors;
    int32_t vocab_size;
    uint64_t seed;
    double elapsed_s; /* training wall time over all sessions */
    uint32_t config_struct_bytes;
    uint32_t reserved;
} CkptState;

/* ---- signals --------------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_signal = 0;
static void on_stop_signal(int sig) { stop_signal = sig; }

/* ---- trainer --------------------------------------------------------------------------------- */

typedef struct {
    const Config *cfg;
    Dataset *train, *eval;
    Model *model;
    Optimizer *opt;
    Batch *micro; /* the micro-batches of one step, built before the first forward */
    int n_micro;
    Logger log;
    long step; /* optimizer steps done */
    double elapsed_before; /* training seconds of earlier sessions (from the checkpoint) */
    double session_start;
    int vocab_size;
    char *config_json;
    char *vocab_text;
    size_t vocab_len;
    double *tensor_sq; /* per-tensor squared gradient norms */
    char last_checkpoint[4096];
    int planned_phase; /* the phase the activations are planned for, -1 before the first step */
} Trainer;

static char *config_to_json(const Config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    config_write_json(cfg, f);
    fclose(f);
    return buf;
}

/* the one thread policy of the program (kernels.h): OpenMP everywhere, OpenBLAS single-threaded
   inside it, so the two never oversubscribe the cores */
static void set_threads(const Config *cfg) { kern_init_threads(cfg->training.threads); }

/* which: 0 seq_len, 1 max_predictions_per_seq, 2 accumulation, 3 micro_batch */
static int max_of_phases(const Config *cfg, int which) {
    int m = 0;
    for (int i = 0; i < cfg->n_phases; i++) {
        const PhaseConfig *p = &cfg->phases[i];
        int v = which == 0   ? p->seq_len
                : which == 1 ? p->max_predictions_per_seq
                : which == 2 ? p->accumulation
                             : p->micro_batch;
        if (v > m) m = v;
    }
    return m;
}

double train_memory_estimate(const Config *cfg, int vocab_size) {
    ParamTable t = {0};
    if (model_param_table(&cfg->model, vocab_size, &t, NULL) != 0) return 0;
    double floats = (double)t.total;
    param_table_free(&t);
    /* params + grads + moments: two for LAMB/Adam/AdamW, one for LARS */
    double moments = cfg->optimizer.name == OPT_LARS ? 1 : 2;
    double bytes = 4.0 * floats * (2 + moments);
    double act = 0, examples = 0;
    for (int i = 0; i < cfg->n_phases; i++) {
        const PhaseConfig *p = &cfg->phases[i];
        double a = (double)model_activation_bytes(&cfg->model, vocab_size, p->micro_batch,
                                                  p->seq_len, p->max_predictions_per_seq);
        if (a > act) act = a;
        /* the step's examples: 3 (B,T) arrays, 3 (B,P) arrays, label and index */
        double e = (double)p->accumulation * p->micro_batch *
                   (12.0 * p->seq_len + 12.0 * p->max_predictions_per_seq + 12.0);
        if (e > examples) examples = e;
    }
    return bytes + act + examples;
}

static double machine_memory_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (double)pages * (double)page : 0;
}

static ExampleArgs example_args(const Config *cfg, const PhaseConfig *p) {
    ExampleArgs a;
    memset(&a, 0, sizeof a);
    a.seed = cfg->training.seed;
    a.seq_len = p->seq_len;
    a.max_predictions = p->max_predictions_per_seq;
    a.masked_lm_prob = cfg->data.masked_lm_prob;
    a.short_seq_prob = cfg->data.short_seq_prob;
    a.whole_word_mask = cfg->data.whole_word_mask;
    return a;
}

/* ---- checkpoints ----------------------------------------------------------------------------- */

static int save_checkpoint(Trainer *tr, BpError *err) {
    const Config *cfg = tr->cfg;
    const ParamTable *t = model_table(tr->model);
    CkptState st;
    memset(&st, 0, sizeof st);
    snprintf(st.build, sizeof st.build, "%s", CKPT_BUILD_TAG);
    st.step = tr->step;
    st.total_floats = (int64_t)t->total;
    st.n_tensors = t->n;
    st.vocab_size = tr->vocab_size;
    st.seed = cfg->training.seed;
    st.elapsed_s = tr->elapsed_before + (bp_now() - tr->session_start);
    st.config_struct_bytes = (uint32_t)sizeof(Config);
    size_t opt_bytes = optim_state_bytes(tr->opt);
    void *opt_blob = bp_malloc(opt_bytes, "optimizer state", err);
    if (!opt_blob) return -1;
    optim_state_save(tr->opt, opt_blob);
    CkptSection sec[] = {
        {"state", &st, sizeof st},
        {"config.json", tr->config_json, strlen(tr->config_json)},
        {"config.bin", cfg, sizeof *cfg},
        {"params", model_params(tr->model), t->total * sizeof(float)},
        {"optimizer", opt_blob, opt_bytes},
        {"vocab", tr->vocab_text, tr->vocab_len},
    };
    char path[4096];
    ckpt_path(path, sizeof path, cfg->training.run_dir, tr->step);
    int rc = ckpt_write(path, sec, (int)BP_ARRAY_LEN(sec), err);
    free(opt_blob);
    if (rc != 0) return -1;
    snprintf(tr->last_checkpoint, sizeof tr->last_checkpoint, "%s", path);
    return ckpt_prune(cfg->training.run_dir, cfg->training.keep_checkpoints, err) < 0 ? -1 : 0;
}

static const CkptState *checkpoint_state(CkptFile *ck, const char *path, BpError *err) {
    size_t bytes = 0;
    const CkptState *st = ckpt_section(ck, "state", &bytes);
    if (!st || bytes != sizeof *st || strncmp(st->build, CKPT_BUILD_TAG, sizeof st->build) != 0) {
        bp_fail(err, "%s: not a training checkpoint of this program version (state section)", path);
        return NULL;
    }
    return st;
}

/* Which configuration keys may change on resume without changing the run's results: logging,
 * checkpointing, threads, evaluation, paths used only by `prepare`. micro_batch is allowed too:
 * examples and dropout are keyed by global example index, so only the order of the floating-point
 * gradient sums changes. */
static bool safe_to_change(const char *key) {
    static const char *safe[] = {
        "training.log_every", "training.checkpoint_every", "training.keep_checkpoints",
        "training.eval_every", "training.threads", "training.trust_ratio_every",
        "training.skip_nonfinite", "training.max_memory_gb", "training.micro_batch",
        "training.run_dir", "data.eval", "data.eval_examples", "data.input", "data.eval_fraction",
        "data.vocab_size", "model.init_from", "source", "resolved", "world_size",
    };
    for (size_t i = 0; i < BP_ARRAY_LEN(safe); i++)
        if (!strcmp(key, safe[i])) return true;
    /* a phase's micro-batch, and its accumulation derived from it */
    if (strncmp(key, "phases.", 7) != 0) return false;
    const char *field = strrchr(key, '.') + 1;
    return !strcmp(field, "accumulation") || !strcmp(field, "micro_batch");
}

typedef struct {
    int refused;
    char first_refused[512];
} DiffReport;

static void report_diff(const char *key, const char *old_value, const char *new_value, void *ctx) {
    DiffReport *r = ctx;
    bool ok = safe_to_change(key);
    fprintf(stderr, "resume: %s changed: %s -> %s%s\n", key, old_value, new_value,
            ok ? " (allowed)" : " (REFUSED: it changes the run)");
    if (!ok && r->refused++ == 0)
        snprintf(r->first_refused, sizeof r->first_refused, "%s (%s -> %s)", key, old_value, new_value);
}

static int load_checkpoint_into(Trainer *tr, const char *path, BpError *err) {
    CkptFile *ck = ckpt_open(path, err);
    if (!ck) return -1;
    int rc = -1;
    const ParamTable *t = model_table(tr->model);
    const CkptState *st = checkpoint_state(ck, path, err);
    if (!st) goto done;
    size_t bytes = 0;
    const char *json = ckpt_section(ck, "config.json", &bytes);
    if (!json) {
        bp_fail(err, "%s: no config.json section", path);
        goto done;
    }
    char *old_json = strndup(json, bytes);
    if (!old_json) {
        bp_fail(err, "out of memory");
        goto done;
    }
    DiffReport rep = {0};
    int nd = config_json_diff(old_json, tr->config_json, report_diff, &rep, err);
    free(old_json);
    if (nd < 0) goto done;
    if (rep.refused) {
        bp_fail_usage(err,
                      "%s: the configuration changed in a way that changes the run: %s%s. HINT: resume "
                      "with the original settings, or start a new run directory",
                      path, rep.first_refused, rep.refused > 1 ? " and more (listed above)" : "");
        goto done;
    }
    if ((size_t)st->total_floats != t->total || st->n_tensors != t->n || st->vocab_size != tr->vocab_size) {
        bp_fail_usage(err, "%s: model shape differs from the config (%d tensors, %lld floats, vocab %d)", path,
                      st->n_tensors, (long long)st->total_floats, st->vocab_size);
        goto done;
    }
    const void *params = ckpt_section(ck, "params", &bytes);
    if (!params || bytes != t->total * sizeof(float)) {
        bp_fail(err, "%s: params section has the wrong size", path);
        goto done;
    }
    memcpy(model_params(tr->model), params, bytes);
    const void *blob = ckpt_section(ck, "optimizer", &bytes);
    if (!blob) {
        bp_fail(err, "%s: no optimizer section", path);
        goto done;
    }
    if (optim_state_load(tr->opt, blob, bytes, err) != 0) {
        bp_err_prefix(err, "%s", path);
        goto done;
    }
    tr->step = st->step;
    tr->elapsed_before = st->elapsed_s;
    rc = 0;
done:
    ckpt_close(ck);
    return rc;
}

/* --resume auto: the newest checkpoint that loads; a corrupt one is skipped with a warning. */
static int resume_auto(Trainer *tr, bool *resumed, BpError *err) {
    enum { MAX_CKPT = 64 };
    static char paths[MAX_CKPT][4096];
    long steps[MAX_CKPT];
    *resumed = false;
    int n = ckpt_list(tr->cfg->training.run_dir, paths, steps, MAX_CKPT, err);
    if (n < 0) return -1;
    for (int i = 0; i < n && i < MAX_CKPT; i++) {
        BpError e = {0};
        if (load_checkpoint_into(tr, paths[i], &e) == 0) {
            fprintf(stderr, "resumed from %s (step %ld)\n", paths[i], tr->step);
            *resumed = true;
            return 0;
        }
        if (e.kind == BP_ERR_USAGE || e.kind == BP_ERR_MISMATCH) { /* a config mismatch is not corruption: stop */
            *err = e;
            return -1;
        }
        fprintf(stderr, "warning: skipping checkpoint: %s\n", e.msg);
    }
    if (n > 0) return bp_fail(err, "%s: no valid checkpoint to resume from", tr->cfg->training.run_dir);
    fprintf(stderr, "no checkpoint in %s: starting a new run\n", tr->cfg->training.run_dir);
    return 0;
}

/* ---- evaluation ------------------------------------------------------------------------------ */

static int evaluate(Model *model, Dataset *ds, const Config *cfg, const PhaseConfig *phase,
                    Batch *scratch, EvalRecord *out, BpError *err) {
    double t0 = bp_now();
    int vocab = tokenizer_vocab_size(dataset_tokenizer(ds));
    long *label_counts = bp_calloc((size_t)vocab, sizeof(long), "eval label counts", err);
    if (!label_counts) return -1;
    ExampleArgs ea = example_args(cfg, phase);
    int micro = phase->micro_batch, n = cfg->data.eval_examples;
    double mlm_sum = 0, nsp_sum = 0;
    long correct = 0, count = 0, nsp_correct = 0, nsp_count = 0;
    /* denominators of 1 make the stats plain sums; fixed masking: eval examples are indices 0..n-1
       keyed by the run's seed, the same at every evaluation */
    ForwardArgs fa = {.train = false, .seed = cfg->training.seed, .step = 0, .mlm_denominator = 1,
                      .nsp_denominator = 1};
    for (int first = 0; first < n; first += micro) {
        int count_here = n - first < micro ? n - first : micro;
        ModelStats st;
        if (dataset_build_batch(ds, &ea, first, count_here, scratch, err) != 0 ||
            model_forward(model, scratch, &fa, &st, err) != 0) {
            free(label_counts);
            return -1;
        }
        for (size_t i = 0; i < (size_t)scratch->B * scratch->P; i++)
            if (scratch->masked_lm_weights[i]) label_counts[scratch->masked_lm_ids[i]]++;
        mlm_sum += st.mlm_loss;
        nsp_sum += st.nsp_loss;
        correct += st.mlm_correct;
        count += st.mlm_count;
        nsp_correct += st.nsp_correct;
        nsp_count += st.nsp_count;
    }
    long majority = 0;
    for (int v = 0; v < vocab; v++)
        if (label_counts[v] > majority) majority = label_counts[v];
    free(label_counts);
    out->mlm_majority_acc = count ? (double)majority / (double)count : NAN;
    out->examples = nsp_count;
    out->predictions = count;
    out->mlm_loss = count ? mlm_sum / (double)count : NAN;
    out->mlm_acc = count ? (double)correct / (double)count : NAN;
    out->nsp_loss = nsp_count ? nsp_sum / (double)nsp_count : NAN;
    out->nsp_acc = nsp_count ? (double)nsp_correct / (double)nsp_count : NAN;
    out->seconds = bp_now() - t0;
    return 0;
}

static void print_eval(const EvalRecord *r) {
    fprintf(stderr,
            "eval @ step %ld: mlm_loss %.4f  mlm_acc %.4f (most-frequent-token baseline %.4f)  nsp_loss %.4f  "
            "nsp_acc %.4f  (%ld examples, %ld predictions, %.1f s)\n",
            r->step, r->mlm_loss, r->mlm_acc, r->mlm_majority_acc, r->nsp_loss, r->nsp_acc, r->examples,
            r->predictions, r->seconds);
}

/* ---- the loop -------------------------------------------------------------------------------- */

static int alloc_micro_batches(Trainer *tr, BpError *err) {
    const Config *cfg = tr->cfg;
    tr->n_micro = max_of_phases(cfg, 2);
    tr->micro = bp_calloc((size_t)tr->n_micro, sizeof *tr->micro, "micro-batches", err);
    if (!tr->micro) return -1;
    for (int k = 0; k < tr->n_micro; k++)
        if (batch_alloc(&tr->micro[k], max_of_phases(cfg, 3), max_of_phases(cfg, 0), max_of_phases(cfg, 1),
                        err) != 0)
            return -1;
    return 0;
}

/* Seconds the remaining steps would take at the measured rate of this session, counting tokens
 * (a phase at seq 512 costs its tokens; attention's extra cost at long sequences is ignored). */
static double eta_seconds(const Config *cfg, long step_done, double tokens_per_s) {
    if (!(tokens_per_s > 0)) return NAN;
    double tokens = 0;
    for (int i = 0; i < cfg->n_phases; i++) {
        const PhaseConfig *p = &cfg->phases[i];
        long end = p->first_step + p->steps;
        long left = end - (step_done > p->first_step ? step_done : p->first_step);
        if (left > 0) tokens += (double)left * p->batch_size * p->seq_len;
    }
    return tokens / tokens_per_s;
}

static void print_startup(const Trainer *tr, bool resumed) {
    const Config *cfg = tr->cfg;
    const ParamTable *t = model_table(tr->model);
    long long n_params = 0;
    for (int i = 0; i < t->n; i++) n_params += (long long)t->params[i].numel;
    fprintf(stderr, "bert_pretrain: %s  L=%d H=%d A=%d I=%d vocab=%d  %.2fM parameters  optimizer %s\n",
            cfg->model.preset[0] ? cfg->model.preset : "custom", cfg->model.layers, cfg->model.hidden,
            cfg->model.heads, cfg->model.intermediate, tr->vocab_size, (double)n_params / 1e6,
            config_optimizer_name(cfg->optimizer.name));
    for (int i = 0; i < cfg->n_phases; i++) {
        const PhaseConfig *p = &cfg->phases[i];
        fprintf(stderr,
                "  phase %d: %d steps, global batch %d = micro %d x accumulation %d x %d rank(s), seq %d, "
                "%d predictions, %ld tokens/step, peak lr %.4g, warmup %ld%s\n",
                i + 1, p->steps, p->batch_size, p->micro_batch, p->accumulation, cfg->world_size,
                p->seq_len, p->max_predictions_per_seq, (long)p->batch_size * p->seq_len, p->segment_lr,
                p->segment_warmup, p->restart_schedule ? " (re-warmup)" : "");
    }
    double mem = train_memory_estimate(cfg, tr->vocab_size);
    fprintf(stderr, "  memory estimate %.2f GiB (machine %.1f GiB); run dir %s%s\n", mem / 1073741824.0,
            machine_memory_bytes() / 1073741824.0, cfg->training.run_dir,
            resumed ? "" : " (new run)");
}

static int check_finite(Trainer *tr, double loss, double norm, bool *skip, BpError *err) {
    *skip = false;
    if (isfinite(loss) && isfinite(norm)) return 0;
    const ParamTable *t = model_table(tr->model);
    const char *tensor = "(none: the loss itself)";
    for (int i = 0; i < t->n; i++)
        if (!isfinite(tr->tensor_sq[i])) {
            tensor = t->params[i].name;
            break;
        }
    char msg[BP_ERR_LEN];
    snprintf(msg, sizeof msg, "step %ld: non-finite %s (loss %g, gradient norm %g); first offending tensor: %s",
             tr->step + 1, isfinite(loss) ? "gradient" : "loss", loss, norm, tensor);
    if (tr->cfg->training.skip_nonfinite) {
        log_break(&tr->log);
        fprintf(stderr, "warning: %s; skipping the update (training.skip_nonfinite)\n", msg);
        *skip = true;
        return 0;
    }
    return bp_fail(err, "%s. The last good checkpoint is %s (left intact). HINT: lower the lr, enable "
                        "clipping, or set training.skip_nonfinite: true",
                   msg, tr->last_checkpoint[0] ? tr->last_checkpoint : "(none yet)");
}

/* Test hook: BERT_PRETRAIN_INJECT_NAN=S puts a NaN into the gradients at optimizer step S (1-based),
 * so the non-finite guard can be tested end to end. */
static long env_step(const char *name) {
    const char *s = getenv(name);
    return s ? atol(s) : -1;
}

static int train_step(Trainer *tr, StepRecord *rec, BpError *err) {
    const Config *cfg = tr->cfg;
    int pi = config_phase_of(cfg, tr->step);
    const PhaseConfig *phase = &cfg->phases[pi];
    ExampleArgs ea = example_args(cfg, phase);
    int micro = phase->micro_batch, world = cfg->world_size, rank = dist_rank();
    int64_t first = dataset_step_first_example(cfg, tr->step);
    double t0 = bp_now();
    if (pi != tr->planned_phase) {
        /* activations sized for exactly this phase's (micro-batch, seq_len), once per phase */
        model_release_activations(tr->model);
        if (model_plan(tr->model, micro, phase->seq_len, phase->max_predictions_per_seq, err) != 0) return -1;
        tr->planned_phase = pi;
    }

    /* Build every micro-batch of the step first: the loss is normalised by the whole global batch's
       prediction count, which must be known before the first backward. */
    double counts[1] = {0};
    for (int k = 0; k < phase->accumulation; k++) {
        int64_t at = first + ((int64_t)k * world + rank) * micro;
        if (dataset_build_batch(tr->train, &ea, at, micro, &tr->micro[k], err) != 0) return -1;
        counts[0] += (double)batch_count_predictions(&tr->micro[k]);
    }
    dist_allreduce_doubles(counts, 1);

    ForwardArgs fa = {.train = true, .seed = cfg->training.seed, .step = tr->step,
                      .mlm_denominator = counts[0] > 0 ? counts[0] : 1, .nsp_denominator = phase->batch_size};
    double sums[7] = {0};
    model_zero_grad(tr->model);
    for (int k = 0; k < phase->accumulation; k++) {
        ModelStats st;
        if (model_forward(tr->model, &tr->micro[k], &fa, &st, err) != 0) return -1;
        model_backward(tr->model);
        sums[0] += st.loss;
        sums[1] += st.mlm_loss;
        sums[2] += st.nsp_loss;
        sums[3] += (double)st.mlm_correct;
        sums[4] += (double)st.mlm_count;
        sums[5] += (double)st.nsp_correct;
        sums[6] += (double)st.nsp_count;
    }
    const ParamTable *t = model_table(tr->model);
    float *grads = model_grads(tr->model);
    dist_allreduce_doubles(sums, 7);
    dist_allreduce_floats(grads, t->total);
    if (tr->step + 1 == env_step("BERT_PRETRAIN_INJECT_NAN")) grads[t->params[t->n / 2].offset] = NAN;

    double norm = optim_grad_norm(t, grads, tr->tensor_sq);
    bool skip = false;
    if (check_finite(tr, sums[0], norm, &skip, err) != 0) return -1;
    double lr = schedule_lr(cfg, tr->step);
    if (!skip) optim_step(tr->opt, model_params(tr->model), grads, lr, norm);
    tr->step++;

    double dt = bp_now() - t0;
    memset(rec, 0, sizeof *rec);
    rec->step = tr->step;
    rec->phase = pi;
    rec->lr = lr;
    rec->loss = sums[0];
    rec->mlm_loss = sums[1];
    rec->nsp_loss = sums[2];
    rec->mlm_acc = sums[4] > 0 ? sums[3] / sums[4] : NAN;
    rec->nsp_acc = sums[6] > 0 ? sums[5] / sums[6] : NAN;
    rec->grad_norm = norm;
    rec->tokens_per_s = (double)phase->batch_size * phase->seq_len / dt;
    return 0;
}

static void trainer_free(Trainer *tr) {
    log_close(&tr->log);
    if (tr->micro)
        for (int k = 0; k < tr->n_micro; k++) batch_free(&tr->micro[k]);
    free(tr->micro);
    free(tr->tensor_sq);
    free(tr->config_json);
    free(tr->vocab_text);
    optim_free(tr->opt);
    model_free(tr->model);
    dataset_free(tr->train);
    dataset_free(tr->eval);
}

static bool file_exists(const char *path) {
    struct stat sb;
    return path[0] && stat(path, &sb) == 0;
}

/* Opens the data, builds model and optimizer, plans memory. */
static int trainer_setup(Trainer *tr, const Config *cfg, BpError *err) {
    memset(tr, 0, sizeof *tr);
    tr->cfg = cfg;
    tr->session_start = bp_now();
    set_threads(cfg);
    if (!file_exists(cfg->data.train))
        return bp_fail(err, "%s: training shard not found. HINT: run `bert_pretrain prepare %s` first",
                       cfg->data.train, cfg->source[0] ? cfg->source : "CONFIG");
    tr->train = dataset_open(cfg->data.train, cfg->data.vocab, cfg->data.lowercase, err);
    if (!tr->train) return -1;
    if (file_exists(cfg->data.eval)) {
        tr->eval = dataset_open(cfg->data.eval, cfg->data.vocab, cfg->data.lowercase, err);
        if (!tr->eval) return -1;
    }
    tr->vocab_size = tokenizer_vocab_size(dataset_tokenizer(tr->train));
    if (cfg->model.vocab_size && cfg->model.vocab_size != tr->vocab_size)
        return bp_fail_usage(err, "model.vocab_size %d does not match %s (%d entries)", cfg->model.vocab_size,
                             cfg->data.vocab, tr->vocab_size);
    tr->vocab_text = bp_read_file(cfg->data.vocab, &tr->vocab_len, err);
    if (!tr->vocab_text) return -1;
    double need = train_memory_estimate(cfg, tr->vocab_size);
    double limit = cfg->training.max_memory_gb > 0 ? cfg->training.max_memory_gb * 1073741824.0
                                                   : machine_memory_bytes();
    if (limit > 0 && need > limit)
        return bp_fail_usage(err,
                             "this run needs about %.1f GiB (parameters, gradients, optimizer state, "
                             "activations at the largest phase's micro-batch) but %.1f GiB is available. "
                             "HINT: lower training.micro_batch or a phase's micro_batch (the global batch "
                             "stays the same; accumulation grows)",
                             need / 1073741824.0, limit / 1073741824.0);
    tr->model = model_create(cfg, tr->vocab_size, err);
    if (!tr->model) return -1;
    tr->planned_phase = -1;
    tr->opt = optim_create(&cfg->optimizer, model_table(tr->model), err);
    if (!tr->opt) return -1;
    tr->tensor_sq = bp_calloc((size_t)model_table(tr->model)->n, sizeof(double), "gradient norms", err);
    if (!tr->tensor_sq) return -1;
    tr->config_json = config_to_json(cfg);
    if (!tr->config_json) return bp_fail(err, "out of memory writing the configuration");
    return alloc_micro_batches(tr, err);
}

int train_run(const Config *cfg, const TrainOptions *opt, BpError *err) {
    Trainer tr;
    int rc = -1;
    if (trainer_setup(&tr, cfg, err) != 0) goto done;
    if (bp_mkdir_p(cfg->training.run_dir, err) != 0) goto done;

    bool resumed = false;
    if (opt->resume && !strcmp(opt->resume, "auto")) {
        if (resume_auto(&tr, &resumed, err) != 0) goto done;
    } else if (opt->resume) {
        if (load_checkpoint_into(&tr, opt->resume, err) != 0) goto done;
        resumed = true;
        fprintf(stderr, "resumed from %s (step %ld)\n", opt->resume, tr.step);
    }
    if (!resumed) {
        char existing[1][4096];
        long st[1];
        if (ckpt_list(cfg->training.run_dir, existing, st, 1, err) > 0) {
            bp_fail_usage(err, "%s already holds checkpoints (newest %s). HINT: add --resume auto to continue, "
                               "or choose another training.run_dir",
                          cfg->training.run_dir, existing[0]);
            goto done;
        }
        model_init_weights(tr.model, cfg->training.seed);
        if (cfg->model.init_from[0]) {
            if (model_load_safetensors(tr.model, cfg->model.init_from, err) != 0) goto done;
            fprintf(stderr, "initialised from %s (fresh optimizer state)\n", cfg->model.init_from);
        }
        dist_broadcast_floats(model_params(tr.model), model_table(tr.model)->total);
    }
    if (resumed) snprintf(tr.last_checkpoint, sizeof tr.last_checkpoint, "(the one resumed from)");
    print_startup(&tr, resumed);
    if (log_open(&tr.log, cfg->training.run_dir, resumed ? tr.step : -1, err) != 0) goto done;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    double session_tokens = 0, session_train_s = 0;
    bool eta_reported = false;
    while (tr.step < cfg->total_steps) {
        StepRecord rec;
        double t0 = bp_now();
        if (train_step(&tr, &rec, err) != 0) goto done;
        session_train_s += bp_now() - t0;
        int pi = rec.phase;
        const PhaseConfig *phase = &cfg->phases[pi];
        session_tokens += (double)phase->batch_size * phase->seq_len;
        double rate = session_tokens / session_train_s;
        rec.elapsed_s = tr.elapsed_before + (bp_now() - tr.session_start);
        log_step(&tr.log, &rec);
        double eta = eta_seconds(cfg, tr.step, rate);
        bool phase_end = tr.step == phase->first_step + phase->steps;
        if (cfg->training.log_every > 0 && (tr.step % cfg->training.log_every == 0 || phase_end))
            log_progress(&tr.log, &rec, cfg->total_steps, cfg->n_phases, eta, phase_end);
        if (!eta_reported && (session_train_s > 20 || tr.step == cfg->total_steps)) {
            char when[32];
            log_format_duration(when, sizeof when, eta);
            log_break(&tr.log);
            fprintf(stderr, "measured %.0f tokens/s: the remaining %ld steps would take %s on this machine\n",
                    rate, cfg->total_steps - tr.step, when);
            eta_reported = true;
        }
        if (cfg->training.trust_ratio_every > 0 && tr.step % cfg->training.trust_ratio_every == 0) {
            const OptimLayerStat *ls = optim_layer_stats(tr.opt);
            if (ls) log_trust_ratios(&tr.log, tr.step, model_table(tr.model), ls);
        }
        bool last = tr.step == cfg->total_steps;
        if (tr.eval && ((cfg->training.eval_every > 0 && tr.step % cfg->training.eval_every == 0) || last)) {
            EvalRecord ev;
            if (evaluate(tr.model, tr.eval, cfg, phase, &tr.micro[0], &ev, err) != 0) goto done;
            ev.step = tr.step;
            log_eval(&tr.log, &ev);
            log_break(&tr.log);
            print_eval(&ev);
        }
        bool due = (cfg->training.checkpoint_every > 0 && tr.step % cfg->training.checkpoint_every == 0) ||
                   phase_end || last || stop_signal;
        if (due && save_checkpoint(&tr, err) != 0) goto done;
        /* Test hook: BERT_PRETRAIN_KILL_AFTER_STEP=S dies by SIGKILL right after step S (and its
           checkpoint, if one was due), exactly like `kill -9` at that moment, for the resume test. */
        if (tr.step == env_step("BERT_PRETRAIN_KILL_AFTER_STEP")) raise(SIGKILL);
        if (stop_signal && !last) {
            log_break(&tr.log);
            fprintf(stderr, "stopped by %s after step %ld; checkpoint %s\nresume with: %s%s --resume auto\n",
                    stop_signal == SIGINT ? "SIGINT" : "SIGTERM", tr.step, tr.last_checkpoint,
                    opt->resume_command ? "" : "bert_pretrain ",
                    opt->resume_command ? opt->resume_command : opt->config_path ? opt->config_path : "CONFIG");
            rc = 0;
            goto done;
        }
    }
    log_break(&tr.log);
    fprintf(stderr, "done: %ld steps; final checkpoint %s\n", tr.step, tr.last_checkpoint);
    rc = 0;
done:
    trainer_free(&tr);
    return rc;
}

/* ---- eval and export from a checkpoint ------------------------------------------------------- */

int train_eval_checkpoint(const Config *cfg, const char *checkpoint, BpError *err) {
    Trainer tr;
    int rc = -1;
    memset(&tr, 0, sizeof tr);
    tr.cfg = cfg;
    set_threads(cfg);
    if (!file_exists(cfg->data.eval)) {
        bp_fail(err, "%s: eval shard not found. HINT: run `bert_pretrain prepare` first", cfg->data.eval);
        goto done;
    }
    tr.eval = dataset_open(cfg->data.eval, cfg->data.vocab, cfg->data.lowercase, err);
    if (!tr.eval) goto done;
    tr.vocab_size = tokenizer_vocab_size(dataset_tokenizer(tr.eval));
    CkptFile *ck = ckpt_open(checkpoint, err);
    if (!ck) goto done;
    const CkptState *st = checkpoint_state(ck, checkpoint, err);
    tr.model = st ? model_create(cfg, tr.vocab_size, err) : NULL;
    size_t bytes = 0;
    const void *params = tr.model ? ckpt_section(ck, "params", &bytes) : NULL;
    if (tr.model && (!params || bytes != model_table(tr.model)->total * sizeof(float))) {
        bp_fail_usage(err, "%s: its parameters do not fit the model of this config (different shape or vocab)",
                      checkpoint);
        params = NULL;
    }
    if (params) memcpy(model_params(tr.model), params, bytes);
    long step = st ? (long)st->step : 0;
    ckpt_close(ck);
    if (!params) goto done;
    const PhaseConfig *phase = &cfg->phases[config_phase_of(cfg, step > 0 ? step - 1 : 0)];
    Batch scratch = {0};
    if (batch_alloc(&scratch, phase->micro_batch, phase->seq_len, phase->max_predictions_per_seq, err) != 0 ||
        model_plan(tr.model, phase->micro_batch, phase->seq_len, phase->max_predictions_per_seq, err) != 0) {
        batch_free(&scratch);
        goto done;
    }
    EvalRecord ev;
    rc = evaluate(tr.model, tr.eval, cfg, phase, &scratch, &ev, err);
    batch_free(&scratch);
    if (rc == 0) {
        ev.step = step;
        print_eval(&ev);
        printf("{\"checkpoint\":\"%s\",\"step\":%ld,\"eval_mlm_loss\":%.6f,\"eval_mlm_acc\":%.6f,"
               "\"eval_mlm_majority_acc\":%.6f,\"eval_nsp_loss\":%.6f,\"eval_nsp_acc\":%.6f,\"examples\":%ld}\n",
               checkpoint, step, ev.mlm_loss, ev.mlm_acc, ev.mlm_majority_acc, ev.nsp_loss, ev.nsp_acc,
               ev.examples);
    }
done:
    trainer_free(&tr);
    return rc;
}

int train_export(const char *checkpoint, const char *out_dir, BpError *err) {
    int rc = -1;
    Model *model = NULL;
    CkptFile *ck = ckpt_open(checkpoint, err);
    if (!ck) return -1;
    const CkptState *st = checkpoint_state(ck, checkpoint, err);
    size_t bytes = 0;
    const Config *saved = st ? ckpt_section(ck, "config.bin", &bytes) : NULL;
    if (st && (!saved || bytes != sizeof(Config) || st->config_struct_bytes != sizeof(Config))) {
        bp_fail(err, "%s: written by an incompatible build of bert_pretrain (config layout)", checkpoint);
        goto done;
    }
    if (!st) goto done;
    Config cfg = *saved;
    model = model_create(&cfg, st->vocab_size, err);
    if (!model) goto done;
    const void *params = ckpt_section(ck, "params", &bytes);
    if (!params || bytes != model_table(model)->total * sizeof(float)) {
        bp_fail(err, "%s: params section does not match its own config", checkpoint);
        goto done;
    }
    memcpy(model_params(model), params, bytes);
    if (bp_mkdir_p(out_dir, err) != 0) goto done;
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    if (model_save_safetensors(model, path, err) != 0) goto done;
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    if (model_write_hf_config(model, path, err) != 0) goto done;
    const void *vocab = ckpt_section(ck, "vocab", &bytes);
    snprintf(path, sizeof path, "%s/vocab.txt", out_dir);
    AtomicFile af;
    if (!vocab || bp_atomic_open(&af, path, err) != 0) {
        if (!vocab) bp_fail(err, "%s: no vocab section", checkpoint);
        goto done;
    }
    fwrite(vocab, 1, bytes, af.fp);
    if (bp_atomic_commit(&af, err) != 0) goto done;
    fprintf(stderr, "exported step %lld of %s to %s/ (model.safetensors, config.json, vocab.txt)\n",
            (long long)st->step, checkpoint, out_dir);
    rc = 0;
done:
    model_free(model);
    ckpt_close(ck);
    return rc;
}
