/* config_diff.h: compares two resolved configurations given as JSON (config_write_json output),
 * key by flattened key ("optimizer.beta1", "phases.1.seq_len"), in time linear in their length.
 * The checkpoint module (run_ckpt.c) uses it on resume; which keys may change is config.c's
 * business (config_key_resume_safe). */
#ifndef BP_CONFIG_DIFF_H
#define BP_CONFIG_DIFF_H

#include "common.h"

/* Called once per key whose value differs (a key present on one side only has value "(absent)"). */
typedef void (*ConfigDiffFn)(const char *key, const char *old_value, const char *new_value,
                             void *ctx);

/* Returns the number of differing keys, or -1 when either JSON text cannot be parsed (aliases,
 * anchors, nesting deeper than 64, a key over 511 bytes, a flattened key given twice and a list of
 * scalars over 4 KiB are refused: the stored one is BP_ERR_CORRUPT). */
int config_json_diff(const char *old_json, const char *new_json, ConfigDiffFn fn, void *ctx,
                     BpError *err);

#endif
