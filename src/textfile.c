/* textfile.c: the one text-file line reader (see textfile.h). */
#include "textfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "tokenizer.h"

#define TF_READ_CHUNK ((size_t)1 << 20)
#define TF_IN_CHUNK ((size_t)1 << 18)

struct TextFile {
    int fd;       /* -1 once the end was reached and the file closed */
    bool gzip;    /* the file starts with the gzip magic */
    bool zs_live; /* zs holds inflate state (inflateEnd owed) */
    bool member_end; /* a gzip member just ended: another may follow, nothing else may */
    bool in_eof;  /* read() reported the end of the file */
    z_stream zs;
    unsigned char *in; /* compressed bytes read, not yet inflated: zs.next_in, zs.avail_in */
    char *buf;    /* unconsumed text is buf[start, len); buf[scan_from, len) not yet searched */
    size_t cap, start, len, scan_from;
    bool eof;     /* the end of the text */
    bool checked; /* the end-of-file checks passed */
    bool failed;  /* an error was returned: the reader is done */
    size_t text_read; /* text bytes produced */
    TextFileStats st;
    char path[]; /* for messages */
};

static bool named_gz(const char *path) {
    size_t n = strlen(path);
    return n >= 3 && !strcmp(path + n - 3, ".gz");
}

static ssize_t read_some(int fd, void *p, size_t n) {
    ssize_t got;
    do got = read(fd, p, n);
    while (got < 0 && errno == EINTR);
    return got;
}

TextFile *textfile_open(const char *path, BpError *err) {
    /* O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        bp_fail_kind(err, BP_ERR_IO, "%s: cannot open input: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        bp_fail_kind(err, BP_ERR_IO, "%s: input is not a regular file", path);
        return NULL;
    }
    unsigned char magic[2] = {0, 0};
    ssize_t nm = pread(fd, magic, 2, 0);
    bool gzip = nm == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    if (!gzip && named_gz(path)) {
        close(fd);
        bp_fail_kind(err, BP_ERR_CORRUPT,
                     "%s: named .gz but not gzip-compressed (%s). HINT: rename a plain text file to "
                     "drop the .gz", path, nm < 2 ? "shorter than a gzip header" : "no gzip magic 1f 8b");
        return NULL;
    }
    size_t plen = strlen(path);
    TextFile *tf = bp_calloc(1, sizeof *tf + plen + 1, "a text file reader", err);
    if (!tf) {
        close(fd);
        return NULL;
    }
    memcpy(tf->path, path, plen + 1);
    tf->fd = fd;
    tf->gzip = gzip;
    tf->st.file_size = (size_t)sb.st_size;
    tf->cap = TF_READ_CHUNK;
    tf->buf = bp_malloc(tf->cap, "the input buffer", err);
    if (tf->buf && gzip) {
        tf->in = bp_malloc(TF_IN_CHUNK, "the gzip input buffer", err);
        /* 16 + MAX_WBITS: gzip framing only, its header and CRC32/length trailer checked */
        if (tf->in && inflateInit2(&tf->zs, 16 + MAX_WBITS) == Z_OK) tf->zs_live = true;
        else if (tf->in) bp_fail(err, "%s: cannot open input: out of memory for zlib", path);
    }
    if (!tf->buf || (gzip && !tf->zs_live)) {
        textfile_close(tf);
        return NULL;
    }
    return tf;
}

static int read_failed(TextFile *tf, BpErrorKind kind, const char *what, const char *hint, BpError *err) {
    size_t at = tf->st.file_offset - (tf->gzip ? tf->zs.avail_in : 0);
    return bp_fail_kind(err, kind,
                        "%s: read error after %zu bytes of text (at byte %zu of the file): %s%s", tf->path,
                        tf->text_read, at, what, hint);
}

/* Reads raw bytes: into the text buffer for plain text, the gzip input buffer otherwise. */
static ssize_t read_raw(TextFile *tf, void *p, size_t n, BpError *err) {
    ssize_t got = read_some(tf->fd, p, n);
    if (got < 0) return read_failed(tf, BP_ERR_IO, strerror(errno), "", err);
    tf->st.file_offset += (size_t)got;
    return got;
}

/* Inflates into buf[len, len + want) until some text comes out or the file ends. Members follow
 * one another (cat a.gz b.gz); anything else after a member is an error, as gzip -d says too
 * ("trailing garbage"): zlib's gzread drops it silently. */
static ssize_t inflate_some(TextFile *tf, size_t want, BpError *err) {
    z_stream *zs = &tf->zs;
    for (;;) {
        if (zs->avail_in == 0 && !tf->in_eof) {
            ssize_t got = read_raw(tf, tf->in, TF_IN_CHUNK, err);
            if (got < 0) return -1;
            zs->next_in = tf->in;
            zs->avail_in = (uInt)got;
            tf->in_eof = got == 0;
        }
        if (tf->member_end) {
            if (zs->avail_in == 0) return 0; /* the end of the file after a whole member */
            if (zs->next_in[0] != 0x1f || (zs->avail_in > 1 && zs->next_in[1] != 0x8b))
                return read_failed(tf, BP_ERR_CORRUPT, "trailing data after the end of the gzip stream", "",
                                   err);
            inflateReset(zs);
            tf->member_end = false;
        }
        zs->next_out = (Bytef *)tf->buf + tf->len;
        zs->avail_out = (uInt)want;
        int rc = inflate(zs, Z_NO_FLUSH);
        size_t made = want - zs->avail_out;
        if (rc == Z_STREAM_END) tf->member_end = true;
        else if (rc == Z_BUF_ERROR || (rc == Z_OK && zs->avail_in == 0 && tf->in_eof && made == 0)) {
            if (tf->in_eof && zs->avail_in == 0)
                return read_failed(tf, BP_ERR_CORRUPT, "unexpected end of file", " (truncated or corrupt .gz?)",
                                   err);
        } else if (rc != Z_OK)
            return read_failed(tf, BP_ERR_CORRUPT, zs->msg ? zs->msg : "invalid gzip data", " (corrupt .gz?)", err);
        if (made > 0) return (ssize_t)made;
    }
}

/* Reads more text after the unconsumed part (moved to the front; the buffer doubles when a line
 * fills it). Sets eof at the end of the text, after making sure a gzip stream was not cut short. */
static int fill(TextFile *tf, BpError *err) {
    if (tf->start > 0) {
        memmove(tf->buf, tf->buf + tf->start, tf->len - tf->start);
        tf->len -= tf->start;
        tf->scan_from -= tf->start;
        tf->start = 0;
    }
    if (tf->cap - tf->len < TF_READ_CHUNK / 2) { /* keep reads large; one byte stays for a NUL */
        char *nb = realloc(tf->buf, tf->cap * 2);
        if (!nb) return bp_fail(err, "%s: out of memory for a line of more than %zu bytes", tf->path, tf->len);
        tf->buf = nb;
        tf->cap *= 2;
    }
    size_t want = tf->cap - tf->len - 1;
    if (want > (1u << 30)) want = 1u << 30;
    ssize_t got = tf->gzip ? inflate_some(tf, want, err) : read_raw(tf, tf->buf + tf->len, want, err);
    if (got < 0) return -1;
    tf->len += (size_t)got;
    tf->text_read += (size_t)got;
    tf->eof = got == 0;
    return 0;
}

/* Hands out buf[start, start + n) as a line that used `consumed` bytes of the text, and counts it. */
static int take_line(TextFile *tf, size_t n, size_t consumed, char **line, size_t *len) {
    char *s = tf->buf + tf->start;
    if (n > 0 && s[n - 1] == '\r') n--;
    s[n] = '\0';
    tf->start += consumed;
    if (tf->scan_from < tf->start) tf->scan_from = tf->start;
    TextFileStats *st = &tf->st;
    size_t first = 0, bad = tokenizer_utf8_invalid(s, n, &first);
    if (bad) {
        if (st->bad_bytes == 0) {
            st->first_bad_byte = st->bytes + first;
            st->first_bad_line = st->lines + 1;
        }
        st->bad_bytes += bad;
        st->bad_lines++;
    }
    st->lines++;
    st->bytes += consumed;
    *line = s;
    *len = n;
    return 1;
}

/* The end of the file (every gzip member whole, nothing after them): the text passes the 1% rule. */
static int finish(TextFile *tf, BpError *err) {
    const TextFileStats *s = &tf->st;
    /* a few stray bytes are dropped as BERT's tokenizer drops them; more is another encoding or
     * not text, and would only teach the vocab and the model noise */
    if (s->bad_bytes * 100 > s->bytes)
        return bp_fail_kind(err, BP_ERR_CORRUPT,
                            "%s: not UTF-8 text: %zu of %zu bytes (in %zu of %zu lines) are invalid UTF-8, "
                            "the first at line %zu. HINT: convert it, e.g. iconv -f LATIN1 -t UTF-8",
                            tf->path, s->bad_bytes, s->bytes, s->bad_lines, s->lines, s->first_bad_line);
    tf->checked = true;
    return 0;
}

int textfile_next(TextFile *tf, char **line, size_t *len, BpError *err) {
    if (tf->checked) return 0;
    BP_ASSERT(!tf->failed, "textfile_next after an error on %s", tf->path);
    for (;;) {
        char *nl = memchr(tf->buf + tf->scan_from, '\n', tf->len - tf->scan_from);
        if (nl) {
            size_t n = (size_t)(nl - (tf->buf + tf->start));
            return take_line(tf, n, n + 1, line, len);
        }
        tf->scan_from = tf->len;
        if (tf->eof) {
            size_t rest = tf->len - tf->start;
            if (rest) return take_line(tf, rest, rest, line, len);
            tf->failed = finish(tf, err) != 0;
            return tf->failed ? -1 : 0;
        }
        if (fill(tf, err)) {
            tf->failed = true;
            return -1;
        }
    }
}

const TextFileStats *textfile_stats(const TextFile *tf) { return &tf->st; }

double textfile_fraction_read(const TextFile *tf) {
    if (tf->checked || tf->st.file_size == 0) return 1.0;
    double f = (double)tf->st.file_offset / (double)tf->st.file_size;
    return f > 1.0 ? 1.0 : f;
}

void textfile_close(TextFile *tf) {
    if (!tf) return;
    if (tf->zs_live) inflateEnd(&tf->zs);
    if (tf->fd >= 0) close(tf->fd);
    free(tf->in);
    free(tf->buf);
    free(tf);
}

const char *textfile_invalid_note(const TextFileStats *s, char *buf, size_t cap) {
    snprintf(buf, cap, "%zu invalid UTF-8 byte(s) in %zu line(s) (the first at line %zu) are dropped",
             s->bad_bytes, s->bad_lines, s->first_bad_line);
    return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* Input formats                                                                               */

bool text_is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\v' && s[i] != '\f') return false;
    return true;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Length of the UTF-8 sequence at p (1 for a stray byte) and its code point. */
static size_t cp_at(const char *p, const char *end, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)p;
    size_t avail = (size_t)(end - p), len = u[0] < 0x80 ? 1 : u[0] >= 0xF0 ? 4 : u[0] >= 0xE0 ? 3 : u[0] >= 0xC0 ? 2 : 1;
    if (len > avail) len = 1;
    uint32_t v = len == 1 ? u[0] : u[0] & (0x7F >> len);
    for (size_t k = 1; k < len; k++) v = (v << 6) | (u[k] & 0x3F);
    *cp = v;
    return len;
}

/* closing quotes and brackets: " ' U+201D U+2019 U+00BB ) ] */
static size_t closer_at(const char *p, const char *end) {
    uint32_t cp;
    size_t len = cp_at(p, end, &cp);
    return cp == '"' || cp == '\'' || cp == 0x201D || cp == 0x2019 || cp == 0xBB || cp == ')' || cp == ']' ? len : 0;
}

/* opening quotes and brackets: " ' U+201C U+2018 U+00AB ( [ */
static size_t opener_at(const char *p, const char *end) {
    uint32_t cp;
    size_t len = cp_at(p, end, &cp);
    return cp == '"' || cp == '\'' || cp == 0x201C || cp == 0x2018 || cp == 0xAB || cp == '(' || cp == '[' ? len : 0;
}

static bool is_capital_or_digit(uint32_t cp) {
    return (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') || (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) ||
           (cp >= 0x391 && cp <= 0x3A9) || (cp >= 0x400 && cp <= 0x42F);
}

/* a letter for the initial and dotted-abbreviation tests: ASCII letters and any non-ASCII code point */
static bool is_letter(uint32_t cp) { return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z' ? true : cp >= 0x80; }

static bool in_list(const char *w, const char *const *list) {
    for (; *list; list++)
        if (!strcmp(w, *list)) return true;
    return false;
}

/* scripts/wiki_to_text.py's ABBREVIATIONS and NUMBER_ABBREVIATIONS */
static const char *const ABBREVIATIONS[] = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "mt", "ft", "lt", "col", "gen", "sgt", "capt", "cmdr",
    "adm", "gov", "sen", "rep", "rev", "hon", "pres", "messrs", "vs", "cf", "al", "approx", "ca", "jan",
    "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", NULL};
static const char *const NUMBER_ABBREVIATIONS[] = {"no", "nos", "nr", "p", "pp", "vol", "vols", "fig",
                                                   "figs", "ch", "art", "sec", "op", "ed", NULL};

/* Whether the word before a single "." at p[dot] keeps the sentence going: an initial, a dotted
 * abbreviation, or one of the lists (the number ones only before a digit). */
static bool dot_is_abbreviation(const char *p, size_t dot, bool next_is_digit) {
    size_t w = dot;
    while (w > 0 && p[w - 1] != ' ') w--;
    const char *end = p + dot;
    const char *s = p + w;
    for (size_t k; s < end && (k = opener_at(s, end)) > 0;) s += k;
    size_t letters = 0, dots = 0;
    bool dotted = s < end, want_letter = true;
    for (const char *q = s; q < end;) {
        uint32_t cp;
        q += cp_at(q, end, &cp);
        if (want_letter && is_letter(cp)) letters++;
        else if (!want_letter && cp == '.') dots++;
        else dotted = false;
        want_letter = !want_letter;
    }
    if (dotted && !want_letter && letters >= 1) return true; /* "J", "U.S", "e.g" */
    char low[16];
    size_t n = (size_t)(end - s);
    if (n == 0 || n >= sizeof low) return false;
    for (size_t k = 0; k < n; k++) low[k] = (char)((s[k] >= 'A' && s[k] <= 'Z') ? s[k] + 32 : s[k]);
    low[n] = 0;
    return in_list(low, ABBREVIATIONS) || (next_is_digit && in_list(low, NUMBER_ABBREVIATIONS));
}

/* trims s[0..n) and passes it on when it holds a letter or digit */
static int emit_sentence(const char *s, size_t n, TextSentenceFn fn, void *ctx) {
    while (n > 0 && is_ws(*s)) s++, n--;
    while (n > 0 && is_ws(s[n - 1])) n--;
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c >= 0x80 || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return fn(ctx, s, n);
    }
    return 0;
}

int text_split_sentences(const char *p, size_t n, TextSentenceFn fn, void *ctx) {
    const char *end = p + n;
    size_t start = 0, i = 0;
    while (i < n) {
        size_t run = 0;
        uint32_t cp;
        if (p[i] == '.' || p[i] == '!' || p[i] == '?')
            while (i + run < n && (p[i + run] == '.' || p[i + run] == '!' || p[i + run] == '?')) run++;
        else if (cp_at(p + i, end, &cp) == 3 && cp == 0x2026)
            run = 3;
        if (run == 0) {
            i++;
            continue;
        }
        size_t close = i + run, k;
        while (close < n && (k = closer_at(p + close, end)) > 0) close += k;
        size_t after = close;
        while (after < n && is_ws(p[after])) after++;
        if (after == close) { /* no white space: not a candidate */
            i += run;
            continue;
        }
        size_t j = after;
        while (j < n && (k = opener_at(p + j, end)) > 0) j += k;
        bool ends = false;
        if (j < n) {
            cp_at(p + j, end, &cp);
            bool single_dot = run == 1 && p[i] == '.';
            ends = is_capital_or_digit(cp) && !(single_dot && dot_is_abbreviation(p, i, cp >= '0' && cp <= '9'));
        }
        if (ends) {
            int rc = emit_sentence(p + start, close - start, fn, ctx);
            if (rc) return rc;
            start = after;
        }
        i = after;
    }
    return emit_sentence(p + start, n - start, fn, ctx);
}

/* A JSON reader just large enough for one object per line: it checks the syntax (strings,
 * numbers, literals, nesting) and decodes only the strings it is asked for. */
typedef struct {
    const char *p, *end;
    char **buf;
    size_t *cap;
} Json;

enum { JSON_MAX_DEPTH = 256 };

static void json_ws(Json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n')) j->p++;
}

static int json_put(Json *j, size_t at, const char *s, size_t n) {
    if (at + n + 1 > *j->cap) {
        size_t nc = *j->cap ? *j->cap : 4096;
        while (nc < at + n + 1) nc *= 2;
        char *nb = realloc(*j->buf, nc);
        if (!nb) return -1;
        *j->buf = nb;
        *j->cap = nc;
    }
    memcpy(*j->buf + at, s, n);
    return 0;
}

static int json_hex4(const char *p, const char *end, uint32_t *v) {
    if (end - p < 4) return 0;
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p[k];
        int d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
        if (d < 0) return 0;
        *v = *v << 4 | (uint32_t)d;
    }
    return 1;
}

/* The string at j->p (its opening quote): 1 when well-formed, 0 when not, -1 out of memory.
 * decode: written to *buf at `at`, NUL-terminated, length in *len. */
static int json_string(Json *j, bool decode, size_t at, size_t *len) {
    if (j->p >= j->end || *j->p != '"') return 0;
    size_t o = at;
    for (j->p++; j->p < j->end;) {
        const char *run = j->p;
        while (j->p < j->end && *j->p != '"' && *j->p != '\\' && (unsigned char)*j->p >= 0x20) j->p++;
        if (decode && json_put(j, o, run, (size_t)(j->p - run))) return -1;
        o += (size_t)(j->p - run);
        if (j->p >= j->end || (unsigned char)*j->p < 0x20) return 0;
        if (*j->p == '"') {
            j->p++;
            if (decode && json_put(j, o, "", 1)) return -1;
            *len = o - at;
            return 1;
        }
        if (++j->p >= j->end) return 0;
        char e = *j->p++, one = 0, utf[4];
        size_t nu = 1;
        uint32_t cp;
        switch (e) {
        case '"': case '\\': case '/': one = e; break;
        case 'b': one = '\b'; break;
        case 'f': one = '\f'; break;
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case 'u':
            if (!json_hex4(j->p, j->end, &cp)) return 0;
            j->p += 4;
            uint32_t lo;
            if (cp >= 0xD800 && cp < 0xDC00 && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' &&
                json_hex4(j->p + 2, j->end, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                j->p += 6;
            } else if (cp >= 0xD800 && cp < 0xE000) {
                cp = 0xFFFD; /* a lone surrogate: no character (the tokenizer drops U+FFFD) */
            }
            nu = tokenizer_utf8_encode(cp, utf);
            break;
        default: return 0;
        }
        if (e != 'u') utf[0] = one;
        if (decode && json_put(j, o, utf, nu)) return -1;
        o += nu;
    }
    return 0;
}

static int json_value(Json *j, int depth);

/* an object or array at j->p; keys of objects are checked as strings */
static int json_container(Json *j, int depth) {
    char close = *j->p == '{' ? '}' : ']';
    bool object = close == '}';
    if (depth >= JSON_MAX_DEPTH) return 0;
    j->p++;
    json_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 1;
    }
    for (;;) {
        size_t len;
        int rc;
        if (object) {
            if ((rc = json_string(j, false, 0, &len)) != 1) return rc;
            json_ws(j);
            if (j->p >= j->end || *j->p++ != ':') return 0;
        }
        if ((rc = json_value(j, depth + 1)) != 1) return rc;
        json_ws(j);
        if (j->p >= j->end) return 0;
        char c = *j->p++;
        if (c == close) return 1;
        if (c != ',') return 0;
        json_ws(j);
    }
}

static int json_value(Json *j, int depth) {
    json_ws(j);
    if (j->p >= j->end) return 0;
    char c = *j->p;
    size_t len;
    if (c == '"') return json_string(j, false, 0, &len);
    if (c == '{' || c == '[') return json_container(j, depth);
    static const char *const literals[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(literals[k]);
        if ((size_t)(j->end - j->p) >= n && !memcmp(j->p, literals[k], n)) {
            j->p += n;
            return 1;
        }
    }
    /* a number: -?digits(.digits)?([eE][+-]?digits)? */
    const char *s = j->p;
    if (*j->p == '-') j->p++;
    const char *d = j->p;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    if (j->p == d) return 0;
    if (j->p < j->end && *j->p == '.') {
        d = ++j->p;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
        if (j->p == d) return 0;
    }
    if (j->p < j->end && (*j->p | 0x20) == 'e') {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        d = j->p;
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
        if (j->p == d) return 0;
    }
    return j->p > s;
}

int text_jsonl_field(const char *line, size_t n, const char *field, char **buf, size_t *cap, size_t *out_len,
                     const char **why) {
    Json j = {line, line + n, buf, cap};
    size_t keep = 0; /* bytes of *buf holding the field's value found so far, its NUL included */
    bool found = false, is_string = false;
    json_ws(&j);
    *why = "not a JSON object";
    if (j.p >= j.end || *j.p != '{') return 0;
    j.p++;
    json_ws(&j);
    bool empty = j.p < j.end && *j.p == '}';
    if (empty) j.p++;
    while (!empty) {
        size_t klen;
        int rc = json_string(&j, true, keep, &klen); /* the key, after the value kept so far */
        if (rc != 1) return rc;
        bool match = !strcmp(*buf + keep, field) && klen == strlen(field);
        json_ws(&j);
        if (j.p >= j.end || *j.p++ != ':') return 0;
        json_ws(&j);
        if (match) {
            found = true;
            is_string = j.p < j.end && *j.p == '"';
            rc = is_string ? json_string(&j, true, 0, out_len) : json_value(&j, 1);
            if (rc != 1) return rc;
            keep = is_string ? *out_len + 1 : 0;
        } else if ((rc = json_value(&j, 1)) != 1) {
            return rc;
        }
        json_ws(&j);
        if (j.p >= j.end) return 0;
        char c = *j.p++;
        if (c == '}') break;
        if (c != ',') return 0;
        json_ws(&j);
    }
    json_ws(&j);
    if (j.p != j.end) return 0; /* more after the object */
    if (!found) *why = "the field is missing";
    else if (!is_string) *why = "the field is not a string";
    return found && is_string ? 1 : 0;
}

typedef struct {
    TextSentenceFn fn;
    void *ctx;
} SplitCtx;

TextLineKind text_line_units(TextFormat fmt, const char *field, const char *line, size_t n, char **buf,
                             size_t *cap, TextSentenceFn fn, void *ctx, const char **why) {
    *why = NULL;
    bool blank = text_is_blank(line, n);
    if (fmt == TEXT_FORMAT_LINES) {
        if (blank) return TEXT_LINE_ENDS_DOC;
        return fn(ctx, line, n) ? TEXT_LINE_FAILED : TEXT_LINE_CONTINUES;
    }
    if (blank) return TEXT_LINE_SKIPPED;
    if (fmt == TEXT_FORMAT_DOCS_PER_LINE)
        return text_split_sentences(line, n, fn, ctx) ? TEXT_LINE_FAILED : TEXT_LINE_ENDS_DOC;
    size_t len = 0;
    int rc = text_jsonl_field(line, n, field, buf, cap, &len, why);
    if (rc < 0) {
        *why = "out of memory decoding a JSON string";
        return TEXT_LINE_FAILED;
    }
    if (rc == 0) return TEXT_LINE_BAD;
    *why = NULL;
    const char *t = *buf, *end = t + len; /* paragraphs: the text's lines */
    while (t < end) {
        const char *nl = memchr(t, '\n', (size_t)(end - t));
        if (!nl) nl = end;
        if (text_split_sentences(t, (size_t)(nl - t), fn, ctx)) return TEXT_LINE_FAILED;
        t = nl + 1;
    }
    return TEXT_LINE_ENDS_DOC;
}
