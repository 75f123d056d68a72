/* shard.c: token shard writer (streaming, atomic) and mmap reader with full validation (see
 * shard.h for the layout). */
#include "shard.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(ShardHeader) == SHARD_HEADER_BYTES, "shard header layout");
_Static_assert(offsetof(ShardHeader, header_crc) == SHARD_HEADER_BYTES - 4, "header_crc is last");
/* The file is little-endian and written from host memory as is. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "shards assume a little-endian host");

#define SHARD_ALIGN 64

static uint64_t align_up(uint64_t x) { return (x + SHARD_ALIGN - 1) / SHARD_ALIGN * SHARD_ALIGN; }

static uint32_t header_crc(const ShardHeader *h) {
    return bp_crc32(0, h, offsetof(ShardHeader, header_crc));
}

/* ------------------------------------------------------------------------------------------ */
/* reader                                                                                      */

/* Boundary array b[0..n] must go 0 = b[0] < b[1] < ... < b[n] = last. */
static int check_bounds(const Shard *s, const uint64_t *b, size_t n, uint64_t last, const char *what,
                        const char *unit, BpError *err) {
    if (b[0] != 0)
        return bp_fail(err, "%s: damaged shard: %s 0 starts at %s %" PRIu64 ", not 0", s->path,
                       what, unit, b[0]);
    for (size_t i = 0; i < n; i++)
        if (b[i + 1] <= b[i])
            return bp_fail(err,
                           "%s: damaged shard: %s boundaries are not strictly increasing at %s %zu "
                           "(%" PRIu64 " then %" PRIu64 ")",
                           s->path, what, what, i, b[i], b[i + 1]);
    if (b[n] != last)
        return bp_fail(err, "%s: damaged shard: the %s boundaries end at %" PRIu64 ", not %" PRIu64,
                       s->path, what, b[n], last);
    return 0;
}

/* Checks every header field against itself and the file length; no data section is read. */
static int check_header(Shard *s, size_t file_len, BpError *err) {
    const ShardHeader *h = &s->h;
    const char *p = s->path;
    if (memcmp(h->magic, SHARD_MAGIC, 8) != 0)
        return bp_fail(err,
                       "%s: not a token shard (wrong magic; expected \"%s\"). HINT: data.train and "
                       "data.eval must be files written by `bert_pretrain prepare`",
                       p, SHARD_MAGIC);
    if (h->version != SHARD_VERSION)
        return bp_fail(err,
                       "%s: shard format version %" PRIu32 ", this build reads version %d. HINT: "
                       "re-run `bert_pretrain prepare`",
                       p, h->version, SHARD_VERSION);
    if (header_crc(h) != h->header_crc)
        return bp_fail(err, "%s: damaged shard: header CRC32 mismatch (stored %08" PRIx32
                       ", computed %08" PRIx32 ")",
                       p, h->header_crc, header_crc(h));
    if (h->role > SHARD_ROLE_EVAL)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "%s: damaged shard: role %" PRIu32 " is none of train (1), eval (2)",
                            p, h->role);
    if (h->file_bytes != file_len) {
        if (file_len < h->file_bytes)
            return bp_fail(err, "%s: truncated shard: %zu bytes of %" PRIu64 " (%" PRIu64 " missing)",
                           p, file_len, h->file_bytes, h->file_bytes - file_len);
        return bp_fail(err, "%s: damaged shard: %zu bytes, the header says %" PRIu64 " (%zu extra)",
                       p, file_len, h->file_bytes, file_len - (size_t)h->file_bytes);
    }
    if (h->header_bytes != SHARD_HEADER_BYTES)
        return bp_fail(err, "%s: damaged shard: header size %" PRIu32 ", expected %d", p,
                       h->header_bytes, SHARD_HEADER_BYTES);
    if (h->vocab_size < 1 || h->vocab_size > (1u << 24))
        return bp_fail(err, "%s: damaged shard: vocab size %" PRIu32 " out of range", p, h->vocab_size);
    if (!(h->token_bytes == 4 || (h->token_bytes == 2 && h->vocab_size <= 65536)))
        return bp_fail(err, "%s: damaged shard: %" PRIu32 "-byte token ids for a vocab of %" PRIu32,
                       p, h->token_bytes, h->vocab_size);
    /* Every section must lie inside the file, in order, without overlap. Sizes are bounded by the
     * file length before they are multiplied, so nothing overflows. */
    uint64_t len = file_len;
    if (h->n_tokens > len / h->token_bytes || h->n_sentences >= len / 8 || h->n_documents >= len / 8)
        return bp_fail(err, "%s: damaged shard: counts (%" PRIu64 " tokens, %" PRIu64
                       " sentences, %" PRIu64 " documents) do not fit in %zu bytes",
                       p, h->n_tokens, h->n_sentences, h->n_documents, file_len);
    uint64_t tok_end = h->tokens_offset + h->n_tokens * h->token_bytes;
    uint64_t sent_end = h->sents_offset + (h->n_sentences + 1) * 8;
    uint64_t doc_end = h->docs_offset + (h->n_documents + 1) * 8;
    if (h->tokens_offset < SHARD_HEADER_BYTES || h->tokens_offset > len || tok_end > len ||
        h->sents_offset < tok_end || h->sents_offset > len || h->sents_offset % 8 || sent_end > len ||
        h->docs_offset < sent_end || h->docs_offset > len || h->docs_offset % 8 || doc_end > len ||
        h->tokens_offset % h->token_bytes)
        return bp_fail(err, "%s: damaged shard: section offsets (%" PRIu64 ", %" PRIu64 ", %" PRIu64
                       ") inconsistent with the counts and the file length %zu",
                       p, h->tokens_offset, h->sents_offset, h->docs_offset, file_len);
    if (h->n_sentences < h->n_documents || h->n_tokens < h->n_sentences)
        return bp_fail(err, "%s: damaged shard: %" PRIu64 " tokens, %" PRIu64 " sentences, %" PRIu64
                       " documents (each level needs at least one of the level below)",
                       p, h->n_tokens, h->n_sentences, h->n_documents);
    return 0;
}

static int check_sections(Shard *s, BpError *err) {
    const ShardHeader *h = &s->h;
    const uint8_t *base = s->map;
    struct {
        const char *name;
        uint64_t off, bytes;
        uint32_t crc;
    } sec[3] = {
        {"token", h->tokens_offset, h->n_tokens * h->token_bytes, h->tokens_crc},
        {"sentence-boundary", h->sents_offset, (h->n_sentences + 1) * 8, h->sents_crc},
        {"document-boundary", h->docs_offset, (h->n_documents + 1) * 8, h->docs_crc},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t got = bp_crc32(0, base + sec[i].off, (size_t)sec[i].bytes);
        if (got != sec[i].crc)
            return bp_fail(err,
                           "%s: damaged shard: %s section CRC32 mismatch (stored %08" PRIx32
                           ", computed %08" PRIx32 "). HINT: re-run `bert_pretrain prepare`",
                           s->path, sec[i].name, sec[i].crc, got);
    }
    if (check_bounds(s, s->sent_start, s->n_sentences, h->n_tokens, "sentence", "token", err) ||
        check_bounds(s, s->doc_start, s->n_documents, h->n_sentences, "document", "sentence", err))
        return -1;
    int32_t bad = -1;
    size_t bad_at = 0;
    for (size_t i = 0; i < s->n_tokens; i++) {
        int32_t t = shard_token(s, i);
        if (t < 0 || (uint32_t)t >= h->vocab_size) {
            bad = t;
            bad_at = i;
            break;
        }
    }
    if (bad != -1)
        return bp_fail(err, "%s: damaged shard: token %zu has id %" PRId32 ", outside the vocab of %" PRIu32,
                       s->path, bad_at, bad, h->vocab_size);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* the SIGBUS guard (see shard.h)                                                              */

/* A slot is in use while start != 0. Everything the handler prints is formatted when the slot is
 * filled (snprintf is not async-signal-safe); the handler only compares addresses, writes the two
 * pieces around the faulting offset and exits. */
static struct {
    _Atomic uintptr_t start;
    size_t len;
    char head[1200], tail[320];
} g_guard[SHARD_GUARD_SLOTS];
static pthread_mutex_t g_guard_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction g_prev_sigbus;

static void write_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static void on_sigbus(int sig, siginfo_t *si, void *uctx) {
    uintptr_t a = (uintptr_t)si->si_addr;
    /* si_code > 0: raised by the kernel for a memory access (a kill or raise has no address) */
    for (int i = 0; si->si_code > 0 && i < SHARD_GUARD_SLOTS; i++) {
        uintptr_t start = atomic_load(&g_guard[i].start);
        if (!start || a < start || a - start >= g_guard[i].len) continue;
        char num[24], *d = num + sizeof num;
        uintptr_t off = a - start;
        do *--d = (char)('0' + off % 10); while ((off /= 10) > 0);
        write_all(g_guard[i].head, strlen(g_guard[i].head));
        write_all(d, (size_t)(num + sizeof num - d));
        write_all(g_guard[i].tail, strlen(g_guard[i].tail));
        _exit(1);
    }
    /* not a shard: whoever handled SIGBUS before us, else the default action, which the pending
     * signal meets when this handler returns (it kills the process as it always did) */
    if ((g_prev_sigbus.sa_flags & SA_SIGINFO) && g_prev_sigbus.sa_sigaction) {
        g_prev_sigbus.sa_sigaction(sig, si, uctx);
        return;
    }
    if (g_prev_sigbus.sa_handler != SIG_DFL && g_prev_sigbus.sa_handler != SIG_IGN) {
        g_prev_sigbus.sa_handler(sig);
        return;
    }
    signal(SIGBUS, SIG_DFL);
    raise(sig);
}

/* Installs on_sigbus unless it is the handler already (someone may have replaced it since; a test
 * framework does, per test), keeping the one it replaces to pass other faults on to. */
static void guard_install(void) {
    struct sigaction sa, cur;
    if (sigaction(SIGBUS, NULL, &cur) != 0) return;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_sigbus) return;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    g_prev_sigbus = cur;
    sigaction(SIGBUS, &sa, NULL);
}

static int guard_add(const Shard *s) {
    int slot = 0;
    pthread_mutex_lock(&g_guard_lock);
    guard_install();
    for (int i = 0; i < SHARD_GUARD_SLOTS && !slot; i++) {
        if (atomic_load(&g_guard[i].start)) continue;
        g_guard[i].len = s->map_len;
        snprintf(g_guard[i].head, sizeof g_guard[i].head,
                 "bert_pretrain: %s: the shard was truncated while this run was reading it (SIGBUS reading byte ",
                 s->path);
        snprintf(g_guard[i].tail, sizeof g_guard[i].tail,
                 " of the %zu it had when opened). HINT: never rewrite the shards of a running job; "
                 "re-run `bert_pretrain prepare` if needed, then resume from the last checkpoint\n",
                 s->map_len);
        atomic_store(&g_guard[i].start, (uintptr_t)s->map);
        slot = i + 1;
    }
    pthread_mutex_unlock(&g_guard_lock);
    return slot;
}

static void guard_remove(int slot) {
    if (slot > 0) atomic_store(&g_guard[slot - 1].start, (uintptr_t)0);
}

static int64_t mtime_ns(const struct stat *st) {
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

int shard_check_unchanged(const Shard *s, BpError *err) {
    struct stat st;
    if (stat(s->path, &st) != 0)
        return bp_fail_kind(err, BP_ERR_IO, "%s: the shard changed on disk since this run opened it (%s)",
                            s->path, strerror(errno));
    const char *what = (uint64_t)st.st_dev != s->dev || (uint64_t)st.st_ino != s->ino ? "another file is at its path"
                       : (size_t)st.st_size != s->map_len                            ? "its size changed"
                       : mtime_ns(&st) != s->mtime_ns                                 ? "it was modified"
                                                                                     : NULL;
    if (!what) return 0;
    return bp_fail_kind(err, BP_ERR_IO,
                        "%s: the shard changed on disk since this run opened it (%s: %zu bytes then, %lld "
                        "now). HINT: never rewrite the shards of a running job; re-run `bert_pretrain "
                        "prepare` if needed, then resume from the last checkpoint",
                        s->path, what, s->map_len, (long long)st.st_size);
}

/* ------------------------------------------------------------------------------------------ */

int shard_open(Shard *s, const char *path, BpError *err) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    void *map = NULL;
    size_t len = 0;
    int open_errno = 0;
    if (bp_map_file(path, &map, &len, &open_errno, err) != 0) {
        if (open_errno)
            return bp_fail(err, "%s: cannot open shard: %s%s", path, strerror(open_errno),
                           open_errno == ENOENT ? ". HINT: run `bert_pretrain prepare CONFIG` first" : "");
        bp_err_prefix(err, "%s", path);
        return -1;
    }
    if (len < SHARD_HEADER_BYTES) {
        bp_unmap_file(map, len);
        return bp_fail(err, "%s: truncated shard: %zu bytes, less than the %d-byte header", path, len,
                       SHARD_HEADER_BYTES);
    }
    s->map = map;
    s->map_len = len;
    memcpy(&s->h, map, sizeof s->h);
    if (check_header(s, len, err)) {
        shard_close(s);
        return -1;
    }
    const uint8_t *base = map;
    s->tokens = base + s->h.tokens_offset;
    s->sent_start = (const uint64_t *)(base + s->h.sents_offset);
    s->doc_start = (const uint64_t *)(base + s->h.docs_offset);
    s->n_tokens = (size_t)s->h.n_tokens;
    s->n_sentences = (size_t)s->h.n_sentences;
    s->n_documents = (size_t)s->h.n_documents;
    if (check_sections(s, err)) {
        shard_close(s);
        return -1;
    }
    /* the identity of what was validated: the same file, or the first check fails */
    struct stat st;
    if (stat(path, &st) == 0) {
        s->dev = (uint64_t)st.st_dev;
        s->ino = (uint64_t)st.st_ino;
        s->mtime_ns = mtime_ns(&st);
    }
    if (shard_check_unchanged(s, err)) {
        shard_close(s);
        return -1;
    }
    s->guard = guard_add(s);
    return 0;
}

void shard_close(Shard *s) {
    guard_remove(s->guard);
    s->guard = 0;
    bp_unmap_file(s->map, s->map_len);
    s->map = NULL;
    s->map_len = 0;
    s->tokens = NULL;
    s->sent_start = s->doc_start = NULL;
}

int shard_check_vocab(const Shard *s, int vocab_size, uint32_t vocab_crc, const char *vocab_path,
                      BpError *err) {
    if ((uint32_t)vocab_size == s->h.vocab_size && vocab_crc == s->h.vocab_crc) return 0;
    return bp_fail(err,
                   "%s: built with a vocab of %" PRIu32 " tokens (crc %08" PRIx32 ") but %s has %d "
                   "(crc %08" PRIx32 "). HINT: point data.vocab at the vocab the shard was built with, "
                   "or re-run `bert_pretrain prepare` to rebuild the shards with this one",
                   s->path, s->h.vocab_size, s->h.vocab_crc, vocab_path, vocab_size, vocab_crc);
}

/* ------------------------------------------------------------------------------------------ */
/* writer                                                                                      */

struct ShardWriter {
    AtomicFile af;
    bool committed;
    ShardHeader h;
    uint64_t *sents; /* sentence starts so far (n_sentences of them; the end sentinel comes last) */
    size_t sents_cap;
    uint64_t *docs;
    size_t docs_cap;
    size_t doc_first_sentence; /* first sentence of the open document */
    uint32_t tokens_crc;
    uint8_t buf[1 << 16]; /* ids converted to the file's width before fwrite */
};

static int grow_u64(uint64_t **a, size_t *cap, size_t need, const char *what, BpError *err) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 4096;
    while (nc < need) nc *= 2;
    uint64_t *na = realloc(*a, nc * sizeof *na);
    if (!na) return bp_fail(err, "out of memory growing the %s list to %zu entries", what, nc);
    *a = na;
    *cap = nc;
    return 0;
}

static int write_bytes(ShardWriter *w, const void *p, size_t n, BpError *err) {
    if (n && fwrite(p, 1, n, w->af.fp) != n)
        return bp_fail(err, "%s: write failed: %s", w->af.tmp_path, strerror(errno));
    return 0;
}

static int write_padding(ShardWriter *w, uint64_t *pos, BpError *err) {
    static const uint8_t zeros[SHARD_ALIGN];
    uint64_t to = align_up(*pos);
    if (write_bytes(w, zeros, (size_t)(to - *pos), err)) return -1;
    *pos = to;
    return 0;
}

static const char *role_name(uint32_t role) {
    return role == SHARD_ROLE_TRAIN ? "train" : role == SHARD_ROLE_EVAL ? "eval" : "unknown";
}

int shard_check_role(const Shard *s, ShardRole want, const char *key, BpError *err) {
    if (s->h.role == SHARD_ROLE_UNKNOWN || s->h.role == (uint32_t)want) return 0;
    return bp_fail_usage(err,
                         "%s = %s is the %s shard `prepare` wrote, not the %s one: %s would %s. HINT: are "
                         "data.train and data.eval swapped?",
                         key, s->path, role_name(s->h.role), role_name(want),
                         want == SHARD_ROLE_TRAIN ? "training" : "evaluation",
                         want == SHARD_ROLE_TRAIN ? "train on the held-out documents"
                                                  : "report a loss on documents the model trains on");
}

void shard_writer_set_role(ShardWriter *w, ShardRole role) { w->h.role = (uint32_t)role; }

ShardWriter *shard_writer_open(const char *path, int vocab_size, uint32_t vocab_crc, BpError *err) {
    if (vocab_size < 1 || vocab_size > (1 << 24)) {
        bp_fail(err, "%s: vocab size %d out of range for a shard", path, vocab_size);
        return NULL;
    }
    ShardWriter *w = bp_calloc(1, sizeof *w, "shard writer", err);
    if (!w) return NULL;
    if (bp_atomic_open(&w->af, path, err)) {
        free(w);
        return NULL;
    }
    memcpy(w->h.magic, SHARD_MAGIC, 8);
    w->h.version = SHARD_VERSION;
    w->h.header_bytes = SHARD_HEADER_BYTES;
    w->h.vocab_size = (uint32_t)vocab_size;
    w->h.vocab_crc = vocab_crc;
    w->h.token_bytes = vocab_size <= 65536 ? 2 : 4;
    w->h.tokens_offset = SHARD_HEADER_BYTES;
    /* a zero header first; the real one is written over it at commit */
    ShardHeader zero;
    memset(&zero, 0, sizeof zero);
    if (write_bytes(w, &zero, sizeof zero, err)) {
        shard_writer_free(w);
        return NULL;
    }
    return w;
}

int shard_writer_add_sentence(ShardWriter *w, const int32_t *ids, size_t n, BpError *err) {
    if (n == 0) return 0;
    if (grow_u64(&w->sents, &w->sents_cap, w->h.n_sentences + 1, "sentence", err)) return -1;
    w->sents[w->h.n_sentences++] = w->h.n_tokens;
    size_t tb = w->h.token_bytes, per = sizeof w->buf / tb;
    for (size_t i = 0; i < n;) {
        size_t k = n - i < per ? n - i : per;
        for (size_t j = 0; j < k; j++) {
            int32_t t = ids[i + j];
            if (t < 0 || (uint32_t)t >= w->h.vocab_size)
                return bp_fail(err, "%s: token id %d outside the vocab of %" PRIu32, w->af.path, t,
                               w->h.vocab_size);
            if (tb == 2) {
                uint16_t v = (uint16_t)t;
                memcpy(w->buf + 2 * j, &v, 2);
            } else {
                memcpy(w->buf + 4 * j, &t, 4);
            }
        }
        w->tokens_crc = bp_crc32(w->tokens_crc, w->buf, k * tb);
        if (write_bytes(w, w->buf, k * tb, err)) return -1;
        i += k;
    }
    w->h.n_tokens += n;
    return 0;
}

int shard_writer_end_document(ShardWriter *w, BpError *err) {
    if (w->h.n_sentences == w->doc_first_sentence) return 0;
    if (grow_u64(&w->docs, &w->docs_cap, w->h.n_documents + 1, "document", err)) return -1;
    w->docs[w->h.n_documents++] = w->doc_first_sentence;
    w->doc_first_sentence = w->h.n_sentences;
    return 0;
}

size_t shard_writer_num_tokens(const ShardWriter *w) { return (size_t)w->h.n_tokens; }
size_t shard_writer_num_sentences(const ShardWriter *w) { return (size_t)w->h.n_sentences; }
size_t shard_writer_num_documents(const ShardWriter *w) { return (size_t)w->h.n_documents; }

int shard_writer_commit(ShardWriter *w, BpError *err) {
    if (w->committed) return bp_fail(err, "%s: shard already committed", w->af.path);
    if (shard_writer_end_document(w, err)) return -1;
    ShardHeader *h = &w->h;
    /* sentinels: the end of the last sentence and of the last document */
    if (grow_u64(&w->sents, &w->sents_cap, h->n_sentences + 1, "sentence", err) ||
        grow_u64(&w->docs, &w->docs_cap, h->n_documents + 1, "document", err))
        return -1;
    w->sents[h->n_sentences] = h->n_tokens;
    w->docs[h->n_documents] = h->n_sentences;
    size_t sent_bytes = (h->n_sentences + 1) * 8, doc_bytes = (h->n_documents + 1) * 8;
    uint64_t pos = h->tokens_offset + h->n_tokens * h->token_bytes;
    if (write_padding(w, &pos, err)) return -1;
    h->sents_offset = pos;
    if (write_bytes(w, w->sents, sent_bytes, err)) return -1;
    pos += sent_bytes;
    if (write_padding(w, &pos, err)) return -1;
    h->docs_offset = pos;
    if (write_bytes(w, w->docs, doc_bytes, err)) return -1;
    pos += doc_bytes;
    h->file_bytes = pos;
    h->tokens_crc = w->tokens_crc;
    h->sents_crc = bp_crc32(0, w->sents, sent_bytes);
    h->docs_crc = bp_crc32(0, w->docs, doc_bytes);
    h->header_crc = header_crc(h);
    if (fseek(w->af.fp, 0, SEEK_SET) != 0)
        return bp_fail(err, "%s: seek failed: %s", w->af.tmp_path, strerror(errno));
    if (write_bytes(w, h, sizeof *h, err)) return -1;
    if (bp_atomic_commit(&w->af, err)) return -1;
    w->committed = true;
    return 0;
}

void shard_writer_free(ShardWriter *w) {
    if (!w) return;
    if (!w->committed) bp_atomic_abort(&w->af);
    free(w->sents);
    free(w->docs);
    free(w);
}
