/* gemm_bf16.h: the bf16 matrix product: inputs rounded to bf16 (round to nearest even), products
 * and sums in fp32 (docs/mixed_precision.md). Runs on AVX512-BF16 (VDPBF16PS); the caller checks
 * gemm_cpu_features()->avx512_bf16 first (gemm_engine_resolve does). */
#ifndef BP_GEMM_BF16_H
#define BP_GEMM_BF16_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* float -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN, infinities stay. */
static inline uint16_t gemm_bf16_from_float(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float gemm_bf16_to_float(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* dst[i] = bf16(src[i]) for i < n, 32 at a time with VCVTNE2PS2BF16 (nearest even, like
 * gemm_bf16_from_float except that subnormal inputs, |x| < 2^-126, become zero, as when gemm_bf16
 * packs); AVX512-BF16 only. */
void gemm_bf16_round(uint16_t *dst, const float *src, size_t n);

/* C (M,N) = alpha * bf16(op(A)) * bf16(op(B)) + beta * C, row-major, arguments as cblas_sgemm;
 * single-threaded (kern_gemm cuts and threads it). beta 0 never reads C. Each element of C is the
 * same sum in the same order wherever it lies in C, so results do not depend on how a caller cuts
 * the product into blocks. */
void gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc);

#endif
