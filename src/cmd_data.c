/* cmd_data.c: `prepare` (text -> vocab if missing -> token shards) and `show-batch` (the examples
 * of a training step, decoded, and optionally their exact tensors). */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "batch.h"
#include "commands.h"
#include "common.h"
#include "config.h"
#include "rng.h"
#include "safetensors.h"
#include "shard.h"
#include "tokenizer.h"

#define MAX_SETS 64

/* Shared by both subcommands: CONFIG, then --set k=v pairs and the subcommand's own options. */
typedef struct {
    const char *config;
    char *sets[MAX_SETS];
    int n_sets;
} CommonArgs;

static int take_set(CommonArgs *c, int argc, char **argv, int *i, const char *cmd) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "bert_pretrain %s: --set needs section.key=value\n", cmd);
        return -1;
    }
    if (c->n_sets == MAX_SETS) {
        fprintf(stderr, "bert_pretrain %s: more than %d --set options\n", cmd, MAX_SETS);
        return -1;
    }
    c->sets[c->n_sets++] = argv[++*i];
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* prepare                                                                                     */

static const char PREPARE_HELP[] =
    "usage: bert_pretrain prepare CONFIG.yaml [--set section.key=value ...]\n"
    "\n"
    "Reads data.input (text files, .txt or .gz: one sentence per line, a blank line between\n"
    "documents, as Google's create_pretraining_data.py; every file also ends a document), tokenizes\n"
    "every sentence with data.vocab, and writes two token shards: data.train, and data.eval with\n"
    "about a data.eval_fraction share of the documents (each document held out when a hash of\n"
    "training.seed and its number falls below the fraction; at least one document when the fraction\n"
    "is above 0; the summary gives the count). When data.vocab does not exist it is\n"
    "built first from the same inputs with data.vocab_size entries.\n"
    "\n"
    "Sentences that tokenize to nothing are dropped, and so are documents left empty. Invalid UTF-8\n"
    "bytes are dropped with a warning that counts them; a file where more than 1% of the bytes are\n"
    "invalid is refused (it is in another encoding, e.g. Latin-1, or not text), the same rule as\n"
    "the vocab builder's.\n"
    "\n"
    "Outputs are written atomically: on any error (a missing, empty or unreadable input, a refused\n"
    "encoding) nothing is written, and a vocab built by this run is removed again.\n"
    "Progress goes to stderr, the summary to stdout.\n";

/* one document being collected: its ids and the length of each sentence */
typedef struct {
    int32_t *ids;
    size_t n, cap;
    size_t *lens;
    size_t n_sent, cap_sent;
} DocBuf;

typedef struct {
    const Config *cfg;
    const Tokenizer *tok;
    int unk;
    ShardWriter *train, *eval;
    DocBuf cur, pending; /* pending: the last train document, held back (see end_document) */
    bool have_pending;
    long docs, docs_eval, docs_dropped;
    long sentences, sentences_dropped, lines;
    size_t tokens, unk_tokens;
    long bad_utf8_lines;
    bool doc_had_lines;
    int32_t *line_ids;
    size_t line_cap;
    /* progress */
    bool tty;
    double t_start, t_last;
    size_t bytes_read;
} Prep;

static int doc_append(DocBuf *d, const int32_t *ids, size_t n, BpError *err) {
    if (d->n + n > d->cap) {
        size_t nc = d->cap ? d->cap : 4096;
        while (nc < d->n + n) nc *= 2;
        int32_t *p = realloc(d->ids, nc * sizeof *p);
        if (!p) return bp_fail(err, "out of memory holding a document of %zu tokens", d->n + n);
        d->ids = p;
        d->cap = nc;
    }
    if (d->n_sent == d->cap_sent) {
        size_t nc = d->cap_sent ? 2 * d->cap_sent : 256;
        size_t *p = realloc(d->lens, nc * sizeof *p);
        if (!p) return bp_fail(err, "out of memory holding a document of %zu sentences", d->n_sent);
        d->lens = p;
        d->cap_sent = nc;
    }
    memcpy(d->ids + d->n, ids, n * sizeof *ids);
    d->n += n;
    d->lens[d->n_sent++] = n;
    return 0;
}

static void doc_free(DocBuf *d) {
    free(d->ids);
    free(d->lens);
}

static int doc_write(ShardWriter *w, DocBuf *d, BpError *err) {
    size_t at = 0;
    for (size_t s = 0; s < d->n_sent; s++) {
        if (shard_writer_add_sentence(w, d->ids + at, d->lens[s], err)) return -1;
        at += d->lens[s];
    }
    d->n = d->n_sent = 0;
    return shard_writer_end_document(w, err);
}

/* A finished document goes to eval when hash(seed, k) falls below the fraction (k counts the
 * documents kept so far), else to train. The last train document is held back until the next one
 * arrives, so that if no document at all fell to eval, finish() can give that one to eval instead
 * of rewriting the train shard. */
static int end_document(Prep *p, BpError *err) {
    if (p->cur.n_sent == 0) {
        if (p->doc_had_lines) p->docs_dropped++;
        p->doc_had_lines = false;
        return 0;
    }
    p->doc_had_lines = false;
    double frac = p->cfg->data.eval_fraction;
    uint64_t k = (uint64_t)p->docs++;
    if (frac > 0 && rng_u01d(rng_hash(p->cfg->training.seed, RNG_SPLIT, k, 0)) < frac) {
        p->docs_eval++;
        return doc_write(p->eval, &p->cur, err);
    }
    if (p->have_pending && doc_write(p->train, &p->pending, err)) return -1;
    DocBuf t = p->pending;
    p->pending = p->cur;
    p->cur = t;
    p->cur.n = p->cur.n_sent = 0;
    p->have_pending = true;
    return 0;
}

static bool is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\v' && s[i] != '\f') return false;
    return true;
}

typedef struct {
    long lines, bad_lines, first_bad;
    size_t bytes, bad_bytes;
    long sentences;
} FileStats;

static int handle_line(Prep *p, char *line, size_t n, FileStats *fs, BpError *err) {
    fs->lines++;
    fs->bytes += n + 1;
    if (is_blank(line, n)) return end_document(p, err);
    p->lines++;
    p->doc_had_lines = true;
    size_t bad = tokenizer_utf8_invalid(line, n, NULL); /* exactly what the tokenizer drops */
    if (bad) {
        fs->bad_bytes += bad;
        fs->bad_lines++;
        if (!fs->first_bad) fs->first_bad = fs->lines;
    }
    size_t got = 0;
    if (tokenizer_encode(p->tok, line, n, &p->line_ids, &got, &p->line_cap, err)) return -1;
    if (got == 0) {
        p->sentences_dropped++;
        return 0;
    }
    for (size_t i = 0; i < got; i++) p->unk_tokens += p->line_ids[i] == p->unk;
    p->tokens += got;
    p->sentences++;
    fs->sentences++;
    return doc_append(&p->cur, p->line_ids, got, err);
}

static void progress(Prep *p, int idx, int n_files, const char *path, double frac_done, bool force) {
    double now = bp_now();
    if (!force && now - p->t_last < (p->tty ? 0.5 : 10.0)) return;
    p->t_last = now;
    double el = now - p->t_start;
    fprintf(stderr, "%sprepare: [%d/%d] %s %3.0f%%  %.1f MB read  %.2fM tokens  %.1f MB/s%s",
            p->tty ? "\r" : "", idx + 1, n_files, path, 100 * frac_done, p->bytes_read / 1e6,
            p->tokens / 1e6, el > 0 ? p->bytes_read / 1e6 / el : 0.0, p->tty ? "\033[K" : "\n");
    fflush(stderr);
}

/* zlib's gzerror text starts with the file name; messages here name it once */
static const char *zmsg(gzFile g, const char *path, int *zerr) {
    const char *m = gzerror(g, zerr);
    size_t n = strlen(path);
    return strncmp(m, path, n) == 0 && m[n] == ':' && m[n + 1] == ' ' ? m + n + 2 : m;
}

static int read_input(Prep *p, int idx, BpError *err) {
    const char *path = p->cfg->data.input[idx];
    struct stat st;
    if (stat(path, &st) != 0) return bp_fail(err, "%s: cannot read input: %s", path, strerror(errno));
    gzFile g = gzopen(path, "rb");
    if (!g) return bp_fail(err, "%s: cannot open input: %s", path, strerror(errno ? errno : ENOMEM));
    gzbuffer(g, 1 << 17);
    size_t cap = 1 << 20, len = 0;
    char *buf = bp_malloc(cap, "input buffer", err);
    if (!buf) {
        gzclose(g);
        return -1;
    }
    FileStats fs = {0};
    size_t file_bytes = 0; /* uncompressed */
    int rc = 0;
    for (;;) {
        if (len == cap) {
            /* one line longer than the buffer: grow it */
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = bp_fail(err, "%s: out of memory for a line of more than %zu bytes", path, cap);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        int got = gzread(g, buf + len, (unsigned)(cap - len > (1u << 30) ? (1u << 30) : cap - len));
        if (got < 0) {
            int zerr;
            const char *msg = zmsg(g, path, &zerr);
            rc = bp_fail(err, "%s: read error after %zu bytes: %s", path, file_bytes,
                         zerr == Z_ERRNO ? strerror(errno) : msg);
            break;
        }
        p->bytes_read += (size_t)got;
        file_bytes += (size_t)got;
        bool eof = got == 0;
        len += (size_t)got;
        size_t start = 0;
        for (size_t i = 0; i < len && rc == 0; i++) {
            if (buf[i] != '\n') continue;
            rc = handle_line(p, buf + start, i - start, &fs, err);
            start = i + 1;
        }
        if (rc) break;
        if (eof) {
            /* a gzip stream cut short reads as a clean end of file: zlib only tells in its error
             * state (Z_BUF_ERROR, "unexpected end of file") */
            int zerr;
            const char *msg = zmsg(g, path, &zerr);
            if (zerr != Z_OK)
                rc = bp_fail(err, "%s: read error after %zu bytes: %s (truncated or corrupt .gz?)",
                             path, file_bytes, msg);
            else if (start < len)
                rc = handle_line(p, buf + start, len - start, &fs, err);
            break;
        }
        memmove(buf, buf + start, len - start);
        len -= start;
        double done = st.st_size > 0 ? (double)gzoffset(g) / (double)st.st_size : 1.0;
        progress(p, idx, p->cfg->data.n_input, path, done > 1 ? 1 : done, false);
    }
    free(buf);
    int zclose = gzclose(g);
    if (rc) return rc;
    if (zclose != Z_OK)
        return bp_fail(err, "%s: read error: the input ended in the middle of a gzip stream", path);
    if (end_document(p, err)) return -1; /* a file's end ends its last document */
    if (fs.sentences == 0)
        return bp_fail(err, "%s: no text: %ld line(s), none with a sentence that tokenizes to anything",
                       path, fs.lines);
    if (fs.bad_lines > 0) {
        /* the vocab builder's rule, so the two agree on what text is: a few stray bytes are
         * dropped (as BERT's tokenizer drops them); more than 1% is another encoding or no text */
        p->bad_utf8_lines += fs.bad_lines;
        if (fs.bad_bytes * 100 > fs.bytes)
            return bp_fail(err,
                           "%s: not UTF-8 text: %zu of %zu bytes (in %ld of %ld lines) are invalid "
                           "UTF-8, the first at line %ld. HINT: convert it, e.g. "
                           "iconv -f LATIN1 -t UTF-8",
                           path, fs.bad_bytes, fs.bytes, fs.bad_lines, fs.lines, fs.first_bad);
        fprintf(stderr,
                "%sprepare: warning: %s: %zu invalid UTF-8 byte(s) in %ld line(s) (the first at "
                "line %ld) are dropped\n",
                p->tty ? "\r\033[K" : "", path, fs.bad_bytes, fs.bad_lines, fs.first_bad);
    }
    progress(p, idx, p->cfg->data.n_input, path, 1.0, true);
    if (p->tty) fputc('\n', stderr);
    return 0;
}

/* Inputs are checked before anything is built: they exist, are regular files, open, and are not
 * empty. */
static int check_inputs(const DataConfig *d, BpError *err) {
    if (d->n_input == 0)
        return bp_fail_usage(err, "data.input lists no files: prepare needs text to tokenize");
    for (int i = 0; i < d->n_input; i++) {
        const char *path = d->input[i];
        struct stat st;
        if (stat(path, &st) != 0)
            return bp_fail(err, "%s: cannot read input: %s", path, strerror(errno));
        if (!S_ISREG(st.st_mode)) return bp_fail(err, "%s: input is not a regular file", path);
        if (st.st_size == 0) return bp_fail(err, "%s: input is empty (0 bytes)", path);
        FILE *f = fopen(path, "rb");
        if (!f) return bp_fail(err, "%s: cannot open input: %s", path, strerror(errno));
        fclose(f);
        if (!strcmp(path, d->train) || !strcmp(path, d->eval))
            return bp_fail_usage(err, "%s is both an input and an output shard", path);
    }
    if (!d->train[0]) return bp_fail_usage(err, "data.train is empty: prepare needs a shard path");
    if (d->eval_fraction > 0 && !d->eval[0])
        return bp_fail_usage(err, "data.eval is empty but data.eval_fraction is %g", d->eval_fraction);
    if (d->eval_fraction > 0 && !strcmp(d->train, d->eval))
        return bp_fail_usage(err, "data.train and data.eval are the same path %s", d->train);
    if (!d->vocab[0]) return bp_fail_usage(err, "data.vocab is empty: prepare needs a vocab path");
    return 0;
}

static int make_parent(const char *path, BpError *err) {
    char dir[CFG_PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = 0;
    return bp_mkdir_p(dir, err);
}

static double file_mb(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size / 1e6 : 0.0;
}

static int run_prepare(const Config *cfg, BpError *err) {
    const DataConfig *dc = &cfg->data;
    double t0 = bp_now();
    if (check_inputs(dc, err)) return -1;

    bool built_vocab = false;
    if (access(dc->vocab, F_OK) != 0) {
        fprintf(stderr, "prepare: %s does not exist: building a WordPiece vocab of %d entries from %d file(s)\n",
                dc->vocab, dc->vocab_size, dc->n_input);
        const char *inputs[CFG_MAX_INPUTS];
        for (int i = 0; i < dc->n_input; i++) inputs[i] = dc->input[i];
        if (make_parent(dc->vocab, err)) return -1;
        double tv = bp_now();
        if (vocab_build(inputs, dc->n_input, dc->vocab_size, dc->lowercase, dc->vocab, err)) return -1;
        built_vocab = true;
        fprintf(stderr, "prepare: vocab built in %.1f s\n", bp_now() - tv);
    }

    Prep p;
    memset(&p, 0, sizeof p);
    p.cfg = cfg;
    p.tty = isatty(2);
    p.t_start = p.t_last = bp_now();
    int rc = -1;
    Tokenizer *tok = tokenizer_load(dc->vocab, dc->lowercase, err);
    if (!tok) goto done;
    p.tok = tok;
    p.unk = tokenizer_specials(tok).unk;
    int vs = tokenizer_vocab_size(tok);
    uint32_t crc = tokenizer_vocab_crc(tok);
    if (make_parent(dc->train, err)) goto done;
    if (!(p.train = shard_writer_open(dc->train, vs, crc, err))) goto done;
    if (dc->eval_fraction > 0) {
        if (make_parent(dc->eval, err)) goto done;
        if (!(p.eval = shard_writer_open(dc->eval, vs, crc, err))) goto done;
    }
    for (int i = 0; i < dc->n_input; i++)
        if (read_input(&p, i, err)) goto done;

    if (dc->eval_fraction > 0 && p.docs < 2) {
        bp_fail_usage(err,
                      "the inputs hold %ld document(s): holding out data.eval_fraction = %g of them "
                      "needs at least 2. HINT: separate documents with a blank line, or set "
                      "data.eval_fraction: 0",
                      p.docs, dc->eval_fraction);
        goto done;
    }
    if (p.have_pending) {
        bool to_eval = dc->eval_fraction > 0 && p.docs_eval == 0;
        if (to_eval) p.docs_eval++;
        if (doc_write(to_eval ? p.eval : p.train, &p.pending, err)) goto done;
    }
    if (p.docs - p.docs_eval < 1) {
        bp_fail_usage(err,
                      "all %ld documents fell to the eval share (data.eval_fraction = %g); the train "
                      "shard would be empty. HINT: lower data.eval_fraction",
                      p.docs, dc->eval_fraction);
        goto done;
    }
    size_t train_tokens = shard_writer_num_tokens(p.train);
    size_t train_sents = shard_writer_num_sentences(p.train);
    size_t eval_tokens = p.eval ? shard_writer_num_tokens(p.eval) : 0;
    if (shard_writer_commit(p.train, err)) goto done;
    if (p.eval && shard_writer_commit(p.eval, err)) goto done;
    rc = 0;

    double el = bp_now() - t0;
    printf("prepare: done in %.1f s\n", el);
    printf("  inputs     %d file(s), %.1f MB of text, %ld non-blank lines\n", dc->n_input,
           p.bytes_read / 1e6, p.lines);
    printf("  vocab      %s: %d entries, crc %08" PRIx32 "%s\n", dc->vocab, vs, crc,
           built_vocab ? " (built now)" : "");
    printf("  documents  %ld (%ld dropped: no sentence left after tokenizing)\n", p.docs, p.docs_dropped);
    printf("  sentences  %ld (%ld dropped: nothing left after tokenizing)\n", p.sentences,
           p.sentences_dropped);
    printf("  tokens     %zu, %.1f per sentence; [UNK] %zu = %.3f%%\n", p.tokens,
           p.sentences ? (double)p.tokens / p.sentences : 0.0, p.unk_tokens,
           p.tokens ? 100.0 * p.unk_tokens / p.tokens : 0.0);
    if (p.bad_utf8_lines) printf("  invalid UTF-8 in %ld line(s): those bytes were dropped\n", p.bad_utf8_lines);
    printf("  train      %s: %ld document(s), %zu sentences, %zu tokens, %.1f MB\n", dc->train,
           p.docs - p.docs_eval, train_sents, train_tokens, file_mb(dc->train));
    if (p.eval)
        printf("  eval       %s: %ld document(s) (%.1f%%; data.eval_fraction %g), %zu tokens, %.1f MB\n",
               dc->eval, p.docs_eval, 100.0 * p.docs_eval / p.docs, dc->eval_fraction, eval_tokens,
               file_mb(dc->eval));
    else
        printf("  eval       none written (data.eval_fraction is 0)\n");
    printf("  throughput %.1f MB/s, %.2fM tokens/s (whole run%s)\n", p.bytes_read / 1e6 / el,
           p.tokens / 1e6 / el, built_vocab ? ", vocab build included" : "");

done:
    shard_writer_free(p.train); /* without a commit these remove their temporaries */
    shard_writer_free(p.eval);
    tokenizer_free(tok);
    doc_free(&p.cur);
    doc_free(&p.pending);
    free(p.line_ids);
    if (rc && built_vocab) unlink(dc->vocab);
    if (rc && p.tty) fputc('\n', stderr);
    return rc;
}

int cmd_prepare(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(PREPARE_HELP, stdout);
        return 0;
    }
    CommonArgs c = {0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--set")) {
            if (take_set(&c, argc, argv, &i, "prepare")) return 2;
        } else if (argv[i][0] == '-' || c.config) {
            fprintf(stderr, "bert_pretrain prepare: unexpected argument '%s'\n%s", argv[i], PREPARE_HELP);
            return 2;
        } else {
            c.config = argv[i];
        }
    }
    if (!c.config) {
        fprintf(stderr, "bert_pretrain prepare: missing CONFIG.yaml\n%s", PREPARE_HELP);
        return 2;
    }
    static Config cfg;
    BpError err = {0};
    if (config_load_cli(&cfg, c.config, c.sets, c.n_sets, 1, &err) ||
        run_prepare(&cfg, &err)) {
        fprintf(stderr, "bert_pretrain prepare: %s\n", err.msg);
        return bp_error_status(&err);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* show-batch                                                                                  */

static const char SHOW_HELP[] =
    "usage: bert_pretrain show-batch CONFIG.yaml [--set section.key=value ...] [--step S]\n"
    "                                [--phase P] [--n N] [--out B.safetensors]\n"
    "\n"
    "Prints the first N (default 4) examples of optimizer step S (default 0) of the training\n"
    "stream, exactly as the trainer builds them from data.train: the examples of step S are\n"
    "dataset_step_first_example(S) .. + batch_size - 1. --phase P counts S from the start of phase\n"
    "P instead of from step 0. Each example is shown as the model sees it:\n"
    "  [MASK](sat)  a masked position: the model sees [MASK], the original token was 'sat'\n"
    "  dog(~sat)    replaced by a random token: the model sees 'dog', the original was 'sat'\n"
    "  sat(=)       chosen for prediction but kept unchanged\n"
    "with the segment sizes (token types 0 = [CLS] A [SEP], 1 = B [SEP]) and the NSP label.\n"
    "--out writes those N examples' tensors (input_ids, token_type_ids, attention_mask,\n"
    "masked_lm_positions, masked_lm_ids, masked_lm_weights, next_sentence_labels; int32) to a\n"
    "safetensors file, the batch format of `bert_pretrain forward --batch`.\n";

static bool parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

static void print_example(const Batch *b, int i, const Tokenizer *tok, long examples_per_epoch) {
    const int T = b->T, P = b->P;
    const int32_t *ids = b->input_ids + (size_t)i * T, *ty = b->token_type_ids + (size_t)i * T;
    const int32_t *att = b->attention_mask + (size_t)i * T;
    const int32_t *pos = b->masked_lm_positions + (size_t)i * P, *orig = b->masked_lm_ids + (size_t)i * P;
    const int32_t *w = b->masked_lm_weights + (size_t)i * P;
    int mask_id = tokenizer_specials(tok).mask;
    int n_real = 0, n_a = 0, np = 0;
    for (int k = 0; k < T; k++) {
        n_real += att[k] != 0;
        n_a += att[k] && ty[k] == 0;
    }
    for (int k = 0; k < P; k++) np += w[k] != 0;
    int64_t index = b->example_index[i];
    printf("example %" PRId64 " (epoch %" PRId64 ")  NSP label %d (%s)  %d real tokens + %d [PAD]  "
           "%d predictions\n",
           index, examples_per_epoch > 0 ? index / examples_per_epoch : 0, b->next_sentence_labels[i],
           b->next_sentence_labels[i] ? "B is a random span" : "B continues A", n_real, T - n_real, np);
    printf("  types: 0 x %d ([CLS] A [SEP]), 1 x %d (B [SEP])\n ", n_a, n_real - n_a);
    int m = 0;
    for (int k = 0; k < n_real; k++) {
        const char *t = tokenizer_token(tok, ids[k]);
        if (!t) t = "?";
        while (m < np && pos[m] < k) m++;
        if (m < np && pos[m] == k) {
            const char *o = tokenizer_token(tok, orig[m]);
            if (!o) o = "?";
            if (ids[k] == mask_id && orig[m] != mask_id) printf(" [MASK](%s)", o);
            else if (ids[k] == orig[m]) printf(" %s(=)", t);
            else printf(" %s(~%s)", t, o);
        } else {
            printf(" %s", t);
        }
    }
    printf("\n\n");
}

static int write_batch(const char *path, const Batch *b, int n, BpError *err) {
    size_t T = (size_t)b->T, P = (size_t)b->P;
    StEntry e[7] = {
        {"input_ids", ST_I32, 2, {(size_t)n, T}, b->input_ids},
        {"token_type_ids", ST_I32, 2, {(size_t)n, T}, b->token_type_ids},
        {"attention_mask", ST_I32, 2, {(size_t)n, T}, b->attention_mask},
        {"masked_lm_positions", ST_I32, 2, {(size_t)n, P}, b->masked_lm_positions},
        {"masked_lm_ids", ST_I32, 2, {(size_t)n, P}, b->masked_lm_ids},
        {"masked_lm_weights", ST_I32, 2, {(size_t)n, P}, b->masked_lm_weights},
        {"next_sentence_labels", ST_I32, 1, {(size_t)n}, b->next_sentence_labels},
    };
    return st_write(path, e, 7, err);
}

static int run_show(const Config *cfg, long step, long phase_arg, long n, const char *out, BpError *err) {
    long global = step;
    if (phase_arg >= 0) {
        if (phase_arg >= cfg->n_phases)
            return bp_fail_usage(err, "--phase %ld: the config has %d phase(s) (0..%d)", phase_arg,
                                 cfg->n_phases, cfg->n_phases - 1);
        const PhaseConfig *ph = &cfg->phases[phase_arg];
        if (step >= ph->steps)
            return bp_fail_usage(err, "--step %ld: phase %ld has %d steps (0..%d)", step, phase_arg,
                                 ph->steps, ph->steps - 1);
        global = ph->first_step + step;
    } else if (step >= cfg->total_steps) {
        return bp_fail_usage(err, "--step %ld: the run has %ld steps (0..%ld)", step, cfg->total_steps,
                             cfg->total_steps - 1);
    }
    int phase = config_phase_of(cfg, global);
    const PhaseConfig *ph = &cfg->phases[phase];
    if (n < 0) n = ph->batch_size < 4 ? ph->batch_size : 4;
    if (n > ph->batch_size)
        return bp_fail_usage(err, "--n %ld: step %ld has %d examples (phase %d batch_size)", n, global,
                             ph->batch_size, phase);
    int64_t first = dataset_step_first_example(cfg, global);
    Dataset *d = dataset_open(cfg->data.train, cfg->data.vocab, cfg->data.lowercase, err);
    if (!d) return -1;
    ExampleArgs a = {.seed = cfg->training.seed,
                     .seq_len = ph->seq_len,
                     .max_predictions = ph->max_predictions_per_seq,
                     .masked_lm_prob = cfg->data.masked_lm_prob,
                     .short_seq_prob = cfg->data.short_seq_prob,
                     .whole_word_mask = cfg->data.whole_word_mask};
    Batch b;
    int rc = -1;
    if (batch_alloc(&b, (int)n, a.seq_len, a.max_predictions, err)) {
        dataset_free(d);
        return -1;
    }
    if (dataset_build_batch(d, &a, first, (int)n, &b, err)) goto done;
    long per_epoch = dataset_examples_per_epoch(d, a.seq_len);
    printf("step %ld (phase %d, step %ld of it): examples %" PRId64 "..%" PRId64 " of the stream; "
           "seq_len %d, max_predictions %d, %ld examples per epoch of %s; showing %ld\n\n",
           global, phase, global - ph->first_step, first, first + ph->batch_size - 1, a.seq_len,
           a.max_predictions, per_epoch, cfg->data.train, n);
    for (int i = 0; i < (int)n; i++) print_example(&b, i, dataset_tokenizer(d), per_epoch);
    if (out) {
        if (write_batch(out, &b, (int)n, err)) goto done;
        printf("wrote %s: %ld example(s) x seq_len %d, %d prediction slots, int32\n", out, n,
               a.seq_len, a.max_predictions);
    }
    rc = 0;
done:
    batch_free(&b);
    dataset_free(d);
    return rc;
}

int cmd_show_batch(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        fputs(SHOW_HELP, stdout);
        return 0;
    }
    CommonArgs c = {0};
    long step = 0, phase = -1, n = -1; /* -1: min(4, batch_size) */
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(o, "--set")) {
            if (take_set(&c, argc, argv, &i, "show-batch")) return 2;
        } else if (!strcmp(o, "--step") || !strcmp(o, "--phase") || !strcmp(o, "--n")) {
            long v;
            if (!has_val || !parse_long(argv[i + 1], &v) || v < (strcmp(o, "--n") ? 0 : 1)) {
                fprintf(stderr, "bert_pretrain show-batch: %s needs a %s integer\n", o,
                        strcmp(o, "--n") ? "non-negative" : "positive");
                return 2;
            }
            i++;
            if (!strcmp(o, "--step")) step = v;
            else if (!strcmp(o, "--phase")) phase = v;
            else n = v;
        } else if (!strcmp(o, "--out")) {
            if (!has_val) {
                fprintf(stderr, "bert_pretrain show-batch: --out needs a file name\n");
                return 2;
            }
            out = argv[++i];
        } else if (o[0] == '-' || c.config) {
            fprintf(stderr, "bert_pretrain show-batch: unexpected argument '%s'\n%s", o, SHOW_HELP);
            return 2;
        } else {
            c.config = o;
        }
    }
    if (!c.config) {
        fprintf(stderr, "bert_pretrain show-batch: missing CONFIG.yaml\n%s", SHOW_HELP);
        return 2;
    }
    static Config cfg;
    BpError err = {0};
    if (config_load_cli(&cfg, c.config, c.sets, c.n_sets, 1, &err) ||
        run_show(&cfg, step, phase, n, out, &err)) {
        fprintf(stderr, "bert_pretrain show-batch: %s\n", err.msg);
        return bp_error_status(&err);
    }
    return 0;
}
