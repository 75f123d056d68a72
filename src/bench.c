/* bench.c: training-step speed and the sgemm rate at the step's own product shapes (bench.h;
 * method in docs/performance.md). */
#include "bench.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dist.h"
#include "gemm_cpu.h"
#include "gemm_dnnl.h"
#include "kernels.h"
#include "optim.h"
#include "rng.h"

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

/* ---------------------------------------------------------------------------------------------
 * training steps */

static int alloc_steps(BenchResult *r, int all, BpError *err) {
    double **arrays[] = {&r->step_s, &r->forward_s, &r->backward_s, &r->optimizer_s, &r->rss_mib};
    for (size_t i = 0; i < BP_ARRAY_LEN(arrays); i++)
        if (!(*arrays[i] = bp_calloc((size_t)all, sizeof(double), "bench timings", err))) return -1;
    return 0;
}

/* the medians and the figures derived from them, over the timed steps */
static int summarize_steps(BenchResult *r, const ModelConfig *mc, int V, BpError *err) {
    int w = r->warmup, n = r->steps, all = w + n;
    double *scratch = bp_calloc((size_t)n, sizeof *scratch, "bench medians", err);
    if (!scratch) return -1;
    r->median_step_s = median(r->step_s + w, scratch, n);
    r->median_forward_s = median(r->forward_s + w, scratch, n);
    r->median_backward_s = median(r->backward_s + w, scratch, n);
    r->median_optimizer_s = median(r->optimizer_s + w, scratch, n);
    free(scratch);
    r->flops_per_step = model_flops_per_example(mc, V, r->seq, r->predictions) * r->batch;
    r->tokens_per_s = (double)r->batch * r->seq / r->median_step_s;
    r->gflops = r->flops_per_step / r->median_step_s / 1e9;
    r->gflops_fwd_bwd = r->flops_per_step / (r->median_step_s - r->median_optimizer_s) / 1e9;
    /* growth over the timed steps (the warm-up steps first-touch the optimizer moments) */
    r->rss_first_mib = r->rss_mib[w];
    r->rss_last_mib = r->rss_mib[all - 1];
    r->rss_growth_mib = r->rss_last_mib - r->rss_first_mib;
    return 0;
}

/* Builds the model, runs the steps, frees the model (so that the sgemm buffers do not come on top
 * of the activations). */
static int time_steps(const Config *cfg, const BenchOptions *o, BenchResult *r, BpError *err) {
    const ModelConfig *mc = &cfg->model;
    int V = o->vocab_size, B = r->batch, T = r->seq, P = r->predictions, all = r->warmup + r->steps;
    Batch b = {0};
    Optimizer *opt = NULL;
    int rc = -1;
    GemmBf16Kind saved_kind = kern_bf16_engine();
    bool saved_fp32 = kern_fp32_onednn();
    Model *m = model_create(cfg, V, err);
    if (!m || batch_alloc(&b, B, T, P, err) || model_plan(m, B, T, P, err)) goto done;
    r->engine = *model_engine(m);
    if (o->bf16_engine_set) { /* the steps on the engine asked for, not the rule's */
        GemmBf16Kind k = o->bf16_engine;
        if (!r->engine.bf16 || !gemm_bf16_kind_usable(k)) {
            bp_fail_usage(err, "--bf16-engine %s: %s", gemm_bf16_kind_name(k),
                          !r->engine.bf16 ? "the products run in fp32 here (training.precision)"
                                          : "that engine cannot run on this CPU or build");
            goto done;
        }
        model_set_bf16_engine(m, k);
        r->engine.bf16_kind = k;
        r->engine.isa = gemm_bf16_kind_isa(k);
        snprintf(r->engine.why, sizeof r->engine.why, "bench --bf16-engine %s", gemm_bf16_kind_name(k));
    }
    if (o->fp32_engine_set) { /* the fp32 steps on the engine asked for */
        if (r->engine.bf16 || (o->fp32_onednn && !gemm_dnnl_f32_available())) {
            bp_fail_usage(err, "--fp32-engine %s: %s", o->fp32_onednn ? "onednn" : "openblas",
                          r->engine.bf16 ? "the products run in bf16 here (training.precision)"
                                         : "oneDNN has no native fp32 kernel on this CPU or build");
            goto done;
        }
        model_set_fp32_onednn(m, o->fp32_onednn);
        r->engine = *model_engine(m);
        snprintf(r->engine.why, sizeof r->engine.why, "bench --fp32-engine %s", o->fp32_onednn ? "onednn" : "openblas");
    }
    model_init_weights(m, cfg->training.seed);
    /* every slot a real prediction, no padding: the work scripts/torch_bert.py does */
    model_fill_random_batch(&b, V, mc->type_vocab_size, false, true, cfg->training.seed, 0);
    opt = optim_create(&cfg->optimizer, model_table(m), err);
    if (!opt || alloc_steps(r, all, err)) goto done;
    r->params = (double)model_table(m)->total;
    if (o->fp32_activations) {
        ModelActStorage st = model_get_act_storage(m);
        st.bf16 = false;
        model_set_act_storage(m, st);
        if (model_plan(m, B, T, P, err)) goto done;
    }
    r->storage = model_get_act_storage(m);
    r->activation_bytes = (double)model_activation_bytes(mc, V, B, T, P, r->storage);
    r->gemm_copy_bytes = (double)model_gemm_copy_bytes(mc, V, B, T, P);
    r->optimizer = optim_describe(opt);
    r->blas_core = gemm_openblas_core();
    r->blas_selftest = gemm_sgemm_selftest();
    ModelStats st;
    CpuMark mark0 = cpu_mark();
    for (int s = 0; s < all; s++) {
        ForwardArgs fa = {true, cfg->training.seed, s, 0.0, 0.0};
        double t0 = bp_now();
        model_zero_grad(m);
        if (model_forward(m, &b, &fa, &st, err)) goto done;
        double t1 = bp_now();
        model_backward(m);
        double t2 = bp_now();
        double gn = optim_grad_norm(model_table(m), model_grads(m), NULL);
        optim_step(opt, model_params(m), model_grads(m), 1e-4, gn);
        double t3 = bp_now();
        r->forward_s[s] = t1 - t0;
        r->backward_s[s] = t2 - t1;
        r->optimizer_s[s] = t3 - t2;
        r->step_s[s] = t3 - t0;
        r->rss_mib[s] = rss_now_mib();
    }
    r->others_cpu = cpu_others(mark0, cpu_mark());
    r->peak_rss_mib = rss_peak_mib();
    rc = summarize_steps(r, mc, V, err);
done:
    kern_set_bf16_engine(saved_kind);
    kern_set_fp32_onednn(saved_fp32);
    optim_free(opt);
    batch_free(&b);
    model_free(m);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * the sgemm rate at the step's shapes */

/* Repetitions of a timed product: at least 2 and up to 5, fewer once 0.6 s are spent (bert-base
 * at T 512 has products of a quarter second). The best repetition counts. */
static bool more_reps(int r, double spent) { return r < 2 || (r < 5 && spent < 0.6); }

static int lda_of(const ModelGemmShape *g) { return g->ta ? g->M : g->K; }
static int ldb_of(const ModelGemmShape *g) { return g->tb ? g->K : g->N; }

/* seconds of one product through kern_gemm (the model's own path) or through OpenBLAS's threads
 * (switched on for the call and set back after: the process's policy is single-threaded OpenBLAS) */
static double time_gemm(const ModelGemmShape *g, const float *A, const float *B, float *C, bool openblas_threads,
                        int nt) {
    double best = 1e30, spent = 0;
    int saved = openblas_get_num_threads();
    if (openblas_threads) openblas_set_num_threads(nt);
    for (int r = 0; more_reps(r, spent); r++) {
        double t0 = bp_now();
        if (openblas_threads)
            cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, g->M,
                        g->N, g->K, 1.0f, A, lda_of(g), B, ldb_of(g), 0.0f, C, g->N);
        else
            kern_gemm(g->ta, g->tb, g->M, g->N, g->K, 1.0f, A, lda_of(g), B, ldb_of(g), 0.0f, C, g->N);
        double t = bp_now() - t0;
        spent += t;
        if (t < best) best = t;
    }
    if (openblas_threads) openblas_set_num_threads(saved);
    return best;
}

/* Seconds of m independent products of shape g, each single-threaded on its own slice of A, B and
 * C, spread over the OpenMP threads: how the attention kernels run their per-(example, head)
 * products (allowed inside the parallel loop because OpenBLAS is single-threaded). */
static double time_gemm_batched(const ModelGemmShape *g, int m, const float *A, const float *B, float *C, int nt) {
    size_t sa = (size_t)g->M * g->K, sb = (size_t)g->K * g->N, sc = (size_t)g->M * g->N;
    double best = 1e30, spent = 0;
    for (int r = 0; more_reps(r, spent); r++) {
        double t0 = bp_now();
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int i = 0; i < m; i++)
            kern_gemm_single(g->ta, g->tb, g->M, g->N, g->K, 1.0f, A + i * sa, lda_of(g), B + i * sb, ldb_of(g), 0.0f,
                             C + i * sc, g->N);
        double t = bp_now() - t0;
        spent += t;
        if (t < best) best = t;
    }
    return best;
}

/* products of this shape run side by side in one layer (1 for a layer's own products) */
static int per_layer(const ModelGemmShape *g, int layers) {
    return g->count > layers ? (int)lround(g->count / layers) : 1;
}

/* seconds of one product of shape g as the model runs it: m side by side (batched), or kern_gemm */
static double time_kern(const ModelGemmShape *g, int m, const float *A, const float *B, float *C, int nt) {
    return m > 1 ? time_gemm_batched(g, m, A, B, C, nt) / m : time_gemm(g, A, B, C, false, nt);
}

/* Times every shape; weighting each by how often the step runs it gives the step's time at the
 * best rate per shape (t_best) and at kern_gemm's (t_kern), in the products' precision; then the
 * same through kern_gemm in bf16 on each bf16 engine that can run here. */
static void time_shapes(BenchResult *r, int layers, const float *A, const float *B, float *C) {
    double fl_sum = 0, t_kern = 0, t_best = 0, att_fl = 0, att_t = 0, t_bf16[2] = {0, 0};
    bool bf16_was = kern_bf16();
    GemmBf16Kind kind_was = kern_bf16_engine();
    for (int i = 0; i < r->n_rates; i++) {
        BenchGemmRate *x = &r->rates[i];
        const ModelGemmShape *g = &x->shape;
        double fl = 2.0 * g->M * g->N * (double)g->K;
        int m = per_layer(g, layers);
        x->batched = m > 1;
        double t_k = time_kern(g, m, A, B, C, r->threads), t_o = t_k;
        if (x->batched) {
            att_fl += g->count * fl;
            att_t += g->count * t_k;
        } else {
            t_o = time_gemm(g, A, B, C, true, r->threads);
            x->openblas_gflops = fl / t_o / 1e9;
        }
        x->kern_gflops = fl / t_k / 1e9;
        fl_sum += g->count * fl;
        t_kern += g->count * t_k;
        t_best += g->count * (t_o < t_k ? t_o : t_k);
        for (int k = 0; k < 2; k++) {
            if (!gemm_bf16_kind_usable((GemmBf16Kind)k)) continue;
            kern_set_bf16_engine((GemmBf16Kind)k);
            kern_set_bf16(true);
            double t = time_kern(g, m, A, B, C, r->threads);
            x->bf16_gflops[k] = fl / t / 1e9;
            t_bf16[k] += g->count * t;
        }
        kern_set_bf16_engine(kind_was);
        kern_set_bf16(bf16_was);
    }
    r->attention_gflops = att_t > 0 ? att_fl / att_t / 1e9 : 0;
    r->sgemm_gflops = fl_sum / t_best / 1e9;
    r->kern_gemm_gflops = fl_sum / t_kern / 1e9;
    r->ratio = r->gflops_fwd_bwd / r->sgemm_gflops;
    for (int k = 0; k < 2; k++) r->bf16_gemm_gflops[k] = t_bf16[k] > 0 ? fl_sum / t_bf16[k] / 1e9 : 0;
}

static int measure_sgemm(const ModelConfig *mc, int V, BenchResult *r, BpError *err) {
    ModelGemmShape g[MODEL_MAX_GEMM_SHAPES];
    r->n_rates = model_gemm_shapes(mc, V, r->batch, r->seq, r->batch * r->predictions, g);
    size_t na = 0, nb = 0, nc = 0;
    for (int i = 0; i < r->n_rates; i++) {
        r->rates[i] = (BenchGemmRate){.shape = g[i]};
        size_t m = (size_t)per_layer(&g[i], mc->layers);
        size_t a = m * g[i].M * g[i].K, b = m * g[i].K * g[i].N, c = m * g[i].M * g[i].N;
        na = a > na ? a : na;
        nb = b > nb ? b : nb;
        nc = c > nc ? c : nc;
    }
    CpuMark mark = cpu_mark();
    float *A = bp_malloc(na * sizeof(float), "sgemm operand A", err);
    float *B = A ? bp_malloc(nb * sizeof(float), "sgemm operand B", err) : NULL;
    float *C = B ? bp_malloc(nc * sizeof(float), "sgemm result C", err) : NULL;
    if (C) {
        RngStream rs = rng_stream(1, RNG_BENCH, 1);
        for (size_t i = 0; i < na; i++) A[i] = rng_next_u01(&rs) - 0.5f;
        for (size_t i = 0; i < nb; i++) B[i] = rng_next_u01(&rs) - 0.5f;
        memset(C, 0, nc * sizeof(float)); /* first-touch page faults are not sgemm time */
        time_shapes(r, mc->layers, A, B, C);
        r->others_cpu_sgemm = cpu_others(mark, cpu_mark());
        r->sgemm_measured = true;
    }
    free(A);
    free(B);
    free(C);
    return C ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------------
 * entry point */

static int check_options(const ModelConfig *mc, const BenchOptions *o, BpError *err) {
    if (o->vocab_size < 1) return bp_fail_usage(err, "vocabulary size %d is not positive", o->vocab_size);
    if (o->seq < 2 || o->seq > mc->max_position)
        return bp_fail_usage(err, "sequence length %d is outside 2 .. model.max_position %d", o->seq,
                             mc->max_position);
    if (o->batch < 1) return bp_fail_usage(err, "micro-batch %d is not positive", o->batch);
    if (o->predictions < 0 || o->predictions > o->seq - 1)
        return bp_fail_usage(err,
                             "%d predictions per example is outside 1 .. T-1 = %d (each slot a distinct "
                             "position after [CLS])",
                             o->predictions, o->seq - 1);
    if (o->steps < 1 || o->warmup < 0)
        return bp_fail_usage(err, "%d timed and %d warm-up steps: need at least 1 timed step", o->steps, o->warmup);
    return 0;
}

int bench_run(const Config *cfg, const BenchOptions *o, BenchResult *r, BpError *err) {
    memset(r, 0, sizeof *r);
    if (check_options(&cfg->model, o, err)) return -1;
    r->seq = o->seq;
    r->batch = o->batch;
    r->predictions = o->predictions ? o->predictions : (int)fmax(1.0, (double)lround(0.15 * o->seq));
    if (r->predictions > o->seq - 1) r->predictions = o->seq - 1; /* the default at T 2..3 */
    r->steps = o->steps;
    r->warmup = o->warmup;
    r->threads = kern_threads();
    if (time_steps(cfg, o, r, err) || (o->sgemm && measure_sgemm(&cfg->model, o->vocab_size, r, err))) {
        bench_result_free(r);
        return -1;
    }
    return 0;
}

void bench_result_free(BenchResult *r) {
    free(r->step_s);
    free(r->forward_s);
    free(r->backward_s);
    free(r->optimizer_s);
    free(r->rss_mib);
    r->step_s = r->forward_s = r->backward_s = r->optimizer_s = r->rss_mib = NULL;
}

/* ---- allreduce ----------------------------------------------------------------------------------- */

int bench_allreduce(size_t max_floats, int reps, AllreduceBench *out, BpError *err) {
    memset(out, 0, sizeof *out);
    out->ranks = dist_world_size();
    if (reps < 1) return bp_fail_usage(err, "allreduce benchmark: reps must be >= 1 (got %d)", reps);
    float *buf = bp_calloc(max_floats > 0 ? max_floats : 1, sizeof(float), "allreduce buffer", err);
    double *t = bp_calloc((size_t)reps, sizeof(double), "allreduce times", err);
    if (!buf || !t) {
        free(buf);
        free(t);
        return -1;
    }
    for (size_t n = 1024; n <= max_floats && out->n_sizes < BENCH_ALLREDUCE_MAX_SIZES; n *= 4) {
        dist_allreduce_floats(buf, n); /* untimed: first-touch and connection set-up */
        for (int r = 0; r < reps; r++) {
            double t0 = bp_now();
            dist_allreduce_floats(buf, n);
            t[r] = bp_now() - t0;
        }
        /* rank 0's median; every rank waits for the slowest in a sum anyway */
        qsort(t, (size_t)reps, sizeof *t, cmp_double);
        int i = out->n_sizes++;
        out->floats[i] = n;
        out->median_s[i] = t[reps / 2];
        double N = out->ranks;
        out->bus_gb_s[i] = N > 1 ? 2.0 * (N - 1) / N * 4.0 * (double)n / t[reps / 2] / 1e9 : 0;
    }
    free(buf);
    free(t);
    return 0;
}
