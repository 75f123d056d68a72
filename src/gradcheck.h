/* gradcheck.h: the numerical gradient check of the model: the analytic gradient of every parameter
 * tensor (and of one random direction over all of them) against central finite differences of
 * model_forward's loss. `bert_pretrain gradcheck` and tests/test_model.c run it. */
#ifndef BP_GRADCHECK_H
#define BP_GRADCHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"

typedef struct {
    double eps;        /* central-difference step */
    double atol, rtol; /* pass when |numeric - analytic| <= atol + rtol * max(|numeric|, |analytic|) */
    int samples;       /* elements checked per tensor (plus the one with the largest gradient) */
    bool randomize;    /* replace the weights by a random point with non-trivial gains and biases */
    uint64_t seed;
    bool dropout;      /* check with dropout on (fixed masks: seed, step 1), for the tests */
} GradcheckOpts;

typedef struct {
    char name[PARAM_NAME_LEN]; /* the tensor, or "(random direction over all parameters)" */
    int checked;               /* elements (directions) compared */
    double max_abs, max_rel;   /* worst |numeric - analytic| and that over max(|numeric|, |analytic|) */
    bool pass;
} GradcheckRow;

typedef struct {
    double loss, mlm_loss, nsp_loss; /* at the checked point */
    GradcheckRow *rows;              /* one per tensor in table order, then the random direction */
    int n_rows;
    int fails; /* rows that did not pass */
} GradcheckReport;

/* Checks the model on batch b (dropout off unless o->dropout: the masks are a pure function of
 * their key, so the loss stays smooth). Fills rep (free with model_gradcheck_report_free) and
 * returns the number of failing rows, or -1 with err set when a forward fails. The model is left
 * with the gradient of its (possibly randomized) weights. */
int model_gradcheck(Model *m, const Batch *b, const GradcheckOpts *o, GradcheckReport *rep, BpError *err);
void model_gradcheck_report_free(GradcheckReport *rep);

/* The sizes of a check from a config; a value < 0 takes the default. */
typedef struct {
    int batch;       /* examples (default 3) */
    int seq;         /* sequence length (default min(16, phase 0 seq_len), at most max_position) */
    int predictions; /* slots per example (default min(4, T - 1), at most T - 1) */
    int samples;     /* elements per tensor (default 4) */
} GradcheckRequest;

typedef struct {
    ModelConfig model; /* what was checked; vocab_size is its V (model.vocab_size, or 128 when 0) */
    int B, T, P;
    long padded_tokens, used_slots; /* of B*T tokens and B*P prediction slots */
    GradcheckOpts opts;
    GradcheckReport report;
} GradcheckRun;

/* The check of `bert_pretrain gradcheck`: cfg's model with random weights (non-trivial gains and
 * biases) on a random batch with padded examples and unused prediction slots, dropout off, fp32
 * tolerances (gradcheck.c gives the argument). Returns the number of failing rows, or -1 with err
 * set (a usage error for sizes that cannot be checked). Free with model_gradcheck_run_free. */
int model_gradcheck_run(const Config *cfg, const GradcheckRequest *req, GradcheckRun *run, BpError *err);
void model_gradcheck_run_free(GradcheckRun *run);

#endif
