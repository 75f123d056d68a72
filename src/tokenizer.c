/* tokenizer.c: BERT's BasicTokenizer + WordPiece (see tokenizer.h), and the vocab builder.
 *
 * The rules are those of Google's tokenization.py, step for step, so that a vocab trained there
 * gives the same ids here:
 *   decode UTF-8 (invalid bytes dropped) -> _clean_text (drop NUL, U+FFFD, Cc/Cf; whitespace to
 *   ' ') -> _tokenize_chinese_chars -> split on whitespace -> per token: lower() (with Python's
 *   final-sigma rule), NFD, drop Mn (uncased only) -> split off each punctuation character ->
 *   WordPiece (greedy longest match, "##" continuations, [UNK] past 200 characters).
 * The Unicode data comes from Python's unicodedata (unicode_tables.c), the data those rules were
 * written against. */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "rng.h"
#include "textfile.h"
#include "unicode_tables.h"

#define VOCAB_SAMPLE_SEED 0x766f636162ULL /* fixed: the same sample on every run */
#define TOK_MAX_INPUT_CHARS 200 /* tokenization.py's WordpieceTokenizer max_input_chars_per_word */

/* ------------------------------------------------------------------------------------------ */
/* Unicode look-ups                                                                            */

static const UcRange *uc_find(uint32_t cp) {
    size_t lo = 0, hi = uc_n_ranges; /* the last range with start <= cp */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (uc_ranges[mid].start <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return &uc_ranges[lo];
}

static inline int uc_class(uint32_t cp) { return cp < 128 ? uc_ascii_cls[cp] : uc_find(cp)->cls; }

static inline int uc_ccc(uint32_t cp) { return cp < 0x300 ? 0 : uc_find(cp)->ccc; }

static uint32_t uc_simple_lower(uint32_t cp) {
    if (cp < 128) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    size_t lo = 0, hi = uc_n_lower;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (uc_lower[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < uc_n_lower && uc_lower[lo].cp == cp) ? uc_lower[lo].lower : cp;
}

static const UcDecomp *uc_find_decomp(uint32_t cp) {
    if (cp < 0xC0) return NULL; /* nothing below U+00C0 decomposes */
    size_t lo = 0, hi = uc_n_decomp;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (uc_decomp[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < uc_n_decomp && uc_decomp[lo].cp == cp) ? &uc_decomp[lo] : NULL;
}

/* tokenization.py's _is_chinese_char: the CJK Unified Ideographs blocks (not all of CJK: Hangul,
 * kana and CJK punctuation are handled like any other letters or punctuation). */
static inline bool is_cjk(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* Decodes one code point from s[0..n) (n >= 1), strictly as Python's UTF-8 decoder does: no
 * overlong forms, no surrogates, nothing past U+10FFFF. Returns the bytes consumed; an invalid
 * byte yields U+FFFD and consumes only itself, so the next valid character is never swallowed. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    uint32_t v;
    unsigned lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *cp = 0xFFFD;
        return 1;
    }
    if (n < need + 1) {
        *cp = 0xFFFD;
        return 1;
    }
    for (size_t i = 1; i <= need; i++) {
        unsigned b = s[i];
        if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) {
            *cp = 0xFFFD;
            return 1;
        }
        v = (v << 6) | (b & 0x3F);
    }
    *cp = v;
    return need + 1;
}

size_t tokenizer_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t tokenizer_utf8_invalid(const char *text, size_t len, size_t *first_bad) {
    const unsigned char *p = (const unsigned char *)text;
    size_t bad = 0;
    for (size_t i = 0; i < len;) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = utf8_decode(p + i, len - i, &cp);
        if (k == 1) { /* only an invalid byte decodes as one byte >= 0x80 */
            if (bad++ == 0 && first_bad) *first_bad = i;
        }
        i += k;
    }
    return bad;
}

/* ------------------------------------------------------------------------------------------ */
/* BasicTokenizer                                                                              */

typedef struct {
    uint32_t *raw; /* the current whitespace-separated token, as cleaned code points */
    size_t n_raw, cap_raw;
    uint32_t *norm; /* after lower-casing and NFD */
    size_t n_norm, cap_norm;
    char *word; /* one output word in UTF-8 */
    size_t cap_word;
} BasicScratch;

static int grow_u32(uint32_t **buf, size_t *cap, size_t need, BpError *err) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need) cap2 *= 2;
    uint32_t *nb = realloc(*buf, cap2 * sizeof *nb);
    if (!nb) return bp_fail(err, "tokenizer: out of memory (a word of %zu characters)", need);
    *buf = nb;
    *cap = cap2;
    return 0;
}

static void scratch_free(BasicScratch *s) {
    free(s->raw);
    free(s->norm);
    free(s->word);
}

/* Python's str.lower() of U+03A3 at raw[i]: final sigma when a cased letter precedes it
 * (skipping case-ignorable ones) and none follows. */
static uint32_t lower_sigma(const uint32_t *raw, size_t n, size_t i) {
    size_t j = i;
    uint8_t flags = 0;
    while (j > 0) {
        flags = uc_find(raw[--j])->flags;
        if (!(flags & UC_CASE_IGNORABLE)) break;
        flags = 0;
    }
    if (!(flags & UC_CASED)) return 0x3C3;
    for (j = i + 1; j < n; j++) {
        flags = uc_find(raw[j])->flags;
        if (!(flags & UC_CASE_IGNORABLE)) return (flags & UC_CASED) ? 0x3C3 : 0x3C2;
    }
    return 0x3C2;
}

/* Appends the full canonical decomposition of cp to s->norm. */
static int nfd_append(BasicScratch *s, uint32_t cp, BpError *err) {
    if (grow_u32(&s->norm, &s->cap_norm, s->n_norm + 4, err)) return -1;
    if (cp >= 0xAC00 && cp <= 0xD7A3) { /* Hangul syllable: L V (T), Unicode ch. 3.12 */
        uint32_t si = cp - 0xAC00;
        s->norm[s->n_norm++] = 0x1100 + si / 588;
        s->norm[s->n_norm++] = 0x1161 + (si % 588) / 28;
        if (si % 28) s->norm[s->n_norm++] = 0x11A7 + si % 28;
        return 0;
    }
    const UcDecomp *d = uc_find_decomp(cp);
    if (!d) {
        s->norm[s->n_norm++] = cp;
        return 0;
    }
    for (int k = 0; k < d->len; k++) s->norm[s->n_norm++] = uc_decomp_pool[d->off + k];
    return 0;
}

/* Canonical ordering (the last step of NFD): a stable sort by combining class of every run of
 * characters whose class is not 0. Runs are a few marks long, so insertion sort. */
static void canonical_order(uint32_t *v, size_t n) {
    for (size_t i = 1; i < n; i++) {
        int ci = uc_ccc(v[i]);
        if (ci == 0) continue;
        uint32_t x = v[i];
        size_t j = i;
        while (j > 0) {
            int cj = uc_ccc(v[j - 1]);
            if (cj == 0 || cj <= ci) break;
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

typedef struct {
    TokenizerWordFn fn;
    void *ctx;
} WordSink;

/* Hands cps[0, count) to the sink as one UTF-8 word. */
static int emit_word(BasicScratch *s, const uint32_t *cps, size_t count, const WordSink *sink,
                     BpError *err) {
    if (count == 0) return 0;
    if (count * 4 + 1 > s->cap_word) {
        size_t cap = s->cap_word ? s->cap_word : 256;
        while (cap < count * 4 + 1) cap *= 2;
        char *grown = realloc(s->word, cap);
        if (!grown) return bp_fail(err, "tokenizer: out of memory (a word of %zu characters)", count);
        s->word = grown;
        s->cap_word = cap;
    }
    size_t nb = 0;
    for (size_t i = 0; i < count; i++) nb += tokenizer_utf8_encode(cps[i], s->word + nb);
    s->word[nb] = '\0';
    return sink->fn(sink->ctx, s->word, nb, count);
}

/* Finishes one whitespace-separated token: lower-case + NFD + strip Mn when asked, then split
 * off punctuation (tokenization.py's _run_strip_accents and _run_split_on_punc). */
static int finish_token(BasicScratch *s, bool lowercase, const WordSink *sink, BpError *err) {
    size_t n = s->n_raw;
    if (n == 0) return 0;
    s->n_raw = 0;
    const uint32_t *cps = s->raw;
    if (lowercase) {
        bool ascii = true;
        for (size_t i = 0; i < n && ascii; i++) ascii = s->raw[i] < 128;
        if (ascii) {
            for (size_t i = 0; i < n; i++) s->raw[i] = uc_simple_lower(s->raw[i]);
        } else {
            s->n_norm = 0;
            for (size_t i = 0; i < n; i++) {
                uint32_t cp = s->raw[i];
                int rc;
                if (cp == 0x130) { /* the one multi-character lower-case: i + combining dot */
                    rc = nfd_append(s, 'i', err) || nfd_append(s, 0x307, err);
                } else if (cp == 0x3A3) {
                    rc = nfd_append(s, lower_sigma(s->raw, n, i), err);
                } else {
                    rc = nfd_append(s, uc_simple_lower(cp), err);
                }
                if (rc) return -1;
            }
            canonical_order(s->norm, s->n_norm);
            size_t m = 0;
            for (size_t i = 0; i < s->n_norm; i++)
                if (uc_class(s->norm[i]) != UC_MN) s->norm[m++] = s->norm[i];
            n = m;
            cps = s->norm;
        }
    }
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        int cls = uc_class(cps[i]);
        if (cls == UC_PUNCT || cls == UC_SPACE) {
            if (emit_word(s, cps + start, i - start, sink, err)) return -1;
            if (cls == UC_PUNCT && emit_word(s, cps + i, 1, sink, err)) return -1;
            start = i + 1;
        }
    }
    return emit_word(s, cps + start, n - start, sink, err);
}

static int basic_run(const char *text, size_t len, bool lowercase, const WordSink *sink,
                     BasicScratch *s, BpError *err) {
    const unsigned char *p = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        i += utf8_decode(p + i, len - i, &cp);
        int cls = uc_class(cp);
        if (cls == UC_DROP) continue;
        if (cls == UC_SPACE) {
            if (finish_token(s, lowercase, sink, err)) return -1;
            continue;
        }
        if (is_cjk(cp)) { /* " c ": a token of its own */
            if (finish_token(s, lowercase, sink, err)) return -1;
            s->raw[s->n_raw++] = cp; /* finish_token left room: cap_raw >= 64 */
            if (finish_token(s, lowercase, sink, err)) return -1;
            continue;
        }
        if (grow_u32(&s->raw, &s->cap_raw, s->n_raw + 1, err)) return -1;
        s->raw[s->n_raw++] = cp;
    }
    return finish_token(s, lowercase, sink, err);
}

int tokenizer_basic(const char *text, size_t len, bool lowercase, TokenizerWordFn fn, void *ctx,
                    BpError *err) {
    BasicScratch s = {0};
    WordSink sink = {fn, ctx};
    int rc = grow_u32(&s.raw, &s.cap_raw, 64, err);
    if (rc == 0) rc = basic_run(text, len, lowercase, &sink, &s, err);
    scratch_free(&s);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Vocab                                                                                       */

typedef struct {
    uint32_t hash; /* low bits of the 64-bit hash, to skip most string compares */
    int32_t id;    /* -1: empty */
} VocabSlot;

struct Tokenizer {
    char *buf;         /* the vocab file; tokens are NUL-terminated in place */
    char **tokens;     /* id -> token */
    uint32_t *lens;    /* id -> byte length */
    int n;
    VocabSlot *slots;  /* open addressing, linear probing */
    size_t mask;
    size_t max_init;   /* longest word-initial token, bytes */
    size_t max_cont;   /* longest continuation token without its "##", bytes */
    bool lowercase;
    uint32_t crc;
    SpecialIds sp;
};

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static inline uint64_t fnv_bytes(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * FNV_PRIME;
    return h;
}

/* The hash of "##": continuation look-ups start from it instead of building "##" + piece. */
static inline uint64_t fnv_hashhash(void) { return fnv_bytes(FNV_OFFSET, "##", 2); }

/* Id of the token (cont ? "##" : "") + s[0..n), or -1. */
static int vocab_find(const Tokenizer *t, const char *s, size_t n, bool cont) {
    uint64_t h = fnv_bytes(cont ? fnv_hashhash() : FNV_OFFSET, s, n);
    size_t full = n + (cont ? 2 : 0);
    for (size_t i = (size_t)h & t->mask;; i = (i + 1) & t->mask) {
        const VocabSlot *slot = &t->slots[i];
        if (slot->id < 0) return -1;
        if (slot->hash != (uint32_t)h || t->lens[slot->id] != full) continue;
        const char *tok = t->tokens[slot->id];
        if (cont && (tok[0] != '#' || tok[1] != '#')) continue;
        if (memcmp(tok + (cont ? 2 : 0), s, n) == 0) return slot->id;
    }
}

void tokenizer_free(Tokenizer *tok) {
    if (!tok) return;
    free(tok->buf);
    free(tok->tokens);
    free(tok->lens);
    free(tok->slots);
    free(tok);
}

static bool is_ascii_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

Tokenizer *tokenizer_load(const char *vocab_path, bool lowercase, BpError *err) {
    Tokenizer *t = bp_calloc(1, sizeof *t, "tokenizer", err);
    if (!t) return NULL;
    t->lowercase = lowercase;
    size_t len = 0;
    t->buf = bp_read_file(vocab_path, &len, err);
    if (!t->buf) goto fail;
    t->crc = bp_crc32(0, t->buf, len);
    char *p = t->buf, *end = t->buf + len;
    if (len >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3; /* a UTF-8 byte-order mark */
    size_t n_lines = 0;
    for (char *q = p; q < end; q++) n_lines += *q == '\n';
    n_lines++;
    if (n_lines > (size_t)INT32_MAX / 2) {
        bp_fail(err, "%s: too many lines for a vocab (%zu)", vocab_path, n_lines);
        goto fail;
    }
    t->tokens = bp_malloc(n_lines * sizeof *t->tokens, "vocab tokens", err);
    t->lens = bp_malloc(n_lines * sizeof *t->lens, "vocab lengths", err);
    if (!t->tokens || !t->lens) goto fail;
    size_t cap = 16;
    while (cap < 2 * n_lines) cap *= 2;
    t->slots = bp_malloc(cap * sizeof *t->slots, "vocab hash table", err);
    if (!t->slots) goto fail;
    for (size_t i = 0; i < cap; i++) t->slots[i].id = -1;
    t->mask = cap - 1;

    size_t line = 0;
    while (p < end) {
        line++;
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line_end = nl ? nl : end;
        char *a = p, *b = line_end;
        /* load_vocab in tokenization.py strips each line; CRLF files end in '\r' */
        while (a < b && is_ascii_space(*a)) a++;
        while (b > a && is_ascii_space(b[-1])) b--;
        p = nl ? nl + 1 : end;
        if (a == b) {
            bp_fail(err, "%s:%zu: empty line; a vocab has one token per line (id = line - 1)",
                    vocab_path, line);
            goto fail;
        }
        *b = '\0';
        size_t n = (size_t)(b - a);
        /* a token is a C string everywhere after this (tokenizer_token, tokenizer_id) */
        if (memchr(a, '\0', n)) {
            bp_fail(err, "%s:%zu: NUL byte in a token (not a vocab text file?)", vocab_path, line);
            goto fail;
        }
        bool cont = n >= 2 && a[0] == '#' && a[1] == '#';
        if (vocab_find(t, a, n, false) >= 0) {
            int first = vocab_find(t, a, n, false);
            bp_fail(err, "%s:%zu: duplicate token '%s' (first on line %d)", vocab_path, line, a,
                    first + 1);
            goto fail;
        }
        int id = t->n++;
        t->tokens[id] = a;
        t->lens[id] = (uint32_t)n;
        uint64_t h = fnv_bytes(FNV_OFFSET, a, n);
        size_t i = (size_t)h & t->mask;
        while (t->slots[i].id >= 0) i = (i + 1) & t->mask;
        t->slots[i].hash = (uint32_t)h;
        t->slots[i].id = id;
        if (cont && n - 2 > t->max_cont) t->max_cont = n - 2;
        if (!cont && n > t->max_init) t->max_init = n;
    }
    if (t->n == 0) {
        bp_fail(err, "%s: empty vocab file", vocab_path);
        goto fail;
    }
    static const char *const names[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    int *ids[5] = {&t->sp.pad, &t->sp.unk, &t->sp.cls, &t->sp.sep, &t->sp.mask};
    for (int k = 0; k < 5; k++) {
        *ids[k] = tokenizer_id(t, names[k]);
        if (*ids[k] < 0) {
            bp_fail(err,
                    "%s: the vocab has no %s token (%d lines); a BERT vocab must contain [PAD], "
                    "[UNK], [CLS], [SEP] and [MASK]",
                    vocab_path, names[k], t->n);
            goto fail;
        }
    }
    return t;
fail:
    tokenizer_free(t);
    return NULL;
}

int tokenizer_vocab_size(const Tokenizer *tok) { return tok->n; }

int tokenizer_id(const Tokenizer *tok, const char *token) {
    return vocab_find(tok, token, strlen(token), false);
}

const char *tokenizer_token(const Tokenizer *tok, int id) {
    return (id >= 0 && id < tok->n) ? tok->tokens[id] : NULL;
}

bool tokenizer_is_continuation(const Tokenizer *tok, int id) {
    return id >= 0 && id < tok->n && tok->tokens[id][0] == '#' && tok->tokens[id][1] == '#';
}

uint32_t tokenizer_vocab_crc(const Tokenizer *tok) { return tok->crc; }

SpecialIds tokenizer_specials(const Tokenizer *tok) { return tok->sp; }

bool tokenizer_lowercase(const Tokenizer *tok) { return tok->lowercase; }

/* ------------------------------------------------------------------------------------------ */
/* WordPiece                                                                                   */

typedef struct {
    const Tokenizer *tok;
    int32_t **ids;
    size_t *n, *cap;
    BpError *err;
} EncodeCtx;

static int push_id(EncodeCtx *c, int32_t id) {
    if (*c->n == *c->cap) {
        size_t cap = *c->cap ? *c->cap * 2 : 256;
        int32_t *nb = realloc(*c->ids, cap * sizeof *nb);
        if (!nb) return bp_fail(c->err, "tokenizer: out of memory (%zu token ids)", cap);
        *c->ids = nb;
        *c->cap = cap;
    }
    (*c->ids)[(*c->n)++] = id;
    return 0;
}

/* Greedy longest-match-first: at each position the longest vocab entry ("##"-prefixed after the
 * first piece) that matches; a word with a position where nothing matches is one [UNK]. */
static int wordpiece_word(void *ctx, const char *w, size_t nb, size_t nchars) {
    EncodeCtx *c = ctx;
    const Tokenizer *t = c->tok;
    if (nchars > TOK_MAX_INPUT_CHARS) return push_id(c, t->sp.unk);
    size_t first = *c->n, start = 0;
    while (start < nb) {
        bool cont = start > 0;
        size_t limit = cont ? t->max_cont : t->max_init;
        size_t end = nb - start > limit ? start + limit : nb;
        while (end < nb && ((unsigned char)w[end] & 0xC0) == 0x80) end--; /* a char boundary */
        int id = -1;
        while (end > start) {
            id = vocab_find(t, w + start, end - start, cont);
            if (id >= 0) break;
            do end--;
            while (end > start && ((unsigned char)w[end] & 0xC0) == 0x80);
        }
        if (id < 0) {
            *c->n = first;
            return push_id(c, t->sp.unk);
        }
        if (push_id(c, id)) return -1;
        start = end;
    }
    return 0;
}

int tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n,
                     size_t *cap, BpError *err) {
    EncodeCtx c = {tok, ids, n, cap, err};
    return tokenizer_basic(text, len, tok->lowercase, wordpiece_word, &c, err);
}

/* one id as decimal digits, without printf's format parsing (the stream loop writes millions) */
static void put_id(uint32_t v, FILE *out) {
    char num[16];
    int k = 0;
    do num[k++] = (char)('0' + v % 10);
    while (v /= 10);
    while (k) putc(num[--k], out);
}

int tokenizer_encode_stream(const Tokenizer *tok, FILE *in, FILE *out, bool pieces,
                            TokenizeStreamCounts *counts, BpError *err) {
    memset(counts, 0, sizeof *counts);
    char *line = NULL;
    size_t line_cap = 0, n = 0, cap = 0;
    int32_t *ids = NULL;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &line_cap, in)) >= 0) {
        n = 0;
        size_t first, bad = tokenizer_utf8_invalid(line, (size_t)len, &first);
        if (bad && counts->bad_lines++ == 0) counts->first_bad_line = counts->lines + 1;
        counts->bad_bytes += bad;
        if (tokenizer_encode(tok, line, (size_t)len, &ids, &n, &cap, err)) {
            rc = -1;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (i) putc(' ', out);
            if (pieces) fputs(tok->tokens[ids[i]], out);
            else put_id((uint32_t)ids[i], out);
            counts->unk += ids[i] == tok->sp.unk;
        }
        putc('\n', out);
        counts->lines++;
        counts->tokens += n;
    }
    if (rc == 0 && ferror(in)) rc = bp_fail_kind(err, BP_ERR_IO, "error reading the input text");
    if (fflush(out) != 0 || ferror(out))
        rc = rc ? rc : bp_fail_kind(err, BP_ERR_IO, "error writing the tokens");
    free(line);
    free(ids);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Vocab builder                                                                               */
/*
 * Merge criterion: pair frequency (BPE), as in Hugging Face's WordPieceTrainer (which runs its BPE
 * trainer with the "##" continuation prefix) rather than the likelihood score
 * count(ab) / (count(a) * count(b)) of Schuster & Nakajima. Frequency spends the budget on pieces
 * that cover the most text; the score favours pairs of rare symbols that only occur together, so
 * it first memorises rare words. Frequency counts also change only where a merge happened, which
 * keeps the update local and the trainer fast.
 *
 * Steps: (1) the BasicTokenizer splits the text into words (lower-cased when the vocab is uncased),
 * counted in a hash map; (2) each distinct word becomes a sequence of symbols, its first character
 * as "c" and the others as "##c"; the alphabet is every character (as "c", and as "##c" when seen
 * inside a word), so every training word tokenizes without [UNK]; (3) repeatedly the most frequent
 * adjacent pair (weighted by word counts) is merged, ties broken by the pair's strings, until the
 * vocab has `size` entries or no pair occurs min_count times. Pair counts are updated only in the
 * words that contain the merged pair (an index pair -> words), and a lazy max-heap finds the next
 * pair: an entry whose count is stale is re-pushed with the current count when it surfaces.
 */

typedef struct { /* interned strings: words, then symbols */
    char *arena;
    size_t arena_n, arena_cap;
    size_t *off;
    uint32_t *len;
    uint64_t *hash;
    size_t n, cap;
    int32_t *slots; /* -1 empty */
    size_t mask;
} StrTable;

static void strtab_free(StrTable *t) {
    free(t->arena);
    free(t->off);
    free(t->len);
    free(t->hash);
    free(t->slots);
}

static inline const char *strtab_str(const StrTable *t, int32_t i) { return t->arena + t->off[i]; }

static int strtab_rehash(StrTable *t, size_t cap, BpError *err) {
    int32_t *slots = bp_malloc(cap * sizeof *slots, "vocab builder hash table", err);
    if (!slots) return -1;
    for (size_t i = 0; i < cap; i++) slots[i] = -1;
    for (size_t k = 0; k < t->n; k++) {
        size_t i = (size_t)t->hash[k] & (cap - 1);
        while (slots[i] >= 0) i = (i + 1) & (cap - 1);
        slots[i] = (int32_t)k;
    }
    free(t->slots);
    t->slots = slots;
    t->mask = cap - 1;
    return 0;
}

/* Index of (prefix + s[0..n)), created when absent (*created set); -1 on allocation failure. */
static int32_t strtab_intern(StrTable *t, const char *prefix, const char *s, size_t n, bool *created,
                             BpError *err) {
    size_t np = strlen(prefix);
    uint64_t h = fnv_bytes(fnv_bytes(FNV_OFFSET, prefix, np), s, n);
    *created = false;
    if (t->slots) {
        for (size_t i = (size_t)h & t->mask;; i = (i + 1) & t->mask) {
            int32_t k = t->slots[i];
            if (k < 0) break;
            const char *e = strtab_str(t, k);
            if (t->hash[k] == h && t->len[k] == np + n && !memcmp(e, prefix, np) &&
                !memcmp(e + np, s, n))
                return k;
        }
    }
    if (t->n >= INT32_MAX - 1) return bp_fail(err, "vocab builder: more than 2^31 distinct words");
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        size_t *off = realloc(t->off, cap * sizeof *off);
        if (off) t->off = off;
        uint32_t *len = realloc(t->len, cap * sizeof *len);
        if (len) t->len = len;
        uint64_t *hash = realloc(t->hash, cap * sizeof *hash);
        if (hash) t->hash = hash;
        if (!off || !len || !hash) return bp_fail(err, "vocab builder: out of memory (%zu words)", cap);
        t->cap = cap;
    }
    if (2 * (t->n + 1) > t->mask + 1 || !t->slots) {
        if (strtab_rehash(t, t->slots ? 2 * (t->mask + 1) : 2048, err)) return -1;
    }
    if (t->arena_n + np + n + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
        while (cap < t->arena_n + np + n + 1) cap *= 2;
        char *a = realloc(t->arena, cap);
        if (!a) return bp_fail(err, "vocab builder: out of memory (%zu bytes of words)", cap);
        t->arena = a;
        t->arena_cap = cap;
    }
    int32_t k = (int32_t)t->n++;
    t->off[k] = t->arena_n;
    memcpy(t->arena + t->arena_n, prefix, np);
    memcpy(t->arena + t->arena_n + np, s, n);
    t->arena_n += np + n;
    t->arena[t->arena_n++] = '\0';
    t->len[k] = (uint32_t)(np + n);
    t->hash[k] = h;
    size_t i = (size_t)h & t->mask;
    while (t->slots[i] >= 0) i = (i + 1) & t->mask;
    t->slots[i] = k;
    *created = true;
    return k;
}

typedef struct {
    StrTable words;
    uint64_t *counts; /* per distinct word */
    size_t counts_cap;
    uint64_t n_words, n_long;
    BpError *err;
} WordCounter;

static int count_word(void *ctx, const char *word, size_t nbytes, size_t nchars) {
    WordCounter *wc = ctx;
    if (nchars > TOK_MAX_INPUT_CHARS) { /* [UNK] whatever the vocab: nothing to learn */
        wc->n_long++;
        return 0;
    }
    bool created;
    int32_t k = strtab_intern(&wc->words, "", word, nbytes, &created, wc->err);
    if (k < 0) return -1;
    if ((size_t)k >= wc->counts_cap) {
        size_t cap = wc->words.cap;
        uint64_t *c = realloc(wc->counts, cap * sizeof *c);
        if (!c) return bp_fail(wc->err, "vocab builder: out of memory (%zu words)", cap);
        wc->counts = c;
        wc->counts_cap = cap;
    }
    if (created) wc->counts[k] = 0;
    wc->counts[k]++;
    wc->n_words++;
    return 0;
}

typedef struct {
    WordCounter *wc;
    bool lowercase;
    BpError *err;
} SentenceWords;

static int count_sentence(void *ctx, const char *s, size_t n) {
    SentenceWords *sw = ctx;
    return tokenizer_basic(s, n, sw->lowercase, count_word, sw->wc, sw->err);
}

/* Counts the words of one input file, read line by line by the reader prepare uses; `keep` is the
 * share of lines to sample (1: all), file_index seeds which. */
static int count_file(WordCounter *wc, const char *path, int file_index, double keep, const VocabBuildOptions *opt,
                      BpError *err) {
    TextFile *tf = textfile_open(path, err);
    if (!tf) return -1;
    uint64_t words_before = wc->n_words;
    size_t sampled = 0, bad = 0, first_bad = 0, jcap = 0;
    char *line, *jbuf = NULL;
    const char *why, *first_why = NULL;
    size_t len;
    int got;
    SentenceWords sw = {wc, opt->lowercase, err};
    while ((got = textfile_next(tf, &line, &len, err)) > 0) {
        size_t no = textfile_stats(tf)->lines;
        if (keep < 1 && rng_u01d(rng_hash(VOCAB_SAMPLE_SEED, (uint64_t)file_index, no, 0)) >= keep) continue;
        sampled++;
        TextLineKind k = text_line_units((TextFormat)opt->format, opt->jsonl_field ? opt->jsonl_field : "text",
                                         line, len, &jbuf, &jcap, count_sentence, &sw, &why);
        if (k == TEXT_LINE_BAD && bad++ == 0) {
            first_bad = no;
            first_why = why;
        } else if (k == TEXT_LINE_FAILED) {
            if (why) bp_fail(err, "%s", why);
            bp_err_prefix(err, "%s:%zu", path, no);
            got = -1;
            break;
        }
    }
    free(jbuf);
    const TextFileStats *st = textfile_stats(tf);
    if (got == 0 && opt->progress) {
        char note[256];
        if (st->bad_bytes)
            fprintf(opt->progress, "vocab: warning: %s: %s\n", path, textfile_invalid_note(st, note, sizeof note));
        if (bad)
            fprintf(opt->progress, "vocab: warning: %s: %zu bad record(s) skipped, the first at line %zu: %s\n",
                    path, bad, first_bad, first_why);
        fprintf(opt->progress, "vocab: %s: %zu lines", path, st->lines);
        if (keep < 1) fprintf(opt->progress, ", %zu sampled (%.3g%%)", sampled, 100.0 * keep);
        fprintf(opt->progress, ", %llu words\n", (unsigned long long)(wc->n_words - words_before));
    }
    textfile_close(tf);
    return got;
}

typedef struct {
    int32_t a, b;
    int64_t count;
    int32_t *where; /* words that contain (or once contained) the pair; no adjacent repeats */
    uint32_t n_where, cap_where;
    uint32_t epoch; /* the last merge that queued this pair */
} Pair;

typedef struct {
    int64_t count;
    int32_t pair;
} HeapEntry;

typedef struct {
    StrTable syms;
    Pair *pairs;
    size_t n_pairs, cap_pairs;
    int32_t *pslots; /* pair hash table, -1 empty */
    size_t pmask;
    HeapEntry *heap;
    size_t n_heap, cap_heap;
    BpError *err;
} Merger;

static inline uint64_t pair_hash(int32_t a, int32_t b) {
    uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    x ^= x >> 33; /* splitmix-style finaliser: symbol ids are small and dense */
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static int pairs_rehash(Merger *m, size_t cap) {
    int32_t *slots = bp_malloc(cap * sizeof *slots, "vocab builder pair table", m->err);
    if (!slots) return -1;
    for (size_t i = 0; i < cap; i++) slots[i] = -1;
    for (size_t k = 0; k < m->n_pairs; k++) {
        size_t i = (size_t)pair_hash(m->pairs[k].a, m->pairs[k].b) & (cap - 1);
        while (slots[i] >= 0) i = (i + 1) & (cap - 1);
        slots[i] = (int32_t)k;
    }
    free(m->pslots);
    m->pslots = slots;
    m->pmask = cap - 1;
    return 0;
}

/* Index of pair (a, b), created with count 0 when absent; -1 on allocation failure. */
static int32_t pair_get(Merger *m, int32_t a, int32_t b) {
    uint64_t h = pair_hash(a, b);
    size_t i = (size_t)h & m->pmask;
    for (;; i = (i + 1) & m->pmask) {
        int32_t k = m->pslots[i];
        if (k < 0) break;
        if (m->pairs[k].a == a && m->pairs[k].b == b) return k;
    }
    if (m->n_pairs == m->cap_pairs) {
        size_t cap = m->cap_pairs ? m->cap_pairs * 2 : 4096;
        Pair *np = realloc(m->pairs, cap * sizeof *np);
        if (!np) return bp_fail(m->err, "vocab builder: out of memory (%zu pairs)", cap);
        m->pairs = np;
        m->cap_pairs = cap;
    }
    if (2 * (m->n_pairs + 1) > m->pmask + 1) {
        if (pairs_rehash(m, 2 * (m->pmask + 1))) return -1;
        i = (size_t)h & m->pmask;
        while (m->pslots[i] >= 0) i = (i + 1) & m->pmask;
    }
    int32_t k = (int32_t)m->n_pairs++;
    m->pairs[k] = (Pair){.a = a, .b = b};
    m->pslots[i] = k;
    return k;
}

static int pair_add_word(Merger *m, Pair *p, int32_t w) {
    if (p->n_where && p->where[p->n_where - 1] == w) return 0;
    if (p->n_where == p->cap_where) {
        uint32_t cap = p->cap_where ? p->cap_where * 2 : 4;
        int32_t *nw = realloc(p->where, cap * sizeof *nw);
        if (!nw) return bp_fail(m->err, "vocab builder: out of memory (pair index)");
        p->where = nw;
        p->cap_where = cap;
    }
    p->where[p->n_where++] = w;
    return 0;
}

/* Heap order: higher count first, then the pair's strings in byte order (deterministic ties). */
static bool heap_before(const Merger *m, const HeapEntry *x, const HeapEntry *y) {
    if (x->count != y->count) return x->count > y->count;
    const Pair *px = &m->pairs[x->pair], *py = &m->pairs[y->pair];
    int c = strcmp(strtab_str(&m->syms, px->a), strtab_str(&m->syms, py->a));
    if (c == 0) c = strcmp(strtab_str(&m->syms, px->b), strtab_str(&m->syms, py->b));
    return c < 0;
}

static int heap_push(Merger *m, int64_t count, int32_t pair) {
    if (m->n_heap == m->cap_heap) {
        size_t cap = m->cap_heap ? m->cap_heap * 2 : 4096;
        HeapEntry *nh = realloc(m->heap, cap * sizeof *nh);
        if (!nh) return bp_fail(m->err, "vocab builder: out of memory (heap of %zu)", cap);
        m->heap = nh;
        m->cap_heap = cap;
    }
    size_t i = m->n_heap++;
    HeapEntry e = {count, pair};
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_before(m, &e, &m->heap[parent])) break;
        m->heap[i] = m->heap[parent];
        i = parent;
    }
    m->heap[i] = e;
    return 0;
}

static HeapEntry heap_pop(Merger *m) {
    HeapEntry top = m->heap[0], last = m->heap[--m->n_heap];
    size_t i = 0, n = m->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_before(m, &m->heap[c + 1], &m->heap[c])) c++;
        if (!heap_before(m, &m->heap[c], &last)) break;
        m->heap[i] = m->heap[c];
        i = c;
    }
    if (n) m->heap[i] = last;
    return top;
}

static void merger_free(Merger *m) {
    strtab_free(&m->syms);
    for (size_t k = 0; k < m->n_pairs; k++) free(m->pairs[k].where);
    free(m->pairs);
    free(m->pslots);
    free(m->heap);
}

/* Alphabet order: "c" forms before "##c" forms, each in byte (= code point) order. */
static int cmp_alpha(const void *x, const void *y) {
    const char *s = *(const char *const *)x, *t = *(const char *const *)y;
    bool cs = s[0] == '#' && s[1] == '#' && s[2], ct = t[0] == '#' && t[1] == '#' && t[2];
    if (cs != ct) return cs ? 1 : -1;
    return strcmp(s, t);
}

/* The symbol for merging a with b: "x" + "##y" -> "xy", "##x" + "##y" -> "##xy" (the same
 * string can come from different pairs, then it is the same symbol). */
static int32_t merged_symbol(StrTable *syms, int32_t a, int32_t b, BpError *err) {
    size_t la = syms->len[a], lb = syms->len[b] - 2;
    char stack[512];
    char *buf = la + lb <= sizeof stack ? stack : bp_malloc(la + lb, "merged piece", err);
    if (!buf) return -1;
    memcpy(buf, strtab_str(syms, a), la);
    memcpy(buf + la, strtab_str(syms, b) + 2, lb);
    bool created;
    int32_t c = strtab_intern(syms, "", buf, la + lb, &created, err);
    if (buf != stack) free(buf);
    return c;
}

/* The words as symbol sequences: word w is seq[start[w] .. start[w] + len[w]), weighted by
 * counts[w]; queue holds the pairs a merge made to push on the heap again. */
typedef struct {
    int32_t *seq, *start, *len;
    const uint64_t *counts;
    int32_t *queue;
    size_t n_queue, cap_queue;
} MergeWork;

static void merge_work_free(MergeWork *mw) {
    free(mw->seq);
    free(mw->start);
    free(mw->len);
    free(mw->queue);
}

/* (2) each distinct word as symbols, its first character "c", the others "##c"; both forms of a
 * character are interned as it is first seen, so the alphabet gets the low symbol ids. */
static int build_sequences(const WordCounter *wc, Merger *m, MergeWork *mw, BpError *err) {
    size_t n_uniq = wc->words.n, total_chars = 0;
    for (size_t w = 0; w < n_uniq; w++) {
        const unsigned char *s = (const unsigned char *)strtab_str(&wc->words, (int32_t)w);
        for (size_t i = 0; i < wc->words.len[w]; i++) total_chars += (s[i] & 0xC0) != 0x80;
    }
    mw->counts = wc->counts;
    mw->seq = bp_malloc(total_chars * sizeof *mw->seq, "vocab builder symbols", err);
    mw->start = bp_malloc(n_uniq * sizeof *mw->start, "vocab builder words", err);
    mw->len = bp_malloc(n_uniq * sizeof *mw->len, "vocab builder words", err);
    if (!mw->seq || !mw->start || !mw->len) return -1;
    if (total_chars > INT32_MAX) return bp_fail(err, "too much distinct text (%zu characters)", total_chars);
    size_t pos = 0;
    for (size_t w = 0; w < n_uniq; w++) {
        const char *s = strtab_str(&wc->words, (int32_t)w);
        size_t nb = wc->words.len[w];
        mw->start[w] = (int32_t)pos;
        for (size_t i = 0; i < nb;) {
            size_t j = i + 1;
            while (j < nb && ((unsigned char)s[j] & 0xC0) == 0x80) j++;
            bool created;
            int32_t id = strtab_intern(&m->syms, i ? "##" : "", s + i, j - i, &created, err);
            if (id < 0 || (i && strtab_intern(&m->syms, "", s + i, j - i, &created, err) < 0)) return -1;
            mw->seq[pos++] = id;
            i = j;
        }
        mw->len[w] = (int32_t)(pos - (size_t)mw->start[w]);
    }
    return 0;
}

/* The initial pair counts, the pair -> words index, and the heap. */
static int count_pairs(Merger *m, const MergeWork *mw, size_t n_words) {
    if (pairs_rehash(m, 1 << 16)) return -1;
    for (size_t w = 0; w < n_words; w++) {
        const int32_t *s = mw->seq + mw->start[w];
        for (int32_t i = 0; i + 1 < mw->len[w]; i++) {
            int32_t p = pair_get(m, s[i], s[i + 1]);
            if (p < 0 || pair_add_word(m, &m->pairs[p], (int32_t)w)) return -1;
            m->pairs[p].count += (int64_t)mw->counts[w];
        }
    }
    for (size_t p = 0; p < m->n_pairs; p++)
        if (heap_push(m, m->pairs[p].count, (int32_t)p)) return -1;
    return 0;
}

static int queue_pair(MergeWork *mw, int32_t p, BpError *err) {
    if (mw->n_queue == mw->cap_queue) {
        size_t qc = mw->cap_queue ? 2 * mw->cap_queue : 1024;
        int32_t *nq = realloc(mw->queue, qc * sizeof *nq);
        if (!nq) return bp_fail(err, "vocab builder: out of memory (merge queue)");
        mw->queue = nq;
        mw->cap_queue = qc;
    }
    mw->queue[mw->n_queue++] = p;
    return 0;
}

/* a b -> c in word w (when it still has the pair): retract the word's old pairs, rewrite it, add
 * its new pairs. Only pairs with c can grow, so only they are queued again (once per merge). */
static int merge_in_word(Merger *m, MergeWork *mw, int32_t w, int32_t a, int32_t b, int32_t c, uint32_t epoch,
                         BpError *err) {
    int32_t *s = mw->seq + mw->start[w], n = mw->len[w];
    bool has = false;
    for (int32_t i = 0; i + 1 < n && !has; i++) has = s[i] == a && s[i + 1] == b;
    if (!has) return 0; /* merged away by an earlier merge */
    int64_t cnt = (int64_t)mw->counts[w];
    for (int32_t i = 0; i + 1 < n; i++) {
        int32_t p = pair_get(m, s[i], s[i + 1]);
        if (p < 0) return -1;
        m->pairs[p].count -= cnt;
    }
    int32_t o = 0;
    for (int32_t i = 0; i < n; i++) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            s[o++] = c;
            i++;
        } else {
            s[o++] = s[i];
        }
    }
    mw->len[w] = n = o;
    for (int32_t i = 0; i + 1 < n; i++) {
        int32_t p = pair_get(m, s[i], s[i + 1]);
        if (p < 0) return -1;
        Pair *q = &m->pairs[p];
        q->count += cnt;
        if (s[i] != c && s[i + 1] != c) continue;
        if (pair_add_word(m, q, w)) return -1;
        if (q->epoch != epoch) {
            q->epoch = epoch;
            if (queue_pair(mw, p, err)) return -1;
        }
    }
    return 0;
}

/* Applies the merge of `pair` into symbol c in every word that has it, then re-pushes the pairs
 * whose counts grew. */
static int apply_merge(Merger *m, MergeWork *mw, int32_t pair, int32_t c, uint32_t epoch, BpError *err) {
    int32_t a = m->pairs[pair].a, b = m->pairs[pair].b;
    mw->n_queue = 0;
    uint32_t n_where = m->pairs[pair].n_where;
    for (uint32_t k = 0; k < n_where; k++) /* m->pairs may move as pairs are added: index anew */
        if (merge_in_word(m, mw, m->pairs[pair].where[k], a, b, c, epoch, err)) return -1;
    Pair *done_pair = &m->pairs[pair]; /* its count is now 0: drop its index */
    free(done_pair->where);
    done_pair->where = NULL;
    done_pair->n_where = done_pair->cap_where = 0;
    for (size_t k = 0; k < mw->n_queue; k++) {
        int32_t q = mw->queue[k];
        if (m->pairs[q].count > 0 && heap_push(m, m->pairs[q].count, q)) return -1;
    }
    return 0;
}

/* (3) merges until `target` new pieces or no pair occurs min_count times; order gets the new
 * pieces in merge order. */
static int run_merges(Merger *m, MergeWork *mw, size_t n_alpha, size_t target, int min_count, int32_t *order,
                      size_t *n_merged, int64_t *last_count, BpError *err) {
    uint32_t epoch = 0;
    *n_merged = 0;
    *last_count = 0;
    while (*n_merged < target && m->n_heap > 0) {
        HeapEntry top = heap_pop(m);
        Pair *pp = &m->pairs[top.pair];
        if (top.count != pp->count) { /* stale: its count fell since it was pushed */
            if (pp->count > 0 && heap_push(m, pp->count, top.pair)) return -1;
            continue;
        }
        if (top.count < min_count) break;
        *last_count = top.count;
        int32_t c = merged_symbol(&m->syms, pp->a, pp->b, err);
        if (c < 0) return -1;
        if ((size_t)c == n_alpha + *n_merged) order[(*n_merged)++] = c; /* a new piece, not a string
                                                                           another pair made */
        if (apply_merge(m, mw, top.pair, c, ++epoch, err)) return -1;
    }
    return 0;
}

/* (4) write: specials, characters, ## characters (each in byte order), merges in order */
static int write_vocab(const char *out_path, const StrTable *syms, size_t n_alpha, const int32_t *order,
                       size_t n_merged, BpError *err) {
    static const char *const specials[5] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    const char **alpha = bp_malloc((n_alpha + 1) * sizeof *alpha, "vocab builder alphabet", err);
    if (!alpha) return -1;
    for (size_t k = 0; k < n_alpha; k++) alpha[k] = strtab_str(syms, (int32_t)k);
    qsort(alpha, n_alpha, sizeof *alpha, cmp_alpha);
    AtomicFile af = {0};
    int rc = bp_atomic_open(&af, out_path, err);
    if (rc == 0) {
        for (int k = 0; k < 5; k++) fprintf(af.fp, "%s\n", specials[k]);
        for (size_t k = 0; k < n_alpha; k++) fprintf(af.fp, "%s\n", alpha[k]);
        for (size_t k = 0; k < n_merged; k++) fprintf(af.fp, "%s\n", strtab_str(syms, order[k]));
        rc = bp_atomic_commit(&af, err);
    }
    if (af.fp) bp_atomic_abort(&af);
    free(alpha);
    return rc;
}

/* The share of lines the sample keeps: sample_mb over the inputs' size on disk (1: all). */
static double vocab_sample_share(const char *const *inputs, int n_inputs, double sample_mb) {
    if (sample_mb <= 0) return 1;
    double disk = 0;
    for (int f = 0; f < n_inputs; f++) {
        struct stat st;
        if (stat(inputs[f], &st) == 0) disk += (double)st.st_size;
    }
    double share = sample_mb * 1e6 / disk;
    return disk > 0 && share < 1 ? share : 1;
}

int vocab_build_opts(const char *const *inputs, int n_inputs, const VocabBuildOptions *opt,
                     const char *out_path, BpError *err) {
    double t0 = bp_now();
    if (n_inputs < 1) return bp_fail_usage(err, "no input files");
    if (opt->size < 5 || opt->size > INT32_MAX / 2)
        return bp_fail_usage(err, "size %d is out of range (at least the 5 special tokens)",
                             opt->size);
    if (opt->min_count < 1) return bp_fail_usage(err, "min-count %d must be >= 1", opt->min_count);

    WordCounter wc = {.err = err};
    Merger m = {.err = err};
    MergeWork mw = {0};
    int32_t *order = NULL;
    int rc = -1;
    double keep = vocab_sample_share(inputs, n_inputs, opt->sample_mb);
    for (int f = 0; f < n_inputs; f++) /* (1) */
        if (count_file(&wc, inputs[f], f, keep, opt, err)) goto done;
    size_t n_uniq = wc.words.n;
    if (n_uniq == 0) {
        bp_fail(err, "no words in %s%s (empty input?)", inputs[0], n_inputs > 1 ? " ..." : "");
        goto done;
    }
    if (build_sequences(&wc, &m, &mw, err)) goto done;
    size_t n_alpha = m.syms.n;
    if (5 + n_alpha > (size_t)opt->size) {
        bp_fail_usage(err,
                      "--size %d is too small: the 5 special tokens and the %zu characters "
                      "seen (with their ## forms) need %zu entries; HINT: raise --size",
                      opt->size, n_alpha, 5 + n_alpha);
        goto done;
    }
    if (count_pairs(&m, &mw, n_uniq)) goto done;
    size_t n_merged, target = (size_t)opt->size - 5 - n_alpha;
    int64_t last_count;
    order = bp_malloc((target + 1) * sizeof *order, "vocab builder merges", err);
    if (!order || run_merges(&m, &mw, n_alpha, target, opt->min_count, order, &n_merged, &last_count, err))
        goto done;
    if (write_vocab(out_path, &m.syms, n_alpha, order, n_merged, err)) goto done;
    size_t total = 5 + n_alpha + n_merged;
    if (opt->progress)
        fprintf(opt->progress,
                "vocab: %llu words (%zu distinct, %llu over %d characters skipped) from %d file%s; "
                "%zu characters and ## forms, %zu merges (last pair count %lld); %zu tokens written to "
                "%s in %.2f s\n",
                (unsigned long long)wc.n_words, n_uniq, (unsigned long long)wc.n_long,
                TOK_MAX_INPUT_CHARS, n_inputs, n_inputs > 1 ? "s" : "", n_alpha, n_merged,
                (long long)last_count, total, out_path, bp_now() - t0);
    if (opt->progress && total < (size_t)opt->size)
        fprintf(opt->progress,
                "vocab: note: %zu < --size %d: no more pairs occur at least %d times (--min-count)\n",
                total, opt->size, opt->min_count);
    rc = 0;
done:
    merge_work_free(&mw);
    free(order);
    strtab_free(&wc.words);
    free(wc.counts);
    merger_free(&m);
    return rc;
}
