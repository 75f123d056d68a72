/* cmd_train.c: the training command (`bert_pretrain CONFIG.yaml`), eval and export: parse with
 * cli_parse, call one library entry point, print. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "config.h"
#include "dist.h"
#include "log.h"
#include "model.h"
#include "train.h"

static const char *train_resume;
static bool train_dry_run;
static long train_plan_ranks;
static const CliOption TRAIN_OPTIONS[] = {
    {"--resume", CLI_STRING, &train_resume, "auto|PATH",
     "continue from the newest valid checkpoint of training.run_dir (auto) or from PATH", 0, 0},
    {"--dry-run", CLI_FLAG, &train_dry_run, NULL,
     "print the resolved configuration as JSON (stdout) and a summary (stderr), train nothing", 0, 0},
    {"--ranks", CLI_LONG, &train_plan_ranks, "N",
     "with --dry-run: plan for N ranks, as `mpirun -np N` would run it (accumulation, memory per rank)", 1,
     1 << 20},
};
static const CliCommand TRAIN = {
    .name = "train",
    .usage = "CONFIG.yaml [--set section.key=value ...] [--resume auto|PATH] [--dry-run [--ranks N]]",
    .description = "Trains through every phase of CONFIG (configs/README.md documents every key).\n"
                   "SIGINT, SIGTERM, SIGHUP, SIGPIPE and the other terminating signals stop the run at the\n"
                   "next micro-batch (or evaluation batch), write a checkpoint and exit 0.\n"
                   "One trainer per training.run_dir: a second one is refused, naming the holder.\n"
                   "Exit status 3: training stopped because the loss or the gradients became\n"
                   "non-finite (a divergence; not with training.skip_nonfinite).\n",
    .positional = "CONFIG.yaml",
    .min_positional = 1,
    .max_positional = 1,
    .takes_sets = true,
    .options = TRAIN_OPTIONS,
    .n_options = (int)BP_ARRAY_LEN(TRAIN_OPTIONS),
};

/* --dry-run: the resolved config and the start-up plan, nothing trained */
static int dry_run(const Config *cfg, BpError *err) {
    cli_set_threads(cfg->training.threads); /* the plan's per-thread memory is for the run's threads */
    ParamTable t = {0};
    int vocab = cfg->model.vocab_size ? cfg->model.vocab_size : 30522;
    if (model_param_table(&cfg->model, vocab, &t, err) != 0) return -1;
    long long n = params_count(&t);
    param_table_free(&t);
    config_write_json(cfg, stdout);
    config_write_summary(cfg, n, stderr);
    TrainMemory mem = train_memory_plan(cfg, vocab);
    train_memory_print(&mem, stderr);
    fprintf(stderr, "memory estimate: %.2f GiB\n", mem.peak_rank0 / 1073741824.0);
    return 0;
}

/* the exact command that continues this run: the config and every override, quoted for a shell */
static char *resume_command(const CliArgs *a) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) return NULL;
    fprintf(f, "bert_pretrain '%s'", a->positional[0]);
    for (int i = 0; i < a->n_sets; i++) fprintf(f, " --set '%s'", a->sets[i]);
    fclose(f);
    return text;
}

/* The outcome of a training command on one rank: the message (rank 0 alone for what every rank
 * saw the same: a configuration error), then the exit with MPI finalised, or the whole job ended
 * when this rank failed alone (train.h). */
static int train_exit(int rc, const BpError *err, bool every_rank_saw_it) {
    if (rc == 0) {
        dist_finalize();
        return 0;
    }
    int status = bp_error_status(err);
    if (err->msg[0] && (dist_rank() == 0 || !every_rank_saw_it)) {
        if (dist_world_size() > 1 && dist_rank() != 0)
            fprintf(stderr, "bert_pretrain train (rank %d of %d): %s\n", dist_rank(), dist_world_size(), err->msg);
        else
            cli_fail(&TRAIN, err);
    }
    if (rc == TRAIN_FAILED_ALONE) dist_abort(status);
    dist_finalize();
    return status;
}

int cmd_train(int argc, char **argv) {
    CliArgs a;
    int rc = cli_parse(&TRAIN, argc, argv, &a);
    if (rc != CLI_OK) return rc;
    BpError err = {0};
    /* before the config: it derives the accumulation from the number of ranks */
    if (dist_init(&err) != 0) return cli_fail(&TRAIN, &err);
    if (train_plan_ranks && (!train_dry_run || dist_world_size() > 1)) {
        dist_finalize();
        return cli_usage_error(&TRAIN, "--ranks N plans a run with --dry-run, without mpirun (under mpirun the "
                                       "job's own rank count is the plan's)");
    }
    Config *cfg = cli_config_load_ranks(a.positional[0], &a, train_plan_ranks ? (int)train_plan_ranks
                                                                               : dist_world_size(), &err);
    if (!cfg) return train_exit(-1, &err, true);
    if (train_dry_run) {
        rc = dist_rank() == 0 ? dry_run(cfg, &err) : 0;
        cli_config_free(cfg);
        return train_exit(rc, &err, true);
    }
    cli_set_threads(cfg->training.threads);
    char *resume_cmd = resume_command(&a);
    TrainOptions opt = {.resume = train_resume, .config_path = a.positional[0], .resume_command = resume_cmd};
    rc = train_run(cfg, &opt, &err);
    free(resume_cmd);
    cli_config_free(cfg);
    return train_exit(rc, &err, false);
}

static const char *eval_checkpoint;
static const CliOption EVAL_OPTIONS[] = {
    {"--checkpoint", CLI_STRING, &eval_checkpoint, "PATH", "the checkpoint to evaluate (required)", 0, 0},
};
static const CliCommand EVAL = {
    .name = "eval",
    .usage = "eval CONFIG.yaml --checkpoint PATH [--set section.key=value ...]",
    .description = "Held-out evaluation of a checkpoint on CONFIG's eval shard (data.eval):\n"
                   "data.eval_examples examples with fixed masking, dropout off. Prints MLM loss, MLM\n"
                   "accuracy, NSP loss and accuracy on stderr and one JSON line on stdout.\n",
    .positional = "CONFIG.yaml",
    .min_positional = 1,
    .max_positional = 1,
    .takes_sets = true,
    .options = EVAL_OPTIONS,
    .n_options = (int)BP_ARRAY_LEN(EVAL_OPTIONS),
};

int cmd_eval(int argc, char **argv) {
    CliArgs a;
    int rc = cli_parse(&EVAL, argc, argv, &a);
    if (rc != CLI_OK) return rc;
    if (!eval_checkpoint) return cli_usage_error(&EVAL, "--checkpoint PATH is required");
    BpError err = {0};
    Config *cfg = cli_config_load(a.positional[0], &a, &err);
    if (!cfg) return cli_fail(&EVAL, &err);
    cli_set_threads(cfg->training.threads);
    EvalRecord ev;
    rc = train_eval_checkpoint(cfg, eval_checkpoint, &ev, &err) == 0 ? 0 : cli_fail(&EVAL, &err);
    cli_config_free(cfg);
    if (rc != 0) return rc;
    log_eval_line(stderr, &ev);
    printf("{\"checkpoint\":\"%s\",\"step\":%ld,\"eval_mlm_loss\":%.6f,\"eval_mlm_acc\":%.6f,"
           "\"eval_mlm_majority_acc\":%.6f,\"eval_nsp_loss\":%.6f,\"eval_nsp_acc\":%.6f,\"examples\":%ld}\n",
           eval_checkpoint, ev.step, ev.mlm_loss, ev.mlm_acc, ev.mlm_majority_acc, ev.nsp_loss, ev.nsp_acc,
           ev.examples);
    return 0;
}

static const CliCommand EXPORT = {
    .name = "export",
    .usage = "export CHECKPOINT OUT_DIR",
    .description = "Writes OUT_DIR/model.safetensors (Hugging Face BertForPreTraining names),\n"
                   "OUT_DIR/config.json (BertConfig) and OUT_DIR/vocab.txt, ready for a BERT fine-tuning\n"
                   "script. Start another run from it with model.init_from: OUT_DIR/model.safetensors.\n",
    .positional = "CHECKPOINT and OUT_DIR",
    .min_positional = 2,
    .max_positional = 2,
};

int cmd_export(int argc, char **argv) {
    CliArgs a;
    int rc = cli_parse(&EXPORT, argc, argv, &a);
    if (rc != CLI_OK) return rc;
    BpError err = {0};
    ExportReport rep;
    bp_cleanup_on_stop_signals(); /* a signal removes the half-written files and the lock */
    if (train_export(a.positional[0], a.positional[1], &rep, &err) != 0) return cli_fail(&EXPORT, &err);
    cli_message(&EXPORT, "exported step %ld of %s to %s/ (model.safetensors, config.json, vocab.txt)", rep.step,
                a.positional[0], a.positional[1]);
    return 0;
}
