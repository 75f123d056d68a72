/* train.h: the training run (phases, accumulation, clipping, updates, evaluation, checkpoints,
 * signals, logs) and the checkpoint-level commands built on it (eval, export).
 *
 * Exactness: a run of N steps and a run stopped after step k and resumed end with bit-identical
 * parameters and the same metrics after step k, because every random choice is keyed by
 * (seed, step or example index) and the checkpoint holds all other state. */
#ifndef BP_TRAIN_H
#define BP_TRAIN_H

#include <stdbool.h>

#include "common.h"
#include "config.h"
#include "log.h"
#include "model.h"

typedef struct {
    const char *resume;      /* NULL: fresh run; "auto": newest valid checkpoint of run_dir; else a path */
    const char *config_path; /* for messages */
    const char *resume_command; /* the command line that continues this run (config and every
                                   --set), printed when a signal stops it; NULL: built from
                                   config_path alone */
} TrainOptions;

/* Trains through every phase of a resolved config. Returns 0 when it finished or stopped cleanly
 * on a signal (a checkpoint written), -1 with err filled otherwise. Holds training.run_dir's lock
 * (rundir.h) for the whole run, and owns the process's terminating signals meanwhile: before the
 * first step one ends the process at once (its temporaries and lock removed), from then on it
 * stops the run at the next micro-batch or eval batch with a checkpoint.
 *
 * With several ranks (dist.h) every rank calls it; rank 0 alone reads and writes the run directory,
 * metrics and progress, and hands its start (fresh or resumed) to the others. A failure before the
 * first step is agreed by all ranks: each returns -1, the failing ones with their message, the
 * others with an empty err->msg (nothing to print). A failure during the steps is seen by one rank
 * only while the others may wait in a collective: that rank returns TRAIN_FAILED_ALONE, and the
 * caller must end the whole job (dist_abort). */
#define TRAIN_FAILED_ALONE (-2)
int train_run(const Config *cfg, const TrainOptions *opt, BpError *err);

/* Held-out evaluation of a checkpoint on cfg's eval shard (data.eval_examples examples, fixed
 * masking, dropout off) with the checkpoint's own model; fills *out (out->step: the checkpoint's).
 * The eval settings, the phase's sizes and threads come from cfg. */
int train_eval_checkpoint(const Config *cfg, const char *checkpoint, EvalRecord *out, BpError *err);

typedef struct {
    long step;            /* optimizer steps of the exported checkpoint */
    int tensors;          /* tensors written */
    long long parameters; /* parameters written */
} ExportReport;

/* Writes OUT_DIR/model.safetensors (HF names), config.json and vocab.txt from a checkpoint; the
 * model is the one its stored configuration describes. OUT_DIR is locked while it writes
 * (rundir.h: refused while a trainer or another export writes there) and temporaries that killed
 * processes left there are removed first. */
int train_export(const char *checkpoint, const char *out_dir, ExportReport *out, BpError *err);

/* What the process holds besides the run's own buffers: code, libraries, the BLAS and OpenMP
 * threads' buffers and stacks (measured: see the README's memory note), and since the products run
 * on oneDNN, its primitives and each thread's scratchpad: the demo (bert-tiny, 600 steps, 2
 * threads, fp32 on oneDNN) peaked at 0.299 GiB against 0.293 estimated with 64 MiB here, so 96.
 * The bf16 engine's per-thread operand copies are counted apart (model_gemm_copy_bytes, added to
 * the runtime of the plan), since they grow with the model, the batch and the threads. */
#define TRAIN_RUNTIME_BYTES (96.0 * 1048576.0)

/* Estimated memory of a run, per rank, in bytes: parameters, gradients, the optimizer state this
 * rank keeps (1/N of it with training.shard_optimizer on N ranks), activations at the largest
 * phase, the step's examples, TRAIN_RUNTIME_BYTES (+ the bf16 operand copies), on several ranks
 * the temporaries of the gradient sums in flight; and the peaks: rank 0 holds the larger of the
 * activations and the checkpoint a resume maps before they exist (parameters + the whole optimizer
 * state). A checkpoint write streams the state and adds nothing. */
typedef struct {
    int ranks;
    bool sharded;
    double params, grads, optimizer, optimizer_full, activations, examples, runtime;
    double comm; /* Open MPI's temporaries of the gradient sums in flight (grad_sync.h); 0 on one rank */
    ModelActStorage storage; /* how the activations are kept (bf16 copies, probabilities recomputed) */
    double resume_map;
    double peak_rank0, peak_other;
} TrainMemory;
TrainMemory train_memory_plan(const Config *cfg, int vocab_size);
double train_memory_estimate(const Config *cfg, int vocab_size); /* peak_rank0: the largest */
/* the memory lines of the start-up plan (indented by two spaces; a third under mpirun) */
void train_memory_print(const TrainMemory *m, FILE *out);

/* The process's peak resident memory so far (getrusage), in bytes. */
double train_peak_rss_bytes(void);

#endif
