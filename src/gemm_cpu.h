/* gemm_cpu.h: which matrix-product engine runs, decided once at run time from CPUID, so that one
 * binary serves every x86-64 CPU: the precision (training.precision: auto | fp32 | bf16, resolved
 * against the CPU's native bf16 dot products) and the OpenBLAS core type behind the fp32 products
 * (a generic fallback core on a CPU with AVX2 or AVX-512 is named and corrected; docs/performance.md,
 * docs/mixed_precision.md). */
#ifndef BP_GEMM_CPU_H
#define BP_GEMM_CPU_H

#include <stdbool.h>
#include <stddef.h>

#include "common.h"
#include "config.h"

/* What CPUID and the OS (XCR0) allow. AVX-512 counts only when the OS saves the zmm state; AMX only
 * when the OS also grants the tile data state (Linux: arch_prctl ARCH_REQ_XCOMP_PERM, requested by
 * gemm_cpu_features on first call). */
typedef struct {
    /* the x86-64 micro-architecture levels (x86-64 psABI): v3 = AVX, AVX2, BMI1, BMI2, F16C, FMA,
       LZCNT, MOVBE with the OS saving the ymm state; v4 = v3 + AVX512F, BW, CD, DQ, VL, zmm state */
    bool x86_64_v3, x86_64_v4;
    bool avx2_fma;
    bool avx512;      /* F, BW, DQ, VL */
    bool avx512_bf16; /* VDPBF16PS: bf16 pair dot products into fp32 */
    bool amx_bf16;    /* AMX-TILE + AMX-BF16 present and tile data permitted */
    bool amx_present; /* in CPUID, whether or not the OS granted the tile data */
} GemmCpu;

/* Detected once (thread-safe); BP_CPU_NO_BF16=1 in the environment hides AVX512-BF16 and AMX, which
 * lets tests take the no-bf16 paths on any machine. */
const GemmCpu *gemm_cpu_features(void);

/* Which code runs the bf16 products: our AVX512-BF16 micro-kernels (gemm_bf16.c) or oneDNN's
 * matmul (gemm_dnnl.c). The two round the same inputs the same way but sum in different orders, so
 * results differ in the last bits between them: the choice is a fixed rule, never a timing. */
typedef enum { GEMM_BF16_OWN, GEMM_BF16_ONEDNN } GemmBf16Kind;

/* The rule (measurements in docs/performance.md, "oneDNN's bf16 matmul vs ours"): oneDNN wherever
 * it is available (built in, and gemm_dnnl_available() on this CPU); ours otherwise. */
GemmBf16Kind gemm_bf16_kind_for(const GemmCpu *cpu, bool dnnl_available);
/* the rule on this CPU with this build */
GemmBf16Kind gemm_bf16_kind_default(void);
const char *gemm_bf16_kind_name(GemmBf16Kind k); /* "ours" or "oneDNN" */
/* the instruction set behind engine k: "avx512-bf16" (ours) or "oneDNN <its kernel>" */
const char *gemm_bf16_kind_isa(GemmBf16Kind k);
/* whether engine k can run on this CPU with this build (both need AVX512-BF16; oneDNN its library) */
bool gemm_bf16_kind_usable(GemmBf16Kind k);

/* The resolved engine: bf16 or fp32, the instruction set of the products and a one-line reason. */
typedef struct {
    bool bf16;
    GemmBf16Kind bf16_kind; /* when bf16: which engine (gemm_bf16_kind_default) */
    bool fp32_onednn;       /* when fp32: oneDNN instead of OpenBLAS (gemm_fp32_onednn_for) */
    const char *isa; /* "avx512-bf16" (ours), "oneDNN brg:avx512_core_amx" ..., or "OpenBLAS" */
    char why[200];
} GemmEngine;

/* The fp32 engine rule: oneDNN's fp32 matmul where OpenBLAS runs a core without AVX-512 kernels
 * (an AVX2 core such as Haswell, e.g. because the environment set OPENBLAS_CORETYPE, which is never
 * changed) on a CPU with AVX-512, and oneDNN has a native fp32 kernel there; OpenBLAS otherwise.
 * Deterministic (a function of the CPU and the core, never of a timing): the two engines sum in
 * different orders, so the choice changes results in the last bits. docs/performance.md has the
 * measurements behind it. */
bool gemm_fp32_onednn_for(const GemmCpu *cpu, const char *openblas_core, bool dnnl_f32_available);
/* "oneDNN <its fp32 kernel>" or "OpenBLAS" */
const char *gemm_fp32_isa(bool onednn);

/* auto: bf16 on native bf16 dot products, fp32 elsewhere. bf16 on a CPU without them fails with a
 * usage error naming what is missing. The bf16 engine is gemm_bf16_kind_for(cpu, oneDNN usable). */
int gemm_engine_resolve(PrecisionKind want, const GemmCpu *cpu, GemmEngine *out, BpError *err);

/* ---- the fp32 path's OpenBLAS core ---- */

/* OpenBLAS's kernel family in use (openblas_get_corename). */
const char *gemm_openblas_core(void);

/* The OPENBLAS_CORETYPE to start with instead of `core`, or NULL to keep it: non-NULL only when core
 * is one of OpenBLAS's generic fallbacks (Prescott, Core2, Nehalem, Katmai ...: no AVX2) while the
 * CPU has AVX2+FMA (-> "Haswell") or AVX-512 (-> "SkylakeX", "Cooperlake" with AVX512-BF16), and
 * `env_coretype` (the environment's OPENBLAS_CORETYPE) is NULL: a setting is never overridden. */
const char *gemm_openblas_core_fix(const char *core, const char *env_coretype, const GemmCpu *cpu);

/* Numerical self-test of the sgemm in use: a 67x45x83 product (all four transpose cases) against a
 * float64 reference. Returns the worst |error| / (|A||B| row-column bound); a correct fp32 kernel
 * gives ~1e-7, a broken one O(1). */
double gemm_sgemm_selftest(void);

#endif
