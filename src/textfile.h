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

#include <stdbool.h>
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

/* ---------------------------------------------------------------------------------------------
 * Input formats (data.input_format): how the lines of a file become documents and sentences.
 *   lines               one sentence per line, a blank line ends a document (create_pretraining_data.py)
 *   documents_per_line  each non-blank line is one document, split into sentences by the rule below
 *   jsonl               each non-blank line is a JSON object, one document; its string field
 *                       (data.jsonl_field, "text") is split at its newlines into paragraphs, and each
 *                       paragraph into sentences by the rule below
 * In every format the end of a file also ends a document.
 *
 * The sentence rule (text_split_sentences) is scripts/wiki_to_text.py's, so every input gets the
 * same one: a candidate end is "...", U+2026 or a run of . ! ? followed by any closing quotes or
 * brackets and then white space; it ends a sentence when the next character (after any opening
 * quotes or brackets) is a capital or a digit, except after a "." that ends an initial ("J."), a
 * dotted abbreviation ("U.S.", "e.g."), a title or month ("Mr.", "Dr.", "Jan.": the script's list),
 * or "No." / "pp." / "Vol." ... before a digit. Difference from the script: "a capital" is an ASCII
 * capital or one of the Latin-1, Greek or Cyrillic capital letters; the script asks Python's
 * str.isupper, which knows every script's. Sentences without a letter or digit are dropped. */
typedef enum { TEXT_FORMAT_LINES = 0, TEXT_FORMAT_DOCS_PER_LINE = 1, TEXT_FORMAT_JSONL = 2 } TextFormat;

/* Receives one sentence (trimmed, not NUL-terminated); non-zero stops the caller. */
typedef int (*TextSentenceFn)(void *ctx, const char *s, size_t n);

/* Calls fn for each sentence of paragraph p[0..n) in order. Returns 0, or fn's non-zero result. */
int text_split_sentences(const char *p, size_t n, TextSentenceFn fn, void *ctx);

/* The string value of key `field` in the JSON object that is line[0..n), escapes decoded (\uXXXX
 * with surrogate pairs to UTF-8) into *buf (grown with realloc, NUL-terminated), its length in
 * *out_len. Returns 1; 0 for a bad record with *why set to a static reason ("not a JSON object",
 * "the field is missing", "the field is not a string"); -1 when out of memory. The whole line is
 * checked as JSON (nesting up to 256 levels); duplicate keys: the last one counts, as in Python's
 * json. */
int text_jsonl_field(const char *line, size_t n, const char *field, char **buf, size_t *cap, size_t *out_len,
                     const char **why);

/* What one line of a file is in a format, for text_line_units. */
typedef enum {
    TEXT_LINE_FAILED = -1,   /* fn stopped it, or out of memory (*why says which: NULL for fn) */
    TEXT_LINE_CONTINUES = 0, /* its sentences (if any) belong to the document being read */
    TEXT_LINE_ENDS_DOC = 1,  /* the document ends after its sentences (none for a blank line) */
    TEXT_LINE_BAD = 2,       /* a bad record (jsonl): *why says what is wrong; nothing was emitted */
    TEXT_LINE_SKIPPED = 3,   /* a blank line where blank lines mean nothing (documents_per_line, jsonl) */
} TextLineKind;

/* Runs one line of a file of format fmt: calls fn for each of its sentences, then says what the
 * line was. The lines format passes a non-blank line whole, as one sentence. buf/cap: scratch for
 * the decoded JSON text (freed by the caller). */
TextLineKind text_line_units(TextFormat fmt, const char *field, const char *line, size_t n, char **buf,
                             size_t *cap, TextSentenceFn fn, void *ctx, const char **why);

/* Whether s[0..n) holds only blanks (space, \t, \r, \v, \f): what ends a document in `lines`. */
bool text_is_blank(const char *s, size_t n);

#endif
