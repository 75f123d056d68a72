/* gemm_bf16.c: bf16 GEMM on AVX512-BF16 micro-kernels (gemm_bf16.h).
 *
 * GotoBLAS blocking: for each NC-wide column block and KC-deep slice of K, op(B) is packed once as
 * bf16 (KC x NC, 512 KiB: L2), then for each MC-tall row block op(A) is packed (MC x KC, 96 KiB) and
 * MR x NR tiles of C are computed by the micro-kernel, whose B panel (KC x NR, 32 KiB) stays in L1
 * while the A panels stream past it. Packing is where fp32 becomes bf16 (round to nearest even).
 *
 * VDPBF16PS multiplies pairs: lane j of the result gets a[2j] * b[2j] + a[2j+1] * b[2j+1] added.
 * So both operands are packed as (k, k+1) pairs: A as a pair per row (broadcast to all 16 lanes),
 * B as 16 columns of pairs per vector. An odd K is padded with a zero k.
 *
 * Only the micro-kernel needs AVX512-BF16; it is compiled for it by a target attribute, so the rest
 * of the program (and the binary) stays generic x86-64 and gemm_cpu.c decides at run time. */
#include "gemm_bf16.h"

#include <immintrin.h>
#include <stdlib.h>

#include "common.h"

#define MR 6
#define NV 4 /* 16-lane vectors per row of the tile: 24 accumulators, 4 B vectors, 1 broadcast */
#define NR (16 * NV)
#define KC 256
#define MC 192
#define NC 1024

/* Packs rows r0 .. r0+nrows-1 (element (r, k) at src[r * rs + k * ks]), k in [0, kc), into panels
 * of W rows, each [pair][row][2] bf16, zero-padded to W rows and an even k. The loop order follows
 * the stride-1 index, so a transposed operand is read along its rows too. */
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

BF16_TARGET void gemm_bf16_round(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        _mm512_storeu_si512(dst + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i)));
    for (; i < n; i++) { /* as the instruction: a subnormal becomes a zero of its sign */
        uint32_t u;
        memcpy(&u, src + i, 4);
        dst[i] = (u & 0x7f800000u) ? gemm_bf16_from_float(src[i]) : (uint16_t)(u >> 16 & 0x8000u);
    }
}

/* the (k, k+1) pair of row r as one 32-bit word of a panel of W rows */
static inline void put_pair(uint16_t *pan, int W, int q, int r, uint32_t w) {
    memcpy(pan + ((size_t)q * W + r) * 2, &w, 4);
}

/* row r (k contiguous): VCVTNE2PS2BF16 rounds 32 k at a time (nearest even, like
   gemm_bf16_from_float except that it flushes subnormals, |x| < 2^-126, to zero) */
BF16_TARGET static void pack_row(uint16_t *pan, int W, int r, const float *row, int kc) {
    int k = 0;
    for (; k + 32 <= kc; k += 32) {
        uint32_t t[16];
        _mm512_storeu_si512(t, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + k + 16), _mm512_loadu_ps(row + k)));
        for (int j = 0; j < 16; j++) put_pair(pan, W, k / 2 + j, r, t[j]);
    }
    for (; k < kc; k++) pan[((size_t)(k >> 1) * W + r) * 2 + (k & 1)] = gemm_bf16_from_float(row[k]);
}

/* 16 rows (r contiguous) of k pairs: k and k+1 converted side by side and interleaved */
BF16_TARGET static void pack_cols16(uint16_t *pan, int W, int r0, const float *src, size_t ks, int kc) {
    for (int k = 0; k < kc; k += 2) {
        __m512 x0 = _mm512_loadu_ps(src + k * ks), x1 = k + 1 < kc ? _mm512_loadu_ps(src + (k + 1) * ks) : _mm512_setzero_ps();
        __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x0));
        __m512i hi = _mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x1)), 16);
        _mm512_storeu_si512(pan + ((size_t)(k >> 1) * W + r0) * 2, _mm512_or_si512(lo, hi));
    }
}

/* Packs rows r0 .. r0+nrows-1 (element (r, k) at src[r * rs + k * ks]), k in [0, kc), into panels
 * of W rows, each [pair][row][2] bf16, zero-padded to W rows and an even k. Reads follow the
 * operand's stride-1 index. */
static void pack(uint16_t *dst, int W, const float *src, size_t rs, size_t ks, int nrows, int kc) {
    int kp = (kc + 1) / 2;
    for (int p0 = 0; p0 < nrows; p0 += W) {
        uint16_t *pan = dst + (size_t)p0 * kp * 2;
        int live = nrows - p0 < W ? nrows - p0 : W;
        memset(pan, 0, (size_t)W * kp * 2 * sizeof *pan);
        const float *s = src + (size_t)p0 * rs;
        if (ks == 1) {
            for (int r = 0; r < live; r++) pack_row(pan, W, r, s + r * rs, kc);
        } else {
            int r = 0;
            if (rs == 1)
                for (; r + 16 <= live; r += 16) pack_cols16(pan, W, r, s + r, ks, kc);
            for (int k = 0; k < kc; k++)
                for (int q = r; q < live; q++)
                    pan[((size_t)(k >> 1) * W + q) * 2 + (k & 1)] = gemm_bf16_from_float(s[k * ks + q * rs]);
        }
    }
}

/* C tile (mr <= MR rows, nr <= NR columns) = alpha * a b + (add ? C : beta * C); beta 0 reads no C */
BF16_TARGET static void micro_kernel(int kp, const uint16_t *a, const uint16_t *b, float *c, int ldc, int mr, int nr, float alpha,
             float beta, bool add) {
    __m512 acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
    for (int q = 0; q < kp; q++) {
        __m512bh bv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) bv[v] = (__m512bh)_mm512_loadu_si512(b + (size_t)q * NR * 2 + v * 32);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            int32_t w;
            memcpy(&w, a + ((size_t)q * MR + r) * 2, 4);
            __m512bh av = (__m512bh)_mm512_set1_epi32(w);
#pragma GCC unroll 8
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
        }
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < NV && v * 16 < nr; v++) {
            int cols = nr - v * 16;
            __mmask16 m = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1);
            float *cp = c + (size_t)r * ldc + v * 16;
            __m512 x = _mm512_mul_ps(va, acc[r][v]);
            if (add)
                x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, cp), x);
            else if (beta != 0.0f)
                x = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, cp), x);
            _mm512_mask_storeu_ps(cp, m, x);
        }
}

static void scale_c(int M, int N, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
}

void gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    int kcm = K < KC ? K : KC, kpm = (kcm + 1) / 2;
    int mcm = (M < MC ? M : MC) + MR - 1, ncm = (N < NC ? N : NC) + NR - 1;
    size_t a_elems = (size_t)(mcm / MR * MR) * kpm * 2, b_elems = (size_t)(ncm / NR * NR) * kpm * 2;
    uint16_t *pa = aligned_alloc(64, (a_elems * 2 + 63) / 64 * 64), *pb = aligned_alloc(64, (b_elems * 2 + 63) / 64 * 64);
    BP_ASSERT(pa && pb, "bf16 GEMM packing buffers (%zu + %zu bytes)", a_elems * 2, b_elems * 2);
    for (int jc = 0; jc < N; jc += NC) {
        int nc = N - jc < NC ? N - jc : NC;
        for (int pc = 0; pc < K; pc += KC) {
            int kc = K - pc < KC ? K - pc : KC, kp = (kc + 1) / 2;
            pack(pb, NR, tb ? B + (size_t)jc * ldb + pc : B + (size_t)pc * ldb + jc, tb ? (size_t)ldb : 1,
                 tb ? 1 : (size_t)ldb, nc, kc);
            for (int ic = 0; ic < M; ic += MC) {
                int mc = M - ic < MC ? M - ic : MC;
                pack(pa, MR, ta ? A + (size_t)pc * lda + ic : A + (size_t)ic * lda + pc, ta ? 1 : (size_t)lda,
                     ta ? (size_t)lda : 1, mc, kc);
                for (int jr = 0; jr < nc; jr += NR)
                    for (int ir = 0; ir < mc; ir += MR)
                        micro_kernel(kp, pa + (size_t)ir * kp * 2, pb + (size_t)jr * kp * 2,
                                     C + (size_t)(ic + ir) * ldc + jc + jr, ldc, mc - ir < MR ? mc - ir : MR,
                                     nc - jr < NR ? nc - jr : NR, alpha, beta, pc > 0);
            }
        }
    }
    free(pa);
    free(pb);
}
