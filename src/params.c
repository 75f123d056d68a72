/* params.c: name lookups and exclusion flags over the parameter table (see params.h). */
#include "params.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

static bool matches_any(const char *name, const char (*patterns)[64], int n) {
    for (int i = 0; i < n; i++)
        if (patterns[i][0] && strstr(name, patterns[i])) return true;
    return false;
}

void params_apply_exclusions(ParamTable *t, const char (*no_decay)[64], int n_no_decay,
                             const char (*no_adapt)[64], int n_no_adapt) {
    for (int i = 0; i < t->n; i++) {
        t->params[i].weight_decay = !matches_any(t->params[i].name, no_decay, n_no_decay);
        t->params[i].layer_adaptation = !matches_any(t->params[i].name, no_adapt, n_no_adapt);
    }
}

int params_find(const ParamTable *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->params[i].name, name) == 0) return i;
    return -1;
}

const ParamInfo *params_get(const ParamTable *t, const char *name) {
    int i = params_find(t, name);
    BP_ASSERT(i >= 0, "tensor '%s' is not in the parameter table", name);
    return &t->params[i];
}

void param_table_free(ParamTable *t) {
    free(t->params);
    memset(t, 0, sizeof *t);
}

long long params_count(const ParamTable *t) {
    long long n = 0;
    for (int i = 0; i < t->n; i++) n += (long long)t->params[i].numel;
    return n;
}
