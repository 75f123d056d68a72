/* bench.h: training-step speed on this machine (`bert_pretrain bench`; method and figures in
 * docs/performance.md). Times whole training steps (zero_grad, forward with dropout, backward,
 * gradient norm, one optimizer step) on a random batch where every prediction slot is real and
 * nothing is padded, then the sgemm rate at every matrix product the step runs
 * (model_gemm_shapes), so that the step's achieved GFLOP/s has a ceiling measured in the same
 * process. Also records the RSS after every step and how much CPU time other processes took
 * meanwhile (a figure taken on a busy machine is not a measurement of us). */
#ifndef BP_BENCH_H
#define BP_BENCH_H

#include <stdbool.h>

#include "common.h"
#include "config.h"
#include "model.h"

typedef struct {
    int vocab_size;  /* V */
    int seq;         /* T, 2 .. model.max_position */
    int batch;       /* B >= 1 */
    int predictions; /* P, 1 .. T-1; 0 = round(0.15 T), at least 1 */
    int steps;       /* timed steps >= 1 */
    int warmup;      /* untimed steps before them, >= 0 */
    bool sgemm;      /* measure the sgemm rate at the step's product shapes */
    bool bf16_engine_set;     /* false: the bf16 products run on the rule's engine (gemm_bf16_kind_default) */
    GemmBf16Kind bf16_engine; /* when set: the engine they run on (a usage error where it cannot run) */
    bool fp32_engine_set;     /* false: the fp32 products run on the rule's engine (gemm_fp32_onednn_for) */
    bool fp32_onednn;         /* when set: oneDNN (true) or OpenBLAS (false) */
    bool fp32_activations;    /* keep every activation in fp32 even with bf16 products (what bf16
                                 storage saves and costs; ModelActStorage) */
} BenchOptions;

/* One product shape of the step and the sgemm rate measured at it. Shapes the model runs more than
 * once per layer (count > layers: the attention products, one per (example, head)) are timed as
 * the model runs them: count / layers independent single-threaded products spread over the
 * threads ("batched"); the others both through kern_gemm and through OpenBLAS's own threads. */
typedef struct {
    ModelGemmShape shape;
    bool batched;
    double kern_gflops;     /* kern_gemm, or the batched products */
    double openblas_gflops; /* OpenBLAS's own threads; 0 when batched */
    double bf16_gflops[2];  /* as kern_gflops, in bf16 on each engine (GemmBf16Kind); 0 where unusable */
} BenchGemmRate;

typedef struct {
    /* what ran */
    int seq, batch, predictions, steps, warmup, threads;
    double params;           /* parameter count */
    double activation_bytes; /* model_activation_bytes for (B, T, P) */
    ModelActStorage storage; /* how the activations were kept */
    double gemm_copy_bytes;  /* model_gemm_copy_bytes: the oneDNN bf16 engine's operand copies */
    const char *optimizer;   /* optim_describe (a static string) */
    GemmEngine engine;       /* the precision the products ran in (model_engine) */
    const char *blas_core;   /* OpenBLAS's core for the fp32 products (gemm_openblas_core) */
    double blas_selftest;    /* gemm_sgemm_selftest of that core */
    /* per step, warm-up steps first (warmup + steps entries each; malloc'd) */
    double *step_s, *forward_s, *backward_s, *optimizer_s;
    double *rss_mib; /* RSS after each step, -1 when /proc/self/statm is unreadable */
    /* medians over the timed steps */
    double median_step_s, median_forward_s, median_backward_s, median_optimizer_s;
    double flops_per_step;  /* model_flops_per_example * B */
    double tokens_per_s;    /* B * T / median step */
    double gflops;          /* over the whole step (as scripts/torch_bert.py counts) */
    double gflops_fwd_bwd;  /* over forward + backward: the figure compared with sgemm */
    double peak_rss_mib;    /* after the timed steps, before the sgemm buffers */
    double rss_first_mib, rss_last_mib, rss_growth_mib; /* first and last timed step */
    double others_cpu;      /* other processes' share of the machine's CPU time in [0, 1], -1 unknown */
    /* the sgemm measurement (zeros when BenchOptions.sgemm is off) */
    bool sgemm_measured;
    BenchGemmRate rates[MODEL_MAX_GEMM_SHAPES];
    int n_rates;
    double attention_gflops; /* the batched shapes together; 0 when there are none */
    double sgemm_gflops;     /* step FLOPs / time at the best of kern_gemm and OpenBLAS per shape */
    double kern_gemm_gflops; /* the same with kern_gemm alone */
    double ratio;            /* gflops_fwd_bwd / sgemm_gflops */
    double bf16_gemm_gflops[2]; /* step FLOPs / time at each bf16 engine's rates (GemmBf16Kind); 0 where
                                   unusable: the evidence for the engine rule */
    double others_cpu_sgemm;
} BenchResult;

/* Builds cfg's model (vocabulary o->vocab_size, weights from training.seed, the configured
 * optimizer), runs o->warmup + o->steps training steps and, when o->sgemm, the sgemm measurement.
 * Uses the thread count already set (the caller owns the thread policy; OpenBLAS's own threads are
 * switched on only while timing them, then set back). Returns 0 with r filled (free it with
 * bench_result_free), or -1 with err set (a usage error for out-of-range options). */
int bench_run(const Config *cfg, const BenchOptions *o, BenchResult *r, BpError *err);
void bench_result_free(BenchResult *r);

/* The allreduce micro-benchmark (docs/scaling.md): sums of n floats across the ranks of dist.h
 * (blocking MPI_Allreduce, as a whole-buffer gradient sum does) for n = 1Ki, 4Ki ... up to
 * max_floats, reps timed repetitions each after one untimed, the median kept. Every rank must call
 * it (it is a sequence of collectives). */
#define BENCH_ALLREDUCE_MAX_SIZES 16
typedef struct {
    int ranks, n_sizes;
    size_t floats[BENCH_ALLREDUCE_MAX_SIZES];
    double median_s[BENCH_ALLREDUCE_MAX_SIZES];
    double bus_gb_s[BENCH_ALLREDUCE_MAX_SIZES]; /* 2 (N-1)/N x bytes / time: a ring's bytes per link */
} AllreduceBench;
int bench_allreduce(size_t max_floats, int reps, AllreduceBench *out, BpError *err);

#endif
