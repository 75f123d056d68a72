/* model.c: BERT for pretraining: the tensor list and the parameter table it makes, init, the
 * activation plan, forward and backward (see model.h; the backward math is in docs/model.md and
 * next to kernels.c). Files are model_io.c, the gradient check gradcheck.c.
 *
 * Size legend: B examples, T sequence length, P prediction slots per example, R real predictions
 * of the micro-batch (<= B*P), N = B*T tokens, H hidden, A heads, I intermediate, V vocabulary,
 * L layers. */
#include "model.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_cpu.h"
#include "gemm_dnnl.h"
#include "kernels.h"
#include "rng.h"

/* ---------------------------------------------------------------------------------------------
 * the tensors: one list makes the parameter table (names, shapes, order, offsets) and the offsets
 * forward and backward read, in one walk, so a tensor the passes use is always in the table */

/* the sizes a tensor dimension takes */
typedef enum { DIM_NONE, DIM_H, DIM_I, DIM_V, DIM_POS, DIM_TYPES, DIM_NSP } TensorDim;

/* X(field, Hugging Face name, dim 0, dim 1, kind) in table order. Names, shapes and order are the
 * format of checkpoints, exports and the PyTorch fixture. */
#define EMBEDDING_TENSORS(X)                                                                       \
    X(word_emb, "bert.embeddings.word_embeddings.weight", DIM_V, DIM_H, MODEL_TENSOR_WEIGHT)       \
    X(pos_emb, "bert.embeddings.position_embeddings.weight", DIM_POS, DIM_H, MODEL_TENSOR_WEIGHT)  \
    X(type_emb, "bert.embeddings.token_type_embeddings.weight", DIM_TYPES, DIM_H,                  \
      MODEL_TENSOR_WEIGHT)                                                                         \
    X(emb_ln_g, "bert.embeddings.LayerNorm.weight", DIM_H, DIM_NONE, MODEL_TENSOR_GAIN)            \
    X(emb_ln_b, "bert.embeddings.LayerNorm.bias", DIM_H, DIM_NONE, MODEL_TENSOR_BIAS)

/* names after "bert.encoder.layer.<l>."; query, key and value adjacent, so that they form one
 * (3H,H) matrix and one (3H) bias when the 16-float alignment leaves no gap (qkv_forward) */
#define LAYER_TENSORS(X)                                                                           \
    X(q_w, "attention.self.query.weight", DIM_H, DIM_H, MODEL_TENSOR_WEIGHT)                       \
    X(k_w, "attention.self.key.weight", DIM_H, DIM_H, MODEL_TENSOR_WEIGHT)                         \
    X(v_w, "attention.self.value.weight", DIM_H, DIM_H, MODEL_TENSOR_WEIGHT)                       \
    X(q_b, "attention.self.query.bias", DIM_H, DIM_NONE, MODEL_TENSOR_BIAS)                        \
    X(k_b, "attention.self.key.bias", DIM_H, DIM_NONE, MODEL_TENSOR_BIAS)                          \
    X(v_b, "attention.self.value.bias", DIM_H, DIM_NONE, MODEL_TENSOR_BIAS)                        \
    X(attn_out_w, "attention.output.dense.weight", DIM_H, DIM_H, MODEL_TENSOR_WEIGHT)              \
    X(attn_out_b, "attention.output.dense.bias", DIM_H, DIM_NONE, MODEL_TENSOR_BIAS)               \
    X(ln1_g, "attention.output.LayerNorm.weight", DIM_H, DIM_NONE, MODEL_TENSOR_GAIN)              \
    X(ln1_b, "attention.output.LayerNorm.bias", DIM_H, DIM_NONE, MODEL_TENSOR_BIAS)                \
    X(ffn1_w, "intermediate.dense.weight", DIM_I, DIM_H, MODEL_TENSOR_WEIGHT)                      \
    X(ffn1_b, "intermediate.dense.bias", DIM_I, DIM_NONE, MODEL_TENSOR_BIAS)                       \
    X(ffn2_w, "output.dense.weight", DIM_H, DIM_I, MODEL_TENSOR_WEIGHT)                            \
    X(ffn2_b, "output.dense.bias", DIM_H, DIM_NONE, MODEL_TENSOR_BIAS)                             \
    X(ln2_g, "output.LayerNorm.weight", DIM_H, DIM_NONE, MODEL_TENSOR_GAIN)                        \
    X(ln2_b, "output.LayerNorm.bias", DIM_H, DIM_NONE, MODEL_TENSOR_BIAS)

/* after the layers; no decoder weight: the word embeddings are tied to it */
#define HEAD_TENSORS(X)                                                                            \
    X(pool_w, "bert.pooler.dense.weight", DIM_H, DIM_H, MODEL_TENSOR_WEIGHT)                       \
    X(pool_b, "bert.pooler.dense.bias", DIM_H, DIM_NONE, MODEL_TENSOR_BIAS)                        \
    X(mlm_dense_w, "cls.predictions.transform.dense.weight", DIM_H, DIM_H, MODEL_TENSOR_WEIGHT)    \
    X(mlm_dense_b, "cls.predictions.transform.dense.bias", DIM_H, DIM_NONE, MODEL_TENSOR_BIAS)     \
    X(mlm_ln_g, "cls.predictions.transform.LayerNorm.weight", DIM_H, DIM_NONE, MODEL_TENSOR_GAIN)  \
    X(mlm_ln_b, "cls.predictions.transform.LayerNorm.bias", DIM_H, DIM_NONE, MODEL_TENSOR_BIAS)    \
    X(decoder_b, "cls.predictions.bias", DIM_V, DIM_NONE, MODEL_TENSOR_BIAS)                       \
    X(nsp_w, "cls.seq_relationship.weight", DIM_NSP, DIM_H, MODEL_TENSOR_WEIGHT)                   \
    X(nsp_b, "cls.seq_relationship.bias", DIM_NSP, DIM_NONE, MODEL_TENSOR_BIAS)

/* Offsets in floats of each tensor; the same offset indexes the parameters and the gradients. */
#define OFFSET_FIELD(field, name, d0, d1, kind) size_t field;
typedef struct {
    EMBEDDING_TENSORS(OFFSET_FIELD)
    HEAD_TENSORS(OFFSET_FIELD)
} GlobalParams;
typedef struct {
    LAYER_TENSORS(OFFSET_FIELD)
} LayerParams;

typedef struct {
    const char *name;
    TensorDim dim[2];
    ModelTensorKind kind;
    size_t field; /* where its offset goes: offsetof in GlobalParams or LayerParams */
} TensorSpec;

#define GLOBAL_SPEC(f, name, d0, d1, kind) {name, {d0, d1}, kind, offsetof(GlobalParams, f)},
#define LAYER_SPEC(f, name, d0, d1, kind) {name, {d0, d1}, kind, offsetof(LayerParams, f)},
static const TensorSpec EMBEDDING_SPECS[] = {EMBEDDING_TENSORS(GLOBAL_SPEC)};
static const TensorSpec LAYER_SPECS[] = {LAYER_TENSORS(LAYER_SPEC)};
static const TensorSpec HEAD_SPECS[] = {HEAD_TENSORS(GLOBAL_SPEC)};
enum {
    N_EMBEDDING_TENSORS = (int)BP_ARRAY_LEN(EMBEDDING_SPECS),
    N_LAYER_TENSORS = (int)BP_ARRAY_LEN(LAYER_SPECS),
    N_HEAD_TENSORS = (int)BP_ARRAY_LEN(HEAD_SPECS),
};

/* tensor i of a model with L layers, and its layer (-1 outside the encoder) */
static const TensorSpec *tensor_spec(int L, int i, int *layer) {
    *layer = -1;
    if (i < N_EMBEDDING_TENSORS) return &EMBEDDING_SPECS[i];
    i -= N_EMBEDDING_TENSORS;
    if (i < L * N_LAYER_TENSORS) {
        *layer = i / N_LAYER_TENSORS;
        return &LAYER_SPECS[i % N_LAYER_TENSORS];
    }
    i -= L * N_LAYER_TENSORS;
    BP_ASSERT(i >= 0 && i < N_HEAD_TENSORS, "tensor index past the table (%d layers)", L);
    return &HEAD_SPECS[i];
}

static size_t dim_size(TensorDim d, const ModelConfig *mc, int V) {
    switch (d) {
    case DIM_H: return (size_t)mc->hidden;
    case DIM_I: return (size_t)mc->intermediate;
    case DIM_V: return (size_t)V;
    case DIM_POS: return (size_t)mc->max_position;
    case DIM_TYPES: return (size_t)mc->type_vocab_size;
    case DIM_NSP: return 2;
    case DIM_NONE: break;
    }
    BP_ASSERT(0, "dimension %d has no size", (int)d);
}

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

/* The one walk over the tensor list: fills the table (16-float aligned offsets, in list order) and,
 * when gp is given, every offset field of gp and lp (L entries). */
static int build_tensors(const ModelConfig *mc, int V, ParamTable *t, GlobalParams *gp, LayerParams *lp,
                         BpError *err) {
    memset(t, 0, sizeof *t);
    if (check_model_config(mc, V, err)) return -1;
    int L = mc->layers, n = N_EMBEDDING_TENSORS + L * N_LAYER_TENSORS + N_HEAD_TENSORS;
    t->params = bp_calloc((size_t)n, sizeof *t->params, "the parameter table", err);
    if (!t->params) return -1;
    for (int i = 0; i < n; i++) {
        int l;
        const TensorSpec *s = tensor_spec(L, i, &l);
        ParamInfo *p = &t->params[t->n++];
        int len = l < 0 ? snprintf(p->name, sizeof p->name, "%s", s->name)
                        : snprintf(p->name, sizeof p->name, "bert.encoder.layer.%d.%s", l, s->name);
        BP_ASSERT(len > 0 && (size_t)len < sizeof p->name, "tensor name of layer %d too long: %s", l, s->name);
        p->ndim = s->dim[1] == DIM_NONE ? 1 : 2;
        p->shape[0] = dim_size(s->dim[0], mc, V);
        p->shape[1] = p->ndim > 1 ? dim_size(s->dim[1], mc, V) : 0;
        p->numel = p->ndim > 1 ? p->shape[0] * p->shape[1] : p->shape[0];
        p->offset = (t->total + 15) / 16 * 16;
        p->weight_decay = p->layer_adaptation = true;
        t->total = p->offset + p->numel;
        if (gp) *(size_t *)((char *)(l < 0 ? (void *)gp : (void *)&lp[l]) + s->field) = p->offset;
    }
    t->total = (t->total + 15) / 16 * 16;
    return 0;
}

int model_param_table(const ModelConfig *mc, int vocab_size, ParamTable *out, BpError *err) {
    return build_tensors(mc, vocab_size > 0 ? vocab_size : mc->vocab_size, out, NULL, NULL, err);
}

/* ---------------------------------------------------------------------------------------------
 * activations: named pointers into one planned block */

/* What one encoder layer keeps for backward. With bf16 storage (ModelActStorage.bf16) the four
 * activations that the backward reads only as inputs of products (qkv, context, attn_out, out) are
 * kept in their _bf16 copies, and their fp32 pointers are buffers shared by all layers: written by
 * the forward, refilled from the copy by the backward (saved_f32). The bf16 products round those
 * inputs to the same bf16 numbers either way, so the results are the same bit for bit. */
typedef struct {
    float *qkv;        /* (N,3H) x Wqkv^T + b: [Q | K | V] */
    float *attn_probs; /* (B,A,T,T) softmax of the scores, before dropout; NULL when recomputed */
    float *context;    /* (N,H) dropout(P) V, heads side by side */
    float *ln1_norm;   /* (N,H) xhat of the attention block's LayerNorm */
    float *ln1_rstd;   /* (N) */
    float *attn_out;   /* (N,H) y1 = LN(x + dropout(context Wo^T + bo)) */
    float *ffn_pre;    /* (N,I) f = y1 W1^T + b1, before the GELU (fp32: GELU's derivative reads it) */
    float *ln2_norm;   /* (N,H) */
    float *ln2_rstd;   /* (N) */
    float *out;        /* (N,H) y2 = LN(y1 + dropout(gelu(f) W2^T + b2)): the next layer's input */
    uint16_t *qkv_bf16, *context_bf16, *attn_out_bf16, *out_bf16; /* bf16 storage, else NULL */
} LayerActs;

typedef struct {
    float *emb_out;  /* (N,H) x0 = dropout(LN(e)), the first layer's input */
    uint16_t *emb_out_bf16; /* (N,H) its bf16 copy with bf16 storage, else NULL */
    float *emb_norm; /* (N,H) xhat of the embedding LayerNorm */
    float *emb_rstd; /* (N) */
    LayerActs *layers; /* (L) */
    /* shared by the layers, forward and backward */
    float *ffn_act;   /* (N,I) gelu(f); backward recomputes it */
    float *proj;      /* (N,H) a projection before its bias, dropout and residual */
    float *d_out;     /* (N,H) gradient w.r.t. the current layer's output, then its input */
    float *d_proj;    /* (N,H) gradient behind a residual branch's dropout */
    float *d_wide;    /* (N,max(I,3H)) gradient w.r.t. gelu(f), later w.r.t. qkv */
    float *d_context; /* (N,H) */
    /* MLM head on the R real predictions */
    float *mlm_in;      /* (R,H) the last layer's rows at the predicted positions */
    float *mlm_dense;   /* (R,H) mlm_in Wt^T, bias added in place */
    float *mlm_act;     /* (R,H) gelu(mlm_dense) */
    float *mlm_norm;    /* (R,H) */
    float *mlm_rstd;    /* (R) */
    float *mlm_out;     /* (R,H) LN(mlm_act), the decoder's input */
    float *logits;      /* (R,V); backward turns them into their gradient */
    float *logits_lse;  /* (R) log sum exp */
    double *mlm_loss;   /* (R) cross-entropy per prediction */
    float *d_mlm_out;   /* (R,H) */
    float *d_mlm_in;    /* (R,H) */
    /* NSP head */
    float *pooled;      /* (B,H) tanh(h_CLS Wp^T + bp) */
    float *nsp_logits;  /* (B,2) */
    float *nsp_probs;   /* (B,2) */
    float *d_pooled;    /* (B,H) gradient w.r.t. the pooler's pre-activation */
    /* the batch, checked and copied */
    int32_t *ids, *types, *mask; /* (N) */
    int64_t *example_index;      /* (B) */
    int32_t *mlm_rows;           /* (R) token row b*T + position of each real prediction */
    int32_t *mlm_slots;          /* (R) its slot b*P + p */
    int32_t *mlm_labels;         /* (R) */
    int32_t *mlm_correct;        /* (R) */
    int32_t *nsp_labels;         /* (B) */
    KernScratch scratch;
} Activations;

struct Model {
    ModelConfig mc; /* vocab_size is V */
    int V;
    ParamTable table;
    float *params, *grads;
    GlobalParams gp;
    LayerParams *lp;               /* (L) */
    bool qkv_w_fused, qkv_b_fused; /* query, key, value weights / biases contiguous */
    GemmEngine engine;             /* training.precision resolved on this CPU */
    ModelActStorage storage;       /* how the forward keeps what the backward reads */
    /* the plan */
    int plan_B, plan_T, plan_P;
    unsigned char *act_mem;
    bool copies_reserved; /* the bf16 engine's operand copies sized for the plan (model_forward) */
    Activations act;      /* points into act_mem */
    LayerActs *layer_act; /* (L), act.layers */
    /* the last forward */
    bool have_forward;
    int B, T, P, R;
    int R_rows; /* R rounded up for the MLM head's products (mlm_padded_rows) */
    double mlm_den, nsp_den;
    bool train;
    uint64_t seed;
    long step;
    ModelGradReady grad_ready; /* model_set_grad_ready */
    void *grad_ready_ctx;
};

/* ---------------------------------------------------------------------------------------------
 * create, accessors, init */

Model *model_create(const Config *cfg, int vocab_size, BpError *err) {
    const ModelConfig *mc = &cfg->model;
    int V = vocab_size > 0 ? vocab_size : mc->vocab_size;
    Model *m = bp_calloc(1, sizeof *m, "model", err);
    if (!m) return NULL;
    m->mc = *mc;
    m->mc.vocab_size = V;
    m->V = V;
    if (gemm_engine_resolve(cfg->training.precision, gemm_cpu_features(), &m->engine, err)) goto fail;
    m->storage = (ModelActStorage){m->engine.bf16, cfg->training.recompute_attention};
    if (mc->layers >= 1) {
        m->lp = bp_calloc((size_t)mc->layers, sizeof *m->lp, "layer offsets", err);
        m->layer_act = bp_calloc((size_t)mc->layers, sizeof *m->layer_act, "layer activations", err);
        if (!m->lp || !m->layer_act) goto fail;
    }
    if (build_tensors(&m->mc, V, &m->table, &m->gp, m->lp, err)) goto fail;
    params_apply_exclusions(&m->table, (const char(*)[64])cfg->optimizer.exclude_from_weight_decay,
                            cfg->optimizer.n_exclude_from_weight_decay,
                            (const char(*)[64])cfg->optimizer.exclude_from_layer_adaptation,
                            cfg->optimizer.n_exclude_from_layer_adaptation);
    size_t H = (size_t)mc->hidden;
    m->qkv_w_fused = m->qkv_b_fused = true;
    for (int l = 0; l < mc->layers; l++) {
        const LayerParams *p = &m->lp[l];
        if (p->k_w != p->q_w + H * H || p->v_w != p->q_w + 2 * H * H) m->qkv_w_fused = false;
        if (p->k_b != p->q_b + H || p->v_b != p->q_b + 2 * H) m->qkv_b_fused = false;
    }
    m->params = bp_aligned_calloc(m->table.total * sizeof(float), "model parameters", err);
    if (!m->params) goto fail;
    m->grads = bp_aligned_calloc(m->table.total * sizeof(float), "model gradients", err);
    if (!m->grads) goto fail;
    return m;
fail:
    model_free(m);
    return NULL;
}

void model_free(Model *m) {
    if (!m) return;
    param_table_free(&m->table);
    free(m->lp);
    free(m->layer_act);
    free(m->params);
    free(m->grads);
    free(m->act_mem);
    free(m);
}

const ParamTable *model_table(const Model *m) { return &m->table; }

int model_check_finite(const ParamTable *t, const float *buf, const char *source, BpError *err) {
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->params[i];
        const float *v = buf + p->offset;
        /* x * 0 is 0 for every finite x and NaN for NaN and +-Inf: one vectorised pass per tensor,
         * and the element-wise search only for a tensor that has a bad value */
        float probe = 0.0f;
#pragma omp simd reduction(+ : probe)
        for (size_t j = 0; j < p->numel; j++) probe += v[j] * 0.0f;
        if (probe == 0.0f) continue;
        size_t j = 0;
        while (j < p->numel && isfinite(v[j])) j++;
        char at[48];
        if (p->ndim == 2) snprintf(at, sizeof at, "[%zu, %zu]", j / p->shape[1], j % p->shape[1]);
        else snprintf(at, sizeof at, "[%zu]", j);
        return bp_fail_kind(err, BP_ERR_CORRUPT, "%s: tensor '%s' element %s is %s (weights must be finite)",
                            source, p->name, at, isnan(v[j]) ? "nan" : v[j] > 0 ? "inf" : "-inf");
    }
    return 0;
}
const ModelConfig *model_config(const Model *m) { return &m->mc; }
void model_set_bf16_engine(Model *m, GemmBf16Kind kind) {
    m->engine.bf16_kind = kind;
    m->copies_reserved = false;
    m->engine.isa = gemm_bf16_kind_isa(kind);
}

void model_set_fp32_onednn(Model *m, bool onednn) {
    m->engine.fp32_onednn = onednn;
    m->engine.isa = gemm_fp32_isa(onednn);
}

const GemmEngine *model_engine(const Model *m) { return &m->engine; }
float *model_params(const Model *m) { return m->params; }
float *model_grads(const Model *m) { return m->grads; }

float *model_param(Model *m, const char *name) {
    int i = params_find(&m->table, name);
    return i < 0 ? NULL : m->params + m->table.params[i].offset;
}

ModelTensorKind model_tensor_kind(const Model *m, int i) {
    BP_ASSERT(i >= 0 && i < m->table.n, "tensor %d of %d", i, m->table.n);
    int layer;
    return tensor_spec(m->mc.layers, i, &layer)->kind;
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
        switch (model_tensor_kind(m, i)) {
        case MODEL_TENSOR_GAIN:
            for (size_t k = 0; k < p->numel; k++) w[k] = 1.0f;
            break;
        case MODEL_TENSOR_WEIGHT: {
            RngStream s = rng_stream(seed, RNG_INIT, (uint64_t)i);
            for (size_t k = 0; k < p->numel; k++) {
                double z;
                do z = rng_next_normal(&s);
                while (fabs(z) > 2.0);
                w[k] = (float)(z * std);
            }
            break;
        }
        case MODEL_TENSOR_BIAS:
            memset(w, 0, p->numel * sizeof(float));
            break;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * the activation plan */

/* The MLM head's products run on R rounded up to a multiple of this many rows (zero rows below the
 * real ones, whose gradients are zero): R changes with every batch, and each new product shape
 * costs oneDNN a new primitive (0.7-2 ms to create on the Zen 5; a training run made about five
 * a step at bert-tiny scale, ~4% of the step). Rounded, a run meets a few shapes only. */
#define MLM_ROW_QUANTUM 16
static int mlm_padded_rows(int R) { return (R + MLM_ROW_QUANTUM - 1) / MLM_ROW_QUANTUM * MLM_ROW_QUANTUM; }
int model_mlm_product_rows(int R) { return mlm_padded_rows(R); }

typedef struct {
    unsigned char *base; /* NULL: count bytes only */
    size_t used;
} Carver;

/* the next 64-byte aligned piece of the block */
static void *carve(Carver *c, size_t bytes) {
    size_t at = (c->used + 63) / 64 * 64;
    c->used = at + bytes;
    return c->base ? c->base + at : NULL;
}
#define CARVE(c, type, count) ((type *)carve((c), (size_t)(count) * sizeof(type)))

/* shared: with bf16 storage, the fp32 buffers every layer's qkv, context, attn_out and out point to;
 * last: the last layer, whose output is no layer's input (the heads read the fp32 one): no copy */
static void carve_layer(Carver *c, LayerActs *la, const LayerActs *shared, ModelActStorage st, bool last,
                        size_t N, size_t H, size_t I, size_t BATT) {
    memset(la, 0, sizeof *la);
    if (st.bf16) {
        la->qkv = shared->qkv;
        la->context = shared->context;
        la->attn_out = shared->attn_out;
        la->out = shared->out;
        la->qkv_bf16 = CARVE(c, uint16_t, N * 3 * H);
        la->context_bf16 = CARVE(c, uint16_t, N * H);
        la->attn_out_bf16 = CARVE(c, uint16_t, N * H);
        la->out_bf16 = last ? NULL : CARVE(c, uint16_t, N * H);
    } else {
        la->qkv = CARVE(c, float, N * 3 * H);
        la->context = CARVE(c, float, N * H);
        la->attn_out = CARVE(c, float, N * H);
        la->out = CARVE(c, float, N * H);
    }
    la->attn_probs = st.recompute_attention ? NULL : CARVE(c, float, BATT);
    la->ln1_norm = CARVE(c, float, N * H);
    la->ln1_rstd = CARVE(c, float, N);
    la->ffn_pre = CARVE(c, float, N * I);
    la->ln2_norm = CARVE(c, float, N * H);
    la->ln2_rstd = CARVE(c, float, N);
}

/* Lays out every activation of a (B, T, P) plan in one block at base (NULL: sizes only; layers
 * NULL: the per-layer pointers are not kept) and returns its bytes. */
static size_t plan_activations(const ModelConfig *mc, int V, int B, int T, int P, ModelActStorage st,
                               int nthreads, unsigned char *base, Activations *a, LayerActs *layers) {
    size_t H = (size_t)mc->hidden, I = (size_t)mc->intermediate, A = (size_t)mc->heads;
    size_t N = (size_t)B * T, M = mlm_padded_rows(B * P), wide = I > 3 * H ? I : 3 * H;
    Carver c = {base, 0};
    memset(a, 0, sizeof *a);
    LayerActs shared = {0};
    if (st.bf16) {
        shared.qkv = CARVE(&c, float, N * 3 * H);
        shared.context = CARVE(&c, float, N * H);
        shared.attn_out = CARVE(&c, float, N * H);
        shared.out = CARVE(&c, float, N * H);
        a->emb_out = shared.out; /* each layer's input is the previous one's output */
        a->emb_out_bf16 = CARVE(&c, uint16_t, N * H);
    } else {
        a->emb_out = CARVE(&c, float, N * H);
    }
    a->emb_norm = CARVE(&c, float, N * H);
    a->emb_rstd = CARVE(&c, float, N);
    a->layers = layers;
    for (int l = 0; l < mc->layers; l++) {
        LayerActs unkept;
        carve_layer(&c, layers ? &layers[l] : &unkept, &shared, st, l == mc->layers - 1, N, H, I,
                    (size_t)B * A * T * T);
    }
    a->ffn_act = CARVE(&c, float, N * I);
    a->proj = CARVE(&c, float, N * H);
    a->d_out = CARVE(&c, float, N * H);
    a->d_proj = CARVE(&c, float, N * H);
    a->d_wide = CARVE(&c, float, N * wide);
    a->d_context = CARVE(&c, float, N * H);
    a->mlm_in = CARVE(&c, float, M * H);
    a->mlm_dense = CARVE(&c, float, M * H);
    a->mlm_act = CARVE(&c, float, M * H);
    a->mlm_norm = CARVE(&c, float, M * H);
    a->mlm_rstd = CARVE(&c, float, M);
    a->mlm_out = CARVE(&c, float, M * H);
    a->logits = CARVE(&c, float, M * (size_t)V);
    a->logits_lse = CARVE(&c, float, M);
    a->mlm_loss = CARVE(&c, double, M);
    a->d_mlm_out = CARVE(&c, float, M * H);
    a->d_mlm_in = CARVE(&c, float, M * H);
    a->pooled = CARVE(&c, float, (size_t)B * H);
    a->nsp_logits = CARVE(&c, float, (size_t)B * 2);
    a->nsp_probs = CARVE(&c, float, (size_t)B * 2);
    a->d_pooled = CARVE(&c, float, (size_t)B * H);
    a->ids = CARVE(&c, int32_t, N);
    a->types = CARVE(&c, int32_t, N);
    a->mask = CARVE(&c, int32_t, N);
    a->example_index = CARVE(&c, int64_t, B);
    a->mlm_rows = CARVE(&c, int32_t, M);
    a->mlm_slots = CARVE(&c, int32_t, M);
    a->mlm_labels = CARVE(&c, int32_t, M);
    a->mlm_correct = CARVE(&c, int32_t, M);
    a->nsp_labels = CARVE(&c, int32_t, B);
    size_t per_thread = kern_scratch_floats(T, (int)(wide > H ? wide : H));
    a->scratch = (KernScratch){CARVE(&c, float, per_thread * (size_t)nthreads), per_thread, nthreads};
    return (c.used + 63) / 64 * 64;
}

/* Elements of the largest bf16 operand copies (A and B) oneDNN keeps per thread for the products
 * of a (B, T, P) step: the longest block kern_gemm cuts each product into (the attention products,
 * one call per head, uncut), at most gemm_dnnl's chunk of K. */
static void dnnl_copy_bound(const ModelConfig *mc, int V, int B, int T, int P, size_t *a, size_t *b) {
    ModelGemmShape g[MODEL_MAX_GEMM_SHAPES];
    int n = model_gemm_shapes(mc, V, B, T, mlm_padded_rows(B * P), g);
    *a = *b = 0;
    for (int i = 0; i < n; i++) {
        int bm = g[i].M, bn = g[i].N;
        if (g[i].count <= mc->layers) kern_gemm_max_block(g[i].M, g[i].N, g[i].K, &bm, &bn);
        size_t ea, eb;
        gemm_dnnl_copy_elems(bm, bn, g[i].K, &ea, &eb);
        if (ea > *a) *a = ea;
        if (eb > *b) *b = eb;
    }
}

size_t model_activation_bytes(const ModelConfig *mc, int vocab_size, int B, int T, int P, ModelActStorage st) {
    Activations unkept;
    int V = vocab_size > 0 ? vocab_size : mc->vocab_size;
    return plan_activations(mc, V, B, T, P, st, kern_threads(), NULL, &unkept, NULL);
}

size_t model_gemm_copy_bytes(const ModelConfig *mc, int vocab_size, int B, int T, int P) {
    size_t a, b;
    dnnl_copy_bound(mc, vocab_size > 0 ? vocab_size : mc->vocab_size, B, T, P, &a, &b);
    return (size_t)kern_threads() * (a + b) * sizeof(uint16_t);
}

ModelActStorage model_act_storage(const Config *cfg) {
    GemmEngine e;
    bool bf16 = gemm_engine_resolve(cfg->training.precision, gemm_cpu_features(), &e, NULL) == 0 && e.bf16;
    return (ModelActStorage){bf16, cfg->training.recompute_attention};
}

ModelActStorage model_get_act_storage(const Model *m) { return m->storage; }

void model_set_act_storage(Model *m, ModelActStorage st) {
    BP_ASSERT(!st.bf16 || m->engine.bf16, "bf16 activation storage needs bf16 products (it is exact only there)");
    if (st.bf16 == m->storage.bf16 && st.recompute_attention == m->storage.recompute_attention) return;
    m->storage = st;
    model_release_activations(m);
}

int model_plan(Model *m, int B, int T, int P, BpError *err) {
    if (B < 1 || T < 1 || P < 0) return bp_fail(err, "model_plan: invalid sizes B=%d T=%d P=%d", B, T, P);
    int nt = kern_threads();
    if (m->act_mem && B <= m->plan_B && T <= m->plan_T && P <= m->plan_P && m->act.scratch.nthreads == nt)
        return 0;
    int nB = B > m->plan_B ? B : m->plan_B, nT = T > m->plan_T ? T : m->plan_T, nP = P > m->plan_P ? P : m->plan_P;
    Activations sizes;
    size_t bytes = plan_activations(&m->mc, m->V, nB, nT, nP, m->storage, nt, NULL, &sizes, NULL);
    unsigned char *mem = bp_aligned_calloc(bytes, "activations", err);
    if (!mem) {
        bp_err_prefix(err, "planning activations for B=%d T=%d P=%d (%.1f MiB)", nB, nT, nP,
                      (double)bytes / 1048576.0);
        return -1;
    }
    free(m->act_mem);
    m->act_mem = mem;
    plan_activations(&m->mc, m->V, nB, nT, nP, m->storage, nt, mem, &m->act, m->layer_act);
    m->plan_B = nB;
    m->plan_T = nT;
    m->plan_P = nP;
    m->have_forward = false;
    m->copies_reserved = false;
    return 0;
}

void model_release_activations(Model *m) {
    free(m->act_mem);
    m->act_mem = NULL;
    memset(&m->act, 0, sizeof m->act);
    m->plan_B = m->plan_T = m->plan_P = 0;
    m->have_forward = false;
}

/* ---------------------------------------------------------------------------------------------
 * forward */

/* dropout sites: the key of each mask, with the step and the example */
enum { SITE_EMBEDDINGS = 0 };
static int site_attn_probs(int l) { return 1 + 3 * l; }
static int site_attn_out(int l) { return 2 + 3 * l; }
static int site_ffn_out(int l) { return 3 + 3 * l; }

static KernDropout site_drop(const Model *m, double p, int site) {
    return kern_dropout_make(m->train ? p : 0.0, m->seed, m->step, site, m->act.example_index, (size_t)m->T);
}

/* layer l's input in the forward: the embeddings' output, or the previous layer's */
static const float *layer_input(const Model *m, int l) {
    return l == 0 ? m->act.emb_out : m->act.layers[l - 1].out;
}

/* the forward keeps a bf16 copy of an activation when the storage is bf16 (copy non-NULL) */
static void keep_bf16(uint16_t *copy, const float *x, size_t n) {
    if (copy) kern_bf16_save(copy, x, n);
}

/* A kept activation as the backward reads it: its bf16 copy widened into its fp32 buffer (exact,
 * and what a bf16 product would have rounded the fp32 value to), or the fp32 activation itself. */
static const float *kept_f32(float *x, const uint16_t *copy, size_t n) {
    if (copy) kern_bf16_load(x, copy, n);
    return x;
}

/* layer l's input in the backward */
static const float *layer_input_kept(const Model *m, int l) {
    const Activations *a = &m->act;
    size_t n = (size_t)m->B * m->T * m->mc.hidden;
    if (l == 0) return kept_f32(a->emb_out, a->emb_out_bf16, n);
    return kept_f32(a->layers[l - 1].out, a->layers[l - 1].out_bf16, n);
}

/* checks the batch against the model and copies it into the plan; the real predictions go to
 * mlm_rows / mlm_slots / mlm_labels and set m->R */
static int copy_batch(Model *m, const Batch *b, BpError *err) {
    int B = b->B, T = b->T, P = b->P, V = m->V;
    size_t N = (size_t)B * T;
    Activations *a = &m->act;
    for (size_t n = 0; n < N; n++) {
        if (b->input_ids[n] < 0 || b->input_ids[n] >= V)
            return bp_fail(err, "batch: input_ids[%zu][%zu] = %d outside the vocabulary [0, %d)", n / T,
                           n % T, b->input_ids[n], V);
        if (b->token_type_ids[n] < 0 || b->token_type_ids[n] >= m->mc.type_vocab_size)
            return bp_fail(err, "batch: token_type_ids[%zu][%zu] = %d outside [0, %d)", n / T, n % T,
                           b->token_type_ids[n], m->mc.type_vocab_size);
        a->ids[n] = b->input_ids[n];
        a->types[n] = b->token_type_ids[n];
        a->mask[n] = b->attention_mask[n] != 0;
    }
    for (int i = 0; i < B; i++) {
        a->example_index[i] = b->example_index ? b->example_index[i] : i;
        if (b->next_sentence_labels[i] < 0 || b->next_sentence_labels[i] > 1)
            return bp_fail(err, "batch: next_sentence_labels[%d] = %d is not 0 or 1", i,
                           b->next_sentence_labels[i]);
        a->nsp_labels[i] = b->next_sentence_labels[i];
    }
    int R = 0;
    for (int i = 0; i < B * P; i++) {
        if (!b->masked_lm_weights[i]) continue;
        int pos = b->masked_lm_positions[i], lab = b->masked_lm_ids[i];
        if (pos < 0 || pos >= T)
            return bp_fail(err, "batch: masked_lm_positions[%d][%d] = %d outside [0, %d)", i / P, i % P, pos, T);
        if (lab < 0 || lab >= V)
            return bp_fail(err, "batch: masked_lm_ids[%d][%d] = %d outside the vocabulary [0, %d)", i / P,
                           i % P, lab, V);
        a->mlm_rows[R] = (i / P) * T + pos;
        a->mlm_slots[R] = i;
        a->mlm_labels[R] = lab;
        R++;
    }
    m->R = R;
    m->R_rows = mlm_padded_rows(R);
    return 0;
}

/* qkv (N,3H) = x (N,H) Wqkv^T + b: the bias rows first, then the product added with beta 1 */
static void qkv_forward(const Model *m, const LayerParams *p, const float *x, float *qkv, int N) {
    const float *W = m->params;
    int H = m->mc.hidden;
    const size_t w[3] = {p->q_w, p->k_w, p->v_w}, b[3] = {p->q_b, p->k_b, p->v_b};
    if (m->qkv_b_fused) {
        kern_bias_fill(qkv, 3 * H, W + p->q_b, N, 3 * H);
    } else {
        for (int k = 0; k < 3; k++) kern_bias_fill(qkv + (size_t)k * H, 3 * H, W + b[k], N, H);
    }
    if (m->qkv_w_fused) {
        /* Wqkv (3H,H) = [Wq; Wk; Wv] */
        kern_gemm(false, true, N, 3 * H, H, 1.0f, x, H, W + p->q_w, H, 1.0f, qkv, 3 * H);
    } else {
        for (int k = 0; k < 3; k++)
            kern_gemm(false, true, N, H, H, 1.0f, x, H, W + w[k], H, 1.0f, qkv + (size_t)k * H, 3 * H);
    }
}

static void embeddings_forward(Model *m) {
    const float *W = m->params;
    const GlobalParams *g = &m->gp;
    Activations *a = &m->act;
    KernScratch s = a->scratch;
    KernDropout drop = site_drop(m, m->mc.dropout, SITE_EMBEDDINGS);
    kern_embed_forward(a->emb_out, a->emb_norm, a->emb_rstd, a->ids, a->types, W + g->word_emb, W + g->pos_emb,
                       W + g->type_emb, W + g->emb_ln_g, W + g->emb_ln_b, m->B, m->T, m->mc.hidden,
                       (float)m->mc.layer_norm_eps, &drop, &s);
    keep_bf16(a->emb_out_bf16, a->emb_out, (size_t)m->B * m->T * m->mc.hidden);
}

static void layer_forward(Model *m, int l) {
    const ModelConfig *mc = &m->mc;
    const LayerParams *p = &m->lp[l];
    const float *W = m->params;
    LayerActs *la = &m->act.layers[l];
    const float *x = layer_input(m, l);
    float *Z = m->act.proj, *G = m->act.ffn_act;
    int N = m->B * m->T, H = mc->hidden, I = mc->intermediate;
    float eps = (float)mc->layer_norm_eps;
    KernScratch s = m->act.scratch;

    size_t NH = (size_t)N * H;
    qkv_forward(m, p, x, la->qkv, N);
    keep_bf16(la->qkv_bf16, la->qkv, 3 * NH);
    KernDropout d_att = site_drop(m, mc->attention_dropout, site_attn_probs(l));
    kern_attention_forward(la->context, la->attn_probs, la->qkv, m->act.mask, m->B, m->T, H, mc->heads, &d_att,
                           &s);
    keep_bf16(la->context_bf16, la->context, NH);
    /* Z (N,H) = context Wo^T; y1 = LN(x + dropout(Z + bo)) */
    kern_gemm(false, true, N, H, H, 1.0f, la->context, H, W + p->attn_out_w, H, 0.0f, Z, H);
    KernDropout d_ao = site_drop(m, mc->dropout, site_attn_out(l));
    kern_residual_layernorm_forward(la->attn_out, la->ln1_norm, la->ln1_rstd, x, Z, W + p->attn_out_b,
                                    W + p->ln1_g, W + p->ln1_b, N, H, eps, &d_ao, &s);
    keep_bf16(la->attn_out_bf16, la->attn_out, NH);
    /* f (N,I) = y1 W1^T + b1 (kept; bias rows, then the product with beta 1); G = gelu(f) */
    kern_bias_fill(la->ffn_pre, I, W + p->ffn1_b, N, I);
    kern_gemm(false, true, N, I, H, 1.0f, la->attn_out, H, W + p->ffn1_w, H, 1.0f, la->ffn_pre, I);
    kern_gelu_forward(G, la->ffn_pre, N, I, mc->gelu);
    /* Z (N,H) = G W2^T; y2 = LN(y1 + dropout(Z + b2)) */
    kern_gemm(false, true, N, H, I, 1.0f, G, I, W + p->ffn2_w, I, 0.0f, Z, H);
    KernDropout d_fo = site_drop(m, mc->dropout, site_ffn_out(l));
    /* with bf16 storage la->out and x are one buffer: x is read last by the first LayerNorm */
    kern_residual_layernorm_forward(la->out, la->ln2_norm, la->ln2_rstd, la->attn_out, Z, W + p->ffn2_b,
                                    W + p->ln2_g, W + p->ln2_b, N, H, eps, &d_fo, &s);
    keep_bf16(la->out_bf16, la->out, NH);
}

/* The MLM head on the R real predictions: sum of their cross-entropies and the correct count. Its
 * rows are padded to Rp = R_rows with zero inputs, which run through the head like the others
 * (finite values) and are left out of the loss; the backward gives them zero gradients. */
static void mlm_head_forward(Model *m, double *loss_sum, long *correct) {
    const float *W = m->params;
    const GlobalParams *g = &m->gp;
    Activations *a = &m->act;
    int H = m->mc.hidden, V = m->V, R = m->R, Rp = m->R_rows;
    KernScratch s = a->scratch;
    *loss_sum = 0.0;
    *correct = 0;
    if (R == 0) return;
    kern_gather_rows(a->mlm_in, a->layers[m->mc.layers - 1].out, a->mlm_rows, R, H);
    memset(a->mlm_in + (size_t)R * H, 0, sizeof(float) * (size_t)(Rp - R) * H);
    kern_gemm(false, true, Rp, H, H, 1.0f, a->mlm_in, H, W + g->mlm_dense_w, H, 0.0f, a->mlm_dense, H);
    kern_bias_gelu_forward(a->mlm_dense, a->mlm_act, W + g->mlm_dense_b, Rp, H, m->mc.gelu);
    kern_residual_layernorm_forward(a->mlm_out, a->mlm_norm, a->mlm_rstd, NULL, a->mlm_act, NULL, W + g->mlm_ln_g,
                                    W + g->mlm_ln_b, Rp, H, (float)m->mc.layer_norm_eps, NULL, &s);
    /* logits (Rp,V) = v E^T + bias, E the word embeddings (V,H); the loss on the R real rows */
    kern_gemm(false, true, Rp, V, H, 1.0f, a->mlm_out, H, W + g->word_emb, H, 0.0f, a->logits, V);
    kern_xent_forward(a->logits, a->logits_lse, a->mlm_loss, a->mlm_correct, W + g->decoder_b, a->mlm_labels, R,
                      V);
    for (int r = 0; r < R; r++) {
        *loss_sum += a->mlm_loss[r];
        *correct += a->mlm_correct[r];
    }
}

/* the NSP head: pooled (B,H) = tanh(h[b, 0] Wp^T + bp) (the [CLS] rows are every T-th row), then
 * the 2-way classifier by hand; sum of the cross-entropies and the correct count */
static void nsp_head_forward(Model *m, double *loss_sum, long *correct) {
    const float *W = m->params;
    const GlobalParams *g = &m->gp;
    Activations *a = &m->act;
    int B = m->B, T = m->T, H = m->mc.hidden;
    kern_gemm(false, true, B, H, H, 1.0f, a->layers[m->mc.layers - 1].out, T * H, W + g->pool_w, H, 0.0f,
              a->pooled, H);
    *loss_sum = 0.0;
    *correct = 0;
    for (int i = 0; i < B; i++) {
        float *pr = a->pooled + (size_t)i * H;
        for (int j = 0; j < H; j++) pr[j] = tanhf(pr[j] + W[g->pool_b + j]);
        double z[2];
        for (int c = 0; c < 2; c++) {
            double acc = W[g->nsp_b + c];
            const float *wr = W + g->nsp_w + (size_t)c * H;
            for (int j = 0; j < H; j++) acc += (double)pr[j] * wr[j];
            z[c] = acc;
            a->nsp_logits[2 * i + c] = (float)acc;
        }
        double mx = z[0] > z[1] ? z[0] : z[1];
        double lse = mx + log(exp(z[0] - mx) + exp(z[1] - mx));
        a->nsp_probs[2 * i] = (float)exp(z[0] - lse);
        a->nsp_probs[2 * i + 1] = (float)exp(z[1] - lse);
        *loss_sum += lse - z[a->nsp_labels[i]];
        *correct += (z[1] > z[0] ? 1 : 0) == a->nsp_labels[i];
    }
}

int model_forward(Model *m, const Batch *b, const ForwardArgs *fa, ModelStats *st, BpError *err) {
    int B = b->B, T = b->T, P = b->P;
    if (B < 1 || T < 1 || P < 0) return bp_fail(err, "model_forward: invalid batch sizes B=%d T=%d P=%d", B, T, P);
    if (T > m->mc.max_position)
        return bp_fail(err, "sequence length %d exceeds model.max_position %d", T, m->mc.max_position);
    if (model_plan(m, B, T, P, err)) return -1;
    kern_set_bf16(m->engine.bf16);
    kern_set_bf16_engine(m->engine.bf16_kind);
    kern_set_fp32_onednn(m->engine.fp32_onednn);
    if (!m->copies_reserved) { /* sized once per plan: training then allocates nothing more */
        size_t ca, cb;
        dnnl_copy_bound(&m->mc, m->V, m->plan_B, m->plan_T, m->plan_P, &ca, &cb);
        kern_gemm_reserve(ca, cb);
        m->copies_reserved = true;
    }
    BP_ASSERT(B <= m->plan_B && T <= m->plan_T && P <= m->plan_P, "batch (%d, %d, %d) outside the plan", B, T, P);
    m->have_forward = false;
    m->B = B;
    m->T = T;
    m->P = P;
    if (copy_batch(m, b, err)) return -1;
    m->train = fa->train;
    m->seed = fa->seed;
    m->step = fa->step;
    m->mlm_den = fa->mlm_denominator > 0 ? fa->mlm_denominator : (m->R > 0 ? m->R : 1);
    m->nsp_den = fa->nsp_denominator > 0 ? fa->nsp_denominator : B;

    embeddings_forward(m);
    for (int l = 0; l < m->mc.layers; l++) layer_forward(m, l);
    double mlm_sum, nsp_sum;
    long mlm_correct, nsp_correct;
    mlm_head_forward(m, &mlm_sum, &mlm_correct);
    nsp_head_forward(m, &nsp_sum, &nsp_correct);

    memset(st, 0, sizeof *st);
    st->mlm_loss = mlm_sum / m->mlm_den;
    st->nsp_loss = nsp_sum / m->nsp_den;
    st->loss = st->mlm_loss + st->nsp_loss;
    st->mlm_correct = mlm_correct;
    st->mlm_count = m->R;
    st->nsp_correct = nsp_correct;
    st->nsp_count = B;
    m->have_forward = true;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * backward (math per kernel in kernels.c and docs/model.md). d_out holds the gradient w.r.t. the
 * last layer's output as the heads add into it, then each layer turns it into the gradient w.r.t.
 * its own input. */

static void mlm_head_backward(Model *m) {
    const float *W = m->params;
    float *gW = m->grads;
    const GlobalParams *g = &m->gp;
    Activations *a = &m->act;
    int H = m->mc.hidden, V = m->V, R = m->R, Rp = m->R_rows;
    KernScratch s = a->scratch;
    if (R == 0) return;
    float *dlog = a->logits, *dv = a->d_mlm_out;
    /* dlogits = (softmax - onehot) / mlm_den; dbias += colsum; the padding rows' dlogits are 0 */
    kern_xent_backward(dlog, a->logits_lse, a->mlm_labels, (float)(1.0 / m->mlm_den), gW + g->decoder_b, R, V);
    memset(dlog + (size_t)R * V, 0, sizeof(float) * (size_t)(Rp - R) * V);
    /* tied decoder: dE (V,H) += dlogits^T v ; dv (Rp,H) = dlogits E (independent: together). The
     * padding rows add 0 * v to dE, and their dv rows are 0: the LayerNorm and GELU below leave
     * them so (they run on the R real rows), and so do the products after them. */
    KernGemm dec[2] = {{true, false, V, H, Rp, 1.0f, dlog, V, a->mlm_out, H, 1.0f, gW + g->word_emb, H},
                       {false, false, Rp, H, V, 1.0f, dlog, V, W + g->word_emb, H, 0.0f, dv, H}};
    kern_gemm_many(dec, 2);
    /* LN (in place: dv becomes du), GELU (du becomes dt1) */
    kern_layernorm_backward(dv, NULL, dv, a->mlm_norm, a->mlm_rstd, W + g->mlm_ln_g, gW + g->mlm_ln_g,
                            gW + g->mlm_ln_b, R, H, NULL, NULL, &s);
    kern_gelu_backward(dv, NULL, a->mlm_dense, R, H, m->mc.gelu);
    /* dWt += dt1^T hm ; dbt += colsum ; dhm = dt1 Wt ; scatter into the token rows */
    KernGemm tr[2] = {{true, false, H, H, Rp, 1.0f, dv, H, a->mlm_in, H, 1.0f, gW + g->mlm_dense_w, H},
                      {false, false, Rp, H, H, 1.0f, dv, H, W + g->mlm_dense_w, H, 0.0f, a->d_mlm_in, H}};
    kern_gemm_many(tr, 2);
    kern_colsum_add(gW + g->mlm_dense_b, dv, H, R, H);
    kern_scatter_add_rows(a->d_out, a->d_mlm_in, a->mlm_rows, R, H);
}

/* NSP: dz (B,2) = (softmax - onehot) / nsp_den; dWn += dz^T pooled; dpooled = dz Wn;
 * through tanh: dpre = dpooled (1 - pooled^2) */
static void nsp_head_backward(Model *m) {
    const float *W = m->params;
    float *gW = m->grads;
    const GlobalParams *g = &m->gp;
    Activations *a = &m->act;
    int B = m->B, T = m->T, H = m->mc.hidden;
    float *dpre = a->d_pooled;
    float inv = (float)(1.0 / m->nsp_den);
    for (int i = 0; i < B; i++) {
        const float *pr = a->pooled + (size_t)i * H;
        float dz[2];
        for (int c = 0; c < 2; c++) dz[c] = (a->nsp_probs[2 * i + c] - (a->nsp_labels[i] == c ? 1.0f : 0.0f)) * inv;
        for (int c = 0; c < 2; c++) {
            float *gw = gW + g->nsp_w + (size_t)c * H;
            for (int j = 0; j < H; j++) gw[j] += dz[c] * pr[j];
            gW[g->nsp_b + c] += dz[c];
        }
        const float *w0 = W + g->nsp_w, *w1 = W + g->nsp_w + H;
        float *dp = dpre + (size_t)i * H;
        for (int j = 0; j < H; j++) dp[j] = (dz[0] * w0[j] + dz[1] * w1[j]) * (1.0f - pr[j] * pr[j]);
    }
    /* dWp += dpre^T h_cls ; dbp += colsum ; dh_cls += dpre Wp (rows b*T of d_out) */
    const float *hout = a->layers[m->mc.layers - 1].out;
    KernGemm pl[2] = {{true, false, H, H, B, 1.0f, dpre, H, hout, T * H, 1.0f, gW + g->pool_w, H},
                      {false, false, B, H, H, 1.0f, dpre, H, W + g->pool_w, H, 1.0f, a->d_out, T * H}};
    kern_gemm_many(pl, 2);
    kern_colsum_add(gW + g->pool_b, dpre, H, B, H);
}

/* The feed-forward block of layer l, y2 = LN(y1 + dropout(gelu(y1 W1^T + b1) W2^T + b2)): d_out
 * goes from d y2 to d y1 (the residual's share and the block's share added). */
static void ffn_backward(Model *m, int l) {
    const ModelConfig *mc = &m->mc;
    const LayerParams *p = &m->lp[l];
    const LayerActs *la = &m->act.layers[l];
    const float *W = m->params;
    float *gW = m->grads;
    Activations *a = &m->act;
    float *DR = a->d_out, *dz = a->d_proj, *DG = a->d_wide, *G = a->ffn_act;
    int N = m->B * m->T, H = mc->hidden, I = mc->intermediate;
    KernScratch s = a->scratch;
    /* y2 = LN(y1 + dropout(z2)): DR becomes d r2 (which is also d y1 through the residual),
     * dz = dz2 = dropout(d r2) (a copy without dropout: DR is written below while the dW2 product
     * still reads dz2) */
    KernDropout d_fo = site_drop(m, mc->dropout, site_ffn_out(l));
    kern_layernorm_backward(DR, dz, DR, la->ln2_norm, la->ln2_rstd, W + p->ln2_g, gW + p->ln2_g, gW + p->ln2_b, N,
                            H, NULL, &d_fo, &s);
    /* z2 = G W2^T + b2: dG (N,I) = dz2 W2; then dG *= gelu'(f) (G recomputed alongside) */
    kern_gemm(false, false, N, I, H, 1.0f, dz, H, W + p->ffn2_w, I, 0.0f, DG, I);
    kern_gelu_backward(DG, G, la->ffn_pre, N, I, mc->gelu);
    /* dW2 += dz2^T G ; f = y1 W1^T + b1: dW1 += df^T y1 ; d y1 += df W1 (three independent
     * products, together); db2 += colsum dz2 ; db1 += colsum df */
    const float *y1 = kept_f32(la->attn_out, la->attn_out_bf16, (size_t)N * H);
    KernGemm ffn[3] = {{true, false, H, I, N, 1.0f, dz, H, G, I, 1.0f, gW + p->ffn2_w, I},
                       {true, false, I, H, N, 1.0f, DG, I, y1, H, 1.0f, gW + p->ffn1_w, H},
                       {false, false, N, H, I, 1.0f, DG, I, W + p->ffn1_w, H, 1.0f, DR, H}};
    kern_gemm_many(ffn, 3);
    kern_colsum_add(gW + p->ffn2_b, dz, H, N, H);
    kern_colsum_add(gW + p->ffn1_b, DG, I, N, I);
}

/* qkv = x Wqkv^T + b: dWqkv (3H,H) += dqkv^T x ; db += colsum ; dx += dqkv Wqkv */
static void qkv_backward(Model *m, const LayerParams *p, const float *x, const float *dqkv, int N) {
    const float *W = m->params;
    float *gW = m->grads, *DR = m->act.d_out;
    int H = m->mc.hidden;
    const size_t w[3] = {p->q_w, p->k_w, p->v_w}, b[3] = {p->q_b, p->k_b, p->v_b};
    if (m->qkv_w_fused) {
        KernGemm in[2] = {{true, false, 3 * H, H, N, 1.0f, dqkv, 3 * H, x, H, 1.0f, gW + p->q_w, H},
                          {false, false, N, H, 3 * H, 1.0f, dqkv, 3 * H, W + p->q_w, H, 1.0f, DR, H}};
        kern_gemm_many(in, 2);
    } else {
        /* each input-gradient product adds into DR: one pair at a time */
        for (int k = 0; k < 3; k++) {
            const float *dk = dqkv + (size_t)k * H;
            KernGemm in[2] = {{true, false, H, H, N, 1.0f, dk, 3 * H, x, H, 1.0f, gW + w[k], H},
                              {false, false, N, H, H, 1.0f, dk, 3 * H, W + w[k], H, 1.0f, DR, H}};
            kern_gemm_many(in, 2);
        }
    }
    if (m->qkv_b_fused) {
        kern_colsum_add(gW + p->q_b, dqkv, 3 * H, N, 3 * H);
    } else {
        for (int k = 0; k < 3; k++) kern_colsum_add(gW + b[k], dqkv + (size_t)k * H, 3 * H, N, H);
    }
}

/* The attention block of layer l, y1 = LN(x + dropout(attention(x) Wo^T + bo)): d_out goes from
 * d y1 to d x. */
static void attention_block_backward(Model *m, int l) {
    const ModelConfig *mc = &m->mc;
    const LayerParams *p = &m->lp[l];
    const LayerActs *la = &m->act.layers[l];
    const float *W = m->params;
    float *gW = m->grads;
    Activations *a = &m->act;
    float *DR = a->d_out, *dz = a->d_proj, *DCTX = a->d_context;
    int N = m->B * m->T, H = mc->hidden;
    KernScratch s = a->scratch;
    /* y1 = LN(x + dropout(z1)): DR becomes d r1 (= d x through the residual), dz = dz1 */
    KernDropout d_ao = site_drop(m, mc->dropout, site_attn_out(l));
    kern_layernorm_backward(DR, dz, DR, la->ln1_norm, la->ln1_rstd, W + p->ln1_g, gW + p->ln1_g, gW + p->ln1_b, N,
                            H, NULL, &d_ao, &s);
    /* z1 = ctx Wo^T + bo: dctx = dz1 Wo ; dWo += dz1^T ctx (together) ; dbo += colsum dz1 */
    size_t NH = (size_t)N * H;
    const float *ctx = kept_f32(la->context, la->context_bf16, NH);
    KernGemm out[2] = {{false, false, N, H, H, 1.0f, dz, H, W + p->attn_out_w, H, 0.0f, DCTX, H},
                       {true, false, H, H, N, 1.0f, dz, H, ctx, H, 1.0f, gW + p->attn_out_w, H}};
    kern_gemm_many(out, 2);
    kern_colsum_add(gW + p->attn_out_b, dz, H, N, H);
    KernDropout d_att = site_drop(m, mc->attention_dropout, site_attn_probs(l));
    float *dqkv = a->d_wide; /* (N,3H); free again after ffn_backward */
    const float *qkv = kept_f32(la->qkv, la->qkv_bf16, 3 * NH);
    kern_attention_backward(dqkv, DCTX, qkv, la->attn_probs, a->mask, m->B, m->T, H, mc->heads, &d_att, &s);
    qkv_backward(m, p, layer_input_kept(m, l), dqkv, N);
}

/* x0 = dropout(LN(e)): d(LN out) = dropout(dx0), then LN backward gives de; scatter into the three
 * embedding tables */
static void embeddings_backward(Model *m) {
    const float *W = m->params;
    float *gW = m->grads;
    const GlobalParams *g = &m->gp;
    Activations *a = &m->act;
    KernScratch s = a->scratch;
    int H = m->mc.hidden;
    KernDropout drop = site_drop(m, m->mc.dropout, SITE_EMBEDDINGS);
    kern_layernorm_backward(a->d_out, NULL, a->d_out, a->emb_norm, a->emb_rstd, W + g->emb_ln_g, gW + g->emb_ln_g,
                            gW + g->emb_ln_b, m->B * m->T, H, &drop, NULL, &s);
    kern_embed_backward(gW + g->word_emb, gW + g->pos_emb, gW + g->type_emb, a->d_out, a->ids, a->types, m->B,
                        m->T, H);
}

void model_set_grad_ready(Model *m, ModelGradReady fn, void *ctx) {
    m->grad_ready = fn;
    m->grad_ready_ctx = ctx;
}

/* Where block b's gradients start: b < 0 the embeddings, 0..L-1 a layer, L the heads, L+1 the end
 * (alignment padding between tensors goes with the block before it). */
static size_t block_start(const ParamTable *t, int layers, int b) {
    if (b < 0) return 0;
    if (b > layers) return t->total;
    return t->params[N_EMBEDDING_TENSORS + b * N_LAYER_TENSORS].offset;
}

/* block b's floats: up to the next block (the embeddings end where layer 0 starts) */
static size_t block_floats(const ParamTable *t, int layers, int b) {
    return block_start(t, layers, b < 0 ? 0 : b + 1) - block_start(t, layers, b);
}

/* The backward's i-th range (0 the heads, 1..L layer L-1..0, L+1 the embeddings): its block. */
static int grad_range_block(int layers, int i) { return i <= layers ? layers - i : -1; }

static void grad_ready(const Model *m, int b) {
    if (!m->grad_ready) return;
    m->grad_ready(m->grad_ready_ctx, block_start(&m->table, m->mc.layers, b), block_floats(&m->table, m->mc.layers, b));
}

int model_grad_ranges(const ModelConfig *mc, int vocab_size, size_t *counts) {
    ParamTable t = {0};
    if (model_param_table(mc, vocab_size, &t, NULL) != 0) return 0;
    int n = mc->layers + 2;
    for (int i = 0; i < n; i++) counts[i] = block_floats(&t, mc->layers, grad_range_block(mc->layers, i));
    param_table_free(&t);
    return n;
}

void model_backward(Model *m) {
    BP_ASSERT(m->have_forward, "model_backward needs a model_forward before it (one backward per forward)");
    m->have_forward = false; /* the logits become their gradient below */
    kern_set_bf16(m->engine.bf16);
    kern_set_bf16_engine(m->engine.bf16_kind);
    kern_set_fp32_onednn(m->engine.fp32_onednn);
    memset(m->act.d_out, 0, (size_t)m->B * m->T * m->mc.hidden * sizeof(float));
    mlm_head_backward(m);
    nsp_head_backward(m);
    grad_ready(m, m->mc.layers);
    for (int l = m->mc.layers - 1; l >= 0; l--) {
        ffn_backward(m, l);
        attention_block_backward(m, l);
        grad_ready(m, l);
    }
    embeddings_backward(m);
    grad_ready(m, -1);
}

const float *model_mlm_logits(const Model *m) { return m->act_mem ? m->act.logits : NULL; }
int model_mlm_rows(const Model *m) { return m->R; }
const int32_t *model_mlm_slots(const Model *m) { return m->act_mem ? m->act.mlm_slots : NULL; }
const float *model_nsp_logits(const Model *m) { return m->act_mem ? m->act.nsp_logits : NULL; }

/* ---------------------------------------------------------------------------------------------
 * matrix products and FLOPs */

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
 * random batches for checks and benchmarks */

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
