/* Unit tests for kernels.c against plain double-precision loops: the split sgemm (every transpose
 * combination, strides, alpha/beta, serial and parallel paths), GELU and its derivative in both
 * forms (vectorized exp/erf accuracy, tails included), softmax cross-entropy forward/backward,
 * LayerNorm forward/backward with dropout on either side, attention forward/backward with padding,
 * the dropout masks (rate, scale, independence from how a row is cut), gather/scatter and the
 * embedding scatter. Sizes include ones above the parallel thresholds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "rng.h"

static RngStream g_rng;

static float *rnd(size_t n, float scale) {
    float *p = malloc(n * sizeof(float) + 64);
    for (size_t i = 0; i < n; i++) p[i] = (float)(rng_next_normal(&g_rng) * scale);
    return p;
}

static void assert_close_d(const char *what, const float *got, const double *ref, size_t n, double atol,
                           double rtol) {
    size_t worst = 0;
    double excess = -1.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]), lim = atol + rtol * fabs(ref[i]);
        if (!(e <= lim) && e - lim > excess) {
            excess = e - lim;
            worst = i;
        }
    }
    if (excess >= 0)
        fail_msg("%s: element %zu is %.9g, expected %.9g (atol %g rtol %g)", what, worst, got[worst], ref[worst],
                 atol, rtol);
}

static KernScratch scratch_for(int T, int C) {
    KernScratch s;
    s.nthreads = kern_threads();
    s.per_thread = kern_scratch_floats(T, C);
    s.buf = aligned_alloc(64, (s.per_thread * (size_t)s.nthreads * sizeof(float) + 63) / 64 * 64);
    return s;
}

/* ---------------------------------------------------------------------------------------------- */

static void check_gemm(bool ta, bool tb, int M, int N, int K, float alpha, float beta, int pad) {
    int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    size_t arows = ta ? (size_t)K : (size_t)M, brows = tb ? (size_t)N : (size_t)K;
    float *A = rnd(arows * lda, 1.0f), *B = rnd(brows * ldb, 1.0f), *C = rnd((size_t)M * ldc, 1.0f);
    double *ref = malloc(sizeof(double) * (size_t)M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                acc += a * b;
            }
            ref[(size_t)i * N + j] = alpha * acc + beta * C[(size_t)i * ldc + j];
        }
    float *pad_before = malloc(sizeof(float) * (size_t)M * ldc);
    memcpy(pad_before, C, sizeof(float) * (size_t)M * ldc);
    kern_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    float *packed = malloc(sizeof(float) * (size_t)M * N);
    for (int i = 0; i < M; i++) {
        memcpy(packed + (size_t)i * N, C + (size_t)i * ldc, sizeof(float) * (size_t)N);
        for (int j = N; j < ldc; j++) assert_true(C[(size_t)i * ldc + j] == pad_before[(size_t)i * ldc + j]);
    }
    char what[96];
    snprintf(what, sizeof what, "gemm ta=%d tb=%d %dx%dx%d beta=%g", ta, tb, M, N, K, beta);
    assert_close_d(what, packed, ref, (size_t)M * N, 1e-4, 1e-4);
    free(A), free(B), free(C), free(ref), free(pad_before), free(packed);
}

static void test_gemm(void **state) {
    (void)state;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_gemm(ta, tb, 7, 5, 3, 1.0f, 0.0f, 0);        /* serial path */
            check_gemm(ta, tb, 301, 133, 37, 0.5f, 1.0f, 3);  /* parallel, split M, strided */
            check_gemm(ta, tb, 45, 517, 61, 1.0f, 1.0f, 5);   /* parallel, split N */
            check_gemm(ta, tb, 150, 150, 50, -2.0f, 0.25f, 0); /* M == N */
        }
}

/* ---------------------------------------------------------------------------------------------- */

static double gelu_ref(double x, GeluKind k) {
    /* x (1 + tanh u) / 2 = x / (1 + exp(-2u)): the second form does not cancel in the tail */
    if (k == GELU_TANH) return x / (1 + exp(-2 * 0.7978845608028654 * (x + 0.044715 * x * x * x)));
    return 0.5 * x * erfc(-x / sqrt(2.0));
}

static double gelu_grad_ref(double x, GeluKind k) {
    if (k == GELU_TANH) {
        double u = 0.7978845608028654 * (x + 0.044715 * x * x * x), t = tanh(u);
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * 0.7978845608028654 * (1 + 3 * 0.044715 * x * x);
    }
    return 0.5 * erfc(-x / sqrt(2.0)) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI);
}

/* relative accuracy everywhere the value is a normal float, tails included (where 1 + erf and
 * 1 + tanh are tiny and a naive formula loses every digit). The bound grows like x^2 in the tails:
 * the float argument of exp there (~x^2/2, up to 72) is itself rounded to 2^-24 relative. */
static void test_gelu_accuracy(void **state) {
    (void)state;
    for (int k = 0; k < 2; k++) {
        double worst = 0, worst_x = 0, max_grad = 0;
        for (double x = -12; x <= 12; x += 1.0 / 4096) {
            float xf = (float)x;
            double r = gelu_ref(xf, (GeluKind)k), g = gelu_grad_ref(xf, (GeluKind)k);
            double rel = fabs(r) > 1e-30 ? fabs(kern_gelu(xf, (GeluKind)k) - r) / fabs(r) : 0.0;
            double ratio = rel / (1e-6 * (1.0 + x * x / 4));
            if (ratio > worst) worst = ratio, worst_x = x;
            max_grad = fmax(max_grad, fabs(kern_gelu_grad(xf, (GeluKind)k) - g));
        }
        if (worst > 1.0 || max_grad > 5e-7)
            fail_msg("gelu %s: relative error %.3g of the bound 1e-6 (1 + x^2/4) at x = %g; derivative max abs "
                     "error %.3g (limit 5e-7)",
                     k ? "tanh" : "erf", worst, worst_x, max_grad);
    }
    /* the batched kernels agree with the scalar function and keep the pre-activation */
    int N = 64, C = 300;
    float *f = rnd((size_t)N * C, 3.0f), *bias = rnd((size_t)C, 1.0f), *g = malloc(sizeof(float) * N * C);
    float *f0 = malloc(sizeof(float) * N * C), *dg = rnd((size_t)N * C, 1.0f), *g2 = malloc(sizeof(float) * N * C);
    memcpy(f0, f, sizeof(float) * N * C);
    for (int k = 0; k < 2; k++) {
        memcpy(f, f0, sizeof(float) * N * C);
        kern_bias_gelu_forward(f, g, bias, N, C, (GeluKind)k);
        float *dg0 = malloc(sizeof(float) * N * C);
        memcpy(dg0, dg, sizeof(float) * N * C);
        kern_gelu_backward(dg0, g2, f, N, C, (GeluKind)k);
        for (int i = 0; i < N * C; i++) {
            float x = f0[i] + bias[i % C];
            assert_true(f[i] == x);
            assert_true(g[i] == kern_gelu(x, (GeluKind)k));
            assert_true(g2[i] == g[i]);
            assert_true(fabsf(dg0[i] - dg[i] * kern_gelu_grad(x, (GeluKind)k)) <= 1e-6f * fabsf(dg0[i]) + 1e-30f);
        }
        free(dg0);
    }
    free(f), free(bias), free(g), free(f0), free(dg), free(g2);
}

/* ---------------------------------------------------------------------------------------------- */

static void test_xent(void **state) {
    (void)state;
    int M = 37, V = 2051;
    float *l = rnd((size_t)M * V, 4.0f), *bias = rnd((size_t)V, 1.0f), *lse = malloc(sizeof(float) * M);
    float *l0 = malloc(sizeof(float) * M * V);
    memcpy(l0, l, sizeof(float) * M * V);
    int32_t *lab = malloc(sizeof(int32_t) * M), *corr = malloc(sizeof(int32_t) * M);
    double *loss = malloc(sizeof(double) * M);
    for (int i = 0; i < M; i++) lab[i] = (int32_t)rng_next_below(&g_rng, (uint32_t)V);
    lab[3] = 0;
    lab[4] = V - 1;
    /* make row 5 correct: its label the maximum */
    l0[5 * V + lab[5]] = 100.0f;
    memcpy(l, l0, sizeof(float) * M * V);
    kern_xent_forward(l, lse, loss, corr, bias, lab, M, V);
    double *dref = malloc(sizeof(double) * M * V), *dbias = calloc((size_t)V, sizeof(double));
    double *lse_ref = malloc(sizeof(double) * M), *loss_ref = malloc(sizeof(double) * M);
    float scale = 0.37f;
    for (int i = 0; i < M; i++) {
        double mx = -1e300;
        int arg = 0;
        for (int j = 0; j < V; j++) {
            double v = (double)l0[(size_t)i * V + j] + bias[j];
            if (v > mx) mx = v, arg = j;
        }
        double s = 0;
        for (int j = 0; j < V; j++) s += exp((double)l0[(size_t)i * V + j] + bias[j] - mx);
        lse_ref[i] = mx + log(s);
        loss_ref[i] = lse_ref[i] - ((double)l0[(size_t)i * V + lab[i]] + bias[lab[i]]);
        assert_int_equal(corr[i], arg == lab[i]);
        for (int j = 0; j < V; j++) {
            double p = exp((double)l0[(size_t)i * V + j] + bias[j] - lse_ref[i]);
            double d = scale * (p - (j == lab[i]));
            dref[(size_t)i * V + j] = d;
            dbias[j] += d;
        }
    }
    assert_int_equal(corr[5], 1);
    assert_close_d("lse", lse, lse_ref, (size_t)M, 1e-5, 1e-6);
    for (int i = 0; i < M; i++)
        if (!(fabs(loss[i] - loss_ref[i]) <= 1e-5 + 1e-6 * fabs(loss_ref[i])))
            fail_msg("loss[%d] = %.9g, expected %.9g", i, loss[i], loss_ref[i]);
    float *db = calloc((size_t)V, sizeof(float));
    kern_xent_backward(l, lse, lab, scale, db, M, V);
    assert_close_d("dlogits", l, dref, (size_t)M * V, 1e-7, 1e-5);
    assert_close_d("dbias", db, dbias, (size_t)V, 1e-6, 1e-5);
    free(l), free(bias), free(lse), free(l0), free(lab), free(corr), free(loss), free(dref), free(dbias);
    free(lse_ref), free(loss_ref), free(db);
}

/* A NaN or Inf reaching the vectorised exp (corrupt weights, a diverged run) is defined behaviour:
 * NaN comes out NaN, +Inf as Inf, and the finite elements beside them are computed as always. The
 * sanitizer build aborts here if exp converts a NaN to int or shifts a negative value. */
static void test_exp_nonfinite(void **state) {
    (void)state;
    for (int k = 0; k < 2; k++) {
        assert_true(isnan(kern_gelu(NAN, (GeluKind)k)));
        assert_true(isnan(kern_gelu_grad(NAN, (GeluKind)k)));
        assert_true(kern_gelu(INFINITY, (GeluKind)k) == INFINITY);
        int N = 3, C = 67; /* more than a vector's width, with odd tails */
        float *f = rnd((size_t)N * C, 3.0f), *g = malloc(sizeof(float) * N * C);
        for (int i = 0; i < N * C; i += 5) f[i] = i % 10 ? NAN : INFINITY;
        kern_gelu_forward(g, f, N, C, (GeluKind)k);
        for (int i = 0; i < N * C; i++) {
            if (isnan(f[i])) assert_true(isnan(g[i]));
            else if (isinf(f[i])) assert_true(g[i] == INFINITY);
            else assert_true(g[i] == kern_gelu(f[i], (GeluKind)k));
        }
        free(f), free(g);
    }
    /* a NaN logit makes its row's loss NaN and leaves the other rows exactly as without it */
    int M = 3, V = 300;
    float *l = rnd((size_t)M * V, 2.0f), *l2 = malloc(sizeof(float) * M * V), *bias = calloc((size_t)V, sizeof(float));
    float lse[3], lse2[3];
    double loss[3], loss2[3];
    int32_t lab[3] = {0, 7, 299}, corr[3];
    memcpy(l2, l, sizeof(float) * M * V);
    l2[V + 11] = NAN;
    kern_xent_forward(l, lse, loss, corr, bias, lab, M, V);
    kern_xent_forward(l2, lse2, loss2, corr, bias, lab, M, V);
    assert_true(isnan(loss2[1]));
    assert_true(loss2[0] == loss[0] && loss2[2] == loss[2] && lse2[0] == lse[0] && lse2[2] == lse[2]);
    free(l), free(l2), free(bias);
}

/* ---------------------------------------------------------------------------------------------- */

static void test_dropout_masks(void **state) {
    (void)state;
    int64_t ex[3] = {5, 6, 1000000007};
    KernDropout d = kern_dropout_make(0.1, 42, 7, 3, ex, 4);
    assert_true(kern_dropout_on(&d));
    KernDropout off = kern_dropout_make(0.0, 42, 7, 3, ex, 4);
    assert_false(kern_dropout_on(&off));
    size_t n = 1 << 20;
    float *m = malloc(n * sizeof(float)), *piece = malloc(n * sizeof(float));
    kern_dropout_row(m, &d, ex[2], 3, n);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(m[i] == 0.0f || m[i] == d.scale);
        kept += m[i] != 0.0f;
    }
    /* drop rate within 5 sigma of the quantised p; scale makes the expectation exactly 1 */
    double p = (double)d.threshold / 65536.0;
    double rate = 1.0 - (double)kept / n, sigma = sqrt(p * (1 - p) / n);
    assert_true(fabs(rate - p) < 5 * sigma);
    assert_true(fabs(p - 0.1) < 1.0 / 65536);
    assert_true(fabs((double)d.scale * (1 - p) - 1.0) < 1e-7);
    /* the mask is its definition, element by element (so a faster kernel cannot change a run): the
       16-bit field e % 4 of hash(key, example, e / 4) against the threshold */
    uint64_t kex = rng_mix(d.key ^ rng_mix((uint64_t)ex[2]));
    size_t wrong = 0, first_wrong = 0;
    for (size_t i = 0; i < n; i++) {
        size_t e = 3 + i;
        uint64_t h = rng_mix(kex + (uint64_t)(e >> 2) * 0x9E3779B97F4A7C15ull);
        float want = ((uint32_t)(h >> (16 * (e & 3))) & 0xFFFFu) >= d.threshold ? d.scale : 0.0f;
        if (m[i] != want && wrong++ == 0) first_wrong = i;
    }
    if (wrong) fail_msg("dropout mask: %zu of %zu elements differ from the definition, first at %zu", wrong, n, first_wrong);
    /* cutting the row anywhere gives the same mask (the counter is the element index) */
    size_t cuts[] = {0, 1, 2, 3, 5, 8, 13, 1000, 4097, n};
    for (size_t c = 0; c + 1 < sizeof cuts / sizeof cuts[0]; c++)
        kern_dropout_row(piece + cuts[c], &d, ex[2], 3 + cuts[c], cuts[c + 1] - cuts[c]);
    assert_memory_equal(m, piece, n * sizeof(float));
    /* another example, step or site gives another mask */
    KernDropout d2 = kern_dropout_make(0.1, 42, 8, 3, ex, 4), d3 = kern_dropout_make(0.1, 42, 7, 4, ex, 4);
    kern_dropout_row(piece, &d, ex[0], 3, 4096);
    assert_memory_not_equal(m, piece, 4096 * sizeof(float));
    kern_dropout_row(piece, &d2, ex[2], 3, 4096);
    assert_memory_not_equal(m, piece, 4096 * sizeof(float));
    kern_dropout_row(piece, &d3, ex[2], 3, 4096);
    assert_memory_not_equal(m, piece, 4096 * sizeof(float));
    free(m), free(piece);
}

/* ---------------------------------------------------------------------------------------------- */

static void ln_ref(double *y, double *xhat, double *rstd, const double *r, const float *g, const float *b, int C,
                   double eps) {
    double mean = 0, var = 0;
    for (int j = 0; j < C; j++) mean += r[j];
    mean /= C;
    for (int j = 0; j < C; j++) var += (r[j] - mean) * (r[j] - mean);
    var /= C;
    *rstd = 1.0 / sqrt(var + eps);
    for (int j = 0; j < C; j++) {
        xhat[j] = (r[j] - mean) * *rstd;
        y[j] = xhat[j] * g[j] + b[j];
    }
}

static void check_layernorm(int N, int C, int T, bool drop_in, bool drop_out) {
    KernScratch s = scratch_for(T, C);
    int64_t *ex = malloc(sizeof(int64_t) * (size_t)(N / T + 1));
    for (int i = 0; i <= N / T; i++) ex[i] = 100 + 3 * i;
    KernDropout din = kern_dropout_make(drop_in ? 0.2 : 0.0, 1, 2, 3, ex, (size_t)T);
    KernDropout dout = kern_dropout_make(drop_out ? 0.3 : 0.0, 1, 2, 4, ex, (size_t)T);
    float *res = rnd((size_t)N * C, 1.0f), *z = rnd((size_t)N * C, 2.0f), *zb = rnd((size_t)C, 0.5f);
    float *g = rnd((size_t)C, 0.3f), *b = rnd((size_t)C, 0.3f);
    for (int j = 0; j < C; j++) g[j] += 1.0f;
    float *y = malloc(sizeof(float) * N * C), *xhat = malloc(sizeof(float) * N * C), *rstd = malloc(sizeof(float) * N);
    kern_residual_layernorm_forward(y, xhat, rstd, res, z, zb, g, b, N, C, 1e-12f, &dout, &s);
    double *yr = malloc(sizeof(double) * N * C), *xr = malloc(sizeof(double) * N * C), *rr = malloc(sizeof(double) * N);
    double *r = malloc(sizeof(double) * C);
    float *mult = malloc(sizeof(float) * C);
    for (int n = 0; n < N; n++) {
        if (drop_out) kern_dropout_row(mult, &dout, ex[n / T], (size_t)(n % T) * C, (size_t)C);
        for (int j = 0; j < C; j++)
            r[j] = (double)res[(size_t)n * C + j] + ((double)z[(size_t)n * C + j] + zb[j]) * (drop_out ? mult[j] : 1.0);
        ln_ref(yr + (size_t)n * C, xr + (size_t)n * C, rr + n, r, g, b, C, 1e-12);
    }
    assert_close_d("layernorm y", y, yr, (size_t)N * C, 1e-5, 1e-5);
    assert_close_d("layernorm xhat", xhat, xr, (size_t)N * C, 1e-5, 1e-5);
    assert_close_d("layernorm rstd", rstd, rr, (size_t)N, 0, 1e-5);
    /* backward against the formula in double, from the kernel's own saved xhat/rstd */
    float *dy = rnd((size_t)N * C, 1.0f), *dr = malloc(sizeof(float) * N * C), *dz = malloc(sizeof(float) * N * C);
    float *dg = calloc((size_t)C, sizeof(float)), *db = calloc((size_t)C, sizeof(float));
    for (int j = 0; j < C; j++) dg[j] = 0.5f, db[j] = -0.25f; /* accumulates */
    kern_layernorm_backward(dr, dz, dy, xhat, rstd, g, dg, db, N, C, &din, &dout, &s);
    double *drr = malloc(sizeof(double) * N * C), *dzr = malloc(sizeof(double) * N * C);
    double *dgr = calloc((size_t)C, sizeof(double)), *dbr = calloc((size_t)C, sizeof(double));
    double *dyn = malloc(sizeof(double) * C);
    for (int j = 0; j < C; j++) dgr[j] = 0.5, dbr[j] = -0.25;
    for (int n = 0; n < N; n++) {
        if (drop_in) kern_dropout_row(mult, &din, ex[n / T], (size_t)(n % T) * C, (size_t)C);
        double a = 0, bb = 0;
        for (int j = 0; j < C; j++) {
            dyn[j] = (double)dy[(size_t)n * C + j] * (drop_in ? mult[j] : 1.0);
            a += g[j] * dyn[j];
            bb += g[j] * dyn[j] * xhat[(size_t)n * C + j];
            dgr[j] += dyn[j] * xhat[(size_t)n * C + j];
            dbr[j] += dyn[j];
        }
        a /= C;
        bb /= C;
        if (drop_out) kern_dropout_row(mult, &dout, ex[n / T], (size_t)(n % T) * C, (size_t)C);
        for (int j = 0; j < C; j++) {
            double d = rstd[n] * (g[j] * dyn[j] - a - xhat[(size_t)n * C + j] * bb);
            drr[(size_t)n * C + j] = d;
            dzr[(size_t)n * C + j] = d * (drop_out ? mult[j] : 1.0);
        }
    }
    assert_close_d("layernorm dr", dr, drr, (size_t)N * C, 1e-5, 1e-4);
    assert_close_d("layernorm dz", dz, dzr, (size_t)N * C, 1e-5, 1e-4);
    assert_close_d("layernorm dgamma", dg, dgr, (size_t)C, 1e-4, 1e-5);
    assert_close_d("layernorm dbeta", db, dbr, (size_t)C, 1e-4, 1e-5);
    free(s.buf), free(ex), free(res), free(z), free(zb), free(g), free(b), free(y), free(xhat), free(rstd);
    free(yr), free(xr), free(rr), free(r), free(mult), free(dy), free(dr), free(dz), free(dg), free(db);
    free(drr), free(dzr), free(dgr), free(dbr), free(dyn);
}

static void test_layernorm(void **state) {
    (void)state;
    check_layernorm(6, 10, 3, false, false);   /* serial */
    check_layernorm(6, 10, 3, true, true);
    check_layernorm(600, 96, 50, false, true); /* parallel */
    check_layernorm(600, 96, 50, true, false);
    /* in place (dr aliases dy), as the model calls it */
    int N = 300, C = 64;
    KernScratch s = scratch_for(8, C);
    float *xh = rnd((size_t)N * C, 1.0f), *rs = rnd((size_t)N, 0.1f), *g = rnd((size_t)C, 1.0f);
    float *dy = rnd((size_t)N * C, 1.0f), *a = malloc(sizeof(float) * N * C), *dg = calloc(C, 4), *db = calloc(C, 4);
    for (int n = 0; n < N; n++) rs[n] = fabsf(rs[n]) + 0.5f;
    kern_layernorm_backward(a, NULL, dy, xh, rs, g, dg, db, N, C, NULL, NULL, &s);
    kern_layernorm_backward(dy, NULL, dy, xh, rs, g, dg, db, N, C, NULL, NULL, &s);
    assert_memory_equal(a, dy, sizeof(float) * N * C);
    free(s.buf), free(xh), free(rs), free(g), free(dy), free(a), free(dg), free(db);
}

/* ---------------------------------------------------------------------------------------------- */

/* naive double attention with its backward, for one batch */
static void check_attention(int B, int T, int H, int A, double p_drop) {
    int D = H / A, H3 = 3 * H;
    size_t N = (size_t)B * T;
    KernScratch s = scratch_for(T, 3 * H);
    int64_t *ex = malloc(sizeof(int64_t) * B);
    int32_t *mask = malloc(sizeof(int32_t) * N);
    for (int b = 0; b < B; b++) {
        ex[b] = 7 * b + 1;
        int len = T - (b * 5) % (T / 2 + 1);
        for (int t = 0; t < T; t++) mask[(size_t)b * T + t] = t < len;
    }
    KernDropout d = kern_dropout_make(p_drop, 3, 4, 5, ex, (size_t)T);
    float *qkv = rnd(N * H3, 1.0f), *ctx = malloc(sizeof(float) * N * H), *P = malloc(sizeof(float) * B * A * T * T);
    float *dctx = rnd(N * H, 1.0f), *dqkv = malloc(sizeof(float) * N * H3);
    kern_attention_forward(ctx, P, qkv, mask, B, T, H, A, &d, &s);
    kern_attention_backward(dqkv, dctx, qkv, P, mask, B, T, H, A, &d, &s);
    /* without kept probabilities the backward recomputes them: the same results bit for bit */
    float *ctx2 = malloc(sizeof(float) * N * H), *dqkv2 = malloc(sizeof(float) * N * H3);
    kern_attention_forward(ctx2, NULL, qkv, mask, B, T, H, A, &d, &s);
    kern_attention_backward(dqkv2, dctx, qkv, NULL, mask, B, T, H, A, &d, &s);
    assert_memory_equal(ctx2, ctx, sizeof(float) * N * H);
    assert_memory_equal(dqkv2, dqkv, sizeof(float) * N * H3);
    free(ctx2), free(dqkv2);
    double *ctxr = calloc(N * H, sizeof(double)), *dqkvr = calloc(N * H3, sizeof(double));
    double *Pr = malloc(sizeof(double) * T * T), *Pd = malloc(sizeof(double) * T * T), *dP = malloc(sizeof(double) * T * T);
    float *m = malloc(sizeof(float) * T);
    double scale = 1.0 / sqrt((double)D);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < A; h++) {
            const float *Q = qkv + (size_t)b * T * H3 + h * D, *K = Q + H, *Vv = Q + 2 * H;
            for (int i = 0; i < T; i++) {
                double mx = -1e300;
                for (int j = 0; j < T; j++) {
                    double sc = 0;
                    for (int k = 0; k < D; k++) sc += (double)Q[(size_t)i * H3 + k] * K[(size_t)j * H3 + k];
                    sc = sc * scale + (mask[(size_t)b * T + j] ? 0.0 : -10000.0);
                    Pr[i * T + j] = sc;
                    mx = fmax(mx, sc);
                }
                double sum = 0;
                for (int j = 0; j < T; j++) sum += (Pr[i * T + j] = exp(Pr[i * T + j] - mx));
                if (p_drop > 0) kern_dropout_row(m, &d, ex[b], ((size_t)h * T + i) * T, (size_t)T);
                for (int j = 0; j < T; j++) {
                    Pr[i * T + j] /= sum;
                    Pd[i * T + j] = Pr[i * T + j] * (p_drop > 0 ? m[j] : 1.0);
                    if (!mask[(size_t)b * T + j]) assert_true(P[(((size_t)b * A + h) * T + i) * T + j] == 0.0f);
                }
            }
            for (int i = 0; i < T; i++)
                for (int k = 0; k < D; k++) {
                    double acc = 0;
                    for (int j = 0; j < T; j++) acc += Pd[i * T + j] * Vv[(size_t)j * H3 + k];
                    ctxr[((size_t)b * T + i) * H + h * D + k] = acc;
                }
            const float *dC = dctx + (size_t)b * T * H + h * D;
            double *dQ = dqkvr + (size_t)b * T * H3 + h * D, *dK = dQ + H, *dV = dQ + 2 * H;
            for (int i = 0; i < T; i++) {
                if (p_drop > 0) kern_dropout_row(m, &d, ex[b], ((size_t)h * T + i) * T, (size_t)T);
                double dot = 0;
                for (int j = 0; j < T; j++) {
                    double g = 0;
                    for (int k = 0; k < D; k++) g += (double)dC[(size_t)i * H + k] * Vv[(size_t)j * H3 + k];
                    dP[i * T + j] = g * (p_drop > 0 ? m[j] : 1.0);
                    dot += Pr[i * T + j] * dP[i * T + j];
                }
                for (int j = 0; j < T; j++) dP[i * T + j] = Pr[i * T + j] * (dP[i * T + j] - dot);
            }
            for (int j = 0; j < T; j++)
                for (int k = 0; k < D; k++) {
                    double v = 0, q = 0, kk = 0;
                    for (int i = 0; i < T; i++) {
                        v += Pd[i * T + j] * dC[(size_t)i * H + k];
                        q += dP[j * T + i] * K[(size_t)i * H3 + k];
                        kk += dP[i * T + j] * Q[(size_t)i * H3 + k];
                    }
                    dV[(size_t)j * H3 + k] = v;
                    dQ[(size_t)j * H3 + k] = q * scale;
                    dK[(size_t)j * H3 + k] = kk * scale;
                }
        }
    char what[64];
    snprintf(what, sizeof what, "attention ctx B%d T%d H%d A%d p%g", B, T, H, A, p_drop);
    assert_close_d(what, ctx, ctxr, N * H, 1e-5, 1e-4);
    snprintf(what, sizeof what, "attention dqkv B%d T%d H%d A%d p%g", B, T, H, A, p_drop);
    assert_close_d(what, dqkv, dqkvr, N * H3, 1e-5, 1e-4);
    free(s.buf), free(ex), free(mask), free(qkv), free(ctx), free(P), free(dctx), free(dqkv), free(ctxr), free(dqkvr);
    free(Pr), free(Pd), free(dP), free(m);
}

static void test_attention(void **state) {
    (void)state;
    check_attention(2, 9, 8, 2, 0.0);    /* serial */
    check_attention(2, 9, 8, 2, 0.25);
    check_attention(3, 40, 64, 4, 0.0);  /* parallel */
    check_attention(3, 40, 64, 4, 0.1);
}

/* ---------------------------------------------------------------------------------------------- */

static void test_rows_and_columns(void **state) {
    (void)state;
    int N = 700, C = 70, M = 300;
    float *X = rnd((size_t)N * C, 1.0f), *bias = rnd((size_t)C, 1.0f), *out = malloc(sizeof(float) * M * C);
    int32_t *rows = malloc(sizeof(int32_t) * M);
    for (int i = 0; i < M; i++) rows[i] = (int32_t)rng_next_below(&g_rng, 40); /* many repeats */
    kern_gather_rows(out, X, rows, M, C);
    for (int i = 0; i < M; i++) assert_memory_equal(out + (size_t)i * C, X + (size_t)rows[i] * C, sizeof(float) * C);
    double *ref = malloc(sizeof(double) * N * C);
    for (int i = 0; i < N * C; i++) ref[i] = X[i];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < C; j++) ref[(size_t)rows[i] * C + j] += out[(size_t)i * C + j];
    kern_scatter_add_rows(X, out, rows, M, C);
    assert_close_d("scatter_add", X, ref, (size_t)N * C, 1e-6, 1e-6);
    /* column sums over a strided block, accumulating */
    double *cs = malloc(sizeof(double) * 50);
    float *db = malloc(sizeof(float) * 50);
    for (int j = 0; j < 50; j++) {
        db[j] = 1.0f;
        cs[j] = 1.0;
        for (int n = 0; n < N; n++) cs[j] += X[(size_t)n * C + 10 + j];
    }
    kern_colsum_add(db, X + 10, C, N, 50);
    assert_close_d("colsum", db, cs, 50, 1e-4, 1e-5);
    for (int i = 0; i < N * C; i++) ref[i] = (float)(X[i] + (i % C >= 5 && i % C < 25 ? bias[i % C - 5] : 0.0f));
    kern_bias_add(X + 5, C, bias, N, 20);
    assert_close_d("bias_add", X, ref, (size_t)N * C, 0, 0);
    free(X), free(bias), free(out), free(rows), free(ref), free(cs), free(db);
}

static void test_embeddings(void **state) {
    (void)state;
    int B = 5, T = 40, H = 48, V = 30;
    size_t N = (size_t)B * T;
    KernScratch s = scratch_for(T, H);
    float *word = rnd((size_t)V * H, 1.0f), *pos = rnd((size_t)T * H, 1.0f), *type = rnd(2 * (size_t)H, 1.0f);
    float *g = rnd((size_t)H, 0.2f), *b = rnd((size_t)H, 0.2f);
    int32_t *ids = malloc(sizeof(int32_t) * N), *tt = malloc(sizeof(int32_t) * N);
    int64_t ex[5] = {10, 11, 12, 13, 14};
    for (size_t n = 0; n < N; n++) ids[n] = (int32_t)rng_next_below(&g_rng, (uint32_t)V), tt[n] = (int32_t)(n % 3 == 0);
    KernDropout d = kern_dropout_make(0.1, 9, 9, 0, ex, (size_t)T);
    float *x = malloc(sizeof(float) * N * H), *xh = malloc(sizeof(float) * N * H), *rs = malloc(sizeof(float) * N);
    kern_embed_forward(x, xh, rs, ids, tt, word, pos, type, g, b, B, T, H, 1e-12f, &d, &s);
    double *xr = malloc(sizeof(double) * N * H), *xhr = malloc(sizeof(double) * H), *e = malloc(sizeof(double) * H), rr;
    float *m = malloc(sizeof(float) * H);
    for (size_t n = 0; n < N; n++) {
        for (int j = 0; j < H; j++)
            e[j] = (double)word[(size_t)ids[n] * H + j] + pos[(n % T) * H + j] + type[(size_t)tt[n] * H + j];
        ln_ref(xr + n * H, xhr, &rr, e, g, b, H, 1e-12);
        kern_dropout_row(m, &d, ex[n / T], (n % T) * H, (size_t)H);
        for (int j = 0; j < H; j++) xr[n * H + j] *= m[j];
    }
    assert_close_d("embedding forward", x, xr, N * H, 1e-5, 1e-5);
    float *dw = calloc((size_t)V * H, 4), *dp = calloc((size_t)T * H, 4), *dt = calloc(2 * (size_t)H, 4);
    float *de = rnd(N * H, 1.0f);
    double *dwr = calloc((size_t)V * H, 8), *dpr = calloc((size_t)T * H, 8), *dtr = calloc(2 * (size_t)H, 8);
    for (size_t n = 0; n < N; n++)
        for (int j = 0; j < H; j++) {
            dwr[(size_t)ids[n] * H + j] += de[n * H + j];
            dpr[(n % T) * H + j] += de[n * H + j];
            dtr[(size_t)tt[n] * H + j] += de[n * H + j];
        }
    kern_embed_backward(dw, dp, dt, de, ids, tt, B, T, H);
    assert_close_d("dword", dw, dwr, (size_t)V * H, 1e-5, 1e-5);
    assert_close_d("dpos", dp, dpr, (size_t)T * H, 1e-5, 1e-5);
    assert_close_d("dtype", dt, dtr, 2 * (size_t)H, 1e-4, 1e-5);
    free(s.buf), free(word), free(pos), free(type), free(g), free(b), free(ids), free(tt), free(x), free(xh), free(rs);
    free(xr), free(xhr), free(e), free(m), free(dw), free(dp), free(dt), free(de), free(dwr), free(dpr), free(dtr);
}

static int setup(void **state) {
    (void)state;
    g_rng = rng_stream(2024, RNG_TEST, 77);
    kern_init_threads(0);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_gemm, setup),
        cmocka_unit_test_setup(test_gelu_accuracy, setup),
        cmocka_unit_test_setup(test_xent, setup),
        cmocka_unit_test_setup(test_exp_nonfinite, setup),
        cmocka_unit_test_setup(test_dropout_masks, setup),
        cmocka_unit_test_setup(test_layernorm, setup),
        cmocka_unit_test_setup(test_attention, setup),
        cmocka_unit_test_setup(test_rows_and_columns, setup),
        cmocka_unit_test_setup(test_embeddings, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
