/* shard.h: the token shard format, written by `prepare` and read back through mmap.
 *
 * A shard is one file holding a tokenized corpus: token ids, the start of every sentence and the
 * first sentence of every document. Layout (little-endian, every section 64-byte aligned):
 *
 *   header   128 bytes, ShardHeader below; header_crc covers its first 124 bytes
 *   tokens   n_tokens ids, token_bytes each: uint16 when vocab_size <= 65536, else int32
 *   sents    n_sentences + 1 uint64: sentence s holds tokens [sents[s], sents[s+1]); the last entry
 *            is n_tokens, so every length is a difference and no sentence is empty
 *   docs     n_documents + 1 uint64: document d holds sentences [docs[d], docs[d+1]); last entry is
 *            n_sentences, no document is empty
 *
 * Why uint16 tokens: every BERT vocab (30522 uncased, 28996 cased, our 8192 demo) fits, and half the
 * bytes means half the disk, page cache and memory traffic when examples are cut from the mapping;
 * a vocab above 65536 entries switches to int32 and the header records which (token_bytes).
 *
 * The reader validates everything before it hands out a pointer: magic, version, header CRC,
 * section offsets and sizes against the file length, each section's CRC32, boundaries that start at
 * 0, strictly increase and end at the next level's count, and every token id below vocab_size. A
 * damaged file gives an error naming the file and what is wrong, never a crash. */
#ifndef BP_SHARD_H
#define BP_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define SHARD_MAGIC "BPSHARD1"
#define SHARD_VERSION 1
#define SHARD_HEADER_BYTES 128

/* Which output of `prepare` a shard is, so that a run never trains on held-out documents (data.train
 * and data.eval swapped). Only data.train is checked: a held-out set made by a prepare of its own
 * (scripts/compare.py split) is that run's train shard, and data.eval may name it. Shards written
 * before the role was recorded say SHARD_ROLE_UNKNOWN and are taken for either. */
typedef enum { SHARD_ROLE_UNKNOWN = 0, SHARD_ROLE_TRAIN = 1, SHARD_ROLE_EVAL = 2 } ShardRole;

typedef struct {
    char magic[8];        /* SHARD_MAGIC, no NUL */
    uint32_t version;     /* SHARD_VERSION */
    uint32_t header_bytes; /* SHARD_HEADER_BYTES */
    uint32_t vocab_size;  /* entries of the vocab the ids index */
    uint32_t vocab_crc;   /* tokenizer_vocab_crc of that vocab */
    uint32_t token_bytes; /* 2 (uint16) or 4 (int32) */
    uint32_t role;        /* ShardRole: which output of `prepare` this is (0 in older shards) */
    uint64_t n_tokens, n_sentences, n_documents;
    uint64_t tokens_offset, sents_offset, docs_offset; /* byte offsets from the file start */
    uint64_t file_bytes;  /* the whole file, for a truncation message that says how much is gone */
    uint32_t tokens_crc, sents_crc, docs_crc;
    uint8_t reserved[24];
    uint32_t header_crc;  /* CRC32 of the 124 bytes before it */
} ShardHeader;

/* A shard opened for reading: every pointer points into the read-only mapping. */
typedef struct {
    char path[1024];
    void *map;
    size_t map_len;
    /* the file's identity when it was mapped, for shard_check_unchanged */
    uint64_t dev, ino;
    int64_t mtime_ns;
    int guard; /* 1 + its slot in the SIGBUS guard's table, 0 when none */
    ShardHeader h;
    const void *tokens;         /* n_tokens ids of h.token_bytes each */
    const uint64_t *sent_start; /* n_sentences + 1 */
    const uint64_t *doc_start;  /* n_documents + 1 */
    size_t n_tokens, n_sentences, n_documents;
} Shard;

/* Maps and validates the file (see above). On failure nothing stays mapped.
 *
 * A shard that changes under a running job. prepare replaces shards by rename, which leaves the
 * mapping on the old file; but a file truncated in place (cp over it, truncate, a full disk while
 * someone rewrites it) turns every read of the mapping past its new end into SIGBUS, and an in-place
 * rewrite changes the data under the run without any signal. Two defences:
 * - shard_check_unchanged, called before each batch is cut (dataset_build_batch), compares the
 *   path's device, inode, size and mtime with those seen at open: a change is a clear error at a
 *   point where the run's state is consistent;
 * - a truncation between that check and a read still raises SIGBUS, which cannot be returned from
 *   (the reading thread would fault again) and cannot unwind an OpenMP worker. shard_open installs,
 *   once per process, a SIGBUS handler that looks the faulting address up among the open shards'
 *   mappings: inside one it writes "bert_pretrain: PATH: the shard was truncated while this run
 *   was reading it ..." to stderr and exits with status 1 (the only place the library exits: there
 *   is no way to continue); any other SIGBUS goes to the previous handler, or kills the process
 *   as before. At most SHARD_GUARD_SLOTS shards are watched at once; beyond that only the check. */
#define SHARD_GUARD_SLOTS 16
int shard_open(Shard *s, const char *path, BpError *err);
void shard_close(Shard *s);
/* BP_ERR_IO "PATH: the shard changed on disk since this run opened it (...)" when the file at the
 * shard's path is not the one mapped, or was modified or resized since. */
int shard_check_unchanged(const Shard *s, BpError *err);

static inline int32_t shard_token(const Shard *s, size_t i) {
    return s->h.token_bytes == 2 ? (int32_t)((const uint16_t *)s->tokens)[i]
                                 : ((const int32_t *)s->tokens)[i];
}

/* Fails with a message naming both files when the shard was built with another vocab:
 * "data/shards/train: built with a vocab of 8192 tokens (crc 1a2b3c4d) but data/vocab.txt has
 *  30522 (crc ...)". */
int shard_check_vocab(const Shard *s, int vocab_size, uint32_t vocab_crc, const char *vocab_path,
                      BpError *err);

/* Streaming writer: tokens go straight to a temporary file beside the target (only the sentence and
 * document boundaries stay in memory); shard_writer_commit writes the boundaries and the header
 * and renames the file into place. shard_writer_free without a commit removes the temporary, so a
 * failed prepare leaves no partial shard. */
typedef struct ShardWriter ShardWriter;
ShardWriter *shard_writer_open(const char *path, int vocab_size, uint32_t vocab_crc, BpError *err);
/* Records which output of prepare the shard is (before the commit). */
void shard_writer_set_role(ShardWriter *w, ShardRole role);
/* Refuses a shard written as the other role: key names the config key that pointed at it
 * ("data.train"). A shard of unknown role (older) passes. */
int shard_check_role(const Shard *s, ShardRole want, const char *key, BpError *err);
/* Appends one sentence (n >= 1 ids, each in [0, vocab_size)) to the current document. */
int shard_writer_add_sentence(ShardWriter *w, const int32_t *ids, size_t n, BpError *err);
/* Closes the current document; a document with no sentence is not recorded. */
int shard_writer_end_document(ShardWriter *w, BpError *err);
size_t shard_writer_num_tokens(const ShardWriter *w);
size_t shard_writer_num_sentences(const ShardWriter *w);
size_t shard_writer_num_documents(const ShardWriter *w);
/* Ends an open document, writes the boundary sections and the header, fsyncs and renames. */
int shard_writer_commit(ShardWriter *w, BpError *err);
/* Frees the writer; removes the temporary file when it was not committed. */
void shard_writer_free(ShardWriter *w);

#endif
