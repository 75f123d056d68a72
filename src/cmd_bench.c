/* cmd_bench.c: `bert_pretrain bench` (moved from cmd_model.c; see docs/performance.md). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "commands.h"
#include "config.h"
#include "kernels.h"
#include "model.h"
#include "optim.h"
#include "rng.h"

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
 * bench (method and figures: docs/performance.md; `make bench` runs scripts/bench.sh) */

static void bench_usage(FILE *out) {
    fprintf(out,
            "usage: bert_pretrain bench [CONFIG.yaml] [--set section.key=value ...] [--seq T]\n"
            "                           [--micro-batch B] [--predictions P] [--steps N] [--warmup W]\n"
            "                           [--no-sgemm]\n"
            "       bert_pretrain bench --optimizer-only [CONFIG.yaml] [--set ...] [--floats N]\n\n"
            "Times training steps (forward + backward with dropout on, then the configured optimizer's\n"
            "step: LAMB by default) on random data after W warm-up steps (default 2) and prints the\n"
            "median: tokens/s, achieved matmul GFLOP/s (FLOPs counted as ../shared/bench/torch_bert.py\n"
            "counts them), the cblas_sgemm rate measured in the same run at this step's product shapes\n"
            "(skipped with --no-sgemm), their ratio, the peak RSS and the RSS after every step; the last\n"
            "line is JSON.\n"
            "Defaults: bert-mini (L4 H256 A4, vocab 30522), T 128, B 32, P round(0.15 T), 10 steps;\n"
            "with a CONFIG, its model, phase 0 seq_len and training.micro_batch.\n"
            "--optimizer-only times the optimizer step against a memcpy of the same size instead\n"
            "(optim_bench): N floats, default the parameter count of the model (bert-mini unless a\n"
            "CONFIG or --set model.preset says otherwise).\n");
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* median of n values; sorts scratch (n values), leaving v in step order */
static double median(const double *v, double *scratch, int n) {
    memcpy(scratch, v, sizeof(double) * (size_t)n);
    qsort(scratch, (size_t)n, sizeof *scratch, cmp_double);
    return n % 2 ? scratch[n / 2] : 0.5 * (scratch[n / 2 - 1] + scratch[n / 2]);
}

/* resident set now, from /proc/self/statm (pages); -1 when unreadable */
static double rss_now_mib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    if (n != 2) return -1;
    return (double)resident * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

/* the process's peak resident set so far (getrusage: KiB on Linux) */
static double rss_peak_mib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return -1;
    return (double)ru.ru_maxrss / 1024.0;
}

/* CPU seconds all processes have used (/proc/stat: user, nice, system, irq, softirq, steal), and
 * this process's own (getrusage). Their difference over a run is what other processes took: the
 * measure of how quiet the machine was. */
static double cpu_busy_all_s(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]);
    fclose(f);
    if (n < 8) return -1;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static double cpu_self_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return -1;
    return (double)ru.ru_utime.tv_sec + 1e-6 * ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * ru.ru_stime.tv_usec;
}

typedef struct {
    double wall, all, self;
} CpuMark;

static CpuMark cpu_mark(void) { return (CpuMark){bp_now(), cpu_busy_all_s(), cpu_self_s()}; }

/* other processes' share of the machine's cores between two marks, in [0, 1] (-1: unknown) */
static double cpu_others(CpuMark a, CpuMark b) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (a.all < 0 || b.all < 0 || a.self < 0 || ncpu < 1 || b.wall <= a.wall) return -1;
    double o = ((b.all - a.all) - (b.self - a.self)) / ((b.wall - a.wall) * (double)ncpu);
    return o < 0 ? 0 : o > 1 ? 1 : o;
}

typedef struct {
    const char *what;
    bool ta, tb;
    int M, N, K;
    double count; /* times per training step */
} GemmShape;

/* Repetitions of a timed product: at least 2 and up to 5, fewer once 0.6 s are spent (bert-base
 * at T 512 has products of a quarter second). The best repetition counts. */
static bool more_reps(int r, double spent) { return r < 2 || (r < 5 && spent < 0.6); }

/* seconds of one product through kern_gemm (the model's own path) or through OpenBLAS's threads */
static double time_gemm(const GemmShape *g, float *A, float *B, float *C, bool openblas_threads, int nt) {
    double best = 1e30, spent = 0;
    int lda = g->ta ? g->M : g->K, ldb = g->tb ? g->K : g->N;
    if (openblas_threads) openblas_set_num_threads(nt);
    for (int r = 0; more_reps(r, spent); r++) {
        double t0 = bp_now();
        if (openblas_threads)
            cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, g->M,
                        g->N, g->K, 1.0f, A, lda, B, ldb, 0.0f, C, g->N);
        else
            kern_gemm(g->ta, g->tb, g->M, g->N, g->K, 1.0f, A, lda, B, ldb, 0.0f, C, g->N);
        double t = bp_now() - t0;
        spent += t;
        if (t < best) best = t;
    }
    if (openblas_threads) openblas_set_num_threads(1);
    return best;
}

/* The six attention products of one layer (forward S = Q K^T, C = P V; backward dV = P^T dC,
 * dP = dC V^T, dQ = dS K, dK = dS^T Q), each B*A independent products on strided views of an
 * (N,3H) buffer as the model runs them: single-threaded sgemm per (example, head) spread over the
 * OpenMP threads. Returns seconds for all six (the best repetition). */
static double time_attention(int B, int A, int T, int H, const float *qkv, float *ctx, float *tt, int nt) {
    int D = H / A, H3 = 3 * H;
    double best = 1e30, spent = 0;
    for (int r = 0; more_reps(r, spent); r++) {
        double t0 = bp_now();
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int bh = 0; bh < B * A; bh++) {
            int b = bh / A, h = bh % A;
            const float *Q = qkv + (size_t)b * T * H3 + (size_t)h * D, *K = Q + H, *V = Q + 2 * H;
            float *S = tt + (size_t)omp_get_thread_num() * T * T, *C = ctx + (size_t)b * T * H + (size_t)h * D;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, 1.0f, Q, H3, K, H3, 0.0f, S, T);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, 1.0f, S, T, V, H3, 0.0f, C, H);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1.0f, S, T, Q, H3, 0.0f, C, H);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, 1.0f, C, H, V, H3, 0.0f, S, T);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, 1.0f, S, T, K, H3, 0.0f, C, H);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1.0f, S, T, Q, H3, 0.0f, C, H);
        }
        double t = bp_now() - t0;
        spent += t;
        if (t < best) best = t;
    }
    return best;
}

/* value of the row `name` (ms and share of copy) in optim_bench's printed table */
static bool optim_row(const char *table, const char *name, double *ms, double *share) {
    size_t n = strlen(name);
    for (const char *l = table; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, name, n) || l[n] != ' ') continue;
        int bpe;
        double gbs;
        if (sscanf(l + n, " %lf %d %lf %lf%%", ms, &bpe, &gbs, share) == 4) {
            *share /= 100.0;
            return true;
        }
    }
    return false;
}

static int bench_optimizer(size_t n_floats) {
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (!mem) {
        perror("bert_pretrain bench: open_memstream");
        return 1;
    }
    double lamb = optim_bench(n_floats, mem);
    fclose(mem);
    fputs(text, stdout);
    double ms[3] = {0}, share[3] = {0};
    const char *names[3] = {"memcpy", "lamb", "adam"};
    bool ok = lamb >= 0;
    for (int i = 0; i < 3 && ok; i++) ok = optim_row(text, names[i], &ms[i], &share[i]);
    free(text);
    if (!ok) {
        fprintf(stderr, "bert_pretrain bench: the optimizer benchmark failed\n");
        return 1;
    }
    printf("{\"bench\": \"optimizer\", \"floats\": %zu, \"threads\": %d, \"memcpy_ms\": %.3f, \"lamb_ms\": %.3f, "
           "\"lamb_share\": %.3f, \"adam_ms\": %.3f, \"adam_share\": %.3f}\n",
           n_floats, kern_threads(), ms[0], ms[1], share[1], ms[2], share[2]);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        bench_usage(stdout);
        return 0;
    }
    SetList sets = {.n_sets = 0};
    const char *path = NULL;
    long T = -1, B = -1, P = -1, steps = 10, warmup = 2, floats = -1;
    bool no_sgemm = false, optimizer_only = false;
    for (int i = 1; i < argc; i++) {
        int r = take_set(argc, argv, &i, &sets, "bench");
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(argv[i], "--no-sgemm")) {
            no_sgemm = true;
            continue;
        }
        if (!strcmp(argv[i], "--optimizer-only")) {
            optimizer_only = true;
            continue;
        }
        bool missing = false;
        const char *v;
        long *dst = NULL, lo = 1, hi = 0;
        if ((v = take_opt(argc, argv, &i, "--seq", &missing))) dst = &T, hi = 65536;
        else if ((v = take_opt(argc, argv, &i, "--micro-batch", &missing))) dst = &B, hi = 65536;
        else if ((v = take_opt(argc, argv, &i, "--predictions", &missing))) dst = &P, hi = 65536;
        else if ((v = take_opt(argc, argv, &i, "--steps", &missing))) dst = &steps, hi = 100000;
        else if ((v = take_opt(argc, argv, &i, "--warmup", &missing))) dst = &warmup, lo = 0, hi = 100000;
        else if ((v = take_opt(argc, argv, &i, "--floats", &missing))) dst = &floats, lo = 10000, hi = 4000000000L;
        if (missing) {
            fprintf(stderr, "bert_pretrain bench: %s needs a value\n", argv[i]);
            return 2;
        }
        if (dst) {
            if (!parse_int(v, lo, hi, dst)) {
                fprintf(stderr, "bert_pretrain bench: '%s' is not a valid count for %s\n", v, argv[i - 1]);
                return 2;
            }
            continue;
        }
        if (argv[i][0] == '-' || path) {
            fprintf(stderr, "bert_pretrain bench: unexpected argument '%s'\n", argv[i]);
            bench_usage(stderr);
            return 2;
        }
        path = argv[i];
    }
    Config cfg;
    BpError err = {0};
    if (path) {
        if (config_load_cli(&cfg, path, sets.sets, sets.n_sets, 1, &err)) return report(&err, "bench");
        if (T < 0) T = cfg.phases[0].seq_len;
        if (B < 0) B = cfg.training.micro_batch;
    } else {
        config_defaults(&cfg);
        if (config_apply_override(&cfg, "model.preset=bert-mini", &err)) return report(&err, "bench");
        for (int i = 0; i < sets.n_sets; i++)
            if (config_apply_override(&cfg, sets.sets[i], &err)) return report(&err, "bench");
    }
    int V = cfg.model.vocab_size > 0 ? cfg.model.vocab_size : 30522;
    const ModelConfig *mc = &cfg.model;
    if (optimizer_only) {
        kern_init_threads(cfg.training.threads);
        if (floats < 0) {
            ParamTable t;
            if (model_param_table(mc, V, &t, &err)) return report(&err, "bench");
            floats = (long)t.total;
            param_table_free(&t);
        }
        printf("bench: optimizer step at the size of L=%d H=%d V=%d (%.1fM floats)\n", mc->layers, mc->hidden, V,
               (double)floats / 1e6);
        return bench_optimizer((size_t)floats);
    }
    if (T < 0) T = 128;
    if (B < 0) B = 32;
    if (P < 0) P = lround(0.15 * (double)T) > 0 ? lround(0.15 * (double)T) : 1;
    if (P > T) P = T;
    if (T > mc->max_position) {
        fprintf(stderr, "bert_pretrain bench: --seq %ld is above model.max_position %d\n", T, mc->max_position);
        return 2;
    }
    Model *m = model_create(&cfg, V, &err);
    if (!m) return report(&err, "bench");
    int nt = kern_threads();
    Batch b = {0};
    int rc = 0;
    double *tf = NULL, *tb = NULL, *to = NULL, *ts = NULL, *rss = NULL;
    float *ga = NULL, *gb = NULL, *gc = NULL;
    Optimizer *opt = NULL;
    if (batch_alloc(&b, (int)B, (int)T, (int)P, &err) || model_plan(m, (int)B, (int)T, (int)P, &err)) {
        rc = report(&err, "bench");
        goto done;
    }
    model_init_weights(m, cfg.training.seed);
    /* every slot a real prediction, no padding: the work torch_bert.py does */
    model_fill_random_batch(&b, V, mc->type_vocab_size, false, true, cfg.training.seed, 0);
    opt = optim_create(&cfg.optimizer, model_table(m), &err);
    if (!opt) {
        rc = report(&err, "bench");
        goto done;
    }
    long all = warmup + steps;
    tf = calloc((size_t)all, sizeof *tf);
    tb = calloc((size_t)all, sizeof *tb);
    to = calloc((size_t)all, sizeof *to);
    ts = calloc((size_t)all, sizeof *ts);
    rss = calloc((size_t)(all + steps), sizeof *rss);
    if (!tf || !tb || !to || !ts || !rss) {
        bp_fail(&err, "out of memory for timings");
        rc = report(&err, "bench");
        goto done;
    }
    printf("bench: L=%d H=%d A=%d I=%d V=%d, B=%ld T=%ld P=%ld, %d thread(s), gelu %s, dropout %g/%g, %s\n",
           mc->layers, mc->hidden, mc->heads, mc->intermediate, V, B, T, P, nt, mc->gelu == GELU_TANH ? "tanh" : "erf",
           mc->dropout, mc->attention_dropout, optim_describe(opt));
    printf("bench: parameters %.2fM, activations %.1f MiB\n", (double)model_table(m)->total / 1e6,
           (double)model_activation_bytes(mc, V, (int)B, (int)T, (int)P) / 1048576.0);
    fflush(stdout);
    ModelStats st;
    CpuMark mark0 = cpu_mark();
    for (long s = 0; s < all; s++) {
        ForwardArgs fa = {true, cfg.training.seed, s, 0.0, 0.0};
        double t0 = bp_now();
        model_zero_grad(m);
        if (model_forward(m, &b, &fa, &st, &err)) {
            rc = report(&err, "bench");
            goto done;
        }
        double t1 = bp_now();
        model_backward(m);
        double t2 = bp_now();
        double gn = optim_grad_norm(model_table(m), model_grads(m), NULL);
        optim_step(opt, model_params(m), model_grads(m), 1e-4, gn);
        double t3 = bp_now();
        tf[s] = t1 - t0;
        tb[s] = t2 - t1;
        to[s] = t3 - t2;
        ts[s] = t3 - t0;
        rss[s] = rss_now_mib();
    }
    double others = cpu_others(mark0, cpu_mark());
    double peak = rss_peak_mib();
    const double *mf = tf + warmup, *mb = tb + warmup, *mo = to + warmup, *ms = ts + warmup;
    double *sc = rss + all; /* steps spare doubles */
    double step_s = median(ms, sc, (int)steps), fwd_s = median(mf, sc, (int)steps);
    double bwd_s = median(mb, sc, (int)steps), opt_s = median(mo, sc, (int)steps);
    double flops = model_flops_per_example(mc, V, (int)T, (int)P) * (double)B;
    double tokens_s = (double)B * T / step_s;
    double gflops = flops / step_s / 1e9;              /* over the whole step, as torch_bert.py */
    double gflops_fb = flops / (step_s - opt_s) / 1e9; /* over forward + backward: vs sgemm */
    /* growth over the timed steps (the warm-up steps first-touch the optimizer moments) */
    double growth = rss[all - 1] - rss[warmup];
    printf("bench: step times (ms, warm-up first):");
    for (long s = 0; s < all; s++) printf(" %.0f%s", 1e3 * ts[s], s + 1 == warmup ? " |" : "");
    printf("\nbench: RSS after each step (MiB):");
    for (long s = 0; s < all; s++) printf(" %.1f%s", rss[s], s + 1 == warmup ? " |" : "");
    printf("\nbench: peak RSS %.1f MiB; growth over the timed steps %+.1f MiB\n", peak, growth);
    printf("bench: other processes used %.0f%% of the machine's CPU time during the steps\n", 100.0 * others);
    printf("bench: median step %.1f ms (forward %.1f, backward %.1f, optimizer %.1f) over %ld steps\n", 1e3 * step_s,
           1e3 * fwd_s, 1e3 * bwd_s, 1e3 * opt_s, steps);
    printf("bench: %.0f tokens/s, %.1f matmul GFLOP/s over the step, %.1f over forward+backward (%.1f GFLOP "
           "per step)\n",
           tokens_s, gflops, gflops_fb, flops / 1e9);
    fflush(stdout);

    double sgemm_rate = 0, kern_rate = 0, ratio = 0, others_sgemm = 0;
    if (!no_sgemm) {
        CpuMark mark1 = cpu_mark();
        /* the sgemm rate at this step's product shapes, weighted by how often each runs */
        int H = mc->hidden, FF = mc->intermediate, N = (int)(B * T), R = (int)(B * P);
        double L = mc->layers;
        GemmShape shapes[] = {
            {"qkv fwd", false, true, N, 3 * H, H, L},  {"qkv dW", true, false, 3 * H, H, N, L},
            {"qkv dX", false, false, N, H, 3 * H, L},  {"out fwd", false, true, N, H, H, L},
            {"out dW", true, false, H, H, N, L},       {"out dX", false, false, N, H, H, L},
            {"ffn1 fwd", false, true, N, FF, H, L},    {"ffn1 dW", true, false, FF, H, N, L},
            {"ffn1 dX", false, false, N, H, FF, L},    {"ffn2 fwd", false, true, N, H, FF, L},
            {"ffn2 dW", true, false, H, FF, N, L},     {"ffn2 dX", false, false, N, FF, H, L},
            {"mlm dense fwd", false, true, R, H, H, 1}, {"mlm dense dW", true, false, H, H, R, 1},
            {"mlm dense dX", false, false, R, H, H, 1}, {"decoder fwd", false, true, R, V, H, 1},
            {"decoder dE", true, false, V, H, R, 1},   {"decoder dX", false, false, R, H, V, 1},
        };
        size_t maxa = 0, maxb = 0, maxc = 0;
        for (size_t i = 0; i < BP_ARRAY_LEN(shapes); i++) {
            const GemmShape *g = &shapes[i];
            size_t a = (size_t)g->M * g->K, bb = (size_t)g->K * g->N, c = (size_t)g->M * g->N;
            maxa = a > maxa ? a : maxa;
            maxb = bb > maxb ? bb : maxb;
            maxc = c > maxc ? c : maxc;
        }
        /* the attention products read an (N,3H) buffer and write (N,H) and per-thread (T,T) */
        size_t qkv_n = (size_t)N * 3 * H, att_c = (size_t)N * H + (size_t)T * T * nt;
        maxa = maxa > qkv_n ? maxa : qkv_n;
        maxc = maxc > att_c ? maxc : att_c;
        ga = malloc(maxa * sizeof(float));
        gb = malloc(maxb * sizeof(float));
        gc = malloc(maxc * sizeof(float));
        if (!ga || !gb || !gc) {
            bp_fail(&err, "out of memory for the sgemm measurement");
            rc = report(&err, "bench");
            goto done;
        }
        RngStream rs = rng_stream(1, RNG_BENCH, 1);
        for (size_t i = 0; i < maxa; i++) ga[i] = rng_next_u01(&rs) - 0.5f;
        for (size_t i = 0; i < maxb; i++) gb[i] = rng_next_u01(&rs) - 0.5f;
        memset(gc, 0, maxc * sizeof(float)); /* first-touch page faults are not sgemm time */
        double fl_sum = 0, t_ours = 0, t_blas = 0;
        for (size_t i = 0; i < BP_ARRAY_LEN(shapes); i++) {
            const GemmShape *g = &shapes[i];
            double fl = 2.0 * g->M * g->N * g->K;
            double a = time_gemm(g, ga, gb, gc, false, nt), o = time_gemm(g, ga, gb, gc, true, nt);
            printf("bench: sgemm %-14s %c%c %6d x %6d x %6d: kern_gemm %6.1f, OpenBLAS %d threads %6.1f GFLOP/s\n",
                   g->what, g->ta ? 'T' : 'N', g->tb ? 'T' : 'N', g->M, g->N, g->K, fl / a / 1e9, nt, fl / o / 1e9);
            fl_sum += g->count * fl;
            t_ours += g->count * a;
            t_blas += g->count * (o < a ? o : a);
        }
        /* attention: 6 products of 2*T*T*D per (example, head) per layer */
        double att_t = time_attention((int)B, mc->heads, (int)T, H, ga, gc, gc + (size_t)N * H, nt);
        printf("bench: sgemm attention: 6 products per (example, head) of %d x %d x %d, single-threaded each: %.1f "
               "GFLOP/s\n",
               (int)T, (int)T, H / mc->heads, 6.0 * 2.0 * B * H * (double)T * T / att_t / 1e9);
        fl_sum += 6.0 * L * 2.0 * B * H * (double)T * T;
        t_ours += L * att_t;
        t_blas += L * att_t;
        others_sgemm = cpu_others(mark1, cpu_mark());
        sgemm_rate = fl_sum / t_blas / 1e9;
        kern_rate = fl_sum / t_ours / 1e9;
        ratio = gflops_fb / sgemm_rate;
        printf("bench: cblas_sgemm at this step's shapes: %.1f GFLOP/s (best of kern_gemm and OpenBLAS's own %d "
               "threads per shape; kern_gemm alone %.1f)\n",
               sgemm_rate, nt, kern_rate);
        printf("bench: other processes used %.0f%% of the machine's CPU time during the sgemm measurement\n",
               100.0 * others_sgemm);
        printf("bench: achieved (forward+backward) / sgemm = %.2f\n", ratio);
    }
    printf("{\"bench\": \"bert_pretrain\", \"layers\": %d, \"hidden\": %d, \"heads\": %d, \"seq\": %ld, "
           "\"batch\": %ld, \"predictions\": %ld, \"vocab\": %d, \"threads\": %d, \"warmup\": %ld, \"steps\": %ld, "
           "\"step_s\": %.6f, \"forward_s\": %.6f, \"backward_s\": %.6f, \"optimizer_s\": %.6f, "
           "\"tokens_per_s\": %.1f, \"gflops\": %.2f, \"gflops_fwd_bwd\": %.2f, \"sgemm_gflops\": %.2f, "
           "\"kern_gemm_gflops\": %.2f, \"ratio\": %.3f, \"peak_rss_mib\": %.1f, \"rss_first_mib\": %.1f, "
           "\"rss_last_mib\": %.1f, \"rss_growth_mib\": %.1f, \"others_cpu\": %.3f, \"others_cpu_sgemm\": %.3f}\n",
           mc->layers, mc->hidden, mc->heads, T, B, P, V, nt, warmup, steps, step_s, fwd_s, bwd_s, opt_s, tokens_s,
           gflops, gflops_fb, sgemm_rate, kern_rate, ratio, peak, rss[warmup], rss[all - 1], growth, others,
           others_sgemm);
done:
    free(ga);
    free(gb);
    free(gc);
    free(tf);
    free(tb);
    free(to);
    free(ts);
    free(rss);
    optim_free(opt);
    batch_free(&b);
    model_free(m);
    return rc;
}
