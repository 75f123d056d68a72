/* config_diff.h: compares two resolved configurations given as JSON (config_write_json output),
 * key by flattened key ("optimizer.beta1", "phases.1.seq_len"). The trainer uses it on resume to
 * refuse changes that alter the run and to report the safe ones. */
#ifndef BP_CONFIG_DIFF_H
#define BP_CONFIG_DIFF_H

#include "common.h"

/* Called once per key whose value differs (a key present on one side only has value "(absent)"). */
typedef void (*ConfigDiffFn)(const char *key, const char *old_value, const char *new_value,
                             void *ctx);

/* Returns the number of differing keys, or -1 when either JSON text cannot be parsed. */
int config_json_diff(const char *old_json, const char *new_json, ConfigDiffFn fn, void *ctx,
                     BpError *err);

#endif
