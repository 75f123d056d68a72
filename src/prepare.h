/* prepare.h: text -> (WordPiece vocab when missing) -> token shards, the `prepare` pipeline.
 *
 * Reads data.input (text files, .txt or .gz, through textfile.h, in data.input_format: by default
 * one sentence per line, a blank line between documents, as Google's create_pretraining_data.py;
 * or one document per line, or JSON Lines; every file also ends a document). An entry of
 * data.input may be a directory (every regular file under it, recursively, hidden ones and the
 * outputs skipped, in byte order of their paths) or a glob pattern (its matches in byte order; no
 * match is an error). Bad JSONL records are skipped and counted; more than data.max_bad_records
 * of the records is an error naming the first (FILE:LINE).
 *
 * Scale: blocks of about 8 MB of lines are tokenized by training.threads threads (0: every core)
 * and written in input order, so the shards are the same byte for byte whatever the thread count;
 * memory is bounded by the block and the longest document, whatever the inputs' size.
 * tokenizes every sentence with data.vocab and writes two token shards: data.train, and data.eval
 * with about a data.eval_fraction share of the documents. The eval split: document k (counting the
 * documents kept) is held out when rng_u01d(rng_hash(training.seed, RNG_SPLIT, k)) falls below the
 * fraction; when none fell, the last train document goes to eval instead, so a fraction above 0
 * always holds out at least one. It needs at least 2 documents, and refuses a split that leaves
 * the train shard empty. When data.vocab does not exist it is built first (vocab_build_opts, from
 * the same inputs, data.vocab_size entries, min count 2).
 *
 * Sentences that tokenize to nothing are dropped, and so are documents left empty. Invalid UTF-8
 * bytes are dropped and counted; a file with more than 1% invalid bytes is refused (textfile.h's
 * rule, the vocab builder's too). Outputs are atomic: on any error nothing is written, earlier
 * shards stay as they were, and a vocab built by the failing run is removed again. */
#ifndef BP_PREPARE_H
#define BP_PREPARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common.h"
#include "config.h"

typedef struct {
    FILE *progress; /* progress lines, warnings and the vocab builder's output; NULL: quiet */
} PrepareOptions;

typedef struct {
    char path[CFG_PATH_MAX]; /* "" when not written (eval with data.eval_fraction 0) */
    long documents;
    size_t sentences, tokens;
    size_t bytes; /* the shard file's size */
} PrepareShardReport;

/* Every figure of prepare's summary. */
typedef struct {
    int files;
    size_t text_bytes; /* uncompressed text read, line breaks included */
    long lines;        /* non-blank lines */
    long documents, documents_dropped;   /* dropped: no sentence left after tokenizing */
    long sentences, sentences_dropped;   /* dropped: tokenizes to nothing */
    size_t tokens, unk_tokens;
    long invalid_utf8_lines; /* lines with invalid bytes (dropped) in the files that passed */
    char vocab[CFG_PATH_MAX];
    int vocab_size;
    uint32_t vocab_crc;
    bool vocab_built; /* by this run */
    double eval_fraction;
    PrepareShardReport train, eval;
    double seconds; /* the whole run, vocab build included */
    int threads;    /* tokenizing threads (training.threads; 0 there = every core) */
    int input_format; /* TextFormat */
    size_t disk_bytes; /* the inputs' size on disk (compressed for .gz) */
    long records, bad_records; /* jsonl: non-blank lines read, and those that were bad (skipped) */
    char first_bad[CFG_PATH_MAX + 96]; /* "FILE:LINE: why" of the first bad record; "" when none */
} PrepareReport;

/* Runs the pipeline for cfg->data. 0 with *out filled, or -1 with err filled (usage errors for a
 * configuration that cannot work: no inputs, the eval split impossible) and nothing written. */
int prepare_run(const Config *cfg, const PrepareOptions *opt, PrepareReport *out, BpError *err);

#endif
