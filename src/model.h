/* model.h: BERT for pretraining (masked LM + next-sentence prediction) with hand-written forward
 * and backward passes: parameter table, init, activation plan, forward, backward (model.c); weight,
 * batch and config files (model_io.c); the gradient check is gradcheck.h.
 *
 * The model (paper.md section 3, Google BERT's choices):
 *   embeddings  x0 = dropout(LN(word[id] + pos[t] + type[tt]))
 *   L post-LN layers:
 *     qkv = x Wqkv^T + b; per head S = Q K^T / sqrt(D) - 10000 * (1 - mask_key)  (BERT's additive
 *       padding mask: padded keys get ~0 probability, padded queries are computed and ignored)
 *     ctx = dropout(softmax(S)) V;  y1 = LN(x + dropout(ctx Wo^T + bo))
 *     y2 = LN(y1 + dropout(gelu(y1 W1^T + b1) W2^T + b2))
 *   MLM head on the real masked positions only (gathered first):
 *     logits = LN(gelu(h Wt^T + bt)) E^T + bias, E the word embeddings (tied decoder)
 *   NSP head: logits = tanh(h_CLS Wp^T + bp) Wn^T + bn
 * GELU exact (erf) by default, tanh approximation with model.gelu = tanh.
 *
 * Loss and micro-batches. With the global batch split into micro-batches (and ranks),
 *   loss = sum over real predictions of CE / mlm_denominator
 *        + sum over examples of CE / nsp_denominator
 * where mlm_denominator = real predictions in the WHOLE global batch and nsp_denominator = examples
 * in the whole global batch. Each micro-batch's forward returns its share of that sum and its
 * backward adds its share of the gradient, so summing over micro-batches gives exactly the mean
 * MLM cross-entropy + mean NSP cross-entropy of the global batch and its gradient, whatever the
 * split. Prediction slots with masked_lm_weights 0 are padding: no loss, no gradient.
 *
 * Dropout masks are keyed by (seed, step, site, example_index, element) (kernels.h), so they do not
 * depend on thread count or micro-batch split; train = false or dropout 0 gives an exactly
 * repeatable forward. */
#ifndef BP_MODEL_H
#define BP_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "common.h"
#include "config.h"
#include "gemm_cpu.h"
#include "params.h"

typedef struct Model Model;

/* The parameter table for a model config, without allocating weights (dry-run counts, memory
 * estimates). Hugging Face BertForPreTraining names; Linear weights (out, in); query, key and value
 * weights adjacent (so they form one (3H, H) matrix when H*H is a multiple of 16), then their
 * biases; no tensor for the tied decoder. Offsets 16-float aligned. vocab_size <= 0 takes
 * mc->vocab_size. Exclusion flags are all true (model_create applies the config's patterns).
 * Free with param_table_free (params.h). */
int model_param_table(const ModelConfig *mc, int vocab_size, ParamTable *out, BpError *err);

/* Parameters and gradients (ParamTable.total floats each, 64-byte aligned, zeroed), exclusion flags
 * from cfg->optimizer. Weights are zero until model_init_weights or model_load_safetensors. Sets no
 * process-wide state: the caller owns the thread count (kern_init_threads; the commands call
 * cli_set_threads). Resolves cfg->training.precision on this CPU (gemm_engine_resolve: bf16 on a CPU
 * without native bf16 is a usage error); model_forward and model_backward run their products in it. */
Model *model_create(const Config *cfg, int vocab_size, BpError *err);
void model_free(Model *m);
const ParamTable *model_table(const Model *m);
const ModelConfig *model_config(const Model *m); /* vocab_size is the model's V */
const GemmEngine *model_engine(const Model *m);
/* Runs the bf16 products on `kind` instead of the rule's engine (bench --bf16-engine; the caller
 * checks gemm_bf16_kind_usable). */
void model_set_bf16_engine(Model *m, GemmBf16Kind kind);
/* The fp32 products on oneDNN (true) or OpenBLAS instead of the rule's (bench --fp32-engine; the
 * caller checks gemm_dnnl_f32_available). */
void model_set_fp32_onednn(Model *m, bool onednn);  /* the precision the products run in, and why */
/* the parameter and gradient buffers (ParamTable.total floats each) */
float *model_params(const Model *m);
float *model_grads(const Model *m);
/* pointer to a named tensor in the parameter buffer, NULL when absent */
float *model_param(Model *m, const char *name);
/* Weights from outside (init_from, a checkpoint) must be finite: a NaN or Inf would otherwise
 * surface at step 1 as a NaN loss blamed on whichever gradient overflowed first. Returns 0 when
 * every float of buf (laid out by t) is finite, else -1 with a BP_ERR_CORRUPT error "SOURCE: tensor
 * 'NAME' element [i, j] is nan" naming the first bad element of the first bad tensor. */
int model_check_finite(const ParamTable *t, const float *buf, const char *source, BpError *err);

/* What a tensor is, for initialisation and for the gradient check's random point. */
typedef enum {
    MODEL_TENSOR_WEIGHT, /* matrices and embeddings */
    MODEL_TENSOR_GAIN,   /* LayerNorm gains */
    MODEL_TENSOR_BIAS,   /* biases, LayerNorm shifts included */
} ModelTensorKind;
/* the kind of tensor i of model_table(m) */
ModelTensorKind model_tensor_kind(const Model *m, int i);

/* Truncated normal (|z| <= 2, resampled) with std initializer_range for weights and embeddings,
 * zero biases, unit LayerNorm gains; tensor i draws from rng_stream(seed, RNG_INIT, i). */
void model_init_weights(Model *m, uint64_t seed);

/* Plans activation memory once for the largest (B, T, P) it will see; later forwards with sizes
 * within the plan allocate nothing (a larger one re-plans). */
int model_plan(Model *m, int B, int T, int P, BpError *err);
/* Frees the activations, so that the next model_plan sizes them for exactly its (B, T, P) instead
 * of the union with the old plan (a phase change from micro-batch 32 at seq 128 to 8 at seq 512). */
void model_release_activations(Model *m);
/* How the forward keeps what the backward reads. Neither choice changes any result (bit for bit;
 * tests/test_model.c), only memory and a little time (docs/performance.md, "Activation memory"). */
typedef struct {
    /* Q/K/V, the attention context and the layer outputs kept in bf16: the backward reads them only
     * as inputs of products, which the bf16 path rounds to the same bf16 numbers. Only with bf16
     * products (model_create sets it exactly then). */
    bool bf16;
    /* the attention probabilities (B*A*T*T floats a layer) recomputed by the backward from Q, K
     * and the mask (training.recompute_attention) instead of kept */
    bool recompute_attention;
} ModelActStorage;
/* what model_create chooses for cfg on this CPU */
ModelActStorage model_act_storage(const Config *cfg);
ModelActStorage model_get_act_storage(const Model *m);
/* another storage (tests and bench compare them); frees the plan. bf16 only with bf16 products. */
void model_set_act_storage(Model *m, ModelActStorage st);
/* bytes model_plan allocates for these sizes (activations + scratch; not params/grads) */
size_t model_activation_bytes(const ModelConfig *mc, int vocab_size, int B, int T, int P, ModelActStorage st);
/* bytes of the bf16 operand copies the oneDNN bf16 engine keeps on every worker thread for these
 * sizes (gemm_dnnl.h; the model sizes them at its first forward after a plan); 0 without oneDNN */
size_t model_gemm_copy_bytes(const ModelConfig *mc, int vocab_size, int B, int T, int P);

typedef struct {
    bool train;             /* dropout on */
    uint64_t seed;          /* dropout key */
    long step;              /* optimizer step: dropout key */
    double mlm_denominator; /* number of real predictions in the WHOLE global batch */
    double nsp_denominator; /* number of examples in the whole global batch */
} ForwardArgs;

typedef struct { /* contributions of this micro-batch; summing over micro-batches gives the
                    global-batch values */
    double loss, mlm_loss, nsp_loss; /* loss = mlm_loss + nsp_loss; each = sum / denominator */
    long mlm_correct, mlm_count, nsp_correct, nsp_count;
} ModelStats;

/* Validates the batch (ids, types, positions, labels in range; T <= max_position), plans if the
 * batch exceeds the plan, runs the forward and keeps what backward needs (the batch may be reused
 * after it returns). A denominator <= 0 means "this micro-batch alone" (its own count). */
int model_forward(Model *m, const Batch *b, const ForwardArgs *a, ModelStats *st, BpError *err);
/* After model_forward: ADDS d(loss)/d(params) into the gradient buffer (loss as defined above), so
 * micro-batches accumulate by calling forward/backward in turn with one model_zero_grad per step.
 * Exactly one backward per forward: a backward without a forward before it (or a second one) is a
 * programmer error (BP_ASSERT). */
void model_backward(Model *m);
void model_zero_grad(Model *m);

/* A data-parallel trainer's hook: model_backward calls fn(ctx, first, count) each time the floats
 * [first, first + count) of the gradient buffer hold their final value for this backward, so that
 * their reduction across ranks can start while the backward goes on. Calls come in the backward's
 * order and tile [0, table total) downwards: the heads (after the MLM and NSP heads), layer L-1 ...
 * layer 0, and last the embeddings (the tied decoder adds into the word embeddings' gradient in
 * the MLM head, so they are final only after the embeddings' backward). fn NULL: no calls. */
typedef void (*ModelGradReady)(void *ctx, size_t first, size_t count);
void model_set_grad_ready(Model *m, ModelGradReady fn, void *ctx);
/* The sizes (floats) of those calls' ranges in their order, into counts (room for layers + 2);
 * returns how many (layers + 2), 0 for a model that cannot be built. */
int model_grad_ranges(const ModelConfig *mc, int vocab_size, size_t *counts);

/* The MLM logits of the last forward, one row of V per REAL prediction slot (masked_lm_weights !=
 * 0), in slot order b*P + p; model_mlm_slots gives each row's slot. Valid until model_backward
 * (which turns them into their gradient in place). For a batch without unused slots this is the
 * (B*P, V) matrix. */
const float *model_mlm_logits(const Model *m);
int model_mlm_rows(const Model *m);
const int32_t *model_mlm_slots(const Model *m);
/* the NSP logits of the last forward, (B, 2) */
const float *model_nsp_logits(const Model *m);

/* ---- files (model_io.c) ---- */

/* Weights I/O in safetensors under the HF names (nothing written for the tied decoder). The loader
 * accepts cls.predictions.decoder.weight when it has the word embeddings' shape and equals them (a
 * file whose decoder differs is refused: this model cannot untie it), ignores
 * bert.embeddings.position_ids, and refuses a missing, misshapen, non-F32 or unknown tensor with a
 * message naming the tensor and the file. */
int model_save_safetensors(const Model *m, const char *path, BpError *err);
int model_load_safetensors(Model *m, const char *path, BpError *err);
/* Copies the gradient buffer to safetensors under the parameter names. */
int model_save_grads_safetensors(const Model *m, const char *path, BpError *err);
/* Infers a ModelConfig from a safetensors weights file (layers, hidden, intermediate, vocab,
 * positions, types); heads are not stored in weights: pass them (0 = hidden / 64, at least 1). */
int model_config_from_safetensors(const char *path, int heads, ModelConfig *mc, int *vocab_size,
                                  BpError *err);
/* config.json in Hugging Face BertConfig format (architectures BertForPreTraining). */
int model_write_hf_config(const Model *m, const char *path, BpError *err);

/* What model_forward_files reads and writes. */
typedef struct {
    const char *weights;       /* safetensors weights; NULL: fresh weights from training.seed */
    const char *batch;         /* batch file (batch_load_safetensors); required */
    const char *grads_out;     /* NULL, or where the gradient of every parameter goes */
    const char *weights_out;   /* NULL, or where the weights the model ran go (HF names) */
    const char *hf_config_out; /* NULL, or where their HF config.json goes */
    int heads;                 /* > 0: model.heads (weights do not store it) */
    int gelu;                  /* < 0: the config's model.gelu, else a GeluKind */
    /* without a config: model.* assignments applied over the defaults before the shape is taken
       from the weights (model.heads among them counts as the heads when heads is 0) */
    char *const *model_sets;
    int n_model_sets;
} ModelForwardFiles;

/* One forward (dropout off) of a model on a batch file, for cross-checks with PyTorch: the model
 * is cfg's (its shape must fit the weights), or with cfg NULL the weights' shape (heads: f->heads,
 * a model.heads assignment, else hidden / 64). With grads_out, one backward and the gradients
 * written. Fills st; returns 0, or -1 with err set (usage errors for a bad assignment or a model
 * without a vocabulary). */
int model_forward_files(const Config *cfg, const ModelForwardFiles *f, ModelStats *st, BpError *err);

/* ---- matrix products and FLOPs ---- */

/* One matrix product of a training step: C (M,N) = op(A) (M,K) op(B) (K,N), `count` times per
 * micro-batch forward + backward. */
typedef struct {
    const char *what; /* "qkv fwd", "qkv dW", "attn QK^T", ... */
    bool ta, tb;      /* op = transpose */
    int M, N, K;
    double count;
} ModelGemmShape;

#define MODEL_MAX_GEMM_SHAPES 32

/* The matrix products one forward + backward of a micro-batch of B examples of length T with R real
 * predictions runs (every product the model passes to the GEMM: encoder layers, the six attention
 * products per (example, head), MLM head, tied decoder, pooler; not the 2-way NSP classifier, a
 * hand-written loop). The one list the FLOP count, the bench and the tests use. Returns the count
 * (<= MODEL_MAX_GEMM_SHAPES). */
int model_gemm_shapes(const ModelConfig *mc, int vocab_size, int B, int T, int R, ModelGemmShape *out);
/* The rows the MLM head's products run on for R real predictions: R rounded up to a multiple of
 * 16 (zero rows, so that a run meets a few product shapes, not one per R). The FLOP counts above
 * count R (the useful work, as scripts/torch_bert.py does); the model computes this many. */
int model_mlm_product_rows(int R);

/* 2 M N K count summed over model_gemm_shapes, per example, with every one of P slots a real
 * prediction: forward + backward matmul FLOPs (3x the forward's, the backward computing both the
 * weight and the input gradient of each product). */
double model_flops_per_example(const ModelConfig *mc, int vocab_size, int T, int P);

/* ---- random batches for checks and benchmarks ---- */

/* Fills a batch (already allocated for b->B, b->T, b->P) with random tokens: example i has
 * T - (i * 3 % (T / 2)) real tokens when padding is on (so several examples are padded), segment
 * A/B token types, [CLS]-like id at position 0, about half the prediction slots real (distinct
 * non-zero positions of real tokens; every slot with all_slots) and the rest unused (weight 0),
 * random NSP labels, example_index = first_example + i. Pure function of seed. */
void model_fill_random_batch(Batch *b, int vocab_size, int type_vocab_size, bool padding, bool all_slots,
                             uint64_t seed, int64_t first_example);

#endif
