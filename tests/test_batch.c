/* Unit tests for the example builder (batch.c): structure of every example, masking and NSP
 * statistics over many examples, BERT's cutting (per-document target, unused sentences put back),
 * whole-word masking, lengths under short_seq_prob, the epoch shuffle and epoch sizes, determinism
 * across runs / thread counts / micro-batch splits, the step -> example map, and errors. Shards are written directly from token ids so the tests do not depend on tokenizing
 * text. Vocab: [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4), then N_WORDS words "wK" (ids 5..), then
 * N_PIECES continuation pieces "##pK". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"
#include "common.h"
#include "config.h"
#include "rng.h"
#include "shard.h"
#include "testutil.h"
#include "tokenizer.h"

#define N_WORDS 12000
#define N_PIECES 100
#define FIRST_WORD 5
#define FIRST_PIECE (FIRST_WORD + N_WORDS)
#define VOCAB (FIRST_PIECE + N_PIECES)
#define PAD 0
#define CLS 2
#define SEP 3
#define MASK 4

static char g_vocab[192], g_vocab2[192];
static uint32_t g_crc;

static int group_setup(void **state) {
    (void)state;
    if (tu_dir_create("batch", NULL) != 0) return -1;
    snprintf(g_vocab, sizeof g_vocab, "%s/vocab.txt", g_dir);
    snprintf(g_vocab2, sizeof g_vocab2, "%s/vocab2.txt", g_dir);
    for (int v = 0; v < 2; v++) {
        FILE *f = fopen(v ? g_vocab2 : g_vocab, "w");
        if (!f) return -1;
        fputs("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n", f);
        for (int i = 0; i < N_WORDS; i++) fprintf(f, "w%d\n", i);
        for (int i = 0; i < N_PIECES; i++) fprintf(f, "##p%d\n", i);
        if (v) fputs("extra\n", f); /* the second vocab differs: one more entry */
        fclose(f);
    }
    BpError err = {0};
    Tokenizer *t = tokenizer_load(g_vocab, true, &err);
    if (!t) {
        fprintf(stderr, "tokenizer_load: %s\n", err.msg);
        return -1;
    }
    if (tokenizer_vocab_size(t) != VOCAB || tokenizer_id(t, "[MASK]") != MASK ||
        !tokenizer_is_continuation(t, FIRST_PIECE)) {
        tokenizer_free(t);
        return -1;
    }
    g_crc = tokenizer_vocab_crc(t);
    tokenizer_free(t);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* shard builders                                                                              */

typedef struct {
    int n_docs;
    int sent_min, sent_max; /* sentences per document */
    int len_min, len_max;   /* tokens per sentence */
    int words;              /* 0: token at global position g is FIRST_WORD + g (positional);
                               1: random words of 1-4 pieces (for whole-word masking) */
} ShardSpec;

/* Writes the shard g_dir/name and returns its path (tu_path's). doc_of[g] records the document of
 * global token g when doc_of is non-NULL. */
static const char *make_shard(const char *name, const ShardSpec *sp, uint64_t seed, int *doc_of) {
    const char *path = tu_path(name);
    BpError err = {0};
    ShardWriter *w = shard_writer_open(path, VOCAB, g_crc, &err);
    assert_non_null(w);
    RngStream r = rng_stream(seed, RNG_TEST, 7);
    int32_t sent[512];
    int g = 0;
    for (int d = 0; d < sp->n_docs; d++) {
        int ns = sp->sent_min + (int)rng_next_below(&r, (uint32_t)(sp->sent_max - sp->sent_min + 1));
        for (int s = 0; s < ns; s++) {
            int len = sp->len_min + (int)rng_next_below(&r, (uint32_t)(sp->len_max - sp->len_min + 1));
            for (int k = 0; k < len; k++) {
                if (!sp->words) {
                    sent[k] = FIRST_WORD + g;
                } else {
                    /* a word start, or (not at the sentence start) a continuation piece with
                     * probability 1/2, up to 3 in a row */
                    bool cont = k > 0 && sent[k - 1] >= FIRST_WORD && rng_next_below(&r, 2) &&
                                !(k >= 3 && sent[k - 1] >= FIRST_PIECE && sent[k - 2] >= FIRST_PIECE &&
                                  sent[k - 3] >= FIRST_PIECE);
                    sent[k] = cont ? FIRST_PIECE + (int)rng_next_below(&r, N_PIECES)
                                   : FIRST_WORD + (int)rng_next_below(&r, N_WORDS);
                }
                if (doc_of) doc_of[g] = d;
                g++;
            }
            assert_true(sp->words || g < N_WORDS);
            assert_int_equal(shard_writer_add_sentence(w, sent, (size_t)len, &err), 0);
        }
        assert_int_equal(shard_writer_end_document(w, &err), 0);
    }
    assert_int_equal(shard_writer_commit(w, &err), 0);
    shard_writer_free(w);
    return path;
}

static Dataset *open_ds(const char *shard) {
    BpError err = {0};
    Dataset *d = dataset_open(shard, g_vocab, true, &err);
    if (!d) fail_msg("dataset_open: %s", err.msg);
    return d;
}

static ExampleArgs args(int T, int P) {
    ExampleArgs a = {.seed = 12345, .seq_len = T, .max_predictions = P, .masked_lm_prob = 0.15,
                     .short_seq_prob = 0.1, .whole_word_mask = false};
    return a;
}

static void build(const Dataset *d, const ExampleArgs *a, int64_t first, int count, Batch *b) {
    BpError err = {0};
    if (dataset_build_batch(d, a, first, count, b, &err) != 0) fail_msg("build: %s", err.msg);
}

/* The example as it was before masking: input_ids with each prediction's original token back. */
static void original_row(const Batch *b, int i, int32_t *orig) {
    memcpy(orig, b->input_ids + (size_t)i * b->T, (size_t)b->T * sizeof *orig);
    for (int k = 0; k < b->P; k++)
        if (b->masked_lm_weights[(size_t)i * b->P + k])
            orig[b->masked_lm_positions[(size_t)i * b->P + k]] = b->masked_lm_ids[(size_t)i * b->P + k];
}

static int real_len(const Batch *b, int i) {
    int n = 0;
    for (int k = 0; k < b->T; k++) n += b->attention_mask[(size_t)i * b->T + k];
    return n;
}

static int sep_a_of(const Batch *b, int i, int n_real) {
    int k = 0;
    while (k < n_real && b->token_type_ids[(size_t)i * b->T + k] == 0) k++;
    return k - 1;
}

/* ------------------------------------------------------------------------------------------ */

static void test_structure(void **state) {
    (void)state;
    static int doc_of[N_WORDS];
    ShardSpec sp = {.n_docs = 120, .sent_min = 1, .sent_max = 12, .len_min = 1, .len_max = 14};
    const char *path = make_shard("positional", &sp, 1, doc_of);
    Dataset *d = open_ds(path);
    const int T = 64, P = 10, N = 3000;
    ExampleArgs a = args(T, P);
    Batch b;
    BpError err = {0};
    assert_int_equal(batch_alloc(&b, N, T, P, &err), 0);
    build(d, &a, 0, N, &b);
    int32_t orig[64];
    int n_label0 = 0;
    for (int i = 0; i < N; i++) {
        original_row(&b, i, orig);
        const int32_t *ty = b.token_type_ids + (size_t)i * T, *att = b.attention_mask + (size_t)i * T;
        int n = real_len(&b, i), sa = sep_a_of(&b, i, n);
        assert_int_equal(b.example_index[i], i);
        assert_true(n >= 5 && n <= T);
        for (int k = 0; k < T; k++) assert_int_equal(att[k], k < n);
        assert_int_equal(orig[0], CLS);
        assert_int_equal(orig[sa], SEP);
        assert_int_equal(orig[n - 1], SEP);
        assert_true(sa >= 2 && sa <= n - 3); /* A and B each hold >= 1 token */
        for (int k = 0; k < T; k++) {
            assert_int_equal(ty[k], k > sa && k < n);
            if (k >= n) assert_int_equal(orig[k], PAD);
        }
        /* A and B are runs of consecutive shard tokens, each inside one document */
        for (int k = 1; k < n - 1; k++) {
            if (k == sa) continue;
            assert_true(orig[k] >= FIRST_WORD);
            if (k + 1 < n - 1 && k + 1 != sa) assert_int_equal(orig[k + 1], orig[k] + 1);
        }
        int a0 = orig[1] - FIRST_WORD, a1 = orig[sa - 1] - FIRST_WORD;
        int b0 = orig[sa + 1] - FIRST_WORD, b1 = orig[n - 2] - FIRST_WORD;
        assert_int_equal(doc_of[a0], doc_of[a1]);
        assert_int_equal(doc_of[b0], doc_of[b1]);
        int label = b.next_sentence_labels[i];
        assert_true(label == 0 || label == 1);
        if (label == 0) {
            /* the true continuation: same document, after A */
            assert_int_equal(doc_of[b0], doc_of[a0]);
            assert_true(b0 > a1);
            n_label0++;
        } else {
            assert_int_not_equal(doc_of[b0], doc_of[a0]);
        }
    }
    assert_true(n_label0 > N / 4);
    batch_free(&b);
    dataset_free(d);
}

static void test_masking_statistics(void **state) {
    (void)state;
    /* documents long enough that most rows are full: the position quarters below count those */
    ShardSpec sp = {.n_docs = 150, .sent_min = 10, .sent_max = 40, .len_min = 2, .len_max = 12, .words = 1};
    Dataset *d = open_ds(make_shard("stats", &sp, 2, NULL));
    const int T = 128, N = 3000;
    ExampleArgs a = args(T, T); /* no cap: num = round(0.15 n) */
    Batch b;
    BpError err = {0};
    assert_int_equal(batch_alloc(&b, N, T, T, &err), 0);
    build(d, &a, 500, N, &b);
    int32_t orig[128];
    long selected = 0, real = 0, eligible = 0, n_mask = 0, n_kept = 0, n_random = 0;
    double random_sum = 0;
    long quarter[4] = {0};
    for (int i = 0; i < N; i++) {
        original_row(&b, i, orig);
        const int32_t *ids = b.input_ids + (size_t)i * T;
        const int32_t *pos = b.masked_lm_positions + (size_t)i * T, *mid = b.masked_lm_ids + (size_t)i * T;
        const int32_t *w = b.masked_lm_weights + (size_t)i * T;
        int n = real_len(&b, i), sa = sep_a_of(&b, i, n);
        int np = 0;
        while (np < T && w[np]) np++;
        long want = lrint(n * 0.15);
        assert_int_equal(np, want < 1 ? 1 : want);
        for (int k = np; k < T; k++) {
            assert_int_equal(w[k], 0);
            assert_int_equal(pos[k], 0);
            assert_int_equal(mid[k], 0);
        }
        for (int k = 0; k < np; k++) {
            assert_true(pos[k] >= 1 && pos[k] < n - 1 && pos[k] != sa); /* never [CLS]/[SEP] */
            if (k) assert_true(pos[k] > pos[k - 1]);
            assert_int_equal(mid[k], orig[pos[k]]);
            int got = ids[pos[k]];
            if (got == MASK) n_mask++;
            else if (got == mid[k]) n_kept++;
            else {
                n_random++;
                random_sum += got;
            }
            if (n == T) quarter[(pos[k] - 1) * 4 / (T - 2)]++;
        }
        selected += np;
        real += n;
        eligible += n - 3;
    }
    double share = (double)selected / (double)real;
    double of_eligible = (double)selected / (double)eligible;
    double fm = (double)n_mask / selected, fk = (double)n_kept / selected, fr = (double)n_random / selected;
    print_message("masking: %ld predictions, %.4f of real tokens, %.4f of eligible; "
                  "[MASK] %.4f kept %.4f random %.4f\n", selected, share, of_eligible, fm, fk, fr);
    assert_true(fabs(share - 0.15) < 0.003);
    assert_true(of_eligible > 0.15 && of_eligible < 0.165);
    assert_true(fabs(fm - 0.8) < 0.012);
    assert_true(fabs(fk - 0.1) < 0.008);
    assert_true(fabs(fr - 0.1) < 0.008);
    /* random replacements are uniform over the vocab: mean near (V - 1) / 2 */
    assert_true(fabs(random_sum / n_random - (VOCAB - 1) / 2.0) < 0.05 * VOCAB);
    /* selection is uniform over positions: each quarter of a full-length row gets a quarter */
    long qs = quarter[0] + quarter[1] + quarter[2] + quarter[3];
    for (int q = 0; q < 4; q++) {
        double f = (double)quarter[q] / qs;
        if (fabs(f - 0.25) > 0.02) fail_msg("quarter %d of the positions got %.4f of the masks", q, f);
    }

    /* max_predictions caps num */
    ExampleArgs capped = args(T, 5);
    build(d, &capped, 500, 200, &b);
    for (int i = 0; i < 200; i++) {
        int np = 0;
        for (int k = 0; k < 5; k++) np += b.masked_lm_weights[i * 5 + k];
        long want = lrint(real_len(&b, i) * 0.15);
        assert_int_equal(np, want < 1 ? 1 : want > 5 ? 5 : want);
    }
    batch_free(&b);
    dataset_free(d);
}

static void test_nsp_and_lengths(void **state) {
    (void)state;
    /* long documents of short sentences: chunks hold many sentences, so the 0.5 coin decides */
    ShardSpec sp = {.n_docs = 40, .sent_min = 150, .sent_max = 250, .len_min = 2, .len_max = 6, .words = 1};
    Dataset *d = open_ds(make_shard("nsp", &sp, 3, NULL));
    const int T = 64, N = 4000;
    Batch b;
    BpError err = {0};
    assert_int_equal(batch_alloc(&b, N, T, 10, &err), 0);
    double frac_short[3];
    const double ssp[3] = {0.0, 0.1, 1.0};
    for (int v = 0; v < 3; v++) {
        ExampleArgs a = args(T, 10);
        a.short_seq_prob = ssp[v];
        build(d, &a, 0, N, &b);
        long ones = 0, shorter = 0, half = 0;
        for (int i = 0; i < N; i++) {
            ones += b.next_sentence_labels[i];
            int n = real_len(&b, i);
            shorter += n < T;
            half += n - 3 <= (T - 3) / 2;
        }
        frac_short[v] = (double)shorter / N;
        double f1 = (double)ones / N, fh = (double)half / N;
        print_message("short_seq_prob %.1f: NSP random %.4f, shorter than T %.4f, at most half %.4f\n",
                      ssp[v], f1, frac_short[v], fh);
        if (v == 0) assert_true(fabs(f1 - 0.5) < 0.025);
        /* Every target short, uniform in [2, T - 3], drawn once per document: a document of target
         * t gives about len / (t + c) examples (c ~ 2.5, the overshoot of the last sentence), so
         * examples of length <= (T - 3) / 2 are a share ln(30.5 / 4.5) / ln(63.5 / 4.5) ~ 0.72 of
         * them (one draw per example would give ~0.5) */
        if (v == 2) assert_true(fh > 0.6 && fh < 0.85);
    }
    /* without short targets nearly every example fills the row (only a document's last chunk can
     * be short). With 0.1 a tenth of the documents have a short target, and they give ~2.8 times
     * as many examples (mean of 1 / (t + c) over t in [2, 61] against 1 / 63.5), so ~0.24 of the
     * examples come from them, nearly all short (one draw per example would add ~0.09) */
    assert_true(frac_short[0] < 0.07);
    double extra = frac_short[1] - frac_short[0];
    assert_true(extra > 0.15 && extra < 0.32);
    assert_true(frac_short[2] > 0.9);
    batch_free(&b);
    dataset_free(d);

    /* documents of one sentence: B can only come from another document, always label 1 */
    ShardSpec one = {.n_docs = 30, .sent_min = 1, .sent_max = 1, .len_min = 3, .len_max = 40};
    d = open_ds(make_shard("onesent", &one, 4, NULL));
    assert_int_equal(batch_alloc(&b, 300, T, 10, &err), 0);
    ExampleArgs a = args(T, 10);
    build(d, &a, 0, 300, &b);
    for (int i = 0; i < 300; i++) assert_int_equal(b.next_sentence_labels[i], 1);
    batch_free(&b);
    dataset_free(d);
}

/* create_instances_from_document's cutting, checked on one epoch of a shard whose sentences all
 * hold 4 tokens (no example is ever truncated at T = 63, 60 = 15 sentences): every sentence is
 * used exactly once, as part of A or of a true-next B (a random-next pair puts its unused
 * sentences back), and within a document every chunk that does not end the document has the same
 * length (the target is drawn once per document). */
static void test_bert_cutting(void **state) {
    (void)state;
    static int doc_of[N_WORDS], covered[N_WORDS], chunk_len[200];
    ShardSpec sp = {.n_docs = 150, .sent_min = 3, .sent_max = 30, .len_min = 4, .len_max = 4};
    Dataset *d = open_ds(make_shard("cutting", &sp, 11, doc_of));
    long n_tokens = dataset_num_tokens(d);
    const int T = 63;
    const double ssp[2] = {0.0, 0.5};
    for (int v = 0; v < 2; v++) {
        ExampleArgs a = args(T, 5);
        a.short_seq_prob = ssp[v];
        long n = dataset_epoch_examples(d, &a, 0);
        assert_true(n >= sp.n_docs);
        Batch b;
        BpError err = {0};
        assert_int_equal(batch_alloc(&b, (int)n, T, 5, &err), 0);
        build(d, &a, 0, (int)n, &b);
        memset(covered, 0, sizeof covered);
        memset(chunk_len, 0, sizeof chunk_len);
        int32_t orig[64];
        int docs_short = 0;
        for (int i = 0; i < n; i++) {
            original_row(&b, i, orig);
            int len = real_len(&b, i), sa = sep_a_of(&b, i, len);
            int a0 = orig[1] - FIRST_WORD, la = sa - 1, b0 = orig[sa + 1] - FIRST_WORD, lb = len - sa - 2;
            /* whole sentences, never cut */
            assert_true(a0 % 4 == 0 && la % 4 == 0 && b0 % 4 == 0 && (lb % 4 == 0 || b0 + lb == n_tokens));
            for (int k = 0; k < la; k++) covered[a0 + k]++;
            if (b.next_sentence_labels[i]) continue;
            for (int k = 0; k < lb; k++) covered[b0 + k]++;
            int last = b0 + lb - 1, doc = doc_of[a0];
            if (last + 1 < n_tokens && doc_of[last + 1] == doc) { /* not the document's last chunk */
                if (!chunk_len[doc]) chunk_len[doc] = la + lb;
                if (chunk_len[doc] != la + lb)
                    fail_msg("document %d: chunks of %d and %d tokens", doc, chunk_len[doc], la + lb);
            }
        }
        for (long g = 0; g < n_tokens; g++)
            if (covered[g] != 1) fail_msg("short_seq_prob %.1f: token %ld used %d times", ssp[v], g, covered[g]);
        for (int doc = 0; doc < sp.n_docs; doc++) docs_short += chunk_len[doc] && chunk_len[doc] < 60;
        print_message("cutting: short_seq_prob %.1f, %ld examples, %d documents with a short target seen\n",
                      ssp[v], n, docs_short);
        if (v == 0) assert_int_equal(docs_short, 0);
        else assert_true(docs_short > 20);
        batch_free(&b);
    }
    dataset_free(d);
}

static void test_whole_word_masking(void **state) {
    (void)state;
    ShardSpec sp = {.n_docs = 80, .sent_min = 3, .sent_max = 12, .len_min = 4, .len_max = 20, .words = 1};
    Dataset *d = open_ds(make_shard("words", &sp, 5, NULL));
    const int T = 96, P = 14, N = 2000;
    ExampleArgs a = args(T, P);
    a.whole_word_mask = true;
    Batch b, plain;
    BpError err = {0};
    assert_int_equal(batch_alloc(&b, N, T, P, &err), 0);
    assert_int_equal(batch_alloc(&plain, N, T, P, &err), 0);
    build(d, &a, 0, N, &b);
    int32_t orig[96], orig_plain[96];
    long partial_words_plain = 0;
    for (int i = 0; i < N; i++) {
        original_row(&b, i, orig);
        int n = real_len(&b, i), sa = sep_a_of(&b, i, n);
        char chosen[96] = {0};
        int np = 0;
        for (int k = 0; k < P; k++)
            if (b.masked_lm_weights[i * P + k]) {
                chosen[b.masked_lm_positions[i * P + k]] = 1;
                np++;
            }
        long want = lrint(n * 0.15);
        want = want < 1 ? 1 : want > P ? P : want;
        assert_true(np <= want && np >= want - 3); /* words are at most 4 pieces */
        /* a piece is chosen exactly when the rest of its word (within its segment) is */
        for (int k = 2; k < n - 1; k++) {
            if (k == sa || k == sa + 1) continue;
            if (orig[k] >= FIRST_PIECE) assert_int_equal(chosen[k], chosen[k - 1]);
        }
    }
    /* the same examples without whole-word masking: same pairs and labels, and some words split */
    a.whole_word_mask = false;
    build(d, &a, 0, N, &plain);
    for (int i = 0; i < N; i++) {
        original_row(&b, i, orig);
        original_row(&plain, i, orig_plain);
        assert_memory_equal(orig, orig_plain, sizeof orig);
        assert_int_equal(b.next_sentence_labels[i], plain.next_sentence_labels[i]);
        char chosen[96] = {0};
        for (int k = 0; k < P; k++)
            if (plain.masked_lm_weights[i * P + k]) chosen[plain.masked_lm_positions[i * P + k]] = 1;
        for (int k = 2; k < T - 1; k++)
            if (orig[k] >= FIRST_PIECE && orig[k - 1] >= FIRST_WORD && chosen[k] != chosen[k - 1])
                partial_words_plain++;
    }
    assert_true(partial_words_plain > 100);
    batch_free(&b);
    batch_free(&plain);
    dataset_free(d);
}

static void test_epoch_perm_and_chunks(void **state) {
    (void)state;
    const uint64_t ns[] = {1, 2, 3, 5, 17, 64, 1000, 4097};
    for (size_t t = 0; t < BP_ARRAY_LEN(ns); t++) {
        uint64_t n = ns[t];
        char *seen = calloc(n, 1);
        long fixed = 0, differs = 0;
        for (uint64_t j = 0; j < n; j++) {
            uint64_t p = dataset_epoch_perm(9, 0, n, j);
            assert_true(p < n);
            assert_int_equal(seen[p], 0);
            seen[p] = 1;
            fixed += p == j;
            differs += p != dataset_epoch_perm(9, 1, n, j);
        }
        if (n >= 64) {
            assert_true(fixed < (long)n / 10); /* a shuffle, not the identity */
            assert_true(differs > (long)n / 2); /* epochs are shuffled differently */
        }
        free(seen);
    }

    /* chunking follows BERT's grouping: sentences until >= T - 3 tokens or the document's end */
    const char *path = tu_path("chunks");
    BpError err = {0};
    ShardWriter *w = shard_writer_open(path, VOCAB, g_crc, &err);
    assert_non_null(w);
    int32_t ids[32];
    for (int i = 0; i < 32; i++) ids[i] = FIRST_WORD + i;
    const int lens[] = {4, 4, 4, 1, 9, 2, -1, 20, -1};
    for (size_t i = 0; i < BP_ARRAY_LEN(lens); i++) {
        if (lens[i] < 0) assert_int_equal(shard_writer_end_document(w, &err), 0);
        else assert_int_equal(shard_writer_add_sentence(w, ids, (size_t)lens[i], &err), 0);
    }
    assert_int_equal(shard_writer_commit(w, &err), 0);
    shard_writer_free(w);
    Dataset *d = open_ds(path);
    /* epochs differ in size (the walk's draws differ) and tile the stream: example cum_e is the
     * first of epoch e */
    ExampleArgs a13 = args(13, 2);
    long sizes[6];
    int64_t cum = 0;
    bool differ = false;
    for (int e = 0; e < 6; e++) {
        sizes[e] = dataset_epoch_examples(d, &a13, (uint64_t)e);
        /* at least one chunk per document, at most one per sentence */
        assert_true(sizes[e] >= 2 && sizes[e] <= 7);
        assert_int_equal(dataset_example_epoch(d, &a13, cum), e);
        if (e) assert_int_equal(dataset_example_epoch(d, &a13, cum - 1), e - 1);
        cum += sizes[e];
        differ |= sizes[e] != sizes[0];
    }
    assert_true(differ);
    ExampleArgs a4 = args(4, 1);
    assert_int_equal(dataset_epoch_examples(d, &a4, 0), -1);
    assert_int_equal(dataset_example_epoch(d, &a13, -1), -1);
    assert_int_equal(dataset_num_documents(d), 2);
    assert_int_equal(dataset_num_tokens(d), 44);
    dataset_free(d);
}

static uint32_t batch_crc(const Batch *b) {
    size_t bt = (size_t)b->B * b->T * 4, bp = (size_t)b->B * b->P * 4;
    uint32_t c = bp_crc32(0, b->input_ids, bt);
    c = bp_crc32(c, b->token_type_ids, bt);
    c = bp_crc32(c, b->attention_mask, bt);
    c = bp_crc32(c, b->masked_lm_positions, bp);
    c = bp_crc32(c, b->masked_lm_ids, bp);
    c = bp_crc32(c, b->masked_lm_weights, bp);
    c = bp_crc32(c, b->next_sentence_labels, (size_t)b->B * 4);
    return bp_crc32(c, b->example_index, (size_t)b->B * 8);
}

static void assert_rows_equal(const Batch *x, int xi, const Batch *y, int yi) {
    size_t T = (size_t)x->T, P = (size_t)x->P;
    assert_memory_equal(x->input_ids + xi * T, y->input_ids + yi * T, T * 4);
    assert_memory_equal(x->token_type_ids + xi * T, y->token_type_ids + yi * T, T * 4);
    assert_memory_equal(x->attention_mask + xi * T, y->attention_mask + yi * T, T * 4);
    assert_memory_equal(x->masked_lm_positions + xi * P, y->masked_lm_positions + yi * P, P * 4);
    assert_memory_equal(x->masked_lm_ids + xi * P, y->masked_lm_ids + yi * P, P * 4);
    assert_memory_equal(x->masked_lm_weights + xi * P, y->masked_lm_weights + yi * P, P * 4);
    assert_int_equal(x->next_sentence_labels[xi], y->next_sentence_labels[yi]);
    assert_int_equal(x->example_index[xi], y->example_index[yi]);
}

static void test_determinism(void **state) {
    (void)state;
    ShardSpec sp = {.n_docs = 60, .sent_min = 1, .sent_max = 10, .len_min = 1, .len_max = 30, .words = 1};
    const char *path = make_shard("det", &sp, 6, NULL);
    Dataset *d1 = open_ds(path), *d2 = open_ds(path);
    const int T = 128, P = 20;
    ExampleArgs a = args(T, P);
    a.whole_word_mask = true;
    Batch all, half, other;
    BpError err = {0};
    assert_int_equal(batch_alloc(&all, 8, T, P, &err), 0);
    assert_int_equal(batch_alloc(&half, 8, T, P, &err), 0);
    assert_int_equal(batch_alloc(&other, 8, T, P, &err), 0);
    int saved = omp_get_max_threads();
    /* examples deep into a later epoch: the stream has no state to advance */
    const int64_t first = 1000003;
    omp_set_num_threads(2);
    build(d1, &a, first, 8, &all);
    /* 8 at once == 4 + 4, and == one at a time */
    for (int part = 0; part < 2; part++) {
        build(d1, &a, first + 4 * part, 4, &half);
        for (int i = 0; i < 4; i++) assert_rows_equal(&all, 4 * part + i, &half, i);
    }
    for (int i = 7; i >= 0; i--) {
        build(d1, &a, first + i, 1, &half);
        assert_rows_equal(&all, i, &half, 0);
    }
    /* one thread == two threads; a second, independently opened dataset == the first */
    omp_set_num_threads(1);
    build(d2, &a, first, 8, &other);
    for (int i = 0; i < 8; i++) assert_rows_equal(&all, i, &other, i);
    omp_set_num_threads(saved);
    /* byte-identical across runs and builds: a fixed checksum of these 8 examples */
    uint32_t crc = batch_crc(&all);
    print_message("determinism: batch crc %08x\n", crc);
    assert_int_equal(crc, 0xf386db70u); /* since the per-document cutting (issue 15) */
    /* another seed gives other examples */
    a.seed++;
    build(d1, &a, first, 8, &other);
    assert_int_not_equal(batch_crc(&other), crc);
    batch_free(&all);
    batch_free(&half);
    batch_free(&other);
    dataset_free(d1);
    dataset_free(d2);
}

static void test_speed(void **state) {
    (void)state;
    ShardSpec sp = {.n_docs = 200, .sent_min = 5, .sent_max = 40, .len_min = 3, .len_max = 35, .words = 1};
    Dataset *d = open_ds(make_shard("speed", &sp, 8, NULL));
    const int T = 128, P = 20, B = 32, reps = 200;
    ExampleArgs a = args(T, P);
    Batch b;
    BpError err = {0};
    assert_int_equal(batch_alloc(&b, B, T, P, &err), 0);
    build(d, &a, 0, B, &b); /* builds the chunk table */
    /* One thread is the figure that matters (the builder's own cost) and the one asserted: with
     * two threads on a machine whose cores are busy, a parallel region can wait a scheduler time
     * slice for its second thread, which says nothing about the builder. */
    int saved = omp_get_max_threads();
    double per[2];
    for (int th = 1; th <= 2; th++) {
        omp_set_num_threads(th);
        double t0 = bp_now();
        for (int r = 0; r < reps; r++) build(d, &a, (int64_t)r * B, B, &b);
        per[th - 1] = (bp_now() - t0) / reps;
        print_message("speed: one 32x128 micro-batch (P=20) in %.1f us with %d thread(s)\n",
                      per[th - 1] * 1e6, th);
    }
    omp_set_num_threads(saved);
    assert_true(per[0] < 0.002);
    batch_free(&b);
    dataset_free(d);
}

static void test_step_first_example(void **state) {
    (void)state;
    Config cfg;
    config_defaults(&cfg);
    cfg.n_phases = 2;
    cfg.phases[0].steps = 10;
    cfg.phases[0].batch_size = 32;
    cfg.phases[0].first_step = 0;
    cfg.phases[1].steps = 5;
    cfg.phases[1].batch_size = 16;
    cfg.phases[1].first_step = 10;
    assert_int_equal(dataset_step_first_example(&cfg, 0), 0);
    assert_int_equal(dataset_step_first_example(&cfg, 9), 288);
    assert_int_equal(dataset_step_first_example(&cfg, 10), 320);
    assert_int_equal(dataset_step_first_example(&cfg, 12), 352);
    assert_int_equal(dataset_step_first_example(&cfg, 15), 400); /* past the end: phase 1 goes on */
    assert_int_equal(dataset_step_first_example(&cfg, -1), -1);
    assert_int_equal(config_phase_of(&cfg, 9), 0);
    assert_int_equal(config_phase_of(&cfg, 10), 1);
}

static void test_errors(void **state) {
    (void)state;
    ShardSpec sp = {.n_docs = 5, .sent_min = 1, .sent_max = 3, .len_min = 1, .len_max = 5};
    const char *path = make_shard("small", &sp, 9, NULL);
    BpError err = {0};
    /* a vocab other than the shard's */
    assert_null(dataset_open(path, g_vocab2, true, &err));
    if (!strstr(err.msg, "built with a vocab of 12105 tokens") || !strstr(err.msg, "has 12106"))
        fail_msg("%s", err.msg);
    assert_null(dataset_open("/nonexistent/train", g_vocab, true, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/train"));
    assert_null(dataset_open(path, "/nonexistent/vocab.txt", true, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/vocab.txt"));

    Dataset *d = open_ds(path);
    Batch b;
    assert_int_equal(batch_alloc(&b, 4, 32, 5, &err), 0);
    ExampleArgs a = args(4, 1);
    assert_int_equal(dataset_build_batch(d, &a, 0, 4, &b, &err), -1);
    assert_non_null(strstr(err.msg, "at least 5"));
    a = args(64, 5);
    assert_int_equal(dataset_build_batch(d, &a, 0, 4, &b, &err), -1);
    assert_non_null(strstr(err.msg, "does not fit"));
    a = args(32, 5);
    assert_int_equal(dataset_build_batch(d, &a, 0, 5, &b, &err), -1);
    /* smaller than the allocation is fine: rows are contiguous at the new sizes */
    a = args(16, 3);
    assert_int_equal(dataset_build_batch(d, &a, 0, 2, &b, &err), 0);
    assert_int_equal(b.B, 2);
    assert_int_equal(b.T, 16);
    assert_int_equal(b.P, 3);
    assert_int_equal(b.input_ids[16], CLS);
    batch_free(&b);
    dataset_free(d);

    /* a shard with no documents */
    const char *empty = tu_path("empty");
    ShardWriter *w = shard_writer_open(empty, VOCAB, g_crc, &err);
    assert_int_equal(shard_writer_commit(w, &err), 0);
    shard_writer_free(w);
    assert_null(dataset_open(empty, g_vocab, true, &err));
    assert_non_null(strstr(err.msg, "no documents"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_masking_statistics),
        cmocka_unit_test(test_nsp_and_lengths),
        cmocka_unit_test(test_bert_cutting),
        cmocka_unit_test(test_whole_word_masking),
        cmocka_unit_test(test_epoch_perm_and_chunks),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_speed),
        cmocka_unit_test(test_step_first_example),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, tu_dir_teardown);
}
