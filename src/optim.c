/* optim.c: LAMB, LARS, Adam and AdamW over the parameter table (see optim.h; the math and its
 * sources are in docs/optimizers.md).
 *
 * Notation: x parameters, g gradient (already scaled by the clip factor s), m and v the moments,
 * t the 1-based step, wd the weight decay of the tensor (0 when its weight_decay flag is off).
 *
 * Work layout: every tensor is cut into chunks of OPTIM_CHUNK floats at create time; a parallel loop
 * (static schedule) walks the chunk list. Per-tensor norms are sums of per-chunk partial sums taken
 * in chunk order, and each chunk sums into 8 double accumulators by position within the chunk,
 * so neither the thread count nor the buffers' addresses change a single bit of the result.
 *
 * Passes over memory per step (x, g, m, v are float32 arrays of `total` floats):
 *   LAMB          pass 1: read g m v x, write m v, sum ||x||^2 and ||u||^2
 *                 pass 2: read m v x, write x (u recomputed: cheaper than storing it)
 *   LARS paper    pass 1: read g m x, write m, sum ||x||^2, ||m||^2;  pass 2: read m x, write x
 *   LARS classic  pass 1: read g x, sum ||x||^2, ||g||^2;  pass 2: read g x v, write v x
 *   Adam, AdamW   one pass: read g m v x, write m v x
 * Tensors whose ratio is 1 by configuration (layer_adaptation off) are updated in pass 1. */
#include "optim.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "optim_isa.h"

/* floats per work item: 32 KiB per stream, a multiple of the 16-float alignment of the offsets */
#define OPTIM_CHUNK 8192

#define STATE_MAGIC "BPOPTIM"
#define STATE_VERSION 1u
#define STATE_HEADER 48

typedef struct {
    int tensor;
    size_t begin; /* absolute offset in floats */
    size_t len;
} Chunk;

/* What the moments mean; stored in the state blob. */
typedef enum {
    SK_LAMB = 1,
    SK_LARS_PAPER = 2,
    SK_LARS_CLASSIC = 3,
    SK_ADAM = 4,
    SK_ADAMW = 5,
} StateKind;

/* the passes of the x86-64 level the layer kernels run (kernels_isa.h): the same results at every level */
static const OptimMathOps *optim_math(void) {
    static const OptimMathOps *const LEVELS[] = {&optim_math_x86_64_v4, &optim_math_x86_64_v3, &optim_math_x86_64};
    return LEVELS[kern_isa_level()];
}

static const char *state_kind_name(uint32_t k) {
    switch (k) {
    case SK_LAMB: return "lamb";
    case SK_LARS_PAPER: return "lars (paper form)";
    case SK_LARS_CLASSIC: return "lars (classic form)";
    case SK_ADAM: return "adam";
    case SK_ADAMW: return "adamw";
    default: return "unknown";
    }
}

struct Optimizer {
    OptimConfig oc;
    StateKind kind;
    ParamTable table; /* own copy of the table's entries */
    int n_moments;
    float *moment[2]; /* LAMB/Adam/AdamW: m, v; LARS paper: m; LARS classic: velocity */
    long step;
    Chunk *chunks; /* every chunk, in tensor order */
    size_t n_chunks;
    size_t *pass2; /* indices of the chunks of adapted tensors (LAMB/LARS) */
    size_t n_pass2;
    double *part;    /* 2 partial sums per chunk */
    double *sums;    /* 2 sums per tensor */
    float *tcoef;    /* per tensor: the pass-2 step size lr * ratio */
    OptimLayerStat *stats; /* NULL for Adam/AdamW */
    /* ZeRO stage 1 (optim_create_shard): shard r of n_shards owns the floats [bounds[r],
       bounds[r + 1]) of every buffer, which are whole chunks; its moments hold only those */
    int shard, n_shards;
    size_t *bounds;
    size_t lo, hi;     /* this shard's floats: bounds[shard], bounds[shard + 1] */
    size_t c_lo, c_hi; /* its chunks */
    size_t q_lo, q_hi; /* its entries of pass2 */
    double comm_s;     /* the last step's communication (partial sums, the parameter gather) */
};


/* ------------------------------------------------------------------------------------------ */
/* lifecycle                                                                                   */

static StateKind kind_of(const OptimConfig *oc) {
    switch (oc->name) {
    case OPT_LAMB: return SK_LAMB;
    case OPT_LARS: return oc->lars_form == LARS_CLASSIC ? SK_LARS_CLASSIC : SK_LARS_PAPER;
    case OPT_ADAM: return SK_ADAM;
    case OPT_ADAMW: return SK_ADAMW;
    }
    return 0;
}

static size_t chunks_of(size_t numel) { return (numel + OPTIM_CHUNK - 1) / OPTIM_CHUNK; }

void optim_free(Optimizer *o) {
    if (!o) return;
    free(o->table.params);
    for (int i = 0; i < 2; i++) free(o->moment[i]);
    free(o->chunks);
    free(o->pass2);
    free(o->part);
    free(o->sums);
    free(o->tcoef);
    free(o->stats);
    free(o->bounds);
    free(o);
}

/* Cuts the chunk list into n_shards runs of about equal floats (a chunk is never split: each
 * chunk's partial sums then come from one shard, and the per-tensor norms stay the same sums in the
 * same order as unsharded) and sets this shard's ranges. */
static int plan_shards(Optimizer *o, int shard, int n_shards, BpError *err) {
    const size_t total = o->table.total, nc = o->n_chunks;
    o->shard = shard;
    o->n_shards = n_shards;
    o->bounds = bp_calloc((size_t)n_shards + 1, sizeof(size_t), "optimizer shards", err);
    if (!o->bounds) return -1;
    size_t c = 0, c_first[2] = {0, nc};
    for (int r = 0; r <= n_shards; r++) {
        size_t target = total / (size_t)n_shards * (size_t)r + total % (size_t)n_shards * (size_t)r / (size_t)n_shards;
        while (c < nc && o->chunks[c].begin < target) c++;
        o->bounds[r] = r == 0 ? 0 : r == n_shards || c == nc ? total : o->chunks[c].begin;
        if (r == shard) c_first[0] = r == 0 ? 0 : c;
        if (r == shard + 1) c_first[1] = r == n_shards ? nc : c;
    }
    o->lo = o->bounds[shard];
    o->hi = o->bounds[shard + 1];
    o->c_lo = c_first[0];
    o->c_hi = c_first[1];
    o->q_lo = o->q_hi = 0;
    while (o->q_lo < o->n_pass2 && o->pass2[o->q_lo] < o->c_lo) o->q_lo++;
    for (o->q_hi = o->q_lo; o->q_hi < o->n_pass2 && o->pass2[o->q_hi] < o->c_hi;) o->q_hi++;
    return 0;
}

Optimizer *optim_create(const OptimConfig *oc, const ParamTable *table, BpError *err) {
    return optim_create_shard(oc, table, 0, 1, err);
}

Optimizer *optim_create_shard(const OptimConfig *oc, const ParamTable *table, int shard, int n_shards,
                              BpError *err) {
    if (!oc || !table || table->n < 0 || (table->n > 0 && !table->params)) {
        bp_fail(err, "optim_create: no optimizer config or parameter table");
        return NULL;
    }
    BP_ASSERT(n_shards >= 1 && shard >= 0 && shard < n_shards, "shard %d of %d", shard, n_shards);
    if (n_shards > 1 && !dist_fits_int(table->total)) {
        bp_fail_usage(err, "training.shard_optimizer: the model's %zu floats per buffer exceed what one MPI "
                           "call addresses (2^31 - 1)", table->total);
        return NULL;
    }
    StateKind kind = kind_of(oc);
    if (!kind || (oc->name == OPT_LARS && oc->lars_form != LARS_PAPER && oc->lars_form != LARS_CLASSIC)) {
        bp_fail_usage(err, "optimizer.name %d / optimizer.lars_form %d: unknown optimizer",
                      (int)oc->name, (int)oc->lars_form);
        return NULL;
    }
    /* tensors must lie inside the buffers and not overlap: the parallel passes write them */
    size_t end = 0;
    for (int i = 0; i < table->n; i++) {
        const ParamInfo *p = &table->params[i];
        if (p->offset < end || p->offset > table->total || p->numel > table->total - p->offset) {
            bp_fail(err,
                    "optim_create: tensor %d (%s) at offset %zu with %zu floats overlaps the one "
                    "before it or runs past the table's %zu floats",
                    i, p->name, p->offset, p->numel, table->total);
            return NULL;
        }
        end = p->offset + p->numel;
    }

    Optimizer *o = bp_calloc(1, sizeof *o, "optimizer", err);
    if (!o) return NULL;
    o->oc = *oc;
    o->kind = kind;
    o->table.n = table->n;
    o->table.total = table->total;
    o->table.params = bp_calloc((size_t)table->n + 1, sizeof(ParamInfo), "optimizer table", err);
    if (!o->table.params) goto fail;
    if (table->n) memcpy(o->table.params, table->params, (size_t)table->n * sizeof(ParamInfo));

    o->n_moments = (kind == SK_LARS_PAPER || kind == SK_LARS_CLASSIC) ? 1 : 2;

    size_t nc = 0;
    for (int i = 0; i < table->n; i++) nc += chunks_of(table->params[i].numel);
    o->n_chunks = nc;
    o->chunks = bp_calloc(nc + 1, sizeof(Chunk), "optimizer chunks", err);
    o->pass2 = bp_calloc(nc + 1, sizeof(size_t), "optimizer chunks", err);
    o->part = bp_calloc(2 * nc + 2, sizeof(double), "optimizer partial sums", err);
    o->sums = bp_calloc(2 * (size_t)table->n + 2, sizeof(double), "optimizer sums", err);
    o->tcoef = bp_calloc((size_t)table->n + 1, sizeof(float), "optimizer ratios", err);
    if (!o->chunks || !o->pass2 || !o->part || !o->sums || !o->tcoef) goto fail;
    if (kind != SK_ADAM && kind != SK_ADAMW) {
        o->stats = bp_calloc((size_t)table->n + 1, sizeof(OptimLayerStat), "optimizer stats", err);
        if (!o->stats) goto fail;
    }

    size_t c = 0;
    for (int i = 0; i < table->n; i++) {
        const ParamInfo *p = &table->params[i];
        for (size_t at = 0; at < p->numel; at += OPTIM_CHUNK) {
            size_t len = p->numel - at < OPTIM_CHUNK ? p->numel - at : OPTIM_CHUNK;
            o->chunks[c] = (Chunk){i, p->offset + at, len};
            if (o->stats && p->layer_adaptation) o->pass2[o->n_pass2++] = c;
            c++;
        }
    }
    if (plan_shards(o, shard, n_shards, err) != 0) goto fail;
    for (int i = 0; i < o->n_moments; i++) {
        /* at least one float: an empty shard (more ranks than chunks) still gets a valid pointer */
        size_t floats = o->hi - o->lo > 0 ? o->hi - o->lo : 1;
        o->moment[i] = bp_aligned_calloc(floats * sizeof(float), "optimizer moments", err);
        if (!o->moment[i]) goto fail;
    }
    return o;
fail:
    optim_free(o);
    return NULL;
}

const OptimLayerStat *optim_layer_stats(const Optimizer *o) { return o->stats; }
long optim_step_count(const Optimizer *o) { return o->step; }
bool optim_sharded(const Optimizer *o) { return o->n_shards > 1; }
double optim_comm_seconds(const Optimizer *o) { return o->comm_s; }
void optim_reset_step_count(Optimizer *o) { o->step = 0; }
const char *optim_describe(const Optimizer *o) { return state_kind_name(o->kind); }

/* ------------------------------------------------------------------------------------------ */
/* gradient norm                                                                               */

/* Without an optimizer there is no chunk list, and nothing is allocated per call: work items of
 * up to GN_GROUP chunks of one tensor are enumerated on the fly into stack arrays, GN_BLOCK items
 * at a time (one parallel region for bert-base, two for bert-large). An item sums its chunks in
 * order; items are folded in order into their tensor's sum, and the tensors' sums in order into
 * the total. The partition depends only on the table, so the result does not depend on the
 * thread count. */
#define GN_GROUP 32
#define GN_BLOCK 1024

double optim_grad_norm(const ParamTable *t, const float *grads, double *per_tensor_sq) {
    if (per_tensor_sq)
        for (int i = 0; i < t->n; i++) per_tensor_sq[i] = 0;
    Chunk items[GN_BLOCK];
    double part[GN_BLOCK];
    double total = 0, cur = 0;
    int cur_tensor = -1;
    int ti = 0;
    size_t at = 0;
    const size_t group = (size_t)GN_GROUP * OPTIM_CHUNK;
    const OptimMathOps *om = optim_math();
    for (;;) {
        int k = 0;
        while (k < GN_BLOCK && ti < t->n) {
            const ParamInfo *p = &t->params[ti];
            if (at >= p->numel) {
                ti++;
                at = 0;
                continue;
            }
            size_t len = p->numel - at < group ? p->numel - at : group;
            items[k++] = (Chunk){ti, p->offset + at, len};
            at += len;
        }
        if (k == 0) break;
#pragma omp parallel for schedule(static) if (k > 1)
        for (int c = 0; c < k; c++) {
            double s = 0;
            for (size_t b = 0; b < items[c].len; b += OPTIM_CHUNK) {
                size_t len = items[c].len - b < OPTIM_CHUNK ? items[c].len - b : OPTIM_CHUNK;
                s += om->sumsq_chunk(grads + items[c].begin + b, len);
            }
            part[c] = s;
        }
        for (int c = 0; c < k; c++) {
            if (items[c].tensor != cur_tensor) {
                if (cur_tensor >= 0) {
                    total += cur;
                    if (per_tensor_sq) per_tensor_sq[cur_tensor] = cur;
                }
                cur_tensor = items[c].tensor;
                cur = 0;
            }
            cur += part[c];
        }
    }
    if (cur_tensor >= 0) {
        total += cur;
        if (per_tensor_sq) per_tensor_sq[cur_tensor] = cur;
    }
    return sqrt(total);
}

/* ------------------------------------------------------------------------------------------ */
/* the step                                                                                    */

/* phi(z) = min(max(z, gamma_l), gamma_u), a bound of 0 being off */
static double phi(const OptimConfig *oc, double z) {
    if (oc->gamma_l > 0 && z < oc->gamma_l) z = oc->gamma_l;
    if (oc->gamma_u > 0 && z > oc->gamma_u) z = oc->gamma_u;
    return z;
}

/* Folds the chunk partial sums into per-tensor norms (chunk order), computes each tensor's trust
 * ratio and its pass-2 step size, and fills the statistics. gscale: the clip scale. */
static void finish_norms(Optimizer *o, double lr, double gscale) {
    const ParamTable *t = &o->table;
    memset(o->sums, 0, 2 * (size_t)t->n * sizeof(double));
    for (size_t c = 0; c < o->n_chunks; c++) {
        int i = o->chunks[c].tensor;
        o->sums[2 * i] += o->part[2 * c];
        o->sums[2 * i + 1] += o->part[2 * c + 1];
    }
    const OptimConfig *oc = &o->oc;
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *p = &t->params[i];
        double xn = sqrt(o->sums[2 * i]), un = sqrt(o->sums[2 * i + 1]);
        if (o->kind == SK_LARS_CLASSIC) un *= gscale; /* ||s g|| = s ||g||: summed unscaled */
        double ratio = 1.0;
        if (p->layer_adaptation && xn > 0 && un > 0) {
            if (o->kind == SK_LARS_CLASSIC) {
                double wd = p->weight_decay ? oc->weight_decay : 0.0;
                ratio = oc->eta * xn / (un + wd * xn + oc->epsilon);
            } else {
                ratio = phi(oc, xn) / un;
            }
        }
        o->stats[i] = (OptimLayerStat){xn, un, ratio};
        o->tcoef[i] = (float)(lr * ratio);
    }
}

/* Shards: every shard's partial sums to every shard (each chunk's come from exactly one shard and
 * are zero elsewhere, so the sum is exact and finish_norms folds the same numbers as unsharded). */
static void share_partial_sums(Optimizer *o) {
    if (o->n_shards == 1) return;
    double t0 = bp_now();
    memset(o->part, 0, 2 * o->c_lo * sizeof(double));
    memset(o->part + 2 * o->c_hi, 0, 2 * (o->n_chunks - o->c_hi) * sizeof(double));
    dist_allreduce_doubles(o->part, 2 * o->n_chunks);
    o->comm_s += bp_now() - t0;
}

void optim_step(Optimizer *o, float *params, const float *grads, double lr, double grad_norm) {
    const OptimConfig *oc = &o->oc;
    BP_ASSERT(o->n_shards == 1 || o->n_shards == dist_world_size(), "%d shards, %d ranks", o->n_shards,
              dist_world_size());
    o->step++;
    o->comm_s = 0;
    Coef k;
    k.b1 = (float)oc->beta1;
    k.omb1 = (float)(1.0 - oc->beta1);
    k.b2 = (float)oc->beta2;
    k.omb2 = (float)(1.0 - oc->beta2);
    k.c1 = 1.0f;
    k.c2 = 1.0f;
    if (oc->bias_correction) {
        k.c1 = (float)(1.0 / (1.0 - pow(oc->beta1, (double)o->step)));
        k.c2 = (float)(1.0 / (1.0 - pow(oc->beta2, (double)o->step)));
    }
    k.eps = (float)oc->epsilon;
    k.s = (oc->clip_grad_norm > 0 && grad_norm > oc->clip_grad_norm)
              ? (float)(oc->clip_grad_norm / grad_norm)
              : 1.0f;
    k.mom = (float)oc->momentum;
    const float wdf = (float)oc->weight_decay;
    const float lrf = (float)lr;
    const ParamInfo *pi = o->table.params;
    const Chunk *ch = o->chunks;
    const OptimMathOps *om = optim_math();
    /* the moments hold this shard's floats [lo, hi): float b of a buffer is moment[.][b - lo] */
    float *m0 = o->moment[0], *m1 = o->moment[1];
    const size_t lo = o->lo;
    const long c_lo = (long)o->c_lo, c_hi = (long)o->c_hi, q_lo = (long)o->q_lo, q_hi = (long)o->q_hi;

    switch (o->kind) {
    case SK_ADAM:
    case SK_ADAMW: {
        const int decoupled = o->kind == SK_ADAMW;
#pragma omp parallel for schedule(static)
        for (long c = c_lo; c < c_hi; c++) {
            size_t b = ch[c].begin;
            float wd = pi[ch[c].tensor].weight_decay ? wdf : 0.0f;
            om->adam_update(&k, decoupled ? 0.0f : wd, decoupled ? wd : 0.0f, lrf, params + b,
                        grads + b, m0 + (b - lo), m1 + (b - lo), ch[c].len);
        }
        break;
    }
    case SK_LAMB: {
#pragma omp parallel for schedule(static)
        for (long c = c_lo; c < c_hi; c++) {
            size_t b = ch[c].begin;
            const ParamInfo *p = &pi[ch[c].tensor];
            om->lamb_pass1(&k, p->weight_decay ? wdf : 0.0f, !p->layer_adaptation, lrf, params + b,
                       grads + b, m0 + (b - lo), m1 + (b - lo), ch[c].len, &o->part[2 * c]);
        }
        share_partial_sums(o);
        finish_norms(o, lr, k.s);
#pragma omp parallel for schedule(static)
        for (long q = q_lo; q < q_hi; q++) {
            const Chunk *c = &ch[o->pass2[q]];
            size_t b = c->begin;
            om->lamb_pass2(&k, pi[c->tensor].weight_decay ? wdf : 0.0f, o->tcoef[c->tensor],
                       params + b, m0 + (b - lo), m1 + (b - lo), c->len);
        }
        break;
    }
    case SK_LARS_PAPER: {
#pragma omp parallel for schedule(static)
        for (long c = c_lo; c < c_hi; c++) {
            size_t b = ch[c].begin;
            const ParamInfo *p = &pi[ch[c].tensor];
            om->larsp_pass1(&k, p->weight_decay ? wdf : 0.0f, !p->layer_adaptation, lrf, params + b,
                        grads + b, m0 + (b - lo), ch[c].len, &o->part[2 * c]);
        }
        share_partial_sums(o);
        finish_norms(o, lr, k.s);
#pragma omp parallel for schedule(static)
        for (long q = q_lo; q < q_hi; q++) {
            const Chunk *c = &ch[o->pass2[q]];
            om->larsp_pass2(o->tcoef[c->tensor], params + c->begin, m0 + (c->begin - lo), c->len);
        }
        break;
    }
    case SK_LARS_CLASSIC: {
        /* tensors outside layer adaptation have local_lr 1: update them while their norms are
           summed, leaving pass 2 to the adapted ones */
#pragma omp parallel for schedule(static)
        for (long c = c_lo; c < c_hi; c++) {
            size_t b = ch[c].begin;
            const ParamInfo *p = &pi[ch[c].tensor];
            o->part[2 * c] = om->sumsq_chunk(params + b, ch[c].len);
            o->part[2 * c + 1] = om->sumsq_chunk(grads + b, ch[c].len);
            if (!p->layer_adaptation)
                om->larsc_update(&k, p->weight_decay ? wdf : 0.0f, lrf, params + b, grads + b,
                             m0 + (b - lo), ch[c].len);
        }
        share_partial_sums(o);
        finish_norms(o, lr, k.s);
#pragma omp parallel for schedule(static)
        for (long q = q_lo; q < q_hi; q++) {
            const Chunk *c = &ch[o->pass2[q]];
            size_t b = c->begin;
            om->larsc_update(&k, pi[c->tensor].weight_decay ? wdf : 0.0f, o->tcoef[c->tensor],
                         params + b, grads + b, m0 + (b - lo), c->len);
        }
        break;
    }
    }
    /* every shard updated its own floats: all of them to every rank */
    if (o->n_shards > 1) {
        double t0 = bp_now();
        dist_allgather_floats(params, o->bounds);
        o->comm_s += bp_now() - t0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* state                                                                                       */

/* CRC of the tensor layout (offset, numel of each tensor): a blob from a model of the same total
 * but other shapes is refused. */
static uint32_t layout_crc(const ParamTable *t) {
    uint32_t crc = 0;
    for (int i = 0; i < t->n; i++) {
        uint64_t w[2] = {t->params[i].offset, t->params[i].numel};
        crc = bp_crc32(crc, w, sizeof w);
    }
    return crc;
}

size_t optim_state_bytes(const Optimizer *o) {
    return STATE_HEADER + (size_t)o->n_moments * o->table.total * sizeof(float);
}

/* header layout (host byte order):
 *   0 magic "BPOPTIM\0" | 8 u32 version | 12 u32 kind | 16 u32 moments | 20 u32 layout crc
 *   24 u64 tensors | 32 u64 total | 40 i64 step | 48 moments, float32, moment after moment */
static void write_header(const Optimizer *o, unsigned char *d) {
    memset(d, 0, STATE_HEADER);
    memcpy(d, STATE_MAGIC, sizeof STATE_MAGIC);
    uint32_t u32[4] = {STATE_VERSION, (uint32_t)o->kind, (uint32_t)o->n_moments, layout_crc(&o->table)};
    memcpy(d + 8, u32, sizeof u32);
    uint64_t u64[2] = {(uint64_t)o->table.n, (uint64_t)o->table.total};
    memcpy(d + 24, u64, sizeof u64);
    int64_t step = o->step;
    memcpy(d + 40, &step, sizeof step);
}

void optim_state_save(const Optimizer *o, void *dst) {
    BP_ASSERT(o->n_shards == 1, "a sharded optimizer's state is streamed (optim_state_stream_open)");
    unsigned char *d = dst;
    write_header(o, d);
    size_t mb = o->table.total * sizeof(float);
    for (int i = 0; i < o->n_moments; i++) memcpy(d + STATE_HEADER + (size_t)i * mb, o->moment[i], mb);
}

int optim_state_load(Optimizer *o, const void *src, size_t bytes, BpError *err) {
    const unsigned char *s = src;
    if (bytes < STATE_HEADER || memcmp(s, STATE_MAGIC, sizeof STATE_MAGIC) != 0)
        return bp_fail(err, "optimizer state: not an optimizer state blob (%zu bytes, no %s header)",
                       bytes, STATE_MAGIC);
    uint32_t u32[4];
    uint64_t u64[2];
    int64_t step;
    memcpy(u32, s + 8, sizeof u32);
    memcpy(u64, s + 24, sizeof u64);
    memcpy(&step, s + 40, sizeof step);
    if (u32[0] != STATE_VERSION)
        return bp_fail(err, "optimizer state: version %u, this program reads version %u", u32[0],
                       STATE_VERSION);
    if (u32[1] != (uint32_t)o->kind)
        return bp_fail_usage(err,
                             "optimizer state was written by %s, this run uses %s: its moments "
                             "mean something else. HINT: resume with the optimizer the checkpoint "
                             "was written with, or start a fresh run",
                             state_kind_name(u32[1]), state_kind_name((uint32_t)o->kind));
    if (u64[0] != (uint64_t)o->table.n || u64[1] != (uint64_t)o->table.total)
        return bp_fail_usage(err,
                             "optimizer state holds %llu tensors / %llu floats, this model has %d "
                             "tensors / %zu floats: it was written for another model",
                             (unsigned long long)u64[0], (unsigned long long)u64[1], o->table.n,
                             o->table.total);
    if (u32[3] != layout_crc(&o->table))
        return bp_fail_usage(err, "optimizer state: tensor shapes differ from this model's (same "
                                  "count and total): it was written for another model");
    if (u32[2] != (uint32_t)o->n_moments || bytes != optim_state_bytes(o))
        return bp_fail(err, "optimizer state: %zu bytes with %u moments, expected %zu bytes with %d",
                       bytes, u32[2], optim_state_bytes(o), o->n_moments);
    if (step < 0) return bp_fail(err, "optimizer state: negative step count %lld", (long long)step);
    size_t mb = o->table.total * sizeof(float);
    for (int i = 0; i < o->n_moments; i++)
        memcpy(o->moment[i], s + STATE_HEADER + (size_t)i * mb + o->lo * sizeof(float), (o->hi - o->lo) * sizeof(float));
    o->step = (long)step;
    if (o->stats) memset(o->stats, 0, (size_t)o->table.n * sizeof(OptimLayerStat));
    return 0;
}

/* ---- the state streamed to a checkpoint (optim.h) ---- */

/* floats per message of a shard's part: 4 MiB, the bounce buffer rank 0 receives into */
#define STREAM_FLOATS ((size_t)1 << 20)

struct OptimStateStream {
    const Optimizer *o;
    unsigned char header[STATE_HEADER];
    bool header_done;
    int moment, rank; /* the part being handed out: moment[moment] of shard `rank` */
    size_t at;        /* floats of that part handed out so far */
    float *bounce;    /* sharded: what another rank sent */
};

OptimStateStream *optim_state_stream_open(const Optimizer *o, BpError *err) {
    OptimStateStream *st = bp_calloc(1, sizeof *st, "the optimizer state stream", err);
    if (!st) return NULL;
    st->o = o;
    write_header(o, st->header);
    if (o->n_shards > 1) {
        st->bounce = bp_aligned_calloc(STREAM_FLOATS * sizeof(float), "the optimizer state stream", err);
        if (!st->bounce) {
            free(st);
            return NULL;
        }
    }
    return st;
}

const void *optim_state_stream_next(void *stream, size_t *len) {
    OptimStateStream *st = stream;
    const Optimizer *o = st->o;
    if (!st->header_done) {
        st->header_done = true;
        *len = STATE_HEADER;
        return st->header;
    }
    for (;;) {
        if (st->moment >= o->n_moments) return NULL; /* asked for more than the blob holds */
        size_t part = o->bounds[st->rank + 1] - o->bounds[st->rank];
        if (st->at < part) {
            size_t n = part - st->at < STREAM_FLOATS ? part - st->at : STREAM_FLOATS;
            const float *piece = st->bounce;
            if (st->rank == o->shard) piece = o->moment[st->moment] + st->at;
            else dist_recv_floats(st->bounce, n, st->rank); /* optim_state_send's matching piece */
            st->at += n;
            *len = n * sizeof(float);
            return piece;
        }
        st->at = 0;
        if (++st->rank == o->n_shards) {
            st->rank = 0;
            st->moment++;
        }
    }
}

void optim_state_stream_close(OptimStateStream *st) {
    if (!st) return;
    free(st->bounce);
    free(st);
}

void optim_state_send(const Optimizer *o) {
    if (o->n_shards == 1 || o->shard == 0) return;
    size_t part = o->hi - o->lo;
    for (int i = 0; i < o->n_moments; i++)
        for (size_t at = 0; at < part; at += STREAM_FLOATS)
            dist_send_floats(o->moment[i] + at, part - at < STREAM_FLOATS ? part - at : STREAM_FLOATS, 0);
}

void optim_state_share(Optimizer *o, const void *root_state) {
    if (o->n_shards == 1) return;
    int64_t step = o->step;
    dist_broadcast_bytes(&step, sizeof step);
    o->step = (long)step;
    const unsigned char *s = root_state;
    size_t mb = o->table.total * sizeof(float);
    for (int i = 0; i < o->n_moments; i++)
        dist_scatter_floats(s ? (const float *)(const void *)(s + STATE_HEADER + (size_t)i * mb) : NULL, o->moment[i],
                            o->bounds);
    if (o->stats) memset(o->stats, 0, (size_t)o->table.n * sizeof(OptimLayerStat));
}

/* ------------------------------------------------------------------------------------------ */
/* bandwidth benchmark                                                                         */

/* A BERT-shaped table of about n floats: encoder layers of width 768 (four 768x768 projections,
 * the 768x3072 and 3072x768 FFN matrices, their biases and two LayerNorms), then one 768-wide
 * embedding-like matrix with the rest. Bias and LayerNorm tensors are excluded from weight decay
 * and adaptation, as the defaults do. */
static int bench_table(ParamTable *t, size_t n, BpError *err) {
    enum { H = 768, F = 3072 };
    const size_t shapes[][3] = {/* rows, cols, excluded */
                                {H, H, 0}, {H, 1, 1}, {H, H, 0}, {H, 1, 1}, {H, H, 0}, {H, 1, 1},
                                {H, H, 0}, {H, 1, 1}, {H, 1, 1}, {H, 1, 1}, {F, H, 0}, {F, 1, 1},
                                {H, F, 0}, {H, 1, 1}, {H, 1, 1}, {H, 1, 1}};
    const int per_layer = (int)BP_ARRAY_LEN(shapes);
    size_t layer_floats = 0;
    for (int i = 0; i < per_layer; i++) layer_floats += shapes[i][0] * shapes[i][1];
    size_t layers = n / layer_floats;
    t->n = 0;
    t->params = bp_calloc(layers * (size_t)per_layer + 1, sizeof(ParamInfo), "bench table", err);
    if (!t->params) return -1;
    size_t off = 0;
    for (size_t l = 0; l <= layers; l++) {
        for (int i = 0; i < per_layer; i++) {
            size_t rows = shapes[i][0], cols = shapes[i][1];
            if (l == layers) { /* the rest, as one embedding-like matrix */
                if (n - off < H) break;
                rows = (n - off) / H;
                cols = H;
            }
            ParamInfo *p = &t->params[t->n++];
            snprintf(p->name, sizeof p->name, "bench.%zu.%d", l, i);
            p->ndim = 2;
            p->shape[0] = rows;
            p->shape[1] = cols;
            p->offset = off;
            p->numel = rows * cols;
            p->weight_decay = p->layer_adaptation = !(l < layers && shapes[i][2]);
            off += (p->numel + 15) / 16 * 16;
            if (l == layers) break;
        }
    }
    t->total = off;
    return 0;
}

/* memcpy of n floats split into one piece per thread */
static void parallel_copy(float *dst, const float *src, size_t n) {
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        size_t lo = n * (size_t)id / (size_t)nt, hi = n * (size_t)(id + 1) / (size_t)nt;
        memcpy(dst + lo, src + lo, (hi - lo) * sizeof(float));
    }
}

/* the optimizer's access pattern at its simplest: x += a g in place (12 bytes per element) */
static void parallel_axpy(float *x, const float *g, float a, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = x[i] + a * g[i];
}

/* the fastest copy of the two (one thread, all threads), in seconds */
static double time_copy(float *dst, const float *src, size_t n) {
    double t0 = bp_now();
    memcpy(dst, src, n * sizeof(float));
    double t1 = bp_now();
    parallel_copy(dst, src, n);
    double t2 = bp_now();
    return t1 - t0 < t2 - t1 ? t1 - t0 : t2 - t1;
}

#define BENCH_REPS 5

/* the runs, with the bytes per element counted in the pass table at the top of this file (adapted
   tensors; the bias/LayerNorm vectors, updated in one pass, are under 0.1% of the floats) */
static const struct {
    const char *name;
    int kind; /* -2 axpy, -1 grad norm, else OptimizerKind */
    LarsForm form;
    int bpe;
} BENCH_RUNS[OPTIM_BENCH_ROWS] = {{"axpy in place", -2, LARS_PAPER, 12},
                                  {"grad norm", -1, LARS_PAPER, 4},
                                  {"lamb", OPT_LAMB, LARS_PAPER, 40},
                                  {"lars (paper)", OPT_LARS, LARS_PAPER, 28},
                                  {"lars (classic)", OPT_LARS, LARS_CLASSIC, 28},
                                  {"adam", OPT_ADAM, LARS_PAPER, 28},
                                  {"adamw", OPT_ADAMW, LARS_PAPER, 28}};

/* best of BENCH_REPS runs of BENCH_RUNS[r] (seconds); *best_copy takes the copy timed before each */
static int bench_one(int r, const ParamTable *t, float *x, const float *g, float *scratch, double gn,
                     double *best_copy, double *best, BpError *err) {
    Optimizer *o = NULL;
    if (BENCH_RUNS[r].kind >= 0) {
        Config cfg;
        config_defaults(&cfg);
        OptimConfig oc = cfg.optimizer;
        oc.name = (OptimizerKind)BENCH_RUNS[r].kind;
        oc.lars_form = BENCH_RUNS[r].form;
        o = optim_create(&oc, t, err);
        if (!o) return -1;
        optim_step(o, x, g, 1e-6, gn); /* first touch of the moments, untimed */
    }
    *best = 1e30;
    for (int k = 0; k < BENCH_REPS; k++) {
        double c = time_copy(scratch, g, t->total);
        if (c < *best_copy) *best_copy = c;
        double t0 = bp_now();
        if (BENCH_RUNS[r].kind == -2) parallel_axpy(x, g, 1e-6f, t->total);
        else if (BENCH_RUNS[r].kind == -1) {
            volatile double nrm = optim_grad_norm(t, g, NULL);
            (void)nrm;
        } else optim_step(o, x, g, 1e-6, gn);
        double dt = bp_now() - t0;
        if (dt < *best) *best = dt;
    }
    optim_free(o);
    return 0;
}

int optim_bench(size_t n_floats, OptimBench *out, BpError *err) {
    ParamTable t = {0};
    float *x = NULL, *g = NULL, *scratch = NULL;
    int rc = -1;
    memset(out, 0, sizeof *out);
    if (bench_table(&t, n_floats, err)) goto done;
    size_t bytes = t.total * sizeof(float);
    x = bp_aligned_calloc(bytes, "bench params", err);
    g = x ? bp_aligned_calloc(bytes, "bench grads", err) : NULL;
    scratch = g ? bp_aligned_calloc(bytes, "bench copy target", err) : NULL;
    if (!scratch) goto done;
    /* values of a plausible scale, no denormals; every page touched before timing */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < t.total; i++) {
        uint32_t h = (uint32_t)(i * 2654435761u);
        x[i] = 0.02f * ((float)(h >> 8) / 16777216.0f - 0.5f);
        g[i] = 1e-3f * ((float)((h >> 4) & 0xffff) / 65536.0f - 0.5f);
        scratch[i] = 0;
    }
    out->floats = t.total;
    out->tensors = t.n;
    out->threads = omp_get_max_threads();
    out->reps = BENCH_REPS;
    double best_copy = 1e30, best[OPTIM_BENCH_ROWS];
    const double gn = optim_grad_norm(&t, g, NULL);
    for (int r = 0; r < OPTIM_BENCH_ROWS; r++)
        if (bench_one(r, &t, x, g, scratch, gn, &best_copy, &best[r], err)) goto done;
    /* a copy moves each byte twice: read the source, write the target */
    double bw = 2.0 * (double)bytes / best_copy;
    out->copy = (OptimBenchRow){"memcpy", best_copy * 1e3, 8, bw / 1e9, 1.0};
    for (int r = 0; r < OPTIM_BENCH_ROWS; r++) {
        double rate = BENCH_RUNS[r].bpe * (double)t.total / best[r];
        out->rows[r] = (OptimBenchRow){BENCH_RUNS[r].name, best[r] * 1e3, BENCH_RUNS[r].bpe, rate / 1e9, rate / bw};
    }
    rc = 0;
done:
    free(x);
    free(g);
    free(scratch);
    free(t.params);
    return rc;
}

const OptimBenchRow *optim_bench_row(const OptimBench *b, const char *name) {
    if (!strcmp(name, b->copy.name)) return &b->copy;
    for (int r = 0; r < OPTIM_BENCH_ROWS; r++)
        if (!strcmp(name, b->rows[r].name)) return &b->rows[r];
    BP_ASSERT(false, "optim_bench has no row '%s'", name);
}

void optim_bench_print(const OptimBench *b, FILE *out) {
    fprintf(out,
            "optimizer step at %zu floats (%d tensors), %d OpenMP threads; each figure the best of\n"
            "%d runs, a copy timed before each run (the copy rate is the best of all of them)\n",
            b->floats, b->tensors, b->threads, b->reps);
    fprintf(out, "%-16s %9s %10s %9s %8s\n", "operation", "ms", "bytes/elem", "GB/s", "of copy");
    for (int r = -1; r < OPTIM_BENCH_ROWS; r++) {
        const OptimBenchRow *w = r < 0 ? &b->copy : &b->rows[r];
        fprintf(out, "%-16s %9.1f %10d %9.2f %7.0f%%\n", w->name, w->ms, w->bytes_per_elem, w->gb_s,
                100.0 * w->share);
    }
}
