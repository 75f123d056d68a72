/* checkpoint.h: a generic, versioned, checksummed container of named byte sections, written
 * atomically. The trainer decides what the sections hold (config, step, parameters, moments...);
 * this module only guarantees that what it hands back is exactly what was written.
 *
 * Layout (little-endian):
 *
 *   0          magic "BPCKPT01" (8 bytes, no NUL)
 *   8          u32 version (CKPT_VERSION)
 *   12         u32 section count n
 *   16         n table entries of 52 bytes: name (up to 31 chars, NUL-padded to 32), u64 offset,
 *              u64 bytes, u32 CRC32 of the section's data
 *   16 + 52n   u32 CRC32 of bytes [0, 16 + 52n) (header and table)
 *   then       the sections in table order, each at an 8-byte aligned offset, zero bytes between;
 *              the file ends where the last section ends
 *
 * The reader maps the file and checks, before handing out anything: magic, version, that the table
 * fits, the table CRC, names (non-empty, NUL-padded, unique), every section's bounds (aligned, in
 * order, inside the file), that nothing follows the last section, that the padding is zero and
 * every section's CRC - so any single flipped bit anywhere in the file is caught. Messages name the
 * file and what is wrong: "PATH: section 'params' CRC mismatch (file corrupt?)".
 *
 * Test hook: BERT_PRETRAIN_SLOW_CKPT_MS=N makes ckpt_write sleep N ms after each section, so that a
 * test can land a kill -9 or a signal inside a checkpoint write.
 *
 * Error kinds: anything wrong with the bytes of a file is BP_ERR_CORRUPT; what the operating system
 * refused (open, map, write, rename, list, remove) is BP_ERR_IO. */
#ifndef BP_CHECKPOINT_H
#define BP_CHECKPOINT_H

#include <stddef.h>

#include "common.h"

#define CKPT_MAGIC "BPCKPT01"
#define CKPT_VERSION 1
#define CKPT_NAME_LEN 32 /* bytes in the table, NUL included: names are 1..31 chars */
/* Sections a file may hold (a training checkpoint has 5). The reader checks names for uniqueness
 * pairwise, so an unbounded count would let a crafted table make open quadratic. */
#define CKPT_MAX_SECTIONS 1024

typedef struct {
    const char *name;
    const void *data;
    size_t bytes;
    /* Instead of data (NULL): the section's bytes are pulled from next(ctx, &len) until they add up
       to bytes; each call hands the following len > 0 bytes, valid until the next call. So a section
       need never be whole in memory (the optimizer state gathered from several ranks). NULL from
       next is a failure (the write is abandoned, nothing replaced). */
    const void *(*next)(void *ctx, size_t *len);
    void *ctx;
} CkptSection;

/* Writes the sections, in the given order, to path through a temporary file that is fsync'ed and
 * renamed over path: a crash leaves either the old file or the new one. 0 or -1 with err filled. */
int ckpt_write(const char *path, const CkptSection *sections, int n, BpError *err);

typedef struct CkptFile CkptFile; /* an opened, fully verified checkpoint (read-only mapping) */

CkptFile *ckpt_open(const char *path, BpError *err); /* NULL with err filled when refused */
/* A section's bytes (8-byte aligned, valid until ckpt_close) and size; NULL when absent. */
const void *ckpt_section(const CkptFile *f, const char *name, size_t *bytes);
int ckpt_section_count(const CkptFile *f);
const char *ckpt_section_name(const CkptFile *f, int i); /* table order; NULL when out of range */
void ckpt_close(CkptFile *f);                          /* NULL is fine */

/* Checkpoint files of a run directory, named ckpt-%08ld.bin after the optimizer step, newest first.
 * Other names (temporaries such as ckpt-00000100.bin.tmp.PID left by an interrupted write,
 * non-canonical spellings of a step) are ignored. Returns the total count (possibly more than max)
 * and fills the first min(count, max) paths (run_dir/name) and steps; either array may be NULL when
 * max is 0. A run directory that does not exist has no checkpoints (0). -1 with err on failure. */
int ckpt_list(const char *run_dir, char (*paths)[4096], long *steps, int max, BpError *err);

/* Removes the checkpoints of run_dir older than step `before` (temporaries and files set aside
 * are not checkpoints). Which step that is, is the caller's policy: the trainer passes the oldest
 * of the checkpoints it keeps and knows to be valid. Returns how many it removed, or -1. */
int ckpt_prune_before(const char *run_dir, long before, BpError *err);

/* Renames a checkpoint that failed validation to PATH.corrupt (replacing an older one of that
 * name), so that neither --resume auto nor pruning sees it again while it stays at hand for a
 * post-mortem. aside receives the new name. */
int ckpt_set_aside(const char *path, char *aside, size_t aside_len, BpError *err);

/* out = "run_dir/ckpt-%08ld.bin" (truncated to out_len like snprintf). */
void ckpt_path(char *out, size_t out_len, const char *run_dir, long step);

#endif
