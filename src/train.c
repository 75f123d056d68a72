/* train.c: the training loop, evaluation, and the checkpoint-level entry points eval and export
 * (see train.h). What a checkpoint holds and how it is validated is run_ckpt.c's business. */
#include "train.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "checkpoint.h"
#include "dist.h"
#include "gemm_cpu.h"
#include "grad_sync.h"
#include "kernels.h"
#include "log.h"
#include "model.h"
#include "optim.h"
#include "run_ckpt.h"
#include "rundir.h"
#include "schedule.h"
#include "tokenizer.h"

/* ---- signals ---------------------------------------------------------------------------------
 * Until the first step there is nothing to save: a terminating signal removes this process's
 * temporaries and its lock and ends it at once (bp_cleanup_on_stop_signals). From the first step
 * on, every terminating signal (common.h's list: SIGHUP and SIGPIPE too) only sets stop_signal;
 * one process stops at the next micro-batch or eval batch boundary, writes a checkpoint and exits
 * 0. Several ranks (mpirun) stop together: after each step they agree whether any rank got a
 * signal, and if so all stop after that step, with one checkpoint (trainer_loop). */

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
    char *vocab_text;
    size_t vocab_len;
    double *tensor_sq; /* per-tensor squared gradient norms */
    char last_checkpoint[4096];
    int planned_phase; /* the phase the activations are planned for, -1 before the first step */
    GradSync sync;     /* the step's overlapped gradient sum (several ranks) */
    RunDirLock lock;
    /* the steps of the newest keep_checkpoints checkpoints in run_dir this run knows to be valid
       (resumed from or written by it), a ring in step order: see save_checkpoint */
    long *valid;
    long n_valid;
    /* rank 0, sharded optimizer: the checkpoint resumed from stays open (mapped) until share_start
       has handed every rank its part of the optimizer state */
    RunCkpt *resume_ck;
} Trainer;

/* The largest per-phase sizes: the step's micro-batches are allocated once for all phases. */
typedef struct {
    int seq_len, predictions, accumulation, micro_batch;
} PhaseMaxima;

static PhaseMaxima phase_maxima(const Config *cfg) {
    PhaseMaxima m = {0, 0, 0, 0};
    for (int i = 0; i < cfg->n_phases; i++) {
        const PhaseConfig *p = &cfg->phases[i];
        if (p->seq_len > m.seq_len) m.seq_len = p->seq_len;
        if (p->max_predictions_per_seq > m.predictions) m.predictions = p->max_predictions_per_seq;
        if (p->accumulation > m.accumulation) m.accumulation = p->accumulation;
        if (p->micro_batch > m.micro_batch) m.micro_batch = p->micro_batch;
    }
    return m;
}

/* A step's figures summed over its micro-batches (and ranks: all-reduced as one array). */
typedef struct {
    double loss, mlm_loss, nsp_loss;
    double mlm_correct, mlm_count, nsp_correct, nsp_count;
} StepSums;
#define STEP_SUMS_LEN 7
_Static_assert(sizeof(StepSums) == STEP_SUMS_LEN * sizeof(double), "StepSums is an array of doubles");

static void step_sums_add(StepSums *s, const ModelStats *st) {
    s->loss += st->loss;
    s->mlm_loss += st->mlm_loss;
    s->nsp_loss += st->nsp_loss;
    s->mlm_correct += (double)st->mlm_correct;
    s->mlm_count += (double)st->mlm_count;
    s->nsp_correct += (double)st->nsp_correct;
    s->nsp_count += (double)st->nsp_count;
}

/* Open MPI's temporaries of the gradient sums in flight: GRAD_SYNC_IN_FLIGHT of the largest bucket. */
static double train_comm_bytes(const ModelConfig *mc, int vocab_size) {
    size_t *ranges = malloc(((size_t)mc->layers + 2) * sizeof *ranges);
    if (!ranges) return 0.0;
    int n = model_grad_ranges(mc, vocab_size, ranges);
    double bytes = 4.0 * GRAD_SYNC_IN_FLIGHT * (double)grad_sync_largest_bucket(ranges, n, GRAD_SYNC_BUCKET_FLOATS);
    free(ranges);
    return bytes;
}

TrainMemory train_memory_plan(const Config *cfg, int vocab_size) {
    TrainMemory m = {0};
    ParamTable t = {0};
    if (model_param_table(&cfg->model, vocab_size, &t, NULL) != 0) return m;
    double floats = (double)t.total;
    param_table_free(&t);
    m.ranks = cfg->world_size;
    m.sharded = cfg->training.shard_optimizer && cfg->world_size > 1;
    m.params = 4.0 * floats;
    m.grads = 4.0 * floats;
    /* two moments for LAMB/Adam/AdamW, one for LARS */
    m.optimizer_full = 4.0 * floats * (cfg->optimizer.name == OPT_LARS ? 1 : 2);
    m.optimizer = m.sharded ? m.optimizer_full / m.ranks : m.optimizer_full;
    double copies = 0.0;
    ModelActStorage st = model_act_storage(cfg);
    m.storage = st;
    for (int i = 0; i < cfg->n_phases; i++) {
        const PhaseConfig *p = &cfg->phases[i];
        double a = (double)model_activation_bytes(&cfg->model, vocab_size, p->micro_batch, p->seq_len,
                                                  p->max_predictions_per_seq, st);
        if (a > m.activations) m.activations = a;
        /* bf16 products on oneDNN: its operand copies on every thread */
        double c = st.bf16 && gemm_bf16_kind_default() == GEMM_BF16_ONEDNN
                       ? (double)model_gemm_copy_bytes(&cfg->model, vocab_size, p->micro_batch, p->seq_len,
                                                       p->max_predictions_per_seq)
                       : 0.0;
        if (c > copies) copies = c;
        /* the step's examples: 3 (B,T) arrays, 3 (B,P) arrays, label and index */
        double e = (double)p->accumulation * p->micro_batch *
                   (12.0 * p->seq_len + 12.0 * p->max_predictions_per_seq + 12.0);
        if (e > m.examples) m.examples = e;
    }
    m.runtime = TRAIN_RUNTIME_BYTES + copies;
    m.comm = m.ranks > 1 ? train_comm_bytes(&cfg->model, vocab_size) : 0.0;
    /* The peak above the steady state, on rank 0 (the one reader of checkpoints): resuming maps the
       checkpoint (parameters and the whole optimizer state) before the first step plans the
       activations. Writing one copies nothing: the state is streamed into the file (run_ckpt_save). */
    m.resume_map = m.params + m.optimizer_full;
    double steady = m.params + m.grads + m.optimizer + m.examples + m.runtime + m.comm;
    m.peak_rank0 = steady + fmax(m.activations, m.resume_map);
    m.peak_other = steady + m.activations;
    return m;
}

double train_memory_estimate(const Config *cfg, int vocab_size) {
    return train_memory_plan(cfg, vocab_size).peak_rank0;
}

void train_memory_print(const TrainMemory *m, FILE *out) {
    const double gib = 1073741824.0;
    fprintf(out, "  memory per rank: parameters %.2f + gradients %.2f + optimizer state %.2f", m->params / gib,
            m->grads / gib, m->optimizer / gib);
    if (m->sharded) fprintf(out, " (1/%d of %.2f, training.shard_optimizer)", m->ranks, m->optimizer_full / gib);
    fprintf(out, " + activations %.2f (%s) + examples and runtime %.2f GiB\n", m->activations / gib,
            m->storage.bf16 ? (m->storage.recompute_attention ? "partly bf16, attention recomputed" : "partly bf16")
                            : (m->storage.recompute_attention ? "attention recomputed" : "all kept in fp32"),
            (m->examples + m->runtime) / gib);
    if (m->comm > 0) fprintf(out, "  + gradient sums in flight %.2f GiB (Open MPI's temporaries)\n", m->comm / gib);
    fprintf(out, "  peak %.2f GiB on rank 0 (the larger of the activations and a resumed checkpoint's map, %.2f GiB)",
            m->peak_rank0 / gib, m->resume_map / gib);
    if (m->ranks > 1) fprintf(out, ", %.2f GiB on the other ranks", m->peak_other / gib);
    fprintf(out, "\n");
}

double train_peak_rss_bytes(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? 1024.0 * (double)ru.ru_maxrss : 0; /* Linux: KiB */
}

static double machine_memory_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (double)pages * (double)page : 0;
}

/* With several ranks, a rank whose own part went well stops quietly when another failed (that
 * rank reports): an empty message (train.h). */
/* Every rank runs the products in one precision. `auto` resolves on each rank's own CPU, so machines
 * of different kinds in one run (the one binary runs on all of them) could otherwise mix bf16 and
 * fp32 products without a word. A collective: every rank calls it and gets the same answer. */
static int ranks_agree_on_precision(const Trainer *tr, BpError *err) {
    bool bf16 = model_engine(tr->model)->bf16;
    bool some_bf16 = dist_any(bf16), some_fp32 = dist_any(!bf16);
    if (some_bf16 && some_fp32)
        return bp_fail_usage(err,
                             "training.precision auto: the ranks' machines differ, bf16 products on those with "
                             "native bf16 dot products and fp32 on the others (this rank: %s); set "
                             "training.precision: fp32 for this set of machines",
                             bf16 ? "bf16" : "fp32");
    return 0;
}

static int peer_failed(BpError *err, bool this_rank) {
    if (!this_rank) {
        err->msg[0] = '\0';
        err->kind = BP_ERR_RUNTIME;
    }
    return -1;
}

/* ---- checkpoints ----------------------------------------------------------------------------- */

static void remember_valid(Trainer *tr, long step) {
    int keep = tr->cfg->training.keep_checkpoints;
    if (tr->n_valid > 0 && tr->valid[(tr->n_valid - 1) % keep] == step) return; /* rewritten */
    tr->valid[tr->n_valid++ % keep] = step;
}

/* Pruning counts only what this run knows to be valid: the checkpoint it resumed from (validated
 * when opened) and the ones it wrote. Once keep_checkpoints of those exist, everything older than
 * the oldest of them goes; a file between them that this run never verified (left by another
 * session) is neither counted nor removed. So neither a corrupt file nor one this run did not
 * check can push the resumed-from or the newest checkpoint out. */
static int save_checkpoint(Trainer *tr, BpError *err) {
    if (dist_rank() != 0) { /* one writer: the others hold the same parameters */
        optim_state_send(tr->opt); /* sharded: this rank's part of the state, streamed into rank 0's file */
        return 0;
    }
    const Config *cfg = tr->cfg;
    RunCkptMeta meta = {.step = tr->step,
                        .elapsed_s = tr->elapsed_before + (bp_now() - tr->session_start),
                        .vocab = tr->vocab_text,
                        .vocab_len = tr->vocab_len};
    char path[4096];
    ckpt_path(path, sizeof path, cfg->training.run_dir, tr->step);
    if (run_ckpt_save(path, cfg, tr->model, tr->opt, &meta, err) != 0) {
        bp_err_prefix(err, "checkpoint of step %ld not written (the last good one is %s)", tr->step,
                      tr->last_checkpoint[0] ? tr->last_checkpoint : "none");
        return -1;
    }
    snprintf(tr->last_checkpoint, sizeof tr->last_checkpoint, "%s", path);
    remember_valid(tr, tr->step);
    int keep = cfg->training.keep_checkpoints;
    if (tr->n_valid < keep) return 0;
    return ckpt_prune_before(cfg->training.run_dir, tr->valid[tr->n_valid % keep], err) < 0 ? -1 : 0;
}

static void report_change(const char *key, const char *old_value, const char *new_value, bool allowed,
                          void *ctx) {
    (void)ctx;
    fprintf(stderr, "resume: %s changed: %s -> %s%s\n", key, old_value, new_value,
            allowed ? " (allowed)" : " (REFUSED: it changes the run)");
}

/* Whether path is run_dir's checkpoint of that step (an explicit --resume may name another). */
static bool in_run_dir(const Trainer *tr, const char *path, long step) {
    char own[4096];
    ckpt_path(own, sizeof own, tr->cfg->training.run_dir, step);
    struct stat a, b;
    return stat(own, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

/* Continues from one checkpoint: validated, compared with this run, then restored. */
static int resume_from(Trainer *tr, const char *path, BpError *err) {
    RunCkpt *ck = run_ckpt_open(path, err);
    if (!ck) return -1;
    int rc = -1;
    if (run_ckpt_check_resume(ck, tr->cfg, report_change, NULL, err) == 0 &&
        run_ckpt_restore_params(ck, tr->model, err) == 0 && run_ckpt_restore_optimizer(ck, tr->opt, err) == 0) {
        tr->step = run_ckpt_step(ck);
        tr->elapsed_before = run_ckpt_elapsed(ck);
        fprintf(stderr, "resumed from %s (step %ld)\n", path, tr->step);
        snprintf(tr->last_checkpoint, sizeof tr->last_checkpoint, "%s", path);
        if (in_run_dir(tr, path, tr->step)) remember_valid(tr, tr->step);
        rc = 0;
    }
    if (rc == 0 && optim_sharded(tr->opt)) tr->resume_ck = ck;
    else run_ckpt_close(ck);
    return rc;
}

/* The corrupt checkpoints newer than the one resumed from go aside (checkpoint.h), so that later
 * pruning and resumes do not count them. */
static void set_aside(char (*paths)[4096], int n) {
    for (int i = 0; i < n; i++) {
        char aside[4200];
        BpError e = {0};
        if (ckpt_set_aside(paths[i], aside, sizeof aside, &e) == 0)
            fprintf(stderr, "warning: the corrupt checkpoint %s is set aside as %s (not counted, not removed: "
                            "delete it when you no longer need it)\n", paths[i], aside);
        else
            fprintf(stderr, "warning: %s\n", e.msg);
    }
}

/* --resume auto: the newest checkpoint that is sound. A corrupt one is skipped with a warning that
 * names it and says why; anything else (a checkpoint that does not fit this run, an OS failure)
 * stops: falling back to an older checkpoint would not fix it. With none sound, all stay where
 * they are and the run stops. */
static int resume_auto(Trainer *tr, bool *resumed, BpError *err) {
    enum { MAX_CKPT = 64 };
    static char paths[MAX_CKPT][4096];
    long steps[MAX_CKPT];
    *resumed = false;
    const char *run_dir = tr->cfg->training.run_dir;
    int n = ckpt_list(run_dir, paths, steps, MAX_CKPT, err);
    if (n < 0) return -1;
    for (int i = 0; i < n && i < MAX_CKPT; i++) {
        BpError e = {0};
        if (resume_from(tr, paths[i], &e) == 0) {
            *resumed = true;
            set_aside(paths, i);
            return 0;
        }
        if (e.kind != BP_ERR_CORRUPT) {
            *err = e;
            return -1;
        }
        size_t plen = strlen(paths[i]);
        bool named = !strncmp(e.msg, paths[i], plen) && !strncmp(e.msg + plen, ": ", 2);
        fprintf(stderr, "warning: skipping checkpoint %s: %s\n", paths[i], named ? e.msg + plen + 2 : e.msg);
    }
    if (n > 0) return bp_fail_kind(err, BP_ERR_CORRUPT, "%s: no valid checkpoint to resume from", run_dir);
    fprintf(stderr, "no checkpoint in %s: starting a new run\n", run_dir);
    return 0;
}

/* ---- evaluation ------------------------------------------------------------------------------ */

/* 0 with *out filled, 1 when a stop signal came first (nothing filled), -1 on failure. */
static int evaluate(Model *model, Dataset *ds, const Config *cfg, const PhaseConfig *phase,
                    Batch *scratch, EvalRecord *out, BpError *err) {
    double t0 = bp_now();
    int vocab = tokenizer_vocab_size(dataset_tokenizer(ds));
    long *label_counts = bp_calloc((size_t)vocab, sizeof(long), "eval label counts", err);
    if (!label_counts) return -1;
    ExampleArgs ea = dataset_example_args(cfg, phase);
    int micro = phase->micro_batch, n = cfg->data.eval_examples;
    double mlm_sum = 0, nsp_sum = 0;
    long correct = 0, count = 0, nsp_correct = 0, nsp_count = 0;
    /* denominators of 1 make the stats plain sums; fixed masking: eval examples are indices 0..n-1
       keyed by the run's seed, the same at every evaluation */
    ForwardArgs fa = {.train = false, .seed = cfg->training.seed, .step = 0, .mlm_denominator = 1,
                      .nsp_denominator = 1};
    for (int first = 0; first < n; first += micro) {
        /* with several ranks the others wait in the next step: stop where they all agree instead */
        if (stop_signal && dist_world_size() == 1) {
            free(label_counts);
            return 1;
        }
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

/* ---- the loop -------------------------------------------------------------------------------- */

static int alloc_micro_batches(Trainer *tr, BpError *err) {
    PhaseMaxima m = phase_maxima(tr->cfg);
    tr->n_micro = m.accumulation;
    tr->micro = bp_calloc((size_t)tr->n_micro, sizeof *tr->micro, "micro-batches", err);
    if (!tr->micro) return -1;
    for (int k = 0; k < tr->n_micro; k++)
        if (batch_alloc(&tr->micro[k], m.micro_batch, m.seq_len, m.predictions, err) != 0) return -1;
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
    long long n_params = params_count(t);
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
    const GemmEngine *e = model_engine(tr->model);
    fprintf(stderr, "  matrix products in %s on %s (%s); OpenBLAS core %s; elementwise kernels %s\n",
            e->bf16 ? "bf16" : "fp32", e->isa, e->why, gemm_openblas_core(), kern_isa());
    TrainMemory mem = train_memory_plan(cfg, tr->vocab_size);
    train_memory_print(&mem, stderr);
    fprintf(stderr, "  memory estimate %.2f GiB (machine %.1f GiB); run dir %s%s\n", mem.peak_rank0 / 1073741824.0,
            machine_memory_bytes() / 1073741824.0, cfg->training.run_dir,
            resumed ? "" : " (new run)");
    if (cfg->training.shard_optimizer && cfg->world_size == 1)
        fprintf(stderr, "  training.shard_optimizer has no effect on one rank\n");
    if (!tr->eval) fprintf(stderr, "  evaluation off: data.eval is not set\n");
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
        if (dist_rank() == 0) fprintf(stderr, "warning: %s; skipping the update (training.skip_nonfinite)\n", msg);
        *skip = true;
        return 0;
    }
    return bp_fail_kind(err, BP_ERR_DIVERGED,
                        "%s. The last good checkpoint is %s (left intact). HINT: lower the lr, enable "
                        "clipping, or set training.skip_nonfinite: true",
                        msg, tr->last_checkpoint[0] ? tr->last_checkpoint : "(none yet)");
}

/* Test hook: BERT_PRETRAIN_INJECT_NAN=S puts a NaN into the gradients at optimizer step S (1-based),
 * so the non-finite guard can be tested end to end. */
static long env_step(const char *name) {
    const char *s = getenv(name);
    return s ? atol(s) : -1;
}

/* Builds every micro-batch of the step before the first forward: the loss is normalised by the
 * whole global batch's prediction count, which must be known before the first backward. Returns
 * that count (all ranks), or -1. */
static double build_step_batches(Trainer *tr, const PhaseConfig *phase, BpError *err) {
    const Config *cfg = tr->cfg;
    ExampleArgs ea = dataset_example_args(cfg, phase);
    int micro = phase->micro_batch, world = cfg->world_size, rank = dist_rank();
    int64_t first = dataset_step_first_example(cfg, tr->step);
    double counts[1] = {0};
    for (int k = 0; k < phase->accumulation; k++) {
        int64_t at = first + ((int64_t)k * world + rank) * micro;
        if (dataset_build_batch(tr->train, &ea, at, micro, &tr->micro[k], err) != 0) return -1;
        counts[0] += (double)batch_count_predictions(&tr->micro[k]);
    }
    dist_allreduce_doubles(counts, 1);
    return counts[0];
}

/* The step's micro-batches: forward and backward each; with several ranks the last backward hands
 * each finished layer's gradients to the overlapped sum (grad_sync.h). Adds into *sums; 0 done, 1
 * when a stop signal came first (one process only: ranks would have to agree on where to stop, so
 * under mpirun the step finishes), -1 failed. */
static int forward_backward(Trainer *tr, const PhaseConfig *phase, const ForwardArgs *fa, StepSums *sums,
                            BpError *err) {
    bool parallel = dist_world_size() > 1;
    model_zero_grad(tr->model);
    for (int k = 0; k < phase->accumulation; k++) {
        ModelStats st;
        if (!parallel && stop_signal) return 1;
        if (model_forward(tr->model, &tr->micro[k], fa, &st, err) != 0) return -1;
        if (parallel && k == phase->accumulation - 1) {
            grad_sync_begin(&tr->sync, model_grads(tr->model), GRAD_SYNC_BUCKET_FLOATS);
            model_set_grad_ready(tr->model, grad_sync_ready, &tr->sync);
        }
        model_backward(tr->model);
        step_sums_add(sums, &st);
    }
    model_set_grad_ready(tr->model, NULL, NULL);
    return 0;
}

/* Activations sized for exactly this phase's (micro-batch, seq_len), once per phase. */
static int plan_phase(Trainer *tr, int pi, BpError *err) {
    if (pi == tr->planned_phase) return 0;
    const PhaseConfig *phase = &tr->cfg->phases[pi];
    model_release_activations(tr->model);
    if (model_plan(tr->model, phase->micro_batch, phase->seq_len, phase->max_predictions_per_seq, err) != 0)
        return -1;
    tr->planned_phase = pi;
    return 0;
}

/* One optimizer step: 0 done (*rec filled), 1 when a stop signal came before the update (the
 * parameters are those of tr->step: a checkpoint of them is a sound place to resume), -1 failed. */
static int train_step(Trainer *tr, StepRecord *rec, BpError *err) {
    const Config *cfg = tr->cfg;
    int pi = config_phase_of(cfg, tr->step);
    const PhaseConfig *phase = &cfg->phases[pi];
    double t0 = bp_now();
    if (plan_phase(tr, pi, err) != 0) return -1;
    double predictions = build_step_batches(tr, phase, err);
    if (predictions < 0) return -1;

    ForwardArgs fa = {.train = true, .seed = cfg->training.seed, .step = tr->step,
                      .mlm_denominator = predictions > 0 ? predictions : 1, .nsp_denominator = phase->batch_size};
    StepSums sums = {0};
    int fb = forward_backward(tr, phase, &fa, &sums, err);
    if (fb != 0) return fb;
    const ParamTable *t = model_table(tr->model);
    float *grads = model_grads(tr->model);
    double exposed = dist_world_size() > 1 ? grad_sync_finish(&tr->sync) : 0;
    dist_allreduce_doubles((double *)&sums, STEP_SUMS_LEN);
    if (tr->step + 1 == env_step("BERT_PRETRAIN_INJECT_NAN")) grads[t->params[t->n / 2].offset] = NAN;

    double norm = optim_grad_norm(t, grads, tr->tensor_sq);
    bool skip = false;
    if (check_finite(tr, sums.loss, norm, &skip, err) != 0) return -1;
    double lr = schedule_lr(cfg, tr->step);
    /* NVIDIA's stage 2 restarts the optimizer's step count (bias correction from t = 1) on the kept
       moments; a checkpoint at the phase boundary is written before this, so resume repeats it */
    if (phase->reset_optimizer_step && tr->step == phase->first_step) optim_reset_step_count(tr->opt);
    if (!skip) {
        optim_step(tr->opt, model_params(tr->model), grads, lr, norm);
        exposed += optim_comm_seconds(tr->opt);
    }
    tr->step++;

    double dt = bp_now() - t0;
    memset(rec, 0, sizeof *rec);
    rec->step = tr->step;
    rec->phase = pi;
    rec->lr = lr;
    rec->loss = sums.loss;
    rec->mlm_loss = sums.mlm_loss;
    rec->nsp_loss = sums.nsp_loss;
    rec->mlm_acc = sums.mlm_count > 0 ? sums.mlm_correct / sums.mlm_count : NAN;
    rec->nsp_acc = sums.nsp_count > 0 ? sums.nsp_correct / sums.nsp_count : NAN;
    rec->grad_norm = norm;
    rec->tokens_per_s = (double)phase->batch_size * phase->seq_len / dt;
    rec->ranks = dist_world_size();
    rec->comm_exposed_s = exposed;
    return 0;
}

static void trainer_free(Trainer *tr) {
    BpError e = {0};
    if (log_close(&tr->log, &e) != 0) fprintf(stderr, "warning: %s\n", e.msg); /* a run that failed already */
    rundir_unlock(&tr->lock);
    free(tr->valid);
    if (tr->micro)
        for (int k = 0; k < tr->n_micro; k++) batch_free(&tr->micro[k]);
    free(tr->micro);
    free(tr->tensor_sq);
    free(tr->vocab_text);
    run_ckpt_close(tr->resume_ck);
    optim_free(tr->opt);
    model_free(tr->model);
    dataset_free(tr->train);
    dataset_free(tr->eval);
}

static bool file_exists(const char *path) {
    struct stat sb;
    return path[0] && stat(path, &sb) == 0;
}

/* The training and eval shards and the vocab (for the checkpoints). */
static int open_data(Trainer *tr, BpError *err) {
    const Config *cfg = tr->cfg;
    if (!file_exists(cfg->data.train))
        return bp_fail(err, "%s: training shard not found. HINT: run `bert_pretrain prepare %s` first",
                       cfg->data.train, cfg->source[0] ? cfg->source : "CONFIG");
    tr->train = dataset_open(cfg->data.train, cfg->data.vocab, cfg->data.lowercase, err);
    if (!tr->train || dataset_check_role(tr->train, SHARD_ROLE_TRAIN, "data.train", err)) return -1;
    /* a named eval shard that is missing is an error, not a run without evaluation: finding out at
       the end of a long run that it never evaluated costs far more than fixing a path now */
    if (cfg->data.eval[0] && !file_exists(cfg->data.eval))
        return bp_fail_usage(err, "%s (data.eval): eval shard not found. HINT: run `bert_pretrain prepare %s` with "
                                  "data.eval_fraction above 0, or set data.eval to \"\" to train without evaluation",
                             cfg->data.eval, cfg->source[0] ? cfg->source : "CONFIG");
    if (cfg->data.eval[0]) {
        tr->eval = dataset_open(cfg->data.eval, cfg->data.vocab, cfg->data.lowercase, err);
        /* no role check here: a held-out set made by a separate prepare (scripts/compare.py split)
           is written as that run's train shard; the swap is caught on data.train's side */
        if (!tr->eval) return -1;
    }
    tr->vocab_size = tokenizer_vocab_size(dataset_tokenizer(tr->train));
    if (cfg->model.vocab_size && cfg->model.vocab_size != tr->vocab_size)
        return bp_fail_usage(err, "model.vocab_size %d does not match %s (%d entries)", cfg->model.vocab_size,
                             cfg->data.vocab, tr->vocab_size);
    tr->vocab_text = bp_read_file(cfg->data.vocab, &tr->vocab_len, err);
    return tr->vocab_text ? 0 : -1;
}

/* Opens the data, checks the memory estimate, builds model and optimizer. */
static int trainer_setup(Trainer *tr, const Config *cfg, BpError *err) {
    tr->cfg = cfg;
    tr->session_start = bp_now();
    tr->planned_phase = -1;
    if (open_data(tr, err) != 0) return -1;
    double need = train_memory_estimate(cfg, tr->vocab_size);
    double limit = cfg->training.max_memory_gb > 0 ? cfg->training.max_memory_gb * 1073741824.0
                                                   : machine_memory_bytes();
    if (limit > 0 && need > limit) {
        /* the settings that keep less without changing the run's result come first */
        ModelActStorage st = model_act_storage(cfg);
        const char *more = !st.recompute_attention ? "; or set training.recompute_attention: true (the same result)"
                           : !st.bf16 && gemm_cpu_features()->avx512_bf16
                               ? "; or training.precision: bf16 (this CPU has it; keeps some activations in bf16)"
                               : "";
        return bp_fail_usage(err,
                             "this run needs about %.1f GiB (parameters, gradients, optimizer state, "
                             "activations at the largest phase's micro-batch) but %.1f GiB is available. "
                             "HINT: lower training.micro_batch or a phase's micro_batch (the global batch "
                             "stays the same; accumulation grows)%s",
                             need / 1073741824.0, limit / 1073741824.0, more);
    }
    tr->model = model_create(cfg, tr->vocab_size, err);
    if (!tr->model) return -1;
    bool shard = cfg->training.shard_optimizer && dist_world_size() > 1;
    tr->opt = optim_create_shard(&cfg->optimizer, model_table(tr->model), shard ? dist_rank() : 0,
                                 shard ? dist_world_size() : 1, err);
    if (!tr->opt) return -1;
    tr->tensor_sq = bp_calloc((size_t)model_table(tr->model)->n, sizeof(double), "gradient norms", err);
    tr->valid = bp_calloc((size_t)cfg->training.keep_checkpoints, sizeof(long), "checkpoint steps", err);
    if (!tr->tensor_sq || !tr->valid) return -1;
    return alloc_micro_batches(tr, err);
}

/* Resumes (--resume auto or PATH) or starts fresh: initial weights, or model.init_from. With
 * several ranks only rank 0 runs this (the run directory need exist on rank 0 alone); share_start
 * hands the result to the others. */
static int trainer_start(Trainer *tr, const char *resume, bool *resumed, BpError *err) {
    const Config *cfg = tr->cfg;
    *resumed = false;
    if (resume && !strcmp(resume, "auto")) {
        if (resume_auto(tr, resumed, err) != 0) return -1;
    } else if (resume) {
        if (resume_from(tr, resume, err) != 0) return -1;
        *resumed = true;
    }
    if (*resumed) return 0;
    char existing[1][4096];
    long st[1];
    int n = ckpt_list(cfg->training.run_dir, existing, st, 1, err);
    if (n < 0) return -1;
    if (n > 0)
        return bp_fail_usage(err, "%s already holds checkpoints (newest %s). HINT: add --resume auto to "
                                  "continue, or choose another training.run_dir",
                             cfg->training.run_dir, existing[0]);
    model_init_weights(tr->model, cfg->training.seed);
    if (cfg->model.init_from[0]) {
        if (model_load_safetensors(tr->model, cfg->model.init_from, err) != 0) return -1;
        fprintf(stderr, "initialised from %s (fresh optimizer state)\n", cfg->model.init_from);
    }
    return 0;
}

/* Rank 0's start to every rank: whether it resumed, the step, the parameters and (on a resume)
 * the optimizer state as its checkpoint blob, so that a run resumes on any number of ranks. */
static int share_start(Trainer *tr, bool *resumed, BpError *err) {
    if (dist_world_size() == 1) return 0;
    double head[3] = {*resumed, (double)tr->step, tr->elapsed_before};
    dist_broadcast_doubles(head, 3);
    *resumed = head[0] != 0;
    tr->step = (long)head[1];
    tr->elapsed_before = head[2];
    dist_broadcast_floats(model_params(tr->model), model_table(tr->model)->total);
    if (!*resumed) return 0;
    if (optim_sharded(tr->opt)) { /* each rank's part from rank 0's mapped checkpoint, no full copy */
        optim_state_share(tr->opt, tr->resume_ck ? run_ckpt_optimizer_state(tr->resume_ck) : NULL);
        run_ckpt_close(tr->resume_ck);
        tr->resume_ck = NULL;
        return 0;
    }
    size_t bytes = optim_state_bytes(tr->opt);
    void *blob = bp_malloc(bytes, "the optimizer state to share", err);
    bool failed = !blob;
    if (!dist_any(failed)) {
        if (dist_rank() == 0) optim_state_save(tr->opt, blob);
        dist_broadcast_bytes(blob, bytes);
        failed = dist_rank() != 0 && optim_state_load(tr->opt, blob, bytes, err) != 0;
    }
    free(blob);
    return dist_any(failed) ? peer_failed(err, failed) : 0;
}

/* This session's throughput, for the ETA. */
typedef struct {
    double tokens, train_s;
    bool eta_reported;
} Session;

/* metrics.jsonl, the progress line, the one-time ETA, trust ratios. -1 when metrics.jsonl has
 * refused records for too long (log.h). */
static int report_step(Trainer *tr, Session *se, StepRecord *rec, bool phase_end, BpError *err) {
    if (dist_rank() != 0) return 0; /* one writer of metrics and progress */
    const Config *cfg = tr->cfg;
    double rate = se->tokens / se->train_s;
    rec->elapsed_s = tr->elapsed_before + (bp_now() - tr->session_start);
    if (log_step(&tr->log, rec, err) < 0) return -1;
    double eta = eta_seconds(cfg, tr->step, rate);
    if (cfg->training.log_every > 0 && (tr->step % cfg->training.log_every == 0 || phase_end))
        log_progress(&tr->log, rec, cfg->total_steps, cfg->n_phases, eta, phase_end);
    if (!se->eta_reported && (se->train_s > 20 || tr->step == cfg->total_steps)) {
        char when[32];
        log_format_duration(when, sizeof when, eta);
        log_break(&tr->log);
        fprintf(stderr, "measured %.0f tokens/s: the remaining %ld steps would take %s on this machine\n", rate,
                cfg->total_steps - tr->step, when);
        se->eta_reported = true;
    }
    if (cfg->training.trust_ratio_every > 0 && tr->step % cfg->training.trust_ratio_every == 0) {
        const OptimLayerStat *ls = optim_layer_stats(tr->opt);
        if (ls && log_trust_ratios(&tr->log, tr->step, model_table(tr->model), ls, err) < 0) return -1;
    }
    return 0;
}

static bool eval_due(const Trainer *tr) {
    const TrainingConfig *t = &tr->cfg->training;
    return tr->eval && ((t->eval_every > 0 && tr->step % t->eval_every == 0) || tr->step == tr->cfg->total_steps);
}

/* The evaluation of step tr->step: 0 done, 1 interrupted by a stop signal (no record), -1 failed
 * (log_failed tells whether metrics.jsonl was the cause). */
static int eval_now(Trainer *tr, bool *log_failed, BpError *err) {
    if (dist_rank() != 0) return 0; /* rank 0 evaluates; the others go on to the next step's sums */
    const PhaseConfig *phase = &tr->cfg->phases[config_phase_of(tr->cfg, tr->step > 0 ? tr->step - 1 : 0)];
    EvalRecord ev;
    int rc = evaluate(tr->model, tr->eval, tr->cfg, phase, &tr->micro[0], &ev, err);
    if (rc != 0) return rc;
    ev.step = tr->step;
    *log_failed = log_eval(&tr->log, &ev, err) < 0;
    if (*log_failed) return -1;
    log_break(&tr->log);
    log_eval_line(stderr, &ev);
    return 0;
}

/* A metrics write failure stops the run, after an attempt to save its progress; the error says
 * how that went. */
static int fail_with_checkpoint(Trainer *tr, BpError *err) {
    if (optim_sharded(tr->opt)) { /* the others are not there to hand over their parts of the state */
        bp_err_prefix(err, "stopped after step %ld without a checkpoint (the optimizer state is sharded across the "
                           "ranks, which cannot join in now); the last is %s",
                      tr->step, tr->last_checkpoint[0] ? tr->last_checkpoint : "none");
        return -1;
    }
    BpError ck = {0};
    if (save_checkpoint(tr, &ck) == 0)
        bp_err_prefix(err, "stopped after step %ld with checkpoint %s", tr->step, tr->last_checkpoint);
    else
        bp_err_prefix(err, "stopped after step %ld; the checkpoint attempt failed too (%s)", tr->step, ck.msg);
    return -1;
}

/* Steps until the end or a stop signal (1: stopped by a signal, 0: finished, -1: failed). */
static int trainer_loop(Trainer *tr, BpError *err) {
    const Config *cfg = tr->cfg;
    Session se = {0, 0, false};
    while (tr->step < cfg->total_steps) {
        StepRecord rec;
        double t0 = bp_now();
        int st = train_step(tr, &rec, err);
        if (st < 0) return -1;
        if (st == 1) return save_checkpoint(tr, err) == 0 ? 1 : -1;
        se.train_s += bp_now() - t0;
        const PhaseConfig *phase = &cfg->phases[rec.phase];
        se.tokens += (double)phase->batch_size * phase->seq_len;
        bool phase_end = tr->step == phase->first_step + phase->steps;
        bool last = tr->step == cfg->total_steps;
        if (report_step(tr, &se, &rec, phase_end, err) != 0) return fail_with_checkpoint(tr, err);
        bool log_failed = false;
        if (eval_due(tr) && eval_now(tr, &log_failed, err) < 0)
            return log_failed ? fail_with_checkpoint(tr, err) : -1;
        /* a signal to any rank stops every rank after this step, with one checkpoint: the ranks agree
           (one small sum per step), as they must to write it together and to end at the same step */
        bool stop = dist_any(stop_signal != 0);
        bool due = (cfg->training.checkpoint_every > 0 && tr->step % cfg->training.checkpoint_every == 0) ||
                   phase_end || last || stop;
        /* records the file refused earlier get one more try before a checkpoint moves past them */
        log_flush(&tr->log);
        if (due && save_checkpoint(tr, err) != 0) return -1;
        /* Test hook: BERT_PRETRAIN_KILL_AFTER_STEP=S dies by SIGKILL right after step S (and its
           checkpoint, if one was due), exactly like `kill -9` at that moment, for the resume test. */
        if (tr->step == env_step("BERT_PRETRAIN_KILL_AFTER_STEP")) raise(SIGKILL);
        if (stop && !last) return 1;
    }
    return 0;
}

static void report_swept(const char *path, long pid, void *ctx) {
    (void)ctx;
    fprintf(stderr, "removed %s, a temporary left by process %ld (no longer running)\n", path, pid);
}

/* Takes run_dir for this process: its lock (a dead holder's is taken over and named), then the
 * temporaries that killed processes left there. */
static int claim_run_dir(Trainer *tr, BpError *err) {
    const char *run_dir = tr->cfg->training.run_dir;
    if (rundir_lock(&tr->lock, run_dir, "train", err) != 0) return -1;
    if (tr->lock.stale_holder[0])
        fprintf(stderr, "%s: taking over the lock of a process that ended without releasing it (%s)\n",
                tr->lock.path, tr->lock.stale_holder);
    return rundir_sweep_temps(run_dir, report_swept, NULL, err) < 0 ? -1 : 0;
}

/* After a resume: the evaluation due at the resumed step when metrics.jsonl lacks it (a stop
 * signal interrupted it before that checkpoint was written). 1 when interrupted again. */
static int eval_missed(Trainer *tr, BpError *err) {
    if (!eval_due(tr) || tr->log.last_eval_step == tr->step) return 0;
    int pi = config_phase_of(tr->cfg, tr->step > 0 ? tr->step - 1 : 0);
    if (plan_phase(tr, pi, err) != 0) return -1;
    bool log_failed = false;
    int rc = eval_now(tr, &log_failed, err);
    return rc < 0 && log_failed ? fail_with_checkpoint(tr, err) : rc;
}

/* The end on rank 0; every rank calls it (a collective: each rank's peak memory to rank 0). */
static void print_end(Trainer *tr, const TrainOptions *opt, bool stopped) {
    int world = dist_world_size();
    double peaks[64] = {0};
    bool listed = world <= (int)BP_ARRAY_LEN(peaks);
    if (listed) {
        peaks[dist_rank()] = train_peak_rss_bytes();
        dist_allreduce_doubles(peaks, (size_t)world);
    }
    if (dist_rank() != 0) return;
    log_break(&tr->log);
    if (stopped)
        fprintf(stderr, "stopped by %s after step %ld; checkpoint %s\nresume with: %s%s --resume auto\n",
                stop_signal ? bp_signal_name(stop_signal) : "a signal to another rank", tr->step,
                tr->last_checkpoint, opt->resume_command ? "" : "bert_pretrain ",
                opt->resume_command ? opt->resume_command : opt->config_path ? opt->config_path : "CONFIG");
    else
        fprintf(stderr, "done: %ld steps; final checkpoint %s\n", tr->step, tr->last_checkpoint);
    const double gib = 1073741824.0;
    TrainMemory mem = train_memory_plan(tr->cfg, tr->vocab_size);
    fprintf(stderr, "peak memory %.3f GiB (estimate %.3f GiB)\n", train_peak_rss_bytes() / gib, mem.peak_rank0 / gib);
    if (world > 1 && listed) { /* the sharded optimizer's saving shows on the ranks that write nothing */
        fprintf(stderr, "peak memory by rank (GiB):");
        for (int r = 0; r < world; r++) fprintf(stderr, " %d:%.4f", r, peaks[r] / gib);
        fprintf(stderr, " (estimate rank 0 %.4f, others %.4f)\n", mem.peak_rank0 / gib, mem.peak_other / gib);
    }
}

int train_run(const Config *cfg, const TrainOptions *opt, BpError *err) {
    Trainer tr;
    int rc = -1;
    bool resumed = false;
    bool lead = dist_rank() == 0, parallel = dist_world_size() > 1;
    stop_signal = 0;
    bp_cleanup_on_stop_signals(); /* nothing to save before the first step */
    memset(&tr, 0, sizeof tr);
    tr.cfg = cfg;
    tr.lock.fd = -1;
    tr.log.fd = -1;
    /* rank 0 alone owns the run directory (its lock, its leftovers, the resume, metrics); every
       rank agrees on a failure before the first step, so none waits in a collective for it */
    bool ok = (!lead || claim_run_dir(&tr, err) == 0) && trainer_setup(&tr, cfg, err) == 0 &&
              (!lead || trainer_start(&tr, opt->resume, &resumed, err) == 0);
    if (dist_any(!ok)) {
        peer_failed(err, !ok);
        goto done;
    }
    if (parallel && ranks_agree_on_precision(&tr, err) != 0) goto done;
    if (share_start(&tr, &resumed, err) != 0) goto done;
    bp_catch_stop_signals(on_stop_signal);
    if (lead) print_startup(&tr, resumed);
    ok = !lead || log_open(&tr.log, cfg->training.run_dir, resumed ? tr.step : -1, err) == 0;
    if (dist_any(!ok)) {
        peer_failed(err, !ok);
        goto done;
    }
    if (!parallel && stop_signal) { /* during the start-up lines: this session has done nothing to save */
        fprintf(stderr, "stopped by %s before the first step: nothing to save\n", bp_signal_name(stop_signal));
        rc = 0;
        goto done;
    }
    rc = resumed ? eval_missed(&tr, err) : 0;
    if (rc == 0) rc = trainer_loop(&tr, err);
    else if (rc == 1 && save_checkpoint(&tr, err) != 0) rc = -1;
    if (rc >= 0 && log_close(&tr.log, err) != 0) rc = -1;
    if (rc < 0) {
        rc = parallel ? TRAIN_FAILED_ALONE : -1;
        goto done;
    }
    print_end(&tr, opt, rc == 1);
    rc = 0;
done:
    trainer_free(&tr);
    return rc;
}

/* ---- eval and export from a checkpoint ------------------------------------------------------- */

int train_eval_checkpoint(const Config *cfg, const char *checkpoint, EvalRecord *out, BpError *err) {
    if (!file_exists(cfg->data.eval))
        return bp_fail(err, "%s: eval shard not found. HINT: run `bert_pretrain prepare` first", cfg->data.eval);
    Dataset *eval = dataset_open(cfg->data.eval, cfg->data.vocab, cfg->data.lowercase, err);
    if (!eval) return -1;
    RunCkpt *ck = run_ckpt_open(checkpoint, err);
    Model *model = NULL;
    Batch scratch = {0};
    int rc = -1;
    if (!ck) goto done;
    int vocab = tokenizer_vocab_size(dataset_tokenizer(eval));
    if (vocab != run_ckpt_config(ck)->model.vocab_size) {
        bp_fail_kind(err, BP_ERR_MISMATCH, "%s: the checkpoint's vocab has %d entries, %s has %d", checkpoint,
                     run_ckpt_config(ck)->model.vocab_size, cfg->data.vocab, vocab);
        goto done;
    }
    /* the checkpoint's model; threads and the rest of the settings are this command's */
    model = run_ckpt_model(ck, cfg, err);
    if (!model) goto done;
    long step = run_ckpt_step(ck);
    const PhaseConfig *phase = &cfg->phases[config_phase_of(cfg, step > 0 ? step - 1 : 0)];
    if (batch_alloc(&scratch, phase->micro_batch, phase->seq_len, phase->max_predictions_per_seq, err) != 0 ||
        model_plan(model, phase->micro_batch, phase->seq_len, phase->max_predictions_per_seq, err) != 0 ||
        evaluate(model, eval, cfg, phase, &scratch, out, err) != 0)
        goto done;
    out->step = step;
    rc = 0;
done:
    batch_free(&scratch);
    model_free(model);
    run_ckpt_close(ck);
    dataset_free(eval);
    return rc;
}

/* Writes the checkpoint's vocab.txt into OUT_DIR. */
static int export_vocab(const RunCkpt *ck, const char *path, BpError *err) {
    size_t bytes = 0;
    const void *vocab = run_ckpt_vocab(ck, &bytes);
    AtomicFile af;
    if (bp_atomic_open(&af, path, err) != 0) return -1;
    if (fwrite(vocab, 1, bytes, af.fp) != bytes) {
        int e = errno;
        bp_atomic_abort(&af);
        return bp_fail_kind(err, BP_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return bp_atomic_commit(&af, err);
}

int train_export(const char *checkpoint, const char *out_dir, ExportReport *out, BpError *err) {
    RunCkpt *ck = run_ckpt_open(checkpoint, err);
    if (!ck) return -1;
    /* the model of the configuration rebuilt from the checkpoint's config.json */
    Model *model = run_ckpt_model(ck, NULL, err);
    int rc = -1;
    char path[4200];
    RunDirLock lock = {.fd = -1};
    if (!model || rundir_lock(&lock, out_dir, "export", err) != 0 ||
        rundir_sweep_temps(out_dir, report_swept, NULL, err) < 0)
        goto done;
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    if (model_save_safetensors(model, path, err) != 0) goto done;
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    if (model_write_hf_config(model, path, err) != 0) goto done;
    snprintf(path, sizeof path, "%s/vocab.txt", out_dir);
    if (export_vocab(ck, path, err) != 0) goto done;
    memset(out, 0, sizeof *out);
    out->step = run_ckpt_step(ck);
    const ParamTable *t = model_table(model);
    out->tensors = t->n;
    out->parameters = params_count(t);
    rc = 0;
done:
    rundir_unlock(&lock);
    model_free(model);
    run_ckpt_close(ck);
    return rc;
}
