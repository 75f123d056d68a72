/* gemm_cpu.c: run-time CPU dispatch of the matrix products (gemm_cpu.h). */
#include "gemm_cpu.h"

#include <cblas.h>
#include <cpuid.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gemm_dnnl.h"

static GemmCpu g_cpu;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;

static unsigned long long xgetbv0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

/* Linux keeps AMX tile data off until a process asks (arch/x86/include/uapi/asm/prctl.h) */
#define BP_ARCH_REQ_XCOMP_PERM 0x1023
#define BP_XFEATURE_XTILEDATA 18

static void detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return;
    unsigned c1 = c;
    bool fma = c & bit_FMA;
    unsigned long long xcr0 = xgetbv0();
    bool ymm_os = (xcr0 & 0x6) == 0x6, zmm_os = (xcr0 & 0xe6) == 0xe6;
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    unsigned b7 = b, d7 = d;
    __cpuid_count(7, 1, a, b, c, d);
    unsigned a71 = a;
    g_cpu.avx2_fma = ymm_os && fma && (b7 & bit_AVX2);
    g_cpu.avx512 = zmm_os && (b7 & bit_AVX512F) && (b7 & bit_AVX512BW) && (b7 & bit_AVX512DQ) &&
                   (b7 & bit_AVX512VL);
    unsigned a8, b8, c8 = 0, d8;
    bool lzcnt = __get_cpuid(0x80000001u, &a8, &b8, &c8, &d8) && (c8 & bit_LZCNT);
    g_cpu.x86_64_v3 = g_cpu.avx2_fma && (c1 & bit_AVX) && (c1 & bit_F16C) && (c1 & bit_MOVBE) &&
                      (b7 & bit_BMI) && (b7 & bit_BMI2) && lzcnt;
    g_cpu.x86_64_v4 = g_cpu.x86_64_v3 && g_cpu.avx512 && (b7 & bit_AVX512CD);
    const char *off = getenv("BP_CPU_NO_BF16");
    if (off && strcmp(off, "0") != 0) return;
    g_cpu.avx512_bf16 = g_cpu.avx512 && (a71 & (1u << 5));
    g_cpu.amx_present = (d7 & (1u << 22)) && (d7 & (1u << 24));
    g_cpu.amx_bf16 = g_cpu.amx_present && (xcr0 & 0x60000) == 0x60000 &&
                     syscall(SYS_arch_prctl, BP_ARCH_REQ_XCOMP_PERM, BP_XFEATURE_XTILEDATA) == 0;
}

const GemmCpu *gemm_cpu_features(void) {
    pthread_once(&g_cpu_once, detect);
    return &g_cpu;
}

/* "oneDNN <its kernel>", made once */
static char g_dnnl_isa[160];
static pthread_once_t g_dnnl_isa_once = PTHREAD_ONCE_INIT;
static void dnnl_isa_name(void) { snprintf(g_dnnl_isa, sizeof g_dnnl_isa, "oneDNN %s", gemm_dnnl_impl()); }

static char g_dnnl_f32_isa[160];
static pthread_once_t g_dnnl_f32_isa_once = PTHREAD_ONCE_INIT;
static void dnnl_f32_isa_name(void) {
    snprintf(g_dnnl_f32_isa, sizeof g_dnnl_f32_isa, "oneDNN %s", gemm_dnnl_f32_impl());
}

/* OpenBLAS's cores with AVX-512 kernels (0.3.21: SKYLAKEX, COOPERLAKE, SAPPHIRERAPIDS) */
static bool core_has_avx512(const char *core) {
    static const char *const AVX512_CORES[] = {"skylakex", "cooperlake", "sapphirerapids"};
    for (size_t i = 0; core && i < BP_ARRAY_LEN(AVX512_CORES); i++)
        if (!strcasecmp(core, AVX512_CORES[i])) return true;
    return false;
}

bool gemm_fp32_onednn_for(const GemmCpu *cpu, const char *openblas_core, bool dnnl_f32_available) {
    return dnnl_f32_available && cpu->avx512 && !core_has_avx512(openblas_core);
}

const char *gemm_fp32_isa(bool onednn) {
    if (!onednn) return "OpenBLAS";
    pthread_once(&g_dnnl_f32_isa_once, dnnl_f32_isa_name);
    return g_dnnl_f32_isa;
}

GemmBf16Kind gemm_bf16_kind_for(const GemmCpu *cpu, bool dnnl_available) {
    return dnnl_available && (cpu->avx512_bf16 || cpu->amx_bf16) ? GEMM_BF16_ONEDNN : GEMM_BF16_OWN;
}

GemmBf16Kind gemm_bf16_kind_default(void) { return gemm_bf16_kind_for(gemm_cpu_features(), gemm_dnnl_available()); }

const char *gemm_bf16_kind_name(GemmBf16Kind k) { return k == GEMM_BF16_ONEDNN ? "oneDNN" : "ours"; }

const char *gemm_bf16_kind_isa(GemmBf16Kind k) {
    if (k == GEMM_BF16_OWN) return "avx512-bf16";
    pthread_once(&g_dnnl_isa_once, dnnl_isa_name);
    return g_dnnl_isa;
}

bool gemm_bf16_kind_usable(GemmBf16Kind k) {
    return gemm_cpu_features()->avx512_bf16 && (k == GEMM_BF16_OWN || gemm_dnnl_available());
}

int gemm_engine_resolve(PrecisionKind want, const GemmCpu *cpu, GemmEngine *out, BpError *err) {
    memset(out, 0, sizeof *out);
    /* Our kernels need AVX512-BF16, and every AMX CPU has it; AMX itself is served by oneDNN. */
    bool native = cpu->avx512_bf16;
    if (want == PRECISION_BF16 && !native) {
        bp_fail_usage(err, "training.precision bf16 needs native bf16 dot products (AVX512-BF16 or AMX-BF16), "
                           "which this CPU does not have; use fp32 or auto");
        return -1;
    }
    out->bf16 = want == PRECISION_BF16 || (want == PRECISION_AUTO && native);
    if (!out->bf16) {
        const char *asked = want == PRECISION_AUTO ? "auto: no AVX512-BF16/AMX-BF16 on this CPU" : "fp32 requested";
        const char *core = gemm_openblas_core();
        out->fp32_onednn = gemm_fp32_onednn_for(cpu, core, gemm_dnnl_f32_available());
        out->isa = gemm_fp32_isa(out->fp32_onednn);
        if (out->fp32_onednn) {
            snprintf(out->why, sizeof out->why, "%s; OpenBLAS's core %s has no AVX-512 kernels, this CPU has AVX-512",
                     asked, core);
        } else {
            snprintf(out->why, sizeof out->why, "%s", asked);
        }
        return 0;
    }
    bool dnnl = native && gemm_dnnl_available();
    out->bf16_kind = gemm_bf16_kind_for(cpu, dnnl);
    const char *asked = want == PRECISION_AUTO ? "auto: the CPU has AVX512-BF16" : "bf16 requested";
    const char *amx = cpu->amx_bf16 ? "; AMX-BF16 present" : "";
    out->isa = gemm_bf16_kind_isa(out->bf16_kind);
    if (out->bf16_kind == GEMM_BF16_ONEDNN) {
        snprintf(out->why, sizeof out->why, "%s%s; oneDNN's matmul, the rule wherever oneDNN serves bf16", asked,
                 amx);
    } else {
        snprintf(out->why, sizeof out->why, "%s%s; our kernels (oneDNN: %s)", asked, amx, gemm_dnnl_impl());
    }
    return 0;
}

const char *gemm_openblas_core(void) { return openblas_get_corename(); }

/* OpenBLAS's cores without AVX2 kernels: what DYNAMIC_ARCH falls back to on a CPU model it does not
   know (e.g. "Prescott" on new Xeons) */
static const char *const GENERIC_CORES[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Katmai",
                                            "Coppermine", "Northwood", "Atom", "Sandybridge", "Barcelona",
                                            "Opteron", "Opteron(SSE3)", "Bobcat", "Bulldozer", "Unknown"};

const char *gemm_openblas_core_fix(const char *core, const char *env_coretype, const GemmCpu *cpu) {
    if (env_coretype || !core) return NULL;
    bool generic = false;
    for (size_t i = 0; i < BP_ARRAY_LEN(GENERIC_CORES); i++)
        if (strcasecmp(core, GENERIC_CORES[i]) == 0) generic = true;
    if (!generic) return NULL;
    if (cpu->avx512) return cpu->avx512_bf16 ? "Cooperlake" : "SkylakeX";
    return cpu->avx2_fma ? "Haswell" : NULL;
}

static double selftest_case(bool ta, bool tb) {
    enum { M = 67, N = 45, K = 83 };
    float A[M * K], B[K * N], C[M * N];
    for (int i = 0; i < M * K; i++) A[i] = (float)((i * 37 % 101) - 50) / 25.0f;
    for (int i = 0; i < K * N; i++) B[i] = (float)((i * 53 % 97) - 48) / 24.0f;
    int lda = ta ? M : K, ldb = tb ? K : N;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A,
                lda, B, ldb, 0.0f, C, N);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0, bound = 0;
            for (int k = 0; k < K; k++) {
                double x = ta ? A[k * lda + i] : A[i * lda + k], y = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += x * y;
                bound += fabs(x * y);
            }
            double e = fabs(C[i * N + j] - s) / (bound > 0 ? bound : 1);
            if (!(e <= worst)) worst = e; /* NaN propagates as the worst */
        }
    return worst;
}

double gemm_sgemm_selftest(void) {
    double worst = 0;
    for (int c = 0; c < 4; c++) {
        double e = selftest_case(c & 1, c & 2);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}
