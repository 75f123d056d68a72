/* cmd_bench.c: `bert_pretrain bench`: parse, call bench_run (or optim_bench with
 * --optimizer-only), print its figures as text lines and one final JSON line for scripts/bench.sh.
 * Method and figures: docs/performance.md. */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "cli.h"
#include "commands.h"
#include "config.h"
#include "dist.h"
#include "kernels.h"
#include "model.h"
#include "optim.h"

static long bench_seq = -1, bench_batch = -1, bench_predictions = 0, bench_steps = 10, bench_warmup = 2;
static long bench_floats = -1;
static bool bench_no_sgemm, bench_optimizer_only, bench_allreduce_only;
static const char *bench_bf16_engine;
static const char *bench_fp32_engine;
static bool bench_fp32_activations;
static const CliOption BENCH_OPTIONS[] = {
    {"--seq", CLI_LONG, &bench_seq, "T", "sequence length (default: phase 0 seq_len, else 128)", 2, 65536},
    {"--micro-batch", CLI_LONG, &bench_batch, "B", "examples per step (default: training.micro_batch, else 32)", 1,
     65536},
    {"--predictions", CLI_LONG, &bench_predictions, "P", "prediction slots per example (default round(0.15 T))", 1,
     65536},
    {"--steps", CLI_LONG, &bench_steps, "N", "timed steps (default 10)", 1, 100000},
    {"--warmup", CLI_LONG, &bench_warmup, "W", "untimed steps before them (default 2)", 0, 100000},
    {"--no-sgemm", CLI_FLAG, &bench_no_sgemm, NULL, "skip the sgemm measurement", 0, 0},
    {"--bf16-engine", CLI_STRING, &bench_bf16_engine, "ours|onednn",
     "bf16 products of the steps on this engine instead of the rule's (docs/performance.md)", 0, 0},
    {"--fp32-engine", CLI_STRING, &bench_fp32_engine, "openblas|onednn",
     "fp32 products of the steps on this engine instead of the rule's (docs/performance.md)", 0, 0},
    {"--fp32-activations", CLI_FLAG, &bench_fp32_activations, NULL,
     "keep the activations in fp32 even when the products run in bf16 (docs/performance.md)", 0, 0},
    {"--optimizer-only", CLI_FLAG, &bench_optimizer_only, NULL, "time the optimizer step against a memcpy instead",
     0, 0},
    {"--floats", CLI_LONG, &bench_floats, "N",
     "--optimizer-only: floats (default: the model's parameter count); --allreduce: the largest sum (default 16Mi)",
     10000, 4000000000L},
    {"--allreduce", CLI_FLAG, &bench_allreduce_only, NULL,
     "time sums across the ranks of mpirun instead (1Ki .. N floats, median of --steps)", 0, 0},
};
static const CliCommand BENCH = {
    .name = "bench",
    .usage = "bench [CONFIG.yaml] [--set section.key=value ...] [--seq T] [--micro-batch B]\n"
             "                           [--predictions P] [--steps N] [--warmup W] [--no-sgemm]\n"
             "                           [--bf16-engine ours|onednn] [--fp32-engine openblas|onednn]\n"
             "       bert_pretrain bench --optimizer-only [CONFIG.yaml] [--set ...] [--floats N]\n"
             "       mpirun -np R bert_pretrain bench --allreduce [--floats N] [--steps N]",
    .description =
        "Times training steps (forward + backward with dropout on, then the configured optimizer's\n"
        "step: LAMB by default) on random data after W warm-up steps and prints the median:\n"
        "tokens/s, achieved matmul GFLOP/s (FLOPs counted as scripts/torch_bert.py counts them),\n"
        "the cblas_sgemm rate measured in the same run at this step's product shapes (skipped with\n"
        "--no-sgemm), their ratio, the peak RSS and the RSS after every step; the last line is JSON.\n"
        "The same measurement times each bf16 engine this machine can run (ours, oneDNN) at every\n"
        "shape: the evidence for the rule that picks one (docs/performance.md).\n"
        "Defaults: bert-mini (L4 H256 A4, vocab 30522), T 128, B 32, P round(0.15 T), 10 steps;\n"
        "with a CONFIG, its model, phase 0 seq_len and training.micro_batch.\n"
        "--optimizer-only times the optimizer step against a memcpy of the same size instead\n"
        "(optim_bench): N floats, default the parameter count of the model (bert-mini unless a\n"
        "CONFIG or --set model.preset says otherwise).\n"
        "--allreduce (under mpirun) times MPI_Allreduce sums of 1Ki, 4Ki ... N floats across the ranks\n"
        "and prints time and ring bus bandwidth per size (docs/scaling.md's latency-bandwidth model).\n",
    .positional = "CONFIG.yaml",
    .min_positional = 0,
    .max_positional = 1,
    .takes_sets = true,
    .options = BENCH_OPTIONS,
    .n_options = (int)BP_ARRAY_LEN(BENCH_OPTIONS),
};

/* The config file; or, without one, the defaults with bert-mini's shape, then the user's --set
 * options. cli_config_load validates a config as training would run it, which needs a phase:
 * without a file it gets one phase of the bench's own T and B (what the steps will run). */
static Config *load_config(const CliArgs *a, int T, int B, BpError *err) {
    if (a->n_positional) return cli_config_load(a->positional[0], a, err);
    char phase[96], micro[48];
    char *defaults[] = {"model.preset=bert-mini", phase, micro};
    const int nd = (int)BP_ARRAY_LEN(defaults);
    snprintf(phase, sizeof phase, "phases=[{seq_len: %d, batch_size: %d, steps: 1}]", T, B);
    snprintf(micro, sizeof micro, "training.micro_batch=%d", B);
    if (a->n_sets + nd > CLI_MAX_SETS) {
        bp_fail_usage(err, "more than %d --set options", CLI_MAX_SETS - nd);
        return NULL;
    }
    CliArgs with = *a;
    memcpy(with.sets, defaults, sizeof defaults);
    memcpy(with.sets + nd, a->sets, sizeof(char *) * (size_t)a->n_sets);
    with.n_sets = a->n_sets + nd;
    Config *cfg = cli_config_load(NULL, &with, err);
    if (!cfg) bp_err_prefix(err, "without a CONFIG, bench validates one phase of T %d and B %d", T, B);
    return cfg;
}

static int bench_optimizer(const ModelConfig *mc, int V, BpError *err) {
    if (bench_floats < 0) {
        ParamTable t;
        if (model_param_table(mc, V, &t, err)) return -1;
        bench_floats = (long)t.total;
        param_table_free(&t);
    }
    printf("bench: optimizer step at the size of L=%d H=%d V=%d (%.1fM floats)\n", mc->layers, mc->hidden, V,
           (double)bench_floats / 1e6);
    OptimBench b;
    if (optim_bench((size_t)bench_floats, &b, err)) return -1;
    optim_bench_print(&b, stdout);
    const OptimBenchRow *copy = optim_bench_row(&b, "memcpy"), *lamb = optim_bench_row(&b, "lamb"),
                        *adam = optim_bench_row(&b, "adam");
    printf("{\"bench\": \"optimizer\", \"floats\": %ld, \"threads\": %d, \"memcpy_ms\": %.3f, \"lamb_ms\": %.3f, "
           "\"lamb_share\": %.3f, \"adam_ms\": %.3f, \"adam_share\": %.3f}\n",
           bench_floats, b.threads, copy->ms, lamb->ms, lamb->share, adam->ms, adam->share);
    return 0;
}

static void print_steps(const Config *cfg, int V, const BenchResult *r) {
    const ModelConfig *mc = &cfg->model;
    printf("bench: L=%d H=%d A=%d I=%d V=%d, B=%d T=%d P=%d, %d thread(s), gelu %s, dropout %g/%g, %s\n", mc->layers,
           mc->hidden, mc->heads, mc->intermediate, V, r->batch, r->seq, r->predictions, r->threads,
           mc->gelu == GELU_TANH ? "tanh" : "erf", mc->dropout, mc->attention_dropout, r->optimizer);
    printf("bench: parameters %.2fM, activations %.1f MiB (%s, attention probabilities %s)", r->params / 1e6,
           r->activation_bytes / 1048576.0, r->storage.bf16 ? "Q/K/V, context and layer outputs in bf16" : "all fp32",
           r->storage.recompute_attention ? "recomputed" : "kept");
    if (r->engine.bf16 && r->engine.bf16_kind == GEMM_BF16_ONEDNN)
        printf(", oneDNN's bf16 operand copies %.1f MiB (all threads)", r->gemm_copy_bytes / 1048576.0);
    printf("\n");
    printf("bench: products in %s on %s (%s); OpenBLAS core %s (self-test error %.1e); elementwise kernels %s\n",
           r->engine.bf16 ? "bf16" : "fp32", r->engine.isa, r->engine.why, r->blas_core,
           r->blas_selftest, kern_isa());
    int all = r->warmup + r->steps;
    printf("bench: step times (ms, warm-up first):");
    for (int s = 0; s < all; s++) printf(" %.0f%s", 1e3 * r->step_s[s], s + 1 == r->warmup ? " |" : "");
    printf("\nbench: RSS after each step (MiB):");
    for (int s = 0; s < all; s++) printf(" %.1f%s", r->rss_mib[s], s + 1 == r->warmup ? " |" : "");
    printf("\nbench: peak RSS %.1f MiB; growth over the timed steps %+.1f MiB\n", r->peak_rss_mib, r->rss_growth_mib);
    printf("bench: other processes used %.0f%% of the machine's CPU time during the steps\n", 100.0 * r->others_cpu);
    printf("bench: median step %.1f ms (forward %.1f, backward %.1f, optimizer %.1f) over %d steps\n",
           1e3 * r->median_step_s, 1e3 * r->median_forward_s, 1e3 * r->median_backward_s,
           1e3 * r->median_optimizer_s, r->steps);
    printf("bench: %.0f tokens/s, %.1f matmul GFLOP/s over the step, %.1f over forward+backward (%.1f GFLOP "
           "per step)\n",
           r->tokens_per_s, r->gflops, r->gflops_fwd_bwd, r->flops_per_step / 1e9);
}

/* the rest of a rate line: each bf16 engine's rate, where it can run */
static void print_bf16_rates(const double *gflops) {
    for (int k = 0; k < 2; k++)
        if (gflops[k] > 0) printf(", bf16 %s %6.1f", gemm_bf16_kind_name((GemmBf16Kind)k), gflops[k]);
    printf(" GFLOP/s\n");
}

static void print_sgemm(const BenchResult *r) {
    const ModelGemmShape *att = NULL;
    int n_att = 0;
    for (int i = 0; i < r->n_rates; i++) {
        const BenchGemmRate *x = &r->rates[i];
        const ModelGemmShape *g = &x->shape;
        if (x->batched) {
            att = att ? att : g;
            n_att++;
            continue;
        }
        printf("bench: gemm %-14s %c%c %6d x %6d x %6d: kern_gemm (%s) %6.1f, fp32 OpenBLAS %d threads %6.1f",
               g->what, g->ta ? 'T' : 'N', g->tb ? 'T' : 'N', g->M, g->N, g->K,
               r->engine.bf16 ? "bf16" : "fp32", x->kern_gflops, r->threads,
               x->openblas_gflops);
        print_bf16_rates(x->bf16_gflops);
    }
    if (att) {
        printf("bench: sgemm attention: %d products per (example, head) of %d x %d x %d, single-threaded each: %.1f",
               n_att, att->M, att->N, att->K, r->attention_gflops);
        for (int i = 0; i < r->n_rates; i++)
            if (r->rates[i].batched) printf(" [%s]", r->rates[i].shape.what);
        printf(" GFLOP/s\n");
        for (int i = 0; i < r->n_rates; i++) {
            const BenchGemmRate *x = &r->rates[i];
            if (!x->batched || (!x->bf16_gflops[0] && !x->bf16_gflops[1])) continue;
            printf("bench: attention %-14s %c%c %d x %d x %d: kern (%s) %6.1f", x->shape.what, x->shape.ta ? 'T' : 'N',
                   x->shape.tb ? 'T' : 'N', x->shape.M, x->shape.N, x->shape.K, r->engine.bf16 ? "bf16" : "fp32",
                   x->kern_gflops);
            print_bf16_rates(x->bf16_gflops);
        }
    }
    printf("bench: cblas_sgemm at this step's shapes: %.1f GFLOP/s (best of kern_gemm and OpenBLAS's own %d "
           "threads per shape; kern_gemm alone %.1f)\n",
           r->sgemm_gflops, r->threads, r->kern_gemm_gflops);
    printf("bench: other processes used %.0f%% of the machine's CPU time during the sgemm measurement\n",
           100.0 * r->others_cpu_sgemm);
    printf("bench: achieved (forward+backward) / sgemm = %.2f\n", r->ratio);
    if (r->bf16_gemm_gflops[0] > 0)
        printf("bench: bf16 GEMM at this step's shapes (kern_gemm, the model's threads): ours %.1f, oneDNN %.1f "
               "GFLOP/s (0: not available); the rule runs %s\n",
               r->bf16_gemm_gflops[GEMM_BF16_OWN], r->bf16_gemm_gflops[GEMM_BF16_ONEDNN],
               gemm_bf16_kind_name(gemm_bf16_kind_default()));
}

static void print_json(const Config *cfg, int V, const BenchResult *r) {
    const ModelConfig *mc = &cfg->model;
    printf("{\"bench\": \"bert_pretrain\", \"layers\": %d, \"hidden\": %d, \"heads\": %d, \"seq\": %d, "
           "\"batch\": %d, \"predictions\": %d, \"vocab\": %d, \"threads\": %d, \"warmup\": %d, \"steps\": %d, "
           "\"step_s\": %.6f, \"forward_s\": %.6f, \"backward_s\": %.6f, \"optimizer_s\": %.6f, "
           "\"tokens_per_s\": %.1f, \"gflops\": %.2f, \"gflops_fwd_bwd\": %.2f, \"sgemm_gflops\": %.2f, "
           "\"kern_gemm_gflops\": %.2f, \"ratio\": %.3f, \"peak_rss_mib\": %.1f, \"rss_first_mib\": %.1f, "
           "\"rss_last_mib\": %.1f, \"rss_growth_mib\": %.1f, \"others_cpu\": %.3f, \"others_cpu_sgemm\": %.3f, \"precision\": \"%s\", \"blas_core\": \"%s\", \"kernels_isa\": \"%s\", "
           "\"bf16_engine\": \"%s\", \"bf16_gemm_ours_gflops\": %.2f, \"bf16_gemm_onednn_gflops\": %.2f, "
           "\"activation_mib\": %.1f, \"activations_bf16\": %s, \"recompute_attention\": %s}\n",
           mc->layers, mc->hidden, mc->heads, r->seq, r->batch, r->predictions, V, r->threads, r->warmup, r->steps,
           r->median_step_s, r->median_forward_s, r->median_backward_s, r->median_optimizer_s, r->tokens_per_s,
           r->gflops, r->gflops_fwd_bwd, r->sgemm_gflops, r->kern_gemm_gflops, r->ratio, r->peak_rss_mib,
           r->rss_first_mib, r->rss_last_mib, r->rss_growth_mib, r->others_cpu, r->others_cpu_sgemm,
           r->engine.bf16 ? "bf16" : "fp32", r->blas_core, kern_isa(),
           r->engine.bf16 ? gemm_bf16_kind_name(r->engine.bf16_kind) : "none", r->bf16_gemm_gflops[GEMM_BF16_OWN],
           r->bf16_gemm_gflops[GEMM_BF16_ONEDNN], r->activation_bytes / 1048576.0,
           r->storage.bf16 ? "true" : "false", r->storage.recompute_attention ? "true" : "false");
}

static int bench_steps_run(const Config *cfg, int V, BpError *err) {
    BenchOptions o = {
        .vocab_size = V,
        .seq = (int)(bench_seq > 0 ? bench_seq : cfg->phases[0].seq_len),
        .batch = (int)(bench_batch > 0 ? bench_batch : cfg->training.micro_batch),
        .predictions = (int)bench_predictions,
        .steps = (int)bench_steps,
        .warmup = (int)bench_warmup,
        .sgemm = !bench_no_sgemm,
        .bf16_engine_set = bench_bf16_engine != NULL,
        .fp32_engine_set = bench_fp32_engine != NULL,
        .fp32_activations = bench_fp32_activations,
    };
    if (bench_fp32_engine) {
        if (strcmp(bench_fp32_engine, "openblas") && strcmp(bench_fp32_engine, "onednn"))
            return bp_fail_usage(err, "--fp32-engine must be openblas or onednn, not '%s'", bench_fp32_engine);
        o.fp32_onednn = strcmp(bench_fp32_engine, "onednn") == 0;
    }
    if (bench_bf16_engine) {
        if (strcmp(bench_bf16_engine, "ours") == 0) {
            o.bf16_engine = GEMM_BF16_OWN;
        } else if (strcmp(bench_bf16_engine, "onednn") == 0) {
            o.bf16_engine = GEMM_BF16_ONEDNN;
        } else {
            return bp_fail_usage(err, "--bf16-engine must be ours or onednn, not '%s'", bench_bf16_engine);
        }
    }
    BenchResult r;
    if (bench_run(cfg, &o, &r, err)) return -1;
    print_steps(cfg, V, &r);
    if (r.sgemm_measured) print_sgemm(&r);
    print_json(cfg, V, &r);
    bench_result_free(&r);
    return 0;
}

/* every rank runs the sums; rank 0 prints */
static int bench_allreduce_run(BpError *err) {
    if (dist_init(err) != 0) return -1;
    AllreduceBench b;
    int rc = bench_allreduce(bench_floats > 0 ? (size_t)bench_floats : (size_t)1 << 24, (int)bench_steps, &b, err);
    if (rc == 0 && dist_rank() == 0) {
        printf("bench: allreduce (MPI_SUM of floats) across %d rank(s), median of %ld\n", b.ranks, bench_steps);
        for (int i = 0; i < b.n_sizes; i++)
            printf("bench: allreduce %10zu floats (%9.3f MiB): %10.1f us, bus %7.2f GB/s\n", b.floats[i],
                   (double)b.floats[i] * 4 / 1048576.0, b.median_s[i] * 1e6, b.bus_gb_s[i]);
        printf("{\"bench\": \"allreduce\", \"ranks\": %d, \"floats\": [", b.ranks);
        for (int i = 0; i < b.n_sizes; i++) printf("%s%zu", i ? ", " : "", b.floats[i]);
        printf("], \"seconds\": [");
        for (int i = 0; i < b.n_sizes; i++) printf("%s%.9f", i ? ", " : "", b.median_s[i]);
        printf("]}\n");
    }
    dist_finalize();
    return rc;
}

int cmd_bench(int argc, char **argv) {
    CliArgs a;
    int rc = cli_parse(&BENCH, argc, argv, &a);
    if (rc != CLI_OK) return rc;
    BpError err = {0};
    if (bench_allreduce_only) return bench_allreduce_run(&err) == 0 ? 0 : cli_fail(&BENCH, &err);
    Config *cfg = load_config(&a, bench_seq > 0 ? (int)bench_seq : 128, bench_batch > 0 ? (int)bench_batch : 32, &err);
    if (!cfg) return cli_fail(&BENCH, &err);
    cli_set_threads(cfg->training.threads);
    int V = cfg->model.vocab_size > 0 ? cfg->model.vocab_size : 30522;
    int status = bench_optimizer_only ? bench_optimizer(&cfg->model, V, &err)
                                      : bench_steps_run(cfg, V, &err);
    rc = status == 0 ? 0 : cli_fail(&BENCH, &err);
    cli_config_free(cfg);
    return rc;
}
