/* cmd_model.c: the model's subcommands: gradcheck (finite differences against the hand-written
 * backward), forward (loss and gradients on given weights and batch, for cross-checks with
 * PyTorch) and bench (training-step speed against the measured sgemm rate). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "config.h"
#include "model.h"
#include "safetensors.h"

/* ---------------------------------------------------------------------------------------------
 * argument helpers */

typedef struct {
    char *sets[256];
    int n_sets;
} SetList;

/* "--set k=v" or "--set=k=v"; returns 1 when argv[*i] was one (advancing *i), -1 on error */
static int take_set(int argc, char **argv, int *i, SetList *s, const char *cmd) {
    const char *a = argv[*i];
    const char *val = NULL;
    if (!strcmp(a, "--set")) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "bert_pretrain %s: --set needs section.key=value\n", cmd);
            return -1;
        }
        val = argv[++*i];
    } else if (!strncmp(a, "--set=", 6)) {
        val = a + 6;
    } else {
        return 0;
    }
    if (s->n_sets >= (int)BP_ARRAY_LEN(s->sets)) {
        fprintf(stderr, "bert_pretrain %s: too many --set options\n", cmd);
        return -1;
    }
    s->sets[s->n_sets++] = (char *)val;
    return 1;
}

/* value of "--name V" or "--name=V" at argv[*i]; NULL when argv[*i] is not that option */
static const char *take_opt(int argc, char **argv, int *i, const char *name, bool *missing) {
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (!strcmp(a, name)) {
        if (*i + 1 >= argc) {
            *missing = true;
            return NULL;
        }
        return argv[++*i];
    }
    if (!strncmp(a, name, n) && a[n] == '=') return a + n + 1;
    return NULL;
}

static bool parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static int report(const BpError *err, const char *cmd) {
    fprintf(stderr, "bert_pretrain %s: %s\n", cmd, err->msg);
    return bp_error_status(err);
}

/* ---------------------------------------------------------------------------------------------
 * gradcheck */

static void gradcheck_usage(FILE *out) {
    fprintf(out,
            "usage: bert_pretrain gradcheck CONFIG.yaml [--set section.key=value ...] [--batch B]\n"
            "                               [--seq T] [--predictions P] [--samples N]\n\n"
            "Builds the config's model with random weights (non-trivial LayerNorm gains and biases)\n"
            "and a random batch with padded examples and unused prediction slots, and compares the\n"
            "analytic gradient of every parameter tensor (N sampled elements plus its largest one,\n"
            "default 4) and of one random direction over all parameters with central finite\n"
            "differences, dropout off. Prints a table and exits 1 when any row fails.\n"
            "Defaults: B 3, T min(16, phase 0 seq_len), P min(4, T-1); vocabulary model.vocab_size or\n"
            "128 when it is 0. The tolerances are set for fp32 on small models (see cmd_model.c):\n"
            "use a tiny config (e.g. --set model.layers=2 --set model.hidden=16 ...).\n");
}

int cmd_gradcheck(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        gradcheck_usage(stdout);
        return 0;
    }
    SetList sets = {.n_sets = 0};
    const char *path = NULL;
    long B = 3, T = -1, P = -1, samples = 4;
    for (int i = 1; i < argc; i++) {
        int r = take_set(argc, argv, &i, &sets, "gradcheck");
        if (r < 0) return 2;
        if (r) continue;
        bool missing = false;
        const char *v;
        long *dst = NULL;
        long hi = 0;
        if ((v = take_opt(argc, argv, &i, "--batch", &missing))) dst = &B, hi = 64;
        else if ((v = take_opt(argc, argv, &i, "--seq", &missing))) dst = &T, hi = 4096;
        else if ((v = take_opt(argc, argv, &i, "--predictions", &missing))) dst = &P, hi = 4096;
        else if ((v = take_opt(argc, argv, &i, "--samples", &missing))) dst = &samples, hi = 100000;
        if (missing) {
            fprintf(stderr, "bert_pretrain gradcheck: %s needs a value\n", argv[i]);
            return 2;
        }
        if (dst) {
            if (!parse_int(v, dst == &P ? 0 : 1, hi, dst)) {
                fprintf(stderr, "bert_pretrain gradcheck: '%s' is not a valid count for %s\n", v, argv[i - 1]);
                return 2;
            }
            continue;
        }
        if (argv[i][0] == '-' || path) {
            fprintf(stderr, "bert_pretrain gradcheck: unexpected argument '%s'\n", argv[i]);
            gradcheck_usage(stderr);
            return 2;
        }
        path = argv[i];
    }
    if (!path) {
        gradcheck_usage(stderr);
        return 2;
    }
    Config cfg;
    BpError err = {0};
    if (config_load_cli(&cfg, path, sets.sets, sets.n_sets, 1, &err)) return report(&err, "gradcheck");
    int V = cfg.model.vocab_size > 0 ? cfg.model.vocab_size : 128;
    if (T < 0) T = cfg.phases[0].seq_len < 16 ? cfg.phases[0].seq_len : 16;
    if (T > cfg.model.max_position) T = cfg.model.max_position;
    if (T < 2) {
        fprintf(stderr, "bert_pretrain gradcheck: sequence length %ld is too short (need 2)\n", T);
        return 2;
    }
    if (P < 0) P = T - 1 < 4 ? T - 1 : 4;
    if (P > T - 1) P = T - 1;
    Model *m = model_create(&cfg, V, &err);
    if (!m) return report(&err, "gradcheck");
    Batch b;
    if (batch_alloc(&b, (int)B, (int)T, (int)P, &err)) {
        model_free(m);
        return report(&err, "gradcheck");
    }
    model_fill_random_batch(&b, V, cfg.model.type_vocab_size, true, false, cfg.training.seed, 0);
    int padded = 0;
    for (long i = 0; i < B * T; i++) padded += !b.attention_mask[i];
    long real = batch_count_predictions(&b);
    printf("gradcheck: %s: L=%d H=%d A=%d I=%d V=%d gelu=%s; batch B=%ld T=%ld P=%ld (%d padded tokens, %ld of %ld "
           "prediction slots used); dropout off\n",
           path, cfg.model.layers, cfg.model.hidden, cfg.model.heads, cfg.model.intermediate, V,
           cfg.model.gelu == GELU_TANH ? "tanh" : "erf", B, T, P, padded, real, B * P);
    /* Tolerances honest for fp32. The loss is summed in double but every activation is float, so
     * each loss evaluation carries rounding noise of roughly 1e-7 relative (~1e-6 absolute at
     * loss ~5); a central difference divides it by 2*eps, giving ~5e-5 at eps = 1e-2. The
     * truncation error eps^2 f'''/6 is ~2e-5 for O(1) third derivatives at this scale. A smaller
     * eps would drown the check in rounding noise, a larger one in truncation, so: eps 1e-2,
     * atol 1e-4 (the noise floor), rtol 1e-2 (truncation on large gradients). A wrong term in a
     * backward pass shows as errors of the gradient's own size, far above both. */
    GradcheckOpts o = {1e-2, 1e-4, 1e-2, (int)samples, true, cfg.training.seed, false};
    model_init_weights(m, cfg.training.seed);
    int fails = model_gradcheck(m, &b, &o, stdout, &err);
    batch_free(&b);
    model_free(m);
    if (fails < 0) return report(&err, "gradcheck");
    if (fails) {
        printf("gradcheck: FAILED: %d row(s) outside tolerance\n", fails);
        return 1;
    }
    printf("gradcheck: all tensors PASS\n");
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * forward */

static void forward_usage(FILE *out) {
    fprintf(out,
            "usage: bert_pretrain forward --weights W.safetensors --batch B.safetensors\n"
            "                             [--grads G.safetensors] [--config C.yaml]\n"
            "                             [--set model.key=value ...] [--heads A] [--gelu erf|tanh]\n"
            "                             [--save-weights W2.safetensors] [--save-hf-config config.json]\n\n"
            "Runs the model (dropout off) on the batch and prints loss, mlm_loss, nsp_loss, mlm_acc and\n"
            "nsp_acc (then one JSON line). The model shape comes from the weights (heads: --heads or\n"
            "--set model.heads, else hidden/64), or from --config; with --config and no --weights the\n"
            "model is freshly initialised from training.seed (vocabulary: model.vocab_size). With\n"
            "--grads it writes the gradient of every parameter under its name; --save-weights and\n"
            "--save-hf-config write the model it ran (HF names) and its HF config.json.\n"
            "Loss = mean MLM cross-entropy over the real predictions + mean NSP cross-entropy.\n"
            "The batch file holds int32 input_ids, token_type_ids, attention_mask (B,T),\n"
            "masked_lm_positions, masked_lm_ids, masked_lm_weights (B,P), next_sentence_labels (B)\n"
            "(or (B,1)); an optional int64 example_index (B).\n");
}

int cmd_forward(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        forward_usage(stdout);
        return 0;
    }
    SetList sets = {.n_sets = 0};
    const char *wpath = NULL, *bpath = NULL, *gpath = NULL, *cpath = NULL, *gelu = NULL;
    const char *save_w = NULL, *save_c = NULL;
    long heads = 0;
    for (int i = 1; i < argc; i++) {
        int r = take_set(argc, argv, &i, &sets, "forward");
        if (r < 0) return 2;
        if (r) continue;
        bool missing = false;
        const char *v;
        if ((v = take_opt(argc, argv, &i, "--weights", &missing))) wpath = v;
        else if ((v = take_opt(argc, argv, &i, "--batch", &missing))) bpath = v;
        else if ((v = take_opt(argc, argv, &i, "--grads", &missing))) gpath = v;
        else if ((v = take_opt(argc, argv, &i, "--config", &missing))) cpath = v;
        else if ((v = take_opt(argc, argv, &i, "--gelu", &missing))) gelu = v;
        else if ((v = take_opt(argc, argv, &i, "--save-weights", &missing))) save_w = v;
        else if ((v = take_opt(argc, argv, &i, "--save-hf-config", &missing))) save_c = v;
        else if ((v = take_opt(argc, argv, &i, "--heads", &missing))) {
            if (!parse_int(v, 1, 4096, &heads)) {
                fprintf(stderr, "bert_pretrain forward: --heads '%s' is not a positive count\n", v);
                return 2;
            }
        } else if (!missing) {
            fprintf(stderr, "bert_pretrain forward: unexpected argument '%s'\n", argv[i]);
            forward_usage(stderr);
            return 2;
        }
        if (missing) {
            fprintf(stderr, "bert_pretrain forward: %s needs a value\n", argv[i]);
            return 2;
        }
    }
    if ((!wpath && !cpath) || !bpath) {
        fprintf(stderr, "bert_pretrain forward: --batch and --weights (or --config) are required\n");
        forward_usage(stderr);
        return 2;
    }
    if (gelu && strcmp(gelu, "erf") && strcmp(gelu, "tanh")) {
        fprintf(stderr, "bert_pretrain forward: --gelu must be erf or tanh (got '%s')\n", gelu);
        return 2;
    }
    BpError err = {0};
    Config cfg;
    ModelConfig inferred;
    int V = 0;
    memset(&inferred, 0, sizeof inferred);
    if (wpath && model_config_from_safetensors(wpath, (int)heads, &inferred, &V, &err))
        return report(&err, "forward");
    if (cpath) {
        if (config_load_cli(&cfg, cpath, sets.sets, sets.n_sets, 1, &err)) return report(&err, "forward");
        if (heads) cfg.model.heads = (int)heads;
        if (!wpath) V = cfg.model.vocab_size;
        if (V < 1) {
            fprintf(stderr, "bert_pretrain forward: without --weights, the config must set model.vocab_size\n");
            return 2;
        }
    } else {
        config_defaults(&cfg);
        bool heads_set = false;
        for (int i = 0; i < sets.n_sets; i++) {
            if (strncmp(sets.sets[i], "model.", 6)) {
                fprintf(stderr, "bert_pretrain forward: --set %s: without --config only model.* keys apply\n",
                        sets.sets[i]);
                return 2;
            }
            if (config_apply_override(&cfg, sets.sets[i], &err)) return report(&err, "forward");
            heads_set |= !strncmp(sets.sets[i], "model.heads=", 12);
        }
        /* the shape is the weights' (a model.* override re-applies the preset's sizes) */
        int h = heads_set && !heads ? cfg.model.heads : inferred.heads;
        cfg.model.layers = inferred.layers;
        cfg.model.hidden = inferred.hidden;
        cfg.model.heads = h;
        cfg.model.intermediate = inferred.intermediate;
        cfg.model.max_position = inferred.max_position;
        cfg.model.type_vocab_size = inferred.type_vocab_size;
        cfg.model.vocab_size = V;
    }
    if (gelu) cfg.model.gelu = strcmp(gelu, "tanh") ? GELU_ERF : GELU_TANH;
    Model *m = model_create(&cfg, V, &err);
    if (!m) return report(&err, "forward");
    Batch b = {0};
    int rc = 0;
    if (wpath ? model_load_safetensors(m, wpath, &err) : (model_init_weights(m, cfg.training.seed), 0)) {
        rc = report(&err, "forward");
        goto done;
    }
    if (model_batch_from_safetensors(&b, bpath, &err) ||
        (save_w && model_save_safetensors(m, save_w, &err)) || (save_c && model_write_hf_config(m, save_c, &err))) {
        rc = report(&err, "forward");
        goto done;
    }
    ForwardArgs fa = {false, 0, 0, 0.0, 0.0};
    ModelStats st;
    model_zero_grad(m);
    if (model_forward(m, &b, &fa, &st, &err)) {
        rc = report(&err, "forward");
        goto done;
    }
    double mlm_acc = st.mlm_count ? (double)st.mlm_correct / st.mlm_count : 0.0;
    double nsp_acc = st.nsp_count ? (double)st.nsp_correct / st.nsp_count : 0.0;
    printf("loss %.9g\nmlm_loss %.9g\nnsp_loss %.9g\nmlm_acc %.6f (%ld/%ld)\nnsp_acc %.6f (%ld/%ld)\n", st.loss,
           st.mlm_loss, st.nsp_loss, mlm_acc, st.mlm_correct, st.mlm_count, nsp_acc, st.nsp_correct, st.nsp_count);
    printf("{\"loss\": %.9g, \"mlm_loss\": %.9g, \"nsp_loss\": %.9g, \"mlm_acc\": %.6f, \"nsp_acc\": %.6f}\n", st.loss,
           st.mlm_loss, st.nsp_loss, mlm_acc, nsp_acc);
    if (gpath) {
        model_backward(m);
        if (model_save_grads_safetensors(m, gpath, &err)) rc = report(&err, "forward");
    }
done:
    batch_free(&b);
    model_free(m);
    return rc;
}
