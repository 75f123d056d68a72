/* cmd_model.c: the model's subcommands: gradcheck (finite differences against the hand-written
 * backward) and forward (loss and gradients on given weights and batch, for cross-checks with
 * PyTorch). Each parses with cli_parse, calls one library entry point (model_gradcheck_run,
 * model_forward_files) and prints its result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "config.h"
#include "gradcheck.h"
#include "model.h"

/* ---------------------------------------------------------------------------------------------
 * gradcheck */

static long gc_batch = 3, gc_seq = -1, gc_predictions = -1, gc_samples = 4;
static const CliOption GRADCHECK_OPTIONS[] = {
    {"--batch", CLI_LONG, &gc_batch, "B", "examples in the random batch (default 3)", 1, 64},
    {"--seq", CLI_LONG, &gc_seq, "T", "sequence length (default min(16, phase 0 seq_len))", 1, 4096},
    {"--predictions", CLI_LONG, &gc_predictions, "P", "prediction slots per example (default min(4, T-1))", 0,
     4096},
    {"--samples", CLI_LONG, &gc_samples, "N", "elements checked per tensor besides its largest (default 4)", 1,
     100000},
};
static const CliCommand GRADCHECK = {
    .name = "gradcheck",
    .usage = "gradcheck CONFIG.yaml [--set section.key=value ...] [--batch B] [--seq T] [--predictions P]\n"
             "                               [--samples N]",
    .description = "Builds the config's model with random weights (non-trivial LayerNorm gains and biases)\n"
                   "and a random batch with padded examples and unused prediction slots, and compares the\n"
                   "analytic gradient of every parameter tensor (N sampled elements plus its largest one)\n"
                   "and of one random direction over all parameters with central finite differences,\n"
                   "dropout off. Prints a table and exits 1 when any row fails. Vocabulary:\n"
                   "model.vocab_size, or 128 when it is 0. The tolerances are set for fp32 on small models\n"
                   "(see gradcheck.c): use a tiny config (e.g. --set model.layers=2 --set model.hidden=16).\n",
    .positional = "CONFIG.yaml",
    .min_positional = 1,
    .max_positional = 1,
    .takes_sets = true,
    .options = GRADCHECK_OPTIONS,
    .n_options = (int)BP_ARRAY_LEN(GRADCHECK_OPTIONS),
};

static void print_gradcheck(const char *path, const GradcheckRun *r) {
    const ModelConfig *mc = &r->model;
    const GradcheckOpts *o = &r->opts;
    const GradcheckReport *rep = &r->report;
    printf("gradcheck: %s: L=%d H=%d A=%d I=%d V=%d gelu=%s; batch B=%d T=%d P=%d (%ld padded tokens, %ld of %ld "
           "prediction slots used); dropout off\n",
           path, mc->layers, mc->hidden, mc->heads, mc->intermediate, mc->vocab_size,
           mc->gelu == GELU_TANH ? "tanh" : "erf", r->B, r->T, r->P, r->padded_tokens, r->used_slots,
           (long)r->B * r->P);
    printf("gradcheck: loss %.6f (mlm %.6f, nsp %.6f), eps %g, pass when |num - ana| <= %g + %g * max(|num|, |ana|)\n",
           rep->loss, rep->mlm_loss, rep->nsp_loss, o->eps, o->atol, o->rtol);
    printf("%-60s %7s %12s %12s  %s\n", "tensor", "checked", "max abs err", "max rel err", "result");
    for (int i = 0; i < rep->n_rows; i++) {
        const GradcheckRow *row = &rep->rows[i];
        printf("%-60s %7d %12.3e %12.3e  %s\n", row->name, row->checked, row->max_abs, row->max_rel,
               row->pass ? "PASS" : "FAIL");
    }
    if (rep->fails)
        printf("gradcheck: FAILED: %d row(s) outside tolerance\n", rep->fails);
    else
        printf("gradcheck: all tensors PASS\n");
}

int cmd_gradcheck(int argc, char **argv) {
    CliArgs a;
    int rc = cli_parse(&GRADCHECK, argc, argv, &a);
    if (rc != CLI_OK) return rc;
    BpError err = {0};
    Config *cfg = cli_config_load(a.positional[0], &a, &err);
    if (!cfg) return cli_fail(&GRADCHECK, &err);
    cli_set_threads(cfg->training.threads);
    GradcheckRequest req = {(int)gc_batch, (int)gc_seq, (int)gc_predictions, (int)gc_samples};
    GradcheckRun run;
    int fails = model_gradcheck_run(cfg, &req, &run, &err);
    if (fails < 0) {
        rc = cli_fail(&GRADCHECK, &err);
    } else {
        print_gradcheck(a.positional[0], &run);
        rc = fails ? 1 : 0;
    }
    model_gradcheck_run_free(&run);
    cli_config_free(cfg);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * forward */

static const char *fw_weights, *fw_batch, *fw_grads, *fw_config, *fw_gelu, *fw_save_weights, *fw_save_config;
static long fw_heads;
static const CliOption FORWARD_OPTIONS[] = {
    {"--weights", CLI_STRING, &fw_weights, "W.safetensors", "the weights (HF names); they fix the shape", 0, 0},
    {"--batch", CLI_STRING, &fw_batch, "B.safetensors", "the batch (required)", 0, 0},
    {"--grads", CLI_STRING, &fw_grads, "G.safetensors", "write the gradient of every parameter", 0, 0},
    {"--config", CLI_STRING, &fw_config, "C.yaml", "the model from a config (without --weights: fresh weights)",
     0, 0},
    {"--heads", CLI_LONG, &fw_heads, "A", "attention heads (not stored in weights; default hidden/64)", 1, 4096},
    {"--gelu", CLI_STRING, &fw_gelu, "erf|tanh", "the GELU form (default the config's: erf)", 0, 0},
    {"--save-weights", CLI_STRING, &fw_save_weights, "W2.safetensors", "write the weights the model ran", 0, 0},
    {"--save-hf-config", CLI_STRING, &fw_save_config, "config.json", "write their Hugging Face config.json", 0,
     0},
};
static const CliCommand FORWARD = {
    .name = "forward",
    .usage = "forward --weights W.safetensors --batch B.safetensors [--grads G.safetensors] [--config C.yaml]\n"
             "                             [--set model.key=value ...] [--heads A] [--gelu erf|tanh]\n"
             "                             [--save-weights W2.safetensors] [--save-hf-config config.json]",
    .description =
        "Runs the model (dropout off) on the batch and prints loss, mlm_loss, nsp_loss, mlm_acc and\n"
        "nsp_acc (then one JSON line). The model shape comes from the weights (heads: --heads or\n"
        "--set model.heads, else hidden/64), or from --config; with --config and no --weights the\n"
        "model is freshly initialised from training.seed (vocabulary: model.vocab_size). With\n"
        "--grads it writes the gradient of every parameter under its name; --save-weights and\n"
        "--save-hf-config write the model it ran (HF names) and its HF config.json.\n"
        "Loss = mean MLM cross-entropy over the real predictions + mean NSP cross-entropy.\n"
        "The batch file holds int32 input_ids, token_type_ids, attention_mask (B,T),\n"
        "masked_lm_positions, masked_lm_ids, masked_lm_weights (B,P), next_sentence_labels (B)\n"
        "(or (B,1)); an optional int64 example_index (B).\n",
    .takes_sets = true,
    .options = FORWARD_OPTIONS,
    .n_options = (int)BP_ARRAY_LEN(FORWARD_OPTIONS),
};

static void print_forward(const ModelStats *st) {
    double mlm_acc = st->mlm_count ? (double)st->mlm_correct / st->mlm_count : 0.0;
    double nsp_acc = st->nsp_count ? (double)st->nsp_correct / st->nsp_count : 0.0;
    printf("loss %.9g\nmlm_loss %.9g\nnsp_loss %.9g\nmlm_acc %.6f (%ld/%ld)\nnsp_acc %.6f (%ld/%ld)\n", st->loss,
           st->mlm_loss, st->nsp_loss, mlm_acc, st->mlm_correct, st->mlm_count, nsp_acc, st->nsp_correct,
           st->nsp_count);
    printf("{\"loss\": %.9g, \"mlm_loss\": %.9g, \"nsp_loss\": %.9g, \"mlm_acc\": %.6f, \"nsp_acc\": %.6f}\n", st->loss,
           st->mlm_loss, st->nsp_loss, mlm_acc, nsp_acc);
}

int cmd_forward(int argc, char **argv) {
    CliArgs a;
    int rc = cli_parse(&FORWARD, argc, argv, &a);
    if (rc != CLI_OK) return rc;
    if ((!fw_weights && !fw_config) || !fw_batch)
        return cli_usage_error(&FORWARD, "--batch and --weights (or --config) are required");
    if (fw_gelu && strcmp(fw_gelu, "erf") && strcmp(fw_gelu, "tanh"))
        return cli_usage_error(&FORWARD, "--gelu must be erf or tanh (got '%s')", fw_gelu);
    BpError err = {0};
    Config *cfg = NULL;
    if (fw_config) {
        cfg = cli_config_load(fw_config, &a, &err);
        if (!cfg) return cli_fail(&FORWARD, &err);
        if (!fw_weights && cfg->model.vocab_size < 1) {
            cli_config_free(cfg);
            return cli_usage_error(&FORWARD, "without --weights, the config must set model.vocab_size");
        }
    }
    /* without a config, the default policy (training.threads 0: every core) */
    cli_set_threads(cfg ? cfg->training.threads : 0);
    ModelForwardFiles f = {
        .weights = fw_weights,
        .batch = fw_batch,
        .grads_out = fw_grads,
        .weights_out = fw_save_weights,
        .hf_config_out = fw_save_config,
        .heads = (int)fw_heads,
        .gelu = !fw_gelu ? -1 : strcmp(fw_gelu, "tanh") ? GELU_ERF : GELU_TANH,
        .model_sets = a.sets,
        .n_model_sets = cfg ? 0 : a.n_sets,
    };
    ModelStats st;
    rc = model_forward_files(cfg, &f, &st, &err);
    if (rc == 0)
        print_forward(&st);
    else
        rc = cli_fail(&FORWARD, &err);
    cli_config_free(cfg);
    return rc;
}
