/* cmd_train.c: the training command (`bert_pretrain CONFIG.yaml`), eval and export. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "config.h"
#include "dist.h"
#include "model.h"
#include "train.h"

#define MAX_SETS 64

static int report(const BpError *err) {
    fprintf(stderr, "error: %s\n", err->msg);
    return err->status ? err->status : 1;
}

/* Shared option parsing: the positional CONFIG, repeated --set, plus the options named in `extra`
 * (each taking a value) stored in extra_values. Returns 0 or 2 after printing a usage error. */
typedef struct {
    const char *config;
    char *sets[MAX_SETS];
    int n_sets;
    bool dry_run;
} CommonArgs;

static int parse_args(int argc, char **argv, CommonArgs *ca, const char *const *extra, const char **extra_values,
                      int n_extra, bool allow_dry_run, const char *usage) {
    memset(ca, 0, sizeof *ca);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--set")) {
            if (i + 1 >= argc) goto missing;
            if (ca->n_sets == MAX_SETS) {
                fprintf(stderr, "error: more than %d --set options\n", MAX_SETS);
                return 2;
            }
            ca->sets[ca->n_sets++] = argv[++i];
            continue;
        }
        if (allow_dry_run && !strcmp(a, "--dry-run")) {
            ca->dry_run = true;
            continue;
        }
        int k = 0;
        for (; k < n_extra; k++)
            if (!strcmp(a, extra[k])) break;
        if (k < n_extra) {
            if (i + 1 >= argc) goto missing;
            extra_values[k] = argv[++i];
            continue;
        }
        if (a[0] == '-') {
            fprintf(stderr, "error: unknown option '%s'\nusage: %s\n", a, usage);
            return 2;
        }
        if (ca->config) {
            fprintf(stderr, "error: unexpected argument '%s' (config already given: %s)\nusage: %s\n", a,
                    ca->config, usage);
            return 2;
        }
        ca->config = a;
        continue;
    missing:
        fprintf(stderr, "error: option '%s' needs a value\nusage: %s\n", a, usage);
        return 2;
    }
    if (!ca->config) {
        fprintf(stderr, "error: no config file given\nusage: %s\n", usage);
        return 2;
    }
    return 0;
}

static const char TRAIN_USAGE[] =
    "bert_pretrain CONFIG.yaml [--set section.key=value ...] [--resume auto|PATH] [--dry-run]";

int cmd_train(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        printf("usage: %s\n\n"
               "Trains through every phase of CONFIG (see configs/README.md for the keys).\n"
               "  --set k=v      override one key (repeatable), validated like the file\n"
               "  --resume auto  continue from the newest valid checkpoint of training.run_dir\n"
               "  --resume PATH  continue from that checkpoint\n"
               "  --dry-run      print the resolved configuration as JSON (stdout) and a summary\n"
               "                 (stderr), then exit without training\n"
               "SIGINT/SIGTERM finish the current step, write a checkpoint and exit 0.\n",
               TRAIN_USAGE);
        return 0;
    }
    CommonArgs ca;
    const char *names[] = {"--resume"};
    const char *values[1] = {NULL};
    int rc = parse_args(argc, argv, &ca, names, values, 1, true, TRAIN_USAGE);
    if (rc) return rc;
    Config *cfg = malloc(sizeof *cfg);
    if (!cfg) return 1;
    BpError err = {0};
    if (config_load_cli(cfg, ca.config, ca.sets, ca.n_sets, dist_world_size(), &err) != 0) {
        free(cfg);
        return report(&err);
    }
    if (ca.dry_run) {
        ParamTable t = {0};
        int vocab = cfg->model.vocab_size ? cfg->model.vocab_size : 30522;
        if (model_param_table(&cfg->model, vocab, &t, &err) != 0) {
            free(cfg);
            return report(&err);
        }
        long long n = 0;
        for (int i = 0; i < t.n; i++) n += (long long)t.params[i].numel;
        param_table_free(&t);
        config_write_json(cfg, stdout);
        config_write_summary(cfg, n, stderr);
        fprintf(stderr, "memory estimate: %.2f GiB\n", train_memory_estimate(cfg, vocab) / 1073741824.0);
        free(cfg);
        return 0;
    }
    /* the exact command that continues this run: the config and every override, quoted for a shell */
    char *resume_cmd = NULL;
    size_t resume_len = 0;
    FILE *rf = open_memstream(&resume_cmd, &resume_len);
    if (rf) {
        fprintf(rf, "bert_pretrain '%s'", ca.config);
        for (int i = 0; i < ca.n_sets; i++) fprintf(rf, " --set '%s'", ca.sets[i]);
        fclose(rf);
    }
    TrainOptions opt = {.resume = values[0], .config_path = ca.config, .resume_command = resume_cmd};
    rc = train_run(cfg, &opt, &err) == 0 ? 0 : report(&err);
    free(resume_cmd);
    free(cfg);
    return rc;
}

static const char EVAL_USAGE[] = "bert_pretrain eval CONFIG.yaml --checkpoint PATH [--set k=v ...]";

int cmd_eval(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        printf("usage: %s\n\nHeld-out evaluation of a checkpoint on CONFIG's eval shard (data.eval):\n"
               "data.eval_examples examples with fixed masking, dropout off. Prints MLM loss, MLM\n"
               "accuracy, NSP loss and accuracy on stderr and one JSON line on stdout.\n",
               EVAL_USAGE);
        return 0;
    }
    CommonArgs ca;
    const char *names[] = {"--checkpoint"};
    const char *values[1] = {NULL};
    int rc = parse_args(argc, argv, &ca, names, values, 1, false, EVAL_USAGE);
    if (rc) return rc;
    if (!values[0]) {
        fprintf(stderr, "error: --checkpoint PATH is required\nusage: %s\n", EVAL_USAGE);
        return 2;
    }
    Config *cfg = malloc(sizeof *cfg);
    if (!cfg) return 1;
    BpError err = {0};
    rc = config_load_cli(cfg, ca.config, ca.sets, ca.n_sets, dist_world_size(), &err) == 0 &&
                 train_eval_checkpoint(cfg, values[0], &err) == 0
             ? 0
             : report(&err);
    free(cfg);
    return rc;
}

int cmd_export(int argc, char **argv) {
    static const char usage[] = "bert_pretrain export CHECKPOINT OUT_DIR";
    if (cli_wants_help(argc, argv)) {
        printf("usage: %s\n\nWrites OUT_DIR/model.safetensors (Hugging Face BertForPreTraining names),\n"
               "OUT_DIR/config.json (BertConfig) and OUT_DIR/vocab.txt, ready for a BERT fine-tuning\n"
               "script. Start another run from it with model.init_from: OUT_DIR/model.safetensors.\n",
               usage);
        return 0;
    }
    if (argc != 3 || argv[1][0] == '-' || argv[2][0] == '-') {
        fprintf(stderr, "error: expected CHECKPOINT and OUT_DIR\nusage: %s\n", usage);
        return 2;
    }
    BpError err = {0};
    return train_export(argv[1], argv[2], &err) == 0 ? 0 : report(&err);
}
