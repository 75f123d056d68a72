/* run_ckpt.h: the training checkpoint: which sections it holds, how each is validated, and how it
 * is restored. checkpoint.h is the container (named, checksummed sections written atomically); this
 * module is the one place that decides what is in it, for training, resume, eval and export.
 *
 * Sections (format RUN_CKPT_FORMAT):
 *   "state"       64 bytes, little-endian: 0 tag "bert_pretrain/2" NUL-padded to 16 bytes (the format),
 *                 16 i64 step, 24 i64 total floats (ParamTable.total), 32 i32 tensors, 36 i32 vocab
 *                 size, 40 u64 seed, 48 f64 elapsed seconds, 56 u64 bytes of the optimizer section
 *   "config.json" the resolved configuration (config_write_json): rebuilt with config_load_resolved
 *                 for eval and export, compared with the current one on resume
 *   "params"      the parameter buffer (ParamTable.total floats of the model config.json describes)
 *   "optimizer"   the optimizer's own blob (optim_state_save)
 *   "vocab"       vocab.txt, so that an export is self-contained
 * Format 1 also held "config.bin", a copy of the Config struct of the build that wrote it; format 2
 * dropped it, so a checkpoint no longer depends on the binary layout of Config.
 *
 * One error policy. Every message starts with the checkpoint's path. The kinds:
 *   BP_ERR_IO       the operating system refused (open, map, write, rename)
 *   BP_ERR_CORRUPT  the container or its content is wrong: CRC, truncation, a section missing or of
 *                   the wrong size, a config.json that does not load, a step outside its run, sizes
 *                   that contradict each other
 *   BP_ERR_MISMATCH a sound checkpoint that does not fit: another format, another model shape, a
 *                   configuration changed in a way that changes the run
 * Everything read is validated before it is used, and every size is checked against the config
 * before anything is allocated from it. */
#ifndef BP_RUN_CKPT_H
#define BP_RUN_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "config.h"
#include "model.h"
#include "optim.h"

#define RUN_CKPT_FORMAT 2

/* What a save writes besides the configuration, the model and the optimizer. */
typedef struct {
    long step;         /* optimizer steps done */
    double elapsed_s;  /* training wall time over all sessions */
    const char *vocab; /* vocab.txt of the run */
    size_t vocab_len;
} RunCkptMeta;

/* Writes a checkpoint of the run cfg (resolved) describes atomically to path. The model is only
 * read (model.h gives no const view of the parameters). The optimizer state is streamed into the
 * file (optim_state_stream_open): with a sharded optimizer, every other rank must call
 * optim_state_send meanwhile. */
int run_ckpt_save(const char *path, const Config *cfg, Model *model, const Optimizer *opt,
                  const RunCkptMeta *meta, BpError *err);

typedef struct RunCkpt RunCkpt; /* an opened checkpoint whose every section is validated */

/* Opens path and validates it completely: the container, the state section's format and fields,
 * config.json (loaded like a config file), and that the params, optimizer and vocab sections have
 * the sizes the state and the config give. NULL with err filled (kinds above). */
RunCkpt *run_ckpt_open(const char *path, BpError *err);
void run_ckpt_close(RunCkpt *ck); /* NULL is fine */

const char *run_ckpt_path(const RunCkpt *ck);
/* the optimizer section (validated: its size; optim_state_load checks the rest) */
const void *run_ckpt_optimizer_state(const RunCkpt *ck);
long run_ckpt_step(const RunCkpt *ck);
double run_ckpt_elapsed(const RunCkpt *ck);
/* the resolved configuration the checkpoint was written with */
const Config *run_ckpt_config(const RunCkpt *ck);
/* the vocab.txt bytes (valid until run_ckpt_close) */
const void *run_ckpt_vocab(const RunCkpt *ck, size_t *len);

/* Called for every configuration key that differs from the checkpoint's, with whether the key may
 * change on resume (config_key_resume_safe). */
typedef void (*RunCkptChangeFn)(const char *key, const char *old_value, const char *new_value,
                                bool allowed, void *ctx);

/* Checks that the checkpoint continues the run the resolved cfg describes: every key that changed
 * must be resume-safe (compared as resolved JSON, in linear time). fn (may be NULL) hears of every
 * change. BP_ERR_MISMATCH naming the first refused change otherwise. */
int run_ckpt_check_resume(const RunCkpt *ck, const Config *cfg, RunCkptChangeFn fn, void *ctx,
                          BpError *err);

/* Copies the parameters into a model of the same shape (BP_ERR_MISMATCH otherwise). */
int run_ckpt_restore_params(const RunCkpt *ck, Model *model, BpError *err);
/* Restores the optimizer state (sizes compared before anything is read). */
int run_ckpt_restore_optimizer(const RunCkpt *ck, Optimizer *opt, BpError *err);

/* A model (weights from the checkpoint) whose shape is the checkpoint's own config's; its settings
 * besides the model section (threads, exclusion patterns) come from `cfg`, or from the checkpoint's
 * config when cfg is NULL. */
Model *run_ckpt_model(const RunCkpt *ck, const Config *cfg, BpError *err);

#endif
