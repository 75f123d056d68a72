/* log.h: what a user reads while a run goes: metrics.jsonl in the run directory (one JSON object
 * per optimizer step, eval records, per-layer trust ratios) and the progress line on stderr (one
 * line redrawn in place on a terminal, periodic plain lines otherwise). */
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

typedef struct {
    FILE *metrics;
    bool tty;            /* stderr is a terminal: redraw one line */
    bool line_open;      /* a progress line is on screen without its newline */
    double last_print_s; /* wall time of the last periodic line */
} Logger;

/* Opens RUN_DIR/metrics.jsonl for appending. When keep_through_step >= 0 (a resume), first drops
 * every record of a later step (they belong to steps that will run again), atomically. */
int log_open(Logger *lg, const char *run_dir, long keep_through_step, BpError *err);
void log_close(Logger *lg);
void log_step(Logger *lg, const StepRecord *r);
void log_eval(Logger *lg, const EvalRecord *r);
/* The human line of an evaluation ("eval @ step S: mlm_loss ... (N examples, ...)"): the trainer's
 * and the eval command's one format. */
void log_eval_line(FILE *out, const EvalRecord *r);
/* {"type":"trust","step":S,"trust_ratio":{"name":r,...},"param_norm":{...},"update_norm":{...}} */
void log_trust_ratios(Logger *lg, long step, const ParamTable *t, const OptimLayerStat *stats);
void log_progress(Logger *lg, const StepRecord *r, long total_steps, int n_phases, double eta_s,
                  bool force);
/* Ends an open progress line so that other messages start on their own line. */
void log_break(Logger *lg);
/* "3d 4h", "12m 05s", or "7.3 years" */
void log_format_duration(char *out, size_t len, double seconds);

#endif
