/* prepare.c: text -> vocab (when missing) -> token shards (see prepare.h). */
#include "prepare.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <omp.h>
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

enum { UNIT_SENTENCE, UNIT_DOC_END, UNIT_BAD };

/* What a line gave, in input order: a sentence of n ids (0: it tokenized to nothing), the end of a
 * document (n = 1 when a record or non-blank line ended it), or a bad record. */
typedef struct {
    int kind;
    size_t line; /* index in the block */
    size_t n;
    const char *why;
} Unit;

/* One thread's share of a block: the lines [lo, hi) tokenized into ids and units. */
typedef struct {
    const Tokenizer *tok;
    size_t lo, hi, line;
    int32_t *ids;
    size_t n_ids, cap_ids;
    Unit *u;
    size_t n_u, cap_u;
    char *jbuf; /* decoded JSON text */
    size_t jcap;
    BpError err;
    bool failed;
} Chunk;

/* The lines of a block, each NUL-terminated: line k is text + off[k], off[k + 1] - off[k] - 1 long. */
typedef struct {
    char *text;
    size_t len, cap;
    size_t *off;
    size_t n, cap_off;
    size_t first_line; /* 1-based line number of line 0 in its file */
} Block;

/* the input files, data.input with directories and patterns expanded */
typedef struct {
    char **path;
    int n, cap;
} PathList;

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
    PathList files;
    int threads, n_chunks;
    Chunk *chunks;
    Block block;
    size_t disk_done; /* bytes on disk of the files read */
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

/* ------------------------------------------------------------------------------------------ */
/* Tokenizing blocks of lines in parallel                                                      */

#define PREP_BLOCK_BYTES ((size_t)8 << 20)
#define PREP_BLOCK_LINES ((size_t)1 << 17)

static int push_unit(Chunk *c, int kind, size_t n, const char *why) {
    if (c->n_u == c->cap_u) {
        size_t nc = c->cap_u ? 2 * c->cap_u : 1024;
        Unit *u = realloc(c->u, nc * sizeof *u);
        if (!u) return bp_fail(&c->err, "out of memory (%zu sentences in a block)", nc);
        c->u = u;
        c->cap_u = nc;
    }
    c->u[c->n_u++] = (Unit){kind, c->line, n, why};
    return 0;
}

static int chunk_sentence(void *ctx, const char *s, size_t n) {
    Chunk *c = ctx;
    size_t before = c->n_ids;
    if (tokenizer_encode(c->tok, s, n, &c->ids, &c->n_ids, &c->cap_ids, &c->err)) return -1;
    return push_unit(c, UNIT_SENTENCE, c->n_ids - before, NULL);
}

static void chunk_run(Chunk *c, const Block *b, const DataConfig *dc) {
    c->n_ids = c->n_u = 0;
    c->failed = false;
    for (c->line = c->lo; c->line < c->hi && !c->failed; c->line++) {
        const char *line = b->text + b->off[c->line], *why;
        size_t n = b->off[c->line + 1] - b->off[c->line] - 1;
        TextLineKind k = text_line_units((TextFormat)dc->input_format, dc->jsonl_field, line, n, &c->jbuf,
                                         &c->jcap, chunk_sentence, c, &why);
        if (k == TEXT_LINE_FAILED) {
            if (why) bp_fail(&c->err, "%s", why);
            c->failed = true;
        } else if (k == TEXT_LINE_ENDS_DOC) {
            c->failed = push_unit(c, UNIT_DOC_END, !text_is_blank(line, n), NULL) != 0;
        } else if (k == TEXT_LINE_BAD) {
            c->failed = push_unit(c, UNIT_BAD, 0, why) != 0;
        }
    }
}

static int block_add(Block *b, const char *line, size_t n, BpError *err) {
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : PREP_BLOCK_BYTES + 4096;
        while (nc < b->len + n + 1) nc *= 2;
        char *t = realloc(b->text, nc);
        if (!t) return bp_fail(err, "out of memory for a line of %zu bytes", n);
        b->text = t;
        b->cap = nc;
    }
    if (b->n + 2 > b->cap_off) {
        size_t nc = b->cap_off ? 2 * b->cap_off : PREP_BLOCK_LINES + 2;
        size_t *o = realloc(b->off, nc * sizeof *o);
        if (!o) return bp_fail(err, "out of memory (%zu lines in a block)", nc);
        b->off = o;
        b->cap_off = nc;
    }
    if (b->n == 0) b->off[0] = 0;
    memcpy(b->text + b->len, line, n);
    b->text[b->len + n] = 0;
    b->len += n + 1;
    b->off[++b->n] = b->len;
    return 0;
}

/* Records a bad record: the first one's place is kept for the messages. */
static void note_bad(Prep *p, const char *path, size_t line, const char *why) {
    PrepareReport *r = p->r;
    if (r->bad_records++ == 0) snprintf(r->first_bad, sizeof r->first_bad, "%s:%zu: %s", path, line, why);
}

/* The block's units, in input order, into documents and the split. */
static int merge_chunk(Prep *p, const Chunk *c, const Block *b, const char *path, BpError *err) {
    PrepareReport *r = p->r;
    const int32_t *ids = c->ids;
    for (size_t k = 0; k < c->n_u; k++) {
        const Unit *u = &c->u[k];
        if (u->kind == UNIT_BAD) {
            note_bad(p, path, b->first_line + u->line, u->why);
        } else if (u->kind == UNIT_DOC_END) {
            if (u->n) p->doc_had_lines = true;
            if (end_document(p, err)) return -1;
        } else {
            p->doc_had_lines = true;
            if (u->n == 0) {
                r->sentences_dropped++;
                continue;
            }
            for (size_t i = 0; i < u->n; i++) r->unk_tokens += ids[i] == p->unk;
            r->tokens += u->n;
            r->sentences++;
            if (doc_append(&p->cur, ids, u->n, err)) return -1;
            ids += u->n;
        }
    }
    return 0;
}

/* Tokenizes the block's lines on p->threads threads (in p->n_chunks shares, so a slow share does
 * not hold the others), then merges the shares in order: the result does not depend on how the
 * lines were shared out. */
static int run_block(Prep *p, Block *b, const char *path, BpError *err) {
    if (b->n == 0) return 0;
    int nc = p->n_chunks;
    for (int c = 0; c < nc; c++) {
        p->chunks[c].lo = b->n * (size_t)c / (size_t)nc;
        p->chunks[c].hi = b->n * (size_t)(c + 1) / (size_t)nc;
    }
    const DataConfig *dc = &p->cfg->data;
#pragma omp parallel for schedule(dynamic, 1) num_threads(p->threads) if (p->threads > 1)
    for (int c = 0; c < nc; c++) chunk_run(&p->chunks[c], b, dc);
    for (int c = 0; c < nc; c++) {
        if (p->chunks[c].failed) {
            *err = p->chunks[c].err;
            bp_err_prefix(err, "%s:%zu", path, b->first_line + p->chunks[c].line);
            return -1;
        }
        if (merge_chunk(p, &p->chunks[c], b, path, err)) return -1;
    }
    b->first_line += b->n;
    b->n = b->len = 0;
    return 0;
}

/* bytes: the text read so far; disk: the inputs' bytes on disk consumed so far (for the ETA) */
static void progress(Prep *p, int idx, const char *path, size_t bytes, size_t disk, bool force) {
    if (!p->log) return;
    double now = bp_now();
    if (!force && now - p->t_last < (p->tty ? 0.5 : 10.0)) return;
    p->t_last = now;
    double el = now - p->t_start, left = p->r->disk_bytes > disk ? (double)(p->r->disk_bytes - disk) : 0;
    char eta[32] = "";
    if (disk > 0 && el > 0 && left > 0) snprintf(eta, sizeof eta, "  ETA %.0f s", el * left / disk);
    fprintf(p->log, "%sprepare: [%d/%d] %s  %.1f MB read  %.2fM tokens  %.1f MB/s%s%s",
            p->tty ? "\r" : "", idx + 1, p->files.n, path, bytes / 1e6, p->r->tokens / 1e6,
            el > 0 ? bytes / 1e6 / el : 0.0, eta, p->tty ? "\033[K" : "\n");
    fflush(p->log);
}

/* Reads, tokenizes and distributes one input file, a block of lines at a time; its end ends its
 * last document. */
static int read_input(Prep *p, int idx, BpError *err) {
    const char *path = p->files.path[idx];
    TextFile *tf = textfile_open(path, err);
    if (!tf) return -1;
    const TextFileStats *st = textfile_stats(tf);
    long sentences_before = p->r->sentences, bad_before = p->r->bad_records;
    Block *b = &p->block;
    b->n = b->len = 0;
    b->first_line = 1;
    char *line;
    size_t n;
    int rc;
    while ((rc = textfile_next(tf, &line, &n, err)) > 0) {
        if (!text_is_blank(line, n)) p->r->lines++;
        if (block_add(b, line, n, err)) break;
        if (b->len < PREP_BLOCK_BYTES && b->n < PREP_BLOCK_LINES) continue;
        if (run_block(p, b, path, err)) break;
        progress(p, idx, path, p->r->text_bytes + st->bytes, p->disk_done + st->file_offset, false);
    }
    if (rc > 0) rc = -1;
    if (rc == 0) rc = run_block(p, b, path, err);
    if (rc == 0) rc = end_document(p, err);
    if (rc == 0 && p->r->sentences == sentences_before) {
        char bad[CFG_PATH_MAX + 160] = "";
        if (p->r->bad_records > bad_before)
            snprintf(bad, sizeof bad, "; %ld bad record(s), the first at %s", p->r->bad_records - bad_before,
                     p->r->first_bad);
        rc = bp_fail(err, "%s: no text: %zu line(s), none with a sentence that tokenizes to anything%s", path,
                     st->lines, bad);
    }
    if (rc == 0) {
        p->r->text_bytes += st->bytes;
        p->disk_done += st->file_size;
        p->r->invalid_utf8_lines += (long)st->bad_lines;
        char note[256];
        if (st->bad_lines && p->log)
            fprintf(p->log, "%sprepare: warning: %s: %s\n", p->tty ? "\r\033[K" : "", path,
                    textfile_invalid_note(st, note, sizeof note));
        progress(p, idx, path, p->r->text_bytes, p->disk_done, true);
        if (p->tty) fputc('\n', p->log);
    }
    textfile_close(tf);
    return rc;
}

/* Inputs are checked before anything is built: they exist, are regular files, open, and are not
 * empty; the outputs are named and distinct from them. */
static int paths_add(PathList *l, const char *path, BpError *err) {
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 64;
        char **np = realloc(l->path, (size_t)nc * sizeof *np);
        if (!np) return bp_fail(err, "out of memory listing %d input files", nc);
        l->path = np;
        l->cap = nc;
    }
    if (!(l->path[l->n] = strdup(path))) return bp_fail(err, "out of memory listing input files");
    l->n++;
    return 0;
}

static void paths_free(PathList *l) {
    for (int i = 0; i < l->n; i++) free(l->path[i]);
    free(l->path);
}

/* Whether a file found in a directory or by a pattern is one of prepare's own files (a shard or
 * the vocab from an earlier run), which would otherwise be read as text. */
static bool is_output(const DataConfig *d, const struct stat *st) {
    const char *outs[3] = {d->train, d->eval, d->vocab};
    for (int k = 0; k < 3; k++) {
        struct stat o;
        if (outs[k][0] && stat(outs[k], &o) == 0 && o.st_dev == st->st_dev && o.st_ino == st->st_ino) return true;
    }
    return false;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every regular file under dir, recursively, hidden entries and the outputs skipped; each
 * directory's entries in byte order, so the whole list is in byte order of the paths. */
static int expand_dir(const DataConfig *d, const char *dir, PathList *out, int depth, BpError *err) {
    if (depth > 32) return bp_fail(err, "%s: directories nested more than 32 deep (a link loop?)", dir);
    DIR *dh = opendir(dir);
    if (!dh) return bp_fail_kind(err, BP_ERR_IO, "%s: cannot read input directory: %s", dir, strerror(errno));
    PathList names = {0};
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(dh));)
        if (e->d_name[0] != '.') rc = paths_add(&names, e->d_name, err);
    closedir(dh);
    if (rc == 0 && names.n) qsort(names.path, (size_t)names.n, sizeof *names.path, cmp_str);
    size_t dl = strlen(dir);
    bool slash = dl > 0 && dir[dl - 1] == '/';
    for (int i = 0; rc == 0 && i < names.n; i++) {
        char path[CFG_PATH_MAX];
        struct stat st;
        if (snprintf(path, sizeof path, "%s%s%s", dir, slash ? "" : "/", names.path[i]) >= (int)sizeof path)
            rc = bp_fail(err, "%s/%s: path too long", dir, names.path[i]);
        else if (stat(path, &st) != 0)
            rc = bp_fail_kind(err, BP_ERR_IO, "%s: cannot read input: %s", path, strerror(errno));
        else if (S_ISDIR(st.st_mode))
            rc = expand_dir(d, path, out, depth + 1, err);
        else if (S_ISREG(st.st_mode) && !is_output(d, &st))
            rc = paths_add(out, path, err);
    }
    paths_free(&names);
    return rc;
}

/* One entry of data.input: a pattern (its matches, sorted), a directory, or a file. */
static int expand_entry(const DataConfig *d, const char *entry, PathList *out, BpError *err) {
    struct stat st;
    if (strpbrk(entry, "*?[") && stat(entry, &st) != 0) {
        glob_t g;
        int rc = glob(entry, GLOB_ERR, NULL, &g);
        if (rc == GLOB_NOMATCH) return bp_fail(err, "%s: no file matches this pattern in data.input", entry);
        if (rc != 0) {
            globfree(&g);
            return bp_fail_kind(err, BP_ERR_IO, "%s: cannot expand the pattern (%s)", entry,
                                rc == GLOB_NOSPACE ? "out of memory" : "a directory could not be read");
        }
        int before = out->n;
        for (size_t i = 0; rc == 0 && i < g.gl_pathc; i++) {
            const char *path = g.gl_pathv[i];
            if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) rc = expand_dir(d, path, out, 0, err);
            else if (!(stat(path, &st) == 0 && S_ISREG(st.st_mode) && is_output(d, &st)))
                rc = paths_add(out, path, err);
        }
        globfree(&g);
        if (rc == 0 && out->n == before)
            return bp_fail(err, "%s: the pattern matches only prepare's own outputs", entry);
        return rc;
    }
    if (stat(entry, &st) == 0 && S_ISDIR(st.st_mode)) {
        int before = out->n;
        if (expand_dir(d, entry, out, 0, err)) return -1;
        if (out->n == before) return bp_fail(err, "%s: no input files in this directory", entry);
        return 0;
    }
    return paths_add(out, entry, err);
}

/* Inputs are checked before anything is built: they exist, are regular files, open, and are not
 * empty; the outputs are named and distinct from them. */
static int check_inputs(const DataConfig *d, PathList *files, size_t *disk, BpError *err) {
    if (d->n_input == 0)
        return bp_fail_usage(err, "data.input lists no files: prepare needs text to tokenize");
    for (int i = 0; i < d->n_input; i++)
        if (expand_entry(d, d->input[i], files, err)) return -1;
    *disk = 0;
    for (int i = 0; i < files->n; i++) {
        const char *path = files->path[i];
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
        *disk += (size_t)st.st_size;
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
static int vocab_if_missing(const DataConfig *dc, const PathList *files, FILE *log, bool *built, BpError *err) {
    *built = false;
    if (access(dc->vocab, F_OK) == 0) return 0;
    if (log)
        fprintf(log, "prepare: %s does not exist: building a WordPiece vocab of %d entries from %d file(s)\n",
                dc->vocab, dc->vocab_size, files->n);
    if (make_parent(dc->vocab, err)) return -1;
    double t0 = bp_now();
    VocabBuildOptions vo = {.size = dc->vocab_size, .lowercase = dc->lowercase, .min_count = 2, .progress = log,
                            .format = dc->input_format, .jsonl_field = dc->jsonl_field,
                            .sample_mb = dc->vocab_sample_mb};
    if (vocab_build_opts((const char *const *)files->path, files->n, &vo, dc->vocab, err)) return -1;
    *built = true;
    if (log) fprintf(log, "prepare: vocab built in %.1f s\n", bp_now() - t0);
    return 0;
}

/* After the last file: the split's guarantees (at least one eval document when the fraction is
 * above 0, at least one train document), then the held-back train document goes where it must. */
static int finish_split(Prep *p, BpError *err) {
    const DataConfig *dc = &p->cfg->data;
    long docs = p->r->documents, bad = p->r->bad_records;
    if (bad > 0 && (double)bad > dc->max_bad_records * (double)p->r->lines)
        return bp_fail_kind(err, BP_ERR_CORRUPT,
                            "%ld of %ld JSONL records are bad (%.3g%%, above data.max_bad_records = %g); the "
                            "first at %s. HINT: check data.jsonl_field ('%s') and data.input_format, or raise "
                            "data.max_bad_records to skip them",
                            bad, p->r->lines, 100.0 * (double)bad / (double)p->r->lines, dc->max_bad_records,
                            p->r->first_bad, dc->jsonl_field);
    if (dc->eval_fraction > 0 && docs < 2)
        return bp_fail_usage(err,
                             "the inputs hold %ld document(s): holding out data.eval_fraction = %g of them "
                             "needs at least 2. HINT: separate documents with a blank line, or set "
                             "data.eval_fraction: 0",
                             docs, dc->eval_fraction);
    if (bad > 0 && p->log)
        fprintf(p->log, "prepare: warning: %ld of %ld JSONL records are bad and were skipped; the first at %s\n",
                bad, p->r->lines, p->r->first_bad);
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
    shard_writer_set_role(p->train, SHARD_ROLE_TRAIN);
    if (dc->eval_fraction > 0) {
        if (make_parent(dc->eval, err)) return -1;
        if (!(p->eval = shard_writer_open(dc->eval, vs, crc, err))) return -1;
        shard_writer_set_role(p->eval, SHARD_ROLE_EVAL);
    }
    return 0;
}

/* The tokenizing threads and their shares of a block. */
static int start_threads(Prep *p, BpError *err) {
    int t = p->cfg->training.threads;
    p->threads = t > 0 ? t : omp_get_num_procs();
    p->n_chunks = p->threads > 1 ? 4 * p->threads : 1;
    p->chunks = bp_calloc((size_t)p->n_chunks, sizeof *p->chunks, "the tokenizing shares", err);
    if (!p->chunks) return -1;
    for (int c = 0; c < p->n_chunks; c++) p->chunks[c].tok = p->tok;
    return 0;
}

static void free_threads(Prep *p) {
    for (int c = 0; p->chunks && c < p->n_chunks; c++) {
        free(p->chunks[c].ids);
        free(p->chunks[c].u);
        free(p->chunks[c].jbuf);
    }
    free(p->chunks);
    free(p->block.text);
    free(p->block.off);
}

int prepare_run(const Config *cfg, const PrepareOptions *opt, PrepareReport *out, BpError *err) {
    const DataConfig *dc = &cfg->data;
    memset(out, 0, sizeof *out);
    double t0 = bp_now();
    FILE *log = opt ? opt->progress : NULL;
    /* SIGINT, SIGTERM, SIGHUP, a closed pipe...: prepare has nothing worth finishing, so such a
       signal removes what this run wrote (the shard temporaries, the vocab it built) and ends it */
    bp_cleanup_on_stop_signals();
    int vocab_slot = -1;
    Prep p = {.cfg = cfg, .r = out, .log = log, .tty = log && isatty(fileno(log))};
    int rc = -1;
    Tokenizer *tok = NULL;
    if (check_inputs(dc, &p.files, &out->disk_bytes, err)) goto done;
    if (vocab_if_missing(dc, &p.files, log, &out->vocab_built, err)) goto done;
    if (out->vocab_built) vocab_slot = bp_cleanup_add(dc->vocab);

    p.t_start = p.t_last = bp_now();
    tok = tokenizer_load(dc->vocab, dc->lowercase, err);
    if (!tok) goto done;
    p.tok = tok;
    p.unk = tokenizer_specials(tok).unk;
    if (start_threads(&p, err) || open_shards(&p, err)) goto done;
    for (int i = 0; i < p.files.n; i++)
        if (read_input(&p, i, err)) goto done;
    if (finish_split(&p, err)) goto done;
    if (commit_shard(p.train, dc->train, out->documents - p.docs_eval, &out->train, err)) goto done;
    if (p.eval && commit_shard(p.eval, dc->eval, p.docs_eval, &out->eval, err)) goto done;

    out->files = p.files.n;
    out->threads = p.threads;
    out->input_format = dc->input_format;
    out->records = dc->input_format == TEXT_FORMAT_JSONL ? out->lines : 0;
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
    free_threads(&p);
    paths_free(&p.files);
    bp_cleanup_remove(vocab_slot);
    if (rc && out->vocab_built) unlink(dc->vocab);
    if (rc && p.tty) fputc('\n', log);
    return rc;
}
