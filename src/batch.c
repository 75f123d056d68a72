/* batch.c: micro-batch storage, and the masked-LM + NSP example builder (see batch.h). */
#include "batch.h"

#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "safetensors.h"
#include "shard.h"

int batch_alloc(Batch *b, int B, int T, int P, BpError *err) {
    memset(b, 0, sizeof *b);
    if (B <= 0 || T <= 0 || P < 0)
        return bp_fail(err, "batch_alloc: invalid sizes B=%d T=%d P=%d", B, T, P);
    size_t bt = (size_t)B * (size_t)T, bp = (size_t)B * (size_t)(P > 0 ? P : 1);
    b->input_ids = bp_calloc(bt, sizeof(int32_t), "batch input_ids", err);
    b->token_type_ids = bp_calloc(bt, sizeof(int32_t), "batch token_type_ids", err);
    b->attention_mask = bp_calloc(bt, sizeof(int32_t), "batch attention_mask", err);
    b->masked_lm_positions = bp_calloc(bp, sizeof(int32_t), "batch masked_lm_positions", err);
    b->masked_lm_ids = bp_calloc(bp, sizeof(int32_t), "batch masked_lm_ids", err);
    b->masked_lm_weights = bp_calloc(bp, sizeof(int32_t), "batch masked_lm_weights", err);
    b->next_sentence_labels = bp_calloc((size_t)B, sizeof(int32_t), "batch next_sentence_labels", err);
    b->example_index = bp_calloc((size_t)B, sizeof(int64_t), "batch example_index", err);
    if (!b->input_ids || !b->token_type_ids || !b->attention_mask || !b->masked_lm_positions ||
        !b->masked_lm_ids || !b->masked_lm_weights || !b->next_sentence_labels || !b->example_index) {
        batch_free(b);
        return -1;
    }
    b->B = b->cap_B = B;
    b->T = b->cap_T = T;
    b->P = b->cap_P = P;
    return 0;
}

void batch_free(Batch *b) {
    free(b->input_ids);
    free(b->token_type_ids);
    free(b->attention_mask);
    free(b->masked_lm_positions);
    free(b->masked_lm_ids);
    free(b->masked_lm_weights);
    free(b->next_sentence_labels);
    free(b->example_index);
    memset(b, 0, sizeof *b);
}

long batch_count_predictions(const Batch *b) {
    long n = 0;
    for (size_t i = 0; i < (size_t)b->B * (size_t)b->P; i++) n += b->masked_lm_weights[i] != 0;
    return n;
}

/* The batch file's int32 tensors in file order, the one list the writer and the reader walk: each
 * is (B, T), (B, P) or (B) (the reader also takes next_sentence_labels as (B, 1)). */
typedef enum { BATCH_ROWS_OF_T, BATCH_ROWS_OF_P, BATCH_ONE_PER_EXAMPLE } BatchTensorShape;
static const struct {
    const char *name;
    size_t field; /* offsetof the int32_t * in Batch */
    BatchTensorShape shape;
} BATCH_TENSORS[] = {
    {"input_ids", offsetof(Batch, input_ids), BATCH_ROWS_OF_T},
    {"token_type_ids", offsetof(Batch, token_type_ids), BATCH_ROWS_OF_T},
    {"attention_mask", offsetof(Batch, attention_mask), BATCH_ROWS_OF_T},
    {"masked_lm_positions", offsetof(Batch, masked_lm_positions), BATCH_ROWS_OF_P},
    {"masked_lm_ids", offsetof(Batch, masked_lm_ids), BATCH_ROWS_OF_P},
    {"masked_lm_weights", offsetof(Batch, masked_lm_weights), BATCH_ROWS_OF_P},
    {"next_sentence_labels", offsetof(Batch, next_sentence_labels), BATCH_ONE_PER_EXAMPLE},
};
#define BATCH_N_TENSORS ((int)BP_ARRAY_LEN(BATCH_TENSORS))

static int32_t **batch_tensor(const Batch *b, int i) { return (int32_t **)((char *)b + BATCH_TENSORS[i].field); }

int batch_save_safetensors(const Batch *b, const char *path, BpError *err) {
    size_t B = (size_t)b->B, T = (size_t)b->T, P = (size_t)b->P;
    StEntry e[BATCH_N_TENSORS];
    for (int i = 0; i < BATCH_N_TENSORS; i++) {
        BatchTensorShape sh = BATCH_TENSORS[i].shape;
        e[i] = (StEntry){BATCH_TENSORS[i].name, ST_I32, sh == BATCH_ONE_PER_EXAMPLE ? 1 : 2,
                         {B, sh == BATCH_ROWS_OF_T ? T : P}, *batch_tensor(b, i)};
    }
    return st_write(path, e, BATCH_N_TENSORS, err);
}

/* the tensors of a batch file, each present, int32 and of its rank; NULL with err filled */
static int find_batch_tensors(const StFile *f, const char *path, const StTensor **t, BpError *err) {
    for (int i = 0; i < BATCH_N_TENSORS; i++) {
        const char *nm = BATCH_TENSORS[i].name;
        t[i] = st_find(f, nm);
        if (!t[i]) return bp_fail(err, "%s: tensor '%s' is missing", path, nm);
        if (t[i]->dtype != ST_I32)
            return bp_fail(err, "%s: tensor '%s' has dtype %s, expected I32", path, nm, st_dtype_name(t[i]->dtype));
        bool per_example = BATCH_TENSORS[i].shape == BATCH_ONE_PER_EXAMPLE;
        bool ok = per_example ? t[i]->ndim == 1 || (t[i]->ndim == 2 && t[i]->shape[1] == 1) : t[i]->ndim == 2;
        if (!ok)
            return bp_fail(err, "%s: tensor '%s' has %d dimensions, expected %s", path, nm, t[i]->ndim,
                           per_example ? "1 (or (B, 1))" : "2");
    }
    return 0;
}

int batch_load_safetensors(Batch *b, const char *path, BpError *err) {
    StFile f;
    if (st_open(&f, path, err)) return -1;
    const StTensor *t[BATCH_N_TENSORS];
    if (find_batch_tensors(&f, path, t, err)) goto fail;
    size_t B = t[0]->shape[0], T = t[0]->shape[1], P = 0;
    for (int i = 0; i < BATCH_N_TENSORS; i++)
        if (BATCH_TENSORS[i].shape == BATCH_ROWS_OF_P) P = t[i]->shape[1];
    for (int i = 0; i < BATCH_N_TENSORS; i++) {
        BatchTensorShape sh = BATCH_TENSORS[i].shape;
        size_t want1 = sh == BATCH_ROWS_OF_T ? T : sh == BATCH_ROWS_OF_P ? P : 1;
        size_t got1 = t[i]->ndim > 1 ? t[i]->shape[1] : 1;
        if (t[i]->shape[0] != B || got1 != want1) {
            bp_fail(err, "%s: tensor '%s' has shape (%zu, %zu), expected (%zu, %zu)", path, t[i]->name,
                    t[i]->shape[0], got1, B, want1);
            goto fail;
        }
    }
    if (B < 1 || T < 1 || B > (1u << 20) || T > (1u << 16) || P > T) {
        bp_fail(err, "%s: batch sizes B=%zu T=%zu P=%zu out of range", path, B, T, P);
        goto fail;
    }
    if (batch_alloc(b, (int)B, (int)T, (int)P, err)) goto fail;
    for (int i = 0; i < BATCH_N_TENSORS; i++)
        memcpy(*batch_tensor(b, i), st_data(&f, t[i]), st_numel(t[i]) * sizeof(int32_t));
    const StTensor *ex = st_find(&f, "example_index");
    if (ex && ex->dtype == ST_I64 && st_numel(ex) == B) {
        memcpy(b->example_index, st_data(&f, ex), B * sizeof(int64_t));
    } else {
        for (size_t i = 0; i < B; i++) b->example_index[i] = (int64_t)i;
    }
    st_close(&f);
    return 0;
fail:
    st_close(&f);
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* the example builder (see batch.h for what one example is)                                  */

/* One example's sentences, as create_instances_from_document cut them: sentences
 * [first, first + n_sent) of document doc; A is the first a_end of them; B is the rest (a true
 * continuation) or, when is_random, a span of another document (the rest went back to the walk). */
typedef struct {
    uint64_t first;
    uint32_t n_sent;
    uint32_t doc;
    uint32_t a_end;
    uint32_t is_random;
} Chunk;

/* What the chunking depends on besides the shard: the walk draws the target lengths, splits and
 * labels from the seed, and the targets from seq_len and short_seq_prob. */
typedef struct {
    uint64_t seed;
    int seq_len;
    double short_seq_prob;
} WalkKey;

/* The chunks of one epoch, in document order (the epoch shuffle picks among them). */
typedef struct {
    WalkKey key;
    uint64_t epoch;
    Chunk *chunks;
    size_t n;
    int pins;          /* builds using it now: not evicted while > 0 */
    uint64_t last_use;
} ChunkTable;

/* Where each epoch starts in the example stream for one WalkKey: cum[e] examples come before
 * epoch e; cum[0 .. n_cum) are known (epoch sizes differ, as the walk's draws do). */
typedef struct {
    WalkKey key;
    uint64_t *cum;
    size_t n_cum, cap;
} EpochIndex;

/* At most this many epoch tables are kept (each holds one epoch's chunks); a build pins the ones
 * it uses. Callers move through the stream in order, so a few suffice. */
#define DATASET_MAX_TABLES 4
#define DATASET_MAX_KEYS 16

struct Dataset {
    Shard shard;
    Tokenizer *tok;
    SpecialIds sp;
    int vocab_size;
    uint8_t *is_cont; /* per id: a "##" continuation piece */
    pthread_mutex_t lock; /* guards the lazily built tables and epoch indices */
    ChunkTable tables[DATASET_MAX_TABLES];
    int n_tables;
    EpochIndex index[DATASET_MAX_KEYS];
    int n_index;
    uint64_t clock;
};

Dataset *dataset_open(const char *shard_path, const char *vocab_path, bool lowercase, BpError *err) {
    Dataset *d = bp_calloc(1, sizeof *d, "dataset", err);
    if (!d) return NULL;
    pthread_mutex_init(&d->lock, NULL);
    if (shard_open(&d->shard, shard_path, err)) goto fail;
    d->tok = tokenizer_load(vocab_path, lowercase, err);
    if (!d->tok) goto fail;
    d->vocab_size = tokenizer_vocab_size(d->tok);
    if (shard_check_vocab(&d->shard, d->vocab_size, tokenizer_vocab_crc(d->tok), vocab_path, err))
        goto fail;
    if (d->shard.n_documents == 0) {
        bp_fail(err, "%s: the shard holds no documents", shard_path);
        goto fail;
    }
    if (d->shard.n_documents > UINT32_MAX) {
        bp_fail(err, "%s: %zu documents, at most %u per shard", shard_path, d->shard.n_documents,
                UINT32_MAX);
        goto fail;
    }
    d->sp = tokenizer_specials(d->tok);
    d->is_cont = bp_malloc((size_t)d->vocab_size, "continuation flags", err);
    if (!d->is_cont) goto fail;
    for (int i = 0; i < d->vocab_size; i++) d->is_cont[i] = tokenizer_is_continuation(d->tok, i);
    return d;
fail:
    dataset_free(d);
    return NULL;
}

int dataset_check_role(const Dataset *d, ShardRole want, const char *key, BpError *err) {
    return shard_check_role(&d->shard, want, key, err);
}

void dataset_free(Dataset *d) {
    if (!d) return;
    shard_close(&d->shard);
    tokenizer_free(d->tok);
    free(d->is_cont);
    for (int i = 0; i < d->n_tables; i++) free(d->tables[i].chunks);
    for (int i = 0; i < d->n_index; i++) free(d->index[i].cum);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

const Tokenizer *dataset_tokenizer(const Dataset *d) { return d->tok; }
long dataset_num_documents(const Dataset *d) { return (long)d->shard.n_documents; }
long dataset_num_tokens(const Dataset *d) { return (long)d->shard.n_tokens; }

static size_t sent_len(const Shard *s, uint64_t i) { return s->sent_start[i + 1] - s->sent_start[i]; }

static bool same_key(const WalkKey *x, const WalkKey *y) {
    return x->seed == y->seed && x->seq_len == y->seq_len && x->short_seq_prob == y->short_seq_prob;
}

static WalkKey walk_key(const ExampleArgs *a) { return (WalkKey){a->seed, a->seq_len, a->short_seq_prob}; }

/* The draws of one document's walk in one epoch. The key's last word has its top bit set, which
 * the per-example streams (rng_stream(seed, RNG_EXAMPLE, index): last word 0) never have. */
static RngStream document_stream(uint64_t seed, uint64_t epoch, uint32_t doc) {
    return (RngStream){rng_hash(seed, RNG_EXAMPLE, epoch, (1ull << 63) | doc), 0};
}

/* The document's target length, its stream's first draws: seq_len - 3, or with probability
 * short_seq_prob uniform in [2, seq_len - 3] (create_instances_from_document's
 * target_seq_length, once per document). */
static size_t document_target(RngStream *r, const WalkKey *k) {
    size_t max_num = (size_t)k->seq_len - 3;
    if (rng_next_u01d(r) < k->short_seq_prob) return 2 + rng_next_below(r, (uint32_t)max_num - 1);
    return max_num;
}

/* create_instances_from_document's loop over one document: gather sentences until they hold
 * target tokens or the document ends; split them at a_end uniform in [1, n - 1]; B is random
 * (always when n = 1, else with probability 1/2), and then the n - a_end sentences not used go
 * back ("i -= num_unused_segments") to start the next chunk. Writes the chunks to out when it is
 * non-NULL; returns how many. */
static size_t walk_document(const Shard *s, const WalkKey *k, uint64_t epoch, uint32_t doc, Chunk *out) {
    RngStream r = document_stream(k->seed, epoch, doc);
    size_t target = document_target(&r, k), len = 0, n = 0;
    uint64_t start = s->doc_start[doc], end = s->doc_start[doc + 1];
    for (uint64_t i = start; i < end; i++) {
        len += sent_len(s, i);
        if (i + 1 < end && len < target) continue;
        uint32_t ns = (uint32_t)(i + 1 - start);
        uint32_t a_end = ns >= 2 ? 1 + rng_next_below(&r, ns - 1) : 1;
        bool random = ns == 1 || rng_next_u01d(&r) < 0.5;
        if (out) out[n] = (Chunk){start, ns, doc, a_end, random};
        n++;
        if (random) i -= ns - a_end;
        start = i + 1;
        len = 0;
    }
    return n;
}

static size_t walk_epoch(const Shard *s, const WalkKey *k, uint64_t epoch, Chunk *out) {
    size_t n = 0;
    for (size_t doc = 0; doc < s->n_documents; doc++)
        n += walk_document(s, k, epoch, (uint32_t)doc, out ? out + n : NULL);
    return n;
}

/* Under the lock: the epoch of example `index` for key k, its position j in that epoch and the
 * epoch's size n, extending the key's epoch index as far as needed. */
static int locate_locked(Dataset *d, const WalkKey *k, uint64_t index, uint64_t *epoch, uint64_t *j,
                         uint64_t *n, BpError *err) {
    EpochIndex *x = NULL;
    for (int i = 0; i < d->n_index && !x; i++)
        if (same_key(&d->index[i].key, k)) x = &d->index[i];
    if (!x) {
        if (d->n_index == DATASET_MAX_KEYS)
            return bp_fail(err, "%s: more than %d different (seed, seq_len, short_seq_prob) asked of one dataset",
                           d->shard.path, DATASET_MAX_KEYS);
        x = &d->index[d->n_index++];
        *x = (EpochIndex){*k, NULL, 1, 0};
        x->cum = bp_calloc(16, sizeof *x->cum, "epoch index", err);
        if (!x->cum) return d->n_index--, -1;
        x->cap = 16;
    }
    while (x->cum[x->n_cum - 1] <= index) {
        size_t m = walk_epoch(&d->shard, k, x->n_cum - 1, NULL);
        if (m == 0) return bp_fail(err, "%s: no sentences: the shard gives no examples", d->shard.path);
        if (x->n_cum == x->cap) {
            uint64_t *grown = realloc(x->cum, 2 * x->cap * sizeof *grown);
            if (!grown) return bp_fail(err, "out of memory for the epoch index");
            x->cum = grown;
            x->cap *= 2;
        }
        x->cum[x->n_cum] = x->cum[x->n_cum - 1] + m;
        x->n_cum++;
    }
    size_t lo = 0, hi = x->n_cum - 1; /* the last e with cum[e] <= index */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (x->cum[mid] <= index) lo = mid;
        else hi = mid;
    }
    *epoch = lo;
    *j = index - x->cum[lo];
    *n = x->cum[lo + 1] - x->cum[lo];
    return 0;
}

static int locate(const Dataset *cd, const WalkKey *k, uint64_t index, uint64_t *epoch, uint64_t *j,
                  uint64_t *n, BpError *err) {
    /* The tables and indices are a cache: building one does not change what the dataset means,
     * so the const interface stays honest; the lock makes concurrent callers safe. */
    Dataset *d = (Dataset *)cd;
    pthread_mutex_lock(&d->lock);
    int rc = locate_locked(d, k, index, epoch, j, n, err);
    pthread_mutex_unlock(&d->lock);
    return rc;
}

/* The chunk table of (k, epoch), built when missing (replacing the least recently used unpinned
 * one when all slots are taken), pinned until release_table. */
static ChunkTable *acquire_table(const Dataset *cd, const WalkKey *k, uint64_t epoch, BpError *err) {
    Dataset *d = (Dataset *)cd;
    ChunkTable *t = NULL;
    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < d->n_tables && !t; i++)
        if (d->tables[i].epoch == epoch && same_key(&d->tables[i].key, k)) t = &d->tables[i];
    if (!t) {
        if (d->n_tables < DATASET_MAX_TABLES) {
            t = &d->tables[d->n_tables++];
            *t = (ChunkTable){0};
        } else {
            for (int i = 0; i < d->n_tables; i++)
                if (!d->tables[i].pins && (!t || d->tables[i].last_use < t->last_use)) t = &d->tables[i];
        }
        if (!t) {
            bp_fail(err, "%s: all %d example tables are in use", d->shard.path, DATASET_MAX_TABLES);
        } else {
            free(t->chunks);
            *t = (ChunkTable){.key = *k, .epoch = epoch};
            size_t n = walk_epoch(&d->shard, k, epoch, NULL);
            t->chunks = bp_malloc((n ? n : 1) * sizeof *t->chunks, "chunk table", err);
            if (!t->chunks) {
                t->epoch = UINT64_MAX; /* an empty slot no lookup matches */
                t = NULL;
            } else {
                t->n = walk_epoch(&d->shard, k, epoch, t->chunks);
            }
        }
    }
    if (t) {
        t->pins++;
        t->last_use = ++d->clock;
    }
    pthread_mutex_unlock(&d->lock);
    return t;
}

static void release_table(const Dataset *cd, ChunkTable *t) {
    Dataset *d = (Dataset *)cd;
    pthread_mutex_lock(&d->lock);
    t->pins--;
    pthread_mutex_unlock(&d->lock);
}

long dataset_epoch_examples(const Dataset *d, const ExampleArgs *a, uint64_t epoch) {
    if (a->seq_len < 5) return -1;
    WalkKey k = walk_key(a);
    uint64_t e = 0, j = 0, n = 0, first = 0;
    /* the first example of the epoch: walk the epochs before it once */
    for (uint64_t q = 0; q <= epoch; q++) {
        if (locate(d, &k, first, &e, &j, &n, NULL)) return -1;
        if (q < epoch) first += n;
    }
    return (long)n;
}

int64_t dataset_example_epoch(const Dataset *d, const ExampleArgs *a, int64_t index) {
    if (a->seq_len < 5 || index < 0) return -1;
    WalkKey k = walk_key(a);
    uint64_t e, j, n;
    if (locate(d, &k, (uint64_t)index, &e, &j, &n, NULL)) return -1;
    return (int64_t)e;
}

/* The epoch shuffle: position j of epoch e -> chunk index, a bijection of [0, n). A balanced
 * Feistel network is a bijection of [0, 2^bits) whatever its round function; cycle-walking (apply
 * again while the value is >= n) restricts it to a bijection of [0, n). 2^bits < 4n, so fewer than
 * four walks are expected. */
uint64_t dataset_epoch_perm(uint64_t seed, uint64_t epoch, uint64_t n, uint64_t j) {
    if (n <= 1) return 0;
    int bits = 64 - __builtin_clzll(n - 1);
    bits += bits & 1;
    int half = bits / 2;
    uint64_t mask = (1ull << half) - 1, x = j;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (uint64_t round = 1; round <= 6; round++) {
            uint64_t f = rng_hash(seed, RNG_SHUFFLE, epoch, (round << 56) ^ r) & mask;
            uint64_t nl = r;
            r = l ^ f;
            l = nl;
        }
        x = (l << half) | r;
    } while (x >= n);
    return x;
}

/* A half-open token range of the shard. */
typedef struct {
    uint64_t lo, hi;
} Span;

/* Builds example `index`, position j of its epoch's table t, into row `row` of b; scratch holds
 * 3 * T ints. */
static void build_example(const Dataset *d, const ExampleArgs *a, const ChunkTable *t, int64_t index,
                          uint64_t j, Batch *b, int row, int32_t *scratch) {
    const Shard *s = &d->shard;
    const int T = a->seq_len, P = a->max_predictions;
    const size_t max_num = (size_t)T - 3;
    RngStream re = rng_stream(a->seed, RNG_EXAMPLE, (uint64_t)index);
    RngStream rm = rng_stream(a->seed, RNG_MASK, (uint64_t)index);

    const Chunk *c = &t->chunks[dataset_epoch_perm(a->seed, t->epoch, t->n, j)];
    uint32_t ns = c->n_sent, a_end = c->a_end;
    bool is_random = c->is_random;
    Span sa = {s->sent_start[c->first], s->sent_start[c->first + a_end]}, sb;
    if (is_random) {
        RngStream rd = document_stream(a->seed, t->epoch, c->doc);
        size_t target = document_target(&rd, &t->key), len_a = sa.hi - sa.lo;
        size_t target_b = target > len_a ? target - len_a : 0;
        uint32_t nd = (uint32_t)s->n_documents, rdoc = c->doc;
        if (nd >= 2) {
            rdoc = rng_next_below(&re, nd - 1);
            if (rdoc >= c->doc) rdoc++;
        }
        uint64_t dfirst = s->doc_start[rdoc], dend = s->doc_start[rdoc + 1];
        uint64_t i = dfirst + rng_next_below(&re, (uint32_t)(dend - dfirst));
        uint64_t stop = i + 1;
        size_t lb = sent_len(s, i);
        while (stop < dend && lb < target_b) lb += sent_len(s, stop++);
        sb = (Span){s->sent_start[i], s->sent_start[stop]};
    } else {
        sb = (Span){sa.hi, s->sent_start[c->first + ns]};
    }

    /* truncate the longer segment a token at a time, front or back by a fair coin; one 64-bit draw
     * supplies 64 coins */
    uint64_t coins = 0;
    int left = 0;
    while ((sa.hi - sa.lo) + (sb.hi - sb.lo) > max_num) {
        Span *tr = (sa.hi - sa.lo) > (sb.hi - sb.lo) ? &sa : &sb;
        if (left == 0) {
            coins = rng_next(&re);
            left = 64;
        }
        if (coins & 1) tr->lo++;
        else tr->hi--;
        coins >>= 1;
        left--;
    }

    int32_t *ids = b->input_ids + (size_t)row * T;
    int32_t *types = b->token_type_ids + (size_t)row * T;
    int32_t *att = b->attention_mask + (size_t)row * T;
    int la = (int)(sa.hi - sa.lo), lb = (int)(sb.hi - sb.lo);
    int n_real = la + lb + 3, sep_a = la + 1;
    ids[0] = d->sp.cls;
    for (int k = 0; k < la; k++) ids[1 + k] = shard_token(s, sa.lo + (uint64_t)k);
    ids[sep_a] = d->sp.sep;
    for (int k = 0; k < lb; k++) ids[sep_a + 1 + k] = shard_token(s, sb.lo + (uint64_t)k);
    ids[n_real - 1] = d->sp.sep;
    for (int k = 0; k < T; k++) {
        if (k >= n_real) ids[k] = d->sp.pad;
        types[k] = k > sep_a && k < n_real;
        att[k] = k < n_real;
    }
    b->next_sentence_labels[row] = is_random;
    b->example_index[row] = index;

    /* masking: candidate words as (start, length); a "##" piece joins the word before it when
     * whole-word masking is on and that word ends right before it in the same segment */
    int num = (int)rint((double)n_real * a->masked_lm_prob); /* rint: ties to even, as Python 3 */
    if (num < 1) num = 1;
    if (num > P) num = P;
    int32_t *wstart = scratch, *wlen = scratch + T, *chosen = scratch + 2 * (size_t)T;
    int nw = 0;
    for (int k = 1; k < n_real - 1; k++) {
        chosen[k] = 0;
        if (k == sep_a) continue;
        if (a->whole_word_mask && d->is_cont[ids[k]] && nw > 0 && wstart[nw - 1] + wlen[nw - 1] == k) {
            wlen[nw - 1]++;
        } else {
            wstart[nw] = k;
            wlen[nw++] = 1;
        }
    }
    /* words in uniformly random order (a Fisher-Yates shuffle drawn lazily), each taken when it
     * still fits in num, as BERT's loop over its shuffled candidates */
    int covered = 0;
    for (int k = 0; k < nw && covered < num; k++) {
        int pick = k + (int)rng_next_below(&rm, (uint32_t)(nw - k));
        int32_t ps = wstart[pick], pl = wlen[pick];
        wstart[pick] = wstart[k];
        wlen[pick] = wlen[k];
        if (covered + pl > num) continue;
        covered += pl;
        for (int q = 0; q < pl; q++) chosen[ps + q] = 1;
    }
    /* ascending positions; each one's 80/10/10 draw in that order */
    int32_t *pos = b->masked_lm_positions + (size_t)row * P;
    int32_t *mid = b->masked_lm_ids + (size_t)row * P;
    int32_t *w = b->masked_lm_weights + (size_t)row * P;
    int np = 0;
    for (int k = 1; k < n_real - 1; k++) {
        if (!chosen[k]) continue;
        pos[np] = k;
        mid[np] = ids[k];
        w[np] = 1;
        np++;
        double u = rng_next_u01d(&rm);
        if (u < 0.8) ids[k] = d->sp.mask;
        else if (u >= 0.9) ids[k] = (int32_t)rng_next_below(&rm, (uint32_t)d->vocab_size);
    }
    for (int k = np; k < P; k++) pos[k] = mid[k] = w[k] = 0;
}

int dataset_build_batch(const Dataset *d, const ExampleArgs *a, int64_t first_index, int count,
                        Batch *b, BpError *err) {
    if (a->seq_len < 5)
        return bp_fail_usage(err, "seq_len %d: an example needs at least 5 positions ([CLS] A [SEP] B [SEP])",
                             a->seq_len);
    if (a->max_predictions < 0 || a->max_predictions > a->seq_len)
        return bp_fail_usage(err, "max_predictions %d is outside [0, seq_len %d]", a->max_predictions,
                             a->seq_len);
    if (!(a->masked_lm_prob > 0 && a->masked_lm_prob < 1) ||
        !(a->short_seq_prob >= 0 && a->short_seq_prob <= 1))
        return bp_fail_usage(err, "masked_lm_prob %g must be in (0, 1) and short_seq_prob %g in [0, 1]",
                             a->masked_lm_prob, a->short_seq_prob);
    if (count < 0 || first_index < 0)
        return bp_fail(err, "dataset_build_batch: count %d, first index %lld", count,
                       (long long)first_index);
    if (count > b->cap_B || a->seq_len > b->cap_T || a->max_predictions > b->cap_P)
        return bp_fail(err,
                       "dataset_build_batch: %d x %d with %d predictions does not fit a batch "
                       "allocated for %d x %d with %d",
                       count, a->seq_len, a->max_predictions, b->cap_B, b->cap_T, b->cap_P);
    /* the one point per batch where the run's state is consistent and the shard is about to be read */
    if (shard_check_unchanged(&d->shard, err)) return -1;
    b->B = count;
    b->T = a->seq_len;
    b->P = a->max_predictions;
    if (count == 0) return 0;
    int nth = omp_get_max_threads();
    if (nth > count) nth = count;
    size_t per = 3 * (size_t)a->seq_len;
    int32_t *scratch = bp_malloc((size_t)nth * per * sizeof *scratch, "example scratch", err);
    if (!scratch) return -1;
    WalkKey k = walk_key(a);
    int rc = 0;
    /* epoch by epoch: the rows of one epoch share its table */
    for (int done = 0; done < count;) {
        uint64_t epoch, j, n;
        ChunkTable *t = NULL;
        if (locate(d, &k, (uint64_t)(first_index + done), &epoch, &j, &n, err) ||
            !(t = acquire_table(d, &k, epoch, err))) {
            rc = -1;
            break;
        }
        int run = n - j < (uint64_t)(count - done) ? (int)(n - j) : count - done;
#pragma omp parallel for num_threads(nth) schedule(static)
        for (int i = 0; i < run; i++)
            build_example(d, a, t, first_index + done + i, j + (uint64_t)i, b, done + i,
                          scratch + (size_t)omp_get_thread_num() * per);
        release_table(d, t);
        done += run;
    }
    free(scratch);
    return rc;
}

int64_t dataset_step_first_example(const Config *cfg, long global_step) {
    if (global_step < 0 || cfg->n_phases < 1) return -1;
    int phase = config_phase_of(cfg, global_step);
    int64_t first = 0;
    for (int p = 0; p < phase; p++)
        first += (int64_t)cfg->phases[p].steps * cfg->phases[p].batch_size;
    return first + (int64_t)(global_step - cfg->phases[phase].first_step) * cfg->phases[phase].batch_size;
}

ExampleArgs dataset_example_args(const Config *cfg, const PhaseConfig *phase) {
    return (ExampleArgs){.seed = cfg->training.seed,
                         .seq_len = phase->seq_len,
                         .max_predictions = phase->max_predictions_per_seq,
                         .masked_lm_prob = cfg->data.masked_lm_prob,
                         .short_seq_prob = cfg->data.short_seq_prob,
                         .whole_word_mask = cfg->data.whole_word_mask};
}

/* the global step a request names, refused when it lies outside the run */
static int request_global_step(const Config *cfg, const StepExamplesRequest *req, long *global, BpError *err) {
    if (req->step < 0) return bp_fail_usage(err, "step %ld is negative", req->step);
    if (req->phase < 0) {
        if (req->step >= cfg->total_steps)
            return bp_fail_usage(err, "--step %ld: the run has %ld steps (0..%ld)", req->step,
                                 cfg->total_steps, cfg->total_steps - 1);
        *global = req->step;
        return 0;
    }
    if (req->phase >= cfg->n_phases)
        return bp_fail_usage(err, "--phase %ld: the config has %d phase(s) (0..%d)", req->phase,
                             cfg->n_phases, cfg->n_phases - 1);
    const PhaseConfig *ph = &cfg->phases[req->phase];
    if (req->step >= ph->steps)
        return bp_fail_usage(err, "--step %ld: phase %ld has %d steps (0..%d)", req->step, req->phase,
                             ph->steps, ph->steps - 1);
    *global = ph->first_step + req->step;
    return 0;
}

int dataset_step_examples(const Config *cfg, const StepExamplesRequest *req, StepExamples *out, BpError *err) {
    memset(out, 0, sizeof *out);
    long global = 0;
    if (request_global_step(cfg, req, &global, err)) return -1;
    int phase = config_phase_of(cfg, global);
    const PhaseConfig *ph = &cfg->phases[phase];
    long n = req->n >= 0 ? req->n : (ph->batch_size < 4 ? ph->batch_size : 4);
    if (n < 1 || n > ph->batch_size)
        return bp_fail_usage(err, "--n %ld: step %ld has %d examples (phase %d batch_size)", n, global,
                             ph->batch_size, phase);
    out->global_step = global;
    out->phase = phase;
    out->phase_step = global - ph->first_step;
    out->first_example = dataset_step_first_example(cfg, global);
    out->batch_size = ph->batch_size;
    out->args = dataset_example_args(cfg, ph);
    out->dataset = dataset_open(cfg->data.train, cfg->data.vocab, cfg->data.lowercase, err);
    if (!out->dataset || dataset_check_role(out->dataset, SHARD_ROLE_TRAIN, "data.train", err)) return -1;
    out->tok = dataset_tokenizer(out->dataset);
    out->epoch = dataset_example_epoch(out->dataset, &out->args, out->first_example);
    out->examples_per_epoch =
        out->epoch < 0 ? -1 : dataset_epoch_examples(out->dataset, &out->args, (uint64_t)out->epoch);
    if (batch_alloc(&out->batch, (int)n, out->args.seq_len, out->args.max_predictions, err)) return -1;
    return dataset_build_batch(out->dataset, &out->args, out->first_example, (int)n, &out->batch, err);
}

void dataset_step_examples_free(StepExamples *s) {
    batch_free(&s->batch);
    dataset_free(s->dataset);
    memset(s, 0, sizeof *s);
}
