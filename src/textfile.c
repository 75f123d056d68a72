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

struct TextFile {
    gzFile gz;    /* NULL once the end was reached and the stream closed */
    char *buf;    /* unconsumed text is buf[start, len); buf[scan_from, len) not yet searched */
    size_t cap, start, len, scan_from;
    bool eof;     /* gzread reported the end of the stream */
    bool checked; /* the end-of-file checks passed */
    size_t text_read; /* uncompressed bytes gzread returned */
    TextFileStats st;
    char path[]; /* for messages */
};

TextFile *textfile_open(const char *path, BpError *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
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
    size_t plen = strlen(path);
    TextFile *tf = bp_calloc(1, sizeof *tf + plen + 1, "a text file reader", err);
    if (!tf) {
        close(fd);
        return NULL;
    }
    memcpy(tf->path, path, plen + 1);
    tf->st.file_size = (size_t)sb.st_size;
    tf->cap = TF_READ_CHUNK;
    tf->buf = bp_malloc(tf->cap, "the input buffer", err);
    tf->gz = tf->buf ? gzdopen(fd, "rb") : NULL;
    if (!tf->gz) {
        if (tf->buf) bp_fail(err, "%s: cannot open input: out of memory", path);
        close(fd);
        free(tf->buf);
        free(tf);
        return NULL;
    }
    gzbuffer(tf->gz, 1 << 18);
    return tf;
}

/* zlib's gzerror text may start with the file name (gzdopen names it "<fd:N>"); the message here
 * names the file once */
static const char *gz_message(gzFile g, int *zerr) {
    const char *m = gzerror(g, zerr);
    const char *colon = strstr(m, ": ");
    return m[0] == '<' && colon ? colon + 2 : m;
}

static int read_failed(TextFile *tf, BpErrorKind kind, const char *what, const char *hint, BpError *err) {
    return bp_fail_kind(err, kind,
                        "%s: read error after %zu bytes of text (at byte %zu of the file): %s%s", tf->path,
                        tf->text_read, tf->st.file_offset, what, hint);
}

/* Reads more text after the unconsumed part (moved to the front; the buffer doubles when a line
 * fills it). Sets eof at the end of the stream, after making sure the stream was not cut short. */
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
    int got = gzread(tf->gz, tf->buf + tf->len, (unsigned)want);
    int read_errno = errno;
    long off = gzoffset(tf->gz);
    if (off >= 0) tf->st.file_offset = (size_t)off;
    int zerr;
    if (got < 0) {
        const char *msg = gz_message(tf->gz, &zerr);
        if (zerr == Z_ERRNO) return read_failed(tf, BP_ERR_IO, strerror(read_errno), "", err);
        return read_failed(tf, BP_ERR_CORRUPT, msg, " (corrupt .gz?)", err);
    }
    tf->len += (size_t)got;
    tf->text_read += (size_t)got;
    if (got == 0) {
        tf->eof = true;
        /* a gzip stream cut short reads as a clean end of file: only zlib's error state tells
         * (Z_BUF_ERROR, "unexpected end of file") */
        const char *msg = gz_message(tf->gz, &zerr);
        if (zerr != Z_OK) return read_failed(tf, BP_ERR_CORRUPT, msg, " (truncated or corrupt .gz?)", err);
    }
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

/* The end of the file: the gzip stream closed cleanly, and the text passes the 1% rule. */
static int finish(TextFile *tf, BpError *err) {
    int zrc = gzclose(tf->gz);
    tf->gz = NULL;
    if (zrc != Z_OK)
        return bp_fail_kind(err, BP_ERR_CORRUPT, "%s: read error: the input ended in the middle of a gzip stream",
                            tf->path);
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
    BP_ASSERT(tf->gz, "textfile_next after an error on %s", tf->path);
    for (;;) {
        char *nl = memchr(tf->buf + tf->scan_from, '\n', tf->len - tf->scan_from);
        if (nl) {
            size_t n = (size_t)(nl - (tf->buf + tf->start));
            return take_line(tf, n, n + 1, line, len);
        }
        tf->scan_from = tf->len;
        if (tf->eof) {
            size_t rest = tf->len - tf->start;
            return rest ? take_line(tf, rest, rest, line, len) : finish(tf, err);
        }
        if (fill(tf, err)) return -1;
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
    if (tf->gz) gzclose(tf->gz);
    free(tf->buf);
    free(tf);
}

const char *textfile_invalid_note(const TextFileStats *s, char *buf, size_t cap) {
    snprintf(buf, cap, "%zu invalid UTF-8 byte(s) in %zu line(s) (the first at line %zu) are dropped",
             s->bad_bytes, s->bad_lines, s->first_bad_line);
    return buf;
}
