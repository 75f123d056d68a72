/* gemm_dnnl.c: bf16 GEMM on oneDNN's matmul primitive (gemm_dnnl.h).
 *
 * oneDNN 2.6 has no public bf16 GEMM function, so each product is a matmul primitive: bf16 source
 * and weights, fp32 destination, the transposes as strides, alpha as an output scale and beta as a
 * sum post-op (both fixed when the primitive is created, hence part of the cache key). 2.6 ignores
 * dnnl_fpmath_mode_bf16 for f32 inputs on AVX512-BF16 (it still picks the fp32 kernel,
 * brg:avx512_core, at half the bf16 rate), so the operands are rounded into per-thread bf16 copies
 * first, in their own layout (no transposition): 2-5% of the time of a bert-base dense product,
about 10% of an attention product (128x128x64), measured single-threaded on the Zen 5.
 *
 * Threads: Debian's libdnnl runs on OpenMP, and a primitive splits its work over
 * omp_get_max_threads() threads, fixed when it is created (the split can include K, which would
 * change the sums with the thread count). Inside our parallel loops oneDNN sees omp_in_parallel()
 * and runs alone, but kern_gemm also calls it outside one. So the calling thread's OpenMP thread
 * count is set to 1 around every creation and execution and restored after: every primitive is
 * built for one thread and runs on the caller's. Each thread keeps its own primitives, memory
 * objects, stream and bf16 copies (no locks; a few dozen shapes per thread). */
#include "gemm_dnnl.h"

#include "common.h"

#if BP_HAVE_DNNL

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_bf16.h"
#include "gemm_cpu.h"

#define DNNL_CHECK(call)                                                                                  \
    do {                                                                                                  \
        dnnl_status_t st_ = (call);                                                                       \
        BP_ASSERT(st_ == dnnl_success, "oneDNN: %s returned status %d", #call, (int)st_);                 \
    } while (0)

typedef struct {
    bool f32; /* fp32 operands used in place (lda, ldb part of the key), else bf16 copies */
    bool ta, tb;
    int M, N, K, lda, ldb, ldc;
    float alpha, beta;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c; /* descriptors bound to the primitive, data handles set per call */
    dnnl_memory_t scratch; /* its scratchpad (NULL when it needs none), in the thread's one buffer */
    size_t scratch_bytes;
} Entry;

#define CACHE_CAP 96

/* K is cut into chunks of at most this many: the product runs chunk by chunk into C (beta 1 after
 * the first), so the per-thread bf16 copies stay M x 4096 and 4096 x N. Uncut, the decoder's input
 * gradient (K = the vocabulary) copied the whole (R, V) logit gradient and the (V, H) embeddings
 * into every thread's buffers (66 MB a thread at bert-base), grown whenever a thread first met it.
 * The chunks depend on K alone: the result is still a function of the call's shape. */
#define K_CHUNK 4096

typedef struct {
    Entry e[CACHE_CAP];
    int n, evict; /* when full, entries are replaced round-robin */
    dnnl_stream_t stream;
    uint16_t *abuf, *bbuf;
    size_t acap, bcap;
    /* one scratchpad for all of the thread's primitives (they run one at a time), as large as the
       largest needs: oneDNN's default gives each primitive its own (packed copies of B among them),
       which grew a training run's memory by the sum over every shape and thread */
    void *scratch;
    size_t scratch_cap;
} ThreadState;

static _Thread_local ThreadState *t_state;
/* the largest scratchpad any thread's primitive needs: each thread grows its one buffer to it on
   its next call, so that the buffers reach their size in the first steps, not whenever a thread
   first meets the shape that needs most */
static atomic_size_t g_scratch_max;
static dnnl_engine_t g_engine;
static bool g_ok;
static char g_impl[128];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* matmul primitive for the key of e; its memory objects have no data yet. Returns the status. */
static dnnl_status_t entry_create(Entry *e, const char **impl) {
    dnnl_memory_desc_t a, b, c;
    dnnl_dims_t da = {e->M, e->K}, db = {e->K, e->N}, dc = {e->M, e->N};
    /* op(A)[i][k] at i*lda + k, or k*lda + i when ta (the bf16 copies are dense: lda = K or M) */
    dnnl_dims_t sa = {e->ta ? 1 : e->lda, e->ta ? e->lda : 1}, sb = {e->tb ? 1 : e->ldb, e->tb ? e->ldb : 1},
                sc = {e->ldc, 1};
    dnnl_data_type_t in = e->f32 ? dnnl_f32 : dnnl_bf16;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_matmul_desc_t md;
    dnnl_status_t st;
    if ((st = dnnl_memory_desc_init_by_strides(&a, 2, da, in, sa)) ||
        (st = dnnl_memory_desc_init_by_strides(&b, 2, db, in, sb)) ||
        (st = dnnl_memory_desc_init_by_strides(&c, 2, dc, dnnl_f32, sc)) ||
        (st = dnnl_matmul_desc_init(&md, &a, &b, NULL, &c)) || (st = dnnl_primitive_attr_create(&attr)))
        return st;
    if (e->alpha != 1.0f) st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &e->alpha);
    if (!st && e->beta != 0.0f) {
        if (!(st = dnnl_post_ops_create(&po)) && !(st = dnnl_post_ops_append_sum(po, e->beta)))
            st = dnnl_primitive_attr_set_post_ops(attr, po);
    }
    if (!st) st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (!st) st = dnnl_primitive_desc_create(&pd, &md, attr, g_engine, NULL);
    if (!st && impl) st = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, impl);
    if (!st) st = dnnl_primitive_create(&e->prim, pd);
    if (!st) st = dnnl_memory_create(&e->a, &a, g_engine, DNNL_MEMORY_NONE);
    if (!st) st = dnnl_memory_create(&e->b, &b, g_engine, DNNL_MEMORY_NONE);
    if (!st) st = dnnl_memory_create(&e->c, &c, g_engine, DNNL_MEMORY_NONE);
    const dnnl_memory_desc_t *sd = st ? NULL : dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->scratch_bytes = sd ? dnnl_memory_desc_get_size(sd) : 0;
    size_t seen = atomic_load(&g_scratch_max);
    while (e->scratch_bytes > seen && !atomic_compare_exchange_weak(&g_scratch_max, &seen, e->scratch_bytes)) {
    }
    if (!st && e->scratch_bytes) st = dnnl_memory_create(&e->scratch, sd, g_engine, DNNL_MEMORY_NONE);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

static void entry_destroy(Entry *e) {
    dnnl_memory_destroy(e->a);
    dnnl_memory_destroy(e->b);
    dnnl_memory_destroy(e->c);
    if (e->scratch) dnnl_memory_destroy(e->scratch);
    dnnl_primitive_destroy(e->prim);
    memset(e, 0, sizeof *e);
}

/* oneDNN's kernel for a product the size of a bert-base layer, on one thread, in bf16 and in fp32:
   native when it is a brgemm/jit kernel, not the reference loops (bf16 also needs the CPU's bf16
   instructions, fp32 AVX-512: below it, OpenBLAS's AVX2 kernels are as good) */
static char g_impl_f32[128];
static bool g_ok_f32;

static void probe_one(bool f32, char *impl_out, size_t len, bool *ok, bool cpu_ok) {
    Entry e = {.f32 = f32, .M = 512, .N = 768, .K = 768, .lda = 768, .ldb = 768, .ldc = 768, .alpha = 1.0f,
               .tb = true};
    const char *impl = NULL;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    dnnl_status_t st = entry_create(&e, &impl);
    omp_set_num_threads(saved);
    if (st != dnnl_success) {
        snprintf(impl_out, len, "oneDNN has no %s matmul here (status %d)", f32 ? "fp32" : "bf16", (int)st);
        return;
    }
    snprintf(impl_out, len, "%s", impl);
    *ok = cpu_ok && strncmp(impl, "ref", 3) != 0;
    entry_destroy(&e);
}

static void probe(void) {
    /* first: it asks Linux for the AMX tile data before oneDNN looks at what the CPU may use */
    const GemmCpu *cpu = gemm_cpu_features();
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success) {
        snprintf(g_impl, sizeof g_impl, "oneDNN found no CPU engine");
        snprintf(g_impl_f32, sizeof g_impl_f32, "oneDNN found no CPU engine");
        return;
    }
    probe_one(false, g_impl, sizeof g_impl, &g_ok, cpu->avx512_bf16 || cpu->amx_bf16);
    probe_one(true, g_impl_f32, sizeof g_impl_f32, &g_ok_f32, cpu->avx512);
}

bool gemm_dnnl_available(void) {
    pthread_once(&g_once, probe);
    return g_ok;
}

const char *gemm_dnnl_impl(void) {
    pthread_once(&g_once, probe);
    return g_impl;
}

bool gemm_dnnl_f32_available(void) {
    pthread_once(&g_once, probe);
    return g_ok_f32;
}

const char *gemm_dnnl_f32_impl(void) {
    pthread_once(&g_once, probe);
    return g_impl_f32;
}

/* A thread's state goes with the thread: OpenMP ends pool threads when the thread count drops
 * (kern_init_threads), and their primitives, copies and scratchpad would otherwise stay allocated
 * for good. _Thread_local gives the fast lookup, the key the destructor at thread exit. */
static pthread_key_t g_state_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

static void state_free(void *p) {
    ThreadState *s = p;
    for (int i = 0; i < s->n; i++) entry_destroy(&s->e[i]);
    dnnl_stream_destroy(s->stream);
    free(s->abuf);
    free(s->bbuf);
    free(s->scratch);
    free(s);
}

static void key_create(void) { BP_ASSERT(pthread_key_create(&g_state_key, state_free) == 0, "pthread_key_create"); }

static ThreadState *thread_state(void) {
    if (!t_state) {
        t_state = calloc(1, sizeof *t_state);
        BP_ASSERT(t_state, "oneDNN GEMM: out of memory for the per-thread cache");
        DNNL_CHECK(dnnl_stream_create(&t_state->stream, g_engine, dnnl_stream_default_flags));
        pthread_once(&g_key_once, key_create);
        BP_ASSERT(pthread_setspecific(g_state_key, t_state) == 0, "pthread_setspecific");
    }
    return t_state;
}

static Entry *lookup(ThreadState *s, const Entry *key) {
    for (int i = 0; i < s->n; i++) {
        Entry *e = &s->e[i];
        if (e->f32 == key->f32 && e->M == key->M && e->N == key->N && e->K == key->K && e->ta == key->ta &&
            e->tb == key->tb && e->lda == key->lda && e->ldb == key->ldb && e->ldc == key->ldc &&
            e->alpha == key->alpha && e->beta == key->beta)
            return e;
    }
    Entry *e;
    if (s->n < CACHE_CAP) {
        e = &s->e[s->n++];
    } else {
        e = &s->e[s->evict];
        s->evict = (s->evict + 1) % CACHE_CAP;
        entry_destroy(e);
    }
    *e = *key;
    e->prim = NULL;
    e->a = e->b = e->c = e->scratch = NULL;
    DNNL_CHECK(entry_create(e, NULL));
    return e;
}

/* Runs the product of key on a, b (data of op(A), op(B) in the key's layout) into C, with oneDNN
   held to the calling thread (see the top of the file). */
static void run(const Entry *key, const void *a, const void *b, float *C) {
    ThreadState *s = thread_state();
    int saved = omp_get_max_threads();
    if (saved != 1) omp_set_num_threads(1);
    Entry *e = lookup(s, key);
    DNNL_CHECK(dnnl_memory_set_data_handle(e->a, (void *)a));
    DNNL_CHECK(dnnl_memory_set_data_handle(e->b, (void *)b));
    DNNL_CHECK(dnnl_memory_set_data_handle(e->c, C));
    size_t want = atomic_load(&g_scratch_max);
    if (want > s->scratch_cap) {
        free(s->scratch);
        s->scratch_cap = (want + 4095) / 4096 * 4096;
        s->scratch = aligned_alloc(4096, s->scratch_cap);
        BP_ASSERT(s->scratch, "oneDNN GEMM: out of memory for a %zu-byte scratchpad", want);
        memset(s->scratch, 0, s->scratch_cap); /* resident now, not when a large product first writes it */
    }
    if (e->scratch) DNNL_CHECK(dnnl_memory_set_data_handle(e->scratch, s->scratch));
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c},
                              {DNNL_ARG_SCRATCHPAD, e->scratch}};
    DNNL_CHECK(dnnl_primitive_execute(e->prim, s->stream, e->scratch ? 4 : 3, args));
    DNNL_CHECK(dnnl_stream_wait(s->stream));
    if (saved != 1) omp_set_num_threads(saved);
}

/* *buf holds at least need bf16 numbers, resident (touched) */
static void reserve_copy(uint16_t **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    free(*buf);
    *cap = need;
    size_t bytes = (need * sizeof **buf + 63) / 64 * 64;
    *buf = aligned_alloc(64, bytes);
    BP_ASSERT(*buf, "oneDNN GEMM: out of memory for a %zu-element bf16 operand copy", need);
    memset(*buf, 0, bytes);
}

/* rows x cols floats at row stride ld -> dense bf16 in *buf (grown as needed) */
static uint16_t *round_copy(uint16_t **buf, size_t *cap, const float *src, int rows, int cols, int ld) {
    size_t need = (size_t)rows * cols;
    if (need > *cap) reserve_copy(buf, cap, need + need / 4);
    if (ld == cols) {
        gemm_bf16_round(*buf, src, need);
    } else {
        for (int r = 0; r < rows; r++) gemm_bf16_round(*buf + (size_t)r * cols, src + (size_t)r * ld, (size_t)cols);
    }
    return *buf;
}

void gemm_dnnl(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) { /* no product: C = beta C, as gemm_bf16 does it */
        gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    BP_ASSERT(gemm_dnnl_available(), "gemm_dnnl called without oneDNN bf16: %s", gemm_dnnl_impl());
    ThreadState *s = thread_state();
    for (int k0 = 0; k0 < K; k0 += K_CHUNK) {
        int kc = K - k0 < K_CHUNK ? K - k0 : K_CHUNK;
        /* op(A)[:, k0:k0+kc] and op(B)[k0:k0+kc, :] in their stored layouts */
        const float *Ak = ta ? A + (size_t)k0 * lda : A + k0, *Bk = tb ? B + k0 : B + (size_t)k0 * ldb;
        uint16_t *a = round_copy(&s->abuf, &s->acap, Ak, ta ? kc : M, ta ? M : kc, lda);
        uint16_t *b = round_copy(&s->bbuf, &s->bcap, Bk, tb ? N : kc, tb ? kc : N, ldb);
        /* the copies are dense in the operands' own layouts */
        Entry key = {.ta = ta, .tb = tb, .M = M, .N = N, .K = kc, .lda = ta ? M : kc, .ldb = tb ? kc : N,
                     .ldc = ldc, .alpha = alpha, .beta = k0 == 0 ? beta : 1.0f};
        run(&key, a, b, C);
    }
}

void gemm_dnnl_copy_elems(int M, int N, int K, size_t *a_elems, size_t *b_elems) {
    size_t kc = (size_t)(K < K_CHUNK ? K : K_CHUNK);
    /* a buffer reserved at this size never grows again for products within the bound */
    *a_elems = (size_t)M * kc;
    *b_elems = kc * (size_t)N;
}

void gemm_dnnl_reserve(size_t a_elems, size_t b_elems) {
    if (!gemm_dnnl_available()) return;
    ThreadState *s = thread_state();
    reserve_copy(&s->abuf, &s->acap, a_elems);
    reserve_copy(&s->bbuf, &s->bcap, b_elems);
}

void gemm_dnnl_f32(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                   int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) { /* no product: C = beta C (beta 0 never reads C) */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    BP_ASSERT(gemm_dnnl_f32_available(), "gemm_dnnl_f32 called without oneDNN fp32: %s", gemm_dnnl_f32_impl());
    Entry key = {.f32 = true, .ta = ta, .tb = tb, .M = M, .N = N, .K = K, .lda = lda, .ldb = ldb, .ldc = ldc,
                 .alpha = alpha, .beta = beta};
    run(&key, A, B, C);
}

#else /* built without oneDNN (make DNNL=0) */

void gemm_dnnl_copy_elems(int M, int N, int K, size_t *a_elems, size_t *b_elems) {
    (void)M, (void)N, (void)K;
    *a_elems = *b_elems = 0;
}
void gemm_dnnl_reserve(size_t a_elems, size_t b_elems) { (void)a_elems, (void)b_elems; }

bool gemm_dnnl_available(void) { return false; }
const char *gemm_dnnl_impl(void) { return "built without oneDNN (make DNNL=0)"; }
bool gemm_dnnl_f32_available(void) { return false; }
const char *gemm_dnnl_f32_impl(void) { return "built without oneDNN (make DNNL=0)"; }

void gemm_dnnl(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc) {
    (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)ldb, (void)beta;
    (void)C, (void)ldc;
    BP_ASSERT(false, "gemm_dnnl: this program was built without oneDNN (make DNNL=0)");
}

void gemm_dnnl_f32(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                   int ldb, float beta, float *C, int ldc) {
    (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)ldb, (void)beta;
    (void)C, (void)ldc;
    BP_ASSERT(false, "gemm_dnnl_f32: this program was built without oneDNN (make DNNL=0)");
}

#endif
