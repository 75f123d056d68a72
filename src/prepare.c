/* prepare.c: text -> vocab (when missing) -> token shards (see prepare.h). */
#include "prepare.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rng.h"
#include "shard.h"
#include "textfile.h"
#include "tokenizer.h"

/* one document being collected: its ids and the length of each sentence */
typedef struct {
    int32_t *ids;
    size_t n, cap;
    size_t *lens;
    size_t n_sent, cap_sent;
} DocBuf;

typedef struct {
    const Config *cfg;
    PrepareReport *r;
    const Tokenizer *tok;
    int unk;
    ShardWriter *train, *eval;
    DocBuf cur, pending; /* pending: the last train document, held back (see end_document) */
    bool have_pending;
    long docs_eval;
    bool doc_had_lines;
    int32_t *line_ids;
    size_t line_cap;
    /* progress */
    FILE *log; /* NULL: quiet */
    bool tty;
    double t_start, t_last;
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
 * arrives, so that if no document at all fell to eval, finish_split can give that one to eval
 * instead of rewriting the train shard. */
static int end_document(Prep *p, BpError *err) {
    bool had_lines = p->doc_had_lines;
    p->doc_had_lines = false;
    if (p->cur.n_sent == 0) {
        if (had_lines) p->r->documents_dropped++;
        return 0;
    }
    double frac = p->cfg->data.eval_fraction;
    uint64_t k = (uint64_t)p->r->documents++;
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

/* a blank line ends the document; any other line is one sentence */
static int handle_line(Prep *p, const char *line, size_t n, BpError *err) {
    if (is_blank(line, n)) return end_document(p, err);
    PrepareReport *r = p->r;
    r->lines++;
    p->doc_had_lines = true;
    size_t got = 0;
    if (tokenizer_encode(p->tok, line, n, &p->line_ids, &got, &p->line_cap, err)) return -1;
    if (got == 0) {
        r->sentences_dropped++;
        return 0;
    }
    for (size_t i = 0; i < got; i++) r->unk_tokens += p->line_ids[i] == p->unk;
    r->tokens += got;
    r->sentences++;
    return doc_append(&p->cur, p->line_ids, got, err);
}

/* bytes: the text read so far, the current file included */
static void progress(Prep *p, int idx, const char *path, size_t bytes, double frac_done, bool force) {
    if (!p->log) return;
    double now = bp_now();
    if (!force && now - p->t_last < (p->tty ? 0.5 : 10.0)) return;
    p->t_last = now;
    double el = now - p->t_start;
    fprintf(p->log, "%sprepare: [%d/%d] %s %3.0f%%  %.1f MB read  %.2fM tokens  %.1f MB/s%s",
            p->tty ? "\r" : "", idx + 1, p->cfg->data.n_input, path, 100 * frac_done, bytes / 1e6,
            p->r->tokens / 1e6, el > 0 ? bytes / 1e6 / el : 0.0, p->tty ? "\033[K" : "\n");
    fflush(p->log);
}

/* Reads, tokenizes and distributes one input file; its end ends its last document. */
static int read_input(Prep *p, int idx, BpError *err) {
    const char *path = p->cfg->data.input[idx];
    TextFile *tf = textfile_open(path, err);
    if (!tf) return -1;
    const TextFileStats *st = textfile_stats(tf);
    long sentences_before = p->r->sentences;
    char *line;
    size_t n;
    int got;
    while ((got = textfile_next(tf, &line, &n, err)) > 0) {
        if (handle_line(p, line, n, err)) {
            got = -1;
            break;
        }
        progress(p, idx, path, p->r->text_bytes + st->bytes, textfile_fraction_read(tf), false);
    }
    int rc = got;
    if (rc == 0) rc = end_document(p, err);
    if (rc == 0 && p->r->sentences == sentences_before)
        rc = bp_fail(err, "%s: no text: %zu line(s), none with a sentence that tokenizes to anything",
                     path, st->lines);
    if (rc == 0) {
        p->r->text_bytes += st->bytes;
        p->r->invalid_utf8_lines += (long)st->bad_lines;
        char note[256];
        if (st->bad_lines && p->log)
            fprintf(p->log, "%sprepare: warning: %s: %s\n", p->tty ? "\r\033[K" : "", path,
                    textfile_invalid_note(st, note, sizeof note));
        progress(p, idx, path, p->r->text_bytes, 1.0, true);
        if (p->tty) fputc('\n', p->log);
    }
    textfile_close(tf);
    return rc;
}

/* Inputs are checked before anything is built: they exist, are regular files, open, and are not
 * empty; the outputs are named and distinct from them. */
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

/* Builds data.vocab from the inputs when it does not exist; *built tells whether it did. */
static int vocab_if_missing(const DataConfig *dc, FILE *log, bool *built, BpError *err) {
    *built = false;
    if (access(dc->vocab, F_OK) == 0) return 0;
    if (log)
        fprintf(log, "prepare: %s does not exist: building a WordPiece vocab of %d entries from %d file(s)\n",
                dc->vocab, dc->vocab_size, dc->n_input);
    const char *inputs[CFG_MAX_INPUTS];
    for (int i = 0; i < dc->n_input; i++) inputs[i] = dc->input[i];
    if (make_parent(dc->vocab, err)) return -1;
    double t0 = bp_now();
    VocabBuildOptions vo = {.size = dc->vocab_size, .lowercase = dc->lowercase, .min_count = 2, .progress = log};
    if (vocab_build_opts(inputs, dc->n_input, &vo, dc->vocab, err)) return -1;
    *built = true;
    if (log) fprintf(log, "prepare: vocab built in %.1f s\n", bp_now() - t0);
    return 0;
}

/* After the last file: the split's guarantees (at least one eval document when the fraction is
 * above 0, at least one train document), then the held-back train document goes where it must. */
static int finish_split(Prep *p, BpError *err) {
    const DataConfig *dc = &p->cfg->data;
    long docs = p->r->documents;
    if (dc->eval_fraction > 0 && docs < 2)
        return bp_fail_usage(err,
                             "the inputs hold %ld document(s): holding out data.eval_fraction = %g of them "
                             "needs at least 2. HINT: separate documents with a blank line, or set "
                             "data.eval_fraction: 0",
                             docs, dc->eval_fraction);
    if (p->have_pending) {
        bool to_eval = dc->eval_fraction > 0 && p->docs_eval == 0;
        if (to_eval) p->docs_eval++;
        if (doc_write(to_eval ? p->eval : p->train, &p->pending, err)) return -1;
        p->have_pending = false;
    }
    if (docs - p->docs_eval < 1)
        return bp_fail_usage(err,
                             "all %ld documents fell to the eval share (data.eval_fraction = %g); the train "
                             "shard would be empty. HINT: lower data.eval_fraction",
                             docs, dc->eval_fraction);
    return 0;
}

static size_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (size_t)st.st_size : 0;
}

/* Commits a shard and records its figures. */
static int commit_shard(ShardWriter *w, const char *path, long docs, PrepareShardReport *s, BpError *err) {
    s->documents = docs;
    s->sentences = shard_writer_num_sentences(w);
    s->tokens = shard_writer_num_tokens(w);
    if (shard_writer_commit(w, err)) return -1;
    snprintf(s->path, sizeof s->path, "%s", path);
    s->bytes = file_size(path);
    return 0;
}

/* Opens the shard writers (and their directories) for the vocab just loaded. */
static int open_shards(Prep *p, BpError *err) {
    const DataConfig *dc = &p->cfg->data;
    int vs = tokenizer_vocab_size(p->tok);
    uint32_t crc = tokenizer_vocab_crc(p->tok);
    if (make_parent(dc->train, err)) return -1;
    if (!(p->train = shard_writer_open(dc->train, vs, crc, err))) return -1;
    if (dc->eval_fraction > 0) {
        if (make_parent(dc->eval, err)) return -1;
        if (!(p->eval = shard_writer_open(dc->eval, vs, crc, err))) return -1;
    }
    return 0;
}

int prepare_run(const Config *cfg, const PrepareOptions *opt, PrepareReport *out, BpError *err) {
    const DataConfig *dc = &cfg->data;
    memset(out, 0, sizeof *out);
    double t0 = bp_now();
    if (check_inputs(dc, err)) return -1;
    FILE *log = opt ? opt->progress : NULL;
    /* SIGINT, SIGTERM, SIGHUP, a closed pipe...: prepare has nothing worth finishing, so such a
       signal removes what this run wrote (the shard temporaries, the vocab it built) and ends it */
    bp_cleanup_on_stop_signals();
    if (vocab_if_missing(dc, log, &out->vocab_built, err)) return -1;
    int vocab_slot = out->vocab_built ? bp_cleanup_add(dc->vocab) : -1;

    Prep p = {.cfg = cfg, .r = out, .log = log, .tty = log && isatty(fileno(log))};
    p.t_start = p.t_last = bp_now();
    int rc = -1;
    Tokenizer *tok = tokenizer_load(dc->vocab, dc->lowercase, err);
    if (!tok) goto done;
    p.tok = tok;
    p.unk = tokenizer_specials(tok).unk;
    if (open_shards(&p, err)) goto done;
    for (int i = 0; i < dc->n_input; i++)
        if (read_input(&p, i, err)) goto done;
    if (finish_split(&p, err)) goto done;
    if (commit_shard(p.train, dc->train, out->documents - p.docs_eval, &out->train, err)) goto done;
    if (p.eval && commit_shard(p.eval, dc->eval, p.docs_eval, &out->eval, err)) goto done;

    out->files = dc->n_input;
    snprintf(out->vocab, sizeof out->vocab, "%s", dc->vocab);
    out->vocab_size = tokenizer_vocab_size(tok);
    out->vocab_crc = tokenizer_vocab_crc(tok);
    out->eval_fraction = dc->eval_fraction;
    out->seconds = bp_now() - t0;
    rc = 0;
done:
    shard_writer_free(p.train); /* without a commit these remove their temporaries */
    shard_writer_free(p.eval);
    tokenizer_free(tok);
    doc_free(&p.cur);
    doc_free(&p.pending);
    free(p.line_ids);
    bp_cleanup_remove(vocab_slot);
    if (rc && out->vocab_built) unlink(dc->vocab);
    if (rc && p.tty) fputc('\n', log);
    return rc;
}
