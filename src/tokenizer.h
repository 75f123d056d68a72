/* tokenizer.h: BERT's tokenizer (BasicTokenizer + WordPiece) and the WordPiece vocab builder.
 *
 * BasicTokenizer: drop NUL, U+FFFD and control characters; whitespace (incl. \t \n \r and Unicode
 * Zs) separates words; for uncased vocabs lower-case and strip accents (NFD, drop Mn marks); split
 * punctuation (ASCII 33-47, 58-64, 91-96, 123-126 and Unicode P*); put spaces around CJK
 * ideographs. WordPiece: greedy longest-match-first, "##" marks continuation pieces, [UNK] for a
 * word with no complete match or longer than 200 characters. Invalid UTF-8 bytes are treated as
 * U+FFFD (dropped), never a crash. */
#ifndef BP_TOKENIZER_H
#define BP_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common.h"

typedef struct Tokenizer Tokenizer;

/* Loads vocab.txt (one token per line, id = line number). Fails with a clear error when [UNK],
 * [CLS], [SEP], [MASK] or [PAD] is missing, or on duplicate tokens. */
Tokenizer *tokenizer_load(const char *vocab_path, bool lowercase, BpError *err);
void tokenizer_free(Tokenizer *tok);

int tokenizer_vocab_size(const Tokenizer *tok);
int tokenizer_id(const Tokenizer *tok, const char *token); /* -1 when absent */
const char *tokenizer_token(const Tokenizer *tok, int id); /* NULL when id is out of range */
bool tokenizer_is_continuation(const Tokenizer *tok, int id); /* starts with "##" */
/* CRC32 of the vocab file's contents: shards record it to refuse a mismatched vocab. */
uint32_t tokenizer_vocab_crc(const Tokenizer *tok);

typedef struct {
    int pad, unk, cls, sep, mask;
} SpecialIds;
SpecialIds tokenizer_specials(const Tokenizer *tok);

/* Tokenizes one piece of UTF-8 text and appends the ids to *ids (grown with realloc; *n and *cap
 * updated). Returns 0, or -1 on allocation failure. */
int tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n,
                     size_t *cap, BpError *err);

/* Tokenizes `in` line by line and writes one line per input line to `out`: the line's ids (decimal)
 * or pieces, space-separated (an empty line for a line without tokens). `tokenize` is this loop.
 * Returns 0, or -1 on a read or write error (BP_ERR_IO) or out of memory. */
typedef struct {
    size_t lines, tokens, unk;
    /* invalid UTF-8 the tokenizer dropped (the caller warns): bytes, lines holding some, and the
     * 1-based number of the first such line (0 when none) */
    size_t bad_bytes, bad_lines, first_bad_line;
} TokenizeStreamCounts;
int tokenizer_encode_stream(const Tokenizer *tok, FILE *in, FILE *out, bool pieces,
                            TokenizeStreamCounts *counts, BpError *err);

/* Whether the tokenizer lower-cases and strips accents (the `lowercase` it was loaded with). */
bool tokenizer_lowercase(const Tokenizer *tok);

/* The BasicTokenizer alone: calls fn once per word (UTF-8, NUL-terminated, nbytes long, nchars
 * code points) in order. Returns 0, or -1 when fn returned non-zero (fn fills err) or on
 * allocation failure. The vocab builder and the tests use it; tokenizer_encode runs WordPiece on
 * each word. */
typedef int (*TokenizerWordFn)(void *ctx, const char *word, size_t nbytes, size_t nchars);
int tokenizer_basic(const char *text, size_t len, bool lowercase, TokenizerWordFn fn, void *ctx,
                    BpError *err);

/* Writes code point cp (< 0x110000) as 1-4 bytes of UTF-8 to out; returns the byte count. */
size_t tokenizer_utf8_encode(uint32_t cp, char *out);

/* Number of bytes of text[0..len) that are not part of valid UTF-8 (what the tokenizer drops);
 * *first_bad (if non-NULL) gets the offset of the first when there is one. Lets a reader tell
 * a stray byte from a file in the wrong encoding. */
size_t tokenizer_utf8_invalid(const char *text, size_t len, size_t *first_bad);

/* Trains a WordPiece vocab from text files (.txt or .gz, read by textfile.h: the same lines, the
 * same UTF-8 rule, the same formats as prepare; bad JSONL records are skipped and counted) and writes it atomically to out_path: special tokens first ([PAD]
 * [UNK] [CLS] [SEP] [MASK]), then the alphabet, then the merges; deterministic. min_count: merging
 * stops when the most frequent pair occurs fewer times, so the vocab can end below `size`.
 * progress (NULL: quiet) receives a line per file, warnings and the summary. */
typedef struct {
    int size;
    bool lowercase;
    int min_count; /* 2 is the usual choice */
    FILE *progress;
    int format;              /* TextFormat (textfile.h) of the inputs; 0: lines */
    const char *jsonl_field; /* jsonl: the text field; NULL: "text" */
    /* MB of text to learn from, 0 = all: each line (record) is kept when a fixed hash of its file
     * index and line number falls below sample_mb / (the inputs' MB on disk), so the sample is the
     * same on every run and spread evenly over every file; memory then grows with the sample's
     * distinct words, not the corpus'. (A .gz file's size on disk is its compressed size: such
     * inputs give a larger sample than asked for.) */
    double sample_mb;
} VocabBuildOptions;
int vocab_build_opts(const char *const *inputs, int n_inputs, const VocabBuildOptions *opt,
                     const char *out_path, BpError *err);

#endif
