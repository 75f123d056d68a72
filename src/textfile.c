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
