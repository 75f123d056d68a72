/* log.h: what a user reads while a run goes: metrics.jsonl in the run directory (one JSON object
 * per optimizer step, eval records, per-layer trust ratios) and the progress line on stderr (one
 * line redrawn in place on a terminal, periodic plain lines otherwise).
 *
 * No record is dropped silently. Each is written whole or not at all (a write that fails halfway
 * is cut off again); one the file refuses (a full disk, a quota) is held in memory, a warning says
 * so once, and every later write retries the held ones first, in order, and says when they are in.
 * When more than LOG_HOLD_MAX_BYTES are held, or records are still held at log_close, the caller
 * gets an error naming the steps that are missing. Writes to stderr are not checked: there is no
 * one left to tell. */
#ifndef BP_LOG_H
#define BP_LOG_H

#include <stdbool.h>
#include <stdio.h>

#include "common.h"
#include "optim.h"
#include "params.h"

typedef struct {
    long step; /* 1-based: the number of optimizer steps done after this one */
    int phase;
    double lr, loss, mlm_loss, nsp_loss, mlm_acc, nsp_acc, grad_norm;
    double tokens_per_s, elapsed_s;
    int ranks;               /* > 1: the step was data-parallel, comm_exposed_s is logged */
    double comm_exposed_s;   /* the gradient sum's wait the backward did not hide */
} StepRecord;

typedef struct {
    long step;
    double mlm_loss, mlm_acc, nsp_loss, nsp_acc;
    double mlm_majority_acc; /* accuracy of always guessing the most frequent masked token: the
                                baseline a model that learned nothing beats by nothing */
    long examples, predictions;
    double seconds;
} EvalRecord;

#define LOG_HOLD_MAX_BYTES (64u << 20)

typedef struct {
    int fd; /* metrics.jsonl, opened for appending; -1 when closed */
    char path[4200];
    long long good_bytes; /* the file's length after the last record written whole */
    char **held;          /* records the file refused, oldest first, each ending in "\n" */
    long *held_step;
    size_t n_held, cap_held, held_bytes;
    int failed_errno; /* why the last write failed; 0 after a success */
    long last_eval_step; /* the newest eval record kept by a resume's log_open; -1 when none */
    bool tty;            /* stderr is a terminal: redraw one line */
    bool line_open;      /* a progress line is on screen without its newline */
    double last_print_s; /* wall time of the last periodic line */
} Logger;

/* Opens RUN_DIR/metrics.jsonl for appending. When keep_through_step >= 0 (a resume), first drops
 * every record of a later step (they belong to steps that will run again), atomically, and notes
 * the newest eval record it kept (last_eval_step). */
int log_open(Logger *lg, const char *run_dir, long keep_through_step, BpError *err);
/* Writes what is held and closes. -1 with err naming the steps whose records are not in the file
 * when the file still refuses them (the logger is closed either way). */
int log_close(Logger *lg, BpError *err);
/* The metrics records. Each returns 0 when it and every record held before it are in the file, 1
 * when the file refused them (held, see above), -1 with err filled when too much is held. */
int log_step(Logger *lg, const StepRecord *r, BpError *err);
int log_eval(Logger *lg, const EvalRecord *r, BpError *err);
/* Retries the held records now (0: none left held, 1: still held). */
int log_flush(Logger *lg);
/* The human line of an evaluation ("eval @ step S: mlm_loss ... (N examples, ...)"): the trainer's
 * and the eval command's one format. */
void log_eval_line(FILE *out, const EvalRecord *r);
/* {"type":"trust","step":S,"trust_ratio":{"name":r,...},"param_norm":{...},"update_norm":{...}} */
int log_trust_ratios(Logger *lg, long step, const ParamTable *t, const OptimLayerStat *stats, BpError *err);
void log_progress(Logger *lg, const StepRecord *r, long total_steps, int n_phases, double eta_s,
                  bool force);
/* Ends an open progress line so that other messages start on their own line. */
void log_break(Logger *lg);
/* "3d 4h", "12m 05s", or "7.3 years" */
void log_format_duration(char *out, size_t len, double seconds);

#endif
