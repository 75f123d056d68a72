/* model_io.c: the model's files: weights and gradients in safetensors under the Hugging Face names,
 * batch files, the shape of a weights file, the HF config.json, and the forward on files that the
 * PyTorch cross-checks use (see model.h). Only the public model API is used here. */
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "safetensors.h"

static int write_tensors(const Model *m, const float *buf, const char *path, BpError *err) {
    const ParamTable *t = model_table(m);
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
    return write_tensors(m, model_params(m), path, err);
}

int model_save_grads_safetensors(const Model *m, const char *path, BpError *err) {
    return write_tensors(m, model_grads(m), path, err);
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
    const ParamTable *t = model_table(m);
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
                    st->name, model_config(m)->layers, model_config(m)->hidden);
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
        const ParamInfo *p = params_get(t, "bert.embeddings.word_embeddings.weight");
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
        const ParamInfo *p = params_get(t, "cls.predictions.bias");
        if (dec_b->dtype != ST_F32 || !same_shape(dec_b, p->ndim, p->shape) ||
            memcmp(st_data(&f, dec_b), staged + p->offset, p->numel * sizeof(float)) != 0) {
            bp_fail(err, "%s: tensor 'cls.predictions.decoder.bias' must equal cls.predictions.bias (F32, %zu values)",
                    path, p->numel);
            goto done;
        }
    }
    if (model_check_finite(t, staged, path, err) != 0) goto done;
    memcpy(model_params(m), staged, t->total * sizeof(float));
    rc = 0;
done:
    free(staged);
    free(seen);
    st_close(&f);
    return rc;
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
    const ModelConfig *mc = model_config(m);
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
            mc->layers, mc->type_vocab_size, mc->vocab_size);
    return bp_atomic_commit(&af, err);
}

/* The config model_forward_files runs without one given: the defaults, the model assignments,
 * then the weights' shape (an assignment cannot change what the weights fix). */
static int config_for_weights(Config *c, const ModelForwardFiles *f, BpError *err) {
    ModelConfig inferred;
    int V = 0;
    memset(&inferred, 0, sizeof inferred);
    if (model_config_from_safetensors(f->weights, f->heads, &inferred, &V, err)) return -1;
    config_defaults(c);
    for (int i = 0; i < f->n_model_sets; i++) {
        if (strncmp(f->model_sets[i], "model.", 6))
            return bp_fail_usage(err, "--set %s: without a config only model.* keys apply", f->model_sets[i]);
        if (config_apply_override(c, f->model_sets[i], err)) return -1;
    }
    /* model.heads given and no heads argument: that value; else the inferred one */
    bool heads_set = (c->model_explicit & 4u) != 0;
    ModelConfig *mc = &c->model;
    mc->heads = heads_set && f->heads <= 0 ? mc->heads : inferred.heads;
    mc->layers = inferred.layers;
    mc->hidden = inferred.hidden;
    mc->intermediate = inferred.intermediate;
    mc->max_position = inferred.max_position;
    mc->type_vocab_size = inferred.type_vocab_size;
    mc->vocab_size = V;
    return 0;
}

/* loads or initialises the weights, reads the batch, writes what the model ran */
static int forward_inputs(Model *m, const Config *c, const ModelForwardFiles *f, Batch *b, BpError *err) {
    if (f->weights) {
        if (model_load_safetensors(m, f->weights, err)) return -1;
    } else {
        model_init_weights(m, c->training.seed);
    }
    if (batch_load_safetensors(b, f->batch, err)) return -1;
    if (f->weights_out && model_save_safetensors(m, f->weights_out, err)) return -1;
    if (f->hf_config_out && model_write_hf_config(m, f->hf_config_out, err)) return -1;
    return 0;
}

int model_forward_files(const Config *cfg, const ModelForwardFiles *f, ModelStats *st, BpError *err) {
    BP_ASSERT(f->batch && (cfg || f->weights), "model_forward_files needs a batch and a config or weights");
    Config *c = bp_malloc(sizeof *c, "the forward's config", err);
    if (!c) return -1;
    int rc = -1;
    Model *m = NULL;
    Batch b = {0};
    if (cfg) {
        *c = *cfg;
        if (f->heads > 0) c->model.heads = f->heads;
    } else if (config_for_weights(c, f, err)) {
        goto done;
    }
    if (f->gelu >= 0) c->model.gelu = (GeluKind)f->gelu;
    int V = c->model.vocab_size; /* with weights, theirs */
    if (cfg && f->weights) {
        ModelConfig inferred;
        if (model_config_from_safetensors(f->weights, c->model.heads, &inferred, &V, err)) goto done;
    }
    m = model_create(c, V, err);
    if (!m || forward_inputs(m, c, f, &b, err)) goto done;
    ForwardArgs fa = {false, 0, 0, 0.0, 0.0};
    model_zero_grad(m);
    if (model_forward(m, &b, &fa, st, err)) goto done;
    if (f->grads_out) {
        model_backward(m);
        if (model_save_grads_safetensors(m, f->grads_out, err)) goto done;
    }
    rc = 0;
done:
    batch_free(&b);
    model_free(m);
    free(c);
    return rc;
}
