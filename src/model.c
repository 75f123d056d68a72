/* model.c: BERT for pretraining: parameter table, init, activation plan, forward, backward,
 * safetensors I/O (see model.h; the backward math is in docs/model.md and next to kernels.c).
 *
 * Size legend: B examples, T sequence length, P prediction slots per example, R real predictions
 * of the micro-batch (<= B*P), N = B*T tokens, H hidden, A heads, I intermediate, V vocabulary,
 * L layers. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "rng.h"
#include "safetensors.h"

/* Offsets (in floats) of one layer's tensors; the same offsets index params and grads. */
typedef struct {
    size_t w[3], b[3]; /* query, key, value weight (H,H) and bias (H) */
    size_t o_w, o_b, ln1_g, ln1_b, f1_w, f1_b, f2_w, f2_b, ln2_g, ln2_b;
} LayerOff;

typedef struct {
    size_t word, pos, type, eln_g, eln_b;
    size_t pool_w, pool_b, mt_w, mt_b, mln_g, mln_b, dec_b, nsp_w, nsp_b;
} HeadOff;

/* Byte offsets of the activation plan (one allocation). Per-layer blocks repeat with a stride. */
typedef struct {
    size_t x0, exh, ers;
    size_t layer0, lstride;
    size_t l_qkv, l_P, l_ctx, l_xh1, l_rs1, l_y1, l_f, l_xh2, l_rs2, l_y2;
    size_t G, Z, DR, DZ, DG, DCTX;
    size_t hm, t1, u, mxh, mrs, v, logits, lse, mloss, dv, dhm;
    size_t pooled, nspl, nspp, dpool;
    size_t ids, tt, mask, exidx, rows, slots, labels, correct, nsplab;
    size_t scratch, scratch_per_thread;
    int nthreads;
    size_t total;
} Layout;

struct Model {
    ModelConfig mc;
    int V;
    ParamTable table;
    float *params, *grads;
    LayerOff *lo;
    HeadOff ho;
    bool qkv_w_fused, qkv_b_fused; /* q,k,v weights / biases contiguous */
    /* plan */
    int pB, pT, pP;
    Layout lay;
    unsigned char *act;
    /* the last forward */
    bool have_forward;
    int B, T, P, R;
    double mlm_den, nsp_den;
    bool train;
    uint64_t seed;
    long step;
};

/* ---------------------------------------------------------------------------------------------
 * parameter table */

static int check_model_config(const ModelConfig *mc, int V, BpError *err) {
    if (mc->layers < 1) return bp_fail_usage(err, "model.layers must be >= 1 (got %d)", mc->layers);
    if (mc->hidden < 1) return bp_fail_usage(err, "model.hidden must be >= 1 (got %d)", mc->hidden);
    if (mc->heads < 1 || mc->hidden % mc->heads)
        return bp_fail_usage(err, "model.heads (%d) must divide model.hidden (%d)", mc->heads, mc->hidden);
    if (mc->intermediate < 1)
        return bp_fail_usage(err, "model.intermediate must be >= 1 (got %d)", mc->intermediate);
    if (mc->max_position < 1)
        return bp_fail_usage(err, "model.max_position must be >= 1 (got %d)", mc->max_position);
    if (mc->type_vocab_size < 1)
        return bp_fail_usage(err, "model.type_vocab_size must be >= 1 (got %d)", mc->type_vocab_size);
    if (V < 1) return bp_fail_usage(err, "vocabulary size unknown (model.vocab_size 0 and no vocab given)");
    if (!(mc->dropout >= 0 && mc->dropout < 1) || !(mc->attention_dropout >= 0 && mc->attention_dropout < 1))
        return bp_fail_usage(err, "model.dropout and model.attention_dropout must be in [0, 1)");
    if (!(mc->layer_norm_eps > 0)) return bp_fail_usage(err, "model.layer_norm_eps must be > 0");
    return 0;
}

static int table_add(ParamTable *t, int *cap, const char *name, int ndim, size_t d0, size_t d1,
                     BpError *err) {
    if (t->n == *cap) {
        int nc = *cap ? 2 * *cap : 64;
        ParamInfo *np = realloc(t->params, sizeof(ParamInfo) * (size_t)nc);
        if (!np) return bp_fail(err, "out of memory building the parameter table");
        t->params = np;
        *cap = nc;
    }
    ParamInfo *p = &t->params[t->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = ndim > 1 ? d1 : 0;
    p->numel = ndim > 1 ? d0 * d1 : d0;
    p->offset = (t->total + 15) / 16 * 16;
    p->weight_decay = p->layer_adaptation = true;
    t->total = p->offset + p->numel;
    return 0;
}

int model_param_table(const ModelConfig *mc, int vocab_size, ParamTable *out, BpError *err) {
    memset(out, 0, sizeof *out);
    int V = vocab_size > 0 ? vocab_size : mc->vocab_size;
    if (check_model_config(mc, V, err)) return -1;
    size_t H = (size_t)mc->hidden, I = (size_t)mc->intermediate;
    int cap = 0;
    char nm[PARAM_NAME_LEN];
    int rc = 0;
#define ADD(ndim, d0, d1) rc |= table_add(out, &cap, nm, ndim, d0, d1, err)
#define NAME(...) snprintf(nm, sizeof nm, __VA_ARGS__)
    NAME("bert.embeddings.word_embeddings.weight"), ADD(2, (size_t)V, H);
    NAME("bert.embeddings.position_embeddings.weight"), ADD(2, (size_t)mc->max_position, H);
    NAME("bert.embeddings.token_type_embeddings.weight"), ADD(2, (size_t)mc->type_vocab_size, H);
    NAME("bert.embeddings.LayerNorm.weight"), ADD(1, H, 0);
    NAME("bert.embeddings.LayerNorm.bias"), ADD(1, H, 0);
    static const char *qkv[3] = {"query", "key", "value"};
    for (int l = 0; l < mc->layers && !rc; l++) {
        const char *pre = "bert.encoder.layer";
        for (int k = 0; k < 3; k++) NAME("%s.%d.attention.self.%s.weight", pre, l, qkv[k]), ADD(2, H, H);
        for (int k = 0; k < 3; k++) NAME("%s.%d.attention.self.%s.bias", pre, l, qkv[k]), ADD(1, H, 0);
        NAME("%s.%d.attention.output.dense.weight", pre, l), ADD(2, H, H);
        NAME("%s.%d.attention.output.dense.bias", pre, l), ADD(1, H, 0);
        NAME("%s.%d.attention.output.LayerNorm.weight", pre, l), ADD(1, H, 0);
        NAME("%s.%d.attention.output.LayerNorm.bias", pre, l), ADD(1, H, 0);
        NAME("%s.%d.intermediate.dense.weight", pre, l), ADD(2, I, H);
        NAME("%s.%d.intermediate.dense.bias", pre, l), ADD(1, I, 0);
        NAME("%s.%d.output.dense.weight", pre, l), ADD(2, H, I);
        NAME("%s.%d.output.dense.bias", pre, l), ADD(1, H, 0);
        NAME("%s.%d.output.LayerNorm.weight", pre, l), ADD(1, H, 0);
        NAME("%s.%d.output.LayerNorm.bias", pre, l), ADD(1, H, 0);
    }
    NAME("bert.pooler.dense.weight"), ADD(2, H, H);
    NAME("bert.pooler.dense.bias"), ADD(1, H, 0);
    NAME("cls.predictions.transform.dense.weight"), ADD(2, H, H);
    NAME("cls.predictions.transform.dense.bias"), ADD(1, H, 0);
    NAME("cls.predictions.transform.LayerNorm.weight"), ADD(1, H, 0);
    NAME("cls.predictions.transform.LayerNorm.bias"), ADD(1, H, 0);
    NAME("cls.predictions.bias"), ADD(1, (size_t)V, 0);
    NAME("cls.seq_relationship.weight"), ADD(2, 2, H);
    NAME("cls.seq_relationship.bias"), ADD(1, 2, 0);
#undef ADD
#undef NAME
    if (rc) {
        param_table_free(out);
        return -1;
    }
    out->total = (out->total + 15) / 16 * 16;
    return 0;
}

void param_table_free(ParamTable *t) {
    free(t->params);
    memset(t, 0, sizeof *t);
}

static size_t off_of(const ParamTable *t, const char *name) {
    int i = params_find(t, name);
    return i < 0 ? (size_t)-1 : t->params[i].offset;
}

static void resolve_offsets(Model *m) {
    const ParamTable *t = &m->table;
    char nm[PARAM_NAME_LEN];
    HeadOff *h = &m->ho;
    h->word = off_of(t, "bert.embeddings.word_embeddings.weight");
    h->pos = off_of(t, "bert.embeddings.position_embeddings.weight");
    h->type = off_of(t, "bert.embeddings.token_type_embeddings.weight");
    h->eln_g = off_of(t, "bert.embeddings.LayerNorm.weight");
    h->eln_b = off_of(t, "bert.embeddings.LayerNorm.bias");
    h->pool_w = off_of(t, "bert.pooler.dense.weight");
    h->pool_b = off_of(t, "bert.pooler.dense.bias");
    h->mt_w = off_of(t, "cls.predictions.transform.dense.weight");
    h->mt_b = off_of(t, "cls.predictions.transform.dense.bias");
    h->mln_g = off_of(t, "cls.predictions.transform.LayerNorm.weight");
    h->mln_b = off_of(t, "cls.predictions.transform.LayerNorm.bias");
    h->dec_b = off_of(t, "cls.predictions.bias");
    h->nsp_w = off_of(t, "cls.seq_relationship.weight");
    h->nsp_b = off_of(t, "cls.seq_relationship.bias");
    size_t H = (size_t)m->mc.hidden;
    m->qkv_w_fused = m->qkv_b_fused = true;
    static const char *qkv[3] = {"query", "key", "value"};
    for (int l = 0; l < m->mc.layers; l++) {
        LayerOff *o = &m->lo[l];
#define OFF(field, suffix) (snprintf(nm, sizeof nm, "bert.encoder.layer.%d.%s", l, suffix), o->field = off_of(t, nm))
        for (int k = 0; k < 3; k++) {
            snprintf(nm, sizeof nm, "bert.encoder.layer.%d.attention.self.%s.weight", l, qkv[k]);
            o->w[k] = off_of(t, nm);
            snprintf(nm, sizeof nm, "bert.encoder.layer.%d.attention.self.%s.bias", l, qkv[k]);
            o->b[k] = off_of(t, nm);
        }
        OFF(o_w, "attention.output.dense.weight");
        OFF(o_b, "attention.output.dense.bias");
        OFF(ln1_g, "attention.output.LayerNorm.weight");
        OFF(ln1_b, "attention.output.LayerNorm.bias");
        OFF(f1_w, "intermediate.dense.weight");
        OFF(f1_b, "intermediate.dense.bias");
        OFF(f2_w, "output.dense.weight");
        OFF(f2_b, "output.dense.bias");
        OFF(ln2_g, "output.LayerNorm.weight");
        OFF(ln2_b, "output.LayerNorm.bias");
#undef OFF
        if (o->w[1] != o->w[0] + H * H || o->w[2] != o->w[0] + 2 * H * H) m->qkv_w_fused = false;
        if (o->b[1] != o->b[0] + H || o->b[2] != o->b[0] + 2 * H) m->qkv_b_fused = false;
    }
}

Model *model_create(const Config *cfg, int vocab_size, BpError *err) {
    const ModelConfig *mc = &cfg->model;
    int V = vocab_size > 0 ? vocab_size : mc->vocab_size;
    Model *m = bp_calloc(1, sizeof *m, "model", err);
    if (!m) return NULL;
    m->mc = *mc;
    m->mc.vocab_size = V;
    m->V = V;
    if (model_param_table(mc, V, &m->table, err)) goto fail;
    params_apply_exclusions(&m->table, (const char(*)[64])cfg->optimizer.exclude_from_weight_decay,
                            cfg->optimizer.n_exclude_from_weight_decay,
                            (const char(*)[64])cfg->optimizer.exclude_from_layer_adaptation,
                            cfg->optimizer.n_exclude_from_layer_adaptation);
    m->lo = bp_calloc((size_t)mc->layers, sizeof *m->lo, "layer offsets", err);
    if (!m->lo) goto fail;
    resolve_offsets(m);
    m->params = bp_aligned_calloc(m->table.total * sizeof(float), "model parameters", err);
    if (!m->params) goto fail;
    m->grads = bp_aligned_calloc(m->table.total * sizeof(float), "model gradients", err);
    if (!m->grads) goto fail;
    kern_init_threads(cfg->training.threads);
    return m;
fail:
    model_free(m);
    return NULL;
}

void model_free(Model *m) {
    if (!m) return;
    param_table_free(&m->table);
    free(m->lo);
    free(m->params);
    free(m->grads);
    free(m->act);
    free(m);
}

const ParamTable *model_table(const Model *m) { return &m->table; }
const ModelConfig *model_config(const Model *m) { return &m->mc; }
int model_vocab_size(const Model *m) { return m->V; }
float *model_params(Model *m) { return m->params; }
float *model_grads(Model *m) { return m->grads; }

float *model_param(Model *m, const char *name) {
    int i = params_find(&m->table, name);
    return i < 0 ? NULL : m->params + m->table.params[i].offset;
}

/* parallel: at bert-base the buffer is 440 MB and one core cannot saturate the memory bus */
void model_zero_grad(Model *m) {
    size_t total = m->table.total, chunk = (size_t)1 << 18;
    long nchunks = (long)((total + chunk - 1) / chunk);
#pragma omp parallel for schedule(static) if (nchunks > 1)
    for (long c = 0; c < nchunks; c++) {
        size_t a = (size_t)c * chunk, n = total - a < chunk ? total - a : chunk;
        memset(m->grads + a, 0, n * sizeof(float));
    }
}

void model_init_weights(Model *m, uint64_t seed) {
    float std = (float)m->mc.initializer_range;
    for (int i = 0; i < m->table.n; i++) {
        const ParamInfo *p = &m->table.params[i];
        float *w = m->params + p->offset;
        size_t len = strlen(p->name);
        bool is_weight = len > 7 && !strcmp(p->name + len - 7, ".weight");
        if (strstr(p->name, "LayerNorm.weight")) {
            for (size_t k = 0; k < p->numel; k++) w[k] = 1.0f;
        } else if (is_weight) {
            RngStream s = rng_stream(seed, RNG_INIT, (uint64_t)i);
            for (size_t k = 0; k < p->numel; k++) {
                double z;
                do z = rng_next_normal(&s);
                while (fabs(z) > 2.0);
                w[k] = (float)(z * std);
            }
        } else {
            memset(w, 0, p->numel * sizeof(float));
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * activation plan */

static size_t take(size_t *cur, size_t bytes) {
    size_t o = (*cur + 63) / 64 * 64;
    *cur = o + bytes;
    return o;
}

static void plan_layout(const ModelConfig *mc, int V, int B, int T, int P, int nthreads, Layout *y) {
    memset(y, 0, sizeof *y);
    size_t H = (size_t)mc->hidden, I = (size_t)mc->intermediate, A = (size_t)mc->heads;
    size_t N = (size_t)B * T, M = (size_t)B * P, f = sizeof(float);
    size_t cur = 0;
    y->x0 = take(&cur, N * H * f);
    y->exh = take(&cur, N * H * f);
    y->ers = take(&cur, N * f);
    /* one layer's block, offsets relative to its start */
    size_t lc = 0;
    y->l_qkv = take(&lc, N * 3 * H * f);
    y->l_P = take(&lc, (size_t)B * A * T * T * f);
    y->l_ctx = take(&lc, N * H * f);
    y->l_xh1 = take(&lc, N * H * f);
    y->l_rs1 = take(&lc, N * f);
    y->l_y1 = take(&lc, N * H * f);
    y->l_f = take(&lc, N * I * f);
    y->l_xh2 = take(&lc, N * H * f);
    y->l_rs2 = take(&lc, N * f);
    y->l_y2 = take(&lc, N * H * f);
    y->lstride = (lc + 63) / 64 * 64;
    y->layer0 = take(&cur, y->lstride * (size_t)mc->layers);
    size_t wide = I > 3 * H ? I : 3 * H;
    y->G = take(&cur, N * I * f);
    y->Z = take(&cur, N * H * f);
    y->DR = take(&cur, N * H * f);
    y->DZ = take(&cur, N * H * f);
    y->DG = take(&cur, N * wide * f);
    y->DCTX = take(&cur, N * H * f);
    y->hm = take(&cur, M * H * f);
    y->t1 = take(&cur, M * H * f);
    y->u = take(&cur, M * H * f);
    y->mxh = take(&cur, M * H * f);
    y->mrs = take(&cur, M * f);
    y->v = take(&cur, M * H * f);
    y->logits = take(&cur, M * (size_t)V * f);
    y->lse = take(&cur, M * f);
    y->mloss = take(&cur, M * sizeof(double));
    y->dv = take(&cur, M * H * f);
    y->dhm = take(&cur, M * H * f);
    y->pooled = take(&cur, (size_t)B * H * f);
    y->nspl = take(&cur, (size_t)B * 2 * f);
    y->nspp = take(&cur, (size_t)B * 2 * f);
    y->dpool = take(&cur, (size_t)B * H * f);
    y->ids = take(&cur, N * sizeof(int32_t));
    y->tt = take(&cur, N * sizeof(int32_t));
    y->mask = take(&cur, N * sizeof(int32_t));
    y->exidx = take(&cur, (size_t)B * sizeof(int64_t));
    y->rows = take(&cur, M * sizeof(int32_t));
    y->slots = take(&cur, M * sizeof(int32_t));
    y->labels = take(&cur, M * sizeof(int32_t));
    y->correct = take(&cur, M * sizeof(int32_t));
    y->nsplab = take(&cur, (size_t)B * sizeof(int32_t));
    int maxc = (int)(wide > H ? wide : H);
    y->scratch_per_thread = kern_scratch_floats(T, maxc);
    y->nthreads = nthreads;
    y->scratch = take(&cur, y->scratch_per_thread * (size_t)nthreads * f);
    y->total = (cur + 63) / 64 * 64;
}

size_t model_activation_bytes(const ModelConfig *mc, int vocab_size, int B, int T, int P) {
    Layout y;
    int V = vocab_size > 0 ? vocab_size : mc->vocab_size;
    plan_layout(mc, V, B, T, P, kern_threads(), &y);
    return y.total;
}

int model_plan(Model *m, int B, int T, int P, BpError *err) {
    if (B < 1 || T < 1 || P < 0) return bp_fail(err, "model_plan: invalid sizes B=%d T=%d P=%d", B, T, P);
    if (m->act && B <= m->pB && T <= m->pT && P <= m->pP && m->lay.nthreads == kern_threads()) return 0;
    int nB = B > m->pB ? B : m->pB, nT = T > m->pT ? T : m->pT, nP = P > m->pP ? P : m->pP;
    Layout y;
    plan_layout(&m->mc, m->V, nB, nT, nP, kern_threads(), &y);
    unsigned char *act = bp_aligned_calloc(y.total, "activations", err);
    if (!act) {
        bp_err_prefix(err, "planning activations for B=%d T=%d P=%d (%.1f MiB)", nB, nT, nP,
                      (double)y.total / 1048576.0);
        return -1;
    }
    free(m->act);
    m->act = act;
    m->lay = y;
    m->pB = nB;
    m->pT = nT;
    m->pP = nP;
    m->have_forward = false;
    return 0;
}

void model_release_activations(Model *m) {
    free(m->act);
    m->act = NULL;
    m->pB = m->pT = m->pP = 0;
    m->have_forward = false;
}

#define AF(off) ((float *)(m->act + (off)))
#define AI(off) ((int32_t *)(m->act + (off)))
#define LF(l, field) ((float *)(m->act + m->lay.layer0 + (size_t)(l) * m->lay.lstride + m->lay.field))

/* ---------------------------------------------------------------------------------------------
 * forward */

/* dropout sites: 0 embeddings; per layer 1 + 3l attention probabilities, 2 + 3l attention output,
 * 3 + 3l feed-forward output */
static KernDropout site_drop(const Model *m, double p, int site) {
    const int64_t *ex = (const int64_t *)(m->act + m->lay.exidx);
    return kern_dropout_make(m->train ? p : 0.0, m->seed, m->step, site, ex, (size_t)m->T);
}

static int copy_batch(Model *m, const Batch *b, BpError *err) {
    int B = b->B, T = b->T, P = b->P, V = m->V;
    size_t N = (size_t)B * T;
    int32_t *ids = AI(m->lay.ids), *tt = AI(m->lay.tt), *mask = AI(m->lay.mask);
    for (size_t n = 0; n < N; n++) {
        if (b->input_ids[n] < 0 || b->input_ids[n] >= V)
            return bp_fail(err, "batch: input_ids[%zu][%zu] = %d outside the vocabulary [0, %d)", n / T,
                           n % T, b->input_ids[n], V);
        if (b->token_type_ids[n] < 0 || b->token_type_ids[n] >= m->mc.type_vocab_size)
            return bp_fail(err, "batch: token_type_ids[%zu][%zu] = %d outside [0, %d)", n / T, n % T,
                           b->token_type_ids[n], m->mc.type_vocab_size);
        ids[n] = b->input_ids[n];
        tt[n] = b->token_type_ids[n];
        mask[n] = b->attention_mask[n] != 0;
    }
    int64_t *ex = (int64_t *)(m->act + m->lay.exidx);
    int32_t *nl = AI(m->lay.nsplab);
    for (int i = 0; i < B; i++) {
        ex[i] = b->example_index ? b->example_index[i] : i;
        if (b->next_sentence_labels[i] < 0 || b->next_sentence_labels[i] > 1)
            return bp_fail(err, "batch: next_sentence_labels[%d] = %d is not 0 or 1", i,
                           b->next_sentence_labels[i]);
        nl[i] = b->next_sentence_labels[i];
    }
    int32_t *rows = AI(m->lay.rows), *slots = AI(m->lay.slots), *labels = AI(m->lay.labels);
    int R = 0;
    for (int i = 0; i < B * P; i++) {
        if (!b->masked_lm_weights[i]) continue;
        int pos = b->masked_lm_positions[i], lab = b->masked_lm_ids[i];
        if (pos < 0 || pos >= T)
            return bp_fail(err, "batch: masked_lm_positions[%d][%d] = %d outside [0, %d)", i / P, i % P, pos, T);
        if (lab < 0 || lab >= V)
            return bp_fail(err, "batch: masked_lm_ids[%d][%d] = %d outside the vocabulary [0, %d)", i / P,
                           i % P, lab, V);
        rows[R] = (i / P) * T + pos;
        slots[R] = i;
        labels[R] = lab;
        R++;
    }
    m->R = R;
    return 0;
}

/* qkv (N,3H) = x (N,H) Wqkv^T + b: the bias rows first, then the product added with beta 1 */
static void qkv_forward(Model *m, const LayerOff *o, const float *x, float *qkv, int N) {
    const float *W = m->params;
    int H = m->mc.hidden;
    if (m->qkv_b_fused) {
        kern_bias_fill(qkv, 3 * H, W + o->b[0], N, 3 * H);
    } else {
        for (int k = 0; k < 3; k++) kern_bias_fill(qkv + (size_t)k * H, 3 * H, W + o->b[k], N, H);
    }
    if (m->qkv_w_fused) {
        /* Wqkv (3H,H) = [Wq; Wk; Wv] */
        kern_gemm(false, true, N, 3 * H, H, 1.0f, x, H, W + o->w[0], H, 1.0f, qkv, 3 * H);
    } else {
        for (int k = 0; k < 3; k++)
            kern_gemm(false, true, N, H, H, 1.0f, x, H, W + o->w[k], H, 1.0f, qkv + (size_t)k * H, 3 * H);
    }
}

int model_forward(Model *m, const Batch *b, const ForwardArgs *a, ModelStats *st, BpError *err) {
    const ModelConfig *mc = &m->mc;
    int B = b->B, T = b->T, P = b->P;
    if (B < 1 || T < 1 || P < 0) return bp_fail(err, "model_forward: invalid batch sizes B=%d T=%d P=%d", B, T, P);
    if (T > mc->max_position)
        return bp_fail(err, "sequence length %d exceeds model.max_position %d", T, mc->max_position);
    if (model_plan(m, B, T, P, err)) return -1;
    m->have_forward = false;
    m->B = B;
    m->T = T;
    m->P = P;
    if (copy_batch(m, b, err)) return -1;
    m->train = a->train;
    m->seed = a->seed;
    m->step = a->step;
    m->mlm_den = a->mlm_denominator > 0 ? a->mlm_denominator : (m->R > 0 ? m->R : 1);
    m->nsp_den = a->nsp_denominator > 0 ? a->nsp_denominator : B;

    const float *W = m->params;
    const HeadOff *ho = &m->ho;
    int H = mc->hidden, I = mc->intermediate, A = mc->heads, L = mc->layers, V = m->V, R = m->R;
    int N = B * T;
    float eps = (float)mc->layer_norm_eps;
    KernScratch s = {(float *)(m->act + m->lay.scratch), m->lay.scratch_per_thread, m->lay.nthreads};
    const int32_t *ids = AI(m->lay.ids), *tt = AI(m->lay.tt), *mask = AI(m->lay.mask);

    KernDropout d_emb = site_drop(m, mc->dropout, 0);
    kern_embed_forward(AF(m->lay.x0), AF(m->lay.exh), AF(m->lay.ers), ids, tt, W + ho->word, W + ho->pos,
                       W + ho->type, W + ho->eln_g, W + ho->eln_b, B, T, H, eps, &d_emb, &s);
    float *G = AF(m->lay.G), *Z = AF(m->lay.Z);
    for (int l = 0; l < L; l++) {
        const LayerOff *o = &m->lo[l];
        const float *x = l == 0 ? AF(m->lay.x0) : LF(l - 1, l_y2);
        float *qkv = LF(l, l_qkv), *ctx = LF(l, l_ctx), *y1 = LF(l, l_y1), *f = LF(l, l_f);
        qkv_forward(m, o, x, qkv, N);
        KernDropout d_att = site_drop(m, mc->attention_dropout, 1 + 3 * l);
        kern_attention_forward(ctx, LF(l, l_P), qkv, mask, B, T, H, A, &d_att, &s);
        /* Z (N,H) = ctx Wo^T; y1 = LN(x + dropout(Z + bo)) */
        kern_gemm(false, true, N, H, H, 1.0f, ctx, H, W + o->o_w, H, 0.0f, Z, H);
        KernDropout d_ao = site_drop(m, mc->dropout, 2 + 3 * l);
        kern_residual_layernorm_forward(y1, LF(l, l_xh1), LF(l, l_rs1), x, Z, W + o->o_b, W + o->ln1_g,
                                        W + o->ln1_b, N, H, eps, &d_ao, &s);
        /* f (N,I) = y1 W1^T + b1 (kept; bias rows, then the product with beta 1); G = gelu(f) */
        kern_bias_fill(f, I, W + o->f1_b, N, I);
        kern_gemm(false, true, N, I, H, 1.0f, y1, H, W + o->f1_w, H, 1.0f, f, I);
        kern_gelu_forward(G, f, N, I, mc->gelu);
        /* Z (N,H) = G W2^T; y2 = LN(y1 + dropout(Z + b2)) */
        kern_gemm(false, true, N, H, I, 1.0f, G, I, W + o->f2_w, I, 0.0f, Z, H);
        KernDropout d_fo = site_drop(m, mc->dropout, 3 + 3 * l);
        kern_residual_layernorm_forward(LF(l, l_y2), LF(l, l_xh2), LF(l, l_rs2), y1, Z, W + o->f2_b,
                                        W + o->ln2_g, W + o->ln2_b, N, H, eps, &d_fo, &s);
    }
    const float *hout = LF(L - 1, l_y2);

    /* MLM head on the R real predictions */
    double mlm_sum = 0.0;
    long mlm_correct = 0;
    if (R > 0) {
        float *hm = AF(m->lay.hm), *t1 = AF(m->lay.t1), *u = AF(m->lay.u), *v = AF(m->lay.v);
        kern_gather_rows(hm, hout, AI(m->lay.rows), R, H);
        kern_gemm(false, true, R, H, H, 1.0f, hm, H, W + ho->mt_w, H, 0.0f, t1, H);
        kern_bias_gelu_forward(t1, u, W + ho->mt_b, R, H, mc->gelu);
        kern_residual_layernorm_forward(v, AF(m->lay.mxh), AF(m->lay.mrs), NULL, u, NULL, W + ho->mln_g,
                                        W + ho->mln_b, R, H, eps, NULL, &s);
        /* logits (R,V) = v E^T + bias, E the word embeddings (V,H) */
        float *logits = AF(m->lay.logits);
        kern_gemm(false, true, R, V, H, 1.0f, v, H, W + ho->word, H, 0.0f, logits, V);
        double *ml = (double *)(m->act + m->lay.mloss);
        int32_t *corr = AI(m->lay.correct);
        kern_xent_forward(logits, AF(m->lay.lse), ml, corr, W + ho->dec_b, AI(m->lay.labels), R, V);
        for (int r = 0; r < R; r++) {
            mlm_sum += ml[r];
            mlm_correct += corr[r];
        }
    }

    /* NSP head: pooled (B,H) = tanh(h[b, 0] Wp^T + bp): the [CLS] rows are every T-th row */
    float *pooled = AF(m->lay.pooled), *nl = AF(m->lay.nspl), *np = AF(m->lay.nspp);
    kern_gemm(false, true, B, H, H, 1.0f, hout, T * H, W + ho->pool_w, H, 0.0f, pooled, H);
    const int32_t *nlab = AI(m->lay.nsplab);
    double nsp_sum = 0.0;
    long nsp_correct = 0;
    for (int i = 0; i < B; i++) {
        float *pr = pooled + (size_t)i * H;
        for (int j = 0; j < H; j++) pr[j] = tanhf(pr[j] + W[ho->pool_b + j]);
        double z[2];
        for (int c = 0; c < 2; c++) {
            double acc = W[ho->nsp_b + c];
            const float *wr = W + ho->nsp_w + (size_t)c * H;
            for (int j = 0; j < H; j++) acc += (double)pr[j] * wr[j];
            z[c] = acc;
            nl[2 * i + c] = (float)acc;
        }
        double mx = z[0] > z[1] ? z[0] : z[1];
        double lse = mx + log(exp(z[0] - mx) + exp(z[1] - mx));
        np[2 * i] = (float)exp(z[0] - lse);
        np[2 * i + 1] = (float)exp(z[1] - lse);
        nsp_sum += lse - z[nlab[i]];
        nsp_correct += (z[1] > z[0] ? 1 : 0) == nlab[i];
    }

    memset(st, 0, sizeof *st);
    st->mlm_loss = mlm_sum / m->mlm_den;
    st->nsp_loss = nsp_sum / m->nsp_den;
    st->loss = st->mlm_loss + st->nsp_loss;
    st->mlm_correct = mlm_correct;
    st->mlm_count = R;
    st->nsp_correct = nsp_correct;
    st->nsp_count = B;
    m->have_forward = true;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * backward (math per kernel in kernels.c and docs/model.md) */

void model_backward(Model *m) {
    if (!m->have_forward) return;
    m->have_forward = false; /* the logits become their gradient below */
    const ModelConfig *mc = &m->mc;
    const float *W = m->params;
    float *gW = m->grads;
    const HeadOff *ho = &m->ho;
    int B = m->B, T = m->T, H = mc->hidden, I = mc->intermediate, A = mc->heads, L = mc->layers;
    int V = m->V, R = m->R, N = B * T;
    KernScratch s = {(float *)(m->act + m->lay.scratch), m->lay.scratch_per_thread, m->lay.nthreads};
    const float *hout = LF(L - 1, l_y2);
    float *DR = AF(m->lay.DR); /* gradient w.r.t. the current layer's output, (N,H) */
    memset(DR, 0, (size_t)N * H * sizeof(float));

    if (R > 0) {
        float *dlog = AF(m->lay.logits), *v = AF(m->lay.v), *dv = AF(m->lay.dv), *hm = AF(m->lay.hm);
        float *dhm = AF(m->lay.dhm);
        /* dlogits = (softmax - onehot) / mlm_den; dbias += colsum */
        kern_xent_backward(dlog, AF(m->lay.lse), AI(m->lay.labels), (float)(1.0 / m->mlm_den),
                           gW + ho->dec_b, R, V);
        /* tied decoder: dE (V,H) += dlogits^T v ; dv (R,H) = dlogits E (independent: together) */
        KernGemm dec[2] = {{true, false, V, H, R, 1.0f, dlog, V, v, H, 1.0f, gW + ho->word, H},
                           {false, false, R, H, V, 1.0f, dlog, V, W + ho->word, H, 0.0f, dv, H}};
        kern_gemm_many(dec, 2);
        /* LN (in place: dv becomes du), GELU (du becomes dt1) */
        kern_layernorm_backward(dv, NULL, dv, AF(m->lay.mxh), AF(m->lay.mrs), W + ho->mln_g,
                                gW + ho->mln_g, gW + ho->mln_b, R, H, NULL, NULL, &s);
        kern_gelu_backward(dv, NULL, AF(m->lay.t1), R, H, mc->gelu);
        /* dWt += dt1^T hm ; dbt += colsum ; dhm = dt1 Wt ; scatter into the token rows */
        KernGemm tr[2] = {{true, false, H, H, R, 1.0f, dv, H, hm, H, 1.0f, gW + ho->mt_w, H},
                          {false, false, R, H, H, 1.0f, dv, H, W + ho->mt_w, H, 0.0f, dhm, H}};
        kern_gemm_many(tr, 2);
        kern_colsum_add(gW + ho->mt_b, dv, H, R, H);
        kern_scatter_add_rows(DR, dhm, AI(m->lay.rows), R, H);
    }

    /* NSP: dz (B,2) = (softmax - onehot) / nsp_den; dWn += dz^T pooled; dpooled = dz Wn;
     * through tanh: dpre = dpooled (1 - pooled^2) */
    {
        const float *pooled = AF(m->lay.pooled), *np = AF(m->lay.nspp);
        const int32_t *nlab = AI(m->lay.nsplab);
        float *dpre = AF(m->lay.dpool);
        float inv = (float)(1.0 / m->nsp_den);
        for (int i = 0; i < B; i++) {
            const float *pr = pooled + (size_t)i * H;
            float dz[2];
            for (int c = 0; c < 2; c++) dz[c] = (np[2 * i + c] - (nlab[i] == c ? 1.0f : 0.0f)) * inv;
            for (int c = 0; c < 2; c++) {
                float *gw = gW + ho->nsp_w + (size_t)c * H;
                for (int j = 0; j < H; j++) gw[j] += dz[c] * pr[j];
                gW[ho->nsp_b + c] += dz[c];
            }
            const float *w0 = W + ho->nsp_w, *w1 = W + ho->nsp_w + H;
            float *dp = dpre + (size_t)i * H;
            for (int j = 0; j < H; j++) dp[j] = (dz[0] * w0[j] + dz[1] * w1[j]) * (1.0f - pr[j] * pr[j]);
        }
        /* dWp += dpre^T h_cls ; dbp += colsum ; dh_cls += dpre Wp (rows b*T of DR) */
        KernGemm pl[2] = {{true, false, H, H, B, 1.0f, dpre, H, hout, T * H, 1.0f, gW + ho->pool_w, H},
                          {false, false, B, H, H, 1.0f, dpre, H, W + ho->pool_w, H, 1.0f, DR, T * H}};
        kern_gemm_many(pl, 2);
        kern_colsum_add(gW + ho->pool_b, dpre, H, B, H);
    }

    float *DZ = AF(m->lay.DZ), *DG = AF(m->lay.DG), *DCTX = AF(m->lay.DCTX), *G = AF(m->lay.G);
    for (int l = L - 1; l >= 0; l--) {
        const LayerOff *o = &m->lo[l];
        const float *x = l == 0 ? AF(m->lay.x0) : LF(l - 1, l_y2);
        const float *y1 = LF(l, l_y1), *f = LF(l, l_f), *qkv = LF(l, l_qkv), *ctx = LF(l, l_ctx);

        /* y2 = LN(y1 + dropout(z2)): DR becomes d r2 (which is also d y1 through the residual),
         * DZ = dz2 = dropout(d r2) (a copy without dropout: DR is written below while the dW2
         * product still reads dz2) */
        KernDropout d_fo = site_drop(m, mc->dropout, 3 + 3 * l);
        float *dz = DZ;
        kern_layernorm_backward(DR, dz, DR, LF(l, l_xh2), LF(l, l_rs2), W + o->ln2_g, gW + o->ln2_g,
                                gW + o->ln2_b, N, H, NULL, &d_fo, &s);
        /* z2 = G W2^T + b2: dG (N,I) = dz2 W2; then dG *= gelu'(f) (G recomputed alongside) */
        kern_gemm(false, false, N, I, H, 1.0f, dz, H, W + o->f2_w, I, 0.0f, DG, I);
        kern_gelu_backward(DG, G, f, N, I, mc->gelu);
        /* dW2 += dz2^T G ; f = y1 W1^T + b1: dW1 += df^T y1 ; d y1 += df W1 (three independent
         * products, together); db2 += colsum dz2 ; db1 += colsum df */
        KernGemm ffn[3] = {{true, false, H, I, N, 1.0f, dz, H, G, I, 1.0f, gW + o->f2_w, I},
                           {true, false, I, H, N, 1.0f, DG, I, y1, H, 1.0f, gW + o->f1_w, H},
                           {false, false, N, H, I, 1.0f, DG, I, W + o->f1_w, H, 1.0f, DR, H}};
        kern_gemm_many(ffn, 3);
        kern_colsum_add(gW + o->f2_b, dz, H, N, H);
        kern_colsum_add(gW + o->f1_b, DG, I, N, I);

        /* y1 = LN(x + dropout(z1)): DR becomes d r1 (= d x through the residual), DZ = dz1 */
        KernDropout d_ao = site_drop(m, mc->dropout, 2 + 3 * l);
        kern_layernorm_backward(DR, dz, DR, LF(l, l_xh1), LF(l, l_rs1), W + o->ln1_g, gW + o->ln1_g,
                                gW + o->ln1_b, N, H, NULL, &d_ao, &s);
        /* z1 = ctx Wo^T + bo: dctx = dz1 Wo ; dWo += dz1^T ctx (together) ; dbo += colsum dz1 */
        KernGemm out[2] = {{false, false, N, H, H, 1.0f, dz, H, W + o->o_w, H, 0.0f, DCTX, H},
                           {true, false, H, H, N, 1.0f, dz, H, ctx, H, 1.0f, gW + o->o_w, H}};
        kern_gemm_many(out, 2);
        kern_colsum_add(gW + o->o_b, dz, H, N, H);

        KernDropout d_att = site_drop(m, mc->attention_dropout, 1 + 3 * l);
        float *dqkv = DG; /* (N,3H); DG is free again */
        kern_attention_backward(dqkv, DCTX, qkv, LF(l, l_P), B, T, H, A, &d_att, &s);
        /* qkv = x Wqkv^T + b: dWqkv (3H,H) += dqkv^T x ; db += colsum ; dx += dqkv Wqkv */
        if (m->qkv_w_fused) {
            KernGemm in[2] = {{true, false, 3 * H, H, N, 1.0f, dqkv, 3 * H, x, H, 1.0f, gW + o->w[0], H},
                              {false, false, N, H, 3 * H, 1.0f, dqkv, 3 * H, W + o->w[0], H, 1.0f, DR, H}};
            kern_gemm_many(in, 2);
        } else {
            /* each input-gradient product adds into DR: one pair at a time */
            for (int k = 0; k < 3; k++) {
                const float *dk = dqkv + (size_t)k * H;
                KernGemm in[2] = {{true, false, H, H, N, 1.0f, dk, 3 * H, x, H, 1.0f, gW + o->w[k], H},
                                  {false, false, N, H, H, 1.0f, dk, 3 * H, W + o->w[k], H, 1.0f, DR, H}};
                kern_gemm_many(in, 2);
            }
        }
        if (m->qkv_b_fused) {
            kern_colsum_add(gW + o->b[0], dqkv, 3 * H, N, 3 * H);
        } else {
            for (int k = 0; k < 3; k++) kern_colsum_add(gW + o->b[k], dqkv + (size_t)k * H, 3 * H, N, H);
        }
    }

    /* x0 = dropout(LN(e)): d(LN out) = dropout(dx0), then LN backward gives de; scatter into the
     * three embedding tables */
    KernDropout d_emb = site_drop(m, mc->dropout, 0);
    kern_layernorm_backward(DR, NULL, DR, AF(m->lay.exh), AF(m->lay.ers), W + ho->eln_g, gW + ho->eln_g,
                            gW + ho->eln_b, N, H, &d_emb, NULL, &s);
    kern_embed_backward(gW + ho->word, gW + ho->pos, gW + ho->type, DR, AI(m->lay.ids), AI(m->lay.tt), B,
                        T, H);
}

const float *model_mlm_logits(const Model *m) { return m->act ? (const float *)(m->act + m->lay.logits) : NULL; }
int model_mlm_rows(const Model *m) { return m->R; }
const int32_t *model_mlm_slots(const Model *m) {
    return m->act ? (const int32_t *)(m->act + m->lay.slots) : NULL;
}
const float *model_nsp_logits(const Model *m) { return m->act ? (const float *)(m->act + m->lay.nspl) : NULL; }

int model_gemm_shapes(const ModelConfig *mc, int vocab_size, int B, int T, int R, ModelGemmShape *out) {
    int H = mc->hidden, I = mc->intermediate, A = mc->heads, D = H / A, N = B * T;
    int V = vocab_size > 0 ? vocab_size : mc->vocab_size;
    double L = mc->layers, per_head = L * B * A;
    /* each Linear y = x W^T (x (rows,in), W (out,in)): forward y = x W^T, backward dW += dy^T x and
       dx = dy W */
    struct {
        const char *name;
        int rows, out, in;
        double count;
    } lin[] = {{"qkv", N, 3 * H, H, L},        {"attn out", N, H, H, L}, {"ffn1", N, I, H, L},
               {"ffn2", N, H, I, L},           {"mlm dense", R, H, H, 1}, {"decoder", R, V, H, 1},
               {"pooler", B, H, H, 1}};
    static const char *fwd[] = {"qkv fwd", "attn out fwd", "ffn1 fwd", "ffn2 fwd", "mlm dense fwd", "decoder fwd",
                                "pooler fwd"};
    static const char *dw[] = {"qkv dW", "attn out dW", "ffn1 dW", "ffn2 dW", "mlm dense dW", "decoder dE",
                               "pooler dW"};
    static const char *dx[] = {"qkv dX", "attn out dX", "ffn1 dX", "ffn2 dX", "mlm dense dX", "decoder dX",
                               "pooler dX"};
    int n = 0;
    for (size_t i = 0; i < BP_ARRAY_LEN(lin); i++) {
        if (lin[i].rows == 0) continue;
        out[n++] = (ModelGemmShape){fwd[i], false, true, lin[i].rows, lin[i].out, lin[i].in, lin[i].count};
        out[n++] = (ModelGemmShape){dw[i], true, false, lin[i].out, lin[i].in, lin[i].rows, lin[i].count};
        out[n++] = (ModelGemmShape){dx[i], false, false, lin[i].rows, lin[i].in, lin[i].out, lin[i].count};
    }
    /* attention per (example, head): S = Q K^T, C = P V; backward dP = dC V^T, dV = P^T dC,
       dQ = dS K, dK = dS^T Q */
    out[n++] = (ModelGemmShape){"attn QK^T", false, true, T, T, D, per_head};
    out[n++] = (ModelGemmShape){"attn PV", false, false, T, D, T, per_head};
    out[n++] = (ModelGemmShape){"attn dP", false, true, T, T, D, per_head};
    out[n++] = (ModelGemmShape){"attn dV", true, false, T, D, T, per_head};
    out[n++] = (ModelGemmShape){"attn dQ", false, false, T, D, T, per_head};
    out[n++] = (ModelGemmShape){"attn dK", true, false, T, D, T, per_head};
    BP_ASSERT(n <= MODEL_MAX_GEMM_SHAPES, "%d shapes", n);
    return n;
}

double model_flops_per_example(const ModelConfig *mc, int vocab_size, int T, int P) {
    ModelGemmShape g[MODEL_MAX_GEMM_SHAPES];
    int n = model_gemm_shapes(mc, vocab_size, 1, T, P, g);
    double flops = 0;
    for (int i = 0; i < n; i++) flops += 2.0 * g[i].M * g[i].N * (double)g[i].K * g[i].count;
    return flops;
}

/* ---------------------------------------------------------------------------------------------
 * safetensors I/O */

static int write_tensors(const Model *m, const float *buf, const char *path, BpError *err) {
    const ParamTable *t = &m->table;
    StEntry *e = bp_calloc((size_t)t->n, sizeof *e, "safetensors entries", err);
    if (!e) return -1;
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->params[i];
        e[i].name = p->name;
        e[i].dtype = ST_F32;
        e[i].ndim = p->ndim;
        e[i].shape[0] = p->shape[0];
        e[i].shape[1] = p->shape[1];
        e[i].data = buf + p->offset;
    }
    int rc = st_write(path, e, t->n, err);
    free(e);
    return rc;
}

int model_save_safetensors(const Model *m, const char *path, BpError *err) {
    return write_tensors(m, m->params, path, err);
}

int model_save_grads_safetensors(const Model *m, const char *path, BpError *err) {
    return write_tensors(m, m->grads, path, err);
}

static void shape_str(char *buf, size_t len, int ndim, const size_t *shape) {
    int o = snprintf(buf, len, "(");
    for (int d = 0; d < ndim && o < (int)len; d++) o += snprintf(buf + o, len - (size_t)o, d ? ", %zu" : "%zu", shape[d]);
    if (o < (int)len) snprintf(buf + o, len - (size_t)o, ndim == 1 ? ",)" : ")");
}

static bool same_shape(const StTensor *st, int ndim, const size_t *shape) {
    if (st->ndim != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (st->shape[d] != shape[d]) return false;
    return true;
}

int model_load_safetensors(Model *m, const char *path, BpError *err) {
    StFile f;
    if (st_open(&f, path, err)) return -1;
    const ParamTable *t = &m->table;
    char have[64], want[64];
    int rc = -1;
    const StTensor *dec_w = NULL, *dec_b = NULL;
    float *staged = bp_aligned_calloc(t->total * sizeof(float), "staged weights", err);
    bool *seen = bp_calloc((size_t)(t->n ? t->n : 1), sizeof(bool), "loaded flags", err);
    if (!staged || !seen) goto done;
    for (int k = 0; k < f.n; k++) {
        const StTensor *st = &f.tensors[k];
        if (!strcmp(st->name, "bert.embeddings.position_ids")) continue; /* a buffer, not a weight */
        if (!strcmp(st->name, "cls.predictions.decoder.weight")) {
            dec_w = st;
            continue;
        }
        if (!strcmp(st->name, "cls.predictions.decoder.bias")) {
            dec_b = st;
            continue;
        }
        int i = params_find(t, st->name);
        if (i < 0) {
            bp_fail(err, "%s: tensor '%s' is not a parameter of this model (%d layers, hidden %d)", path,
                    st->name, m->mc.layers, m->mc.hidden);
            goto done;
        }
        const ParamInfo *p = &t->params[i];
        if (st->dtype != ST_F32) {
            bp_fail(err, "%s: tensor '%s' has dtype %s, expected F32", path, st->name, st_dtype_name(st->dtype));
            goto done;
        }
        if (!same_shape(st, p->ndim, p->shape)) {
            shape_str(have, sizeof have, st->ndim, st->shape);
            shape_str(want, sizeof want, p->ndim, p->shape);
            bp_fail(err, "%s: tensor '%s' has shape %s, the model expects %s", path, st->name, have, want);
            goto done;
        }
        memcpy(staged + p->offset, st_data(&f, st), p->numel * sizeof(float));
        seen[i] = true;
    }
    for (int i = 0; i < t->n; i++) {
        if (!seen[i]) {
            bp_fail(err, "%s: tensor '%s' is missing", path, t->params[i].name);
            goto done;
        }
    }
    /* the tied decoder: accepted only when it is the word embedding (and its bias the output bias) */
    if (dec_w) {
        const ParamInfo *p = &t->params[params_find(t, "bert.embeddings.word_embeddings.weight")];
        if (dec_w->dtype != ST_F32 || !same_shape(dec_w, p->ndim, p->shape)) {
            shape_str(have, sizeof have, dec_w->ndim, dec_w->shape);
            shape_str(want, sizeof want, p->ndim, p->shape);
            bp_fail(err, "%s: tensor 'cls.predictions.decoder.weight' (%s %s) must be F32 %s like the word embeddings it is tied to",
                    path, st_dtype_name(dec_w->dtype), have, want);
            goto done;
        }
        if (memcmp(st_data(&f, dec_w), staged + p->offset, p->numel * sizeof(float)) != 0) {
            bp_fail(err, "%s: tensor 'cls.predictions.decoder.weight' differs from the word embeddings; this model ties them and cannot load an untied decoder", path);
            goto done;
        }
    }
    if (dec_b) {
        const ParamInfo *p = &t->params[params_find(t, "cls.predictions.bias")];
        if (dec_b->dtype != ST_F32 || !same_shape(dec_b, p->ndim, p->shape) ||
            memcmp(st_data(&f, dec_b), staged + p->offset, p->numel * sizeof(float)) != 0) {
            bp_fail(err, "%s: tensor 'cls.predictions.decoder.bias' must equal cls.predictions.bias (F32, %zu values)",
                    path, p->numel);
            goto done;
        }
    }
    memcpy(m->params, staged, t->total * sizeof(float));
    rc = 0;
done:
    free(staged);
    free(seen);
    st_close(&f);
    return rc;
}

int model_batch_from_safetensors(Batch *b, const char *path, BpError *err) {
    StFile f;
    if (st_open(&f, path, err)) return -1;
    static const char *names[] = {"input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                                   "masked_lm_ids", "masked_lm_weights"};
    const StTensor *t[7];
    for (int i = 0; i < 7; i++) {
        const char *nm = i < 6 ? names[i] : "next_sentence_labels";
        t[i] = st_find(&f, nm);
        if (!t[i]) {
            bp_fail(err, "%s: tensor '%s' is missing", path, nm);
            goto fail;
        }
        if (t[i]->dtype != ST_I32) {
            bp_fail(err, "%s: tensor '%s' has dtype %s, expected I32", path, nm, st_dtype_name(t[i]->dtype));
            goto fail;
        }
        bool ok = i < 6 ? t[i]->ndim == 2 : (t[i]->ndim == 1 || (t[i]->ndim == 2 && t[i]->shape[1] == 1));
        if (!ok) {
            bp_fail(err, "%s: tensor '%s' has %d dimensions, expected %s", path, nm, t[i]->ndim,
                    i < 6 ? "2" : "1 (or (B, 1))");
            goto fail;
        }
    }
    size_t B = t[0]->shape[0], T = t[0]->shape[1], P = t[3]->shape[1];
    for (int i = 0; i < 7; i++) {
        size_t want1 = i < 3 ? T : P;
        if (t[i]->shape[0] != B || (i < 6 && t[i]->shape[1] != want1)) {
            bp_fail(err, "%s: tensor '%s' has shape (%zu, %zu), expected (%zu, %zu)", path, t[i]->name,
                    t[i]->shape[0], t[i]->ndim > 1 ? t[i]->shape[1] : 1, B, i < 6 ? want1 : 1);
            goto fail;
        }
    }
    if (B < 1 || T < 1 || B > (1u << 20) || T > (1u << 16) || P > T) {
        bp_fail(err, "%s: batch sizes B=%zu T=%zu P=%zu out of range", path, B, T, P);
        goto fail;
    }
    if (batch_alloc(b, (int)B, (int)T, (int)P, err)) goto fail;
    int32_t *dst[7] = {b->input_ids, b->token_type_ids, b->attention_mask, b->masked_lm_positions,
                       b->masked_lm_ids, b->masked_lm_weights, b->next_sentence_labels};
    for (int i = 0; i < 7; i++) memcpy(dst[i], st_data(&f, t[i]), st_numel(t[i]) * sizeof(int32_t));
    const StTensor *ex = st_find(&f, "example_index");
    if (ex && ex->dtype == ST_I64 && st_numel(ex) == B) memcpy(b->example_index, st_data(&f, ex), B * sizeof(int64_t));
    else
        for (size_t i = 0; i < B; i++) b->example_index[i] = (int64_t)i;
    st_close(&f);
    return 0;
fail:
    st_close(&f);
    return -1;
}

int model_config_from_safetensors(const char *path, int heads, ModelConfig *mc, int *vocab_size,
                                  BpError *err) {
    StFile f;
    if (st_open(&f, path, err)) return -1;
    int rc = -1;
    char nm[ST_NAME_LEN];
    const StTensor *we = st_find(&f, "bert.embeddings.word_embeddings.weight");
    const StTensor *pe = st_find(&f, "bert.embeddings.position_embeddings.weight");
    const StTensor *te = st_find(&f, "bert.embeddings.token_type_embeddings.weight");
    const StTensor *fi = st_find(&f, "bert.encoder.layer.0.intermediate.dense.weight");
    const char *missing = !we ? "bert.embeddings.word_embeddings.weight"
                          : !pe ? "bert.embeddings.position_embeddings.weight"
                          : !te ? "bert.embeddings.token_type_embeddings.weight"
                          : !fi ? "bert.encoder.layer.0.intermediate.dense.weight"
                                : NULL;
    if (missing) {
        bp_fail(err, "%s: tensor '%s' is missing: cannot infer the model shape", path, missing);
        goto done;
    }
    if (we->ndim != 2 || pe->ndim != 2 || te->ndim != 2 || fi->ndim != 2) {
        bp_fail(err, "%s: embedding and intermediate weights must be 2-D", path);
        goto done;
    }
    const StTensor *dims[4] = {we, pe, te, fi};
    for (int k = 0; k < 4; k++)
        if (dims[k]->shape[0] < 1 || dims[k]->shape[1] < 1 || dims[k]->shape[0] > (1u << 28) || dims[k]->shape[1] > (1u << 20)) {
            bp_fail(err, "%s: tensor '%s' has an implausible shape (%zu, %zu)", path, dims[k]->name, dims[k]->shape[0],
                    dims[k]->shape[1]);
            goto done;
        }
    int L = 0;
    for (; L < 100000; L++) {
        snprintf(nm, sizeof nm, "bert.encoder.layer.%d.attention.self.query.weight", L);
        if (!st_find(&f, nm)) break;
    }
    mc->layers = L;
    mc->hidden = (int)we->shape[1];
    mc->intermediate = (int)fi->shape[0];
    mc->max_position = (int)pe->shape[0];
    mc->type_vocab_size = (int)te->shape[0];
    mc->vocab_size = (int)we->shape[0];
    *vocab_size = mc->vocab_size;
    if (heads <= 0) heads = mc->hidden >= 64 && mc->hidden % 64 == 0 ? mc->hidden / 64 : 1;
    mc->heads = heads;
    snprintf(mc->preset, sizeof mc->preset, "custom");
    if (L < 1) {
        bp_fail(err, "%s: no encoder layers (bert.encoder.layer.0.attention.self.query.weight missing)", path);
        goto done;
    }
    rc = 0;
done:
    st_close(&f);
    return rc;
}

int model_write_hf_config(const Model *m, const char *path, BpError *err) {
    AtomicFile af;
    if (bp_atomic_open(&af, path, err)) return -1;
    const ModelConfig *mc = &m->mc;
    fprintf(af.fp,
            "{\n"
            "  \"architectures\": [\"BertForPreTraining\"],\n"
            "  \"model_type\": \"bert\",\n"
            "  \"attention_probs_dropout_prob\": %.17g,\n"
            "  \"hidden_act\": \"%s\",\n"
            "  \"hidden_dropout_prob\": %.17g,\n"
            "  \"hidden_size\": %d,\n"
            "  \"initializer_range\": %.17g,\n"
            "  \"intermediate_size\": %d,\n"
            "  \"layer_norm_eps\": %.17g,\n"
            "  \"max_position_embeddings\": %d,\n"
            "  \"num_attention_heads\": %d,\n"
            "  \"num_hidden_layers\": %d,\n"
            "  \"pad_token_id\": 0,\n"
            "  \"position_embedding_type\": \"absolute\",\n"
            "  \"tie_word_embeddings\": true,\n"
            "  \"torch_dtype\": \"float32\",\n"
            "  \"type_vocab_size\": %d,\n"
            "  \"vocab_size\": %d\n"
            "}\n",
            mc->attention_dropout, mc->gelu == GELU_TANH ? "gelu_new" : "gelu", mc->dropout, mc->hidden,
            mc->initializer_range, mc->intermediate, mc->layer_norm_eps, mc->max_position, mc->heads,
            mc->layers, mc->type_vocab_size, m->V);
    return bp_atomic_commit(&af, err);
}

/* ---------------------------------------------------------------------------------------------
 * random batches and the gradient check */

void model_fill_random_batch(Batch *b, int V, int types, bool padding, bool all_slots, uint64_t seed,
                             int64_t first_example) {
    int B = b->B, T = b->T, P = b->P;
    RngStream s = rng_stream(seed, RNG_BENCH, 0);
    for (int i = 0; i < B; i++) {
        int len = T;
        if (padding && T >= 4) len = T - (i * 3) % (T / 2);
        for (int t = 0; t < T; t++) {
            size_t n = (size_t)i * T + t;
            bool real = t < len;
            b->input_ids[n] = real ? (t == 0 ? (V > 1 ? 1 : 0) : (int32_t)rng_next_below(&s, (uint32_t)V)) : 0;
            b->token_type_ids[n] = real && types > 1 && t >= len / 2 ? 1 : 0;
            b->attention_mask[n] = real;
        }
        /* prediction slots: distinct positions in [1, len) */
        int want = all_slots ? P : (P + 1) / 2 + (i % 2);
        if (want > P) want = P;
        if (want > len - 1) want = len - 1;
        int got = 0;
        for (int p = 0; p < P; p++) {
            size_t k = (size_t)i * P + p;
            b->masked_lm_positions[k] = 0;
            b->masked_lm_ids[k] = 0;
            b->masked_lm_weights[k] = 0;
        }
        while (got < want) {
            int pos = 1 + (int)rng_next_below(&s, (uint32_t)(len - 1));
            bool dup = false;
            for (int p = 0; p < got; p++) dup |= b->masked_lm_positions[(size_t)i * P + p] == pos;
            if (dup) continue;
            size_t k = (size_t)i * P + got++;
            b->masked_lm_positions[k] = pos;
            b->masked_lm_ids[k] = (int32_t)rng_next_below(&s, (uint32_t)V);
            b->masked_lm_weights[k] = 1;
        }
        b->next_sentence_labels[i] = (int32_t)rng_next_below(&s, 2);
        b->example_index[i] = first_example + i;
    }
}

static int gc_loss(Model *m, const Batch *b, const GradcheckOpts *o, double *loss, BpError *err) {
    ForwardArgs fa = {o->dropout, o->seed, 1, 0.0, 0.0};
    ModelStats st;
    if (model_forward(m, b, &fa, &st, err)) return -1;
    *loss = st.loss;
    return 0;
}

/* numeric d loss / d w[k] by central differences; the step actually taken is measured after
 * rounding w +- eps to float */
static int gc_numeric(Model *m, const Batch *b, const GradcheckOpts *o, float *w, double *num,
                      BpError *err) {
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

typedef struct {
    double max_abs, max_rel;
    int checked;
    bool pass;
} GcRow;

static void gc_compare(GcRow *r, double num, double ana, const GradcheckOpts *o) {
    double e = fabs(num - ana), scale = fmax(fabs(num), fabs(ana));
    double rel = scale > 0 ? e / scale : 0.0;
    if (e > r->max_abs) r->max_abs = e;
    if (rel > r->max_rel) r->max_rel = rel;
    if (!(e <= o->atol + o->rtol * scale)) r->pass = false;
    r->checked++;
}

int model_gradcheck(Model *m, const Batch *b, const GradcheckOpts *o, FILE *out, BpError *err) {
    const ParamTable *t = &m->table;
    if (o->randomize) {
        /* A generic point: with unit gains and zero biases a backward that forgets a gain or a
         * bias term would still pass. */
        for (int i = 0; i < t->n; i++) {
            const ParamInfo *p = &t->params[i];
            RngStream s = rng_stream(o->seed, RNG_TEST, (uint64_t)i);
            float *w = m->params + p->offset;
            bool gain = strstr(p->name, "LayerNorm.weight") != NULL;
            size_t len = strlen(p->name);
            bool bias = len > 5 && !strcmp(p->name + len - 5, ".bias");
            for (size_t k = 0; k < p->numel; k++) {
                double z = rng_next_normal(&s);
                w[k] = (float)(gain ? 1.0 + 0.2 * z : bias ? 0.1 * z : 0.3 * z);
            }
        }
    }
    model_zero_grad(m);
    ForwardArgs fa = {o->dropout, o->seed, 1, 0.0, 0.0};
    ModelStats st;
    if (model_forward(m, b, &fa, &st, err)) return -1;
    model_backward(m);
    float *g = bp_malloc(t->total * sizeof(float), "gradcheck gradient copy", err);
    if (!g) return -1;
    memcpy(g, m->grads, t->total * sizeof(float));
    int fails = 0;
    if (out) {
        fprintf(out, "gradcheck: loss %.6f (mlm %.6f, nsp %.6f), eps %g, pass when |num - ana| <= %g + %g * max(|num|, |ana|)\n",
                st.loss, st.mlm_loss, st.nsp_loss, o->eps, o->atol, o->rtol);
        fprintf(out, "%-60s %7s %12s %12s  %s\n", "tensor", "checked", "max abs err", "max rel err", "result");
    }
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->params[i];
        GcRow row = {0, 0, 0, true};
        RngStream s = rng_stream(o->seed, RNG_TEST, 1000003u + (uint64_t)i);
        size_t kmax = 0;
        for (size_t k = 1; k < p->numel; k++)
            if (fabsf(g[p->offset + k]) > fabsf(g[p->offset + kmax])) kmax = k;
        int n = o->samples < (int)p->numel ? o->samples : (int)p->numel;
        for (int j = 0; j <= n; j++) {
            size_t k = j == 0 ? kmax : (size_t)rng_next_below(&s, (uint32_t)p->numel);
            double num;
            if (gc_numeric(m, b, o, m->params + p->offset + k, &num, err)) {
                free(g);
                return -1;
            }
            gc_compare(&row, num, g[p->offset + k], o);
        }
        fails += !row.pass;
        if (out)
            fprintf(out, "%-60s %7d %12.3e %12.3e  %s\n", p->name, row.checked, row.max_abs, row.max_rel,
                    row.pass ? "PASS" : "FAIL");
    }
    /* one random direction u over every parameter: (L(w + eps u) - L(w - eps u)) / 2eps vs g.u */
    {
        GcRow row = {0, 0, 0, true};
        float *w0 = bp_malloc(t->total * sizeof(float), "gradcheck weight copy", err);
        float *u = bp_malloc(t->total * sizeof(float), "gradcheck direction", err);
        if (!w0 || !u) {
            free(w0);
            free(u);
            free(g);
            return -1;
        }
        memcpy(w0, m->params, t->total * sizeof(float));
        RngStream s = rng_stream(o->seed, RNG_TEST, 999u);
        double norm = 0.0;
        for (size_t k = 0; k < t->total; k++) {
            u[k] = (float)rng_next_normal(&s);
            norm += (double)u[k] * u[k];
        }
        double inv = 1.0 / sqrt(norm), ana = 0.0, lp = 0, lm = 0;
        for (size_t k = 0; k < t->total; k++) {
            u[k] = (float)(u[k] * inv);
            ana += (double)g[k] * u[k];
        }
        /* the step actually taken per element is (float)(w + eps u) - w: measure it in the
           directional sum so rounding does not count as error */
        double dot_plus = 0.0, dot_minus = 0.0;
        for (size_t k = 0; k < t->total; k++) {
            m->params[k] = (float)(w0[k] + o->eps * u[k]);
            dot_plus += (double)g[k] * ((double)m->params[k] - w0[k]);
        }
        int rc = gc_loss(m, b, o, &lp, err);
        for (size_t k = 0; k < t->total && !rc; k++) {
            m->params[k] = (float)(w0[k] - o->eps * u[k]);
            dot_minus += (double)g[k] * ((double)m->params[k] - w0[k]);
        }
        if (!rc) rc = gc_loss(m, b, o, &lm, err);
        memcpy(m->params, w0, t->total * sizeof(float));
        free(w0);
        free(u);
        if (rc) {
            free(g);
            return -1;
        }
        /* numeric and analytic directional derivatives per unit of eps */
        double num = (lp - lm) / (2.0 * o->eps);
        ana = (dot_plus - dot_minus) / (2.0 * o->eps);
        gc_compare(&row, num, ana, o);
        fails += !row.pass;
        if (out)
            fprintf(out, "%-60s %7d %12.3e %12.3e  %s\n", "(random direction over all parameters)", row.checked,
                    row.max_abs, row.max_rel, row.pass ? "PASS" : "FAIL");
    }
    free(g);
    /* leave the model with the gradient of its current weights */
    model_zero_grad(m);
    if (model_forward(m, b, &fa, &st, err)) return -1;
    model_backward(m);
    return fails;
}
