/* tokenizer.c: BERT's BasicTokenizer + WordPiece (see tokenizer.h), and the vocab builder.
 *
 * The rules are those of Google's tokenization.py, step for step, so that a vocab trained there
 * gives the same ids here:
 *   decode UTF-8 (invalid bytes dropped) -> _clean_text (drop NUL, U+FFFD, Cc/Cf; whitespace to
 *   ' ') -> _tokenize_chinese_chars -> split on whitespace -> per token: lower() (with Python's
 *   final-sigma rule), NFD, drop Mn (uncased only) -> split off each punctuation character ->
 *   WordPiece (greedy longest match, "##" continuations, [UNK] past 100 characters).
 * The Unicode data comes from Python's unicodedata (unicode_tables.c), the data those rules were
 * written against. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "unicode_tables.h"

#define TOK_MAX_INPUT_CHARS 100 /* tokenization.py's max_input_chars_per_word */

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

static size_t utf8_encode(uint32_t cp, char *out) {
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

/* Emits norm[from, to) as one word. */
static int emit_word(BasicScratch *s, const uint32_t *cps, size_t count, const WordSink *sink,
                     BpError *err) {
    if (count == 0) return 0;
    if (count * 4 + 1 > s->cap_word) {
        size_t cap = s->cap_word ? s->cap_word : 256;
        while (cap < count * 4 + 1) cap *= 2;
        char *nb = realloc(s->word, cap);
        if (!nb) return bp_fail(err, "tokenizer: out of memory (a word of %zu characters)", count);
        s->word = nb;
        s->cap_word = cap;
    }
    size_t nb = 0;
    for (size_t i = 0; i < count; i++) nb += utf8_encode(cps[i], s->word + nb);
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

/* ------------------------------------------------------------------------------------------ */
/* Vocab builder                                                                               */

int vocab_build(const char *const *inputs, int n_inputs, int size, bool lowercase,
                const char *out_path, BpError *err) {
    (void)inputs;
    (void)n_inputs;
    (void)size;
    (void)lowercase;
    return bp_fail(err, "%s: the vocab builder is not built yet", out_path);
}
