/* Fuzz target: the text line reader (textfile_open / textfile_next), plain and gzip.
 *
 * Input: one mode byte, then the file's bytes. Mode bit 0 set: the bytes are gzip-compressed first
 * (so mutations of the text reach the reader behind a valid stream; raw corpus files cover damaged
 * streams). Bit 1 names the file .gz instead of .txt. Every line must be NUL-terminated at len and
 * the stats must add up. A plain (not compressed) file named .gz may be refused at open. */
#include <zlib.h>

#include "fuzz.h"
#include "textfile.h"

static const char *write_gz(const char *name, const uint8_t *data, size_t size) {
    const char *path = fuzz_path(name);
    gzFile g = gzopen(path, "wb1");
    if (!g || (size && gzwrite(g, data, (unsigned)size) != (int)size) || gzclose(g) != Z_OK) abort();
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *name = data[0] & 2 ? "input.gz" : "input.txt";
    const char *path = data[0] & 1 ? write_gz(name, data + 1, size - 1) : fuzz_file(name, data + 1, size - 1);
    BpError err;
    TextFile *tf = textfile_open(path, &err);
    /* a regular file always opens, except plain bytes named .gz: the reader refuses a .gz that is
       not gzip (by its magic bytes) rather than reading it as text */
    if (!tf) {
        if ((data[0] & 3) != 2) abort();
        return 0;
    }
    char *line;
    size_t len, lines = 0, bytes = 0;
    int rc;
    while ((rc = textfile_next(tf, &line, &len, &err)) == 1) {
        if (line[len] != 0) abort();
        lines++;
        bytes += len;
    }
    const TextFileStats *st = textfile_stats(tf);
    if (st->lines != lines || st->bytes < bytes || st->bad_lines > lines) abort();
    if (rc == 0 && (data[0] & 1) && bytes > size - 1) abort(); /* lines hold no more than the text */
    double frac = textfile_fraction_read(tf);
    if (!(frac >= 0 && frac <= 1)) abort();
    char note[256];
    fuzz_sink = strlen(textfile_invalid_note(st, note, sizeof note));
    textfile_close(tf);
    return 0;
}
