/* params.h: the parameter table. Parameters, gradients and every optimizer moment live in
 * contiguous float buffers of ParamTable.total floats; tensor i occupies [offset, offset + numel)
 * in each of them. The optimizer, clipping, checkpoints, export and the (future) allreduce all walk
 * this one table. model.c builds it (from its one tensor list); nobody else decides names or
 * offsets. */
#ifndef BP_PARAMS_H
#define BP_PARAMS_H

#include <stdbool.h>
#include <stddef.h>

#define PARAM_NAME_LEN 96
#define PARAM_MAX_DIMS 2

typedef struct {
    char name[PARAM_NAME_LEN]; /* Hugging Face BertForPreTraining name, e.g.
                                  "bert.encoder.layer.0.attention.self.query.weight" */
    int ndim;
    size_t shape[PARAM_MAX_DIMS]; /* Linear weights are (out, in) as in PyTorch */
    size_t offset;                /* in floats, 16-float (64-byte) aligned */
    size_t numel;
    bool weight_decay;     /* false when the name matches optimizer.exclude_from_weight_decay */
    bool layer_adaptation; /* false when it matches optimizer.exclude_from_layer_adaptation */
} ParamInfo;

typedef struct {
    ParamInfo *params;
    int n;
    size_t total; /* floats in each buffer, including alignment padding (always zero) */
} ParamTable;

/* Sets weight_decay / layer_adaptation from name patterns: a parameter is excluded when any
 * pattern is a substring of its name (as Google BERT's and tensorflow-addons' regex search does for
 * plain words like "bias" and "LayerNorm"). */
void params_apply_exclusions(ParamTable *t, const char (*no_decay)[64], int n_no_decay,
                             const char (*no_adapt)[64], int n_no_adapt);
/* index of the tensor called name, or -1 (for names from outside: a file, a user) */
int params_find(const ParamTable *t, const char *name);
/* the tensor called name, for lookups that cannot miss (a name the table's builder put there):
 * a missing name is a programmer error (BP_ASSERT) */
const ParamInfo *params_get(const ParamTable *t, const char *name);
void param_table_free(ParamTable *t);
/* The model's parameter count: the tensors' elements, without the alignment padding in total. */
long long params_count(const ParamTable *t);

#endif
