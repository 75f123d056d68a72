/* gemm_dnnl.h: the bf16 matrix product on oneDNN's matmul primitive (libdnnl 2.6 C API), with the
 * contract of gemm_bf16() (gemm_bf16.h): inputs rounded to bf16 (nearest even), fp32 sums. oneDNN
 * picks its own kernel for the CPU (brgemm on AVX512-BF16, AMX tiles where the CPU has them); which
 * bf16 engine runs is decided in gemm_cpu.c (docs/performance.md has the measurements). A build
 * without libdnnl (make DNNL=0) keeps these functions, and gemm_dnnl_available() says false. */
#ifndef BP_GEMM_DNNL_H
#define BP_GEMM_DNNL_H

#include <stdbool.h>
#include <stddef.h>

/* True when the program was built with oneDNN and it serves bf16 matmuls on this CPU with a native
 * kernel (not its reference code). Probed once, thread-safe. The name of the kernel oneDNN picked
 * for a bert-base-sized product ("brg:avx512_core_bf16", "brg:avx512_core_amx" ...), or a reason
 * why there is none, goes to gemm_dnnl_impl(). */
bool gemm_dnnl_available(void);
const char *gemm_dnnl_impl(void);

/* C (M,N) = alpha * bf16(op(A)) * bf16(op(B)) + beta * C, row-major, arguments as cblas_sgemm;
 * beta 0 never reads C. Single-threaded whatever OpenMP's settings (oneDNN's own OpenMP threads
 * never start), callable from several threads at once: each thread keeps its own primitives, one per
 * (transposes, M, N, K, ldc, alpha, beta), and its own bf16 copies of the operands. The result is a
 * function of the call's shape and operands (not of the thread or of OpenMP's settings); unlike our
 * own kernel's, an element of C can change with the block of C a call computes once K >= 512
 * (oneDNN blocks K by the shape; tests/gemm_check.h), which kern_gemm's shape-only cut makes
 * harmless. Only where gemm_dnnl_available(); a oneDNN failure (out of memory) aborts with the
 * oneDNN status. */
void gemm_dnnl(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc);

/* The bf16 copies gemm_dnnl makes of a product's operands (at most 4096 of K at a time) are kept
 * per thread and grown as needed. These give the elements a product (M,N,K) needs in each copy;
 * gemm_dnnl_reserve makes the calling thread's copies at least that large and resident, so that a
 * model can size them when it plans (and count them) instead of growing them during training.
 * 0 / nothing without oneDNN. */
void gemm_dnnl_copy_elems(int M, int N, int K, size_t *a_elems, size_t *b_elems);
void gemm_dnnl_reserve(size_t a_elems, size_t b_elems);

/* The fp32 product on oneDNN (its AVX-512 brgemm), operands used in place, with the same threading,
 * caching and cut-invariance as gemm_dnnl and cblas_sgemm's contract. Available where oneDNN has a
 * native fp32 kernel and the CPU AVX-512 (gemm_dnnl_f32_available; its kernel's name in
 * gemm_dnnl_f32_impl): the fp32 engine where OpenBLAS runs a core without AVX-512 (gemm_cpu.h). */
bool gemm_dnnl_f32_available(void);
const char *gemm_dnnl_f32_impl(void);
void gemm_dnnl_f32(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                   int ldb, float beta, float *C, int ldc);

#endif
