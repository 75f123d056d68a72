/* textfile.h: the one reader of text input, shared by `prepare` and the WordPiece vocab builder so
 * that the two always agree on what a line is and on what counts as text.
 *
 * A file is plain text or gzip, told apart by the gzip magic (concatenated gzip members are one
 * text; anything else after the last member is an error, as is a file named .gz that is not gzip:
 * zlib's gzread would read either silently). Only regular files are read (a FIFO is refused
 * without waiting for a writer). A line ends at
 * "\n" or "\r\n" (neither is part of the line); the last line needs no line break; lines may be
 * of any length. Every line is checked for invalid UTF-8 with tokenizer_utf8_invalid, so the count
 * is exactly what the tokenizer drops. At the end of the file, a file where more than 1% of the
 * bytes are invalid UTF-8 is refused (another encoding, e.g. Latin-1, or not text at all); fewer
 * are only counted, for the caller to report. A truncated or corrupt gzip stream is an error that
 * names the file and the byte offset, never a silent early end.
 *
 * Use: textfile_open, textfile_next until it returns 0 (end, every check passed) or -1 (err
 * filled), textfile_close. */
#ifndef BP_TEXTFILE_H
#define BP_TEXTFILE_H

#include <stddef.h>

#include "common.h"

typedef struct {
    size_t bytes;          /* uncompressed bytes of the lines returned so far, line breaks included */
    size_t lines;          /* lines returned so far */
    size_t bad_bytes;      /* invalid UTF-8 bytes in them */
    size_t bad_lines;      /* lines holding at least one invalid byte */
    size_t first_bad_line; /* 1-based line number of the first such line; 0 when none */
    size_t first_bad_byte; /* offset in the uncompressed text of the first invalid byte */
    size_t file_size;      /* on disk */
    size_t file_offset;    /* bytes of the file consumed so far (compressed bytes for gzip) */
} TextFileStats;

typedef struct TextFile TextFile;

/* Opens a regular file for reading lines. NULL with err filled ("PATH: cannot open input: ...",
 * "PATH: input is not a regular file", "PATH: named .gz but not gzip-compressed ..."). */
TextFile *textfile_open(const char *path, BpError *err);

/* The next line: 1 with *line (NUL-terminated, writable, valid until the next call) and *len (its
 * bytes, without the line break); 0 at the end of the file once the gzip stream and the UTF-8 rule
 * have been checked; -1 on a read error, a damaged gzip stream, or a refused encoding (the message
 * names the file and gives a HINT). */
int textfile_next(TextFile *tf, char **line, size_t *len, BpError *err);

const TextFileStats *textfile_stats(const TextFile *tf);
/* Share of the file consumed, in [0, 1]: for progress lines. */
double textfile_fraction_read(const TextFile *tf);

void textfile_close(TextFile *tf);

/* "N invalid UTF-8 byte(s) in L line(s) (the first at line F) are dropped": the warning both
 * readers print for a file that passed the rule with some invalid bytes. Writes into buf. */
const char *textfile_invalid_note(const TextFileStats *s, char *buf, size_t cap);

#endif
