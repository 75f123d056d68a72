/* gradcheck.c: central finite differences against the model's backward (see gradcheck.h). */
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

static int gc_loss(Model *m, const Batch *b, const GradcheckOpts *o, double *loss, BpError *err) {
    ForwardArgs fa = {o->dropout, o->seed, 1, 0.0, 0.0};
    ModelStats st;
    if (model_forward(m, b, &fa, &st, err)) return -1;
    *loss = st.loss;
    return 0;
}

/* numeric d loss / d w[k] by central differences; the step actually taken is measured after
 * rounding w +- eps to float */
static int gc_numeric(Model *m, const Batch *b, const GradcheckOpts *o, float *w, double *num, BpError *err) {
    double eps = o->eps;
    float keep = *w;
    float wp = (float)(keep + eps), wm = (float)(keep - eps);
    double lp, lm;
    *w = wp;
    int rc = gc_loss(m, b, o, &lp, err);
    *w = wm;
    if (!rc) rc = gc_loss(m, b, o, &lm, err);
    *w = keep;
    if (rc) return -1;
    *num = (lp - lm) / ((double)wp - (double)wm);
    return 0;
}

static void gc_compare(GradcheckRow *r, double num, double ana, const GradcheckOpts *o) {
    double e = fabs(num - ana), scale = fmax(fabs(num), fabs(ana));
    double rel = scale > 0 ? e / scale : 0.0;
    if (e > r->max_abs) r->max_abs = e;
    if (rel > r->max_rel) r->max_rel = rel;
    if (!(e <= o->atol + o->rtol * scale)) r->pass = false;
    r->checked++;
}

/* A generic point: with unit gains and zero biases a backward that forgets a gain or a bias term
 * would still pass. */
static void gc_randomize(Model *m, uint64_t seed) {
    const ParamTable *t = model_table(m);
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->params[i];
        RngStream s = rng_stream(seed, RNG_TEST, (uint64_t)i);
        float *w = model_params(m) + p->offset;
        ModelTensorKind kind = model_tensor_kind(m, i);
        for (size_t k = 0; k < p->numel; k++) {
            double z = rng_next_normal(&s);
            w[k] = (float)(kind == MODEL_TENSOR_GAIN ? 1.0 + 0.2 * z : kind == MODEL_TENSOR_BIAS ? 0.1 * z : 0.3 * z);
        }
    }
}

/* tensor i: its largest gradient element and o->samples random ones against g (the analytic
 * gradient) */
static int gc_tensor(Model *m, const Batch *b, const GradcheckOpts *o, const float *g, int i, GradcheckRow *row,
                     BpError *err) {
    const ParamInfo *p = &model_table(m)->params[i];
    snprintf(row->name, sizeof row->name, "%s", p->name);
    row->pass = true;
    RngStream s = rng_stream(o->seed, RNG_TEST, 1000003u + (uint64_t)i);
    size_t kmax = 0;
    for (size_t k = 1; k < p->numel; k++)
        if (fabsf(g[p->offset + k]) > fabsf(g[p->offset + kmax])) kmax = k;
    int n = o->samples < (int)p->numel ? o->samples : (int)p->numel;
    for (int j = 0; j <= n; j++) {
        size_t k = j == 0 ? kmax : (size_t)rng_next_below(&s, (uint32_t)p->numel);
        double num;
        if (gc_numeric(m, b, o, model_params(m) + p->offset + k, &num, err)) return -1;
        gc_compare(row, num, g[p->offset + k], o);
    }
    return 0;
}

/* one random unit direction u over every parameter: (L(w + eps u) - L(w - eps u)) / 2eps vs g.u,
 * where the step actually taken per element is (float)(w + eps u) - w: measured in the directional
 * sum so that rounding does not count as error */
static int gc_direction(Model *m, const Batch *b, const GradcheckOpts *o, const float *g, GradcheckRow *row,
                        BpError *err) {
    size_t total = model_table(m)->total;
    float *w = model_params(m);
    snprintf(row->name, sizeof row->name, "(random direction over all parameters)");
    row->pass = true;
    float *w0 = bp_malloc(total * sizeof(float), "gradcheck weight copy", err);
    float *u = bp_malloc(total * sizeof(float), "gradcheck direction", err);
    int rc = -1;
    if (!w0 || !u) goto done;
    memcpy(w0, w, total * sizeof(float));
    RngStream s = rng_stream(o->seed, RNG_TEST, 999u);
    double norm = 0.0;
    for (size_t k = 0; k < total; k++) {
        u[k] = (float)rng_next_normal(&s);
        norm += (double)u[k] * u[k];
    }
    double inv = 1.0 / sqrt(norm), lp = 0, lm = 0, dot_plus = 0.0, dot_minus = 0.0;
    for (size_t k = 0; k < total; k++) u[k] = (float)(u[k] * inv);
    for (size_t k = 0; k < total; k++) {
        w[k] = (float)(w0[k] + o->eps * u[k]);
        dot_plus += (double)g[k] * ((double)w[k] - w0[k]);
    }
    rc = gc_loss(m, b, o, &lp, err);
    for (size_t k = 0; k < total && !rc; k++) {
        w[k] = (float)(w0[k] - o->eps * u[k]);
        dot_minus += (double)g[k] * ((double)w[k] - w0[k]);
    }
    if (!rc) rc = gc_loss(m, b, o, &lm, err);
    memcpy(w, w0, total * sizeof(float));
    /* numeric and analytic directional derivatives per unit of eps */
    if (!rc) gc_compare(row, (lp - lm) / (2.0 * o->eps), (dot_plus - dot_minus) / (2.0 * o->eps), o);
done:
    free(w0);
    free(u);
    return rc;
}

/* loss and gradient of the current weights (the gradient buffer zeroed first) */
static int gc_forward_backward(Model *m, const Batch *b, const GradcheckOpts *o, ModelStats *st, BpError *err) {
    ForwardArgs fa = {o->dropout, o->seed, 1, 0.0, 0.0};
    model_zero_grad(m);
    if (model_forward(m, b, &fa, st, err)) return -1;
    model_backward(m);
    return 0;
}

int model_gradcheck(Model *m, const Batch *b, const GradcheckOpts *o, GradcheckReport *rep, BpError *err) {
    const ParamTable *t = model_table(m);
    memset(rep, 0, sizeof *rep);
    if (o->randomize) gc_randomize(m, o->seed);
    ModelStats st;
    if (gc_forward_backward(m, b, o, &st, err)) return -1;
    rep->loss = st.loss;
    rep->mlm_loss = st.mlm_loss;
    rep->nsp_loss = st.nsp_loss;
    float *g = bp_malloc(t->total * sizeof(float), "gradcheck gradient copy", err);
    rep->rows = bp_calloc((size_t)t->n + 1, sizeof *rep->rows, "gradcheck rows", err);
    int rc = -1;
    if (!g || !rep->rows) goto done;
    memcpy(g, model_grads(m), t->total * sizeof(float));
    for (int i = 0; i < t->n; i++, rep->n_rows++)
        if (gc_tensor(m, b, o, g, i, &rep->rows[i], err)) goto done;
    if (gc_direction(m, b, o, g, &rep->rows[t->n], err)) goto done;
    rep->n_rows++;
    for (int i = 0; i < rep->n_rows; i++) rep->fails += !rep->rows[i].pass;
    /* leave the model with the gradient of its current weights */
    if (gc_forward_backward(m, b, o, &st, err)) goto done;
    rc = rep->fails;
done:
    free(g);
    if (rc < 0) model_gradcheck_report_free(rep);
    return rc;
}

void model_gradcheck_report_free(GradcheckReport *rep) {
    free(rep->rows);
    memset(rep, 0, sizeof *rep);
}

/* Tolerances honest for fp32. The loss is summed in double but every activation is float, so each
 * loss evaluation carries rounding noise of roughly 1e-7 relative (~1e-6 absolute at loss ~5); a
 * central difference divides it by 2*eps, giving ~5e-5 at eps = 1e-2. The truncation error
 * eps^2 f'''/6 is ~2e-5 for O(1) third derivatives at this scale. A smaller eps would drown the
 * check in rounding noise, a larger one in truncation, so: eps 1e-2, atol 1e-4 (the noise floor),
 * rtol 1e-2 (truncation on large gradients). A wrong term in a backward pass shows as errors of the
 * gradient's own size, far above both. */
static const GradcheckOpts RUN_TOLERANCES = {.eps = 1e-2, .atol = 1e-4, .rtol = 1e-2};

/* the sizes of the check: the request's, else the defaults */
static int gc_sizes(const Config *cfg, const GradcheckRequest *req, GradcheckRun *run, BpError *err) {
    int T = req->seq >= 0 ? req->seq : cfg->phases[0].seq_len < 16 ? cfg->phases[0].seq_len : 16;
    if (T > cfg->model.max_position) T = cfg->model.max_position;
    if (T < 2) return bp_fail_usage(err, "sequence length %d is too short (need 2)", T);
    int P = req->predictions >= 0 ? req->predictions : T - 1 < 4 ? T - 1 : 4;
    if (P > T - 1) P = T - 1;
    run->B = req->batch >= 0 ? req->batch : 3;
    run->T = T;
    run->P = P;
    if (run->B < 1) return bp_fail_usage(err, "a gradient check needs at least one example");
    return 0;
}

int model_gradcheck_run(const Config *cfg, const GradcheckRequest *req, GradcheckRun *run, BpError *err) {
    memset(run, 0, sizeof *run);
    if (gc_sizes(cfg, req, run, err)) return -1;
    int V = cfg->model.vocab_size > 0 ? cfg->model.vocab_size : 128;
    Model *m = model_create(cfg, V, err);
    if (!m) return -1;
    run->model = *model_config(m);
    run->opts = RUN_TOLERANCES;
    run->opts.samples = req->samples >= 0 ? req->samples : 4;
    run->opts.randomize = true;
    run->opts.seed = cfg->training.seed;
    Batch b;
    int rc = -1;
    if (batch_alloc(&b, run->B, run->T, run->P, err)) goto done_model;
    model_fill_random_batch(&b, V, cfg->model.type_vocab_size, true, false, cfg->training.seed, 0);
    for (int i = 0; i < run->B * run->T; i++) run->padded_tokens += !b.attention_mask[i];
    run->used_slots = batch_count_predictions(&b);
    model_init_weights(m, cfg->training.seed);
    rc = model_gradcheck(m, &b, &run->opts, &run->report, err);
    batch_free(&b);
done_model:
    model_free(m);
    return rc;
}

void model_gradcheck_run_free(GradcheckRun *run) { model_gradcheck_report_free(&run->report); }
